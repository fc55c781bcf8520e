"""Plain result types shared by every surface (Python, CLI, HTTP, RAG)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Hit:
    """One ranked search result.

    Attributes:
        id: the document id.
        score: cosine similarity to the query (inner product of unit vectors), in [-1, 1].
        text: the stored text.
        metadata: the stored metadata (a fresh dict; changing it changes nothing stored).
    """

    id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Document:
    """A stored document as returned by ``Collection.get``."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    vector: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "text": self.text, "metadata": self.metadata}
        if self.vector is not None:
            out["vector"] = self.vector.tolist()
        return out
