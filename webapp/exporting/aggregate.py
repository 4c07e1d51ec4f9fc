"""From several labels on an item to the one label an export trains on. Pure code.

Arithmetic is on *steps*: a label as a signed integer, positive when canonical response A is
better. likert5: A-is-clearly-better = +2, A-is-slightly-better = +1, Tie = 0, B-is-slightly-better
= -1, B-is-clearly-better = -2. strength7: steps = -strength (HelpSteer2's -3 means response 1, A,
is much better, so it is +3 steps). Integer steps keep means exact (no float rounding surprises).

Sources name where a label came from: "human-normal" / "human-expert" (one tier of annotators),
"human" (a consensus over both tiers; `hybrid_label` reports it as "hybrid") and
f"ai:{judge}@{prompt_version}" (an LLM judge's combined verdict).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from webapp.exporting.records import AILabel, ExportItem, HumanLabel, Ranking
from webapp.scheme import LIKERT5, LIKERT5_LABELS, PAIRWISE, RANKING, Label

MAJORITY, EXPERT_FIRST, MEAN = "majority", "expert-first", "mean"
RULES = (MAJORITY, EXPERT_FIRST, MEAN)

HUMAN_NORMAL, HUMAN_EXPERT, HUMAN = "human-normal", "human-expert", "human"
HYBRID = "hybrid"  # hybrid_label's name for a consensus of both tiers
LABEL_SOURCES = ("human", "ai", "hybrid")  # what an export takes its labels from

TRAIN, TEST = "train", "test"

_LIKERT5_STEPS = dict(zip(LIKERT5_LABELS, (2, 1, 0, -1, -2), strict=True))
_STEPS_LIKERT5 = {v: k for k, v in _LIKERT5_STEPS.items()}


def to_steps(label: Label, scale: str) -> int:
    """A label as signed steps: +2 (likert5) / +3 (strength7) is A much better, 0 a tie."""
    if scale == LIKERT5:
        return _LIKERT5_STEPS[str(label)]
    return -int(label)


def from_steps(steps: int, scale: str) -> Label:
    """The label of a step count (the inverse of to_steps)."""
    if scale == LIKERT5:
        return _STEPS_LIKERT5[steps]
    return -steps


def max_steps(scale: str) -> int:
    return 2 if scale == LIKERT5 else 3


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def fold(label: Label, scale: str) -> Label:
    """MultiPref's folding: the winner at full strength (slightly -> clearly; strength7 -> -3, 0, +3)."""
    return from_steps(_sign(to_steps(label, scale)) * max_steps(scale), scale)


def winner_of(label: Label, scale: str) -> int:
    """+1 if the label prefers A, -1 if B, 0 for a tie."""
    return _sign(to_steps(label, scale))


def _round_half(num: int, den: int, *, toward_tie: bool) -> int:
    """num / den to the nearest integer; an exact half goes toward zero (toward_tie) or away from it.

    Integer arithmetic: exact, and much cheaper than Fraction on the per-item path.
    """
    sign = (num > 0) - (num < 0)
    whole, rest = divmod(abs(num), den)
    up = 2 * rest > den or (2 * rest == den and not toward_tie)
    return sign * (whole + up)


@dataclass(frozen=True, slots=True)
class Consensus:
    """The human label on one aspect of one item.

    label: on the project's scale (see human_consensus for the strength).
    folded: MultiPref's training label, the winner at full strength (A-is-clearly-better, Tie or
        B-is-clearly-better on likert5; -3, 0, +3 on strength7).
    winner: +1 A, -1 B, 0 tie.
    n: annotators counted (those who labelled the aspect, of the tiers the rule used).
    agreement: share of the counted annotators whose winner is `winner` (1.0 = unanimous).
    source: "human-normal", "human-expert" or "human" (both tiers counted).
    """

    label: Label
    folded: Label
    winner: int
    n: int
    agreement: float
    source: str
    labels: tuple[HumanLabel, ...]  # the annotations counted, normal tier first


def _tier_source(labels: Sequence[HumanLabel]) -> str:
    tiers = {h.tier for h in labels}
    if tiers == {"expert"}:
        return HUMAN_EXPERT
    if tiers == {"normal"}:
        return HUMAN_NORMAL
    return HUMAN


def _normal_first(labels: Iterable[HumanLabel]) -> list[HumanLabel]:
    # Within a tier the caller's order stays (creation order, see records.ExportItem).
    labels = list(labels)
    return [h for h in labels if h.tier != "expert"] + [h for h in labels if h.tier == "expert"]


def _majority(labels: list[HumanLabel], aspect: str, scale: str) -> Consensus:
    steps = [to_steps(h.preferences[aspect], scale) for h in labels]
    counts: dict[int, int] = {}
    for s in steps:  # dict order = order of first occurrence
        w = _sign(s)
        counts[w] = counts.get(w, 0) + 1
    # max() keeps the first of equal counts, i.e. the winner that occurred first.
    top = max(counts, key=counts.__getitem__)
    backing = [s for s in steps if _sign(s) == top]
    strength = _round_half(sum(backing), len(backing), toward_tie=True)
    return _consensus(labels, strength, top, counts[top], scale)


def _mean(labels: list[HumanLabel], aspect: str, scale: str) -> Consensus:
    steps = [to_steps(h.preferences[aspect], scale) for h in labels]
    strength = _round_half(sum(steps), len(steps), toward_tie=False)
    top = _sign(strength)
    return _consensus(labels, strength, top, sum(1 for s in steps if _sign(s) == top), scale)


def _consensus(labels: list[HumanLabel], strength: int, top: int, agreeing: int, scale: str) -> Consensus:
    return Consensus(
        label=from_steps(strength, scale),
        folded=from_steps(top * max_steps(scale), scale),
        winner=top,
        n=len(labels),
        agreement=agreeing / len(labels),
        source=_tier_source(labels),
        labels=tuple(labels),
    )


def human_consensus(labels: Sequence[HumanLabel], aspect: str, scale: str, rule: str = MAJORITY) -> Consensus | None:
    """The human label of one item on one aspect, or None when nobody labelled the aspect.

    Only annotations that label `aspect` count. Annotations are taken normal tier first, each tier in
    the given order (the order decides ties, so it is part of the input).

    majority (MultiPref's rule): each annotator votes for a winner, A, B or tie, with "slightly"
        folded into "clearly" (strength7: the sign). The most common winner wins; equal counts go to
        the winner that occurs first in that order (normal workers first). The label is the mean
        strength of the annotators who voted for the winner, an exact half rounded toward a tie
        (A-clearly + A-slightly -> A-slightly; strength7 -3, -2 -> -2), so an export keeps a
        margin; MultiPref's own training label is `Consensus.folded`.
    expert-first: the experts' majority if any expert labelled the aspect, else the normal workers'.
    mean: the mean strength of everyone, an exact half rounded away from a tie (what
        annotators.labels.score_to_label does on likert5; strength7 rounds 2.5 to 3 and 1.5 to 2,
        not Python's round-half-to-even).
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r} (use {', '.join(RULES)})")
    counted = _normal_first(h for h in labels if aspect in h.preferences)
    if not counted:
        return None
    if rule == MEAN:
        return _mean(counted, aspect, scale)
    if rule == EXPERT_FIRST:
        experts = [h for h in counted if h.tier == "expert"]
        return _majority(experts or counted, aspect, scale)
    return _majority(counted, aspect, scale)


# --- rankings -------------------------------------------------------------------------------------


def _groups(ranking: Ranking) -> list[list[int]]:
    return [list(e) if isinstance(e, list) else [e] for e in ranking]


def ranking_pairs(ranking: Ranking) -> list[tuple[int, int, int]]:
    """Every (better, worse, rank_gap) pair of a ranking, Curry-DPO style.

    The rank gap is the distance between the two responses' places in the ranking, a tie group
    counting as one place: [[0, 2], 1] gives (0, 1, 1) and (2, 1, 1); [2, 0, 1] gives (2, 0, 1),
    (2, 1, 2) and (0, 1, 1). Tied responses give no pair. Order: by the better response's place,
    then the worse one's, then as listed inside groups.
    """
    groups = _groups(ranking)
    return [
        (better, worse, j - i)
        for i, high in enumerate(groups)
        for j in range(i + 1, len(groups))
        for better in high
        for worse in groups[j]
    ]


def tied_pairs(ranking: Ranking) -> list[tuple[int, int]]:
    """The pairs inside tie groups, lower index first: [[2, 0], 1] gives (0, 2)."""
    out: list[tuple[int, int]] = []
    for group in _groups(ranking):
        members = sorted(group)
        out.extend((a, b) for k, a in enumerate(members) for b in members[k + 1 :])
    return out


@dataclass(frozen=True, slots=True)
class RankingConsensus:
    ranking: Ranking
    n: int
    agreement: float  # share of (annotator, response pair) orderings that match the consensus
    source: str
    labels: tuple[HumanLabel, ...]


def _places(ranking: Ranking) -> dict[int, int]:
    return {r: place for place, group in enumerate(_groups(ranking)) for r in group}


def human_ranking_consensus(labels: Sequence[HumanLabel], rule: str = MAJORITY) -> RankingConsensus | None:
    """The human ranking of one item, or None when nobody ranked it.

    Every rule ranks responses by their mean place (a tie group is one place); equal means form a
    tie group, listed by response index. expert-first uses only the experts' rankings when any
    expert ranked the item. (A majority vote over whole rankings rarely has a majority, so
    majority and mean both use mean places.)
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r} (use {', '.join(RULES)})")
    counted = _normal_first(h for h in labels if h.ranking)
    if rule == EXPERT_FIRST:
        counted = [h for h in counted if h.tier == "expert"] or counted
    if not counted:
        return None
    places = [_places(h.ranking or []) for h in counted]
    responses = sorted({r for p in places for r in p})
    # Rankings are validated to list every response; one missing would count as last.
    places = [{r: p.get(r, len(responses)) for r in responses} for p in places]
    # Every response has a place from every annotator: comparing sums compares means, exactly.
    total = {r: sum(p[r] for p in places) for r in responses}
    ordered = sorted(responses, key=lambda r: (total[r], r))
    ranking: Ranking = []
    k = 0
    while k < len(ordered):
        group = [r for r in ordered[k:] if total[r] == total[ordered[k]]]
        ranking.append(group if len(group) > 1 else group[0])
        k += len(group)
    consensus_places = _places(ranking)
    agree = pairs = 0
    for p in places:
        for i, a in enumerate(responses):
            for b in responses[i + 1 :]:
                pairs += 1
                agree += _sign(p[a] - p[b]) == _sign(consensus_places[a] - consensus_places[b])
    return RankingConsensus(
        ranking=ranking,
        n=len(counted),
        agreement=agree / pairs if pairs else 1.0,
        source=_tier_source(counted),
        labels=tuple(counted),
    )


# --- hybrid ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelChoice:
    """The label an export uses for one item.

    label: pairwise label on the project's scale (None for a ranking); ranking: the ranking (None
    for a pairwise label); winner: +1 A, -1 B, 0 tie (0 for rankings).
    source: "human-normal", "human-expert", "hybrid" (humans of both tiers) or
    f"ai:{judge}@{prompt_version}".
    n: labels behind it (1 for an AI label); agreement: the humans' agreement (None for AI).
    humans: the human annotations counted; ai: the AI label used.
    """

    label: Label | None
    ranking: Ranking | None
    winner: int
    source: str
    n: int
    agreement: float | None
    humans: tuple[HumanLabel, ...] = ()
    ai: AILabel | None = None


def ai_source(ai: AILabel) -> str:
    return f"ai:{ai.judge}@{ai.prompt_version}"


def pick_ai(ais: Sequence[AILabel], aspect: str, kind: str, ai_judge: str | None) -> AILabel | None:
    """The AI label to use: the first one (from `ai_judge` when named) that has a label for the
    aspect (pairwise) or a ranking. The caller orders `ais` by preference (newest prompt version
    first) and passes combined verdicts only."""
    for ai in ais:
        if ai_judge is not None and ai.judge != ai_judge:
            continue
        if bool(ai.ranking) if kind == RANKING else aspect in ai.labels:
            return ai
    return None


def _human_choice(item: ExportItem, aspect: str, scale: str, rule: str, kind: str) -> LabelChoice | None:
    if kind == RANKING:
        rc = human_ranking_consensus(item.humans, rule)
        if rc is None:
            return None
        source = HYBRID if rc.source == HUMAN else rc.source
        return LabelChoice(None, rc.ranking, 0, source, rc.n, rc.agreement, rc.labels)
    c = human_consensus(item.humans, aspect, scale, rule)
    if c is None:
        return None
    source = HYBRID if c.source == HUMAN else c.source
    return LabelChoice(c.label, None, c.winner, source, c.n, c.agreement, c.labels)


def _ai_choice(item: ExportItem, aspect: str, scale: str, kind: str, ai_judge: str | None) -> LabelChoice | None:
    ai = pick_ai(item.ais, aspect, kind, ai_judge)
    if ai is None:
        return None
    if kind == RANKING:
        return LabelChoice(None, ai.ranking, 0, ai_source(ai), 1, None, (), ai)
    label = ai.labels[aspect]
    return LabelChoice(label, None, winner_of(label, scale), ai_source(ai), 1, None, (), ai)


def hybrid_label(
    item: ExportItem,
    aspect: str,
    scale: str,
    *,
    rule: str = MAJORITY,
    ai_judge: str | None = None,
    label_source: str = "hybrid",
    kind: str = PAIRWISE,
) -> LabelChoice | None:
    """The label an export uses for one item, or None when it has none of the kind asked for.

    label_source "human": the human consensus (`rule`); "ai": the AI label (see pick_ai);
    "hybrid": the human consensus when the item's route is "human" or when it has human labels
    and no usable AI label, otherwise the AI label. A human-routed item without human labels yet
    gives None, not the judge's label, so that the export's human share is the routing's.
    kind "ranking" returns rankings (human_ranking_consensus) instead of pairwise labels.
    """
    if label_source == "human":
        return _human_choice(item, aspect, scale, rule, kind)
    if label_source == "ai":
        return _ai_choice(item, aspect, scale, kind, ai_judge)
    if label_source != "hybrid":
        raise ValueError(f"unknown label source {label_source!r} (use {', '.join(LABEL_SOURCES)})")
    if item.route == "human":
        return _human_choice(item, aspect, scale, rule, kind)
    return _ai_choice(item, aspect, scale, kind, ai_judge) or _human_choice(item, aspect, scale, rule, kind)


# --- splits ---------------------------------------------------------------------------------------


def split_for(prompt_key: str, seed: int, test_fraction: float) -> str:
    """ "train" or "test" for a prompt, the same every time: a prompt is never in both splits.

    The first 8 bytes of sha256(f"{seed}\\n{prompt_key}") as a fraction of 2**64; below
    test_fraction is "test". test_fraction 0 puts everything in train, 1 everything in test.
    """
    digest = hashlib.sha256(f"{seed}\n{prompt_key}".encode()).digest()
    return TEST if int.from_bytes(digest[:8], "big") < test_fraction * 2**64 else TRAIN
