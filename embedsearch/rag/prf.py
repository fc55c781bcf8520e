"""Dense pseudo-relevance feedback: Rocchio's update in the embedding space.

After a first retrieval, the query vector moves toward the centroid of the top ``docs``
passages — ``q' = normalise(q + beta * mean(top vectors))`` — and the dense search runs
again with ``q'``. It helps when the first page is mostly right (the centroid carries the
vocabulary of relevant passages) and hurts when it is not (query drift). It is off by
default: see docs/rag.md for the measurements that decided that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidInputError


@dataclass(frozen=True)
class PRFConfig:
    """Rocchio settings: how many feedback passages, and the centroid's weight."""

    docs: int = 3
    beta: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.docs, bool) or not isinstance(self.docs, int) or not self.docs >= 1:
            raise InvalidInputError(f"prf docs must be a positive integer, got {self.docs!r}.")
        if not isinstance(self.beta, (int, float)) or not 0.0 < float(self.beta) <= 10.0:
            raise InvalidInputError(f"prf beta must be in (0, 10], got {self.beta!r}.")


def as_config(prf: Any) -> PRFConfig | None:
    """``None``/``False`` → off; ``True`` → defaults; a dict or :class:`PRFConfig` as given."""
    if prf is None or prf is False:
        return None
    if prf is True:
        return PRFConfig()
    if isinstance(prf, PRFConfig):
        return prf
    if isinstance(prf, dict):
        unknown = set(prf) - {"docs", "beta"}
        if unknown:
            raise InvalidInputError(f"unknown prf settings {sorted(unknown)}; use docs, beta.")
        return PRFConfig(**prf)
    raise InvalidInputError(
        f"prf must be None, True, or a dict like {{'docs': 3, 'beta': 0.5}}, got {prf!r}."
    )


def rocchio(query: np.ndarray, feedback: np.ndarray, beta: float) -> np.ndarray:
    """The unit vector ``normalise(query + beta * mean(feedback))``."""
    if feedback.size == 0:
        return query
    q = query.astype(np.float32) + float(beta) * feedback.mean(axis=0).astype(np.float32)
    norm = float(np.linalg.norm(q))
    return query if norm == 0.0 else q / norm
