"""``POST /collections/{name}/retrieve``: RAG retrieval (dense, BM25 or hybrid) over HTTP.

Calls :meth:`Collection.retrieve` (:mod:`embedsearch.rag`) with the same parameters as in
Python, and is registered only when that method exists. Cross-encoder reranking loads a
model named by path, so clients may only name rerankers the server allows
(``create_app(rerankers=...)``).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import Field

from ..collection import MAX_K, Collection
from ..errors import InvalidInputError
from .deps import ERRORS, State, Stopwatch, call_with_options
from .limits import check_text_content
from .schemas import CollectionName, Metadata, Request, Response, jsonable


class RetrieveRequest(Request):
    query: str = Field(min_length=1)
    k: int = Field(8, ge=1, le=MAX_K)
    mode: Literal["dense", "bm25", "hybrid"] | None = None
    fusion: Literal["rrf", "convex", "dbsf"] | None = None
    rerank: str | None = Field(None, description="A cross-encoder the server allows.")
    mmr: float | None = Field(None, ge=0.0, le=1.0, description="MMR lambda (diversity).")
    where: Metadata | None = None


class RetrieveResult(Response):
    passages: list[dict[str, Any]] = Field(description="Text, score and provenance of each.")
    took_ms: float


def available() -> bool:
    """Whether the Collection class has ``retrieve`` now."""
    return callable(getattr(Collection, "retrieve", None))


def retrieve(name: CollectionName, body: RetrieveRequest, state: State) -> dict[str, Any]:
    """Passages for a RAG prompt: dense, BM25 or hybrid with fusion, MMR, reranking."""
    watch = Stopwatch()
    state.limits.check_k(body.k)
    state.limits.check_texts([body.query], "query")
    check_text_content(body.query, "query")
    if body.rerank is not None and body.rerank not in state.rerankers:
        raise InvalidInputError(
            f"reranker {body.rerank!r} is not enabled on this server; allowed: "
            f"{list(state.rerankers) or 'none'}."
        )
    col = state.registry.get(name)
    passages = call_with_options(
        col.retrieve,
        body.query,
        k=body.k,
        mode=body.mode,
        fusion=body.fusion,
        rerank=body.rerank,
        mmr=body.mmr,
        where=body.where,
    )
    return {"passages": [jsonable(p) for p in passages], "took_ms": watch.ms}


def build_router() -> APIRouter:
    """The retrieve route, when the method exists."""
    r = APIRouter(prefix="/collections", tags=["retrieve"], responses=ERRORS)
    if available():
        r.add_api_route(
            "/{name}/retrieve",
            retrieve,
            methods=["POST"],
            response_model=RetrieveResult,
            summary="Retrieve passages (RAG)",
        )
    return r
