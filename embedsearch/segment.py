"""Segment files: how one batch of rows is stored, and how it is read without copying.

Format 2, two files per segment, both memory-mapped when read (format 3 adds a third,
``seg-<hex>.ids``, the segment's id index: see :mod:`embedsearch.idhash`; format 4, written
by this code, a fourth, ``seg-<hex>.crc``, the row checksums described below):

* ``segments/seg-<hex>.arrow`` — an *uncompressed* Arrow IPC file, one record batch:
  ``id``, ``text``, ``metadata`` (the JSON text, the source of truth) and one typed column
  per top-level metadata key whose values in this segment all have one scalar type
  (``meta:<key>``: int64, float64, bool or string; nulls where a row lacks the key). Keys
  with mixed, null or nested values stay in the JSON only and are listed in the schema
  metadata (``embedsearch.untyped``), so a reader knows the typed column would not tell
  the whole story. Uncompressed IPC gives O(1) access to row ``i``'s strings through the
  memory map; Parquet would decompress a whole page per hit.
* ``segments/seg-<hex>.f32`` — the vectors, ``rows × dim`` little-endian float32, nothing
  else: ``np.frombuffer`` over the map is the matrix, zero-copy.

Checksums (decided for open time; numbers in ``benchmarks/scale_open.py``): hashing every
byte on every open costs ~1.7 s per GB here, the whole budget of a CLI search at 1M rows.
So each file carries a SHA-256 (``verify`` checks all of them) *and* a cheaper CRC-32 that
readers check lazily, once per process: the Arrow file (ids, texts, metadata: ~100 bytes a
row) whole on first touch; the vector file per block of :data:`BLOCK_ROWS` rows, just
before a block is first used. Bytes that fail are never returned: the caller gets a
:class:`CorruptionError` naming the file.

Row checksums (format 4): a query re-ranks a few hundred rows scattered over the whole
collection, and checking each one's 64-row block read 96 KiB per row the first time: at 5M
rows a fresh process's first queries took 18 ms against 4.9 ms once every block was checked,
and 246 ms when the files had left the page cache. So ``seg-<hex>.crc`` holds the CRC-32 of
each row (4 B a row), itself checked per chunk of :data:`CRC_CHUNK_ROWS` values against the
manifest; a re-rank reads each row once (``pread``) and checks those very bytes, after the
table has asked the kernel to start fetching every unchecked row of every segment it reads
(:meth:`MappedSegment.prefetch`). Scans of whole segments still check blocks (fewer, larger
checksums). A segment of :data:`ROW_CRCS_MIN_ROWS` rows or fewer has no row checksums: its
one block's check reads no more than its rows, and a one-document ``add`` is spared a file.

Format 1 (read only, for upgrades): one Parquet file with a ``vector`` column, read whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import mmap
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from . import durable
from .arrays import column
from .checksums import chunk_crcs, crc32
from .errors import CorruptionError, UnsafeFileError
from .idhash import decode_run, encode_run, hash_strings
from .manifest import (
    COLUMN_TYPES,
    SEGMENTS_DIR,
    BlocksRef,
    ColumnLayout,
    ColumnsRef,
    IdsRef,
    RowCrcsRef,
    SegmentRef,
    VectorsRef,
)

#: Rows per checksummed vector block of segments written from now on (each segment's
#: manifest entry names its own, so older segments keep theirs). A query's reads are checked
#: by their row checksums (format 4); blocks serve scans of whole segments, reads of more
#: rows of one segment than :data:`PREAD_MAX_ROWS`, and segments without row checksums.
#: The block checksums are 8 hex digits a block in the manifest, which every commit writes
#: twice (the manifest and its version record) and every open parses: with 64-row blocks
#: they were 90 % of it, 0.9 MB at 5M rows (97 MB of history after 188 commits); 1,024-row
#: blocks (1.5 MiB each at 384 dims) cut it to a fifth. 64 rows had been chosen for a fresh
#: process's first queries before row checksums existed (11-20 ms against 22-37 with 256).
BLOCK_ROWS = 1024
#: A segment of more rows than this gets row checksums (a ``.crc`` file); one this small
#: checks its one block instead, which reads no more than its rows (96 KiB at 384 dims), and
#: a one-document ``add`` is spared a file and its fsyncs.
ROW_CRCS_MIN_ROWS = 64
#: Row checksums per chunk of a ``.crc`` file that the manifest checksums (4 KiB: one page
#: read per chunk; 8 hex digits a chunk in the manifest, 39 KB at 5M rows).
CRC_CHUNK_ROWS = 1024
#: Bytes per checksummed block of a segment's Arrow file (format 7): a hit's id, text and
#: metadata are read from a few blocks, each read and checksummed once per process (about
#: 0.05 ms for 256 KiB from the page cache). 71 blocks for an 18 MB segment of 50,000 short
#: texts, 8 hex digits each in the manifest: 0.6 KB a segment, where 64 KiB blocks would
#: have doubled the manifest every commit writes twice (see :data:`BLOCK_ROWS`).
ARROW_BLOCK_BYTES = 256 << 10
#: Typed columns kept per segment; rarer keys stay in the JSON column only.
MAX_TYPED_KEYS = 64
TYPED_PREFIX = "meta:"
_UNTYPED_KEY = b"embedsearch.untyped"
#: Ints beyond this magnitude are not exact as float64; such a key is not typed as float.
_EXACT_FLOAT_INT = 2**53
_INT64 = 2**63


def base_schema() -> list[tuple[str, pa.DataType]]:
    return [("id", pa.string()), ("text", pa.string()), ("metadata", pa.string())]


# ----------------------------------------------------------------------------- typing
def infer_typed_columns(
    metadata: Sequence[dict[str, Any] | None],
) -> tuple[dict[str, pa.Array], list[str]]:
    """Typed columns for the top-level keys of ``metadata`` (one dict or None per row).

    Returns ``(columns, untyped)``: ``columns[key]`` is an Arrow array with one value per
    row (null where the row lacks the key); ``untyped`` lists keys whose values are mixed,
    null or nested (they stay in the JSON column only).
    """
    kinds: dict[str, set[type]] = {}
    for meta in metadata:
        if meta:
            for key, val in meta.items():
                kinds.setdefault(key, set()).add(type(val))
    columns: dict[str, pa.Array] = {}
    untyped: list[str] = []
    ranked = sorted(kinds, key=lambda k: -sum(1 for m in metadata if m and k in m))
    for rank, key in enumerate(ranked):
        kind = _column_type(kinds[key])
        values = [m.get(key) if m else None for m in metadata] if kind is not None else []
        if kind == pa.int64() and any(not -_INT64 <= v < _INT64 for v in values if v is not None):
            kind = None
        if (
            kind == pa.float64()
            and int in kinds[key]
            and any(abs(v) > _EXACT_FLOAT_INT for v in values if type(v) is int)
        ):
            kind = None
        if kind is None or rank >= MAX_TYPED_KEYS:
            untyped.append(key)
            continue
        columns[key] = column(values, kind)
    return columns, sorted(untyped)


def _column_type(kinds: set[type]) -> pa.DataType | None:
    if kinds == {bool}:
        return pa.bool_()
    if kinds == {int}:
        return pa.int64()
    if kinds <= {int, float}:
        return pa.float64()
    if kinds == {str}:
        return pa.string()
    return None  # None values, lists, dicts, or a mix


def _parse_json(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except RecursionError:  # deeper than json parses (older versions stored such): untyped
        return None


# ----------------------------------------------------------------------------- writing
def encode_segment(
    ids: Sequence[str],
    texts: Sequence[str],
    metadata_json: Sequence[str | None],
    vectors: np.ndarray,
    metadata: Sequence[dict[str, Any] | None] | None = None,
    columns: tuple[dict[str, pa.Array], list[str]] | None = None,
) -> tuple[pa.Buffer, np.ndarray]:
    """The bytes of a format-2 segment: (Arrow IPC file, float32 matrix).

    ``columns``: the typed metadata columns and untyped keys of these rows when the
    caller has them already (compaction takes them from the old segments); else they are
    inferred from ``metadata`` (parsed from ``metadata_json`` when not given).
    """
    if columns is not None:
        typed, untyped = columns
    else:
        if metadata is None:
            metadata = [_parse_json(m) for m in metadata_json]
        typed, untyped = infer_typed_columns(metadata)
    fields = [pa.field(n, t) for n, t in base_schema()]
    arrays: list[pa.Array] = [
        column(ids, pa.string()),
        column(texts, pa.string()),
        column(metadata_json, pa.string()),
    ]
    for key, arr in typed.items():
        fields.append(pa.field(TYPED_PREFIX + key, arr.type))
        arrays.append(arr)
    schema = pa.schema(fields, metadata={_UNTYPED_KEY: json.dumps(untyped).encode()})
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema, options=pa.ipc.IpcWriteOptions(compression=None)) as w:
        w.write_batch(batch)
    return sink.getvalue(), np.ascontiguousarray(vectors, dtype="<f4")


#: Arrow type of each typed column type a layout names (see :data:`COLUMN_TYPES`).
_ARROW_TYPES = {
    "int64": pa.int64(),
    "double": pa.float64(),
    "bool": pa.bool_(),
    "string": pa.string(),
}
_TYPE_NAMES = {t: n for n, t in _ARROW_TYPES.items()}
#: The Arrow types a segment's typed metadata columns may have.
_TYPED_TYPES = tuple(_ARROW_TYPES.values())


def column_layout(batch: pa.RecordBatch, base: int, data: Any) -> ColumnsRef:
    """Where each typed column of ``batch`` (read from a file whose bytes ``data`` start at
    address ``base``) lies in that file, with the CRC-32 of each column's span (format 5)."""
    view = memoryview(data).cast("B")
    typed = []
    for i, field in enumerate(batch.schema):
        if i < 3:
            continue
        column = batch.column(i)
        kind = _TYPE_NAMES[field.type]
        buffers = tuple(None if b is None else (b.address - base, b.size) for b in column.buffers())
        assert len(buffers) == COLUMN_TYPES[kind] and column.offset == 0
        if buffers[0] is not None and column.null_count == 0:
            buffers = (None, *buffers[1:])  # no nulls: nothing for the bitmap to say
        # An empty buffer (a string column whose values are all "" or null) is not in the
        # file: Arrow hands a shared empty buffer whose address is anywhere. It is recorded
        # where the column's bytes start (the address had made the manifest unreadable).
        start = min(o for o, n in (b for b in buffers if b is not None) if n)
        buffers = tuple(None if b is None else (start, 0) if not b[1] else b for b in buffers)
        layout = ColumnLayout(field.name[len(TYPED_PREFIX) :], kind, column.null_count, buffers, "")
        lo, hi = layout.span
        typed.append(dataclasses.replace(layout, crc32=f"{crc32(view[lo:hi]):08x}"))
    raw = (batch.schema.metadata or {}).get(_UNTYPED_KEY, b"[]")
    return ColumnsRef(tuple(typed), tuple(json.loads(raw)))


def _layout_of(arrow: pa.Buffer) -> ColumnsRef:
    """:func:`column_layout` of a segment's Arrow file held in memory (as just encoded)."""
    batch = pa.ipc.open_file(arrow).get_batch(0)
    return column_layout(batch, arrow.address, arrow)


def block_crcs(matrix: np.ndarray, block_rows: int) -> str:
    """CRC-32 of each block of ``block_rows`` rows, as 8 hex digits each."""
    return chunk_crcs(matrix, block_rows * matrix.shape[1] * 4)


def row_crcs(matrix: np.ndarray) -> np.ndarray:
    """The CRC-32 of each row of ``matrix`` (its bytes as stored: little-endian float32)."""
    flat = memoryview(np.ascontiguousarray(matrix, dtype="<f4")).cast("B")
    width = matrix.shape[1] * 4
    return np.fromiter(
        (crc32(flat[i : i + width]) for i in range(0, len(flat), width)),
        dtype=np.uint32,
        count=matrix.shape[0],
    )


def write_crcs(root: Path, stem: str, values: np.ndarray) -> RowCrcsRef:
    """Write the row checksums ``<stem>.crc`` of a segment (``values``: one per row)."""
    raw = np.ascontiguousarray(values, dtype="<u4").tobytes()
    size, sha = durable.write_file(root, f"{stem}.crc", memoryview(raw))
    chunks = chunk_crcs(raw, CRC_CHUNK_ROWS * 4)
    return RowCrcsRef(
        file=f"{stem}.crc", sha256=sha, bytes=size, chunk_rows=CRC_CHUNK_ROWS, crc32=chunks
    )


def write_segment(
    root: Path,
    ids: Sequence[str],
    texts: Sequence[str],
    metadata_json: Sequence[str | None],
    vectors: np.ndarray,
    metadata: Sequence[dict[str, Any] | None] | None = None,
    columns: tuple[dict[str, pa.Array], list[str]] | None = None,
) -> SegmentRef:
    """Write a new (not yet committed) format-2 segment; returns its manifest entry
    (``metadata``, ``columns``: see :func:`encode_segment`).

    Every file goes through :func:`durable.write_file` (fresh file, fsync, rename, directory
    fsync); nothing names them until the manifest commits, so a crash leaves at most
    orphans. The SHA-256 recorded is of the bytes as written to disk (read back by the
    durable writer).
    """
    arrow, matrix = encode_segment(ids, texts, metadata_json, vectors, metadata, columns)
    stem = f"{SEGMENTS_DIR}/seg-{uuid.uuid4().hex}"
    vec_bytes = memoryview(matrix).cast("B")
    vec_size, vec_sha = durable.write_file(root, f"{stem}.f32", vec_bytes)
    arrow_size, arrow_sha = durable.write_file(root, f"{stem}.arrow", memoryview(arrow))
    id_ref = write_ids(root, stem, hash_strings(list(ids)))
    crc_ref = write_crcs(root, stem, row_crcs(matrix)) if len(ids) > ROW_CRCS_MIN_ROWS else None
    vref = VectorsRef(
        file=f"{stem}.f32",
        sha256=vec_sha,
        bytes=vec_size,
        block_rows=BLOCK_ROWS,
        crc32=block_crcs(matrix, BLOCK_ROWS),
    )
    return SegmentRef(
        file=f"{stem}.arrow",
        rows=len(ids),
        sha256=arrow_sha,
        bytes=arrow_size,
        crc32=f"{crc32(memoryview(arrow)):08x}",
        vectors=vref,
        ids=id_ref,
        crcs=crc_ref,
        columns=_layout_of(arrow),
        blocks=BlocksRef(ARROW_BLOCK_BYTES, chunk_crcs(arrow, ARROW_BLOCK_BYTES)),
    )


def write_ids(root: Path, stem: str, hashes: np.ndarray) -> IdsRef:
    """Write the id index ``<stem>.ids`` of a segment whose ids hash to ``hashes``."""
    raw = encode_run(hashes)
    size, sha = durable.write_file(root, f"{stem}.ids", memoryview(raw))
    return IdsRef(file=f"{stem}.ids", sha256=sha, bytes=size, crc32=f"{crc32(raw):08x}")


#: Rows a segment's upgrade checks and checksums at a time (a multiple of BLOCK_ROWS).
_UPGRADE_ROWS = 65_536


def add_derived(root: Path, ref: SegmentRef, seg: Segment) -> SegmentRef:
    """``ref`` with whatever it lacks of its id index, row checksums, column layout and
    Arrow block checksums (a format-2 to -6 segment being upgraded); the rows are untouched.
    The vectors are read in slices, each checked against its block checksums and unmapped
    again; the layout and the block checksums are read from the Arrow file once its
    whole-file checksum holds (no file is written for them)."""
    stem = ref.file[: -len(".arrow")]
    if ref.ids is None:
        ref = dataclasses.replace(ref, ids=write_ids(root, stem, hash_strings(seg.ids())))
    if ref.lacks_row_crcs:
        values = np.concatenate(
            [
                row_crcs(seg.take(np.arange(lo, min(lo + _UPGRADE_ROWS, ref.rows)), release=True))
                for lo in range(0, ref.rows, _UPGRADE_ROWS)
            ]
        )
        ref = dataclasses.replace(ref, crcs=write_crcs(root, stem, values))
    if ref.lacks_columns and isinstance(seg, MappedSegment):
        ref = dataclasses.replace(ref, columns=seg.layout())
    if ref.lacks_blocks and isinstance(seg, MappedSegment):
        ref = dataclasses.replace(ref, blocks=seg.block_checksums())
    return ref


# ----------------------------------------------------------------------------- reading
def _map(root: Path, name: str, size: int) -> tuple[mmap.mmap, tuple[int, int]]:
    """Map a whole file read-only after checking it is a regular file of ``size`` bytes
    inside the collection (opened relative to its directory, never through a link);
    returns the map and the file's (device, inode)."""
    try:
        fd = durable.open_fd(root, name)
    except (FileNotFoundError, NotADirectoryError):
        raise CorruptionError(
            f"{name} is named in the manifest but missing; run `embedsearch repair` to "
            "rebuild what can be rebuilt."
        ) from None
    except OSError as exc:
        raise CorruptionError(f"{name} cannot be opened ({exc.strerror}).") from exc
    try:
        st = os.fstat(fd)
        if st.st_size != size or size == 0:
            raise CorruptionError(
                f"{name} is {st.st_size} bytes, the manifest says {size} (truncated or "
                "replaced); run `embedsearch verify` for details and `embedsearch repair`."
            )
        try:
            return mmap.mmap(fd, size, access=mmap.ACCESS_READ), (st.st_dev, st.st_ino)
        except (OSError, ValueError) as exc:
            raise CorruptionError(f"{name} cannot be mapped ({exc}).") from exc
    finally:
        os.close(fd)


#: Whether the kernel takes read-ahead hints for file ranges (:meth:`MappedSegment.prefetch`).
_FADVISE = hasattr(os, "posix_fadvise")

#: A released take (see :meth:`MappedSegment.take`) of at most this many rows of one segment
#: is read with ``pread`` (3.8 ms for 1,000 scattered rows from the page cache); more rows are
#: copied from the map (one fault maps a whole folio of neighbouring rows) and unmapped.
PREAD_MAX_ROWS = 1024


def run_heads(
    local: np.ndarray, owner: np.ndarray | None = None, dest: np.ndarray | None = None
) -> np.ndarray:
    """Indices of ``local`` where a run of consecutive rows starts (``local`` not empty);
    with ``owner`` (the segment of each entry), also wherever the owner changes; with
    ``dest`` (where each entry is written), also wherever the destinations stop being
    consecutive, so that a run is read into one slice of its destination."""
    head = np.ones(local.size, dtype=bool)
    head[1:] = local[1:] != local[:-1] + 1
    if owner is not None:
        head[1:] |= owner[1:] != owner[:-1]
    if dest is not None:
        head[1:] |= dest[1:] != dest[:-1] + 1
    return np.flatnonzero(head)


def _runs(local: np.ndarray) -> list[tuple[int, int, int]]:
    """``(index, count, row)`` for each run of consecutive rows in ``local``: entries
    ``index .. index + count`` of ``local`` are rows ``row .. row + count``. One ``pread``
    a run instead of one a row: a 1 % filter whose rows come ten in a row (``cat < 10``
    of ``i % 1000``) gathered its 1,000 rows in 1,130 calls."""
    local = np.asarray(local, dtype=np.int64)
    if not local.size:
        return []
    at = run_heads(local)
    counts = np.diff(np.append(at, local.size))
    return list(zip(at.tolist(), counts.tolist(), local[at].tolist()))


_ARROW_MAGIC = b"ARROW1\0\0"  # an Arrow IPC file's first 8 bytes (its last 6: the first 6)
_CONTINUATION = b"\xff\xff\xff\xff"  # before each IPC message's metadata length


_BUFFERS = threading.local()


def _block_buffer(size: int) -> memoryview:
    """A buffer of at least ``size`` bytes for this thread's block reads, kept between
    them (allocating 256 KiB for each was a fifth of checking a block)."""
    buf = getattr(_BUFFERS, "buf", None)
    if buf is None or len(buf) < size:
        buf = _BUFFERS.buf = memoryview(bytearray(size))
    return buf


def _unchecked(lo: int, hi: int) -> None:
    """No check: the bytes were checked with their whole file."""


def _drop_pages(m: mmap.mmap, start: int, length: int) -> None:
    """Unmap ``length`` bytes of ``m`` from ``start`` (page-aligned) from this process:
    ``MADV_DONTNEED`` on a read-only file map; the page cache keeps the bytes."""
    if hasattr(m, "madvise"):
        with contextlib.suppress(OSError, ValueError):
            m.madvise(mmap.MADV_DONTNEED, start, length)


class MappedSegment:
    """A format-2 segment, memory-mapped at construction, verified lazily.

    Mapping at load (not at first touch) keeps the files alive for this reader even if a
    writer compacts and unlinks them meanwhile. Thread-safe: verification is idempotent.
    """

    def __init__(self, root: Path, ref: SegmentRef, dim: int, *, verified: bool = False):
        assert ref.vectors is not None
        self.ref, self.rows, self.dim = ref, ref.rows, dim
        self._arrow_map, self._arrow_file = _map(root, ref.file, ref.bytes)
        self._vec_map, self._vec_file = _map(root, ref.vectors.file, ref.vectors.bytes)
        self._ids_map = None if ref.ids is None else _map(root, ref.ids.file, ref.ids.bytes)[0]
        self._crcs_map = None if ref.crcs is None else _map(root, ref.crcs.file, ref.crcs.bytes)[0]
        self._id_run: tuple[np.ndarray, np.ndarray] | None = None
        self._root = root
        # descriptors for small reads (see _reader), opened on first need; False: unavailable
        self._fds: dict[str, int | bool] = {}
        self._arrow_base = 0  # address of the Arrow map once read (buffers point into it)
        self._matrix = np.frombuffer(self._vec_map, dtype="<f4").reshape(ref.rows, dim)
        self._block_rows = ref.vectors.block_rows
        nblocks = -(-ref.rows // self._block_rows)
        self._block_ok = np.full(nblocks, verified, dtype=bool)
        # rows checked, by their block or their own checksum: one look-up per read on the
        # warm path (zeros: calloc'd, resident only where touched; 1 B a row at most)
        self._row_ok = (np.ones if verified else np.zeros)(ref.rows, dtype=bool)
        # chunks of the .crc file checked (a few hundred bools a segment)
        chunks = 0 if ref.crcs is None else -(-ref.rows // ref.crcs.chunk_rows)
        self._chunk_ok = np.zeros(chunks, dtype=bool)
        self._chunks_all_ok = chunks == 0
        self._crcs = None if self._crcs_map is None else np.frombuffer(self._crcs_map, "<u4")
        self._batch: pa.RecordBatch | None = None  # fully validated
        self._parsed: pa.RecordBatch | None = None  # checksum and layout checked only
        self._typed_checked = False  # the typed columns checked in full (see typed)
        self._layout_columns: dict[str, pa.Array] = {}  # format 5: columns mapped so far
        self._string_plans: dict[int, tuple[int, int, int, int | None, int] | None] = {}
        self._verified_arrow = self._ids_verified = verified
        # blocks of the Arrow file checked (format 7): a few dozen bools a segment
        nblocks = 0 if ref.blocks is None else -(-ref.bytes // ref.blocks.block_bytes)
        self._arrow_ok = bytearray(b"\x01" if verified else b"\x00") * nblocks
        self._lock = threading.RLock()  # reentrant: parsing checks blocks (_reader locks)

    # ------------------------------------------------------------------ vectors
    def _check_blocks(self, blocks: np.ndarray) -> None:
        todo = blocks[~self._block_ok[blocks]]
        if not todo.size:
            return
        vref = self.ref.vectors
        assert vref is not None
        flat = memoryview(self._vec_map)
        step = self._block_rows * self.dim * 4
        todo = np.unique(todo)
        fd = self._reader() if todo.size <= 64 else None  # many blocks: scan the map
        buf = bytearray(step)
        for b in todo.tolist():
            want = int(vref.crc32[8 * b : 8 * b + 8], 16)
            if fd is not None:  # a few blocks: read, not mapped
                size = os.preadv(fd, [buf], b * step)
                got = crc32(memoryview(buf)[:size])
            else:
                got = crc32(flat[b * step : (b + 1) * step])
            if got != want:
                self._unmap_pages(b * step, min((b + 1) * step, len(flat)))
                raise CorruptionError(
                    f"{vref.file} fails its checksum at rows {b * self._block_rows}–"
                    f"{min(self.rows, (b + 1) * self._block_rows) - 1} (the file was changed "
                    "or damaged); run `embedsearch verify` and `embedsearch repair`."
                )
            self._block_ok[b] = True
            self._row_ok[b * self._block_rows : (b + 1) * self._block_rows] = True
        if fd is None:  # the checksums faulted whole blocks in: drop them (one call)
            self._unmap_pages(int(todo[0]) * step, min((int(todo[-1]) + 1) * step, len(flat)))

    def check_rows(self, local: np.ndarray, rows: np.ndarray, at: np.ndarray | None = None) -> None:
        """Check the rows ``local`` of the vector file, just read into ``rows`` (row ``i``
        of them at ``rows[at[i]]``, or ``rows[i]`` without ``at``), against their row
        checksums, unless their block or row was checked before. Raises CorruptionError
        naming the vector file if the rows are damaged, or the ``.crc`` file if it is (the
        block checksums then vouch for the rows).

        Runs for every segment a first read touches (~200 a query at 10M rows), so it is
        written for few numpy calls: one per step, the rows' bytes sliced from one
        memoryview of ``rows`` wherever the gather put them (no copy gathered first)."""
        idx = np.flatnonzero(~self._row_ok[local])
        if not idx.size:
            return
        todo = local[idx]
        if self._crcs_map is None:  # no row checksums (one block, or not yet upgraded)
            self._check_blocks(todo // self._block_rows)  # raises if the file's rows are bad
            return
        want = self._row_crc_values(todo)
        flat, w = memoryview(rows).cast("B"), self.dim * 4
        places = (idx if at is None else at[idx]).tolist()
        got = np.fromiter((crc32(flat[i * w : i * w + w], 0) for i in places), np.uint32)
        if not (got == want).all():
            bad = todo[got != want]
            self._check_blocks(bad // self._block_rows)  # raises if the rows are bad
            crcs = self.ref.crcs
            assert crcs is not None
            raise CorruptionError(
                f"{crcs.file} does not hold the checksum of row {int(bad[0])} of "
                "its segment, whose vectors are intact (the row checksums were changed or "
                "damaged); `embedsearch repair` drops the file (no rows are lost) and the "
                "next write rebuilds it."
            )
        self._row_ok[todo] = True

    def _row_crc_values(self, local: np.ndarray) -> np.ndarray:
        """The row checksums of rows ``local``, their chunks of the ``.crc`` file checked
        against the manifest on first use."""
        ref, buf = self.ref.crcs, self._crcs_map
        assert ref is not None and buf is not None and self._crcs is not None
        if not self._chunks_all_ok:
            step = ref.chunk_rows
            chunks = local // step
            todo = chunks[~self._chunk_ok[chunks]]
            for c in sorted(set(todo.tolist())):  # a few: no np.unique's sort machinery
                lo, hi = c * step, min(self.rows, (c + 1) * step)
                if f"{crc32(buf[lo * 4 : hi * 4]):08x}" != ref.crc32[8 * c : 8 * c + 8]:
                    raise CorruptionError(
                        f"{ref.file} fails its checksum at rows {lo}–{hi - 1} (the segment's "
                        "row checksums were changed or damaged); `embedsearch repair` drops "
                        "it (no rows are lost) and the next write rebuilds it."
                    )
                self._chunk_ok[c] = True
            if todo.size:
                self._chunks_all_ok = bool(self._chunk_ok.all())
        return self._crcs[local]

    def _unmap_pages(self, lo: int, hi: int) -> None:
        """Drop the pages of bytes ``lo:hi`` that checking faulted into this process.

        The checksum reads a whole block (256 rows) to hand out a few of its rows; without
        this, 200 reranked queries at 1M rows left 1.4 GB of the file mapped (RSS), though
        only their shortlists were read. The page cache keeps the bytes: a later read of
        those rows is a minor fault, not disk I/O.
        """
        page = mmap.PAGESIZE
        start, end = -(-lo // page) * page, hi // page * page
        if end > start:
            _drop_pages(self._vec_map, start, end - start)

    def vectors(self) -> np.ndarray:
        """The whole (rows, dim) matrix, a read-only view of the map (all blocks checked)."""
        if not self._block_ok.all():
            self._check_blocks(np.arange(len(self._block_ok)))
        return self._matrix

    def _reader(self, arrow: bool = False) -> int | None:
        """A descriptor for ``pread`` of the vector file (of the Arrow file if ``arrow``),
        the same inode as its map, opened once on first need; None when it cannot be had
        (unlinked by a compaction meanwhile, out of descriptors, no ``preadv``): reads then
        go through the map.

        Why not the map: a touch of a mapped page maps the whole page-cache folio around it
        into this process, up to 2 MB with large folios (transparent huge pages): one hit's
        id read through the map added 2 MB of RSS, 10 hits' ids, texts and metadata 60 MB,
        and a 1,000-row take 1 GB at 1M rows.
        """
        assert self.ref.vectors is not None
        name = self.ref.file if arrow else self.ref.vectors.file
        fd = self._fds.get(name)
        if fd is None:
            with self._lock:
                fd = self._fds.get(name)
                if fd is None:
                    fd = self._open_reader(name, self._arrow_file if arrow else self._vec_file)
                    self._fds[name] = fd
        return None if fd is False else int(fd)

    def _open_reader(self, name: str, identity: tuple[int, int]) -> int | bool:
        if not hasattr(os, "preadv"):
            return False
        try:
            fd = durable.open_fd(self._root, name)
        except (OSError, UnsafeFileError):
            return False
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != identity:
            os.close(fd)
            return False
        weakref.finalize(self, os.close, fd)
        return fd

    def prefetch(self, local: np.ndarray) -> None:
        """Ask the kernel to start reading rows ``local`` (and their row checksums) that
        this process has not checked yet, without waiting: a re-rank's shortlist is a few
        hundred rows scattered over the collection, and with the files out of the page
        cache each ``pread`` waited for its own disk read in turn. Called for every segment
        of a read before any of them is read, so the reads overlap. Rows already checked
        are left alone (they were read before: likely cached)."""
        ref, buf = self.ref.crcs, self._crcs_map
        if ref is None or buf is None or not _FADVISE:
            return
        rows = local[~self._row_ok[local]]
        if not rows.size:
            return
        fd = self._reader()
        if fd is None:
            return
        if rows.size > PREAD_MAX_ROWS:  # read through the map by blocks: one hint for
            # the span (one call per row had cost 0.8 s of a 1M-row pass in 16k pieces)
            lo, hi = int(rows.min()), int(rows.max()) + 1
            self.read_ahead(fd, lo, hi - lo)
        else:
            for _, count, row in _runs(rows):
                self.read_ahead(fd, row, count)
        self.prefetch_checksums(rows)

    def read_ahead(self, fd: int, row: int, count: int) -> None:
        """Ask the kernel to start reading rows ``row .. row + count`` of the vector file
        (``fd``: :meth:`_reader`'s) without waiting; nothing where it takes no hints."""
        if _FADVISE:
            width = self.dim * 4
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, row * width, count * width, os.POSIX_FADV_WILLNEED)

    def prefetch_checksums(self, local: np.ndarray) -> None:
        """Ask the kernel to start reading the chunks of the row checksums that rows
        ``local`` need and that this process has not checked yet (see :meth:`prefetch`)."""
        ref, buf = self.ref.crcs, self._crcs_map
        if self._chunks_all_ok or ref is None or buf is None:
            return
        chunks = local // ref.chunk_rows
        todo = chunks[~self._chunk_ok[chunks]]
        if not todo.size:
            return
        page, step = mmap.PAGESIZE, ref.chunk_rows * 4
        with contextlib.suppress(OSError, ValueError, AttributeError):
            for c in np.unique(todo).tolist():
                start = c * step // page * page
                buf.madvise(mmap.MADV_WILLNEED, start, min(step + page, len(buf) - start))

    def _pread(self, fd: int, local: np.ndarray) -> np.ndarray:
        """Rows ``local`` read with ``pread`` into a new array, nothing mapped (see
        :meth:`_reader`): 1,000 scattered rows from the page cache took 3.8 ms against
        6.5-12 ms through the map. Consecutive rows are read by one call (see :func:`_runs`):
        a filter's rows often come in runs (a date range, a source added in one batch)."""
        out = np.empty((local.size, self.dim), dtype=np.float32)
        flat, width, read = memoryview(out).cast("B"), self.dim * 4, os.preadv
        for at, count, row in _runs(local):
            size = count * width
            if read(fd, [flat[at * width : at * width + size]], row * width) != size:
                raise self.short_read()
        return out

    def short_read(self) -> CorruptionError:
        """The error for a ``pread`` of this segment's vectors that came back short."""
        return CorruptionError(
            f"{self.ref.file}: its vector file is shorter than the manifest says; "
            "run `embedsearch verify` and `embedsearch repair`."
        )

    def row_reader(self) -> tuple[int, np.ndarray] | None:
        """``(descriptor, checked)`` for reading rows of the vector file with ``pread`` and
        checking them with :meth:`check_rows`: ``checked[row]`` says the row's bytes were
        checked before (no need to again). ``None`` where there is no descriptor (the file
        was unlinked: read through the map with :meth:`take`). :meth:`Table.take` reads a
        re-rank's rows across every segment this way, one ``pread`` a run, without a call
        per segment."""
        fd = self._reader()
        return None if fd is None else (fd, self._row_ok)

    @property
    def reads_ahead(self) -> bool:
        """Whether rows read for the first time are worth :meth:`read_ahead`: with row
        checksums only (without them a check reads the rows' whole block itself)."""
        return self._crcs_map is not None

    def take(self, local: np.ndarray, *, release: bool = False) -> np.ndarray:
        """Rows ``local`` (in order), copied out after their blocks are checked.

        ``release``: leave no page of the file mapped in this process: up to
        :data:`PREAD_MAX_ROWS` rows are read with ``pread`` (see :meth:`_pread`), more are
        copied from the map and their span unmapped again (with large page-cache folios a
        5,000-row gather at 5M rows had mapped 7.6 GB: every touched 2 MB folio)."""
        if not local.size:
            return self._matrix[local]
        fd = self._reader() if release and local.size <= PREAD_MAX_ROWS else None
        if fd is not None and self._crcs_map is not None:  # each row checked as read
            out = self._pread(fd, local)
            self.check_rows(local, out)
            return out
        blocks = local // self._block_rows
        self._check_blocks(blocks)
        if fd is not None:
            return self._pread(fd, local)
        rows = np.take(self._matrix, local, axis=0)  # 0.6-0.7x fancy indexing's time
        if release:  # one call over the span of the rows' blocks, not one per block: a
            # take of 1,000 scattered rows made 1,000 madvise calls (10 ms of a 17 ms query)
            step = self._block_rows * self.dim * 4
            lo, hi = int(blocks.min()), int(blocks.max()) + 1
            self._unmap_pages(lo * step, min(hi * step, len(self._vec_map)))
        return rows

    # ------------------------------------------------------------------ columns
    def batch(self) -> pa.RecordBatch:
        """The Arrow columns (ids, texts, metadata, typed), checked on first use: the
        file's CRC-32, then every offset and string (``validate(full=True)``)."""
        batch = self._batch
        if batch is not None:
            return batch
        with self._lock:
            if self._batch is None:
                parsed = self._parsed or self._open_batch()
                self._check_whole_arrow()
                try:
                    parsed.validate(full=True)  # once per process: offsets, valid UTF-8
                except (pa.ArrowException, ValueError) as exc:
                    raise CorruptionError(
                        f"{self.ref.file} cannot be read as an Arrow segment ({exc})."
                    ) from exc
                # checking touched every page; reads need only a few of them
                _drop_pages(self._arrow_map, 0, len(self._arrow_map))
                self._batch = parsed
            return self._batch

    def _parsed_batch(self, *, whole: bool = True) -> pa.RecordBatch:
        """The Arrow columns with the file's checksum and layout checked but not yet every
        offset and string: enough to find where :meth:`strings` reads with ``pread``, which
        bounds-checks and decodes each value it reads. The full validation read every page
        of the file (1.8 ms of the 3 ms a 4.6 MB segment took on first touch): at 5M rows the
        first queries of a process touch about 100 segments. ``whole=False`` (a format-7
        segment): only the blocks of the file's header and footer are checked, and whoever
        reads the columns' bytes checks their blocks (as :meth:`strings` does)."""
        if self._batch is not None:
            return self._batch
        with self._lock:
            if self._parsed is None:
                self._parsed = self._open_batch()
        if whole:
            self._check_whole_arrow()
        return self._parsed

    # ------------------------------------------------------------ Arrow checksums
    def _check_whole_arrow(self) -> None:
        """Check the whole Arrow file once: each block not yet checked against the
        manifest's block checksums (format 7), else the file's CRC-32."""
        if self._verified_arrow:
            return
        if self.ref.blocks is not None:
            self._check_arrow(0, self.ref.bytes)  # (read with pread: no pages mapped)
        elif f"{crc32(self._arrow_map):08x}" != self.ref.crc32:
            raise CorruptionError(
                f"{self.ref.file} fails its checksum (the file was changed or damaged); run "
                "`embedsearch verify` for details and `embedsearch repair` to quarantine it."
            )
        else:  # the checksum touched every page; reads need only a few of them
            _drop_pages(self._arrow_map, 0, len(self._arrow_map))
        self._verified_arrow = True

    def _check_arrow(self, lo: int, hi: int) -> None:
        """Check the blocks of the Arrow file that hold its bytes ``lo:hi`` (format 7), each
        once per process, read with ``pread`` rather than through the map (see
        :meth:`_reader`)."""
        if self._verified_arrow:
            return
        blocks = self.ref.blocks
        assert blocks is not None
        if not 0 <= lo <= hi <= self.ref.bytes:
            raise CorruptionError(
                f"{self.ref.file} cannot be read back as checked (bytes {lo}–{hi} lie outside "
                "it); run `embedsearch verify` and `embedsearch repair`."
            )
        step = blocks.block_bytes
        for b in range(lo // step, -(-hi // step)):
            if self._arrow_ok[b]:
                continue
            start, end = b * step, min((b + 1) * step, self.ref.bytes)
            fd = self._reader(arrow=True)
            if fd is not None:
                buf = _block_buffer(step)[: end - start]
                got = crc32(buf) if os.preadv(fd, [buf], start) == end - start else -1
            else:  # no descriptor: through the map, its pages dropped again
                got = crc32(memoryview(self._arrow_map)[start:end])
                first_page = start // mmap.PAGESIZE * mmap.PAGESIZE
                _drop_pages(self._arrow_map, first_page, end - first_page)
            if got != int(blocks.crc32[8 * b : 8 * b + 8], 16):
                raise self._block_failed(b)
            self._arrow_ok[b] = 1

    def _block_check(self) -> Callable[[int, int], None]:
        """What :meth:`strings` calls before it reads bytes ``lo:hi``: nothing when the
        whole file was checked (or has no block checksums: it was, before parsing), else a
        look at the flags of the range's first and last block, :meth:`_check_arrow` only
        when one of them is not checked yet (a call per value read was 20 % of reading 10
        hits once their blocks were checked)."""
        blocks = self.ref.blocks
        if blocks is None or self._verified_arrow:
            return _unchecked
        ok, step, size, slow = self._arrow_ok, blocks.block_bytes, self.ref.bytes, self._check_arrow

        def check(lo: int, hi: int) -> None:
            if hi > lo and (
                hi - lo > step or hi > size or not (ok[lo // step] and ok[(hi - 1) // step])
            ):
                slow(lo, hi)

        return check

    def _block_failed(self, b: int) -> CorruptionError:
        assert self.ref.blocks is not None
        step = self.ref.blocks.block_bytes
        return CorruptionError(
            f"{self.ref.file} fails its checksum at bytes {b * step}–"
            f"{min((b + 1) * step, self.ref.bytes) - 1} (the file was changed or damaged); run "
            "`embedsearch verify` for details and `embedsearch repair` to quarantine it."
        )

    def _check_framing(self) -> bool:
        """Check the blocks holding the Arrow file's header (the schema message and the
        record batch's metadata) and its footer, found by the IPC framing's lengths, each
        length read from a block already checked; False when the framing is not the one this
        code writes (the caller then checks the whole file). Parsing reads nothing else."""
        m, size = self._arrow_map, self.ref.bytes
        if size < 32:
            return False
        self._check_arrow(0, 16)
        if m[:8] != _ARROW_MAGIC or m[8:12] != _CONTINUATION:
            return False
        pos = 16 + int.from_bytes(m[12:16], "little", signed=True)  # the batch's message
        if not 16 <= pos <= size - 18:
            return False
        self._check_arrow(pos, pos + 8)
        if m[pos : pos + 4] != _CONTINUATION:
            return False
        head = pos + 8 + int.from_bytes(m[pos + 4 : pos + 8], "little", signed=True)
        self._check_arrow(size - 10, size)
        if m[size - 6 :] != _ARROW_MAGIC[:6]:
            return False
        tail = size - 10 - int.from_bytes(m[size - 10 : size - 6], "little", signed=True)
        if not pos + 8 <= head <= tail <= size - 10:
            return False
        self._check_arrow(0, head)
        self._check_arrow(tail, size)
        return True

    def block_checksums(self, step: int | None = None) -> BlocksRef:
        """The CRC-32 of each ``step`` bytes (:data:`ARROW_BLOCK_BYTES`) of the Arrow file
        (format 7), summed once the whole file's checksum holds (an upgrade's, and
        ``verify``'s comparison)."""
        step = step or ARROW_BLOCK_BYTES
        self._check_whole_arrow()
        out = BlocksRef(step, chunk_crcs(self._arrow_map, step))
        _drop_pages(self._arrow_map, 0, len(self._arrow_map))
        return out

    def _open_batch(self) -> pa.RecordBatch:
        name = self.ref.file
        if self.ref.blocks is None or not self._check_framing():
            self._check_whole_arrow()
        try:
            whole = pa.py_buffer(self._arrow_map)
            self._arrow_base = whole.address
            reader = pa.ipc.open_file(whole)
            if reader.num_record_batches != 1:
                raise ValueError("expected one record batch")
            batch = reader.get_batch(0)
            batch.validate()  # the layout; batch() validates offsets and strings too
            # the checksum touched every page; reads need only a few of them
            _drop_pages(self._arrow_map, 0, len(self._arrow_map))
        except (pa.ArrowException, ValueError, OSError) as exc:
            raise CorruptionError(f"{name} cannot be read as an Arrow segment ({exc}).") from exc
        schema = batch.schema
        try:
            fields = [(f.name, f.type) for f in schema]
        except UnicodeDecodeError as exc:  # a damaged footer: field names not UTF-8
            raise CorruptionError(f"{name} has unreadable column names ({exc}).") from exc
        if batch.num_rows != self.rows or fields[:3] != base_schema():
            raise CorruptionError(
                f"{name} has an unexpected schema or row count; it does not belong to this "
                "collection. Run `embedsearch repair`."
            )
        for field_name, field_type in fields[3:]:
            if not field_name.startswith(TYPED_PREFIX) or field_type not in _TYPED_TYPES:
                raise CorruptionError(f"{name} has an unexpected column {field_name[:60]!r}.")
        return batch

    def release_columns(self) -> None:
        """Unmap the Arrow file's pages from this process (the page cache keeps them), e.g.
        after typed columns were built from it."""
        _drop_pages(self._arrow_map, 0, len(self._arrow_map))

    def release_vectors(self) -> None:
        """Unmap the vector file's pages from this process (the page cache keeps them): after
        a writer's pass over every row (an index build or tuning), which had left the whole
        file mapped, RSS that looked like memory held (1.3 GB of a 1M-row build's 2.35 GB
        peak). A later read of those rows is a minor fault, not disk I/O."""
        _drop_pages(self._vec_map, 0, len(self._vec_map))

    def strings(self, column: int, local: np.ndarray) -> list[str | None]:
        """Values of string column ``column`` (0 ids, 1 texts, 2 metadata JSON) at rows
        ``local``, read with ``pread`` from the checked Arrow file, so that nothing is mapped
        into this process (see :meth:`_reader`); through the map when that is not possible."""
        plan = self._string_plan(column)
        if plan is None:
            arr = self.batch().column(column)
            return [arr[i].as_py() for i in local.tolist()]
        fd, at, body, validity_at, first = plan
        bounds = np.empty(2, dtype="<i4")
        out: list[str | None] = []
        check = self._block_check()  # format 7: the blocks each value is read from
        try:
            for i in local.tolist():
                if validity_at is not None:
                    bit = first + i
                    check(validity_at + bit // 8, validity_at + bit // 8 + 1)
                    byte = os.pread(fd, 1, validity_at + bit // 8)
                    if len(byte) != 1:
                        raise ValueError("short read")
                    if not byte[0] >> (bit % 8) & 1:
                        out.append(None)
                        continue
                check(at + 4 * i, at + 4 * i + 8)
                if os.preadv(fd, [bounds], at + 4 * i) != 8:
                    raise ValueError("short read")
                lo, hi = int(bounds[0]), int(bounds[1])
                if not 0 <= lo <= hi:
                    raise ValueError(f"string offsets {lo}, {hi} out of order")
                check(body + lo, body + hi)
                raw = os.pread(fd, hi - lo, body + lo) if hi > lo else b""
                if len(raw) != hi - lo:
                    raise ValueError("short read")
                out.append(raw.decode("utf-8"))
        except (ValueError, OSError) as exc:  # the file changed since it was checked
            raise CorruptionError(
                f"{self.ref.file} cannot be read back as checked ({exc}); run "
                "`embedsearch verify` and `embedsearch repair`."
            ) from exc
        return out

    def _string_plan(self, column: int) -> tuple[int, int, int, int | None, int] | None:
        """Where ``pread`` finds string column ``column`` in the Arrow file: (descriptor,
        offsets' file position, data's file position, validity bitmap's file position or
        None when the column has no nulls, the array's first row), or None when it must be
        read through the map. Worked out once per column: at 1M rows, ten hits fall in
        about eight segments, and redoing it for each of their three columns was half the
        time of hydrating the hits."""
        plans = self._string_plans
        if column not in plans:
            arr = self._parsed_batch(whole=False).column(column)
            validity, offsets, data = arr.buffers()
            fd = self._reader(arrow=True)
            base, end = self._arrow_base, self._arrow_base + len(self._arrow_map)
            inside = offsets is not None and base <= offsets.address < end
            inside = inside and (data is None or base <= data.address < end)
            nulls = validity is not None and arr.null_count > 0
            if nulls:
                assert validity is not None
                inside = inside and base <= validity.address < end
            if fd is None or not inside or arr.type != pa.string():
                plans[column] = None
            else:
                assert offsets is not None
                plans[column] = (
                    fd,
                    offsets.address - base + 4 * arr.offset,
                    0 if data is None else data.address - base,
                    validity.address - base if nulls and validity is not None else None,
                    arr.offset,
                )
        return plans[column]

    def ids(self) -> pa.StringArray:
        return self.batch().column(0)

    def id_run(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(sorted id hashes, row of each) from the segment's id index, checked on first
        use; None for a segment written before format 3 (its ids are hashed instead)."""
        if self._ids_map is None:
            return None
        run = self._id_run
        if run is None:
            with self._lock:
                if self._id_run is None:
                    self._id_run = self._open_ids()
                run = self._id_run
        return run

    def _open_ids(self) -> tuple[np.ndarray, np.ndarray]:
        ref, buf = self.ref.ids, self._ids_map
        assert ref is not None and buf is not None
        if not self._ids_verified and f"{crc32(buf):08x}" != ref.crc32:
            raise CorruptionError(
                f"{ref.file} fails its checksum (the segment's id index was changed or "
                "damaged); `embedsearch repair` drops it (no rows are lost) and the next "
                "write rebuilds it."
            )
        try:
            return decode_run(memoryview(buf), self.rows)
        except ValueError as exc:
            raise CorruptionError(
                f"{ref.file} is not the id index of its segment ({exc})."
            ) from exc

    def texts(self) -> pa.StringArray:
        return self.batch().column(1)

    def metadata_json(self) -> pa.StringArray:
        return self.batch().column(2)

    def typed(
        self, keys: Sequence[str] | None = None
    ) -> tuple[dict[str, pa.Array], list[str] | None]:
        """(typed columns by key, keys that are present but untyped in this segment).

        A key in neither is held by no row of the segment. ``keys``: the keys wanted (all
        when None; the dict may hold more). A format-5 segment's columns are mapped from the
        layout its manifest entry gives, each checked by its own CRC-32 on first use: the
        Arrow file is neither parsed nor checksummed whole (its texts and metadata JSON are
        most of its bytes). Older segments parse the file (whole-file CRC-32) and check only
        these columns in full (offsets and strings), not the texts and the metadata JSON,
        which a filter does not read: at 10M rows the full check of every segment's batch
        was 0.21 s of a fresh process's first filtered query."""
        if self.ref.columns is not None and self._batch is None:
            return self._typed_from_layout(self.ref.columns, keys)
        batch = self._parsed_batch()
        checked = self._typed_checked or batch is self._batch
        cols: dict[str, pa.Array] = {}
        for i, f in enumerate(batch.schema):
            if i < 3:
                continue
            column = batch.column(i)
            if not checked:
                try:
                    column.validate(full=True)
                except (pa.ArrowException, ValueError) as exc:
                    raise CorruptionError(
                        f"{self.ref.file} cannot be read as an Arrow segment ({exc})."
                    ) from exc
            cols[f.name[len(TYPED_PREFIX) :]] = column
        self._typed_checked = True  # a filter on another key later does not check them again
        raw = (batch.schema.metadata or {}).get(_UNTYPED_KEY, b"[]")
        try:
            untyped = json.loads(raw)
            if not isinstance(untyped, list) or not all(isinstance(k, str) for k in untyped):
                raise ValueError("not a list of keys")
        except ValueError as exc:
            raise CorruptionError(f"{self.ref.file} has unreadable column notes ({exc}).") from exc
        return cols, untyped

    def _typed_from_layout(
        self, layout: ColumnsRef, keys: Sequence[str] | None
    ) -> tuple[dict[str, pa.Array], list[str] | None]:
        want = None if keys is None else set(keys)
        cols: dict[str, pa.Array] = {}
        for c in layout.typed:
            if want is not None and c.key not in want:
                continue
            column = self._layout_columns.get(c.key)
            if column is None:
                with self._lock:
                    column = self._layout_columns.get(c.key)
                    if column is None:
                        column = self._layout_columns[c.key] = self._map_column(c)
            cols[c.key] = column
        return cols, list(layout.untyped)

    def _map_column(self, c: ColumnLayout) -> pa.Array:
        """Column ``c`` as an Arrow array over the map (no copy), its span's CRC-32 checked
        unless this process wrote the segment, and validated in full (a string column's
        offsets must stay inside its bytes)."""
        lo, hi = c.span
        view = memoryview(self._arrow_map)
        if not self._verified_arrow and f"{crc32(view[lo:hi]):08x}" != c.crc32:
            raise CorruptionError(
                f"{self.ref.file} fails the checksum of its column {c.key[:60]!r} (the file "
                "was changed or damaged); run `embedsearch verify` for details and "
                "`embedsearch repair` to quarantine it."
            )
        whole = pa.py_buffer(self._arrow_map)
        buffers = [None if b is None else whole.slice(b[0], b[1]) for b in c.buffers]
        try:
            column = pa.Array.from_buffers(_ARROW_TYPES[c.type], self.rows, buffers, c.nulls)
            column.validate(full=True)
            if column.null_count != c.nulls:
                raise ValueError(f"{column.null_count} nulls where the manifest says {c.nulls}")
        except (pa.ArrowException, ValueError) as exc:
            raise CorruptionError(
                f"{self.ref.file} cannot be read as its manifest describes column "
                f"{c.key[:60]!r} ({exc})."
            ) from exc
        return column  # its pages are dropped with the rest by release_columns

    def layout(self) -> ColumnsRef:
        """Where this segment's typed columns lie in its Arrow file (see
        :func:`column_layout`), read from the file once its whole-file checksum holds."""
        batch = self._parsed_batch()
        return column_layout(batch, self._arrow_base, self._arrow_map)


class MemorySegment:
    """A segment held in memory: format-1 segments once read, and tests' plain tables."""

    def __init__(
        self, ids: pa.Array, texts: pa.Array, metadata_json: pa.Array, vectors: np.ndarray
    ) -> None:
        self.rows, self.dim = len(ids), vectors.shape[1]
        self._ids, self._texts, self._meta = ids, texts, metadata_json
        self._matrix = vectors

    def vectors(self) -> np.ndarray:
        return self._matrix

    def take(self, local: np.ndarray, *, release: bool = False) -> np.ndarray:
        return np.take(self._matrix, local, axis=0)

    def prefetch(self, local: np.ndarray) -> None:
        """Nothing to read ahead: held in memory."""

    def release_columns(self) -> None:
        """Nothing is mapped: held in memory."""

    def release_vectors(self) -> None:
        """Nothing is mapped: held in memory."""

    def strings(self, column: int, local: np.ndarray) -> list[str | None]:
        arr = (self._ids, self._texts, self._meta)[column]
        return [arr[i].as_py() for i in local.tolist()]

    def ids(self) -> pa.StringArray:
        return self._ids

    def id_run(self) -> tuple[np.ndarray, np.ndarray] | None:
        """None: held in memory, its ids are hashed when looked up."""
        return None

    def texts(self) -> pa.StringArray:
        return self._texts

    def metadata_json(self) -> pa.StringArray:
        return self._meta

    def typed(
        self, keys: Sequence[str] | None = None
    ) -> tuple[dict[str, pa.Array], list[str] | None]:
        return {}, None  # no typed columns stored: every key is decided from the JSON


class LegacySegment(MemorySegment):
    """A format-1 (Parquet) segment, read whole and verified at load, as version 1 did."""

    def __init__(self, root: Path, ref: SegmentRef, dim: int):
        from . import store

        data = store.read_segment(root, ref, dim)
        super().__init__(pa.array(data.ids, pa.string()), data.texts, data.metadata, data.vectors)
        self.ref = ref


Segment = MappedSegment | MemorySegment


def row_checksums(seg: Segment) -> np.ndarray:
    """The CRC-32 of every vector row of ``seg``: its ``.crc`` file's values (checked chunk
    by chunk against the manifest), or, for a segment without one, computed from its rows
    (their blocks checked first). Two segments whose values agree row for row hold the same
    vectors in the same order (to CRC-32's chance of 1 in 2^32 per differing row)."""
    if isinstance(seg, MappedSegment) and seg._crcs_map is not None:
        return np.asarray(seg._row_crc_values(np.arange(seg.rows)), dtype=np.uint32)
    return row_crcs(seg.vectors())


def open_segment(root: Path, ref: SegmentRef, dim: int, *, verified: bool = False) -> Segment:
    """Open a committed segment of either format (format 1 is read whole)."""
    if ref.legacy:
        return LegacySegment(root, ref, dim)
    return MappedSegment(root, ref, dim, verified=verified)


def verify_segment(root: Path, ref: SegmentRef, dim: int) -> Segment:
    """Hash every byte of a segment against the manifest (for ``verify`` and ``repair``)."""
    from . import store

    if ref.legacy:
        return LegacySegment(root, ref, dim)
    for name, want in ((ref.file, ref.sha256), (ref.vectors.file, ref.vectors.sha256)):  # type: ignore[union-attr]
        store.verified_path(root, store.FileRef(name, 0, want, 0))
    # the whole file's CRC-32 (its blocks' checksums are checked apart: verify_blocks)
    seg = MappedSegment(root, dataclasses.replace(ref, ids=None, crcs=None, blocks=None), dim)
    seg.vectors()
    seg.batch()
    return seg


def verify_blocks(root: Path, ref: SegmentRef, seg: Segment) -> None:
    """Check a segment's Arrow block checksums (format 7) against its verified file."""
    if (
        ref.blocks is not None
        and isinstance(seg, MappedSegment)
        and seg.block_checksums(ref.blocks.block_bytes) != ref.blocks
    ):
        raise CorruptionError(
            f"the manifest's block checksums of {ref.file} do not match the file (the "
            "manifest was changed or damaged); reads would refuse the blocks that differ."
        )


def verify_columns(root: Path, ref: SegmentRef, seg: Segment) -> None:
    """Check a segment's typed column layout (format 5) against its verified Arrow file."""
    if (
        ref.columns is not None
        and isinstance(seg, MappedSegment)
        and not _layout_holds(seg, seg.layout(), ref.columns)
    ):
        raise CorruptionError(
            f"the manifest's layout of the typed columns of {ref.file} does not match the "
            "file (the manifest was changed or damaged); filters would misread them."
        )


def _layout_holds(seg: MappedSegment, found: ColumnsRef, recorded: ColumnsRef) -> bool:
    """Whether the ``recorded`` layout of ``seg``'s typed columns is the one ``found`` in its
    file, but for where an empty buffer lies: formats 5-6 recorded some at Arrow's shared
    empty buffer's address (read clamped into the file, see ``ColumnLayout.from_json``), and
    such a column's checksum covers its span as recorded, which is checked on the bytes."""
    if found == recorded:
        return True
    if found.untyped != recorded.untyped or len(found.typed) != len(recorded.typed):
        return False
    view = memoryview(seg._arrow_map)
    for a, b in zip(found.typed, recorded.typed):
        if (a.key, a.type, a.nulls) != (b.key, b.type, b.nulls):
            return False
        for x, y in zip(a.buffers, b.buffers):
            if x != y and not (x is not None and y is not None and x[1] == y[1] == 0):
                return False
        lo, hi = b.span
        if a != b and f"{crc32(view[lo:hi]):08x}" != b.crc32:
            return False
    return True


def verify_ids(root: Path, ref: SegmentRef, seg: Segment) -> None:
    """Check a segment's id index (format 3) byte for byte against the manifest and
    against the segment's ids (``seg``: the segment, already verified).

    Raises:
        CorruptionError: the index is missing, fails its SHA-256, or does not index ``seg``.
    """
    from . import store

    if ref.ids is None:
        return
    with store.open_verified(root, store.FileRef(ref.ids.file, 0, ref.ids.sha256, 0)) as fh:
        raw = fh.read()  # the bytes whose SHA-256 was just checked
    if f"{crc32(raw):08x}" != ref.ids.crc32:  # what readers check
        raise CorruptionError(f"{ref.ids.file} does not match the CRC-32 in the manifest.")
    try:
        hashes, _ = decode_run(raw, ref.rows)
    except ValueError as exc:
        raise CorruptionError(
            f"{ref.ids.file} is not the id index of its segment ({exc})."
        ) from exc
    if not np.array_equal(hashes, np.sort(hash_strings(seg.ids()))):
        raise CorruptionError(f"{ref.ids.file} does not index the ids of {ref.file}.")


def verify_crcs(root: Path, ref: SegmentRef, seg: Segment) -> None:
    """Check a segment's row checksums (format 4) byte for byte against the manifest and
    against its vectors (``seg``: the segment, already verified).

    Raises:
        CorruptionError: the file is missing, fails its SHA-256 or chunk checksums, or does
            not hold the checksums of ``seg``'s rows.
    """
    from . import store

    if ref.crcs is None:
        return
    crcs = ref.crcs
    with store.open_verified(root, store.FileRef(crcs.file, 0, crcs.sha256, 0)) as fh:
        raw = fh.read()  # the bytes whose SHA-256 was just checked
    if chunk_crcs(raw, crcs.chunk_rows * 4) != crcs.crc32:  # what readers check
        raise CorruptionError(f"{crcs.file} does not match the CRC-32s in the manifest.")
    if not np.array_equal(np.frombuffer(raw, dtype="<u4"), row_crcs(seg.vectors())):
        raise CorruptionError(f"{crcs.file} does not hold the row checksums of {ref.file}.")
