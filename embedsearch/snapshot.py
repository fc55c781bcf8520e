"""Snapshots: one committed version of a collection as a self-contained, checksummed tar.

Layout of an archive (plain POSIX tar, members in this order)::

    embedsearch-snapshot.json   format, collection, version, time, {file: sha256, bytes}
    manifest.json               the version's manifest, exactly as committed (checksummed)
    segments/...  index-...     every file that manifest names, nothing else

**Writing** (:func:`write_snapshot`) needs no lock: every file a committed manifest names is
immutable, so the archive holds exactly one version even while a writer commits and a server
searches. All files are opened before the first byte is copied (a file unlinked afterwards by
a writer's cleanup stays readable through its descriptor); if a newer commit removed one
before it could be opened, the newest manifest is taken again. Every byte copied is hashed
and compared with the manifest's SHA-256, so a damaged source never becomes a backup. The
archive is written to a temporary name, fsynced and renamed.

**Restoring** (:func:`restore_snapshot`) treats the archive as hostile: it is read as a
stream, member by member; anything but regular files with the expected names (path
traversal, absolute names, symlinks, hardlinks, devices, FIFOs), a compressed archive (a
plain tar bounds every member by the archive's own size), a member larger than its
declared size, a duplicate member, a missing or unexpected file, or any checksum mismatch is
refused with an error naming the member. Files land in a hidden staging directory beside
the target, are verified and fsynced, and only then is the directory renamed into place:
nothing becomes visible unless everything checked out.

Example:
    >>> info = col.snapshot("news.tar")
    >>> restored = embedsearch.restore_snapshot("news.tar", "news-copy")
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tarfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from . import durable, store, versions
from .errors import CollectionExistsError, CorruptionError, InvalidInputError, SnapshotError
from .validation import resolve_path

HEADER = "embedsearch-snapshot.json"
FORMAT = "embedsearch-snapshot"
FORMAT_VERSION = 1
MAX_JSON_BYTES = 256 << 20  # header and manifest
CHUNK = 1 << 20
#: ``.<name>.restore-<pid>-<random>``: a restore's staging directory (see durable.owner_tag).
ABANDONED_STAGING = re.compile(r"\.[A-Za-z0-9_.-]+\.restore-(?P<pid>\d+)-[0-9a-f]{12}")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SnapshotInfo:
    """What :func:`write_snapshot` or :func:`restore_snapshot` did.

    Attributes:
        path: the archive.
        collection: the collection's directory name (source or target).
        version: the version the archive holds.
        files: data files in it (manifest and header not counted).
        bytes: size of the archive.
        seconds: wall time taken.
    """

    path: str
    collection: str
    version: int
    files: int
    bytes: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mb_per_s": round(self.mb_per_s, 1)}


# ----------------------------------------------------------------------------- writing
def _open_version(
    root: Path, version: int | str | None
) -> tuple[dict[str, Any], dict[str, IO[bytes]]]:
    """(manifest JSON, {file: open handle}) of one committed version, all files opened."""
    for _attempt in range(10):
        current = store.read_manifest(root)
        manifest = current if version is None else versions.manifest_at(root, version, current)
        body = versions.as_json(manifest)
        past = versions.generation_of(body) != versions.generation_of(current)
        if past and versions.index_gone(root, body):
            body = store.without_index_file(body)  # gone with its version (kept_files)
        handles: dict[str, IO[bytes]] = {}
        try:
            for name in sorted(versions.files_of(body)):
                handles[name] = os.fdopen(durable.open_fd(root, name), "rb")  # never via a link
        except FileNotFoundError:
            for fh in handles.values():
                fh.close()
            if version is not None and past:
                raise CorruptionError(
                    f"a file of version {version} is missing from {root}; run `embedsearch "
                    "verify` on the collection."
                ) from None
            continue  # a newer commit replaced it meanwhile: take the newest manifest again
        return body, handles
    raise CorruptionError(f"{root} kept changing; could not open one version's files. Retry.")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


class _HashingReader:
    """Reads a file through SHA-256, never past ``size`` bytes."""

    def __init__(self, fh: IO[bytes], size: int) -> None:
        self.fh, self.left, self.digest = fh, size, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.fh.read(n)
        self.left -= len(data)
        self.digest.update(data)
        return data


def write_snapshot(
    root: str | os.PathLike[str], file: str | os.PathLike[str], version: int | str | None = None
) -> SnapshotInfo:
    """Write one committed version of the collection at ``root`` into the tar ``file``.

    Args:
        root: the collection directory.
        file: the archive to write (replaced atomically if it exists).
        version: a kept version (number or tag); default the newest.

    Raises:
        CorruptionError: a source file does not match its checksum (no archive is left).
        InvalidInputError: an unknown version, or an archive path inside the collection.
    """
    t0 = time.perf_counter()
    root = Path(root)
    out = Path(file)
    with contextlib.suppress(OSError):
        if out.resolve().is_relative_to(root.resolve()):
            raise InvalidInputError(
                f"the snapshot file {out} is inside the collection it archives; write it "
                "somewhere else."
            )
    body, handles = _open_version(root, version)
    sums = versions.file_checksums(body)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "collection": root.name,
        "version": versions.generation_of(body),
        "created": store.now_iso(),
        "files": {name: {"sha256": s, "bytes": b} for name, (s, b) in sorted(sums.items())},
    }
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                _add_bytes(tar, HEADER, json.dumps(header, indent=1).encode())
                _add_bytes(tar, store.MANIFEST, store.readable_json(body))
                for name, fh in handles.items():
                    sha, size = sums[name]
                    actual = os.fstat(fh.fileno()).st_size
                    if actual != size:
                        raise CorruptionError(
                            f"{name} holds {actual} bytes but the manifest says {size}; run "
                            "`embedsearch verify`. No snapshot was written."
                        )
                    info = tarfile.TarInfo(name)
                    info.size, info.mode, info.mtime = size, 0o644, int(time.time())
                    reader = _HashingReader(fh, size)
                    tar.addfile(info, reader)  # type: ignore[arg-type]
                    if reader.digest.hexdigest() != sha:
                        raise CorruptionError(
                            f"{name} fails its checksum in the source collection; run "
                            "`embedsearch verify`/`repair`. No snapshot was written."
                        )
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out)
        _fsync_dir(out.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        for fh in handles.values():
            fh.close()
    return SnapshotInfo(
        str(out),
        root.name,
        int(header["version"]),
        len(handles),
        out.stat().st_size,
        time.perf_counter() - t0,
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- restoring
def _refuse(member: str, why: str) -> SnapshotError:
    return SnapshotError(
        f"refusing the archive: member {member[:200]!r} {why}. Nothing was restored; use a "
        "snapshot written by `embedsearch snapshot` (or Collection.snapshot)."
    )


def _read_json_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Any:
    if member.size > MAX_JSON_BYTES:
        raise _refuse(member.name, f"is {member.size} bytes, more than a snapshot's JSON can be")
    fh = tar.extractfile(member)
    assert fh is not None
    try:
        return json.loads(fh.read(MAX_JSON_BYTES + 1))
    except (ValueError, RecursionError):
        raise _refuse(member.name, "is not valid JSON") from None


def _copy_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, sha: str, size: int
) -> None:
    if member.size != size:
        raise _refuse(member.name, f"is {member.size} bytes; the manifest says {size}")
    src = tar.extractfile(member)
    assert src is not None
    digest = hashlib.sha256()
    left = size
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        while left:
            block = src.read(min(CHUNK, left))
            if not block:
                raise _refuse(member.name, "is truncated")
            digest.update(block)
            out.write(block)
            left -= len(block)
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != sha:
        raise _refuse(member.name, "fails its SHA-256 checksum (damaged or altered)")


def restore_snapshot(
    file: str | os.PathLike[str], name_or_path: str | os.PathLike[str]
) -> SnapshotInfo:
    """Restore a snapshot archive as a new collection ``name_or_path``.

    Every member is checked (names, types, sizes, duplicates) and every checksum verified
    before the collection appears under its name; on any problem nothing is left behind.

    Raises:
        SnapshotError: the archive is damaged, hostile, or not an embedsearch snapshot.
        CollectionExistsError: something already exists at the target.
    """
    t0 = time.perf_counter()
    src = Path(file)
    target = resolve_path(name_or_path)
    if target.exists():
        raise CollectionExistsError(
            f"{target} already exists; restore the snapshot under a new name, or drop the "
            "existing collection first."
        )
    if not src.is_file():
        raise InvalidInputError(f"snapshot file {src} does not exist or is not a file.")
    target.parent.mkdir(parents=True, exist_ok=True)
    for left in durable.sweep_abandoned(target.parent, ABANDONED_STAGING):
        log.info("removed %s, left by a restore that was killed", left)
    staging = target.parent / f".{target.name}.restore-{durable.owner_tag()}"
    staging.mkdir()
    (staging / store.SEGMENTS_DIR).mkdir()
    try:
        header, manifest, count = _extract(src, staging)
        gen = versions.generation_of(manifest)
        hook = versions.record_hook(staging, "restore", live=versions.live_rows(manifest))
        hook(manifest)
        store.atomic_write(staging / store.MANIFEST, store.readable_json(manifest))
        _fsync_dir(staging / store.SEGMENTS_DIR)
        _fsync_dir(staging)
        if target.exists():
            raise CollectionExistsError(f"{target} appeared while restoring; nothing was changed.")
        os.rename(staging, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return SnapshotInfo(
        str(src), target.name, gen, count, src.stat().st_size, time.perf_counter() - t0
    )


def _extract(src: Path, staging: Path) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Stream the archive into ``staging``, checking everything; returns (header, manifest)."""
    header: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None
    sums: dict[str, tuple[str, int]] = {}
    seen: set[str] = set()
    with open(src, "rb") as fh:
        magic = fh.read(6)
    if magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic[:6] == b"\xfd7zXZ\x00":
        raise SnapshotError(
            f"{src} is compressed; restore-snapshot reads plain tar archives only (so that no "
            "member can claim more bytes than the archive holds). Decompress it first, e.g. "
            "`gunzip` / `xz -d`."
        )
    try:
        tar = tarfile.open(src, mode="r|")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError) as exc:
        raise SnapshotError(f"{src} is not a readable tar archive ({exc}).") from None
    with tar:
        try:
            for member in tar:
                name = member.name
                if name in seen:
                    raise _refuse(name, "appears twice in the archive")
                seen.add(name)
                if member.issym() or member.islnk():
                    raise _refuse(name, f"is a link (to {member.linkname[:100]!r})")
                if member.isdir() and name.rstrip("/") == store.SEGMENTS_DIR:
                    continue
                if not member.isreg():
                    raise _refuse(name, "is not a regular file (device, FIFO or directory)")
                if name.startswith("/") or ".." in name.split("/") or "\\" in name:
                    raise _refuse(name, "points outside the collection (path traversal)")
                if header is None:
                    if name != HEADER:
                        raise _refuse(name, f"comes first; a snapshot starts with {HEADER}")
                    header = _check_header(_read_json_member(tar, member))
                    continue
                if manifest is None:
                    if name != store.MANIFEST:
                        raise _refuse(name, f"comes before {store.MANIFEST}")
                    manifest = _check_manifest(_read_json_member(tar, member), header, staging)
                    sums = versions.file_checksums(manifest)
                    continue
                if name not in sums:
                    raise _refuse(name, "is not a file the snapshot's manifest names")
                sha, size = sums[name]
                _copy_member(tar, member, staging / name, sha, size)
        except (tarfile.TarError, EOFError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise
            raise SnapshotError(
                f"{src} is damaged or truncated ({type(exc).__name__}: {exc}); nothing was "
                "restored."
            ) from None
    if header is None or manifest is None:
        raise SnapshotError(f"{src} is not an embedsearch snapshot (no {HEADER}/manifest).")
    missing = sorted(set(sums) - seen)
    if missing:
        raise SnapshotError(
            f"{src} lacks {len(missing)} file(s) its manifest names (e.g. {missing[0]}); the "
            "archive is incomplete. Nothing was restored."
        )
    return header, manifest, len(sums)


def _check_header(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise SnapshotError(f"the archive's {HEADER} is not an embedsearch snapshot header.")
    if obj.get("format_version") != FORMAT_VERSION:
        raise SnapshotError(
            f"snapshot format {obj.get('format_version')!r} is not one this embedsearch reads "
            f"({FORMAT_VERSION}); upgrade embedsearch."
        )
    if not isinstance(obj.get("files"), dict):
        raise SnapshotError(f"the archive's {HEADER} has no file list.")
    return obj


def _check_manifest(obj: Any, header: dict[str, Any], staging: Path) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise SnapshotError("the archive's manifest.json is not a JSON object.")
    try:
        versions.check_manifest(obj, staging / store.MANIFEST)
    except Exception as exc:  # every failure here means: not a trustworthy manifest
        raise SnapshotError(f"the archive's manifest is not valid: {exc}") from None
    sums = versions.file_checksums(obj)
    declared = {
        k: (v.get("sha256"), v.get("bytes"))
        for k, v in header["files"].items()
        if isinstance(v, dict)
    }
    if declared != sums or header.get("version") != versions.generation_of(obj):
        raise SnapshotError(
            f"the archive's {HEADER} does not match its manifest (altered archive); nothing "
            "was restored."
        )
    return obj
