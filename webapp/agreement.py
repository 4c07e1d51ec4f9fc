"""Inter-annotator agreement: plain typed functions on lists. Pure code: no Django, no database.

Conventions:

- A *unit* is one item (on one aspect); its *values* are the labels it got, one per rater. Units with
  fewer than two values carry no information about agreement and are left out where a metric needs pairs.
- ``None`` in a paired list (Cohen's kappa) or in a unit (Krippendorff's alpha) is a missing value.
- Every coefficient returns ``None`` instead of NaN or an error when it is undefined: no pairs to
  compare, or a single category in use (the expected agreement is then 1 and chance-corrected
  agreement divides by zero). Percentages of agreement are shares in [0, 1].

Definitions follow the textbooks (Cohen 1960, 1968; Fleiss 1971; Krippendorff 2011, "Computing
Krippendorff's Alpha-Reliability"); tests/test_agreement.py checks each against published values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)

NOMINAL, ORDINAL, INTERVAL, RATIO = "nominal", "ordinal", "interval", "ratio"
LEVELS = (NOMINAL, ORDINAL, INTERVAL, RATIO)
LINEAR, QUADRATIC = "linear", "quadratic"


def _sorted_categories(values: Iterable[Hashable]) -> list[Hashable]:
    """The distinct values, sorted when they can be (numbers, strings), else in order of first occurrence."""
    distinct = list(dict.fromkeys(values))
    try:
        return sorted(distinct)  # type: ignore[type-var]
    except TypeError:
        return distinct


def _paired(a: Sequence[Hashable | None], b: Sequence[Hashable | None]) -> list[tuple[Hashable, Hashable]]:
    if len(a) != len(b):
        raise ValueError(f"the two raters' lists differ in length ({len(a)} and {len(b)})")
    return [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]


def percent_agreement(a: Sequence[Hashable | None], b: Sequence[Hashable | None]) -> float | None:
    """Share of units on which two raters give the same value (pairs with a missing value left out)."""
    pairs = _paired(a, b)
    if not pairs:
        return None
    return sum(1 for x, y in pairs if x == y) / len(pairs)


def cohen_kappa(a: Sequence[Hashable | None], b: Sequence[Hashable | None]) -> float | None:
    """Cohen's kappa (1960) of two raters on nominal values: (p_o - p_e) / (1 - p_e).

    p_o is the observed share of agreement, p_e the agreement expected from each rater's own marginal
    distribution. None without pairs, or when p_e is 1 (both raters used one and the same category).
    """
    pairs = _paired(a, b)
    n = len(pairs)
    if not n:
        return None
    agree = sum(1 for x, y in pairs if x == y)
    left = Counter(x for x, _ in pairs)
    right = Counter(y for _, y in pairs)
    expected = sum(count * right.get(value, 0) for value, count in left.items())  # p_e * n^2, exact
    return _kappa(agree, expected, n)


def _kappa(agree: int, expected: int, n: int) -> float | None:
    """(p_o - p_e) / (1 - p_e) from agree = p_o n and expected = p_e n^2, in integers (exact)."""
    if not n or expected == n * n:
        return None
    return (agree * n - expected) / (n * n - expected)


def cohen_kappa_confusion(confusion: Sequence[Sequence[int]] | np.ndarray) -> float | None:
    """Cohen's kappa from a square table of counts: confusion[i][j] units rater 1 put in category i and
    rater 2 in category j (the same categories in the same order on both sides)."""
    table = np.asarray(confusion, dtype=np.int64)
    if table.ndim != 2 or table.shape[0] != table.shape[1]:
        raise ValueError("the confusion table must be square")
    n = int(table.sum())
    expected = int((table.sum(axis=1) * table.sum(axis=0)).sum())
    return _kappa(int(np.trace(table)), expected, n)


def weighted_kappa(
    a: Sequence[Hashable | None],
    b: Sequence[Hashable | None],
    categories: Sequence[Hashable] | None = None,
    weights: str = LINEAR,
) -> float | None:
    """Cohen's weighted kappa (1968) for ordered categories: 1 - sum(w * observed) / sum(w * expected).

    `categories` gives the order (default: the values sorted); the disagreement weight of categories
    at ranks i and j is |i - j| / (k - 1) ("linear") or its square ("quadratic"). With two categories
    both equal Cohen's kappa. None without pairs or when the expected disagreement is 0.
    """
    if weights not in (LINEAR, QUADRATIC):
        raise ValueError(f"weights must be {LINEAR!r} or {QUADRATIC!r}, not {weights!r}")
    pairs = _paired(a, b)
    if not pairs:
        return None
    order = list(categories) if categories is not None else _sorted_categories(v for p in pairs for v in p)
    index = {c: i for i, c in enumerate(order)}
    unknown = {v for p in pairs for v in p if v not in index}
    if unknown:
        raise ValueError(f"values outside the categories: {sorted(map(repr, unknown))}")
    k = len(order)
    if k < 2:
        return None
    observed = np.zeros((k, k))
    for x, y in pairs:
        observed[index[x], index[y]] += 1
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / len(pairs)
    ranks = np.arange(k)
    w = np.abs(ranks[:, None] - ranks[None, :]) / (k - 1)
    if weights == QUADRATIC:
        w = w**2
    disagreement_expected = float((w * expected).sum())
    if disagreement_expected <= 0:
        return None
    return 1.0 - float((w * observed).sum()) / disagreement_expected


def _count_matrix(units: Iterable[Sequence[Hashable | None]]) -> tuple[list[Hashable], np.ndarray]:
    """Units -> (categories, counts[unit, category]) over the units with at least two values."""
    kept = [[v for v in unit if v is not None] for unit in units]
    kept = [unit for unit in kept if len(unit) >= 2]
    categories = _sorted_categories(v for unit in kept for v in unit)
    index = {c: i for i, c in enumerate(categories)}
    counts = np.zeros((len(kept), len(categories)))
    for row, unit in enumerate(kept):
        for value in unit:
            counts[row, index[value]] += 1
    return categories, counts


def fleiss_kappa_counts(counts: Sequence[Sequence[float]] | np.ndarray) -> float | None:
    """Fleiss' kappa (1971) from counts[unit][category] (how many raters put the unit in the category).

    Units may have different numbers of raters (the usual generalisation): P_i is the share of agreeing
    rater pairs on unit i, P-bar their mean over units with at least two raters, p_j the share of all
    assignments in category j and P_e = sum p_j^2; kappa = (P-bar - P_e) / (1 - P_e). None without such
    units or when P_e is 1 (one category only).
    """
    matrix = np.asarray(counts, dtype=np.float64)
    if matrix.ndim != 2 or matrix.size == 0:
        return None
    n_i = matrix.sum(axis=1)
    matrix, n_i = matrix[n_i >= 2], n_i[n_i >= 2]
    if not len(n_i):
        return None
    p_i = ((matrix**2).sum(axis=1) - n_i) / (n_i * (n_i - 1))
    p_bar = float(p_i.mean())
    p_j = matrix.sum(axis=0) / n_i.sum()
    p_e = float((p_j**2).sum())
    if p_e >= 1.0 - 1e-12:
        return None
    return (p_bar - p_e) / (1.0 - p_e)


def fleiss_kappa(units: Iterable[Sequence[Hashable | None]]) -> float | None:
    """Fleiss' kappa over units given as lists of nominal values (see fleiss_kappa_counts)."""
    _, counts = _count_matrix(units)
    return fleiss_kappa_counts(counts) if counts.size else None


def pairwise_agreement(units: Iterable[Sequence[Hashable | None]]) -> float | None:
    """Mean over units with at least two values of the share of agreeing rater pairs (Fleiss' P-bar)."""
    _, counts = _count_matrix(units)
    return pairwise_agreement_counts(counts)


def pairwise_agreement_counts(counts: Sequence[Sequence[float]] | np.ndarray) -> float | None:
    """pairwise_agreement from counts[unit][category]; units with fewer than two values left out."""
    matrix = np.asarray(counts, dtype=np.float64)
    if matrix.ndim != 2 or not matrix.size:
        return None
    n_i = matrix.sum(axis=1)
    matrix, n_i = matrix[n_i >= 2], n_i[n_i >= 2]
    if not len(n_i):
        return None
    return float((((matrix**2).sum(axis=1) - n_i) / (n_i * (n_i - 1))).mean())


def reliability_units(matrix: Sequence[Sequence[Hashable | None]]) -> list[list[Hashable | None]]:
    """A reliability data matrix (one row per rater, one column per unit, None = missing) as units."""
    if not matrix:
        return []
    width = len(matrix[0])
    if any(len(row) != width for row in matrix):
        raise ValueError("every rater's row must have one value (or None) per unit")
    return [[row[u] for row in matrix] for u in range(width)]


def krippendorff_alpha(
    units: Iterable[Sequence[Any]], level: str = ORDINAL, categories: Sequence[Any] | None = None
) -> float | None:
    """Krippendorff's alpha, 1 - D_o / D_e, for any number of raters and missing values.

    `units`: per unit the values it got (None = missing; see reliability_units for a rater x unit
    matrix). Units with fewer than two values are not pairable and left out. Values are coincidences
    weighted 1 / (m_u - 1) within their unit (m_u its number of values); D_o sums the observed
    coincidences times the squared distance, D_e the expected ones (n_c n_k / (n - 1)).

    Distances: nominal 0/1; ordinal (sum of n_g for g from c to k, minus (n_c + n_k) / 2)^2 over the
    categories in order (`categories`, default the values sorted; unused categories add nothing);
    interval (c - k)^2 and ratio ((c - k) / (c + k))^2 on numeric values. None without a pairable
    unit or when every pairable value is the same (D_e = 0).
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    kept = [[v for v in unit if v is not None] for unit in units]
    kept = [unit for unit in kept if len(unit) >= 2]
    if not kept:
        return None
    order = list(categories) if categories is not None else _sorted_categories(v for unit in kept for v in unit)
    index = {c: i for i, c in enumerate(order)}
    unknown = {v for unit in kept for v in unit if v not in index}
    if unknown:
        raise ValueError(f"values outside the categories: {sorted(map(repr, unknown))}")
    counts = np.zeros((len(kept), len(order)))
    for row, unit in enumerate(kept):
        for value in unit:
            counts[row, index[value]] += 1
    return krippendorff_alpha_counts(counts, level, order)


def krippendorff_alpha_counts(
    counts: Sequence[Sequence[float]] | np.ndarray, level: str = ORDINAL, categories: Sequence[Any] | None = None
) -> float | None:
    """krippendorff_alpha from counts[unit][value]: how many raters gave the unit each value, the
    values in the order of `categories` (their numbers for interval and ratio; default 0, 1, 2...)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    matrix = np.asarray(counts, dtype=np.float64)
    if matrix.ndim != 2 or not matrix.size:
        return None
    order = list(categories) if categories is not None else list(range(matrix.shape[1]))
    if len(order) != matrix.shape[1]:
        raise ValueError(f"{len(order)} categories for {matrix.shape[1]} columns of counts")
    m_u = matrix.sum(axis=1)
    matrix, m_u = matrix[m_u >= 2], m_u[m_u >= 2]
    if not len(m_u):
        return None
    weighted = matrix / (m_u - 1)[:, None]
    # o_ck = sum_u n_uc n_uk / (m_u - 1), without a value paired with itself on the diagonal.
    coincidences = weighted.T @ matrix - np.diag(weighted.sum(axis=0))
    n_c = coincidences.sum(axis=1)
    n = float(n_c.sum())
    delta2 = _distances(level, order, n_c)
    expected = float((np.outer(n_c, n_c) * delta2).sum()) / (n - 1)
    if expected <= 1e-12:
        return None
    return 1.0 - float((coincidences * delta2).sum()) / expected


def _distances(level: str, order: Sequence[Any], n_c: np.ndarray) -> np.ndarray:
    k = len(order)
    if level == NOMINAL:
        return 1.0 - np.eye(k)
    if level == ORDINAL:
        cumulative = np.concatenate(([0.0], np.cumsum(n_c)))
        d = np.zeros((k, k))
        for c in range(k):
            for g in range(c + 1, k):
                d[c, g] = d[g, c] = (cumulative[g + 1] - cumulative[c] - (n_c[c] + n_c[g]) / 2.0) ** 2
        return d
    x = np.asarray([float(v) for v in order])
    if level == INTERVAL:
        return np.asarray((x[:, None] - x[None, :]) ** 2)
    total = x[:, None] + x[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(total == 0, 0.0, (x[:, None] - x[None, :]) / np.where(total == 0, 1.0, total))
    return np.asarray(ratio**2)


def majority(values: Iterable[Hashable]) -> Hashable | None:
    """The most common value when it is strictly the most common; None when empty or tied at the top."""
    ranked = Counter(values).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


@dataclass(frozen=True, slots=True)
class ConsensusAgreement:
    """One rater against the leave-one-out majority of the others.

    labels: units the rater labelled; compared: those where the other raters had a strict majority;
    agreed: those where the rater's value is that majority.
    """

    labels: int
    compared: int
    agreed: int

    @property
    def rate(self) -> float | None:
        return self.agreed / self.compared if self.compared else None


def agreement_with_consensus(units: Iterable[Mapping[K, Hashable]]) -> dict[K, ConsensusAgreement]:
    """Per rater: how often they agree with the majority of the *other* raters of the same units.

    `units`: per unit, {rater: value}. A unit counts for a rater when at least one other rater labelled
    it and the others' values have a strict majority (a tie among them is no consensus, left out).
    """
    labels: Counter[K] = Counter()
    compared: Counter[K] = Counter()
    agreed: Counter[K] = Counter()
    for unit in units:
        if not unit:
            continue
        if len(unit) <= 2:  # the common cases, without counting: alone, or one other rater
            (first, a), *rest = unit.items()
            labels[first] += 1
            if rest:
                (second, b) = rest[0]
                labels[second] += 1
                compared[first] += 1
                compared[second] += 1
                agreed[first] += a == b
                agreed[second] += a == b
            continue
        counts = Counter(unit.values())
        for rater, value in unit.items():
            labels[rater] += 1
            counts[value] -= 1  # leave the rater out
            ranked = [(v, c) for v, c in counts.most_common(2) if c > 0]
            counts[value] += 1
            if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
                continue
            compared[rater] += 1
            agreed[rater] += ranked[0][0] == value
    return {rater: ConsensusAgreement(labels[rater], compared[rater], agreed[rater]) for rater in labels}


@dataclass(frozen=True, slots=True)
class PairAgreement:
    """Two raters on the units they share: how many, the share of agreement and Cohen's kappa."""

    a: Hashable
    b: Hashable
    n: int
    percent: float | None
    kappa: float | None


def rater_pairs(units: Iterable[Mapping[K, Hashable]]) -> dict[tuple[K, K], tuple[list[Hashable], list[Hashable]]]:
    """Per pair of raters (ordered by str), their values on the units both labelled, aligned."""
    pairs: dict[tuple[K, K], tuple[list[Hashable], list[Hashable]]] = {}
    for unit in units:
        raters = sorted(unit, key=str)
        for i, a in enumerate(raters):
            for b in raters[i + 1 :]:
                left, right = pairs.setdefault((a, b), ([], []))
                left.append(unit[a])
                right.append(unit[b])
    return pairs


def pairwise_kappas(units: Iterable[Mapping[K, Hashable]], min_shared: int = 1) -> list[PairAgreement]:
    """Cohen's kappa and percent agreement for every pair of raters sharing at least `min_shared` units,
    most shared units first."""
    rows = [
        PairAgreement(a, b, len(left), percent_agreement(left, right), cohen_kappa(left, right))
        for (a, b), (left, right) in rater_pairs(units).items()
        if len(left) >= min_shared
    ]
    return sorted(rows, key=lambda r: (-r.n, str(r.a), str(r.b)))


def mean_kappa(pairs: Iterable[PairAgreement]) -> float | None:
    """The pairs' kappas averaged, each weighted by its number of shared units; None if none is defined."""
    defined = [(p.kappa, p.n) for p in pairs if p.kappa is not None]
    total = sum(n for _, n in defined)
    if not total:
        return None
    return sum(k * n for k, n in defined) / total


def position_consistency(pairs: Iterable[tuple[Hashable, Hashable]]) -> float | None:
    """Share of items whose verdicts in the two response orders agree (both mapped to canonical order).

    `pairs`: per item, (verdict with A shown first, verdict with B shown first), e.g. the two winners.
    MT-Bench counts the rest as inconsistent. None without items.
    """
    seen = agree = 0
    for first, swapped in pairs:
        seen += 1
        agree += first == swapped
    return agree / seen if seen else None
