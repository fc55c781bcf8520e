"""Request and response bodies (pydantic): the OpenAPI schema at ``/docs`` is built from these.

Request models forbid unknown fields, so a misspelt parameter (``"top_k"`` for ``"k"``) is a
422 rather than silently ignored. The OpenAI-compatible embeddings request is the exception:
it ignores fields it does not use, as OpenAI clients send some (``user``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Body, Path, Query
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from ..validation import MAX_ID_LENGTH, MAX_K

# Bare collection names (embedsearch.validation.validate_name), written without look-ahead
# so that any JSON-Schema tool can use it: no "..", no leading "." or "-".
NAME_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.[A-Za-z0-9_-])*\.?$"

CollectionName = Annotated[
    str,
    Path(
        pattern=NAME_PATTERN,
        min_length=1,
        max_length=128,
        description="A bare collection name: letters, digits, '.', '_' or '-'.",
        examples=["news"],
    ),
]
VersionQuery = Annotated[
    str | None,
    Query(
        max_length=80,
        description="Read a kept past version instead of the newest: its number (negative: "
        "back from the newest, -1 = newest) or a tag. Read-only; see GET "
        "/collections/{name}/versions.",
        examples=["3", "before-cleanup"],
    ),
]
DocId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
Metadata = dict[str, Any]
Vector = Annotated[list[float], Field(min_length=1, max_length=65_536)]


class Request(BaseModel):
    """Base of request bodies: unknown fields are an error, and types are strict (``0`` is
    not a boolean, ``"10"`` not an integer), as the published JSON Schema says."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Response(BaseModel):
    """Base of response bodies."""


# ----------------------------------------------------------------------------- errors
class ErrorDetail(BaseModel):
    type: str = Field(description="The error class, e.g. CollectionNotFoundError.")
    message: str = Field(description="What was wrong and what to do about it.")
    details: list[dict[str, Any]] | None = Field(
        None, description="Per-field problems of a request that failed validation."
    )


class ErrorResponse(BaseModel):
    error: ErrorDetail


# ----------------------------------------------------------------------------- health
class Health(Response):
    status: Literal["ok"] = "ok"


class Ready(Response):
    status: Literal["ready", "loading", "failed"]
    model: str
    detail: str | None = None


# ----------------------------------------------------------------------------- collections
class CreateCollection(Request):
    name: Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=128)]
    model: str | None = Field(
        None, description="Embedding model; one of the server's allowed models (GET /v1/models)."
    )
    index: str = Field(
        "auto",
        min_length=1,
        max_length=200,
        description="'auto' or a FAISS factory string such as 'HNSW32' or 'IVF1024,SQ8'.",
    )


class ModelInfo(Response):
    model_config = ConfigDict(extra="allow")
    name: str
    dim: int
    max_seq_length: int | None = None
    backend: str | None = None
    normalized: bool | None = None


class IndexInfo(Response):
    model_config = ConfigDict(extra="allow")
    spec: str
    resolved: str
    kind: str
    rows: int | None = None
    trained_rows: int | None = None
    nprobe: int | None = None
    ef_search: int | None = None
    recall_at_10: float | None = None
    device: str | None = None


class CollectionInfo(Response):
    model_config = ConfigDict(extra="allow")
    name: str
    count: int
    rows: int
    deleted: int
    segments: int
    model: ModelInfo
    index: IndexInfo
    disk_bytes: int
    created: str
    updated: str
    generation: int


class CollectionSummary(Response):
    """One collection as its manifest describes it (no collection is opened to list it)."""

    name: str
    kind: str = Field(
        "collection", description="collection, sharded, or a helper: vocabulary, evaluation"
    )
    count: int | None = Field(None, description="live documents (null if unreadable)")
    bytes: int = Field(0, description="size on disk, every file included")
    model: str | None = None
    dim: int | None = None
    updated: str | None = None


class CollectionList(Response):
    collections: list[CollectionSummary]


class CollectionDeleted(Response):
    deleted: str


class Reindex(Request):
    index: str = Field(min_length=1, max_length=200)


class CompactResult(Response):
    rows_before: int
    rows_after: int
    bytes_before: int
    bytes_after: int
    bytes_past_versions: int = Field(
        0,
        description="Of bytes_after, the old files kept for past versions until retention "
        "lets them go (PUT /collections/{name}/retention with keep_days 0 frees them now).",
    )
    rows_rewritten: int = Field(
        0,
        description="Live rows copied into new segment files: those of segments that lost "
        "at least min_deleted_share of their rows (and of small ones merged with them); the "
        "other segments keep their files.",
    )
    deleted_kept: int = Field(
        0,
        description="Deleted rows left in kept segments (counted in rows_after), hidden by "
        "tombstones; compact with min_deleted_share=0 to rewrite them away.",
    )
    took_ms: float


# ----------------------------------------------------------------------------- documents
class DocumentIn(Request):
    id: DocId | None = Field(None, description="Generated (uuid4 hex) when omitted.")
    text: str = Field(min_length=1)
    metadata: Metadata | None = None


class UpsertDocumentIn(Request):
    id: DocId
    text: str = Field(min_length=1)
    metadata: Metadata | None = None


class AddDocuments(Request):
    documents: list[DocumentIn] = Field(min_length=1)
    truncate: bool = Field(
        True,
        description="Embed texts longer than the model window from their first tokens "
        "(reported in `truncated`); false answers 422 instead.",
    )


class UpsertDocuments(Request):
    documents: list[UpsertDocumentIn] = Field(min_length=1)
    truncate: bool = True


class WriteResult(Response):
    ids: list[str]
    count: int = Field(description="Documents in the collection after the write.")
    truncated: list[int] = Field(
        description="Positions of texts embedded from their first max_seq_length tokens."
    )
    took_ms: float


class DocumentOut(Response):
    id: str
    text: str
    metadata: Metadata
    vector: list[float] | None = None


class GetDocuments(Request):
    ids: list[DocId] = Field(min_length=1)
    include_vectors: bool = False


class DocumentList(Response):
    documents: list[DocumentOut]


class DeleteDocuments(Request):
    ids: list[DocId] = Field(min_length=1)
    missing_ok: bool = Field(False, description="Ignore unknown ids instead of answering 404.")


class DeleteResult(Response):
    deleted: int
    count: int


class Count(Response):
    count: int


class IdPage(Response):
    ids: list[str]
    total: int
    offset: int
    limit: int


# ----------------------------------------------------------------------------- search
class SearchKnobs(Request):
    k: int = Field(10, ge=1, le=MAX_K, description="Number of results (see the server's max_k).")
    where: Metadata | None = Field(
        None, description='Metadata filter, e.g. {"year": {"$gte": 2010}}.'
    )
    exclude: list[DocId] | None = Field(None, description="Ids never to return.")
    nprobe: int | None = Field(None, ge=1, le=1_000_000)
    ef_search: int | None = Field(None, ge=1, le=1_000_000)
    rerank: int | None = Field(None, ge=1, le=1_000_000)
    exact: bool = False
    truncate: bool = True


class TextSearch(SearchKnobs):
    """Search by a text query."""

    query: str = Field(min_length=1, description="Query text.")


class VectorSearch(SearchKnobs):
    """Search by a vector of the collection's dimension (normalised for you)."""

    vector: Vector


def _search_kind(body: Any) -> str:
    """Which search a body asks for: a ``vector`` field makes it a vector search, anything
    else a text search. Choosing before validating keeps the errors to the one model: as a
    plain union, ``{"query": "x", "k": "one"}`` was answered with four errors, three of them
    about the vector search nobody asked for ("vector: Field required", ...)."""
    if isinstance(body, dict):
        return "VectorSearch" if "vector" in body else "TextSearch"
    return "VectorSearch" if isinstance(body, VectorSearch) else "TextSearch"


#: The search union's tags, which pydantic puts in an error's location; 422 messages drop
#: them (``server/errors.py``), so that a field reads as the client wrote it: ``k``.
SEARCH_TAGS = frozenset({"TextSearch", "VectorSearch"})

SearchRequest = Annotated[
    Annotated[TextSearch, Tag("TextSearch")] | Annotated[VectorSearch, Tag("VectorSearch")],
    Discriminator(_search_kind),
    Body(description="Either `query` (text) or `vector`, plus the search options."),
]


class BatchSearchRequest(SearchKnobs):
    queries: list[Annotated[str, Field(min_length=1)] | Vector] = Field(
        min_length=1, description="Query texts and/or vectors."
    )


class HitOut(Response):
    id: str
    score: float
    text: str
    metadata: Metadata


class SearchResult(Response):
    hits: list[HitOut]
    took_ms: float
    query_truncated: bool = Field(
        False, description="The query was embedded from its first max_seq_length tokens."
    )


class HitList(Response):
    hits: list[HitOut]


class BatchSearchResult(Response):
    results: list[HitList]
    took_ms: float
    truncated: list[int] = Field(description="Positions of queries that were truncated.")


# ----------------------------------------------------------------------------- embeddings
class EmbeddingsRequest(BaseModel):
    """The OpenAI ``POST /v1/embeddings`` body (plus ``truncate``)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text or a list of texts (token arrays are not accepted)."
    )
    model: str | None = Field(None, description="An allowed model (GET /v1/models).")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="Must equal the model's dimension.")
    user: str | None = None
    truncate: bool = True


class Embedding(Response):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(Response):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(Response):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage
    truncated: list[int] = Field(description="Inputs embedded from their first tokens.")


class ModelCard(Response):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "embedsearch"
    dim: int | None = None


class ModelList(Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ----------------------------------------------------------------------------- helpers
def jsonable(obj: Any) -> Any:
    """Plain JSON values from what Collection methods return (dataclasses, numpy, Hits).

    Non-finite floats become ``None``: JSON has no NaN.
    """
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, BaseModel):
        return jsonable(obj.model_dump())
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "to_dict"):
        return jsonable(obj.to_dict())
    return str(obj)


def hit_dict(hit: Any) -> dict[str, Any]:
    """A :class:`embedsearch.Hit` as a JSON object."""
    return {"id": hit.id, "score": float(hit.score), "text": hit.text, "metadata": hit.metadata}
