"""A CPU proxy reward model: Bradley-Terry on response-embedding differences.

P(A beats B) = sigmoid(w . (e_A - e_B)): a linear reward r(e) = w . e trained as a pairwise logistic
model. Each labelled pair is used in both orders, (e_A - e_B, +y) and (e_B - e_A, -y) (symmetric
augmentation), so the model cannot prefer a position; with that augmentation the intercept is 0 and is
left out. Ties (label 0) are dropped. The L2 penalty follows scikit-learn's LogisticRegression
(``C = 1 / l2`` on the summed log-loss of the augmented rows).

Used to score candidate hybrid datasets in the platform and the replay simulation: train on the hybrid
labels, measure pairwise accuracy on human-labelled reference pairs (``hybrid_proxy_score``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression


@dataclass(frozen=True)
class BTModel:
    """Reward weights ``w``: reward(e) = w . e; A is predicted better when w . (e_A - e_B) > 0."""

    w: np.ndarray
    l2: float
    n_train: int  # labelled (non-tie) pairs it was trained on

    def margin(self, emb_a: np.ndarray, emb_b: np.ndarray) -> np.ndarray:
        """reward(A) - reward(B) for each pair."""
        return np.asarray((np.asarray(emb_a, dtype=np.float64) - emb_b) @ self.w, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"w": self.w.tolist(), "l2": self.l2, "n_train": self.n_train}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BTModel:
        return cls(np.asarray(data["w"], dtype=np.float64), float(data["l2"]), int(data["n_train"]))


def _pairs(emb_a: np.ndarray, emb_b: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.asarray(emb_a, dtype=np.float64)
    b = np.asarray(emb_b, dtype=np.float64)
    y = np.asarray(labels)
    if a.ndim != 2 or a.shape != b.shape or y.shape != (a.shape[0],):
        raise ValueError(
            f"emb_a and emb_b must be (pairs, dim) and labels (pairs,); got {a.shape}, {b.shape}, {y.shape}"
        )
    if not np.isin(y, (-1, 0, 1)).all():
        raise ValueError("labels must be +1 (A better), -1 (B better) or 0 (tie)")
    return a, b, y.astype(np.int64)


def train_bt(
    emb_a: np.ndarray,
    emb_b: np.ndarray,
    labels: np.ndarray,
    l2: float = 1.0,
    seed: int = 0,
    *,
    max_pairs: int | None = None,
) -> BTModel:
    """Fit a Bradley-Terry model; ties are dropped. ``max_pairs`` subsamples the labelled pairs (with ``seed``),
    as the paper trained on 7,000 sampled pairs. Without two distinct outcomes the weights are 0 (no signal)."""
    if l2 <= 0:
        raise ValueError(f"l2 must be > 0; got {l2}")
    a, b, y = _pairs(emb_a, emb_b, labels)
    keep = np.flatnonzero(y != 0)
    if max_pairs is not None and len(keep) > max_pairs:
        keep = np.sort(np.random.default_rng(seed).choice(keep, max_pairs, replace=False))
    d, y = a[keep] - b[keep], y[keep]
    if len(y) == 0:
        return BTModel(np.zeros(a.shape[1]), l2, 0)
    # both orders of every pair: always two classes, and no position bias
    clf = LogisticRegression(C=1.0 / l2, fit_intercept=False, max_iter=1000, tol=1e-6)
    clf.fit(np.vstack([d, -d]), np.concatenate([y, -y]))
    return BTModel(np.asarray(clf.coef_[0], dtype=np.float64), l2, len(y))


def score_bt(model: BTModel, emb_a: np.ndarray, emb_b: np.ndarray, reference_labels: np.ndarray) -> float:
    """Pairwise accuracy against the non-tie reference labels; a zero margin counts half (a coin flip).
    NaN when there is no non-tie reference label."""
    a, b, y = _pairs(emb_a, emb_b, reference_labels)
    keep = y != 0
    if not keep.any():
        return float("nan")
    margin = model.margin(a[keep], b[keep])
    hits = np.where(margin == 0, 0.5, (np.sign(margin) == y[keep]).astype(np.float64))
    return float(hits.mean())


def hybrid_proxy_score(
    labels: np.ndarray,
    reference: np.ndarray,
    emb_a: np.ndarray,
    emb_b: np.ndarray,
    *,
    folds: int = 2,
    l2: float = 1.0,
    seed: int = 0,
    max_pairs: int | None = None,
) -> float:
    """Score a labelled dataset with the proxy, cross-fitted: split the items into ``folds`` parts (with
    ``seed``); for each part, train on the other parts' ``labels`` and measure accuracy on this part's
    ``reference`` labels; return the mean over the parts (NaN parts skipped; NaN if all are). Every item's
    label counts, and no item is scored by a model that saw its own label. ``max_pairs`` caps each fit's
    training pairs (``train_bt``)."""
    labels, reference = np.asarray(labels), np.asarray(reference)
    n = len(labels)
    if folds < 2 or n < folds:
        raise ValueError(f"need folds >= 2 and at least that many items; got folds={folds}, {n} items")
    parts = np.array_split(np.random.default_rng(seed).permutation(n), folds)
    scores = []
    for part in parts:
        train = np.ones(n, dtype=bool)
        train[part] = False
        model = train_bt(emb_a[train], emb_b[train], labels[train], l2, seed, max_pairs=max_pairs)
        scores.append(score_bt(model, emb_a[part], emb_b[part], reference[part]))
    finite = [s for s in scores if np.isfinite(s)]
    return float(np.mean(finite)) if finite else float("nan")


def hybrid_labels(ai: np.ndarray, human_first: np.ndarray, human: np.ndarray) -> np.ndarray:
    """A candidate's hybrid label set: the human label (``human_first``) at the indices ``human``, the AI
    label everywhere else (labels -1/0/+1; the replay builds its hybrids the same way)."""
    ai_v, human_v = np.asarray(ai), np.asarray(human_first)
    if ai_v.shape != human_v.shape or ai_v.ndim != 1:
        raise ValueError(f"ai and human_first must be 1-D and the same length; got {ai_v.shape}, {human_v.shape}")
    idx = np.asarray(human, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= len(ai_v)):
        raise ValueError("human indices out of range")
    out = ai_v.astype(np.int64)
    out[idx] = human_v[idx]
    return out


def reference_labels(majority: np.ndarray, n_human: np.ndarray, min_annotations: int = 2) -> np.ndarray:
    """The human reference the proxy is scored on: the human majority where an item has at least
    ``min_annotations`` human annotations, 0 elsewhere (``score_bt`` leaves 0, a tie or no reference, out)."""
    m, n = np.asarray(majority), np.asarray(n_human)
    if m.shape != n.shape or m.ndim != 1:
        raise ValueError(f"majority and n_human must be 1-D and the same length; got {m.shape}, {n.shape}")
    if min_annotations < 1:
        raise ValueError(f"min_annotations must be >= 1; got {min_annotations}")
    return np.where(n >= min_annotations, m, 0).astype(np.int64)
