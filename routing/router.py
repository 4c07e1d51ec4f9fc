"""The item-level router: which items go to humans, under a budget, by one of five strategies.

Strategies (``STRATEGIES``), each choosing exactly ``budget_n`` distinct items (all eligible items if
there are fewer), deterministic for a seed, ties broken at random by the seed:

- ``random``: a uniform random subset.
- ``ai-disagreement``: highest AI disagreement first (judge order inconsistency, jury disagreement, low
  confidence: whatever per-item score the caller has). NaN means "no AI verdict" and ranks first.
- ``error-model``: highest expected gain per unit cost, P(AI label is wrong) / cost, where P comes from an
  ``ErrorModel`` trained on items that have both a human and an AI label (beyond the paper).
- ``ppm-simulated``: the paper's routing: ``n_candidates`` Algorithm-1 candidates, the best by the PPM.
- ``ppm-topk``: the paper's top-k variant (``routing.candidates.topk_gain``).

``exclude`` marks items humans have labelled already (e.g. a calibration batch): they are never routed
again and do not count toward ``budget_n``, but the PPM strategies count them in the mixture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
from sklearn.linear_model import LogisticRegression

from routing.candidates import best_of_candidates, item_mask, topk_gain
from routing.ppm import Predictor

Strategy = Literal["random", "ai-disagreement", "error-model", "ppm-simulated", "ppm-topk"]
STRATEGIES: tuple[Strategy, ...] = ("random", "ai-disagreement", "error-model", "ppm-simulated", "ppm-topk")

# LightGBM needs this many training items, and this many of the rarer outcome; below that, logistic regression.
MIN_LGBM_TRAIN = 100
MIN_LGBM_MINORITY = 10
# Platt calibration (5-fold out-of-fold scores) from this many items and this many of the rarer outcome.
MIN_CALIBRATION_TRAIN = 200
MIN_CALIBRATION_MINORITY = 20
CALIBRATION_FOLDS = 5
ERROR_LGBM_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 8,
    "min_data_in_bin": 1,
    "lambda_l2": 1.0,
    "feature_fraction": 0.9,
    "deterministic": True,
    "force_col_wise": True,
    "num_threads": 1,
    "verbose": -1,
}
ERROR_LGBM_ROUNDS = 200


def budget_n_from(budget: float | int | np.integer[Any] | np.floating[Any], n_items: int) -> int:
    """The number of items a budget buys: a float in (0, 1] is a share of ``n_items`` (rounded half up), an
    int >= 1 a count (capped at ``n_items``). Anything else is a ValueError."""
    if isinstance(n_items, bool) or not isinstance(n_items, int | np.integer) or n_items < 0:
        raise ValueError(f"n_items must be an int >= 0; got {n_items!r}")
    if isinstance(budget, bool):
        raise ValueError(f"budget must be a share in (0, 1] or a count >= 1; got {budget!r}")
    if isinstance(budget, int | np.integer):
        if budget < 1:
            raise ValueError(f"a budget count must be >= 1; got {budget}")
        return min(int(budget), int(n_items))
    if isinstance(budget, float | np.floating):
        if not 0.0 < float(budget) <= 1.0:
            raise ValueError(f"a budget share must be in (0, 1]; got {budget} (pass an int for a count)")
        return min(int(np.floor(float(budget) * n_items + 0.5)), int(n_items))
    raise ValueError(f"budget must be a share in (0, 1] or a count >= 1; got {budget!r}")


# --- the error model ------------------------------------------------------------------------------------


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)


@dataclass(frozen=True)
class ErrorModel:
    """P(the AI label disagrees with the human label) per item.

    ``kind`` is ``lightgbm`` (with Platt calibration when there was enough data: ``platt`` = (a, b),
    P = sigmoid(a * raw score + b)), ``logistic`` (standardised L2 logistic regression) or ``base-rate``
    (the same Laplace-smoothed rate (wrong + 1) / (n + 2) for every item: tiny or one-class training data).
    With ``with_disagreement`` the AI disagreement score is one more input column after the features.
    """

    kind: Literal["lightgbm", "logistic", "base-rate"]
    n_features: int
    with_disagreement: bool
    n_train: int
    n_wrong: int
    base_rate: float
    booster: lgb.Booster | None = field(default=None, repr=False)
    platt: tuple[float, float] | None = None
    coef: np.ndarray | None = field(default=None, repr=False)  # logistic, on raw inputs
    intercept: float = 0.0

    def predict_proba(self, X: np.ndarray, ai_disagreement: np.ndarray | None = None) -> np.ndarray:
        A = _inputs(X, ai_disagreement, self.with_disagreement)
        if A.shape[1] != self.n_features + int(self.with_disagreement):
            raise ValueError(
                f"X has {A.shape[1] - int(self.with_disagreement)} features; the model has {self.n_features}"
            )
        if self.kind == "base-rate":
            return np.full(A.shape[0], self.base_rate)
        if self.kind == "logistic":
            assert self.coef is not None
            return _sigmoid(np.nan_to_num(A, nan=0.0) @ self.coef + self.intercept)
        assert self.booster is not None
        if self.platt is None:
            return np.asarray(self.booster.predict(A, num_threads=1), dtype=np.float64)
        raw = np.asarray(self.booster.predict(A, raw_score=True, num_threads=1), dtype=np.float64)
        return _sigmoid(self.platt[0] * raw + self.platt[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n_features": self.n_features,
            "with_disagreement": self.with_disagreement,
            "n_train": self.n_train,
            "n_wrong": self.n_wrong,
            "base_rate": self.base_rate,
            "model_string": self.booster.model_to_string() if self.booster is not None else None,
            "platt": list(self.platt) if self.platt is not None else None,
            "coef": self.coef.tolist() if self.coef is not None else None,
            "intercept": self.intercept,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorModel:
        platt = data.get("platt")
        return cls(
            kind=data["kind"],
            n_features=int(data["n_features"]),
            with_disagreement=bool(data["with_disagreement"]),
            n_train=int(data["n_train"]),
            n_wrong=int(data["n_wrong"]),
            base_rate=float(data["base_rate"]),
            booster=lgb.Booster(model_str=data["model_string"]) if data.get("model_string") else None,
            platt=(float(platt[0]), float(platt[1])) if platt is not None else None,
            coef=np.asarray(data["coef"], dtype=np.float64) if data.get("coef") is not None else None,
            intercept=float(data.get("intercept", 0.0)),
        )


def _inputs(X: np.ndarray, ai_disagreement: np.ndarray | None, with_disagreement: bool) -> np.ndarray:
    A = np.asarray(X, dtype=np.float64)
    if A.ndim != 2:
        raise ValueError(f"X must be a 2-D item x feature matrix; got shape {A.shape}")
    if not with_disagreement:
        return A
    if ai_disagreement is None:
        raise ValueError("this error model was trained with ai_disagreement; pass it")
    d = np.asarray(ai_disagreement, dtype=np.float64)
    if d.shape != (A.shape[0],):
        raise ValueError(f"ai_disagreement has shape {d.shape}; expected ({A.shape[0]},)")
    return np.hstack([A, d[:, None]])  # NaN (no AI verdict) is fine for LightGBM, not for logistic


def _fit_booster(A: np.ndarray, y: np.ndarray, seed: int) -> lgb.Booster:
    params = {**ERROR_LGBM_PARAMS, "seed": seed, "min_data_in_leaf": max(3, min(20, len(y) // 20))}
    data = lgb.Dataset(A, label=y.astype(np.float64), params={"verbose": -1, "min_data_in_bin": 1})
    return lgb.train(params, data, num_boost_round=ERROR_LGBM_ROUNDS)


def _platt(A: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float]:
    """Fit sigmoid(a * raw + b) to out-of-fold raw scores (folds stratified by outcome)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for label in (False, True):
        idx = rng.permutation(np.flatnonzero(y == label))
        fold[idx] = np.arange(len(idx)) % CALIBRATION_FOLDS
    raw = np.empty(len(y))
    for k in range(CALIBRATION_FOLDS):
        test = fold == k
        raw[test] = _fit_booster(A[~test], y[~test], seed).predict(A[test], raw_score=True, num_threads=1)
    clf = LogisticRegression(C=1e4, max_iter=1000).fit(raw[:, None], y)
    return float(clf.coef_[0, 0]), float(clf.intercept_[0])


def train_error_model(
    X_feat: np.ndarray,
    ai_wrong: np.ndarray,
    seed: int = 0,
    *,
    ai_disagreement: np.ndarray | None = None,
    calibrate: bool = True,
) -> ErrorModel:
    """Learn P(AI label is wrong) from items with both labels (``ai_wrong[i]``: the AI disagreed with the
    human). ``ai_disagreement``, when given, is used as one more input. The model kind follows the data:
    one class or fewer than 2 items: ``base-rate``; fewer than MIN_LGBM_TRAIN items or MIN_LGBM_MINORITY of
    the rarer outcome: ``logistic`` (NaN inputs count as 0 there; LightGBM treats NaN as missing); otherwise
    ``lightgbm``, Platt-calibrated when ``calibrate`` and the data reach MIN_CALIBRATION_*. (Calibration
    only matters when costs differ: it never changes the ranking.)"""
    y = np.asarray(ai_wrong).astype(bool)
    with_d = ai_disagreement is not None
    A = _inputs(X_feat, ai_disagreement, with_d)
    if y.shape != (A.shape[0],):
        raise ValueError(f"ai_wrong has shape {y.shape}; expected ({A.shape[0]},)")
    n, wrong = len(y), int(y.sum())
    minority = min(wrong, n - wrong)
    common = {
        "n_features": A.shape[1] - int(with_d),
        "with_disagreement": with_d,
        "n_train": n,
        "n_wrong": wrong,
        "base_rate": (wrong + 1) / (n + 2),
    }
    if n < 2 or minority == 0:
        return ErrorModel(kind="base-rate", **common)
    if n < MIN_LGBM_TRAIN or minority < MIN_LGBM_MINORITY:
        A = np.nan_to_num(A, nan=0.0)
        mean, sd = A.mean(axis=0), A.std(axis=0)
        sd[sd < 1e-12] = 1.0
        clf = LogisticRegression(C=1.0, max_iter=1000).fit((A - mean) / sd, y)
        coef = clf.coef_[0] / sd  # back onto raw inputs
        return ErrorModel(kind="logistic", coef=coef, intercept=float(clf.intercept_[0] - coef @ mean), **common)
    platt = None
    if calibrate and n >= MIN_CALIBRATION_TRAIN and minority >= MIN_CALIBRATION_MINORITY:
        platt = _platt(A, y, seed)
    return ErrorModel(kind="lightgbm", booster=_fit_booster(A, y, seed), platt=platt, **common)


# --- routing --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteResult:
    """``human``: sorted indices of the items routed to humans now. ``scores``: the strategy's score per item
    (higher = more worth a human; NaN for excluded items). ``reasons``: a short text per item.
    ``summary``: what was done, JSON-ready."""

    human: np.ndarray
    scores: np.ndarray
    reasons: list[str]
    summary: dict[str, Any]


def _top(scores: np.ndarray, eligible: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """The k eligible items with the highest scores, random tie-break; sorted indices."""
    free = np.flatnonzero(eligible)
    order = np.lexsort((rng.random(len(free)), -scores[free]))
    return np.sort(free[order[:k]])


def route(
    strategy: str,
    *,
    n_items: int,
    budget_n: int,
    seed: int,
    X: np.ndarray | None = None,
    ai_disagreement: np.ndarray | None = None,
    error_model: ErrorModel | None = None,
    ppm: Predictor | None = None,
    n_candidates: int = 1024,
    cost: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
) -> RouteResult:
    """Route ``budget_n`` of the ``n_items`` items (minus ``exclude``) to humans with ``strategy``.

    Needs: ``ai-disagreement``: ai_disagreement; ``error-model``: error_model and X (and ai_disagreement if
    the model uses it); ``ppm-*``: ppm and X. ``cost`` (positive, per item) only enters ``error-model``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if isinstance(budget_n, bool) or not isinstance(budget_n, int | np.integer) or budget_n < 0:
        raise ValueError(f"budget_n must be an int >= 0; got {budget_n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an int >= 0; got {seed!r}")
    if X is not None and np.asarray(X).shape[0] != n_items:
        raise ValueError(f"X has {np.asarray(X).shape[0]} rows for {n_items} items")
    excluded = item_mask(exclude, n_items)
    eligible = ~excluded
    k = min(int(budget_n), int(eligible.sum()))
    rng = np.random.default_rng(seed)
    summary: dict[str, Any] = {
        "strategy": strategy,
        "n_items": int(n_items),
        "n_excluded": int(excluded.sum()),
        "budget_n": int(budget_n),
        "n_human": k,
        "seed": int(seed),
    }

    if strategy == "random":
        scores = rng.random(n_items)
        human = _top(scores, eligible, k, rng)
        texts = ("random draw", "not drawn")
    elif strategy == "ai-disagreement":
        if ai_disagreement is None:
            raise ValueError("strategy 'ai-disagreement' needs ai_disagreement")
        scores = _per_item(ai_disagreement, n_items, "ai_disagreement")
        ranked = np.where(np.isnan(scores), np.inf, scores)  # no AI verdict: a human must label it
        human = _top(ranked, eligible, k, rng)
        texts = ("high AI disagreement", "low AI disagreement")
    elif strategy == "error-model":
        if error_model is None or X is None:
            raise ValueError("strategy 'error-model' needs error_model and X")
        p = error_model.predict_proba(X, ai_disagreement if error_model.with_disagreement else None)
        unit = np.ones(n_items) if cost is None else _per_item(cost, n_items, "cost")
        if not (np.isfinite(unit).all() and (unit > 0).all()):
            raise ValueError("cost must be finite and > 0 for every item")
        scores = p / unit
        human = _top(scores, eligible, k, rng)
        texts = ("high P(AI wrong) per cost", "low P(AI wrong) per cost")
        summary.update(error_model=error_model.kind, mean_p_wrong_human=_mean(p[human]), mean_p_wrong_all=_mean(p))
    elif strategy == "ppm-simulated":
        if ppm is None or X is None:
            raise ValueError("strategy 'ppm-simulated' needs ppm and X")
        best = best_of_candidates(X, k, n_candidates, seed, ppm, exclude=excluded)
        human = best.items
        scores = np.zeros(n_items)
        scores[human] = 1.0
        texts = ("in the best PPM candidate", "not in the best PPM candidate")
        summary.update(
            n_candidates=int(n_candidates),
            best_candidate=best.index,
            predicted=best.predicted,
            predicted_median=float(np.median(best.predictions)),
        )
    else:  # ppm-topk
        if ppm is None or X is None:
            raise ValueError("strategy 'ppm-topk' needs ppm and X")
        human, scores = topk_gain(X, ppm, k, seed, exclude=excluded)
        texts = ("high PPM gain", "low PPM gain")

    scores = np.asarray(scores, dtype=np.float64).copy()
    scores[excluded] = np.nan
    chosen = np.zeros(n_items, dtype=bool)
    chosen[human] = True
    reasons = [
        "already human-labelled"
        if ex
        else ("no AI verdict" if sc != sc else f"{texts[0] if ch else texts[1]} ({sc:.3g})")  # sc != sc: NaN
        for ch, ex, sc in zip(chosen.tolist(), excluded.tolist(), scores.tolist(), strict=True)
    ]
    return RouteResult(np.asarray(human, dtype=np.int64), scores, reasons, summary)


def _per_item(values: np.ndarray, n_items: int, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (n_items,):
        raise ValueError(f"{name} has shape {v.shape}; expected ({n_items},)")
    return v


def _mean(v: np.ndarray) -> float | None:
    return float(np.mean(v)) if len(v) else None
