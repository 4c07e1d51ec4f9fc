"""Replay simulation: how accurate would a hybrid dataset be under each routing strategy and budget?

Replays a dataset where every item already has a human label and an AI label. For each budget, seed and
strategy:

1. A calibration batch of ``round(calibration * budget_n)`` items, drawn at random (the same batch for
   every strategy at that budget and seed), gets its human label; it counts toward the budget.
2. The error model is trained on the calibration items (``ai_wrong = ai != human_first``, with the AI
   disagreement as an extra input); with few or one-class items it falls back (see ``train_error_model``).
3. The strategy routes the rest of the budget among the other items.
4. Hybrid label = ``human_first`` for human-routed items (calibration included), ``ai`` for the rest;
   accuracy = share of all items whose hybrid label equals ``reference`` (ties included: 0 must match 0).

``all_ai`` and ``all_human`` are the accuracies of ``ai`` and ``human_first`` alone. ``accuracy_sd`` is
the sample standard deviation over seeds (0.0 with one seed).

With embeddings (``emb_a``, ``emb_b``), ``proxy_rm_mean`` is the mean over seeds of the Bradley-Terry proxy's
cross-fitted accuracy (``routing.proxy.hybrid_proxy_score``: trained on hybrid labels, measured on
reference labels), and the ``ppm-*`` strategies run: per seed, a PPM is fitted (``fit_best``) on
``ppm_train_size`` Algorithm-1 candidates at random budgets, each scored by that proxy. That PPM learns from
scores measured against the same reference labels the accuracy uses, as the paper's PPM learns from
RewardBench, so its numbers are optimistic. Without embeddings there is nothing to score candidates with:
the ``ppm-*`` strategies are skipped (left out of ``results``) and ``proxy_rm_mean`` is null.
``random``, ``ai-disagreement`` and ``error-model`` never need more than the labels, X and the disagreement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from routing.candidates import generate_candidates
from routing.ppm import FittedPPM, fit_best, mixture_vector, one_blas_thread
from routing.proxy import hybrid_proxy_score
from routing.router import STRATEGIES, budget_n_from, route, train_error_model


def _labels(values: np.ndarray, name: str, n: int | None) -> np.ndarray:
    v = np.asarray(values)
    if v.ndim != 1 or (n is not None and len(v) != n):
        raise ValueError(f"{name} must be a 1-D array of {n if n is not None else 'n'} labels; got shape {v.shape}")
    if not np.isin(v, (-1, 0, 1)).all():
        raise ValueError(f"{name} labels must be -1, 0 or +1")
    return v.astype(np.int64)


def _rows(values: np.ndarray | None, name: str, n: int) -> np.ndarray | None:
    if values is None:
        return None
    v = np.asarray(values)
    if v.shape[0] != n:
        raise ValueError(f"{name} has {v.shape[0]} rows for {n} items")
    return v


def _simulated_ppm(
    X: np.ndarray,
    human_first: np.ndarray,
    ai: np.ndarray,
    reference: np.ndarray,
    emb_a: np.ndarray,
    emb_b: np.ndarray,
    seed: int,
    size: int,
    folds: int,
) -> FittedPPM:
    """A PPM fitted on ``size`` random-budget candidates scored by the proxy."""
    n = len(reference)
    rng = np.random.default_rng([seed, 1])
    rows, scores = [], []
    for _ in range(size):
        budget_n = int(rng.integers(0, n + 1))
        (human,) = generate_candidates(X, budget_n, 1, int(rng.integers(2**31)))
        hybrid = ai.copy()
        hybrid[human] = human_first[human]
        rows.append(mixture_vector(X, human))
        scores.append(hybrid_proxy_score(hybrid, reference, emb_a, emb_b, seed=seed))
    y = np.nan_to_num(np.asarray(scores), nan=0.5)
    return fit_best(np.vstack(rows), y, folds, seed, n_items=n)


def simulate(
    *,
    human_first: np.ndarray,
    reference: np.ndarray,
    ai: np.ndarray,
    X: np.ndarray,
    ai_disagreement: np.ndarray,
    budgets: Sequence[float | int],
    strategies: Sequence[str] = STRATEGIES,
    seeds: Sequence[int] = (0, 1, 2),
    calibration: float = 0.2,
    emb_a: np.ndarray | None = None,
    emb_b: np.ndarray | None = None,
    n_candidates: int = 256,
    ppm_train_size: int = 64,
    ppm_folds: int = 5,
) -> dict[str, Any]:
    """Run the replay; returns ``{"n_items", "all_ai", "all_human", "results": [{"strategy", "budget",
    "accuracy_mean", "accuracy_sd", "proxy_rm_mean"}, ...]}`` (budgets in order, strategies in order within
    each budget; ``budget`` as given: a share or a count)."""
    reference = _labels(reference, "reference", None)
    n = len(reference)
    human_first = _labels(human_first, "human_first", n)
    ai = _labels(ai, "ai", n)
    Xb = np.asarray(_rows(X, "X", n))
    disagreement = np.asarray(_rows(ai_disagreement, "ai_disagreement", n), dtype=np.float64)
    ea, eb = _rows(emb_a, "emb_a", n), _rows(emb_b, "emb_b", n)
    emb = (ea, eb) if ea is not None and eb is not None else None
    if not 0.0 <= calibration <= 1.0:
        raise ValueError(f"calibration must be a share in [0, 1]; got {calibration}")
    if not seeds:
        raise ValueError("no seeds")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; expected some of {', '.join(STRATEGIES)}")
    run = [s for s in strategies if emb is not None or not s.startswith("ppm-")]

    with one_blas_thread():  # sklearn and numpy products below
        ppms: dict[int, FittedPPM] = {}
        if emb is not None and any(s.startswith("ppm-") for s in run):
            for seed in seeds:
                ppms[seed] = _simulated_ppm(Xb, human_first, ai, reference, *emb, seed, ppm_train_size, ppm_folds)

        results = []
        for b_index, budget in enumerate(budgets):
            budget_n = budget_n_from(budget, n)
            n_cal = min(budget_n, int(np.floor(calibration * budget_n + 0.5)))
            accuracy: dict[str, list[float]] = {s: [] for s in run}
            proxy: dict[str, list[float]] = {s: [] for s in run}
            for seed in seeds:
                cal = np.sort(np.random.default_rng([seed, b_index, 0]).choice(n, n_cal, replace=False))
                error_model = None
                if "error-model" in run:
                    wrong = ai[cal] != human_first[cal]
                    error_model = train_error_model(
                        Xb[cal], wrong, seed, ai_disagreement=disagreement[cal], calibrate=False
                    )  # no costs here, so calibration would not change the ranking
                for strategy in run:
                    routed = route(
                        strategy,
                        n_items=n,
                        budget_n=budget_n - n_cal,
                        seed=seed,
                        X=Xb,
                        ai_disagreement=disagreement,
                        error_model=error_model,
                        ppm=ppms.get(seed),
                        n_candidates=n_candidates,
                        exclude=cal,
                    )
                    human = np.concatenate([cal, routed.human])
                    hybrid = ai.copy()
                    hybrid[human] = human_first[human]
                    accuracy[strategy].append(float(np.mean(hybrid == reference)))
                    if emb is not None:
                        proxy[strategy].append(hybrid_proxy_score(hybrid, reference, *emb, seed=seed))
            for strategy in run:
                acc = np.asarray(accuracy[strategy])
                finite = [p for p in proxy[strategy] if np.isfinite(p)]
                results.append(
                    {
                        "strategy": strategy,
                        "budget": float(budget) if isinstance(budget, float | np.floating) else int(budget),
                        "accuracy_mean": float(acc.mean()),
                        "accuracy_sd": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                        "proxy_rm_mean": float(np.mean(finite)) if finite else None,
                    }
                )
        return {
            "n_items": n,
            "all_ai": float(np.mean(ai == reference)),
            "all_human": float(np.mean(human_first == reference)),
            "results": results,
        }
