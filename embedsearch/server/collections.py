"""Collections: list, create (model, index spec), info, delete, compact, reindex."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query

from ..base import COMPACT_MIN_DELETED_SHARE
from .deps import ERRORS, State, Stopwatch
from .schemas import (
    CollectionDeleted,
    CollectionInfo,
    CollectionList,
    CollectionName,
    CollectionSummary,
    CompactResult,
    CreateCollection,
    Reindex,
    VersionQuery,
)

if TYPE_CHECKING:
    from ..base import CollectionBase

router = APIRouter(prefix="/collections", tags=["collections"], responses=ERRORS)


def public_info(col: CollectionBase) -> dict[str, Any]:
    """``Collection.info()`` without the server-side path."""
    info = dict(col.info())
    info.pop("path", None)
    return info


@router.get("", response_model=CollectionList, summary="List collections")
def list_collections(state: State) -> dict[str, Any]:
    """The collections in the server's home directory: name, kind, documents, size on disk,
    model, dimension, last update; helper collections (vocabularies, evaluation builds)
    are listed with their ``kind``."""
    from ..catalog import list_collections as summaries

    served = set(state.registry.names())
    return {
        "collections": [
            CollectionSummary(**{k: v for k, v in s.to_dict().items() if k != "path"})
            for s in summaries(state.registry.home, helpers=True)
            if s.name in served
        ]
    }


@router.post("", response_model=CollectionInfo, status_code=201, summary="Create a collection")
def create_collection(body: CreateCollection, state: State) -> dict[str, Any]:
    """Create an empty collection with a model (allowed ones: GET /v1/models) and an index
    spec (``auto``, or a FAISS factory string). 409 if the name is taken."""
    col = state.registry.create(body.name, model=body.model, index=body.index)
    return public_info(col)


@router.get("/{name}", response_model=CollectionInfo, summary="Collection info")
def collection_info(
    name: CollectionName, state: State, version: VersionQuery = None
) -> dict[str, Any]:
    """Counts, model, index kind and measured recall, size on disk."""
    return public_info(state.registry.get(name, version))


@router.delete("/{name}", response_model=CollectionDeleted, summary="Delete a collection")
def delete_collection(name: CollectionName, state: State) -> dict[str, Any]:
    """Delete the collection and all its files. There is no undo."""
    state.registry.drop(name)
    return {"deleted": name}


@router.post("/{name}/compact", response_model=CompactResult, summary="Compact")
def compact(
    name: CollectionName,
    state: State,
    min_deleted_share: Annotated[
        float,
        Query(
            ge=0,
            le=1,
            description="Rewrite a large segment only when at least this share of its rows "
            "is deleted; below it the deletes stay hidden by tombstones. 0 rewrites every "
            "segment that lost a row.",
        ),
    ] = COMPACT_MIN_DELETED_SHARE,
) -> dict[str, Any]:
    """Reclaim deleted rows: rewrite the segments that lost at least min_deleted_share of
    their rows (and merge small ones), and renumber the index (searches go on)."""
    watch = Stopwatch()
    result = state.registry.write(name, lambda col: col.compact(min_deleted_share))
    return {**result, "took_ms": watch.ms}


@router.post("/{name}/reindex", response_model=CollectionInfo, summary="Change the index")
def reindex(name: CollectionName, body: Reindex, state: State) -> dict[str, Any]:
    """Rebuild the index with another spec from the stored vectors (no re-encoding)."""
    state.registry.write(name, lambda col: col.reindex(body.index))
    return public_info(state.registry.get(name))
