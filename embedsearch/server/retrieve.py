"""``POST /collections/{name}/retrieve``: RAG retrieval (dense, BM25 or hybrid) over HTTP.

Calls :meth:`Collection.retrieve` (:mod:`embedsearch.rag`) with the same parameters and
defaults as in Python, and is registered only when that method exists. Cross-encoder
reranking loads a model named by path, so clients may name only the rerankers the server
owner allowed (``create_app(rerankers=[...])``).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ..collection import Collection
from ..errors import InvalidInputError
from ..validation import MAX_K
from .deps import ERRORS, State, Stopwatch, call_with_options
from .limits import check_text_content, over_window
from .schemas import CollectionName, Metadata, Request, Response, VersionQuery, jsonable


class PseudoRelevance(Request):
    docs: int | None = Field(None, ge=1, le=100)
    beta: float | None = Field(None, ge=0.0, le=1.0)


class RetrieveRequest(Request):
    query: str = Field(min_length=1)
    k: int = Field(8, ge=1, le=MAX_K)
    mode: Literal["dense", "bm25", "hybrid"] | None = None
    fusion: Literal["rrf", "convex", "dbsf"] | None = None
    rerank: str | None = Field(None, description="A cross-encoder the server allows.")
    mmr: float | None = Field(None, ge=0.0, le=1.0, description="MMR lambda (1 = relevance).")
    where: Metadata | None = None
    alpha: float | None = Field(None, ge=0.0, le=1.0, description="Dense weight in fusion.")
    candidates: int | None = Field(None, ge=1, le=MAX_K, description="Per side, before fusion.")
    prf: bool | PseudoRelevance | None = Field(None, description="Dense pseudo-relevance feedback.")
    rerank_depth: int | None = Field(None, ge=1, le=MAX_K)
    truncate: bool = Field(
        True,
        description="A query over the model window is embedded from its start (reported in "
        "`query_truncated`), as in /search; false answers 422 instead.",
    )


class PassageOut(Response):
    id: str
    text: str
    score: float
    metadata: Metadata = Field(description="Provenance: source, chunk_index, char offsets...")
    scores: dict[str, float | None] = Field(default_factory=dict)


class RetrieveResult(Response):
    passages: list[PassageOut]
    query_truncated: bool = Field(
        False, description="The query was longer than the model window: its start was embedded."
    )
    took_ms: float


def available() -> bool:
    """Whether the Collection class has ``retrieve`` now."""
    return callable(getattr(Collection, "retrieve", None))


def retrieve(
    name: CollectionName, body: RetrieveRequest, state: State, version: VersionQuery = None
) -> dict[str, Any]:
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
    prf = body.prf.model_dump(exclude_none=True) if isinstance(body.prf, BaseModel) else body.prf
    col = state.registry.get(name, version)
    passages = call_with_options(
        col.retrieve,
        body.query,
        k=body.k,
        mode=body.mode,
        fusion=body.fusion,
        rerank=body.rerank,
        mmr=body.mmr,
        where=body.where,
        alpha=body.alpha,
        candidates=body.candidates,
        prf=prf or None,
        rerank_depth=body.rerank_depth,
        truncate=body.truncate,
    )
    over = over_window(col.encoder, [body.query], truncate=True)[0] if body.mode != "bm25" else []
    return {
        "passages": [jsonable(p) for p in passages],
        "query_truncated": bool(over),
        "took_ms": watch.ms,
    }


def build_router() -> APIRouter:
    """The retrieve route, when the method exists."""
    router = APIRouter(prefix="/collections", tags=["retrieve"], responses=ERRORS)
    if available():
        router.add_api_route(
            "/{name}/retrieve",
            retrieve,
            methods=["POST"],
            response_model=RetrieveResult,
            summary="Retrieve passages (RAG)",
        )
    return router
