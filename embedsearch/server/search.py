"""Search: by text or vector, one query or a batch, with filters and per-call index knobs.

Text queries are embedded by the server's query encoder (see :mod:`.encoders`), then
searched as vectors through :meth:`Collection.search`: ranking is the Python API's own, so
the same query gives the same ids and scores over HTTP as in Python.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from ..errors import InvalidInputError
from .deps import ERRORS, ServerState, State, Stopwatch
from .limits import check_text_content, over_window
from .schemas import (
    BatchSearchRequest,
    BatchSearchResult,
    CollectionName,
    SearchKnobs,
    SearchRequest,
    SearchResult,
    TextSearch,
    VersionQuery,
    hit_dict,
)

if TYPE_CHECKING:
    from ..base import CollectionBase

router = APIRouter(prefix="/collections", tags=["search"], responses=ERRORS)


def embed_queries(
    state: ServerState, col: CollectionBase, queries: list[Any], *, truncate: bool
) -> tuple[list[Any], list[int]]:
    """Texts → vectors with the query encoder; vectors pass through. Returns truncations."""
    for i, q in enumerate(queries):
        if not isinstance(q, str) and not all(math.isfinite(x) for x in q):
            raise InvalidInputError(
                f"vector {i} holds a value that is not a finite number; send finite "
                "numbers (their scale does not matter: vectors are normalised)."
            )
    texts = [(i, q) for i, q in enumerate(queries) if isinstance(q, str)]
    if not texts:
        return list(queries), []
    state.limits.check_texts([q for _, q in texts], "queries")
    for i, q in texts:
        check_text_content(q, f"queries[{i}]" if len(queries) > 1 else "query")
    over, _ = over_window(col.encoder, [q for _, q in texts], truncate=truncate, what="queries")
    vectors = state.queries.encode(col.encoder, [q for _, q in texts])
    out = list(queries)
    for (i, _), vec in zip(texts, vectors):
        out[i] = vec
    return out, [texts[j][0] for j in over]


def _knobs(body: SearchKnobs, state: ServerState) -> dict[str, Any]:
    state.limits.check_k(body.k)
    return {
        "where": body.where,
        "exclude": body.exclude,
        "nprobe": body.nprobe,
        "ef_search": body.ef_search,
        "rerank": body.rerank,
        "exact": body.exact,
    }


@router.post("/{name}/search", response_model=SearchResult, summary="Search")
def search(
    name: CollectionName, body: SearchRequest, state: State, version: VersionQuery = None
) -> dict[str, Any]:
    """The ``k`` documents most similar to a text ``query`` or a ``vector``.

    ``where`` filters on metadata before the top-k cut, so ``k`` hits come back whenever
    ``k`` documents match.
    """
    watch = Stopwatch()
    knobs = _knobs(body, state)
    col = state.registry.get(name, version)
    query: Any = body.query if isinstance(body, TextSearch) else body.vector
    (vec,), truncated = embed_queries(state, col, [query], truncate=body.truncate)
    hits = col.search(vec, body.k, **knobs)
    return {
        "hits": [hit_dict(h) for h in hits],
        "took_ms": watch.ms,
        "query_truncated": bool(truncated),
    }


@router.post("/{name}/search/batch", response_model=BatchSearchResult, summary="Batch search")
def batch_search(
    name: CollectionName, body: BatchSearchRequest, state: State, version: VersionQuery = None
) -> dict[str, Any]:
    """Many queries (texts and/or vectors) in one call: one encoder batch, one index call."""
    watch = Stopwatch()
    knobs = _knobs(body, state)
    state.limits.check_count(len(body.queries), "queries")
    col = state.registry.get(name, version)
    vectors, truncated = embed_queries(state, col, list(body.queries), truncate=body.truncate)
    results = col.batch_search(vectors, body.k, **knobs)
    return {
        "results": [{"hits": [hit_dict(h) for h in hits]} for hits in results],
        "took_ms": watch.ms,
        "truncated": truncated,
    }
