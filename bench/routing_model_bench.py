"""Routing-model speed: PPM routing of a large dataset, and choosing a PPM by cross-validation.

Synthetic data shaped like the paper's 90 features: 9 lexical scores one-hot into 3 bins each (27),
46 subjects (one or two per item), expertise (3), open-endedness (4), safety (4), complexity (3), and 3
yes/no tags, and a sparse layout (independent features on 5% of the items each). No Django; run with
``python -m bench.routing_model_bench``. Timings are single runs on whatever else the machine is doing.

- ``routing_bench``: ``route("ppm-simulated")`` end to end: 1,024 Algorithm-1 candidates at the budget,
  their mixtures and the quadratic PPM's predictions, then the best one drawn again (the PPM's fit is not
  timed). Target: under 10 s for 100,000 items.
- ``ppm_cv_bench``: ``fit_best`` on 250 scored mixtures: 10-fold CV of the linear, quadratic and LightGBM
  models, the choice and the final fit. Target: under 10 s.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from bench.common import Context, Row, fmt_seconds
from routing.candidates import generate_candidates
from routing.ppm import fit_best, fit_model, mixture_vector
from routing.router import route

TARGET_S = 10.0
GROUPS = [3] * 9 + [46, 3, 4, 4, 3, 1, 1, 1]  # 90 features


def synthetic_features(n_items: int, n_features: int = 90, seed: int = 0) -> np.ndarray:
    """A boolean item x feature matrix with the paper's feature layout (columns cycle if n_features != 90)."""
    rng = np.random.default_rng(seed)
    cols: list[np.ndarray] = []
    for size in GROUPS:
        if size == 1:
            cols.append(rng.random((n_items, 1)) < 0.3)
            continue
        block = np.zeros((n_items, size), dtype=bool)
        block[np.arange(n_items), rng.integers(0, size, n_items)] = True
        if size == 46:  # a second subject for a third of the items
            extra = rng.random(n_items) < 0.33
            block[np.flatnonzero(extra), rng.integers(0, size, int(extra.sum()))] = True
        cols.append(block)
    X = np.hstack(cols)
    return X[:, np.arange(n_features) % X.shape[1]]


def _scored_mixtures(X: np.ndarray, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` candidates at random budgets, scored by a made-up quadratic function plus noise."""
    rng = np.random.default_rng(seed)
    n, f = X.shape
    w = rng.normal(size=f)
    Q = rng.normal(size=(f, f)) / f
    M = np.vstack(
        [
            mixture_vector(X, generate_candidates(X, int(rng.integers(0, n + 1)), 1, int(rng.integers(2**31)))[0])
            for _ in range(rows)
        ]
    )
    Z = M / n
    y = Z @ w + np.einsum("ni,ij,nj->n", Z, Q, Z) + rng.normal(scale=0.05, size=rows)
    return M, y


def routing_bench(
    n_items: int = 100_000, n_features: int = 90, n_candidates: int = 1024, *, layout: str = "paper"
) -> dict[str, Any]:
    """Seconds for ppm-simulated routing (candidate generation + mixtures + prediction) at 10/50/90% budgets;
    ``seconds`` is the slowest. ``layout="sparse"``: independent features on 5% of items each, the harder case
    (a candidate must visit many small features before the budget is met)."""
    if layout == "paper":
        X = synthetic_features(n_items, n_features)
    elif layout == "sparse":
        X = np.random.default_rng(5).random((n_items, n_features)) < 0.05
    else:
        raise ValueError(f"unknown layout {layout!r}")
    M, y = _scored_mixtures(synthetic_features(2_000, n_features, seed=1), 60, seed=2)
    ppm = fit_model(M, y, "quadratic", n_items=2_000)
    seconds: dict[str, float] = {}
    for share in (0.1, 0.5, 0.9):
        budget_n = int(share * n_items)
        start = time.perf_counter()
        result = route(
            "ppm-simulated", n_items=n_items, budget_n=budget_n, seed=0, X=X, ppm=ppm, n_candidates=n_candidates
        )
        seconds[f"{share:.0%}"] = time.perf_counter() - start
        assert len(result.human) == budget_n
    worst = max(seconds.values())
    return {
        "n_items": n_items,
        "n_features": n_features,
        "n_candidates": n_candidates,
        "layout": layout,
        "seconds_by_budget": {k: round(v, 3) for k, v in seconds.items()},
        "seconds": round(worst, 3),
        "target_s": TARGET_S,
        "passed": worst < TARGET_S,
    }


def ppm_cv_bench(rows: int = 250, n_items: int = 5_000, n_features: int = 90) -> dict[str, Any]:
    """Seconds for ``fit_best`` (10-fold CV of all three models, the choice and the refit) on ``rows`` rows."""
    X = synthetic_features(n_items, n_features, seed=3)
    M, y = _scored_mixtures(X, rows, seed=4)
    start = time.perf_counter()
    ppm = fit_best(M, y, k=10, seed=0, n_items=n_items)
    seconds = time.perf_counter() - start
    return {
        "rows": rows,
        "n_features": n_features,
        "seconds": round(seconds, 3),
        "chosen": ppm.name,
        "cv": {name: {"spearman": round(r.spearman, 3), "rmse": round(r.rmse, 4)} for name, r in ppm.report.items()},
        "target_s": TARGET_S,
        "passed": seconds < TARGET_S,
    }


def run(ctx: Context) -> list[Row]:
    """Rows for bench/run.py (not wired in there yet)."""
    rows = []
    for layout in ("paper", "sparse"):
        r = routing_bench(layout=layout)
        ctx.note(f"routing ({layout}): {r['seconds_by_budget']}")
        rows.append(
            Row(
                f"route 100,000 items, 1,024 PPM candidates ({layout} features)",
                "< 10 s",
                fmt_seconds(r["seconds"]),
                r["passed"],
            )
        )
    cv = ppm_cv_bench()
    ctx.note(f"PPM CV: {cv['cv']}")
    rows.append(
        Row("PPM: 10-fold CV of 3 models on 250 mixtures + choice", "< 10 s", fmt_seconds(cv["seconds"]), cv["passed"])
    )
    return rows


if __name__ == "__main__":
    print(
        json.dumps(
            {"routing": routing_bench(), "routing_sparse": routing_bench(layout="sparse"), "ppm_cv": ppm_cv_bench()},
            indent=2,
        )
    )
