"""Fuse ranked lists (dense and BM25) into one ranking.

Every function takes lists of ``(id, score)`` best first and per-list weights, and returns
one ``(id, fused score)`` list best first. A document missing from a list contributes
nothing from that list (its normalised score there counts as 0).

* ``rrf`` — reciprocal-rank fusion: ``sum_i w_i / (c + rank_i)`` (Cormack et al. 2009),
  ``c = 60``. Uses ranks only, so it needs no score calibration.
* ``convex`` — convex combination of min-max normalised scores over each candidate list:
  ``sum_i w_i * (s_i - min_i) / (max_i - min_i)``.
* ``dbsf`` — distribution-based score fusion: each list's scores are normalised with its
  own mean ± 3 standard deviations as the [0, 1] range (clipped), then summed with weights.

With two lists, weights are ``(alpha, 1 - alpha)`` (``alpha`` = dense weight); for ``rrf``
they are scaled so that ``alpha = 0.5`` is classic unweighted RRF.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InvalidInputError

Ranked = list[tuple[str, float]]
FUSIONS: tuple[str, ...] = ("rrf", "convex", "dbsf")
RRF_C = 60


def check_fusion(method: str) -> str:
    """Validate a fusion name."""
    if method not in FUSIONS:
        raise InvalidInputError(f"unknown fusion {method!r}; use one of {', '.join(FUSIONS)}.")
    return method


def _weights(n: int, weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * n
    w = [float(x) for x in weights]
    if len(w) != n or any(not np.isfinite(x) or x < 0 for x in w):
        raise InvalidInputError(f"need {n} non-negative finite weights, got {list(weights)!r}.")
    return w


def _combine(parts: list[dict[str, float]], first_rank: dict[str, int]) -> Ranked:
    total: dict[str, float] = {}
    for part in parts:
        for doc, val in part.items():
            total[doc] = total.get(doc, 0.0) + val
    return sorted(total.items(), key=lambda kv: (-kv[1], first_rank[kv[0]]))


def _first_ranks(lists: Sequence[Ranked]) -> dict[str, int]:
    best: dict[str, int] = {}
    for ranked in lists:
        for r, (doc, _) in enumerate(ranked):
            if r < best.get(doc, 1 << 30):
                best[doc] = r
    return best


def rrf(lists: Sequence[Ranked], weights: Sequence[float] | None = None, c: int = RRF_C) -> Ranked:
    """Reciprocal-rank fusion of ranked lists."""
    w = _weights(len(lists), weights)
    parts = [
        {doc: wi / (c + r + 1) for r, (doc, _) in enumerate(ranked)} for wi, ranked in zip(w, lists)
    ]
    return _combine(parts, _first_ranks(lists))


def minmax(scores: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the list's min and max (all 1.0 when they are equal)."""
    if scores.size == 0:
        return scores
    lo, hi = float(scores.min()), float(scores.max())
    if hi - lo <= 1e-12:
        return np.ones_like(scores)
    return (scores - lo) / (hi - lo)


def dist_norm(scores: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] with mean ± 3 std as the range, clipped (DBSF's normalisation)."""
    if scores.size == 0:
        return scores
    mu, sd = float(scores.mean()), float(scores.std())
    if sd <= 1e-12:
        return np.ones_like(scores)
    return np.clip((scores - (mu - 3 * sd)) / (6 * sd), 0.0, 1.0)


def _normalised(lists: Sequence[Ranked], weights: Sequence[float] | None, norm: str) -> Ranked:
    w = _weights(len(lists), weights)
    fn = minmax if norm == "minmax" else dist_norm
    parts = []
    for wi, ranked in zip(w, lists):
        vals = fn(np.array([s for _, s in ranked], dtype=np.float64))
        parts.append({doc: wi * float(v) for (doc, _), v in zip(ranked, vals)})
    return _combine(parts, _first_ranks(lists))


def convex(lists: Sequence[Ranked], weights: Sequence[float] | None = None) -> Ranked:
    """Weighted sum of min-max normalised scores."""
    return _normalised(lists, weights, "minmax")


def dbsf(lists: Sequence[Ranked], weights: Sequence[float] | None = None) -> Ranked:
    """Distribution-based score fusion (mean ± 3σ normalisation, weighted sum)."""
    return _normalised(lists, weights, "dist")


def fuse(method: str, dense: Ranked, keyword: Ranked, alpha: float) -> Ranked:
    """Fuse a dense and a keyword list with dense weight ``alpha`` in [0, 1]."""
    check_fusion(method)
    if not 0.0 <= float(alpha) <= 1.0:
        raise InvalidInputError(f"alpha (dense weight) must be in [0, 1], got {alpha!r}.")
    w = (float(alpha), 1.0 - float(alpha))
    if method == "rrf":
        return rrf([dense, keyword], (2 * w[0], 2 * w[1]))
    if method == "convex":
        return convex([dense, keyword], w)
    return dbsf([dense, keyword], w)
