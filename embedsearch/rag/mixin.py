"""``RetrievalMixin``: RAG methods on :class:`embedsearch.Collection` (issue 5).

The methods delegate to :mod:`.documents` (ingest) and :mod:`.retrieval` (the pipeline),
imported on first use so that importing embedsearch stays light.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from .bm25 import BM25Store
    from .chunking import Chunker
    from .documents import IngestReport
    from .passage import Passage

from ..errors import EmbedSearchError

log = logging.getLogger(__name__)


class RetrievalMixin:
    """add_documents / retrieve / remove_documents. They use the collection's public API,
    except the keyword index, which reads the committed segments through
    ``Collection._reading()`` (its postings are kept per segment: see :mod:`.bm25`)."""

    #: The handle's BM25 index, built on the first hybrid retrieval
    #: (:func:`embedsearch.rag.retrieval.bm25_store`); RAG state, declared here rather than
    #: hung on the handle's ``__dict__``.
    _rag_bm25: BM25Store | None = None
    path: Path  # the collection's folder (set by the collection)

    def add_documents(
        self,
        sources: Iterable[Any] | str | os.PathLike[str],
        *,
        chunker: str | Chunker = "auto",
        max_tokens: int | None = None,
        overlap: int | None = None,
        metadata: dict[str, Any] | None = None,
        encoding: str = "utf-8",
        prune: bool = False,
        progress: bool | None = None,
        on_source: Callable[[str], None] | None = None,
    ) -> IngestReport:
        """Load files (or texts), cut them into passages and index the passages.

        Args:
            sources: file paths, folders (walked for .txt/.md/.html/.pdf), texts given as
                ``{"text": ..., "source": name, "metadata": {...}}`` dicts, or strings (a
                path when it exists, otherwise a text when it contains whitespace).
            chunker: ``"auto"`` (heading-aware for Markdown/HTML, sentence packing
                otherwise), ``"token"``, ``"sentence"``, ``"markdown"``, or a
                :class:`~embedsearch.rag.chunking.Chunker`.
            max_tokens: tokens per chunk (default and maximum: the model window minus its
                special tokens, 254 for all-MiniLM-L6-v2).
            overlap: tokens shared by consecutive chunks (default 32).
            metadata: extra fields stored with every chunk (filterable with ``where``).
            encoding: encoding of text files (strict; a file that does not decode is
                skipped with a report).
            prune: also delete the chunks of files that disappeared from the given folders.
            progress: show an embedding progress bar.
            on_source: called with each source's name once it is done (indexed, found
                unchanged or skipped): a caller's progress over files.

        Returns:
            An :class:`~embedsearch.rag.documents.IngestReport`: added / updated /
            unchanged / skipped (with reasons) / removed sources and chunk counts.

        Example:
            >>> report = col.add_documents(["docs/"], chunker="auto")
            >>> report.summary()
            '12 added, 0 updated, 0 unchanged, 1 skipped, 0 removed; 85 chunks written, 0 deleted'
        """
        from .documents import add_documents

        return add_documents(
            self,
            sources,
            chunker=chunker,
            max_tokens=max_tokens,
            overlap=overlap,
            metadata=metadata,
            encoding=encoding,
            prune=prune,
            progress=progress,
            on_source=on_source,
        )

    def remove_documents(self, sources: Iterable[str | os.PathLike[str]] | str) -> int:
        """Delete every chunk of the given sources; returns how many chunks were deleted."""
        from .documents import remove_documents

        return remove_documents(self, sources)

    def retrieve(
        self,
        query: str,
        k: int = 8,
        mode: str = "dense",
        fusion: str | None = None,
        rerank: Any = None,
        mmr: float | None = None,
        where: dict[str, Any] | None = None,
        *,
        alpha: float | None = None,
        candidates: int | None = None,
        prf: Any = None,
        rerank_depth: int | None = None,
        truncate: bool = True,
    ) -> list[Passage]:
        """The ``k`` passages that best answer ``query``, with scores and provenance.

        Args:
            query: the question (text).
            k: passages to return (1..10,000).
            mode: ``"dense"`` (embedding similarity), ``"bm25"`` (keywords) or ``"hybrid"``
                (both, fused).
            fusion: for hybrid: ``"rrf"``, ``"convex"`` or ``"dbsf"`` (default
                :data:`embedsearch.rag.retrieval.DEFAULT_FUSION`).
            rerank: a CrossEncoder folder path (or loaded model) rescoring the top
                ``rerank_depth`` (default ``max(k, 30)``) candidates.
            mmr: MMR trade-off λ in [0, 1] (1 = relevance only) to diversify the results.
            where: metadata filter, applied on the dense and the keyword side alike.
            alpha: dense weight in [0, 1] for hybrid fusion (default 0.5: equal weights).
            candidates: results each side fetches before fusion (default ``max(100, k)``
                in hybrid mode; a side alone fetches ``k``, or the reranker's or MMR's depth).
            prf: dense pseudo-relevance feedback (``True`` or ``{"docs": 3, "beta": 0.5}``).
            rerank_depth: how many top candidates the cross-encoder rescores.
            truncate: a query longer than the model window is embedded from its beginning
                (the default, as ``search`` does); ``False`` makes such a query an error.

        Returns:
            :class:`~embedsearch.rag.passage.Passage` objects, best first.

        Raises:
            InvalidInputError: empty or over-long query, unknown mode or fusion, ``k`` or
                another parameter out of range.

        Example:
            >>> for p in col.retrieve("how do I rotate the logs?", k=4, mode="hybrid"):
            ...     print(p.citation(), p.text[:60])
        """
        from .retrieval import retrieve

        return retrieve(
            self,
            query,
            k,
            mode,
            fusion,
            rerank,
            mmr,
            where,
            alpha=alpha,
            candidates=candidates,
            prf=prf,
            rerank_depth=rerank_depth,
            truncate=truncate,
        )

    def prepare_keywords(self) -> None:
        """Build the keyword (BM25) index now, rather than at the first ``bm25`` or
        ``hybrid`` retrieval, and have every later write keep it current.

        The index is kept per segment under ``derived/keywords/`` (:mod:`.bm25`). Without
        this call it is built by the first keyword query, which then waits for it (4-5 s
        for a million short texts here); from then on, and after this call, each write
        analyses its own new rows before it returns (any handle, any process: the
        writer sees the saved postings), so no query builds any. ``add_documents`` calls it.
        """
        from .retrieval import bm25_store

        bm25_store(self).prepare()

    def _keywords_info(self) -> dict[str, Any]:
        """Whether the collection keeps keyword postings (of the default analysis), and
        their files and bytes on disk: ``info()``'s ``keywords``."""
        from .bm25 import saved_postings

        files = saved_postings(self.path)
        return {
            "kept": bool(files),
            "files": len(files),
            "bytes": sum(stamp[2] for stamp in files.values()),
        }

    def _close_keywords(self) -> None:
        """Release the keyword postings this handle holds (its files and their maps)."""
        store, self._rag_bm25 = self._rag_bm25, None
        if store is not None:
            store.close()

    def _keep_keywords(self) -> None:
        """After a write has committed: where the collection keeps keyword postings, build
        its new segments' now (the writer's work, not the next query's). A failure is only
        logged: the write stays committed, and the next keyword query builds what is missing."""
        from .bm25 import saved_postings
        from .retrieval import bm25_store

        if not saved_postings(self.path):
            return  # never asked for keywords (or only for another analysis): nothing to keep
        try:
            bm25_store(self).prepare()
        except (OSError, EmbedSearchError) as exc:
            log.warning("keyword postings not brought up to date (%s); a query will", exc)
