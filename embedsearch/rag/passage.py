"""``Passage``: one retrieved piece of text with its score and where it came from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Passage:
    """A retrieved passage, ready to put in a prompt and to cite.

    Attributes:
        id: the stored chunk id (``<source>#<chunk index>`` for ingested files).
        text: the passage text; for ingested files exactly
            ``source_text(source)[char_start:char_end]``.
        score: the final score of the pipeline stage that ranked it last (cross-encoder
            score when reranked, fused score in hybrid mode, BM25 score in ``bm25`` mode,
            cosine similarity in ``dense`` mode). Comparable only within one result list.
        metadata: everything stored with the chunk (source, chunk_index, char_start,
            char_end, heading_path, content_hash, page, ... plus the caller's own fields).
        scores: each stage's score, for debugging and thresholds: ``dense`` (cosine),
            ``bm25``, ``fused``, ``rerank`` — only those that ran and saw this passage.
    """

    id: str
    text: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def source(self) -> str | None:
        """The file path (or caller-given source name) the passage was cut from."""
        return self.metadata.get("source")

    @property
    def char_start(self) -> int | None:
        """Offset of the passage's first character in the source text."""
        return self.metadata.get("char_start")

    @property
    def char_end(self) -> int | None:
        """Offset just past the passage's last character in the source text."""
        return self.metadata.get("char_end")

    @property
    def heading_path(self) -> list[str]:
        """Markdown/HTML headings enclosing the passage, outermost first (empty if none)."""
        return list(self.metadata.get("heading_path") or [])

    def citation(self) -> str:
        """A short human citation: ``source § Heading > Sub [start:end]`` (what is known)."""
        parts = [str(self.source or self.id)]
        if self.heading_path:
            parts.append("§ " + " > ".join(self.heading_path))
        if self.metadata.get("page"):
            page, last = self.metadata["page"], self.metadata.get("page_end", self.metadata["page"])
            parts.append(f"p. {page}" if page == last else f"pp. {page}-{last}")
        if self.char_start is not None and self.char_end is not None:
            parts.append(f"[{self.char_start}:{self.char_end}]")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what the CLI and HTTP surfaces return)."""
        out = asdict(self)
        out["citation"] = self.citation()
        return out
