"""Durable storage of one collection: segments, tombstones, a typed manifest, a lock.

Layout of a collection directory::

    manifest.json            the commit point: which files are live, with checksums
                             (parsed and checked as a typed :class:`Manifest`)
    segments/seg-*.arrow     id, text, metadata (JSON + typed columns) — memory-mapped
    segments/seg-*.f32       the same rows' vectors, raw float32 — memory-mapped
    segments/seg-*.parquet   format-1 segments (vectors inside), until upgraded
    segments/del-*.parquet   tombstones: row positions deleted by one operation
    index-*.faiss            derived FAISS index (rebuilt when missing or stale)
    LOCK                     held (flock) by the one writer; names its pid

Every write goes to a fresh file that is fsynced and renamed into place; nothing
is live until a new manifest naming it has been renamed over the old one. A crash
at any point therefore leaves either the old or the new committed state, plus
unreferenced files that the next writer removes (:func:`remove_orphans`).
No pickle, no code-executing loader: Arrow IPC, raw float32, Parquet and JSON only, each
checked by SHA-256 (``verify``) and, on the read path, by CRC-32 once per process for the
bytes a query touches (see :mod:`embedsearch.segment`).

Every file is opened, written and removed through :mod:`embedsearch.durable`: relative to
directory descriptors, never through a symbolic link, regular files only.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import re
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import durable
from .arrays import indices, numbers
from .checksums import crc32
from .durable import raise_storage_error, sha256_file
from .errors import (
    CorruptionError,
    EmbedSearchError,
    LockedError,
    NotACollectionError,
)
from .manifest import (
    FILE_NAME_RE,
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_MANIFEST_BYTES,
    SEGMENTS_DIR,
    FileRef,
    IndexFileRef,
    IndexSection,
    Manifest,
    SegmentRef,
)

MANIFEST = "manifest.json"
LOCK_FILE = "LOCK"
#: Names embedsearch writes in ``segments/`` and at the top of a collection. Orphan cleanup
#: removes only regular files whose names match these (or temp files made for such names):
#: nothing else in the directory is ever touched.
SEGMENT_FILE_RE = re.compile(
    r"seg-[0-9a-f]{32}\.(parquet|arrow|f32|ids|crc)|del-[0-9a-f]{32}\.parquet"
)
ROOT_FILE_RE = re.compile(r"index-[0-9a-f]{32}\.(faiss|tail)")
#: Temp files of earlier versions (``.<name>.tmp``) and of :func:`durable.write_file`.
_OLD_TEMP_RE = re.compile(
    r"\.((seg|del)-[0-9a-f]{32}\.(parquet|arrow|f32)|index-[0-9a-f]{32}\.faiss)\.tmp"
)


# --------------------------------------------------------------------------- files
def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix
    (:func:`durable.write_file`: temp file, fsync, rename, directory fsync)."""
    durable.write_file(path.parent, path.name, data)


def write_file_checksums(
    root: Path, rel: str, data: bytes | Callable[[IO[bytes]], None]
) -> tuple[int, str, str]:
    """:func:`durable.write_file`, also returning the CRC-32 of what was written, computed
    in the same read-back as its SHA-256: ``(size, sha256, crc32)``. For files a reader
    checks by CRC-32 before use (saved indexes)."""
    crc = 0

    def add(block: bytes) -> None:
        nonlocal crc
        crc = crc32(block, crc)

    size, digest = durable.write_file(root, rel, data, also=add)
    return size, digest, f"{crc:08x}"


def _crc32(fh: IO[bytes]) -> str:
    crc = 0
    for block in iter(lambda: fh.read(1 << 20), b""):
        crc = crc32(block, crc)
    return f"{crc:08x}"


T = TypeVar("T")


def load_verified(root: Path, ref: FileRef, load: Callable[[str | IO[bytes]], T]) -> T:
    """``load(path)`` of the file of ``ref`` once its checksum matched (else
    :class:`CorruptionError`, and ``load`` never sees the file).

    ``path`` names the descriptor that :func:`open_verified` checked (``/proc/self/fd/N``:
    no link followed, the file checked is the file read), for loaders that read by path,
    such as FAISS's native ``read_index``: at 1M rows it read a 356 MB index in 0.33 s
    where reading it through a Python callback took 0.36-0.62 s. The checksum comes first
    on purpose: a damaged or crafted index must never reach FAISS's parser. Without
    ``/proc`` the loader gets the open file instead.
    """
    with open_verified(root, ref) as fh:
        fd_path = f"/proc/self/fd/{fh.fileno()}"
        return load(fd_path) if os.path.exists(fd_path) else load(fh)


@contextlib.contextmanager
def open_verified(root: Path, ref: FileRef) -> Iterator[IO[bytes]]:
    """The file of ``ref``, open for reading at its start, after checking that it is a
    regular file inside the collection (no link followed) that matches its checksum.

    Reading goes through this one descriptor, so the file checked is the file read. A
    reference with a ``crc32`` (format-2 index files) is checked by it, ~2.5x faster than
    SHA-256 here: a reader pays it for a 400 MB index on every open; ``verify`` checks both.
    """
    try:
        fh_cm = durable.open_file(root, ref.file)
        fh = fh_cm.__enter__()
    except (FileNotFoundError, NotADirectoryError):
        raise CorruptionError(
            f"{ref.file} is named in the manifest but missing from {root}; run "
            "`embedsearch repair` to rebuild what can be rebuilt."
        ) from None
    try:
        crc = getattr(ref, "crc32", None)
        if (_crc32(fh) != crc) if crc else (sha256_file(fh) != ref.sha256):
            raise CorruptionError(
                f"{ref.file} fails its checksum (the file was changed or damaged); run "
                "`embedsearch verify` for details and `embedsearch repair` to quarantine it."
            )
        fh.seek(0)
        yield fh
    finally:
        fh_cm.__exit__(None, None, None)


def part_checksum(part: bytes) -> tuple[int, str]:
    """``(bytes, crc32)`` of a part of a file, as an ``IndexFileRef`` records its training."""
    return len(part), f"{crc32(part):08x}"


def read_trained(root: Path, ref: IndexFileRef) -> bytes:
    """The index's training saved at the end of the index file of ``ref`` (an
    ``IndexFileRef`` whose ``trained`` is set), after checking that the file is a regular
    file inside the collection (no link followed) of the size recorded and that the part
    matches its own CRC-32 (else :class:`CorruptionError`). Only that part is read: a
    writer appending rows encodes them with it, where the whole file of a 5M-row index is
    277 MiB."""
    if ref.trained is None:
        raise CorruptionError(f"{ref.file} has no training saved after its index")
    size = ref.trained[0]
    try:
        with durable.open_file(root, ref.file) as fh:
            if os.fstat(fh.fileno()).st_size != ref.bytes:
                raise CorruptionError(f"{ref.file} is not the size its manifest records")
            fh.seek(ref.bytes - size)
            part = fh.read(size)
    except (FileNotFoundError, NotADirectoryError):
        raise CorruptionError(f"{ref.file} is named in the manifest but missing") from None
    if part_checksum(part) != ref.trained:
        raise CorruptionError(f"the training saved at the end of {ref.file} fails its checksum")
    return part


def verified_path(root: Path, ref: FileRef) -> Path:
    """Return the path of ``ref`` after checking that it is a regular file (no link) and
    matches its checksum. Prefer :func:`open_verified`, which reads what it checked."""
    with open_verified(root, ref):
        return root / ref.file


def _write_parquet(root: Path, name: str, table: pa.Table) -> FileRef:
    def write(fh: IO[bytes]) -> None:
        pq.write_table(
            table,
            fh,
            compression={c: ("none" if c == "vector" else "zstd") for c in table.column_names},
            use_dictionary=False,
        )

    size, digest = durable.write_file(root, f"{SEGMENTS_DIR}/{name}", write)
    return FileRef(f"{SEGMENTS_DIR}/{name}", table.num_rows, digest, size)


# --------------------------------------------------------------------------- segments
def _read_parquet(path: Path | IO[bytes]) -> pa.Table:
    """Read a whole Parquet file; unlike ``pq.read_table`` this does not import
    ``pyarrow.dataset`` (and pandas with it), a second of a CLI call's cold start."""
    try:
        with pq.ParquetFile(path) as pf:
            return pf.read()
    except (pa.ArrowException, OSError):
        raise
    except Exception as exc:  # a damaged footer can fail while decoding its column names
        raise pa.ArrowInvalid(f"unreadable Parquet metadata ({type(exc).__name__}: {exc})") from exc


def segment_schema(dim: int) -> pa.Schema:
    """Arrow schema of a format-1 segment: one row per document, the vector stored with it."""
    return pa.schema(
        [
            ("id", pa.string()),
            ("text", pa.string()),
            ("metadata", pa.string()),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )


@dataclass
class SegmentData:
    """The columns of one format-1 (Parquet) segment, in memory."""

    ids: list[str]
    texts: pa.Array
    metadata: pa.Array
    vectors: np.ndarray


def read_segment(root: Path, ref: FileRef, dim: int) -> SegmentData:
    """Read and checksum-verify one format-1 (Parquet) segment, whole."""
    with open_verified(root, ref) as fh:
        try:
            table = _read_parquet(fh)
        except (pa.ArrowException, OSError) as exc:
            raise CorruptionError(f"{ref.file} cannot be read as Parquet ({exc}).") from exc
    if table.schema != segment_schema(dim) or table.num_rows != ref.rows:
        raise CorruptionError(
            f"{ref.file} has an unexpected schema or row count; it does not belong to this "
            "collection. Run `embedsearch repair`."
        )
    vec = table.column("vector").combine_chunks()
    vectors = _vector_matrix(vec, dim)
    return SegmentData(
        ids=table.column("id").to_pylist(),
        texts=table.column("text").combine_chunks(),
        metadata=table.column("metadata").combine_chunks(),
        vectors=vectors,
    )


def _vector_matrix(vec: pa.FixedSizeListArray, dim: int) -> np.ndarray:
    """The (rows, dim) float32 view of a vector column, read straight from its buffer.

    ``Array.to_numpy`` imports pandas (about a second of a CLI call's cold start), so the
    common case (float32 values, no nulls) is read with ``np.frombuffer``.
    """
    values = vec.values
    if vec.null_count == 0 and values.null_count == 0 and pa.types.is_float32(values.type):
        start = values.offset + vec.offset * dim
        flat = np.frombuffer(values.buffers()[1], dtype=np.float32)[start : start + len(vec) * dim]
    else:
        flat = vec.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(-1, dim).astype(np.float32, copy=False)


def write_tombstones(root: Path, positions: Iterable[int]) -> FileRef:
    """Write a tombstone file: the row positions one delete/upsert removed."""
    arr = indices(np.fromiter(positions, dtype=np.int64))  # not pa.array: it imports pandas
    return _write_parquet(root, f"del-{uuid.uuid4().hex}.parquet", pa.table({"position": arr}))


def read_tombstones(root: Path, ref: FileRef) -> np.ndarray:
    """Read and verify one tombstone file (its column read with numpy: pyarrow's
    ``to_numpy`` imports pandas, 0.2 s of a fresh process's open)."""
    with open_verified(root, ref) as fh:
        try:
            column = _read_parquet(fh).column("position")
            if column.null_count or not pa.types.is_integer(column.type):
                raise pa.ArrowInvalid(f"positions of type {column.type}, {column.null_count} null")
            parts = [numbers(chunk).astype(np.int64) for chunk in column.chunks]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        except (pa.ArrowException, OSError, KeyError) as exc:
            raise CorruptionError(
                f"{ref.file} cannot be read as a tombstone file ({exc})."
            ) from exc


# --------------------------------------------------------------------------- manifest
def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def readable_json(obj: Any, levels: int = 2) -> bytes:
    """``obj`` as JSON with sorted keys, one member a line down to ``levels`` levels of
    nesting and each deeper value on one line (a manifest: a segment a line).

    Every value is written by ``json``'s C encoder: ``indent=`` selects its pure-Python
    encoder, which took 10 ms per manifest at 5M rows (a segment's block checksums make
    it 240 KB), written twice by every commit (the manifest and its version record).
    """
    return _lines(obj, levels, "").encode()


def _lines(obj: Any, levels: int, pad: str) -> str:
    if levels <= 0 or not isinstance(obj, (dict, list)) or not obj:
        return json.dumps(obj, sort_keys=True)
    inner = pad + " "
    if isinstance(obj, dict):
        members = [
            f"{inner}{json.dumps(key)}: {_lines(obj[key], levels - 1, inner)}"
            for key in sorted(obj)
        ]
        return "{\n" + ",\n".join(members) + f"\n{pad}}}"
    items = [inner + _lines(item, levels - 1, inner) for item in obj]
    return "[\n" + ",\n".join(items) + f"\n{pad}]"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_manifest(model: dict[str, Any], index_spec: str) -> Manifest:
    """The manifest of an empty collection."""
    return Manifest.new(model, index_spec, now_iso())


def write_manifest(
    root: Path,
    manifest: Manifest | dict[str, Any],
    before_commit: Callable[[dict[str, Any]], None] | None = None,
) -> Manifest:
    """Commit ``manifest`` (bumping its generation, at the current format); returns it.

    A plain dict (tests, tools) is parsed and checked as :class:`Manifest` first.
    ``before_commit`` receives the exact body (checksum included) before it becomes the
    commit point: the version history records it there, so a crash can leave a record of
    a version that never committed (ignored: its generation is above the manifest's) but
    never a committed version without its record.
    """
    if isinstance(manifest, dict):
        body = {k: v for k, v in manifest.items() if k != "checksum"}
        body.setdefault("rows", None)
        try:
            manifest = Manifest.from_json({**body, "format_version": FORMAT_VERSION})
        except ValueError as exc:
            raise CorruptionError(f"refusing to write a malformed manifest ({exc})") from exc
    committed = manifest.replace(
        format_version=FORMAT_VERSION,
        generation=manifest.generation + 1,
        updated=now_iso(),
        checksum=None,
    )
    body = committed.to_json()
    checksum = hashlib.sha256(_canonical(body)).hexdigest()
    body["checksum"] = checksum
    if before_commit is not None:
        before_commit(body)
    atomic_write(root / MANIFEST, readable_json(body))
    return committed.replace(checksum=checksum)


def _read_raw(root: Path) -> bytes:
    try:
        with durable.open_file(root, MANIFEST) as fh:
            return fh.read(MAX_MANIFEST_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        raise NotACollectionError(
            f"{root} has no {MANIFEST}: it is not an embedsearch collection. Choose another "
            "name or an empty directory."
        ) from None


def read_manifest_json(root: Path) -> dict[str, Any]:
    """Read ``manifest.json`` and check its checksum; returns the raw object (for tools
    and tests that edit it). Code reads manifests through :func:`read_manifest`."""
    return parse_manifest_json(_read_raw(root), root / MANIFEST)


def parse_manifest_json(raw: bytes, path: Path) -> dict[str, Any]:
    """Check the bytes of a manifest (size, JSON, ours, version, checksum); ``path`` names
    it in errors. Returns the raw object; :func:`parse_manifest` also checks its fields."""
    root = path.parent
    if len(raw) > MAX_MANIFEST_BYTES:
        raise CorruptionError(
            f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB; no embedsearch writes such a "
            "manifest. Restore it from a backup."
        )
    try:
        obj = json.loads(raw)
        if not isinstance(obj, dict):
            raise ValueError("not an object")
    except RecursionError:
        raise CorruptionError(
            f"{path} is JSON nested too deeply to be a manifest; the collection's commit point "
            "is damaged or crafted. Restore it from a backup."
        ) from None
    except ValueError as exc:
        raise CorruptionError(
            f"{path} is not valid JSON ({exc}); the collection's commit point is damaged. "
            "Restore it from a backup or run `embedsearch repair`."
        ) from exc
    if obj.get("format") != FORMAT_NAME:
        raise NotACollectionError(f"{path} is not an embedsearch manifest.")
    version = obj.get("format_version")
    if type(version) is not int:
        raise CorruptionError(
            f"{path} has no valid format_version; the commit point is damaged. Restore it "
            "from a backup or run `embedsearch repair`."
        )
    if version > FORMAT_VERSION:
        raise EmbedSearchError(
            f"{root} was written by a newer embedsearch (format {obj['format_version']}); "
            "upgrade embedsearch to open it."
        )
    body = {k: v for k, v in obj.items() if k != "checksum"}
    try:
        canonical = _canonical(body)
    except (RecursionError, ValueError, TypeError) as exc:
        raise CorruptionError(f"{path} cannot be checked ({type(exc).__name__}).") from None
    if obj.get("checksum") != hashlib.sha256(canonical).hexdigest():
        raise CorruptionError(
            f"{path} fails its checksum (edited or damaged). Restore it from a backup or run "
            "`embedsearch repair`."
        )
    return obj


def parse_manifest(raw: bytes, path: Path) -> Manifest:
    """Check and parse the bytes of a manifest into a :class:`Manifest` (``path`` names it
    in errors). Also used for the manifests the version history and snapshots keep.

    Raises:
        NotACollectionError: not ours.
        CorruptionError: damaged, crafted or malformed (the message names what is wrong).
    """
    obj = parse_manifest_json(raw, path)
    try:
        return Manifest.from_json(obj)
    except (ValueError, TypeError, RecursionError) as exc:
        raise CorruptionError(
            f"{path} passes its checksum but is malformed ({exc}); it was not written by "
            "embedsearch. Restore it from a backup or run `embedsearch repair`."
        ) from None


def without_index_file(body: dict[str, Any]) -> dict[str, Any]:
    """A manifest JSON naming no saved index nor tails (its spec kept), checksum recomputed: what a
    past version whose index file is gone (``versions.kept_files``) is archived or restored
    as; the index is derived data, re-made from the rows on need."""
    out = {k: v for k, v in body.items() if k != "checksum"}
    out["index"] = {k: v for k, v in (out.get("index") or {}).items() if k != "tail"}
    out["index"]["file"] = None
    out["checksum"] = hashlib.sha256(_canonical(out)).hexdigest()
    return out


def read_manifest(root: Path) -> Manifest:
    """Read, checksum and parse ``manifest.json`` into a checked :class:`Manifest`."""
    return parse_manifest(_read_raw(root), root / MANIFEST)


def manifest_files(manifest: Manifest) -> set[str]:
    """Every file name (relative to the collection) that ``manifest`` keeps alive."""
    return manifest.files()


def _ours(name: str, final: re.Pattern[str]) -> bool:
    """A name embedsearch could have written: ``final`` itself or one of its temp files."""
    return bool(final.fullmatch(name) or _OLD_TEMP_RE.fullmatch(name)) or durable.is_temp_of(
        name, final
    )


_ROOT_TEMPS = re.compile(rf"{ROOT_FILE_RE.pattern}|{re.escape(MANIFEST)}")


def leftovers(root: Path, manifest: Manifest | None, keep: set[str] | None = None) -> list[str]:
    """Relative names of files embedsearch wrote that ``manifest`` does not keep alive:
    temp files always; unreferenced segments and index files when a manifest is given
    (``keep``: more names to spare, the files of the versions the history keeps).

    Only regular files with names embedsearch itself writes are listed; links, folders and
    anyone else's files never are. ``segments/`` must be a real directory (a link is
    refused with UnsafeFileError).
    """
    keep = (manifest_files(manifest) | (keep or set())) if manifest is not None else None
    out: list[str] = []
    for name in durable.list_files(root, SEGMENTS_DIR):
        rel = f"{SEGMENTS_DIR}/{name}"
        if SEGMENT_FILE_RE.fullmatch(name):
            if keep is not None and rel not in keep:
                out.append(rel)
        elif _ours(name, SEGMENT_FILE_RE):
            out.append(rel)
    for name in durable.list_files(root):
        if ROOT_FILE_RE.fullmatch(name):
            if keep is not None and name not in keep:
                out.append(name)
        elif _ours(name, _ROOT_TEMPS) and name != MANIFEST:
            out.append(name)
    return out


def remove_orphans(root: Path, manifest: Manifest, keep: set[str] | None = None) -> list[str]:
    """Delete files no committed manifest names (leftovers of crashed or replaced writes).

    ``keep`` adds names to spare (the files of the versions the history keeps).
    Only the lock holder may call this: a concurrent writer's uncommitted file would look
    like an orphan. Only names embedsearch writes are ever removed (see :func:`leftovers`),
    never through a link.
    """
    removed: list[str] = []
    for rel in leftovers(root, manifest, keep):
        with contextlib.suppress(OSError):
            if durable.unlink(root, rel):
                removed.append(rel)
    if removed:
        with contextlib.suppress(OSError, EmbedSearchError):
            durable.fsync_dir(root, SEGMENTS_DIR)
            durable.fsync_dir(root)
    return removed


# --------------------------------------------------------------------------- lock
class WriterLock:
    """An exclusive, non-blocking ``flock`` on ``LOCK``: one writer per collection.

    ``flock`` locks belong to the open file, so a second handle in the same process is
    refused just like a second process, and the kernel drops the lock if the process dies.
    """

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        try:
            fd = durable.open_fd(self.path.parent, LOCK_FILE, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise_storage_error(exc, self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"{self.path} is held by another writer ({holder}). Only one writer may change a "
                "collection at a time: close the other process's collection (or wait for it) and "
                "retry; reading needs no lock."
            ) from None
        try:  # who holds it, for the message a second writer gets; the lock is the flock
            os.ftruncate(fd, 0)
            os.pwrite(
                fd, f"pid={os.getpid()} host={socket.gethostname()} since={now_iso()}".encode(), 0
            )
        except OSError as exc:  # disk full, file-size limit: give the lock back, then fail
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise_storage_error(exc, self.path)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def ensure_layout(root: Path) -> None:
    """Create the directory skeleton of a collection, durably: every new directory is
    fsynced into its parent, so a collection created before a power cut survives it.

    Raises UnsafeFileError if ``segments`` exists as a link or a file.
    """
    durable.make_dirs(root)
    with durable.opened_dir(root, SEGMENTS_DIR, create=True):
        pass


__all__ = [
    "FILE_NAME_RE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST",
    "SEGMENTS_DIR",
    "FileRef",
    "IndexFileRef",
    "IndexSection",
    "Manifest",
    "SegmentRef",
    "WriterLock",
    "atomic_write",
    "ensure_layout",
    "write_file_checksums",
    "leftovers",
    "new_manifest",
    "open_verified",
    "load_verified",
    "parse_manifest",
    "parse_manifest_json",
    "read_manifest",
    "read_manifest_json",
    "read_segment",
    "read_tombstones",
    "remove_orphans",
    "sha256_file",
    "verified_path",
    "without_index_file",
    "write_manifest",
    "write_tombstones",
]
