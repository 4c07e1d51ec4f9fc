"""Reads for the manager console: the Quality, Progress and Costs pages.

Each page's numbers come from a handful of queries whose number does not grow with the project (rows
are streamed with values_list, then handed to the pure functions of webapp.agreement); docs/quality.md
lists them and what they cost on a large project.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Aggregate, Count, F, FloatField, IntegerField, OuterRef, Q, Subquery, Sum, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce, Greatest, Length, TruncHour
from django.utils import timezone

from webapp import agreement as ag
from webapp.exporting.aggregate import max_steps, to_steps
from webapp.models import Assignment, HumanAnnotation, Item, Judge, Judgment, Project
from webapp.scheme import LIKERT5, LIKERT5_LABELS, PAIRWISE, STRENGTH7_LABELS

# Slices with fewer items are still listed, but their coefficients are rarely worth reading.
SMALL_SLICE = 10
# Subjects and categories: the most common ones get a slice each.
TOP_VALUES = 12
# Annotator pairs listed on the page (all pairs count in the mean kappa).
PAIRS_SHOWN = 20
# How long the Progress page reuses its agreement-with-consensus column (seconds).
CONSENSUS_CACHE_SECONDS = 60
# The expert tier's cost per annotation where the settings name one (Project has a single cost field).
EXPERT_COST_SETTING = "HYBRIDPREF_EXPERT_COST_PER_ANNOTATION"

WINNER_NAMES = {1: "A", 0: "tie", -1: "B"}


def default_aspect(project: Project) -> str:
    aspects = list(project.aspects or [])
    return "overall" if "overall" in aspects else (aspects[0] if aspects else "overall")


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def label_steps(scale: str) -> dict[str, int]:
    """Each label of the scale as the text a JSON key transform (->>) reads from the database -> its steps.

    Reading labels as text, not as JSON, spares decoding every annotation's whole JSON object; text
    that is not a label of the scale (a boolean, a number on likert5) has no steps and is left out.
    """
    labels: tuple[Any, ...] = LIKERT5_LABELS if scale == LIKERT5 else STRENGTH7_LABELS
    return {str(label): to_steps(label, scale) for label in labels}


def rater_key(annotator_id: int | None, external: str) -> str:
    """One key per human: "u<id>" for a platform user, "x:<name>" for an imported dataset's annotator."""
    return f"u{annotator_id}" if annotator_id is not None else f"x:{external}"


# --- slices -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slice:
    group: str  # "subject", "category", "prompt length", or a lexical feature such as "cosine_sim"
    value: str  # "Biology", "low", ...
    item_ids: frozenset[int]

    @property
    def name(self) -> str:
        return f"{self.group}={self.value}"


@dataclass(frozen=True)
class ItemRow:
    """What slicing reads of an item (see _item_rows)."""

    id: int
    lexical: Mapping[str, Any] | None
    tag_subjects: Any
    category: Any
    subject: Any
    subject_study: Any
    prompt_chars: int


def _values(raw: Any) -> list[str]:
    """A metadata or tag value as a list of non-empty strings (a list stays a list)."""
    if raw is None or isinstance(raw, dict):
        return []
    items = raw if isinstance(raw, list | tuple) else [raw]
    return [str(v).strip() for v in items if v is not None and not isinstance(v, dict | list) and str(v).strip()]


def bins(values: Sequence[float], *, as_percentiles: bool) -> np.ndarray:
    """routing.features' bins of each value (0 low, 1 mid, 2 high), vectorised: clipped to [0, 1], low
    up to 0.33, mid up to 0.67; as_percentiles ranks the values first (routing.features.percentiles),
    as `binarize` does with the length features."""
    from routing.features import BIN_EDGES, percentiles

    x = np.asarray(values, dtype=np.float64)
    if as_percentiles:
        x = percentiles(x)  # type: ignore[arg-type]  # an array is a sequence of floats here
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= BIN_EDGES[0], 0, np.where(x <= BIN_EDGES[1], 1, 2))


def item_slices(rows: Sequence[ItemRow]) -> list[Slice]:
    """The slices of a project's items: subject and category (the most common values), prompt length
    bins, and the lexical similarity and length bins of the items that have lexical features.

    Prompt length: the lexical prompt_len (tokens, as a percentile within the items that have lexical
    features) where any item has them, else the prompt's characters (as a percentile within the items
    with a prompt). Bins: routing.features' low / mid / high ([0, 0.33], (0.33, 0.67], (0.67, 1]),
    the same as routing's `binarize` gives.
    """
    from routing.features import BINS, LENGTH_FEATURES, LEXICAL_FEATURES

    out: list[Slice] = []
    for group, pick in (
        ("subject", lambda r: _values(r.tag_subjects) + _values(r.subject) + _values(r.subject_study)),
        ("category", lambda r: _values(r.category)),
    ):
        members: dict[str, set[int]] = defaultdict(set)
        for row in rows:
            for value in dict.fromkeys(pick(row)):
                members[value].add(row.id)
        top = sorted(members, key=lambda v: (-len(members[v]), v))[:TOP_VALUES]
        out.extend(Slice(group, v, frozenset(members[v])) for v in top)

    def binned(group: str, chosen: Sequence[ItemRow], values: Sequence[float], as_percentiles: bool) -> list[Slice]:
        ids = np.asarray([r.id for r in chosen], dtype=np.int64)
        which = bins(values, as_percentiles=as_percentiles)
        found = [(name, ids[which == k]) for k, name in enumerate(BINS)]
        return [Slice(group, name, frozenset(members.tolist())) for name, members in found if len(members)]

    with_lexical = [r for r in rows if r.lexical is not None and all(f in r.lexical for f in LEXICAL_FEATURES)]
    if with_lexical:
        prompts = [float(r.lexical["prompt_len"]) for r in with_lexical]  # type: ignore[index]
        out.extend(binned("prompt length", with_lexical, prompts, True))
        for feature in LEXICAL_FEATURES:
            if feature != "prompt_len":
                values = [float(r.lexical[feature]) for r in with_lexical]  # type: ignore[index]
                out.extend(binned(feature, with_lexical, values, feature in LENGTH_FEATURES))
    else:
        with_prompt = [r for r in rows if r.prompt_chars > 0]
        out.extend(binned("prompt length", with_prompt, [float(r.prompt_chars) for r in with_prompt], True))
    return out


def _item_rows(project: Project) -> list[ItemRow]:
    """What slicing needs of every item; the lexical scores read as text (no JSON decoding)."""
    from routing.features import LEXICAL_FEATURES

    rows = (
        Item.objects.filter(project=project)
        .order_by("id")
        .values_list(
            "id",
            "features__tags__subject_of_expertise",
            "metadata__category",
            "metadata__subject",
            "metadata__subject_study",
            Length("prompt"),
            *(KT(f"features__lexical__{f}") for f in LEXICAL_FEATURES),
        )
    )
    out: list[ItemRow] = []
    for item_id, subjects, category, subject, study, chars, *lexical in rows.iterator(chunk_size=5000):
        scores = None
        if all(v is not None for v in lexical):
            try:
                scores = dict(zip(LEXICAL_FEATURES, map(float, lexical), strict=True))
            except ValueError:
                scores = None
            if scores is not None and not all(math.isfinite(v) for v in scores.values()):
                scores = None
        out.append(ItemRow(item_id, scores, subjects, category, subject, study, chars or 0))
    return out


# --- the labels, read once --------------------------------------------------------------------------


@dataclass
class LabelData:
    """Every label of a project on the pairwise scale, as signed steps (see aggregate.to_steps).

    humans[aspect][item][rater] and judges[aspect][judge][item] (the newest combined verdict);
    orders[judge][item][order] the per-order labels (for position consistency) and
    inconsistent[judge][item] the combined rows' order_inconsistent flag.
    """

    scale: str
    aspects: list[str]
    humans: dict[str, dict[int, dict[str, int]]] = field(default_factory=lambda: defaultdict(dict))
    judges: dict[str, dict[int, dict[int, int]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(dict)))
    orders: dict[int, dict[int, dict[str, dict[str, int]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(dict))
    )
    inconsistent: dict[int, dict[int, bool]] = field(default_factory=lambda: defaultdict(dict))
    annotations: Counter[str] = field(default_factory=Counter)
    rater_names: dict[str, str] = field(default_factory=dict)
    judge_names: dict[int, str] = field(default_factory=dict)


def read_labels(project: Project, *, with_judges: bool = True) -> LabelData:
    """Human annotations and done judgments of the project: one streamed query each (the aspects'
    labels read as text), plus the names of the users and judges."""
    data = LabelData(scale=project.scale, aspects=list(project.aspects or []))
    steps_of = label_steps(project.scale)
    aspects = data.aspects
    user_ids: set[int] = set()
    annotations = (
        HumanAnnotation.objects.filter(item__project=project)
        .order_by()
        .values_list("item_id", "annotator_id", "external_annotator", *(KT(f"preferences__{a}") for a in aspects))
    )
    for item_id, user_id, external, *labels in annotations.iterator(chunk_size=10000):
        key = rater_key(user_id, external)
        data.annotations[key] += 1
        if user_id is None:
            data.rater_names[key] = external
        else:
            user_ids.add(user_id)
        for aspect, label in zip(aspects, labels, strict=True):
            steps = steps_of.get(label) if label is not None else None
            if steps is not None:
                data.humans[aspect].setdefault(item_id, {})[key] = steps
    if user_ids:
        from django.contrib.auth import get_user_model

        for pk, username in get_user_model().objects.filter(pk__in=user_ids).values_list("pk", "username"):
            data.rater_names[f"u{pk}"] = username
    if not with_judges:
        return data
    judgments = (
        Judgment.objects.filter(item__project=project, status=Judgment.DONE)
        .order_by("id")  # the newest row of an item, judge and order wins (a newer prompt version)
        .values_list("item_id", "judge_id", "order", "order_inconsistent", *(KT(f"labels__{a}") for a in aspects))
    )
    for item_id, judge_id, order, inconsistent, *labels in judgments.iterator(chunk_size=10000):
        verdict = {aspect: steps_of[label] for aspect, label in zip(aspects, labels, strict=True) if label in steps_of}
        if order == Judgment.COMBINED:
            for aspect, value in verdict.items():
                data.judges[aspect][judge_id][item_id] = value
            if inconsistent is not None:
                data.inconsistent[judge_id][item_id] = bool(inconsistent)
        elif verdict:
            data.orders[judge_id][item_id][order] = verdict
    judge_ids = set(data.orders) | set(data.inconsistent) | {j for per in data.judges.values() for j in per}
    data.judge_names = dict(Judge.objects.filter(pk__in=judge_ids).values_list("pk", "name"))
    return data


# --- the Quality page -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HumanAgreement:
    """Humans among themselves on one aspect (winners A / tie / B unless said otherwise).

    labels: annotations with the aspect; units: items with at least two of them; percent: mean share of
    agreeing pairs per item; fleiss: Fleiss' kappa; alpha: Krippendorff's alpha, ordinal, on the full
    scale; cohen: Cohen's kappa of every annotator pair sharing items, averaged weighted by shared items;
    weighted: the same with quadratic weights on the full scale; pairs: the pairs sharing most items.
    """

    labels: int
    units: int
    percent: float | None
    fleiss: float | None
    alpha: float | None
    cohen: float | None
    weighted: float | None
    n_pairs: int
    pairs: list[ag.PairAgreement]


@dataclass(frozen=True)
class Agreement:
    """Two label sources on the items both labelled: how many, the share of equal winners, Cohen's kappa."""

    n: int
    percent: float | None
    kappa: float | None


@dataclass(frozen=True)
class SliceRow:
    slice: Slice
    items: int
    humans: HumanAgreement
    judges: dict[int, Agreement]  # judge id -> agreement with the human majority
    judge_pairs: dict[tuple[int, int], Agreement]

    @property
    def small(self) -> bool:
        return self.humans.units < SMALL_SLICE


@dataclass(frozen=True)
class Consistency:
    """A judge's position consistency: share of items whose two shown orders give the same winner."""

    judge: int
    per_aspect: dict[str, Agreement]  # n items with both orders, percent consistent (kappa unused)
    overall: Agreement  # every aspect consistent at once
    source: str  # "orders" (per-order verdicts) or "flag" (the combined rows' order_inconsistent)


@dataclass(frozen=True)
class AnnotatorRow:
    key: str
    name: str
    annotations: int
    consensus: ag.ConsensusAgreement | None


@dataclass(frozen=True)
class QualityReport:
    project: Project
    aspect: str
    pairwise: bool
    n_items: int
    n_annotations: int
    humans_by_aspect: dict[str, HumanAgreement]
    judges: list[tuple[int, str]]  # (id, name) of the judges with combined verdicts
    human_ai: dict[int, dict[str, Agreement]]  # judge -> aspect -> agreement with the human majority
    ai_ai: dict[tuple[int, int], dict[str, Agreement]]  # judge pair -> aspect -> agreement
    consistency: list[Consistency]
    slices: list[SliceRow]
    annotators: list[AnnotatorRow]
    timeline: list[tuple[datetime, int]]  # (bucket start, cumulative annotations)
    seconds: float  # time spent computing the report


class LabelArrays:
    """One aspect's labels as arrays over the project's items (positions in `item_ids`), so that a slice
    is an index array and its coefficients cost numpy operations, not Python loops.

    steps[i, s]: annotations of item i with the label -max + s steps; winners[i]: counts of B, tie, A;
    majority[i]: the humans' strict-majority winner (-1, 0, +1), NaN without one; judges[j][i]: judge
    j's combined winner, NaN where it has none.
    """

    def __init__(self, data: LabelData, aspect: str, item_ids: Sequence[int]) -> None:
        self.scale = data.scale
        top = max_steps(data.scale)
        self.categories = list(range(-top, top + 1))
        self.position = {item: k for k, item in enumerate(item_ids)}
        n = len(item_ids)
        self.steps = np.zeros((n, len(self.categories)), dtype=np.int64)
        for item, labels in data.humans.get(aspect, {}).items():
            row = self.position.get(item)
            if row is not None:
                for value in labels.values():
                    self.steps[row, value + top] += 1
        self.winners = np.stack(
            [self.steps[:, :top].sum(axis=1), self.steps[:, top], self.steps[:, top + 1 :].sum(axis=1)], axis=1
        )
        best = self.winners.max(axis=1)
        unique = (self.winners == best[:, None]).sum(axis=1) == 1
        self.majority = np.where((best > 0) & unique, self.winners.argmax(axis=1) - 1.0, np.nan)
        self.judges: dict[int, np.ndarray] = {}
        for judge, verdicts in data.judges.get(aspect, {}).items():
            column = np.full(n, np.nan)
            for item, value in verdicts.items():
                row = self.position.get(item)
                if row is not None:
                    column[row] = _sign(value)
            self.judges[judge] = column

    def index(self, items: Iterable[int] | None = None) -> np.ndarray:
        if items is None:
            return np.arange(len(self.position))
        return np.fromiter((self.position[i] for i in items if i in self.position), dtype=np.int64)

    def humans(self, idx: np.ndarray) -> HumanAgreement:
        """Human-human coefficients on the items at `idx` (without the annotator pairs)."""
        steps, winners = self.steps[idx], self.winners[idx]
        return HumanAgreement(
            labels=int(steps.sum()),
            units=int((steps.sum(axis=1) >= 2).sum()),
            percent=ag.pairwise_agreement_counts(winners),
            fleiss=ag.fleiss_kappa_counts(winners),
            alpha=ag.krippendorff_alpha_counts(steps, ag.ORDINAL, self.categories),
            cohen=None,
            weighted=None,
            n_pairs=0,
            pairs=[],
        )

    def compare(self, left: np.ndarray, right: np.ndarray, idx: np.ndarray) -> Agreement:
        """Two winner columns on the items at `idx` that both have."""
        a, b = left[idx], right[idx]
        both = ~np.isnan(a) & ~np.isnan(b)
        a, b = a[both].astype(np.int64) + 1, b[both].astype(np.int64) + 1
        if not len(a):
            return Agreement(0, None, None)
        confusion = np.bincount(a * 3 + b, minlength=9).reshape(3, 3)
        return Agreement(len(a), float((a == b).mean()), ag.cohen_kappa_confusion(confusion))


def human_agreement(units: Mapping[int, Mapping[str, int]], scale: str) -> HumanAgreement:
    """HumanAgreement of per-item {rater: steps} labels, with the annotator pairs' kappas (pure Python;
    LabelArrays.humans gives the same coefficients, without the pairs, with numpy)."""
    steps_units = [list(u.values()) for u in units.values()]
    winner_units = [[_sign(v) for v in u] for u in steps_units]
    return _with_pairs(
        HumanAgreement(
            labels=sum(len(u) for u in steps_units),
            units=sum(1 for u in steps_units if len(u) >= 2),
            percent=ag.pairwise_agreement(winner_units),
            fleiss=ag.fleiss_kappa(winner_units),
            alpha=ag.krippendorff_alpha(steps_units, ag.ORDINAL, list(range(-max_steps(scale), max_steps(scale) + 1))),
            cohen=None,
            weighted=None,
            n_pairs=0,
            pairs=[],
        ),
        units,
        scale,
    )


def _with_pairs(humans: HumanAgreement, units: Mapping[int, Mapping[str, int]], scale: str) -> HumanAgreement:
    """`humans` with the annotator pairs: Cohen's kappa on winners and quadratic-weighted on the scale."""
    scale_steps = list(range(-max_steps(scale), max_steps(scale) + 1))
    kappas = ag.pairwise_kappas({r: _sign(v) for r, v in u.items()} for u in units.values())
    weighted = [
        ag.PairAgreement(a, b, len(left), None, ag.weighted_kappa(left, right, scale_steps, ag.QUADRATIC))
        for (a, b), (left, right) in ag.rater_pairs(units.values()).items()
    ]
    return dataclasses.replace(
        humans,
        cohen=ag.mean_kappa(kappas),
        weighted=ag.mean_kappa(weighted),
        n_pairs=len(kappas),
        pairs=kappas[:PAIRS_SHOWN],
    )


def _consistency(data: LabelData, judge: int) -> Consistency:
    orders = data.orders.get(judge, {})
    pairs = {item: by_order for item, by_order in orders.items() if len(by_order) >= 2}
    if pairs:
        per_aspect: dict[str, Agreement] = {}
        every: list[bool] = []
        for aspect in data.aspects:
            verdicts: list[tuple[Hashable, Hashable]] = []
            for by_order in pairs.values():
                winners = [_sign(labels[aspect]) for labels in by_order.values() if aspect in labels]
                if len(winners) >= 2:
                    verdicts.append((winners[0], winners[1]))
            per_aspect[aspect] = Agreement(len(verdicts), ag.position_consistency(verdicts), None)
        for by_order in pairs.values():
            rows = list(by_order.values())
            shared = set(rows[0]).intersection(*rows[1:])
            if shared:
                every.append(all(len({_sign(r[a]) for r in rows}) == 1 for a in shared))
        overall = Agreement(len(every), (sum(every) / len(every)) if every else None, None)
        return Consistency(judge, per_aspect, overall, "orders")
    flags = list(data.inconsistent.get(judge, {}).values())
    overall = Agreement(len(flags), (sum(not f for f in flags) / len(flags)) if flags else None, None)
    return Consistency(judge, {}, overall, "flag")


def quality_report(project: Project, aspect: str | None = None) -> QualityReport:
    """Everything the Quality page shows, for one aspect's slices and annotators (and every aspect's
    summary). Queries: items, annotations, users, judgments, judges, the timeline (six in all)."""
    started = time.perf_counter()
    if aspect is None or aspect not in (project.aspects or []):
        aspect = default_aspect(project)
    rows = _item_rows(project)
    item_ids = [r.id for r in rows]
    data = read_labels(project)
    judge_ids = sorted(data.judge_names, key=lambda j: data.judge_names[j])
    with_verdicts = [j for j in judge_ids if any(j in data.judges.get(a, {}) for a in data.aspects)]
    judge_pairs = [(a, b) for i, a in enumerate(with_verdicts) for b in with_verdicts[i + 1 :]]
    arrays = {a: LabelArrays(data, a, item_ids) for a in dict.fromkeys([*data.aspects, aspect])}
    nan = np.full(len(item_ids), np.nan)

    def column(x: LabelArrays, judge: int) -> np.ndarray:
        return x.judges.get(judge, nan)

    selected = arrays[aspect]
    slice_rows: list[SliceRow] = []
    for sl in item_slices(rows):
        idx = selected.index(sl.item_ids)
        slice_rows.append(
            SliceRow(
                slice=sl,
                items=len(idx),
                humans=selected.humans(idx),
                judges={j: selected.compare(column(selected, j), selected.majority, idx) for j in with_verdicts},
                judge_pairs={
                    (a, b): selected.compare(column(selected, a), column(selected, b), idx) for a, b in judge_pairs
                },
            )
        )
    humans = data.humans.get(aspect, {})
    consensus = ag.agreement_with_consensus({r: _sign(v) for r, v in u.items()} for u in humans.values())
    annotators = [
        AnnotatorRow(key, data.rater_names.get(key, key), n, consensus.get(key))
        for key, n in sorted(data.annotations.items(), key=lambda kv: (-kv[1], data.rater_names.get(kv[0], kv[0])))
    ]
    everything = {a: x.index() for a, x in arrays.items()}
    return QualityReport(
        project=project,
        aspect=aspect,
        pairwise=project.kind == PAIRWISE,
        n_items=len(rows),
        n_annotations=sum(data.annotations.values()),
        humans_by_aspect={
            a: _with_pairs(arrays[a].humans(everything[a]), data.humans.get(a, {}), data.scale) for a in data.aspects
        },
        judges=[(j, data.judge_names[j]) for j in with_verdicts],
        human_ai={
            j: {a: arrays[a].compare(column(arrays[a], j), arrays[a].majority, everything[a]) for a in data.aspects}
            for j in with_verdicts
        },
        ai_ai={
            (j, k): {
                a: arrays[a].compare(column(arrays[a], j), column(arrays[a], k), everything[a]) for a in data.aspects
            }
            for j, k in judge_pairs
        },
        consistency=[_consistency(data, j) for j in judge_ids if j in data.orders or j in data.inconsistent],
        slices=slice_rows,
        annotators=annotators,
        timeline=annotation_timeline(project),
        seconds=time.perf_counter() - started,
    )


# --- over time --------------------------------------------------------------------------------------


def cumulative(buckets: Iterable[tuple[datetime, int]], *, by_day: bool | None = None) -> list[tuple[datetime, int]]:
    """Per-hour counts -> cumulative counts per hour, or per day where the span exceeds three days
    (by_day None) or where asked. Pure."""
    rows = sorted((b, n) for b, n in buckets if b is not None)
    if not rows:
        return []
    if by_day is None:
        by_day = rows[-1][0] - rows[0][0] > timedelta(days=3)
    if by_day:
        merged: dict[datetime, int] = defaultdict(int)
        for bucket, n in rows:
            merged[bucket.replace(hour=0, minute=0, second=0, microsecond=0)] += n
        rows = sorted(merged.items())
    out: list[tuple[datetime, int]] = []
    total = 0
    for bucket, n in rows:
        total += n
        out.append((bucket, total))
    return out


def annotation_timeline(project: Project) -> list[tuple[datetime, int]]:
    """Cumulative human annotations per hour (per day past three days); one grouped query."""
    tz = timezone.get_current_timezone()
    hours = (
        HumanAnnotation.objects.filter(item__project=project)
        .annotate(bucket=TruncHour("created_at", tzinfo=tz))
        .order_by()
        .values_list("bucket")
        .annotate(n=Count("id"))
        .values_list("bucket", "n")
    )
    return cumulative(list(hours))


# --- the Progress page ------------------------------------------------------------------------------


class _Median(Aggregate):
    """PostgreSQL's median (percentile_cont(0.5)); see _median for other databases."""

    function = "PERCENTILE_CONT"
    name = "Median"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


@dataclass(frozen=True)
class AnnotatorProgress:
    key: str
    name: str
    tier: str
    done: int  # annotations
    in_progress: int  # live leases
    expired: int  # expired leases (marked expired, or leased past their end)
    skipped: int
    median_seconds: float | None
    last_hour: int
    last_day: int
    consensus: ag.ConsensusAgreement | None


@dataclass(frozen=True)
class ProgressSummary:
    now: datetime
    items: int
    by_status: dict[str, int]
    annotations: int
    imported: int
    leases_live: int
    leases_expired: int
    skipped: int
    last_hour: int
    last_day: int
    median_seconds: float | None
    annotators: list[AnnotatorProgress]
    timeline: list[tuple[datetime, int]]
    consensus_aspect: str
    consensus_at: datetime | None


def consensus_cache_key(project: Project, aspect: str) -> str:
    return f"quality:consensus:{project.pk}:{project.created_at.timestamp():.0f}:{aspect}"


def consensus_by_rater(project: Project, aspect: str) -> tuple[dict[str, ag.ConsensusAgreement], datetime]:
    """Each human's agreement with the leave-one-out majority on `aspect`, reused for up to
    CONSENSUS_CACHE_SECONDS (it reads every annotation); returns it and when it was computed."""
    key = consensus_cache_key(project, aspect)
    cached = cache.get(key)
    if cached is not None:
        return cached
    units: dict[int, dict[str, int]] = defaultdict(dict)
    rows = (
        HumanAnnotation.objects.filter(item__project=project)
        .order_by()
        .values_list("item_id", "annotator_id", "external_annotator", KT(f"preferences__{aspect}"))
    )
    steps_of = label_steps(project.scale)
    for item_id, user_id, external, label in rows.iterator(chunk_size=10000):
        steps = steps_of.get(label) if label is not None else None
        if steps is not None:
            units[item_id][rater_key(user_id, external)] = _sign(steps)
    value = (ag.agreement_with_consensus(units.values()), timezone.now())
    cache.set(key, value, CONSENSUS_CACHE_SECONDS)
    return value


def _median(values: Iterable[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.median(present) if present else None


def progress_summary(project: Project, now: datetime | None = None) -> ProgressSummary:
    """The Progress page: items, annotations, leases and throughput, per project and per annotator.

    Queries: items by status, assignments per annotator, annotations per annotator (with medians on
    PostgreSQL), the project median, the timeline, and the consensus (cached) where there are labels.
    """
    now = now or timezone.now()
    hour, day = now - timedelta(hours=1), now - timedelta(days=1)
    by_status = dict(
        Item.objects.filter(project=project)
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    live = Q(status=Assignment.LEASED, lease_expires_at__gt=now)
    expired = Q(status=Assignment.EXPIRED) | Q(status=Assignment.LEASED, lease_expires_at__lte=now)
    leases = {
        row["annotator_id"]: row
        for row in Assignment.objects.filter(item__project=project)
        .order_by()
        .values("annotator_id")
        .annotate(
            live=Count("id", filter=live),
            expired=Count("id", filter=expired),
            skipped=Count("id", filter=Q(status=Assignment.SKIPPED)),
            username=F("annotator__username"),
        )
    }
    annotations = HumanAnnotation.objects.filter(item__project=project).order_by()
    fresh = Q(imported=False)
    per_rater = annotations.values("annotator_id", "external_annotator").annotate(
        n=Count("id"),
        hour=Count("id", filter=fresh & Q(created_at__gte=hour)),
        day=Count("id", filter=fresh & Q(created_at__gte=day)),
        imported=Count("id", filter=Q(imported=True)),
        experts=Count("id", filter=Q(tier="expert")),
        username=F("annotator__username"),
    )
    medians: dict[str, float | None] = {}
    if connection.vendor == "postgresql":
        per_rater = per_rater.annotate(median=_Median("time_spent"))
        project_median = annotations.aggregate(m=_Median("time_spent"))["m"]
    else:  # other databases: the times, streamed
        times: dict[str, list[float | None]] = defaultdict(list)
        for user_id, external, spent in annotations.values_list("annotator_id", "external_annotator", "time_spent"):
            times[rater_key(user_id, external)].append(spent)
        medians = {key: _median(values) for key, values in times.items()}
        project_median = _median(v for values in times.values() for v in values)
    by_rater: dict[str, dict[str, Any]] = {}
    for row in per_rater:
        key = rater_key(row["annotator_id"], row["external_annotator"])
        by_rater[key] = dict(row)
        if "median" in by_rater[key]:
            medians[key] = by_rater[key]["median"]
    for user_id, held in leases.items():  # leases, and no annotation yet
        by_rater.setdefault(f"u{user_id}", {"username": held["username"], "n": 0, "hour": 0, "day": 0, "experts": 0})
    aspect = default_aspect(project)
    consensus: dict[str, ag.ConsensusAgreement] = {}
    consensus_at = None
    if any(r["n"] for r in by_rater.values()) and project.kind == PAIRWISE:
        consensus, consensus_at = consensus_by_rater(project, aspect)
    rows: list[AnnotatorProgress] = []
    for key, rater in by_rater.items():
        lease: Mapping[str, Any] = leases.get(int(key[1:]), {}) if key.startswith("u") else {}
        experts, n = rater["experts"], rater["n"]
        rows.append(
            AnnotatorProgress(
                key=key,
                name=rater.get("username") or rater.get("external_annotator") or key,
                tier="—" if not n else "expert" if experts == n else "normal" if not experts else "normal/expert",
                done=n,
                in_progress=lease.get("live", 0),
                expired=lease.get("expired", 0),
                skipped=lease.get("skipped", 0),
                median_seconds=medians.get(key),
                last_hour=rater["hour"],
                last_day=rater["day"],
                consensus=consensus.get(key),
            )
        )
    rows.sort(key=lambda r: (-r.done, r.name))
    return ProgressSummary(
        now=now,
        items=sum(by_status.values()),
        by_status={s: by_status.get(s, 0) for s in Item.STATUSES},
        annotations=sum(r.done for r in rows),
        imported=sum(r.get("imported", 0) for r in by_rater.values()),
        leases_live=sum(r["live"] for r in leases.values()),
        leases_expired=sum(r["expired"] for r in leases.values()),
        skipped=sum(r["skipped"] for r in leases.values()),
        last_hour=sum(r.last_hour for r in rows),
        last_day=sum(r.last_day for r in rows),
        median_seconds=project_median,
        annotators=rows,
        timeline=annotation_timeline(project),
        consensus_aspect=aspect,
        consensus_at=consensus_at,
    )


# --- the Costs page ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HumanCost:
    tier: str
    annotations: int
    cost_per_annotation: Decimal
    cost_source: str  # where the cost per annotation comes from
    spent: Decimal
    remaining_slots: int
    remaining_cost: Decimal


@dataclass(frozen=True)
class JudgeCost:
    judge: int
    name: str
    backend: str
    verdicts: int  # items with a done combined verdict
    calls: int  # per-order requests (rows other than combined)
    prompt_tokens: int
    completion_tokens: int
    spent: Decimal | None  # None: no cost recorded
    per_item: Decimal | None
    remaining_items: int
    remaining_cost: Decimal | None
    counted: bool  # in the project's totals (a jury's cost is its members', counted there)
    note: str


@dataclass(frozen=True)
class CostSummary:
    humans: list[HumanCost]
    judges: list[JudgeCost]
    ai_items: int  # the items an AI labels (route "ai"; every item not routed to humans while unrouted)
    human_spent: Decimal
    human_remaining: Decimal
    ai_spent: Decimal
    ai_remaining: Decimal

    @property
    def human_at_finish(self) -> Decimal:
        return self.human_spent + self.human_remaining

    @property
    def ai_at_finish(self) -> Decimal:
        return self.ai_spent + self.ai_remaining

    @property
    def spent(self) -> Decimal:
        return self.human_spent + self.ai_spent

    @property
    def remaining(self) -> Decimal:
        return self.human_remaining + self.ai_remaining

    @property
    def at_finish(self) -> Decimal:
        return self.spent + self.remaining


def tier_costs(project: Project) -> dict[str, tuple[Decimal, str]]:
    """Cost per annotation per tier and where it comes from: Project.cost_per_human_annotation for both
    tiers, unless settings.HYBRIDPREF_EXPERT_COST_PER_ANNOTATION names the expert tier's."""
    base = Decimal(project.cost_per_human_annotation or 0)
    expert = getattr(settings, EXPERT_COST_SETTING, None)
    return {
        "normal": (base, "project"),
        "expert": (Decimal(str(expert)), "settings") if expert is not None else (base, "project"),
    }


def _queue_routes(project: Project) -> tuple[str, ...]:
    from webapp.services.queue import queue_routes

    return queue_routes(project)


def cost_summary(project: Project) -> CostSummary:
    """Spent and projected cost, human and AI. Queries: annotations per tier, remaining slots, the
    human-queue routes, items per route, judgments per judge, verdicts per judge on AI items, judges."""
    costs = tier_costs(project)
    done = dict(
        HumanAnnotation.objects.filter(item__project=project)
        .order_by()
        .values_list("tier")
        .annotate(n=Count("id"))
        .values_list("tier", "n")
    )
    # Remaining slots: queue items short of their overlap, per tier (annotations counted, imported or not).
    overlap = {"normal": project.overlap_normal, "expert": project.overlap_expert}
    routes = _queue_routes(project)
    queue = Item.objects.filter(project=project, route__in=routes).exclude(status=Item.COMPLETE)
    annotated = {
        tier: Subquery(
            HumanAnnotation.objects.filter(item=OuterRef("pk"), tier=tier)
            .order_by()
            .values("item")
            .annotate(n=Count("id"))
            .values("n"),
            output_field=IntegerField(),
        )
        for tier in overlap
    }
    remaining = queue.annotate(
        **{f"short_{t}": Greatest(Value(overlap[t]) - Coalesce(annotated[t], Value(0)), Value(0)) for t in overlap}
    ).aggregate(**{t: Coalesce(Sum(f"short_{t}"), Value(0)) for t in overlap})
    humans = [
        HumanCost(
            tier=tier,
            annotations=done.get(tier, 0),
            cost_per_annotation=costs[tier][0],
            cost_source=costs[tier][1],
            spent=done.get(tier, 0) * costs[tier][0],
            remaining_slots=int(remaining[tier] or 0),
            remaining_cost=int(remaining[tier] or 0) * costs[tier][0],
        )
        for tier in ("normal", "expert")
    ]

    by_route = dict(
        Item.objects.filter(project=project)
        .order_by()
        .values_list("route")
        .annotate(n=Count("id"))
        .values_list("route", "n")
    )
    routed = bool(by_route.get(Item.HUMAN) or by_route.get(Item.AI))
    ai_routes = (Item.AI,) if routed else (Item.UNROUTED, Item.AI)
    ai_items = sum(by_route.get(r, 0) for r in ai_routes)
    combined_done = Q(order=Judgment.COMBINED, status=Judgment.DONE)
    calls = ~Q(order=Judgment.COMBINED)
    usage = {
        row["judge_id"]: row
        for row in Judgment.objects.filter(item__project=project)
        .order_by()
        .values("judge_id")
        .annotate(
            verdicts=Count("id", filter=combined_done),
            calls=Count("id", filter=calls),
            call_cost=Sum("cost", filter=calls),
            call_pt=Sum("prompt_tokens", filter=calls),
            call_ct=Sum("completion_tokens", filter=calls),
            combined_cost=Sum("cost", filter=combined_done),
            combined_pt=Sum("prompt_tokens", filter=combined_done),
            combined_ct=Sum("completion_tokens", filter=combined_done),
        )
    }
    on_ai_items = dict(
        Judgment.objects.filter(item__project=project, item__route__in=ai_routes)
        .filter(combined_done)
        .order_by()
        .values_list("judge_id")
        .annotate(n=Count("item_id", distinct=True))
        .values_list("judge_id", "n")
    )
    judges = {j.pk: j for j in Judge.objects.filter(pk__in=list(usage))}
    rows: list[JudgeCost] = []
    for judge_id, row in usage.items():
        judge = judges[judge_id]
        jury = judge.backend == Judge.JURY
        imported = row["calls"] == 0  # only combined rows: imported verdicts (or a jury)
        spent = row["combined_cost"] if imported else row["call_cost"]
        pt = (row["combined_pt"] if imported else row["call_pt"]) or 0
        ct = (row["combined_ct"] if imported else row["call_ct"]) or 0
        per_item = (spent / row["verdicts"]) if spent is not None and row["verdicts"] else None
        remaining_items = max(0, ai_items - on_ai_items.get(judge_id, 0)) if judge.active else 0
        remaining_cost = per_item * remaining_items if per_item is not None else None
        note = ""
        if jury:
            note = "a jury: its cost is its members' requests, counted on their rows"
        elif spent is None:
            note = "no cost recorded (a local model, or imported verdicts)"
        elif not judge.active:
            note = "inactive: nothing projected"
        rows.append(
            JudgeCost(
                judge=judge_id,
                name=judge.name,
                backend=judge.backend,
                verdicts=row["verdicts"],
                calls=row["calls"],
                prompt_tokens=pt,
                completion_tokens=ct,
                spent=spent,
                per_item=per_item,
                remaining_items=remaining_items,
                remaining_cost=remaining_cost,
                counted=not jury,
                note=note,
            )
        )
    rows.sort(key=lambda r: r.name)
    zero = Decimal(0)
    return CostSummary(
        humans=humans,
        judges=rows,
        ai_items=ai_items,
        human_spent=sum((h.spent for h in humans), zero),
        human_remaining=sum((h.remaining_cost for h in humans), zero),
        ai_spent=sum((r.spent for r in rows if r.counted and r.spent is not None), zero),
        ai_remaining=sum((r.remaining_cost for r in rows if r.counted and r.remaining_cost is not None), zero),
    )
