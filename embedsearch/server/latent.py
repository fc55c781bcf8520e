"""Latent-space routes: expr, most_similar, analogy, interpolate, cluster, outliers.

Each route calls the :class:`~embedsearch.Collection` method of the same name
(:mod:`embedsearch.latent`) and is registered only when that method exists, so the API never
advertises an operation it cannot run. Optional parameters reach the method only when the
client sends them (the method's own defaults apply otherwise).

A *term* is a text, the id of a stored document, or a vector, as in Python.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import Field

from ..collection import Collection
from ..errors import InvalidInputError, ReadOnlyError
from ..validation import MAX_K
from .deps import ERRORS, ServerState, State, Stopwatch, call_with_options
from .schemas import (
    CollectionName,
    HitOut,
    Metadata,
    Request,
    Response,
    Vector,
    VersionQuery,
    hit_dict,
    jsonable,
)

Term = Annotated[str, Field(min_length=1, max_length=100_000)] | Vector
K = Annotated[int, Field(ge=1, le=MAX_K)]
METHODS = (
    "expr", "most_similar", "analogy", "interpolate", "cluster", "outliers", "topics", "along",
)  # fmt: skip


# ----------------------------------------------------------------------------- bodies
class ExprRequest(Request):
    expression: str = Field(
        min_length=1,
        max_length=10_000,
        examples=["king - man + woman", '0.5*"royal person" + crown'],
        description="+, -, scalar weights, quoted phrases, parentheses, @id for a document.",
    )
    k: K = 10
    exclude_inputs: bool | None = Field(None, description="Leave input terms out (default).")
    where: Metadata | None = None


class MostSimilarRequest(Request):
    positive: list[Term] = Field(min_length=1, max_length=256)
    negative: list[Term] = Field(default_factory=list, max_length=256)
    k: K = 10
    weights: list[float] | None = Field(
        None, description="One per positive term, then one per negative term (3cosadd only)."
    )
    method: Literal["3cosadd", "3cosmul"] = Field(
        "3cosadd", description="3CosAdd (gensim most_similar) or 3CosMul (most_similar_cosmul)."
    )
    exclude_inputs: bool | None = None
    where: Metadata | None = None


class AnalogyRequest(Request):
    a: Term
    b: Term
    c: Term
    k: K = 10
    method: Literal["add", "mul"] | None = Field(None, description="3CosAdd (add) or 3CosMul.")
    exclude_inputs: bool | None = None
    where: Metadata | None = None


class InterpolateRequest(Request):
    x: Term
    y: Term
    steps: int = Field(7, ge=2, le=1000)
    method: Literal["slerp", "lerp"] | None = None
    k: K | None = Field(None, description="Nearest documents per step (default 3).")
    exclude_inputs: bool | None = None
    where: Metadata | None = None
    include_vectors: bool = Field(False, description="Also return each step's unit vector.")


class ClusterRequest(Request):
    k: int | None = Field(None, ge=1, le=10_000, description="Clusters; chosen when omitted.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    k_range: list[Annotated[int, Field(ge=1, le=10_000)]] | None = Field(
        None, min_length=2, max_length=2, description="[k_min, k_max] tried for automatic k."
    )
    persist: bool | None = Field(
        None, description="Store each document's cluster number as metadata (a write)."
    )
    field: str | None = Field(None, min_length=1, max_length=128, description="Metadata field.")
    where: Metadata | None = None
    n_keywords: int | None = Field(None, ge=1, le=100)
    include_ids: bool = Field(False, description="List each cluster's member ids.")


class OutliersRequest(Request):
    n: K = 20
    method: Literal["auto", "atypical", "neighbors"] = Field(
        "auto",
        description="atypical: distance beyond the nearest 2% of a sample (finds off-topic "
        "groups); neighbors: distance to the neighbors-th nearest; auto: neighbors if given "
        "or under 1,000 documents, else atypical.",
    )
    neighbors: int | None = Field(None, ge=1, le=1000, description="Score = distance to it.")
    where: Metadata | None = None


class TopicsRequest(Request):
    level: int | None = Field(None, ge=-64, le=63, description="One level (0 top, -1 finest).")
    top: int | None = Field(
        None, ge=1, le=10_000, description="Topics at level 0; chosen if omitted."
    )
    leaves: int | None = Field(None, ge=2, le=10_000, description="Topics at the finest level.")
    levels: int | None = Field(None, ge=1, le=64, description="Number of levels (default 3).")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    where: Metadata | None = None
    n_keywords: int | None = Field(None, ge=0, le=100)
    n_medoids: int | None = Field(None, ge=0, le=100)
    include_ids: bool = Field(False, description="Return ids and each level's assignments.")


class AlongRequest(Request):
    positive: list[Term] = Field(min_length=1, max_length=256, description="Examples of one end.")
    negative: list[Term] = Field(min_length=1, max_length=256, description="Examples of the other.")
    k: K = 10
    end: Literal["positive", "negative"] = "positive"
    refine: int | None = Field(None, ge=0, le=10, description="Refinement rounds (0: none).")
    where: Metadata | None = None
    include_vector: bool = Field(False, description="Return the unit axis too.")


# ----------------------------------------------------------------------------- answers
class Hits(Response):
    hits: list[HitOut]
    took_ms: float


class Step(Response):
    t: float
    hits: list[HitOut]
    vector: list[float] | None = None


class Interpolation(Response):
    steps: list[Step]
    took_ms: float


class ClusterOut(Response):
    id: int
    size: int
    label: str
    keywords: list[str]
    medoid_id: str
    medoid_text: str
    cohesion: float | None = None
    ids: list[str] | None = None


class ClusteringOut(Response):
    k: int
    seed: int
    criterion: str
    silhouette: float | None = None
    scores: dict[str, float | None] = Field(default_factory=dict)
    documents: int
    persisted_field: str | None = None
    clusters: list[ClusterOut]
    took_ms: float


class TopicOut(Response):
    id: int
    level: int
    parent: int | None = None
    children: list[int]
    size: int
    label: str
    keywords: list[str]
    medoids: list[dict[str, str]]
    cohesion: float


class TopicLevelOut(Response):
    level: int
    k: int
    topics: list[TopicOut]


class TopicsOut(Response):
    documents: int
    criterion: str
    scores: dict[str, float] = Field(default_factory=dict)
    seed: int
    levels: list[TopicLevelOut]
    outliers: list[str]
    ids: list[str] | None = None
    assignments: list[list[int]] | None = None
    took_ms: float


class AlongOut(Response):
    hits: list[HitOut]
    vector: list[float] | None = None
    took_ms: float


# ----------------------------------------------------------------------------- handlers
def _terms(state: ServerState, *terms: Any) -> None:
    state.limits.check_texts([t for t in terms if isinstance(t, str)], "terms")


def _hits(hits: list[Any], watch: Stopwatch) -> dict[str, Any]:
    return {"hits": [hit_dict(h) for h in hits], "took_ms": watch.ms}


def expr(
    name: CollectionName, body: ExprRequest, state: State, version: VersionQuery = None
) -> dict[str, Any]:
    """Search with vector arithmetic over texts: ``king - man + woman``."""
    watch = Stopwatch()
    state.limits.check_k(body.k)
    col = state.registry.get(name, version)
    hits = call_with_options(
        col.expr, body.expression, k=body.k, exclude_inputs=body.exclude_inputs, where=body.where
    )
    return _hits(hits, watch)


def most_similar(
    name: CollectionName, body: MostSimilarRequest, state: State, version: VersionQuery = None
) -> dict[str, Any]:
    """Documents nearest ``sum(positive) - sum(negative)`` (3CosAdd), or 3CosMul."""
    watch = Stopwatch()
    state.limits.check_k(body.k)
    _terms(state, *body.positive, *body.negative)
    col = state.registry.get(name, version)
    common = {"k": body.k, "exclude_inputs": body.exclude_inputs, "where": body.where}
    if body.method == "3cosmul":
        if body.weights is not None:
            raise InvalidInputError("weights apply to 3cosadd only; remove them for 3cosmul.")
        fn = col.most_similar_cosmul
        hits = call_with_options(fn, positive=body.positive, negative=body.negative, **common)
    else:
        fn = col.most_similar
        hits = call_with_options(
            fn, positive=body.positive, negative=body.negative, weights=body.weights, **common
        )
    return _hits(hits, watch)


def analogy(
    name: CollectionName, body: AnalogyRequest, state: State, version: VersionQuery = None
) -> dict[str, Any]:
    """``a`` is to ``b`` as ``c`` is to ...? (inputs excluded)."""
    watch = Stopwatch()
    state.limits.check_k(body.k)
    _terms(state, body.a, body.b, body.c)
    col = state.registry.get(name, version)
    hits = call_with_options(
        col.analogy,
        body.a,
        body.b,
        body.c,
        k=body.k,
        method=body.method,
        exclude_inputs=body.exclude_inputs,
        where=body.where,
    )
    return _hits(hits, watch)


def interpolate(
    name: CollectionName, body: InterpolateRequest, state: State, version: VersionQuery = None
) -> dict[str, Any]:
    """Walk from ``x`` to ``y`` (slerp or lerp): each step's nearest documents."""
    watch = Stopwatch()
    if body.k is not None:
        state.limits.check_k(body.k)
    _terms(state, body.x, body.y)
    col = state.registry.get(name, version)
    steps = call_with_options(
        col.interpolate,
        body.x,
        body.y,
        steps=body.steps,
        method=body.method,
        k=body.k,
        exclude_inputs=body.exclude_inputs,
        where=body.where,
    )
    out = []
    for step in steps:
        item: dict[str, Any] = {"t": float(step.t), "hits": [hit_dict(h) for h in step.hits]}
        if body.include_vectors:
            item["vector"] = [float(x) for x in step.vector]
        out.append(item)
    return {"steps": out, "took_ms": watch.ms}


def cluster(
    name: CollectionName, body: ClusterRequest, state: State, version: VersionQuery = None
) -> dict[str, Any]:
    """Spherical k-means: size, medoid, keyword label (and members) of each cluster."""
    watch = Stopwatch()
    opts = {
        "seed": body.seed,
        "k_range": tuple(body.k_range) if body.k_range else None,
        "persist": body.persist,
        "field": body.field,
        "where": body.where,
        "n_keywords": body.n_keywords,
    }

    def run(col: Collection) -> Any:
        return call_with_options(col.cluster, body.k, **opts)

    if body.persist and version is not None:
        raise ReadOnlyError(
            f"version={version} is a read-only view of the past: persist=true would write "
            "into it. Drop version (cluster the newest version) or persist=false."
        )
    result = (
        state.registry.write(name, run) if body.persist else run(state.registry.get(name, version))
    )
    out = result.to_dict(include_ids=body.include_ids) if hasattr(result, "to_dict") else result
    return {**jsonable(out), "took_ms": watch.ms}


def outliers(
    name: CollectionName, body: OutliersRequest, state: State, version: VersionQuery = None
) -> dict[str, Any]:
    """The documents that least belong; ``score`` is the outlier score of ``method``
    (higher = more of an outlier; see ``Collection.outliers``)."""
    watch = Stopwatch()
    state.limits.check_k(body.n, "n")
    col = state.registry.get(name, version)
    hits = call_with_options(
        col.outliers, body.n, method=body.method, neighbors=body.neighbors, where=body.where
    )
    return _hits(hits, watch)


def topics(name: CollectionName, body: TopicsRequest, state: State) -> dict[str, Any]:
    """Topic hierarchy: level 0 the top, deeper levels finer; every document assigned at
    every level; outliers listed apart (still assigned)."""
    watch = Stopwatch()
    col = state.registry.get(name)
    opts = {
        "level": body.level,
        "top": body.top,
        "leaves": body.leaves,
        "levels": body.levels,
        "seed": body.seed,
        "where": body.where,
        "n_keywords": body.n_keywords,
        "n_medoids": body.n_medoids,
    }
    result = call_with_options(col.topics, **opts)
    return {**jsonable(result.to_dict(include_ids=body.include_ids)), "took_ms": watch.ms}


def along(name: CollectionName, body: AlongRequest, state: State) -> dict[str, Any]:
    """Documents ranked by position on the axis from the negative toward the positive
    examples; ``score`` is that position (cosine with the unit axis)."""
    watch = Stopwatch()
    _terms(state, *body.positive, *body.negative)
    col = state.registry.get(name)
    axis = call_with_options(col.direction, body.positive, body.negative, refine=body.refine)
    hits = col.along(axis, body.k, end=body.end, where=body.where)
    out: dict[str, Any] = {"hits": [hit_dict(h) for h in hits], "took_ms": watch.ms}
    if body.include_vector:
        out["vector"] = [float(x) for x in axis]
    return out


_ROUTES: dict[str, tuple[Callable[..., Any], type[Response], str]] = {
    "expr": (expr, Hits, "Vector arithmetic"),
    "most_similar": (most_similar, Hits, "Most similar (positive/negative)"),
    "analogy": (analogy, Hits, "Analogy"),
    "interpolate": (interpolate, Interpolation, "Interpolate"),
    "cluster": (cluster, ClusteringOut, "Cluster"),
    "outliers": (outliers, Hits, "Outliers"),
    "topics": (topics, TopicsOut, "Topic hierarchy"),
    "along": (along, AlongOut, "Rank along a direction"),
}


def available() -> list[str]:
    """The latent methods the Collection class has now."""
    return [m for m in METHODS if callable(getattr(Collection, m, None))]


def build_router() -> APIRouter:
    """A router with a route for each latent method that exists."""
    router = APIRouter(prefix="/collections", tags=["latent"], responses=ERRORS)
    for method in available():
        endpoint, model, summary = _ROUTES[method]
        router.add_api_route(
            f"/{{name}}/{method}",
            endpoint,
            methods=["POST"],
            response_model=model,
            summary=summary,
            name=method,
        )
    return router
