"""Directions: a unit axis in the embedding space from a few examples of each end of a concept.

:func:`direction_vector` (``col.direction(positive=[...], negative=[...])``):

1. **Start** — the difference of the two example centroids (unit mean of the positive
   examples minus unit mean of the negative ones), normalised.
2. **Refine on the collection** (``refine`` rounds, default 2) — the collection's documents
   (a seeded sample of at most 20,000) are split where the examples' two mean positions on the
   axis meet, and the axis becomes the difference of the two sides' means. The few examples
   pick the concept; the collection supplies the many documents that make its two ends
   precise. A refined axis is kept only if it still ranks every pair of examples at least as
   well as the start did (pairwise accuracy), so a concept the collection does not hold falls
   back to the examples' own axis.

Measured on the 32,000 news/clickbait headlines (``benchmarks/latent_eval.py``, 10 random
examples per side, 10 draws): mean ROC AUC 0.936 for the centroid difference alone, 0.966
refined, against 0.942 for a logistic regression trained on the same 20 examples. Whitening the
difference by the collection's covariance (LDA-style, shrinkage 0.1..0.8) scored 0.62-0.80:
the concept lies along directions of high variance, which whitening shrinks.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import InvalidInputError

REFINE_SAMPLE = 20_000
REFINE_ROUNDS = 2


def _unit(v: np.ndarray, what: str) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    if norm < 1e-9 or not math.isfinite(norm):
        raise InvalidInputError(
            f"{what} is the zero vector: the positive and negative examples mean the same; "
            "give examples that differ in the concept."
        )
    return v / norm


def _pair_accuracy(axis: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> float:
    """Share of (positive, negative) example pairs the axis orders correctly."""
    a, b = pos @ axis, neg @ axis
    return float((a[:, None] > b[None, :]).mean())


def refine_sample(vectors: Any) -> np.ndarray:
    """The background rows :func:`direction_vector` refines on: all of ``vectors`` (an
    array or a collection's row view) up to :data:`REFINE_SAMPLE`, else that many seeded
    rows, read alone (a million-row collection is not copied to refine an axis)."""
    n = len(vectors)
    if n <= REFINE_SAMPLE:
        return np.asarray(vectors[:n], dtype=np.float32)
    rows = np.sort(np.random.default_rng(0).choice(n, REFINE_SAMPLE, replace=False))
    return np.asarray(vectors[rows], dtype=np.float32)


def direction_vector(
    pos: np.ndarray,
    neg: np.ndarray,
    background: np.ndarray | None = None,
    *,
    refine: int = REFINE_ROUNDS,
) -> np.ndarray:
    """The unit axis from ``neg`` toward ``pos`` (see the module notes).

    Args:
        pos / neg: ``(p, dim)`` and ``(q, dim)`` unit vectors of the examples (p, q >= 1).
        background: the collection's vectors used to refine the axis (None: no refinement).
        refine: refinement rounds (0 keeps the centroid difference).

    Returns:
        A float32 unit vector of length ``dim``.

    Raises:
        InvalidInputError: no examples on a side, or both sides mean the same.
    """
    if isinstance(refine, bool) or not isinstance(refine, (int, np.integer)) or refine < 0:
        raise InvalidInputError(f"refine must be an integer >= 0, got {refine!r}.")
    if len(pos) == 0 or len(neg) == 0:
        raise InvalidInputError("a direction needs at least one positive and one negative example.")
    p = np.asarray(pos, dtype=np.float64)
    q = np.asarray(neg, dtype=np.float64)
    axis = _unit(
        _unit(p.sum(0), "the positive examples' mean") - _unit(q.sum(0), "the negative mean"),
        "the direction",
    )
    if background is None or refine == 0 or len(background) < 10:
        return axis.astype(np.float32)
    x = refine_sample(background)
    start_acc = _pair_accuracy(axis, p, q)
    best = axis
    for _ in range(int(refine)):
        s = x @ axis.astype(np.float32)
        split = 0.5 * (float((p @ axis).mean()) + float((q @ axis).mean()))
        hi, lo = s > split, s <= split
        if hi.sum() < 5 or lo.sum() < 5:
            break
        nxt = x[hi].mean(0, dtype=np.float64) - x[lo].mean(0, dtype=np.float64)
        norm = float(np.linalg.norm(nxt))
        if norm < 1e-9:
            break
        axis = nxt / norm
        if _pair_accuracy(axis, p, q) >= start_acc:
            best = axis
        else:
            break
    return best.astype(np.float32)


__all__ = ["direction_vector", "refine_sample"]
