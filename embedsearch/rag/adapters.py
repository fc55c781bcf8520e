"""Retrievers for LangChain and LlamaIndex over ``Collection.retrieve`` (extra ``rag``).

Thin on purpose: each turns a query into ``col.retrieve(query, **settings)`` and the
passages into the framework's document type, keeping the id, score, per-stage scores and
all provenance (source, char offsets, heading path, page) in the metadata.

Example:
    >>> from embedsearch.rag.adapters import langchain_retriever
    >>> retriever = langchain_retriever(col, k=4, mode="hybrid")
    >>> docs = retriever.invoke("how are logs rotated?")
    >>> from embedsearch.rag.adapters import llamaindex_retriever
    >>> nodes = llamaindex_retriever(col, k=4, mode="hybrid").retrieve("how are logs rotated?")

The framework packages are imported only when an adapter is built: ``pip install
langchain-core`` / ``pip install llama-index-core``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from ..errors import EmbedSearchError
from .passage import Passage

if TYPE_CHECKING:
    from .mixin import RetrievalMixin

_SETTINGS = (
    "k",
    "mode",
    "fusion",
    "rerank",
    "mmr",
    "where",
    "alpha",
    "candidates",
    "prf",
    "rerank_depth",
    "truncate",
)


_CITE = ("source", "title", "heading_path", "page", "page_end")


def _check_settings(settings: dict[str, Any]) -> dict[str, Any]:
    unknown = set(settings) - set(_SETTINGS)
    if unknown:
        raise EmbedSearchError(
            f"unknown retrieve settings {sorted(unknown)}; use any of {', '.join(_SETTINGS)}."
        )
    return {k: v for k, v in settings.items() if v is not None}


def _metadata(p: Passage) -> dict[str, Any]:
    return {**p.metadata, "id": p.id, "score": p.score, "scores": dict(p.scores)}


@functools.cache
def _langchain_class() -> type:
    try:
        from langchain_core.callbacks import CallbackManagerForRetrieverRun
        from langchain_core.documents import Document
        from langchain_core.retrievers import BaseRetriever
        from pydantic import ConfigDict
    except ImportError as exc:
        raise EmbedSearchError(
            "the LangChain adapter needs langchain-core: pip install langchain-core"
        ) from exc

    class EmbedsearchRetriever(BaseRetriever):
        """LangChain retriever over an embedsearch collection (``Collection.retrieve``)."""

        model_config = ConfigDict(arbitrary_types_allowed=True)
        collection: Any
        settings: dict = {}  # noqa: RUF012 - pydantic copies defaults

        def _get_relevant_documents(
            self, query: str, *, run_manager: CallbackManagerForRetrieverRun
        ) -> list[Document]:
            passages = self.collection.retrieve(query, **self.settings)
            return [Document(page_content=p.text, metadata=_metadata(p), id=p.id) for p in passages]

    return EmbedsearchRetriever


@functools.cache
def _llamaindex_class() -> type:
    try:
        from llama_index.core.retrievers import BaseRetriever
        from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    except ImportError as exc:
        raise EmbedSearchError(
            "the LlamaIndex adapter needs llama-index-core: pip install llama-index-core"
        ) from exc

    class EmbedsearchLlamaRetriever(BaseRetriever):
        """LlamaIndex retriever over an embedsearch collection (``Collection.retrieve``)."""

        def __init__(self, collection: Any, settings: dict[str, Any], **kwargs: Any) -> None:
            self._collection = collection
            self._settings = settings
            super().__init__(**kwargs)

        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            passages = self._collection.retrieve(query_bundle.query_str, **self._settings)
            return [
                NodeWithScore(
                    node=TextNode(
                        id_=p.id,
                        text=p.text,
                        metadata=(meta := _metadata(p)),
                        start_char_idx=p.char_start,
                        end_char_idx=p.char_end,
                        # only the citation fields reach the LLM prompt / an embedder
                        excluded_llm_metadata_keys=[k for k in meta if k not in _CITE],
                        excluded_embed_metadata_keys=list(meta),
                    ),
                    score=p.score,
                )
                for p in passages
            ]

    return EmbedsearchLlamaRetriever


def langchain_retriever(col: RetrievalMixin, **settings: Any) -> Any:
    """A ``langchain_core.retrievers.BaseRetriever`` calling ``col.retrieve(q, **settings)``."""
    cls = _langchain_class()
    return cls(collection=col, settings=_check_settings(settings))


def llamaindex_retriever(col: RetrievalMixin, **settings: Any) -> Any:
    """A ``llama_index.core.retrievers.BaseRetriever`` calling ``col.retrieve(q, **settings)``."""
    cls = _llamaindex_class()
    return cls(col, _check_settings(settings))
