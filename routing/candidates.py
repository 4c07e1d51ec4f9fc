"""Candidate hybrid datasets at a budget, and choosing among them with a PPM (Miranda et al. 2024, Alg. 1).

Algorithm 1: shuffle the features; for each feature in that order, shuffle its items and add those not yet
chosen until the budget is met. Only the *set* of chosen items matters, so this module draws the same sets
without shuffling every feature: every feature that fits whole is added whole, and only the feature that
crosses the budget contributes a uniform random subset of its not-yet-chosen items (which is what the first
items of a shuffle are). The loop stops there, so a candidate costs the sizes of the features it visits.
If the features run out first (items without any feature), the rest of the budget is random such items.

Candidate ``j`` draws from its own generator, ``default_rng([seed, j])``: it is the same whatever
``n_candidates`` is, and the best of many candidates can be found streaming, keeping only their mixtures
(``best_of_candidates``), then drawn again.

``topk_gain`` is the paper's top-k variant: each item gets a gain from the PPM and the ``budget_n`` items
with the highest gains go to humans; see its docstring.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from routing.ppm import Predictor, one_blas_thread

CHUNK = 64  # candidates whose 0/1 masks are turned into mixtures with one matrix product


def _features(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D item x feature matrix; got shape {X.shape}")
    return X if X.dtype == bool else X != 0


def item_mask(exclude: np.ndarray | None, n: int) -> np.ndarray:
    """A fresh boolean item mask from None, a boolean mask or an index array."""
    mask = np.zeros(n, dtype=bool)
    if exclude is None:
        return mask
    exclude = np.asarray(exclude)
    if exclude.dtype == bool:
        if exclude.shape != (n,):
            raise ValueError(f"exclude mask has shape {exclude.shape}; expected ({n},)")
        mask |= exclude
    else:
        if exclude.size and (exclude.min() < 0 or exclude.max() >= n):
            raise ValueError("exclude has item indices out of range")
        mask[exclude.astype(np.intp, copy=False)] = True
    return mask


def _check_budget(budget_n: int) -> int:
    if isinstance(budget_n, bool) or not isinstance(budget_n, int | np.integer) or budget_n < 0:
        raise ValueError(f"budget_n must be an int >= 0; got {budget_n!r}")
    return int(budget_n)


class _Generator:
    """Precomputed per-feature item lists for drawing many candidates from one X."""

    def __init__(self, X: np.ndarray, exclude: np.ndarray | None, feature_order: Sequence[int] | None) -> None:
        X = _features(X)
        self.n, self.n_features = X.shape
        self.base = item_mask(exclude, self.n)  # items already human-labelled: never drawn, always in the mixture
        XT = np.ascontiguousarray(X.T)
        self.items = [np.flatnonzero(XT[f] & ~self.base) for f in range(self.n_features)]
        self.order: np.ndarray | None = None
        if feature_order is not None:
            order = np.asarray(feature_order, dtype=np.intp)
            if sorted(order.tolist()) != list(range(self.n_features)):
                raise ValueError("feature_order must be a permutation of the feature indices")
            self.order = order
        self.n_eligible = int(self.n - self.base.sum())

    def mask(self, budget_n: int, seed: int, j: int) -> np.ndarray:
        """Candidate j as a boolean mask over all items (the excluded items included)."""
        taken = self.base.copy()
        if budget_n >= self.n_eligible:
            taken[:] = True
            return taken
        rng = np.random.default_rng([seed, j])
        order = self.order if self.order is not None else rng.permutation(self.n_features)
        need = budget_n
        for f in order:
            if need == 0:
                break
            items = self.items[f]
            new = items[~taken[items]]
            if new.size <= need:
                taken[new] = True
                need -= new.size
            else:  # the feature that crosses the budget: a uniform subset of its new items
                taken[rng.choice(new, need, replace=False)] = True
                need = 0
        if need:  # features exhausted: fill with random items that have none
            rest = np.flatnonzero(~taken)
            taken[rng.choice(rest, need, replace=False)] = True
        return taken


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an int >= 0; got {seed!r}")
    return int(seed)


def generate_candidates(
    X: np.ndarray,
    budget_n: int,
    n_candidates: int,
    seed: int,
    *,
    feature_order: Sequence[int] | None = None,
    exclude: np.ndarray | None = None,
) -> list[np.ndarray]:
    """``n_candidates`` candidate human sets of exactly ``budget_n`` items each (all eligible items if fewer),
    as sorted int64 item-index arrays without duplicates.

    ``feature_order`` fixes the feature order for every candidate (then only the item draws differ).
    ``exclude`` (mask or indices) are items that are never drawn, e.g. ones humans have labelled already.
    """
    gen = _Generator(X, exclude, feature_order)
    budget_n, seed = _check_budget(budget_n), _check_seed(seed)
    return [np.flatnonzero(gen.mask(budget_n, seed, j) & ~gen.base) for j in range(n_candidates)]


def candidate_mixtures(
    X: np.ndarray, candidates: Sequence[np.ndarray], *, exclude: np.ndarray | None = None
) -> np.ndarray:
    """Mixture vectors (candidates x features, float64) of candidate index arrays, plus ``exclude``'s items."""
    Xf = _features(X).astype(np.float32)
    base = item_mask(exclude, Xf.shape[0])
    out = np.empty((len(candidates), Xf.shape[1]))
    with one_blas_thread():
        for start in range(0, len(candidates), CHUNK):
            chunk = candidates[start : start + CHUNK]
            masks = np.tile(base, (len(chunk), 1))
            for row, items in enumerate(chunk):
                masks[row, np.asarray(items, dtype=np.intp)] = True
            out[start : start + len(chunk)] = _mix(masks, Xf)
    return out


def _mix(masks: np.ndarray, Xf: np.ndarray) -> np.ndarray:
    # float32 sums of 0/1 are exact up to 2**24 items
    return np.asarray(masks.astype(np.float32) @ Xf, dtype=np.float64)


def best_candidate(
    X: np.ndarray, candidates: Sequence[np.ndarray], ppm: Predictor, *, exclude: np.ndarray | None = None
) -> tuple[int, float]:
    """Index and predicted score of the candidate the PPM scores highest (the first one on ties)."""
    if not candidates:
        raise ValueError("no candidates")
    pred = ppm.predict(candidate_mixtures(X, candidates, exclude=exclude))
    best = int(np.argmax(pred))
    return best, float(pred[best])


@dataclass(frozen=True)
class BestCandidate:
    index: int  # which candidate (candidate j of generate_candidates with the same arguments)
    predicted: float
    items: np.ndarray  # its sorted item indices (excluded items not included)
    predictions: np.ndarray  # every candidate's predicted score


def _mask_chunks(gen: _Generator, budget_n: int, n_candidates: int, seed: int) -> Iterator[np.ndarray]:
    for start in range(0, n_candidates, CHUNK):
        stop = min(start + CHUNK, n_candidates)
        yield np.stack([gen.mask(budget_n, seed, j) for j in range(start, stop)])


def best_of_candidates(
    X: np.ndarray,
    budget_n: int,
    n_candidates: int,
    seed: int,
    ppm: Predictor,
    *,
    feature_order: Sequence[int] | None = None,
    exclude: np.ndarray | None = None,
) -> BestCandidate:
    """Generate candidates and keep the best by the PPM, streaming: only CHUNK masks are held at a time.

    Equals ``best_candidate(X, generate_candidates(X, budget_n, n_candidates, seed, ...), ppm)``.
    """
    if n_candidates < 1:
        raise ValueError(f"n_candidates must be >= 1; got {n_candidates}")
    budget_n, seed = _check_budget(budget_n), _check_seed(seed)
    gen = _Generator(X, exclude, feature_order)
    Xf = _features(X).astype(np.float32)
    with one_blas_thread():
        mixtures = np.concatenate([_mix(m, Xf) for m in _mask_chunks(gen, budget_n, n_candidates, seed)])
    pred = np.asarray(ppm.predict(mixtures), dtype=np.float64)
    best = int(np.argmax(pred))
    items = np.flatnonzero(gen.mask(budget_n, seed, best) & ~gen.base)
    return BestCandidate(best, float(pred[best]), items, pred)


def feature_gains(ppm: Predictor, base: np.ndarray) -> np.ndarray:
    """PPM(base + e_f) - PPM(base) for each feature f: the predicted gain of one more human item with f."""
    base = np.asarray(base, dtype=np.float64)
    rows = np.vstack([base, base + np.eye(len(base))])
    pred = np.asarray(ppm.predict(rows), dtype=np.float64)
    return pred[1:] - pred[0]


def topk_gain(
    X: np.ndarray,
    ppm: Predictor,
    budget_n: int,
    seed: int,
    *,
    exclude: np.ndarray | None = None,
    rounds: int = 1,
    exact: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The top-k variant: route the ``budget_n`` eligible items with the highest PPM gain.

    An item's gain is the sum of its features' gains ``feature_gains(ppm, m)`` at the current mixture m
    (the excluded items' mixture; zero when nothing is excluded). That is exact for a linear PPM; for the
    quadratic one it leaves out interactions among one item's own features. ``exact=True`` uses the paper's
    definition instead, PPM(m + x_i) - PPM(m), one prediction per item. ``rounds > 1`` is greedy: the
    budget is spent in that many slices, and after each slice m takes in the chosen items and the gains are
    computed again. Ties (common with trees, whose output moves in steps) are broken at random by ``seed``.

    Returns (sorted chosen item indices, the gains of the last round for every item; NaN where excluded).
    """
    Xb = _features(X)
    n = Xb.shape[0]
    budget_n, seed = _check_budget(budget_n), _check_seed(seed)
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1; got {rounds}")
    taken = item_mask(exclude, n)
    excluded = taken.copy()
    Xf = Xb.astype(np.float64)
    tiebreak = np.asarray(np.random.default_rng(seed).random(n))
    need = min(budget_n, n - int(taken.sum()))
    gains: np.ndarray = np.full(n, np.nan)
    with one_blas_thread():
        for r in range(rounds):
            size = need // (rounds - r)
            base = Xf[taken].sum(axis=0)
            if exact:
                pred = np.asarray(ppm.predict(np.vstack([base, base + Xf])), dtype=np.float64)
                gains = pred[1:] - pred[0]
            else:
                gains = np.asarray(Xf @ feature_gains(ppm, base), dtype=np.float64)
            if size:
                free = np.flatnonzero(~taken)
                order = np.lexsort((tiebreak[free], -gains[free]))  # highest gain first
                taken[free[order[:size]]] = True
                need -= size
    gains[excluded] = np.nan
    return np.flatnonzero(taken & ~excluded), gains
