"""The performance-prediction model (PPM): predicts a hybrid dataset's reward-model score from its mixture.

A candidate hybrid dataset is summarised by its *mixture vector*: for each item feature, the number of
human-routed items that have it (Miranda et al. 2024, section 3). One training row per scored candidate:
x = mixture vector, y = the score of a reward model trained on that candidate (RewardBench in the paper,
any "higher is better" number here).

Three models, compared by k-fold cross-validation:

- ``linear``: ridge regression on the mixture.
- ``quadratic``: degree-2 polynomial features (every x_i and every x_i * x_j, i <= j) + ridge; the
  paper's best model (it used plain least squares; with 90 features there are 4,185 columns for ~250 rows,
  so the ridge penalty is what makes it well posed).
- ``lightgbm``: gradient-boosted trees set up for small data (4 leaves, at least 3 rows per leaf, L2 = 5,
  200 rounds at learning rate 0.05), deterministic, one thread.

Counts are divided by a scale (the number of items in the dataset, ``n_items``) before fitting, so the
inputs are shares in [0, 1]. Each ridge standardises its columns and picks its penalty by efficient
leave-one-out error (scikit-learn's ``RidgeCV``) on the training rows only, so cross-validation is nested.
Fitted coefficients are folded back onto the scaled inputs, so a stored model is just an intercept, 90
linear and 4,095 quadratic coefficients (or LightGBM's model string).

Everything is pure, DB-free and deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import lightgbm as lgb
import numpy as np
from scipy.stats import rankdata
from sklearn.linear_model import RidgeCV

ModelName = Literal["linear", "quadratic", "lightgbm"]
MODELS: tuple[ModelName, ...] = ("linear", "quadratic", "lightgbm")
RIDGE_ALPHAS = np.logspace(-3, 4, 15)
LGBM_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "learning_rate": 0.05,
    "num_leaves": 4,
    "max_depth": 3,
    "min_data_in_leaf": 3,
    "min_data_in_bin": 1,
    "lambda_l2": 5.0,
    "feature_fraction": 0.8,
    "deterministic": True,
    "force_col_wise": True,
    "num_threads": 1,
    "verbose": -1,
}
LGBM_ROUNDS = 200
FORMAT_VERSION = 1


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block's BLAS calls on one thread. On a shared, busy machine a multi-threaded OpenBLAS waits for
    busy cores and the products here got 3-20x slower; one thread is fast enough for their sizes."""
    try:
        from threadpoolctl import threadpool_limits  # scikit-learn's dependency
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


class Predictor(Protocol):
    """Anything that maps mixture vectors (rows of counts) to predicted scores."""

    def predict(self, M: np.ndarray) -> np.ndarray: ...


def mixture_vector(X: np.ndarray, human_mask: np.ndarray) -> np.ndarray:
    """For each feature, how many human-routed items have it (float64, length n_features).

    ``human_mask`` is a boolean mask over the items or an array of item indices.
    """
    X = _as_features(X)
    mask = np.asarray(human_mask)
    if mask.dtype == bool:
        if mask.shape != (X.shape[0],):
            raise ValueError(f"human_mask has shape {mask.shape}; expected ({X.shape[0]},)")
        rows = X[mask]
    else:
        rows = X[mask.astype(np.intp, copy=False)]
    return rows.sum(axis=0, dtype=np.float64)


# --- cross-validation reports ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FoldScore:
    """One held-out fold: Spearman rho and RMSE of its predictions, and its size."""

    spearman: float
    rmse: float
    n: int


@dataclass(frozen=True)
class CVReport:
    """k-fold cross-validation of one model.

    ``spearman`` and ``rmse`` are computed on the pooled out-of-fold predictions (every row predicted once,
    by the model that did not see it); ``folds`` has the per-fold numbers. A constant prediction has no
    rank correlation and counts as rho = 0.
    """

    model: str
    spearman: float
    rmse: float
    k: int
    folds: tuple[FoldScore, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "spearman": self.spearman,
            "rmse": self.rmse,
            "k": self.k,
            "folds": [{"spearman": f.spearman, "rmse": f.rmse, "n": f.n} for f in self.folds],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CVReport:
        folds = tuple(FoldScore(float(f["spearman"]), float(f["rmse"]), int(f["n"])) for f in data["folds"])
        return cls(str(data["model"]), float(data["spearman"]), float(data["rmse"]), int(data["k"]), folds)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); 0.0 when either side is constant."""
    ra, rb = rankdata(a), rankdata(b)
    if len(ra) < 2 or np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _rmse(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - y) ** 2)))


# --- the fitted models ----------------------------------------------------------------------------------


class _Regressor(Protocol):
    def predict_scaled(self, Z: np.ndarray) -> np.ndarray: ...

    def params(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class _PolyRidge:
    """intercept + Z @ coef (+ sum over i <= j of quad_ij * z_i * z_j), on scaled inputs Z."""

    intercept: float
    coef: np.ndarray
    quad: np.ndarray | None  # (p, p) upper-triangular, or None for the linear model

    def predict_scaled(self, Z: np.ndarray) -> np.ndarray:
        out = self.intercept + Z @ self.coef
        if self.quad is not None:
            out = out + np.einsum("ni,ni->n", Z @ self.quad, Z)
        return np.asarray(out, dtype=np.float64)

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"intercept": self.intercept, "coef": self.coef.tolist()}
        if self.quad is not None:
            params["quad"] = self.quad[np.triu_indices(len(self.coef))].tolist()
        return params

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> _PolyRidge:
        coef = np.asarray(params["coef"], dtype=np.float64)
        quad = None
        if "quad" in params:
            quad = np.zeros((len(coef), len(coef)))
            quad[np.triu_indices(len(coef))] = np.asarray(params["quad"], dtype=np.float64)
        return cls(float(params["intercept"]), coef, quad)


@dataclass(frozen=True)
class _Boosted:
    booster: lgb.Booster

    def predict_scaled(self, Z: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(Z, num_threads=1), dtype=np.float64)

    def params(self) -> dict[str, Any]:
        return {"model_string": self.booster.model_to_string()}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> _Boosted:
        return cls(lgb.Booster(model_str=params["model_string"]))


def _poly2(Z: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(Z.shape[1])
    return np.hstack([Z, Z[:, i] * Z[:, j]])


def _fit_ridge(Z: np.ndarray, y: np.ndarray, quadratic: bool) -> _PolyRidge:
    p = Z.shape[1]
    A = _poly2(Z) if quadratic else Z
    mean, sd = A.mean(axis=0), A.std(axis=0)
    keep = sd > 1e-12  # constant columns carry nothing and get coefficient 0
    ridge = RidgeCV(alphas=RIDGE_ALPHAS, fit_intercept=True)
    full = np.zeros(A.shape[1])
    intercept = float(np.mean(y))
    if keep.any():
        ridge.fit((A[:, keep] - mean[keep]) / sd[keep], y)
        full[keep] = ridge.coef_ / sd[keep]  # fold the standardisation back onto the raw columns
        intercept = float(ridge.intercept_ - full @ mean)
    quad = None
    if quadratic:
        quad = np.zeros((p, p))
        quad[np.triu_indices(p)] = full[p:]
    return _PolyRidge(intercept, full[:p].copy(), quad)


def _fit_lgbm(Z: np.ndarray, y: np.ndarray, seed: int) -> _Boosted:
    params = {**LGBM_PARAMS, "seed": seed}
    data = lgb.Dataset(Z, label=y, params={"verbose": -1, "min_data_in_bin": 1}, free_raw_data=True)
    return _Boosted(lgb.train(params, data, num_boost_round=LGBM_ROUNDS))


def _fit_scaled(Z: np.ndarray, y: np.ndarray, model: str, seed: int) -> _Regressor:
    if model == "linear":
        return _fit_ridge(Z, y, quadratic=False)
    if model == "quadratic":
        return _fit_ridge(Z, y, quadratic=True)
    if model == "lightgbm":
        return _fit_lgbm(Z, y, seed)
    raise ValueError(f"unknown PPM model {model!r}; expected one of {', '.join(MODELS)}")


@dataclass(frozen=True)
class FittedPPM:
    """A fitted PPM: ``predict(M)`` takes raw counts (mixture vectors as rows) and returns predicted scores."""

    name: str
    scale: float
    n_features: int
    model: _Regressor = field(repr=False)
    report: dict[str, CVReport] = field(default_factory=dict)
    feature_names: tuple[str, ...] | None = None

    def predict(self, M: np.ndarray) -> np.ndarray:
        M = np.asarray(M, dtype=np.float64)
        M2 = M.reshape(1, -1) if M.ndim == 1 else M
        if M2.ndim != 2 or M2.shape[1] != self.n_features:
            raise ValueError(f"mixtures have shape {M.shape}; this PPM expects {self.n_features} features")
        return self.model.predict_scaled(M2 / self.scale)  # a single 1-D mixture gives shape (1,)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (plain lists, floats and strings) that ``from_dict`` turns back into this PPM."""
        return {
            "format": FORMAT_VERSION,
            "name": self.name,
            "scale": self.scale,
            "n_features": self.n_features,
            "feature_names": list(self.feature_names) if self.feature_names is not None else None,
            "params": self.model.params(),
            "report": {name: r.to_dict() for name, r in self.report.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FittedPPM:
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported PPM format {data.get('format')!r}; expected {FORMAT_VERSION}")
        name = str(data["name"])
        model: _Regressor
        if name in ("linear", "quadratic"):
            model = _PolyRidge.from_params(data["params"])
        elif name == "lightgbm":
            model = _Boosted.from_params(data["params"])
        else:
            raise ValueError(f"unknown PPM model {name!r}")
        names = data.get("feature_names")
        return cls(
            name=name,
            scale=float(data["scale"]),
            n_features=int(data["n_features"]),
            model=model,
            report={k: CVReport.from_dict(v) for k, v in data.get("report", {}).items()},
            feature_names=tuple(names) if names is not None else None,
        )


# --- fitting, cross-validation and choice ---------------------------------------------------------------


def _as_features(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D item x feature matrix; got shape {X.shape}")
    return X


def _check_rows(M: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    M = np.asarray(M, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if M.ndim != 2 or y.shape != (M.shape[0],):
        raise ValueError(f"M must be (rows, features) and y (rows,); got {M.shape} and {y.shape}")
    if M.shape[0] < 3:
        raise ValueError(f"a PPM needs at least 3 scored mixtures; got {M.shape[0]}")
    if not (np.isfinite(M).all() and np.isfinite(y).all()):
        raise ValueError("M and y must be finite")
    return M, y


def _scale(M: np.ndarray, n_items: int | None) -> float:
    if n_items is not None:
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1; got {n_items}")
        return float(n_items)
    return float(max(1.0, M.max()))  # no item count given: the largest count stands in for it


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    k = max(2, min(k, n))
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, k)]


def cross_validate(
    M: np.ndarray, y: np.ndarray, model: ModelName, k: int = 10, seed: int = 0, *, n_items: int | None = None
) -> CVReport:
    """k-fold CV (shuffled with ``seed``; k capped at the number of rows) of one model on scored mixtures."""
    M, y = _check_rows(M, y)
    Z = M / _scale(M, n_items)
    folds = _folds(len(y), k, seed)
    oof = np.empty_like(y)
    scores = []
    for test in folds:
        train = np.setdiff1d(np.arange(len(y)), test, assume_unique=True)
        oof[test] = _fit_scaled(Z[train], y[train], model, seed).predict_scaled(Z[test])
        scores.append(FoldScore(spearman(oof[test], y[test]), _rmse(oof[test], y[test]), len(test)))
    return CVReport(model, spearman(oof, y), _rmse(oof, y), len(folds), tuple(scores))


def fit_model(
    M: np.ndarray,
    y: np.ndarray,
    model: ModelName,
    seed: int = 0,
    *,
    n_items: int | None = None,
    feature_names: Sequence[str] | None = None,
) -> FittedPPM:
    """Fit one model on all rows (no cross-validation; ``report`` stays empty)."""
    M, y = _check_rows(M, y)
    if feature_names is not None and len(feature_names) != M.shape[1]:
        raise ValueError(f"{len(feature_names)} feature names for {M.shape[1]} features")
    scale = _scale(M, n_items)
    regressor = _fit_scaled(M / scale, y, model, seed)
    names = tuple(feature_names) if feature_names is not None else None
    return FittedPPM(model, scale, M.shape[1], regressor, {}, names)


def fit_best(
    M: np.ndarray,
    y: np.ndarray,
    k: int = 10,
    seed: int = 0,
    *,
    n_items: int | None = None,
    models: Sequence[ModelName] = MODELS,
    feature_names: Sequence[str] | None = None,
) -> FittedPPM:
    """Cross-validate every model, keep the one with the highest CV Spearman (ties: lower RMSE, then the
    order of ``models``), refit it on all rows. ``report`` holds every model's CV numbers.

    ``n_items`` (the dataset's item count) is the scale counts are divided by; without it the largest
    count in ``M`` stands in, which is fine for one dataset but pass ``n_items`` to compare across sizes."""
    if not models:
        raise ValueError("no PPM models to compare")
    with one_blas_thread():
        reports: dict[str, CVReport] = {m: cross_validate(M, y, m, k, seed, n_items=n_items) for m in models}
        best = min(models, key=lambda m: (-reports[m].spearman, reports[m].rmse))  # min() keeps the first on ties
        fitted = fit_model(M, y, best, seed, n_items=n_items, feature_names=feature_names)
    return FittedPPM(fitted.name, fitted.scale, fitted.n_features, fitted.model, reports, fitted.feature_names)
