"""Label arithmetic shared by the judges: soft scores, order combination (MT-Bench) and juries."""

import pytest

from annotators.backoff import backoff_delay
from annotators.labels import (
    aggregate_jury,
    combine_orders,
    label_to_score,
    margin_to_probability,
    probability_to_label,
    score_to_label,
)
from webapp.scheme import LIKERT5, LIKERT5_LABELS, STRENGTH7, STRENGTH7_LABELS

A_CLEAR, A_SLIGHT, TIE, B_SLIGHT, B_CLEAR = LIKERT5_LABELS


@pytest.mark.parametrize(("scale", "labels"), [(LIKERT5, LIKERT5_LABELS), (STRENGTH7, STRENGTH7_LABELS)])
def test_every_label_survives_the_round_trip_through_a_score(scale, labels):
    assert [score_to_label(label_to_score(lab, scale), scale) for lab in labels] == list(labels)


def test_strength7_negative_means_the_first_response_is_better():
    assert label_to_score(-3, STRENGTH7) == 1.0
    assert label_to_score(3, STRENGTH7) == -1.0


@pytest.mark.parametrize(
    ("p", "likert", "strength"),
    [(0.99, A_CLEAR, -3), (0.7, A_SLIGHT, -1), (0.5, TIE, 0), (0.3, B_SLIGHT, 1), (0.01, B_CLEAR, 3)],
)
def test_a_soft_preference_maps_to_the_nearest_label(p, likert, strength):
    assert probability_to_label(p, LIKERT5) == likert
    assert probability_to_label(p, STRENGTH7) == strength


def test_a_reward_margin_is_a_bradley_terry_probability():
    assert margin_to_probability(0.0) == 0.5
    assert margin_to_probability(2.0) == pytest.approx(0.8808, abs=1e-4)
    assert margin_to_probability(-800.0) == pytest.approx(0.0)  # no overflow on huge margins
    assert margin_to_probability(1.0, temperature=2.0) == pytest.approx(margin_to_probability(0.5))


def test_orders_that_agree_keep_the_winner_at_the_weaker_strength():
    combined = combine_orders([{"overall": A_CLEAR}, {"overall": A_SLIGHT}], LIKERT5)
    assert combined.labels == {"overall": A_SLIGHT}
    assert combined.inconsistent == {"overall": False}


def test_orders_that_disagree_on_the_winner_make_an_inconsistent_tie():
    combined = combine_orders(
        [{"overall": A_CLEAR, "helpful": A_SLIGHT}, {"overall": B_SLIGHT, "helpful": A_CLEAR}], LIKERT5
    )
    assert combined.labels["overall"] == TIE
    assert combined.inconsistent == {"overall": True, "helpful": False}
    assert combined.labels["helpful"] == A_SLIGHT
    assert combined.any_inconsistent


def test_a_tie_in_one_order_and_a_win_in_the_other_is_inconsistent_as_in_mt_bench():
    combined = combine_orders([{"overall": 0}, {"overall": -2}], STRENGTH7)
    assert combined.labels == {"overall": 0}
    assert combined.inconsistent == {"overall": True}


def test_strength7_orders_that_agree_average_toward_a_tie():
    assert combine_orders([{"overall": -3}, {"overall": -2}], STRENGTH7).labels == {"overall": -2}
    assert combine_orders([{"overall": 3}, {"overall": 3}], STRENGTH7).labels == {"overall": 3}


def test_a_jury_majority_wins_and_its_dissent_is_recorded():
    verdict = aggregate_jury([{"overall": A_CLEAR}, {"overall": A_SLIGHT}, {"overall": B_CLEAR}], LIKERT5)
    assert verdict.labels == {"overall": A_SLIGHT}
    assert verdict.disagreement == {"overall": pytest.approx(1 / 3)}
    assert verdict.votes == {"overall": {"A": 2, "tie": 0, "B": 1}}


def test_a_split_jury_is_a_tie():
    verdict = aggregate_jury([{"overall": A_CLEAR}, {"overall": B_CLEAR}], LIKERT5)
    assert verdict.labels == {"overall": TIE}
    assert verdict.disagreement == {"overall": 1.0}


def test_a_mean_strength_jury_averages_the_scores():
    verdict = aggregate_jury([{"overall": -3}, {"overall": -3}, {"overall": 3}], STRENGTH7, rule="mean")
    assert verdict.labels == {"overall": -1}


def test_an_unknown_jury_rule_is_refused_by_name():
    with pytest.raises(ValueError, match="median"):
        aggregate_jury([{"overall": 0}], STRENGTH7, rule="median")


def test_backoff_grows_exponentially_with_full_jitter_and_respects_retry_after():
    assert backoff_delay(0, base=2, rand=lambda: 1.0) == 2.0
    assert backoff_delay(3, base=2, rand=lambda: 1.0) == 16.0
    assert backoff_delay(3, base=2, rand=lambda: 0.25) == 4.0
    assert backoff_delay(20, base=2, cap=60, rand=lambda: 1.0) == 60.0
    assert backoff_delay(0, base=2, retry_after=7.0, rand=lambda: 0.1) == 7.0
