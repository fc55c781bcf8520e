"""History over HTTP: versions, tags, retention, restore (and snapshots, diffs).

Read routes elsewhere take ``?version=`` (a number, a negative offset or a tag) to answer
from a read-only view of a kept past version; these routes manage the history itself.
Writes (tag, untag, retention, restore) go through the registry's writer like every write.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Request as HttpRequest
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import Field
from starlette.background import BackgroundTask

from .deps import ERRORS, State, Stopwatch
from .schemas import CollectionName, Request, Response, VersionQuery

router = APIRouter(prefix="/collections", tags=["versions"], responses=ERRORS)

VersionRef = Annotated[
    int | Annotated[str, Field(min_length=1, max_length=64)],
    Field(description="A version number (negative: back from the newest) or a tag."),
]


class VersionOut(Response):
    version: int = Field(description="Commit number (grows by one per commit).")
    time: str = Field(description="Commit time, ISO 8601 UTC.")
    op: str = Field(description="Operation that made it: add, upsert, delete, compact, ...")
    added: int = Field(description="Rows written by that operation.")
    deleted: int = Field(description="Rows it deleted (a replacing upsert counts one of each).")
    rows: int = Field(description="Live rows in this version.")
    tags: list[str]
    current: bool = Field(description="Whether this is the newest version.")


class VersionList(Response):
    versions: list[VersionOut]
    keep_days: float = Field(description="Untagged versions are kept this many days.")
    tags: dict[str, int]


class TagRequest(Request):
    tag: str = Field(min_length=1, max_length=64, examples=["before-cleanup"])
    version: VersionRef | None = Field(default=None, description="Default: the newest version.")


class TagResult(Response):
    tag: str
    version: int


class RetentionRequest(Request):
    keep_days: float = Field(
        ge=0, le=36_500, description="Days to keep untagged versions (0: only the newest)."
    )


class RestoreRequest(Request):
    version: VersionRef


class RestoreResult(Response):
    restored: int = Field(description="The version whose state was restored.")
    version: int = Field(description="The new version (a commit holding that state).")
    count: int
    took_ms: float


def _listing(col: Any) -> dict[str, Any]:
    return {
        "versions": [v.to_dict() for v in col.versions()],
        "keep_days": col.keep_days,
        "tags": col.tags(),
    }


@router.get("/{name}/versions", response_model=VersionList, summary="List versions")
def list_versions(name: CollectionName, state: State) -> dict[str, Any]:
    """The kept versions, oldest first, with their operations, counts and tags. Read any of
    them with ``?version=`` on the read routes (search, documents, retrieve, latent)."""
    return _listing(state.registry.get(name))


@router.post("/{name}/tags", response_model=TagResult, status_code=201, summary="Tag a version")
def tag(name: CollectionName, body: TagRequest, state: State) -> dict[str, Any]:
    """Name a version (default: the newest); tagged versions are kept until untagged.
    409 if the tag already names another version."""
    n = state.registry.write(name, lambda col: col.tag(body.tag, body.version))
    return {"tag": body.tag, "version": n}


@router.delete("/{name}/tags/{tag}", response_model=VersionList, summary="Remove a tag")
def untag(name: CollectionName, tag: str, state: State) -> dict[str, Any]:
    """Remove a tag; the version then follows the retention rule."""
    state.registry.write(name, lambda col: col.untag(tag))
    return _listing(state.registry.get(name))


@router.put("/{name}/retention", response_model=VersionList, summary="Set retention")
def retention(name: CollectionName, body: RetentionRequest, state: State) -> dict[str, Any]:
    """Keep untagged versions ``keep_days`` days; files no kept version needs are freed."""
    state.registry.write(name, lambda col: col.set_retention(body.keep_days))
    return _listing(state.registry.get(name))


@router.post("/{name}/restore", response_model=RestoreResult, summary="Restore a version")
def restore(name: CollectionName, body: RestoreRequest, state: State) -> dict[str, Any]:
    """Make a kept version's state the newest, as a new commit (the history in between
    stays: a restore can itself be undone)."""
    watch = Stopwatch()

    def run(col: Any) -> tuple[int, int]:
        return col.restore(body.version), len(col)

    new, count = state.registry.write(name, run)
    restored = body.version
    return {
        "restored": restored if isinstance(restored, int) else -1,
        "version": new,
        "count": count,
        "took_ms": watch.ms,
    }


# ----------------------------------------------------------------------------- diff
class TopicChangeOut(Response):
    topic: int
    change: str = Field(description="appeared, vanished, grew, shrank or steady.")
    label: str
    keywords: list[str]
    size_a: int
    size_b: int
    share_a: float
    share_b: float
    added: int = Field(description="Documents of the newer version in it that are new.")
    examples: list[str]


class ProbeChangeOut(Response):
    query: str
    overlap: float = Field(description="overlap@k of the two versions' top-k.")
    changed: bool
    entered: list[str]
    left: list[str]
    top_a: list[str]
    top_b: list[str]


class DiffOut(Response):
    from_: int = Field(alias="from", serialization_alias="from")
    to: int
    count_from: int
    count_to: int
    added: int
    removed: int
    changed: int
    added_ids: list[str]
    removed_ids: list[str]
    changed_ids: list[str]
    changed_text_ids: list[str]
    changed_metadata_ids: list[str]
    ids_truncated: bool = Field(description="Id lists hold at most max_ids entries each.")
    centroid_cosine: float
    centroid_shift: float = Field(description="1 - cosine of the two versions' centroids.")
    centroid_toward: list[str] = Field(description="New texts most along the shift.")
    topics: list[TopicChangeOut]
    probes: list[ProbeChangeOut]
    k: int
    seconds: float
    notes: list[str]


@router.get("/{name}/diff", response_model=DiffOut, response_model_by_alias=True, summary="Diff")
def diff(
    name: CollectionName,
    state: State,
    from_: Annotated[str, Query(alias="from", max_length=80, description="Older version or tag.")],
    to: Annotated[
        str | None, Query(max_length=80, description="Newer version or tag (default: newest).")
    ] = None,
    probe: Annotated[
        list[str] | None, Query(description="Probe queries whose top-k is compared (repeat).")
    ] = None,
    k: Annotated[int, Query(ge=1, le=1000)] = 10,
    clusters: Annotated[int | None, Query(ge=1, le=200)] = None,
    max_ids: Annotated[int, Query(ge=0, le=100_000)] = 1000,
) -> dict[str, Any]:
    """What changed from one version to another: ids added/removed/changed, topics that
    appeared, vanished, grew or shrank (labels and sizes), the centroid shift, and for each
    ``probe`` query the overlap@k of the two versions' results."""
    col = state.registry.get(name)
    probes = probe or []
    if probes:
        state.limits.check_count(len(probes), "probe")
        state.limits.check_texts(probes, "probe")
    result = col.diff(_ref(from_), None if to is None else _ref(to), probes=probes, k=k,
                      clusters=clusters)  # fmt: skip
    return result.to_dict(max_ids=max_ids)


def _ref(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


# ----------------------------------------------------------------------------- snapshots
class SnapshotRestored(Response):
    name: str
    version: int
    files: int
    bytes: int
    took_ms: float


@router.get(
    "/{name}/snapshot",
    summary="Download a snapshot",
    response_class=FileResponse,
    responses={200: {"content": {"application/x-tar": {}}, "description": "The tar archive."}},
)
def snapshot(name: CollectionName, state: State, version: VersionQuery = None) -> FileResponse:
    """A consistent, checksummed, self-contained tar of the newest (or a kept) version,
    written while writers and searches go on. Restore it with POST
    /collections/{name}/snapshot/restore or `embedsearch restore-snapshot`."""
    col = state.registry.get(name)
    ref = None if version is None else _ref(version)
    tmpdir = state.registry.home / ".snapshots"
    tmpdir.mkdir(exist_ok=True)
    out = tmpdir / f"{uuid.uuid4().hex}.tar"
    try:
        info = col.snapshot(out, ref)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return FileResponse(
        out,
        media_type="application/x-tar",
        filename=f"{name}-v{info.version}.tar",
        background=BackgroundTask(out.unlink, missing_ok=True),
    )


@router.post(
    "/{name}/snapshot/restore",
    response_model=SnapshotRestored,
    status_code=201,
    summary="Restore a snapshot as a new collection",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def restore_snapshot(name: CollectionName, request: HttpRequest, state: State) -> Any:
    """Send a snapshot tar as the body; it becomes the new collection ``name`` (409 if the
    name is taken). Every member and checksum is verified before the collection appears; a
    damaged or hostile archive is refused (422) and nothing is left behind."""
    from ..snapshot import restore_snapshot as restore

    watch = Stopwatch()
    target = state.registry.path(name)
    tmpdir = state.registry.home / ".snapshots"
    tmpdir.mkdir(exist_ok=True)
    upload = tmpdir / f"{uuid.uuid4().hex}.upload.tar"
    try:
        with open(upload, "wb") as fh:
            async for chunk in request.stream():
                fh.write(chunk)
        info = await run_in_threadpool(restore, upload, target)
    finally:
        upload.unlink(missing_ok=True)
    return {
        "name": name,
        "version": info.version,
        "files": info.files,
        "bytes": info.bytes,
        "took_ms": watch.ms,
    }
