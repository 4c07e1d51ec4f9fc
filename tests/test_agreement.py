"""webapp.agreement against published and hand-computed values. Pure: no database."""

from __future__ import annotations

import math

import pytest

from webapp import agreement as ag

N = None

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the example with four observers,
# twelve units and missing values (section C; also Krippendorff 2019, p. 290). Published: nominal .743,
# ordinal .815, interval .849, ratio .797.
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],  # observer A
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],  # B
    [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],  # C
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N],  # D
]
# Wikipedia's "A computational example" (three coders, fifteen units): nominal 0.691, interval 0.811.
WIKIPEDIA = [
    [N, N, N, N, N, 3, 4, 1, 2, 1, 1, 3, 3, N, 3],
    [1, N, 2, 1, 3, 3, 4, 3, N, N, N, N, N, N, N],
    [N, N, 2, 1, 3, 4, 4, N, 2, 1, 1, 3, 3, N, 4],
]
# Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories; P-bar .378, P_e .213, kappa .210.
FLEISS_1971 = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


# --- Krippendorff's alpha ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "published"),
    [(ag.NOMINAL, 0.743), (ag.ORDINAL, 0.815), (ag.INTERVAL, 0.849), (ag.RATIO, 0.797)],
)
def test_alpha_matches_krippendorff_2011(level, published):
    alpha = ag.krippendorff_alpha(ag.reliability_units(KRIPPENDORFF_2011), level)
    assert round(alpha, 3) == published


def test_alpha_nominal_by_hand_on_krippendorff_2011():
    """Worked by hand: 40 pairable values (unit 12 has one), n_c = 9, 13, 10, 5, 3 for values 1..5.
    Off-diagonal coincidences come from three units, each pair weighted 1 / (m_u - 1) = 1/3: unit 2
    (2, 2, 3, 2) gives 6/3, unit 6 (1, 2, 3, 4) 12/3, unit 8 (1, 1, 2, 1) 6/3, together 8.
    alpha = 1 - (n - 1) * 8 / sum n_c (n - n_c) = 1 - 39 * 8 / 1216 = 113/152 = 0.7434."""
    n_c = [9, 13, 10, 5, 3]
    n = sum(n_c)
    by_hand = 1 - (n - 1) * 8 / sum(c * (n - c) for c in n_c)
    assert by_hand == pytest.approx(113 / 152)
    assert ag.krippendorff_alpha(ag.reliability_units(KRIPPENDORFF_2011), ag.NOMINAL) == pytest.approx(113 / 152)


def test_alpha_matches_wikipedia_example():
    units = ag.reliability_units(WIKIPEDIA)
    assert ag.krippendorff_alpha(units, ag.NOMINAL) == pytest.approx(0.691358, abs=1e-6)
    assert ag.krippendorff_alpha(units, ag.INTERVAL) == pytest.approx(0.810845, abs=1e-6)


def test_alpha_ordinal_takes_the_order_from_categories():
    """Labels as strings in an explicit order give the numeric answer (unused categories add nothing)."""
    names = {1: "very low", 2: "low", 3: "mid", 4: "high", 5: "very high"}
    matrix = [[names.get(v) if v is not None else None for v in row] for row in KRIPPENDORFF_2011]
    order = ["very low", "low", "mid", "high", "very high", "extreme"]
    alpha = ag.krippendorff_alpha(ag.reliability_units(matrix), ag.ORDINAL, order)
    assert alpha == pytest.approx(ag.krippendorff_alpha(ag.reliability_units(KRIPPENDORFF_2011), ag.ORDINAL))


def test_alpha_edge_cases_return_none():
    assert ag.krippendorff_alpha([]) is None
    assert ag.krippendorff_alpha([[1], [2, None], [None, None]]) is None  # no unit with two values
    assert ag.krippendorff_alpha([[1, 1], [1, 1, 1]]) is None  # one value only: D_e = 0
    assert ag.krippendorff_alpha([[0, 0], [1, 1]]) == 1.0
    with pytest.raises(ValueError, match="outside"):
        ag.krippendorff_alpha([[1, 3]], ag.ORDINAL, [1, 2])
    with pytest.raises(ValueError, match="level"):
        ag.krippendorff_alpha([[1, 2]], "circular")


# --- Cohen's kappa ----------------------------------------------------------------------------------


def test_cohen_kappa_textbook_example():
    """Wikipedia's example: 50 proposals, yes/yes 20, yes/no 5, no/yes 10, no/no 15: p_o .7, p_e .5, kappa .4."""
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert ag.percent_agreement(a, b) == pytest.approx(0.7)
    assert ag.cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_leaves_missing_values_out_and_handles_edges():
    assert ag.cohen_kappa(["x", None, "y", "x"], ["x", "y", "y", None]) == 1.0
    assert ag.cohen_kappa([], []) is None
    assert ag.cohen_kappa([None], ["x"]) is None
    assert ag.cohen_kappa(["x", "x"], ["x", "x"]) is None  # one category: p_e = 1
    assert ag.percent_agreement(["x", "x"], ["x", "x"]) == 1.0
    assert ag.percent_agreement([], []) is None
    with pytest.raises(ValueError, match="length"):
        ag.cohen_kappa(["x"], ["x", "y"])


def test_weighted_kappa_by_hand():
    """Categories 0, 1, 2; a = 0 0 1 1 2 2, b = 0 1 1 2 2 1.

    Observed: (0,0) (0,1) (1,1) (1,2) (2,2) (2,1); rows 2 2 2, columns 1 3 2; expected e_ij = 2 c_j / 6.
    Linear weights 0, 1/2, 1: sum w*o = 1.5, sum w*e = 0.5 + 1 + 1 = 2.5, kappa = 1 - 1.5/2.5 = 0.4.
    Quadratic weights 0, 1/4, 1: sum w*o = 0.75, sum w*e = 5/12 + 1/2 + 5/6 = 7/4, kappa = 1 - 3/7 = 4/7.
    Unweighted: p_o = 1/2, p_e = (2 + 6 + 4)/36 = 1/3, kappa = 1/4.
    """
    a = [0, 0, 1, 1, 2, 2]
    b = [0, 1, 1, 2, 2, 1]
    assert ag.weighted_kappa(a, b, weights=ag.LINEAR) == pytest.approx(0.4)
    assert ag.weighted_kappa(a, b, weights=ag.QUADRATIC) == pytest.approx(4 / 7)
    assert ag.cohen_kappa(a, b) == pytest.approx(0.25)


def test_weighted_kappa_matches_scikit_learn():
    from sklearn.metrics import cohen_kappa_score

    a = [-2, -1, 0, 1, 2, 2, 1, 0, -1, -2, 0, 0, 1, 2, -2]
    b = [-2, 0, 0, 2, 2, 1, 1, -1, -1, -1, 0, 1, 1, 2, 0]
    for weights in (ag.LINEAR, ag.QUADRATIC):
        assert ag.weighted_kappa(a, b, weights=weights) == pytest.approx(cohen_kappa_score(a, b, weights=weights))
    assert ag.cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


def test_weighted_kappa_edges_and_two_categories():
    assert ag.weighted_kappa([], []) is None
    assert ag.weighted_kappa([1, 1], [1, 1]) is None
    assert ag.weighted_kappa([1, 1], [1, 1], categories=[0, 1, 2]) is None  # nothing expected to disagree
    a, b = ["n", "y", "y", "n", "y"], ["n", "y", "n", "n", "y"]
    assert ag.weighted_kappa(a, b, ["n", "y"], ag.QUADRATIC) == pytest.approx(ag.cohen_kappa(a, b))
    with pytest.raises(ValueError, match="weights"):
        ag.weighted_kappa(a, b, weights="cubic")


# --- Fleiss' kappa ----------------------------------------------------------------------------------


def test_fleiss_kappa_textbook_example():
    assert ag.fleiss_kappa_counts(FLEISS_1971) == pytest.approx(0.20993, abs=1e-5)


def test_fleiss_kappa_from_units_matches_counts():
    units = [[c for c, n in enumerate(row) for _ in range(n)] for row in FLEISS_1971]
    assert ag.fleiss_kappa(units) == pytest.approx(0.20993, abs=1e-5)
    assert ag.pairwise_agreement(units) == pytest.approx(0.37802, abs=1e-5)


def test_fleiss_kappa_varying_raters_by_hand():
    """Units A A | A B | B B B: P_i = 1, 0, 1 (mean 2/3); p_A = 3/7, p_B = 4/7, P_e = 25/49;
    kappa = (2/3 - 25/49) / (24/49) = 23/72."""
    assert ag.fleiss_kappa([["A", "A"], ["A", "B"], ["B", "B", "B"], ["A"]]) == pytest.approx(23 / 72)


def test_fleiss_kappa_edges():
    assert ag.fleiss_kappa([]) is None
    assert ag.fleiss_kappa([["A"], ["B"]]) is None
    assert ag.fleiss_kappa([["A", "A"], ["A", "A", None]]) is None  # one category
    assert ag.fleiss_kappa_counts([]) is None
    assert ag.pairwise_agreement([["A"]]) is None


# --- consensus, pairs, position consistency ---------------------------------------------------------


def test_majority_is_strict():
    assert ag.majority(["A", "B", "A"]) == "A"
    assert ag.majority(["A", "B"]) is None
    assert ag.majority([]) is None


def test_agreement_with_consensus_leaves_the_rater_out():
    units = [
        {"ann": "A", "bob": "A", "cat": "B"},  # ann: others A/B tie -> not compared; bob likewise; cat: others A
        {"ann": "A", "bob": "A", "cat": "A"},  # everyone agrees with the other two
        {"ann": "B", "bob": "A"},  # one other each: ann vs A (no), bob vs B (no)
        {"ann": "A"},  # alone: counted as labelled only
    ]
    result = ag.agreement_with_consensus(units)
    assert result["ann"] == ag.ConsensusAgreement(labels=4, compared=2, agreed=1)
    assert result["bob"] == ag.ConsensusAgreement(labels=3, compared=2, agreed=1)
    assert result["cat"] == ag.ConsensusAgreement(labels=2, compared=2, agreed=1)
    assert result["ann"].rate == 0.5
    assert ag.ConsensusAgreement(1, 0, 0).rate is None
    assert ag.agreement_with_consensus([]) == {}
    assert ag.agreement_with_consensus([{}]) == {}


def test_pairwise_kappas_and_their_mean():
    units = [
        {"a": 1, "b": 1, "c": 0},
        {"a": 0, "b": 0},
        {"a": 1, "b": 0, "c": 1},
        {"a": 0, "c": 0},
    ]
    pairs = {(p.a, p.b): p for p in ag.pairwise_kappas(units)}
    assert pairs[("a", "b")].n == 3
    assert pairs[("a", "b")].percent == pytest.approx(2 / 3)
    assert pairs[("a", "b")].kappa == pytest.approx(ag.cohen_kappa([1, 0, 1], [1, 0, 0]))
    assert pairs[("a", "c")].kappa == pytest.approx(ag.cohen_kappa([1, 1, 0], [0, 1, 0]))
    assert pairs[("b", "c")].kappa == pytest.approx(ag.cohen_kappa([1, 0], [0, 1]))
    expected = sum(p.kappa * p.n for p in pairs.values()) / sum(p.n for p in pairs.values())
    assert ag.mean_kappa(pairs.values()) == pytest.approx(expected)
    assert ag.pairwise_kappas(units, min_shared=3)[0].n == 3
    assert ag.mean_kappa([]) is None


def test_position_consistency():
    assert ag.position_consistency([(1, 1), (1, -1), (0, 0), (-1, -1)]) == 0.75
    assert ag.position_consistency([]) is None


def test_no_nan_anywhere_on_degenerate_input():
    values = [
        ag.cohen_kappa(["x"], ["x"]),
        ag.weighted_kappa([0], [0]),
        ag.fleiss_kappa([["x", "x"]]),
        ag.krippendorff_alpha([["x", "x"]], ag.NOMINAL),
        ag.pairwise_agreement([]),
    ]
    assert all(v is None or not math.isnan(v) for v in values)
    assert values[:4] == [None, None, None, None]


# --- the count-table forms (what the pages use on slices) ------------------------------------------


def test_count_forms_agree_with_the_list_forms():
    units = ag.reliability_units(KRIPPENDORFF_2011)
    counts = [[sum(1 for v in unit if v == c) for c in (1, 2, 3, 4, 5)] for unit in units]
    for level in ag.LEVELS:
        assert ag.krippendorff_alpha_counts(counts, level, [1, 2, 3, 4, 5]) == pytest.approx(
            ag.krippendorff_alpha(units, level)
        )
    assert ag.pairwise_agreement_counts(FLEISS_1971) == pytest.approx(0.37802, abs=1e-5)
    # Wikipedia's Cohen example as a table: yes/yes 20, yes/no 5, no/yes 10, no/no 15.
    assert ag.cohen_kappa_confusion([[20, 5], [10, 15]]) == pytest.approx(0.4)


def test_count_forms_edges():
    assert ag.krippendorff_alpha_counts([]) is None
    assert ag.krippendorff_alpha_counts([[1, 0], [0, 1]]) is None  # no unit with two values
    assert ag.krippendorff_alpha_counts([[2, 0], [3, 0]]) is None  # one value only
    with pytest.raises(ValueError, match="categories"):
        ag.krippendorff_alpha_counts([[1, 1]], ag.ORDINAL, [1, 2, 3])
    assert ag.pairwise_agreement_counts([[1, 0]]) is None
    assert ag.cohen_kappa_confusion([[0, 0], [0, 0]]) is None
    assert ag.cohen_kappa_confusion([[3, 0], [0, 0]]) is None  # one category
    with pytest.raises(ValueError, match="square"):
        ag.cohen_kappa_confusion([[1, 2, 3]])
