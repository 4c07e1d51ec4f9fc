"""The routing model: PPM, candidate generation, strategies, error model, BT proxy and the replay simulation.

Pure numpy; no database. Synthetic data with a planted answer each time.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from routing.candidates import best_candidate, best_of_candidates, generate_candidates, topk_gain
from routing.ppm import FittedPPM, ModelName, cross_validate, fit_best, fit_model, mixture_vector, spearman
from routing.proxy import BTModel, hybrid_proxy_score, score_bt, train_bt
from routing.router import STRATEGIES, ErrorModel, budget_n_from, route, train_error_model
from routing.simulate import simulate


def features(n: int, f: int, p: float = 0.3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, f)) < p


def quadratic_truth(M: np.ndarray, n_items: int) -> np.ndarray:
    """Not monotone in the budget: too many human labels on feature 0 hurts, features 1 and 2 must balance."""
    z = M / n_items
    return -4 * (z[:, 0] - 0.1) ** 2 - 6 * (z[:, 1] - z[:, 2]) ** 2 + 3 * z[:, 3] * z[:, 4] + 0.5 * z[:, 5]


def scored_mixtures(X: np.ndarray, rows: int, seed: int, noise: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    M = np.vstack(
        [
            mixture_vector(X, generate_candidates(X, int(rng.integers(0, n + 1)), 1, int(rng.integers(2**31)))[0])
            for _ in range(rows)
        ]
    )
    return M, quadratic_truth(M, n) + rng.normal(scale=noise, size=rows)


@pytest.fixture(scope="module")
def quad_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = features(800, 8, seed=1)
    M, y = scored_mixtures(X, 250, seed=2)
    return X, M, y


# --- PPM ------------------------------------------------------------------------------------------------


def test_mixture_vector_counts_human_items_per_feature() -> None:
    X = np.array([[1, 0], [1, 1], [0, 1]], dtype=bool)
    assert mixture_vector(X, np.array([True, True, False])).tolist() == [2.0, 1.0]
    assert mixture_vector(X, np.array([2, 1])).tolist() == [1.0, 2.0]


def test_ppm_recovers_a_quadratic_function_and_cv_picks_quadratic(
    quad_data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, M, y = quad_data
    ppm = fit_best(M, y, k=10, seed=0, n_items=X.shape[0])
    assert ppm.name == "quadratic"
    assert set(ppm.report) == {"linear", "quadratic", "lightgbm"}
    assert ppm.report["quadratic"].spearman > 0.9
    assert ppm.report["quadratic"].spearman > ppm.report["linear"].spearman
    fresh_M, fresh_y = scored_mixtures(X, 100, seed=3, noise=0.0)
    assert spearman(ppm.predict(fresh_M), fresh_y) > 0.9


def test_linear_and_lightgbm_cross_validation_report_every_fold(
    quad_data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    _, M, y = quad_data
    for model in ("linear", "lightgbm"):
        report = cross_validate(M, y, model, k=5, seed=0)
        assert report.k == 5
        assert len(report.folds) == 5
        assert sum(f.n for f in report.folds) == len(y)
        assert np.isfinite([report.spearman, report.rmse]).all()
        assert report.rmse > 0
    assert cross_validate(M, y, "lightgbm", k=5, seed=0) == cross_validate(M, y, "lightgbm", k=5, seed=0)


@pytest.mark.parametrize("model", ["linear", "quadratic", "lightgbm"])
def test_ppm_survives_a_json_round_trip(model: ModelName, quad_data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    X, M, y = quad_data
    ppm = fit_model(M, y, model, seed=0, n_items=X.shape[0], feature_names=[f"f{i}" for i in range(8)])
    again = FittedPPM.from_dict(json.loads(json.dumps(ppm.to_dict())))
    assert again.name == model
    assert again.feature_names == ppm.feature_names
    np.testing.assert_allclose(again.predict(M), ppm.predict(M), rtol=1e-12, atol=1e-12)


def test_the_report_survives_the_round_trip_too(quad_data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    X, M, y = quad_data
    ppm = fit_best(M[:60], y[:60], k=3, seed=0, n_items=X.shape[0], models=("linear", "quadratic"))
    again = FittedPPM.from_dict(json.loads(json.dumps(ppm.to_dict())))
    assert again.report == ppm.report


def test_ppm_refuses_too_few_rows_and_wrong_widths(quad_data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    _, M, y = quad_data
    with pytest.raises(ValueError, match="at least 3"):
        fit_best(M[:2], y[:2])
    ppm = fit_model(M, y, "linear")
    with pytest.raises(ValueError, match="expects 8 features"):
        ppm.predict(M[:, :5])


# --- candidates -----------------------------------------------------------------------------------------


def test_candidates_spend_exactly_the_budget_without_duplicates() -> None:
    X = features(500, 12, p=0.1, seed=4)
    X[:40] = False  # items without any feature are the last resort
    for budget_n in (0, 1, 37, 250, 470, 499):
        for items in generate_candidates(X, budget_n, 20, seed=5):
            assert len(items) == budget_n
            assert len(np.unique(items)) == budget_n
            assert (np.diff(items) > 0).all()
    assert all(len(c) == 500 for c in generate_candidates(X, 900, 3, seed=5))


def test_candidates_are_deterministic_per_seed_and_differ_across_seeds() -> None:
    X = features(400, 10, seed=6)
    a = generate_candidates(X, 150, 8, seed=7)
    b = generate_candidates(X, 150, 8, seed=7)
    c = generate_candidates(X, 150, 8, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert len({tuple(x) for x in a}) == 8  # the candidates differ from each other too
    # candidate j does not depend on how many are drawn
    assert np.array_equal(generate_candidates(X, 150, 3, seed=7)[2], a[2])


def test_candidates_follow_algorithm_1_feature_by_feature() -> None:
    X = np.zeros((10, 3), dtype=bool)
    X[0:4, 0] = True
    X[3:7, 1] = True
    X[7:10, 2] = True
    (items,) = generate_candidates(X, 6, 1, seed=0, feature_order=[1, 2, 0])
    # feature 1 whole (items 3-6), then 2 of feature 2's items
    assert set(range(3, 7)) <= set(items.tolist())
    assert set(items.tolist()) - set(range(3, 7)) <= {7, 8, 9}


def literal_algorithm_1(X: np.ndarray, budget_n: int, rng: np.random.Generator) -> tuple[int, ...]:
    """The paper's loop, item by item: shuffled features, each feature's items shuffled."""
    chosen: list[int] = []
    for f in rng.permutation(X.shape[1]):
        for i in rng.permutation(np.flatnonzero(X[:, f])).tolist():
            if len(chosen) < budget_n and i not in chosen:
                chosen.append(i)
    rest = [i for i in rng.permutation(len(X)).tolist() if i not in chosen]
    return tuple(sorted(chosen + rest[: budget_n - len(chosen)]))


def test_candidates_are_distributed_like_the_literal_algorithm_1() -> None:
    X = np.random.default_rng(5).random((12, 4)) < 0.35
    X[11] = False
    draws = 8000
    for budget_n in (3, 6):
        rng = np.random.default_rng(1)
        literal = Counter(literal_algorithm_1(X, budget_n, rng) for _ in range(draws))
        ours = Counter(tuple(c.tolist()) for c in generate_candidates(X, budget_n, draws, seed=2))
        total_variation = sum(abs(literal[k] - ours[k]) for k in literal.keys() | ours.keys()) / (2 * draws)
        assert total_variation < 0.06  # sampling noise alone is about 0.04 here; uniform subsets: 0.7+


def test_candidates_never_draw_excluded_items() -> None:
    X = features(300, 8, seed=9)
    exclude = np.arange(0, 300, 3)
    for items in generate_candidates(X, 120, 10, seed=1, exclude=exclude):
        assert len(items) == 120
        assert not np.isin(items, exclude).any()
    assert len(generate_candidates(X, 250, 1, seed=1, exclude=exclude)[0]) == 200  # all eligible items


def test_best_candidate_is_the_one_the_ppm_scores_highest() -> None:
    X = features(300, 6, seed=10)

    class FeatureZero:
        def predict(self, M: np.ndarray) -> np.ndarray:
            return np.asarray(M, dtype=np.float64)[:, 0]

    candidates = generate_candidates(X, 60, 50, seed=2)
    index, predicted = best_candidate(X, candidates, FeatureZero())
    counts = [X[c, 0].sum() for c in candidates]
    assert predicted == max(counts)
    assert index == int(np.argmax(counts))
    streamed = best_of_candidates(X, 60, 50, 2, FeatureZero())
    assert streamed.index == index
    assert np.array_equal(streamed.items, candidates[index])


def test_topk_routes_the_items_with_the_highest_gain() -> None:
    X = features(200, 5, seed=11)

    class Linear:
        def predict(self, M: np.ndarray) -> np.ndarray:
            return np.asarray(M, dtype=np.float64) @ np.array([3.0, -1.0, 0.0, 0.0, 0.0])

    human, gains = topk_gain(X, Linear(), 30, seed=0)
    assert len(human) == 30
    np.testing.assert_allclose(gains, X @ np.array([3.0, -1.0, 0.0, 0.0, 0.0]))
    assert gains[human].min() >= np.sort(gains)[-30]
    exact, _ = topk_gain(X, Linear(), 30, seed=0, exact=True, rounds=3)
    assert len(exact) == 30


# --- strategies -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def routing_inputs(quad_data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, Any]:
    X, M, y = quad_data
    rng = np.random.default_rng(12)
    wrong = X[:, 0] | (rng.random(len(X)) < 0.05)
    return {
        "X": X,
        "ai_disagreement": np.round(rng.random(len(X)), 1),  # coarse: many ties
        "error_model": train_error_model(X[:300], wrong[:300], seed=0),
        "ppm": fit_model(M, y, "quadratic", n_items=len(X)),
        "n_candidates": 64,
    }


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_spends_exactly_the_budget_once_and_deterministically(
    strategy: str, routing_inputs: dict[str, Any]
) -> None:
    n = 800
    exclude = np.arange(50)
    runs = [route(strategy, n_items=n, budget_n=200, seed=s, exclude=exclude, **routing_inputs) for s in (3, 3, 4)]
    first, again, other = runs
    assert len(first.human) == 200
    assert len(np.unique(first.human)) == 200
    assert not np.isin(first.human, exclude).any()
    assert np.array_equal(first.human, again.human)
    np.testing.assert_array_equal(first.scores, again.scores)
    assert first.reasons == again.reasons
    assert len(first.reasons) == n
    assert first.scores.shape == (n,)
    assert np.isnan(first.scores[exclude]).all()
    assert first.summary["n_human"] == 200
    assert json.dumps(first.summary)
    if strategy in ("random", "ai-disagreement", "ppm-simulated"):  # seeded draws or tie-breaks decide
        assert not np.array_equal(first.human, other.human)
    everything = route(strategy, n_items=n, budget_n=10_000, seed=3, exclude=exclude, **routing_inputs)
    assert np.array_equal(everything.human, np.arange(50, n))


def test_ai_disagreement_routes_the_most_disputed_items_first() -> None:
    d = np.array([0.1, 0.9, 0.5, np.nan, 0.9, 0.0])
    result = route("ai-disagreement", n_items=6, budget_n=3, seed=0, ai_disagreement=d)
    assert result.human.tolist() == [1, 3, 4]  # no AI verdict (NaN) first, then the highest


def test_error_model_strategy_divides_by_cost(routing_inputs: dict[str, Any]) -> None:
    X, model = routing_inputs["X"], routing_inputs["error_model"]
    cost = np.where(X[:, 0], 100.0, 1.0)  # the risky items are now very expensive
    cheap = route("error-model", n_items=800, budget_n=100, seed=0, X=X, error_model=model, cost=cost)
    plain = route("error-model", n_items=800, budget_n=100, seed=0, X=X, error_model=model)
    assert X[plain.human, 0].mean() > 0.9
    assert X[cheap.human, 0].mean() < 0.5


def test_strategies_say_what_they_need() -> None:
    with pytest.raises(ValueError, match="needs ppm and X"):
        route("ppm-simulated", n_items=5, budget_n=2, seed=0)
    with pytest.raises(ValueError, match="unknown strategy"):
        route("best", n_items=5, budget_n=2, seed=0)


def test_budget_is_a_share_or_a_count() -> None:
    assert budget_n_from(0.25, 1000) == 250
    assert budget_n_from(1.0, 7) == 7
    assert budget_n_from(0.5, 5) == 3  # rounded half up
    assert budget_n_from(300, 1000) == 300
    assert budget_n_from(np.int64(5000), 1000) == 1000
    assert budget_n_from(1, 10) == 1
    for bad in (0, -3, 0.0, 1.5, 50.0, -0.1, True, "10", float("nan")):
        with pytest.raises(ValueError, match="budget"):
            budget_n_from(bad, 100)  # type: ignore[arg-type]


# --- error model ----------------------------------------------------------------------------------------


def test_error_model_learns_a_planted_signal() -> None:
    rng = np.random.default_rng(13)
    X = features(2000, 20, seed=14)
    wrong = (X[:, 2] & ~X[:, 5]) | (rng.random(2000) < 0.05)
    model = train_error_model(X[:1000], wrong[:1000], seed=0)
    assert model.kind == "lightgbm"
    assert model.platt is not None
    p = model.predict_proba(X[1000:])
    assert roc_auc_score(wrong[1000:], p) > 0.8
    assert p.min() > 0.0
    assert p.max() < 1.0
    again = ErrorModel.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_allclose(again.predict_proba(X[1000:]), p, rtol=1e-12)


def test_error_model_falls_back_on_one_class_or_tiny_data() -> None:
    X = features(50, 6, seed=15)
    flat = train_error_model(X, np.zeros(50, dtype=bool), seed=0)
    assert flat.kind == "base-rate"
    np.testing.assert_allclose(flat.predict_proba(X), 1 / 52)  # (0 + 1) / (50 + 2)
    assert train_error_model(X[:0], np.zeros(0, dtype=bool)).kind == "base-rate"
    small = train_error_model(X, X[:, 1], seed=0, ai_disagreement=np.linspace(0, 1, 50))
    assert small.kind == "logistic"
    p = small.predict_proba(X, np.linspace(0, 1, 50))
    assert p[X[:, 1]].mean() > p[~X[:, 1]].mean() + 0.3
    with pytest.raises(ValueError, match="pass it"):
        small.predict_proba(X)


# --- proxy ----------------------------------------------------------------------------------------------


def test_bt_proxy_learns_planted_embeddings() -> None:
    rng = np.random.default_rng(16)
    a, b = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    w = rng.normal(size=16)
    labels = np.sign((a - b) @ w).astype(int)
    labels[::10] = 0  # ties are dropped
    model = train_bt(a[:400], b[:400], labels[:400], l2=1.0, seed=0)
    assert model.n_train == 360
    assert score_bt(model, a[400:], b[400:], labels[400:]) > 0.9
    # swapping A and B swaps the verdict: no position bias
    np.testing.assert_allclose(model.margin(b, a), -model.margin(a, b))
    assert BTModel.from_dict(json.loads(json.dumps(model.to_dict()))).w.tolist() == model.w.tolist()
    assert np.isnan(score_bt(model, a[:3], b[:3], np.zeros(3, dtype=int)))
    noisy = labels.copy()
    noisy[rng.random(600) < 0.4] *= -1
    assert hybrid_proxy_score(labels, labels, a, b) > hybrid_proxy_score(noisy, labels, a, b)


# --- simulation -----------------------------------------------------------------------------------------


def test_simulate_returns_the_exact_shape_and_the_all_ai_all_human_baselines() -> None:
    reference = np.array([1, 1, -1, 0, 1])
    human_first = np.array([1, -1, -1, 0, 1])
    ai = np.array([1, 1, 1, 1, -1])
    X = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0]], dtype=bool)
    out = simulate(
        human_first=human_first,
        reference=reference,
        ai=ai,
        X=X,
        ai_disagreement=np.zeros(5),
        budgets=[1.0, 2],
        strategies=STRATEGIES,
        seeds=[0, 1],
        calibration=0.2,
    )
    assert json.loads(json.dumps(out)) == out
    assert set(out) == {"n_items", "all_ai", "all_human", "results"}
    assert out["n_items"] == 5
    assert out["all_human"] == pytest.approx(0.8)
    assert out["all_ai"] == pytest.approx(0.4)
    # without embeddings the PPM strategies are skipped; the other three always run
    assert [(r["strategy"], r["budget"]) for r in out["results"]] == [
        (s, b) for b in (1.0, 2) for s in ("random", "ai-disagreement", "error-model")
    ]
    for row in out["results"]:
        assert set(row) == {"strategy", "budget", "accuracy_mean", "accuracy_sd", "proxy_rm_mean"}
        assert row["proxy_rm_mean"] is None
        if row["budget"] == 1.0:  # everything human-labelled
            assert row["accuracy_mean"] == pytest.approx(0.8)
            assert row["accuracy_sd"] == 0.0


def planted(n: int, seed: int) -> dict[str, Any]:
    """Humans always right; the AI wrong exactly on items with feature 0; disagreement scores are noise."""
    rng = np.random.default_rng(seed)
    X = features(n, 12, seed=seed)
    X[:, 0] = rng.random(n) < 0.15
    reference = rng.choice([-1, 1], n)
    ai = np.where(X[:, 0], -reference, reference)
    emb_b = rng.normal(size=(n, 8))
    w = rng.normal(size=8)
    emb_a = emb_b + np.outer(reference, w) * 0.5 + rng.normal(scale=0.3, size=(n, 8))
    return {
        "human_first": reference.copy(),
        "reference": reference,
        "ai": ai,
        "X": X,
        "ai_disagreement": rng.random(n),
        "emb_a": emb_a,
        "emb_b": emb_b,
    }


def test_error_model_routing_beats_random_when_the_ai_fails_on_a_feature() -> None:
    data = planted(1500, seed=17)
    data.pop("emb_a")
    data.pop("emb_b")
    out = simulate(**data, budgets=[0.25], strategies=["random", "error-model"], seeds=[0, 1, 2], calibration=0.2)
    acc = {r["strategy"]: r["accuracy_mean"] for r in out["results"]}
    assert out["all_ai"] < 0.9
    assert acc["error-model"] > 0.98
    assert acc["error-model"] - acc["random"] > 0.08


def test_simulate_runs_the_ppm_strategies_with_embeddings() -> None:
    data = planted(400, seed=18)
    out = simulate(
        **data,
        budgets=[0.3],
        seeds=[0],
        calibration=0.2,
        n_candidates=32,
        ppm_train_size=24,
        ppm_folds=3,
    )
    assert [r["strategy"] for r in out["results"]] == list(STRATEGIES)
    for row in out["results"]:
        assert 0.5 < row["proxy_rm_mean"] <= 1.0
        assert 0.0 <= row["accuracy_mean"] <= 1.0
