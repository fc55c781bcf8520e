"""Latent-space routes: expr, most_similar, analogy, interpolate, cluster, outliers.

Each route calls the :class:`~embedsearch.Collection` method of the same name (the
latent-space layer, :mod:`embedsearch.latent`) and is registered only when that method
exists, so the API never advertises an operation it cannot run. Optional parameters are
passed only when the client sends them; one the method does not take is a 422 that says so.
Hits come back as ``hits``; richer results (clusters, interpolation steps) as ``result``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import Field

from ..collection import MAX_K, Collection
from ..errors import InvalidInputError
from ..types import Hit
from .deps import ERRORS, ServerState, State, Stopwatch, call_with_options
from .schemas import CollectionName, HitOut, Metadata, Request, Response, hit_dict, jsonable

Term = Annotated[str, Field(min_length=1)]
K = Annotated[int, Field(ge=1, le=MAX_K)]
METHODS = ("expr", "most_similar", "analogy", "interpolate", "cluster", "outliers")


class LatentResult(Response):
    hits: list[HitOut] | None = Field(
        None, description="Ranked documents, when the answer is hits."
    )
    result: Any = Field(None, description="The method's result, when it is not a list of hits.")
    took_ms: float


class ExprRequest(Request):
    expression: str = Field(
        min_length=1, max_length=10_000, examples=["king - man + woman", '0.5*"royal person"']
    )
    k: K = 10
    where: Metadata | None = None
    exclude_inputs: bool | None = Field(None, description="Leave the input terms out of results.")


class MostSimilarRequest(Request):
    positive: list[Term] = Field(default_factory=list, max_length=256)
    negative: list[Term] = Field(default_factory=list, max_length=256)
    k: K = 10
    weights: list[float] | None = None
    method: Literal["3cosadd", "3cosmul"] = Field(
        "3cosadd", description="3CosAdd (gensim most_similar) or 3CosMul (most_similar_cosmul)."
    )


class AnalogyRequest(Request):
    a: Term
    b: Term
    c: Term
    k: K = 10


class InterpolateRequest(Request):
    x: Term
    y: Term
    steps: int = Field(7, ge=2, le=100)
    method: Literal["slerp", "lerp"] = "slerp"
    k: K | None = Field(None, description="Nearest documents per step.")


class ClusterRequest(Request):
    k: int | None = Field(None, ge=2, le=10_000, description="Clusters; chosen when omitted.")
    seed: int | None = None
    persist: bool | None = Field(
        None, description="Store each document's cluster id as metadata (a write)."
    )


class OutliersRequest(Request):
    n: K = 20


def _answer(result: Any, watch: Stopwatch) -> dict[str, Any]:
    if isinstance(result, list) and all(isinstance(h, Hit) for h in result):
        return {"hits": [hit_dict(h) for h in result], "result": None, "took_ms": watch.ms}
    return {"hits": None, "result": jsonable(result), "took_ms": watch.ms}


def _col(state: ServerState, name: str) -> Collection:
    return state.registry.get(name)


def _texts(state: ServerState, *texts: str) -> None:
    state.limits.check_texts(list(texts), "terms")


def _expr(name: CollectionName, body: ExprRequest, state: State) -> dict[str, Any]:
    """Vector arithmetic over texts: ``king - man + woman``, weights, quoted phrases."""
    watch = Stopwatch()
    state.limits.check_k(body.k)
    col = _col(state, name)
    return _answer(
        call_with_options(
            col.expr,
            body.expression,
            k=body.k,
            where=body.where,
            exclude_inputs=body.exclude_inputs,
        ),
        watch,
    )


def _most_similar(name: CollectionName, body: MostSimilarRequest, state: State) -> dict[str, Any]:
    """gensim-style ``most_similar`` (3CosAdd) or ``most_similar_cosmul`` (3CosMul)."""
    watch = Stopwatch()
    state.limits.check_k(body.k)
    _texts(state, *body.positive, *body.negative)
    col = _col(state, name)
    if body.method == "3cosmul":
        if not hasattr(col, "most_similar_cosmul"):
            raise InvalidInputError("3cosmul is not available on this server; use 3cosadd.")
        result = call_with_options(
            col.most_similar_cosmul, positive=body.positive, negative=body.negative, k=body.k
        )
    else:
        result = call_with_options(
            col.most_similar,
            positive=body.positive,
            negative=body.negative,
            k=body.k,
            weights=body.weights,
        )
    return _answer(result, watch)


def _analogy(name: CollectionName, body: AnalogyRequest, state: State) -> dict[str, Any]:
    """``a`` is to ``b`` as ``c`` is to ... ?"""
    watch = Stopwatch()
    state.limits.check_k(body.k)
    _texts(state, body.a, body.b, body.c)
    return _answer(
        call_with_options(_col(state, name).analogy, body.a, body.b, body.c, k=body.k), watch
    )


def _interpolate(name: CollectionName, body: InterpolateRequest, state: State) -> dict[str, Any]:
    """Walk from ``x`` to ``y`` (slerp or lerp); each step's point and nearest documents."""
    watch = Stopwatch()
    if body.k is not None:
        state.limits.check_k(body.k)
    _texts(state, body.x, body.y)
    col = _col(state, name)
    return _answer(
        call_with_options(
            col.interpolate, body.x, body.y, steps=body.steps, method=body.method, k=body.k
        ),
        watch,
    )


def _cluster(name: CollectionName, body: ClusterRequest, state: State) -> dict[str, Any]:
    """Spherical k-means: size, members, medoid and keyword label of each cluster."""
    watch = Stopwatch()
    opts = {"k": body.k, "seed": body.seed, "persist": body.persist}
    if body.persist:
        result = state.registry.write(name, lambda c: call_with_options(c.cluster, **opts))
    else:
        result = call_with_options(_col(state, name).cluster, **opts)
    return _answer(result, watch)


def _outliers(name: CollectionName, body: OutliersRequest, state: State) -> dict[str, Any]:
    """The documents farthest from their neighbours, with their score."""
    watch = Stopwatch()
    state.limits.check_k(body.n, "n")
    return _answer(call_with_options(_col(state, name).outliers, n=body.n), watch)


_ROUTES: dict[str, tuple[Callable[..., Any], str]] = {
    "expr": (_expr, "Vector arithmetic"),
    "most_similar": (_most_similar, "Most similar (positive/negative)"),
    "analogy": (_analogy, "Analogy"),
    "interpolate": (_interpolate, "Interpolate"),
    "cluster": (_cluster, "Cluster"),
    "outliers": (_outliers, "Outliers"),
}


def available() -> list[str]:
    """The latent methods the Collection class has now."""
    return [m for m in METHODS if callable(getattr(Collection, m, None))]


def build_router() -> APIRouter:
    """A router with a route for each latent method that exists."""
    r = APIRouter(prefix="/collections", tags=["latent"], responses=ERRORS)
    for method in available():
        endpoint, summary = _ROUTES[method]
        r.add_api_route(
            f"/{{name}}/{method}",
            endpoint,
            methods=["POST"],
            response_model=LatentResult,
            summary=summary,
            name=method,
        )
    return r
