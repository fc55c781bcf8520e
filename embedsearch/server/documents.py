"""Documents: add and upsert in batches, get, delete, count, list ids.

Every write is all or nothing, as in Python: a request whose 100th document is invalid
adds none of them. Texts over the model window are embedded from their first tokens and
reported in ``truncated`` (or refused with 422 when ``truncate`` is false); the stored text
is always the whole text.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from .deps import ERRORS, State, Stopwatch
from .limits import over_window
from .schemas import (
    AddDocuments,
    CollectionName,
    Count,
    DeleteDocuments,
    DeleteResult,
    DocumentList,
    DocumentOut,
    GetDocuments,
    IdPage,
    UpsertDocuments,
    VersionQuery,
    WriteResult,
)

router = APIRouter(prefix="/collections", tags=["documents"], responses=ERRORS)

DocIdPath = Annotated[
    str, Path(min_length=1, max_length=512, description="Document id (may contain '/').")
]


def _doc(d: Any) -> dict[str, Any]:
    out = {"id": d.id, "text": d.text, "metadata": d.metadata or {}}
    if d.vector is not None:
        out["vector"] = d.vector.tolist()
    return out


def _write(state: State, name: str, body: Any, *, upsert: bool) -> dict[str, Any]:
    watch = Stopwatch()
    docs = body.documents
    texts = [d.text for d in docs]
    state.limits.check_texts(texts, "documents")
    col = state.registry.get(name)  # 404 before any work
    truncated, _ = over_window(col.encoder, texts, truncate=body.truncate, what="documents")
    given = [d.id for d in docs]
    ids = None if all(i is None for i in given) else [i or uuid.uuid4().hex for i in given]
    metas = [d.metadata for d in docs]
    metadata = None if all(m is None for m in metas) else metas
    if upsert:
        out = state.registry.write(
            name, lambda c: c.upsert(texts, ids=ids, metadata=metadata, progress=False)
        )
    else:
        out = state.registry.write(
            name, lambda c: c.add(texts, ids=ids, metadata=metadata, progress=False)
        )
    return {
        "ids": out,
        "count": len(state.registry.get(name)),
        "truncated": truncated,
        "took_ms": watch.ms,
    }


@router.post(
    "/{name}/documents", response_model=WriteResult, status_code=201, summary="Add documents"
)
def add_documents(name: CollectionName, body: AddDocuments, state: State) -> dict[str, Any]:
    """Embed and store new documents (all or nothing). An id that exists is 409; use PUT."""
    return _write(state, name, body, upsert=False)


@router.put("/{name}/documents", response_model=WriteResult, summary="Upsert documents")
def upsert_documents(name: CollectionName, body: UpsertDocuments, state: State) -> dict[str, Any]:
    """Insert or replace documents by id. Unchanged texts keep their vectors (cheap
    metadata updates)."""
    return _write(state, name, body, upsert=True)


@router.post("/{name}/get", response_model=DocumentList, summary="Get documents")
def get_documents(
    name: CollectionName, body: GetDocuments, state: State, version: VersionQuery = None
) -> dict[str, Any]:
    """Stored documents by id, in the order asked; 404 lists unknown ids."""
    state.limits.check_texts(body.ids, "ids")
    docs = state.registry.get(name, version).get(body.ids, include_vectors=body.include_vectors)
    return {"documents": [_doc(d) for d in docs]}


@router.get("/{name}/documents/{doc_id:path}", response_model=DocumentOut, summary="Get a document")
def get_document(
    name: CollectionName,
    doc_id: DocIdPath,
    state: State,
    include_vector: Annotated[bool, Query(description="Also return the stored vector.")] = False,
    version: VersionQuery = None,
) -> dict[str, Any]:
    """One stored document by id."""
    (doc,) = state.registry.get(name, version).get([doc_id], include_vectors=include_vector)
    return _doc(doc)


@router.post("/{name}/delete", response_model=DeleteResult, summary="Delete documents")
def delete_documents(name: CollectionName, body: DeleteDocuments, state: State) -> dict[str, Any]:
    """Delete documents by id (all or nothing: an unknown id deletes none, unless
    ``missing_ok``)."""
    state.limits.check_texts(body.ids, "ids")
    n = state.registry.write(name, lambda c: c.delete(body.ids, missing_ok=body.missing_ok))
    return {"deleted": n, "count": len(state.registry.get(name))}


@router.delete(
    "/{name}/documents/{doc_id:path}", response_model=DeleteResult, summary="Delete a document"
)
def delete_document(name: CollectionName, doc_id: DocIdPath, state: State) -> dict[str, Any]:
    """Delete one document by id (404 if unknown)."""
    n = state.registry.write(name, lambda c: c.delete([doc_id]))
    return {"deleted": n, "count": len(state.registry.get(name))}


@router.get("/{name}/count", response_model=Count, summary="Count documents")
def count(name: CollectionName, state: State, version: VersionQuery = None) -> dict[str, Any]:
    """Live documents in the collection."""
    return {"count": len(state.registry.get(name, version))}


@router.get("/{name}/ids", response_model=IdPage, summary="List document ids")
def list_ids(
    name: CollectionName,
    state: State,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    version: VersionQuery = None,
) -> dict[str, Any]:
    """Ids of live documents in storage order, a page at a time."""
    ids = state.registry.get(name, version).ids()
    return {
        "ids": ids[offset : offset + limit],
        "total": len(ids),
        "offset": offset,
        "limit": limit,
    }
