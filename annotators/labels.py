"""Label arithmetic shared by every judge: soft scores to scale labels, combining orders, juries.

Pure code. A "score" here is a number in [-1, 1] where positive means canonical response A is
better, whatever the project's scale; labels convert to and from it losslessly on both scales.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from webapp.scheme import LIKERT5, LIKERT5_LABELS, Label

# Likert5 labels from A-clearly (+1) to B-clearly (-1).
_LIKERT5_SCORE = dict(zip(LIKERT5_LABELS, (1.0, 0.5, 0.0, -0.5, -1.0), strict=True))


def label_to_score(label: Label, scale: str) -> float:
    """+1 = A much better, 0 = tie, -1 = B much better."""
    if scale == LIKERT5:
        return _LIKERT5_SCORE[str(label)]
    # strength7: -3 means response 1 (A) much better (HelpSteer2-Preference convention).
    return -int(label) / 3.0


def score_to_label(score: float, scale: str) -> Label:
    """The scale label nearest to a score in [-1, 1]."""
    score = max(-1.0, min(1.0, score))
    if scale == LIKERT5:
        # Bands of equal width around each label's score.
        if score >= 0.75:
            return LIKERT5_LABELS[0]
        if score >= 0.25:
            return LIKERT5_LABELS[1]
        if score > -0.25:
            return LIKERT5_LABELS[2]
        if score > -0.75:
            return LIKERT5_LABELS[3]
        return LIKERT5_LABELS[4]
    return int(-round(score * 3))


def probability_to_label(p_a: float, scale: str) -> Label:
    """A soft preference P(A is better) -> label: 0.5 is a tie, 1.0 is A much better."""
    return score_to_label(2.0 * p_a - 1.0, scale)


def margin_to_probability(margin: float, temperature: float = 1.0) -> float:
    """Bradley-Terry: P(A better) from a reward margin r(A) - r(B)."""
    z = margin / max(temperature, 1e-9)
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def winner(label: Label, scale: str) -> int:
    """+1 if A is preferred, -1 if B, 0 for a tie."""
    s = label_to_score(label, scale)
    return (s > 0) - (s < 0)


@dataclass(frozen=True)
class Combined:
    labels: dict[str, Label]
    # Per aspect: True when the orders disagree on the winner (MT-Bench "inconsistent").
    inconsistent: dict[str, bool]

    @property
    def any_inconsistent(self) -> bool:
        return any(self.inconsistent.values())


def combine_orders(per_order: Sequence[dict[str, Label]], scale: str) -> Combined:
    """Merge canonical labels from several shown orders, MT-Bench style.

    A response wins only if every order prefers it; any disagreement on the winner (including a tie
    in one order and a win in another) gives a tie, flagged inconsistent. When the orders agree,
    the strength is their mean, rounded toward a tie (the conservative reading).
    """
    aspects = sorted({a for labels in per_order for a in labels})
    labels: dict[str, Label] = {}
    inconsistent: dict[str, bool] = {}
    for aspect in aspects:
        given = [lab[aspect] for lab in per_order if aspect in lab]
        winners = {winner(v, scale) for v in given}
        if len(winners) > 1:
            labels[aspect] = score_to_label(0.0, scale)
            inconsistent[aspect] = True
            continue
        mean = sum(label_to_score(v, scale) for v in given) / len(given)
        labels[aspect] = _toward_tie(mean, scale)
        inconsistent[aspect] = False
    return Combined(labels, inconsistent)


def _toward_tie(score: float, scale: str) -> Label:
    # Halfway between two labels goes to the weaker one (mean of clearly and slightly = slightly).
    shrink = 1e-9 if score > 0 else -1e-9 if score < 0 else 0.0
    return score_to_label(score - shrink, scale)


@dataclass(frozen=True)
class JuryVerdict:
    labels: dict[str, Label]
    # Per aspect: share of members whose winner differs from the verdict's (0 = unanimous).
    disagreement: dict[str, float]
    votes: dict[str, dict[str, int]]


MAJORITY, MEAN = "majority", "mean"
JURY_RULES = (MAJORITY, MEAN)


def aggregate_jury(members: Sequence[dict[str, Label]], scale: str, rule: str = MAJORITY) -> JuryVerdict:
    """Combine several judges' canonical labels on one item.

    majority: the most common winner (A, B or tie) wins; a split vote is a tie; the strength is the
    mean strength of the members that voted for the winner. mean: the mean score of all members.
    """
    if rule not in JURY_RULES:
        raise ValueError(f"unknown jury rule {rule!r} (use {', '.join(JURY_RULES)})")
    aspects = sorted({a for labels in members for a in labels})
    labels: dict[str, Label] = {}
    disagreement: dict[str, float] = {}
    votes: dict[str, dict[str, int]] = {}
    names = {1: "A", -1: "B", 0: "tie"}
    for aspect in aspects:
        given = [m[aspect] for m in members if aspect in m]
        counts = Counter(winner(v, scale) for v in given)
        votes[aspect] = {names[k]: counts.get(k, 0) for k in (1, 0, -1)}
        if rule == MEAN:
            score = sum(label_to_score(v, scale) for v in given) / len(given)
            verdict = _toward_tie(score, scale)
        else:
            ranked = counts.most_common()
            if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
                verdict = score_to_label(0.0, scale)
            else:
                top = ranked[0][0]
                backing = [label_to_score(v, scale) for v in given if winner(v, scale) == top]
                verdict = _toward_tie(sum(backing) / len(backing), scale)
        labels[aspect] = verdict
        w = winner(verdict, scale)
        disagreement[aspect] = sum(1 for v in given if winner(v, scale) != w) / len(given)
    return JuryVerdict(labels, disagreement, votes)
