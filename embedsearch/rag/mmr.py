"""Maximal marginal relevance (Carbonell & Goldstein 1998) over stored unit vectors.

Greedy: pick the candidate maximising ``lam * relevance - (1 - lam) * max_sim_to_picked``.
``lam = 1`` keeps the input ranking; smaller values trade relevance for diversity, which
keeps near-duplicate passages (overlapping chunks, copies of one paragraph) from filling a
prompt.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError


def check_lambda(lam: float) -> float:
    """Validate the MMR trade-off ``lam`` in [0, 1]."""
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam <= 1.0:
        raise InvalidInputError(
            f"mmr must be a number in [0, 1] (1 = pure relevance, 0 = pure diversity), got {lam!r}."
        )
    return float(lam)


def mmr_order(relevance: np.ndarray, vectors: np.ndarray, k: int, lam: float) -> list[int]:
    """Indices of ``k`` candidates in MMR order.

    Args:
        relevance: (n,) relevance of each candidate to the query, comparable to cosine
            similarity (the caller scales fused scores into [0, 1]).
        vectors: (n, dim) unit vectors of the candidates.
        k: how many to pick.
        lam: relevance weight in [0, 1].
    """
    n = len(relevance)
    k = min(k, n)
    if k <= 0:
        return []
    rel = np.asarray(relevance, dtype=np.float64)
    sims = np.asarray(vectors, dtype=np.float32) @ np.asarray(vectors, dtype=np.float32).T
    picked: list[int] = []
    max_sim = np.full(n, -np.inf)
    free = np.ones(n, dtype=bool)
    for _ in range(k):
        div = np.where(np.isfinite(max_sim), max_sim, 0.0)
        gain = lam * rel - (1.0 - lam) * div
        gain[~free] = -np.inf
        j = int(np.argmax(gain))
        picked.append(j)
        free[j] = False
        max_sim = np.maximum(max_sim, sims[j])
    return picked
