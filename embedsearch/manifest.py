"""The typed manifest of a collection: parsed and validated in one place.

``manifest.json`` is a collection's commit point (see :mod:`embedsearch.store`). Code reads
it only through :class:`Manifest`, a frozen dataclass built by :meth:`Manifest.from_json`,
which checks every field before anything else sees it: a checksum proves only that a file
is as *some* writer left it, and a crafted collection can carry a valid one. Whatever is
wrong becomes a ``ValueError`` naming the field, which :func:`embedsearch.store.read_manifest`
turns into a :class:`~embedsearch.errors.CorruptionError`.

Format versions:

* **1** — segments are Parquet files (``segments/seg-*.parquet``) with the vector column
  inside; opening one reads and hashes every byte.
* **2** — segments are an uncompressed Arrow IPC file (``seg-*.arrow``: id, text, metadata
  JSON and typed metadata columns) plus a raw float32 file (``seg-*.f32``), both memory-mapped;
  see :mod:`embedsearch.segment`. A version-2 manifest may still name version-1 segments
  (a collection part-way through :meth:`Collection.upgrade`); writers upgrade them first.
* **3** — as 2, and a segment may carry its id index (``seg-*.ids``: sorted id hashes, see
  :mod:`embedsearch.idhash`), so that a fresh process finds ids without reading them all.
  Writers give every segment one (segments from format 2 get theirs on the first write, or
  from ``embedsearch upgrade``); code that reads only format 2 refuses the collection,
  since it would not keep these files.
* **4** — as 3, and a segment may carry its row checksums (``seg-*.crc``: the CRC-32 of
  each vector row, with one CRC-32 per chunk of that file in the manifest), so that a reader
  checks the rows a query re-ranks, not the whole 64-row blocks they sit in (a fresh process
  at 5M rows read 96 KiB for each re-ranked row). Segments from formats 2-3 get theirs on
  the first write or from ``embedsearch upgrade``; code that reads at most format 3 refuses
  the collection.
* **5** — as 4, and a segment may carry the layout of its typed metadata columns
  (``columns``: for each column of the Arrow file that a filter reads, its type, null count,
  where its buffers lie and the CRC-32 of the bytes they span; and the keys left untyped),
  so that a filter maps and checks only the columns it reads, without parsing the Arrow file
  or checksumming its texts (at 10M rows the whole files' CRC-32 was 0.38 s of a fresh
  process's first filtered query). Segments from formats 2-4 get theirs on the first write
  or from ``embedsearch upgrade`` (no file is written: the layout is read from the checked
  Arrow file); code that reads at most format 4 refuses the collection.
* **6** — as 5, and the saved index may carry tail files (``index.tail``: ``index-*.tail``,
  each the FAISS codes of the rows added after the index file and the tails before it), so
  that an add writes the codes of its own rows instead of the whole index again (at 5M rows
  a 277 MiB file rewritten for every 10k rows added). No file changes: collections of
  formats 1-5 are format 6 from their next commit; code that reads at most format 5 refuses
  the collection (its cleanup would delete the tails it does not know).
* **7** — as 6, and a segment may carry the CRC-32 of each block of its Arrow file
  (``blocks``: one per ``block_bytes`` bytes), so that reading a hit's id, text and metadata
  checks only the few blocks holding them, and parsing the file only the blocks of its
  header and footer, instead of the whole file's CRC-32 on a process's first touch (at 1M
  rows, ten hits in twenty 18 MB segments made a fresh process's first keyword query
  checksum 370 MB: 46 of its 130 ms). Segments from formats 2-6 get theirs on the first
  write or from ``embedsearch upgrade`` (no file is written: the blocks are summed from the
  file once its whole-file checksum holds); code that reads at most format 6 refuses the
  collection.

Example:
    >>> m = Manifest.from_json(json.loads(raw))
    >>> m.dim, len(m.segments), m.index.spec
    (384, 12, 'auto')
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

FORMAT_NAME = "embedsearch-collection"
#: Written by this code. 1 = Parquet segments; 2 = Arrow IPC + float32 segments; 3 = 2 +
#: each segment's id index; 4 = 3 + each segment's row checksums; 5 = 4 + each segment's
#: typed column layout; 6 = 5 + the saved index's tail files; 7 = 6 + each segment's Arrow
#: file's block checksums.
FORMAT_VERSION = 7
SEGMENTS_DIR = "segments"
#: Largest manifest accepted (bytes). 10M rows in 2,048-row segments is ~2 MB of JSON.
MAX_MANIFEST_BYTES = 256 << 20
_HEX32 = "[0-9a-f]{32}"
SEGMENT_RE = re.compile(rf"{SEGMENTS_DIR}/seg-{_HEX32}\.(parquet|arrow)")
VECTORS_RE = re.compile(rf"{SEGMENTS_DIR}/seg-{_HEX32}\.f32")
IDS_RE = re.compile(rf"{SEGMENTS_DIR}/seg-{_HEX32}\.ids")
CRCS_RE = re.compile(rf"{SEGMENTS_DIR}/seg-{_HEX32}\.crc")
#: The keys of a segment entry that name its other files (beside its main ``file``).
SEGMENT_PARTS = ("vectors", "ids", "crcs")
TOMBSTONE_RE = re.compile(rf"{SEGMENTS_DIR}/del-{_HEX32}\.parquet")
INDEX_RE = re.compile(rf"index-{_HEX32}\.faiss")
TAIL_RE = re.compile(rf"index-{_HEX32}\.tail")
#: What a file named inside a manifest may look like. Anything else (``../x``, absolute
#: paths) is refused before it is opened.
FILE_NAME_RE = re.compile(
    rf"{SEGMENT_RE.pattern}|{VECTORS_RE.pattern}|{IDS_RE.pattern}|{CRCS_RE.pattern}|"
    rf"{TOMBSTONE_RE.pattern}|"
    rf"{INDEX_RE.pattern}|{TAIL_RE.pattern}"
)
#: A FAISS factory string as a manifest may hold it (checked by FAISS only when used).
_SPEC_RE = re.compile(r"[A-Za-z0-9_,.=+\- ]{1,200}")
_SHA_RE = re.compile(r"[0-9a-f]{64}")


def _int(obj: dict[str, Any], key: str, where: str, *, low: int = 0) -> int:
    val = obj.get(key)
    if type(val) is not int or val < low:
        raise ValueError(f"{where}.{key} is not an integer >= {low}")
    return val


def _str(obj: dict[str, Any], key: str, where: str) -> str:
    val = obj.get(key)
    if not isinstance(val, str):
        raise ValueError(f"{where}.{key} is not a string")
    return val


def _obj(val: Any, where: str) -> dict[str, Any]:
    if not isinstance(val, dict):
        raise ValueError(f"{where} is not an object")
    return val


def _no_repeats(entries: list[Any]) -> None:
    """Refuse a file listed twice (its rows would show twice) in O(entries), up front, so a
    crafted manifest naming one segment 20,000 times is refused in milliseconds."""
    seen: set[str] = set()
    for entry in entries:
        name = entry.get("file") if isinstance(entry, dict) else None
        if isinstance(name, str):
            if name in seen:
                raise ValueError(f"{name[:80]} is listed more than once")
            seen.add(name)


@dataclass(frozen=True)
class FileRef:
    """A file the manifest names: its name inside the collection, row count and checksum."""

    file: str
    rows: int
    sha256: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "rows": self.rows, "sha256": self.sha256, "bytes": self.bytes}

    @classmethod
    def from_json(
        cls, obj: Any, where: str = "file", pattern: re.Pattern[str] = FILE_NAME_RE
    ) -> FileRef:
        obj = _obj(obj, where)
        name, sha = _named_file(obj, where, pattern, "a file name of this collection")
        return cls(name, _int(obj, "rows", where), sha, _int(obj, "bytes", where))

    @classmethod
    def check(cls, obj: Any, where: str) -> None:
        """Raise ValueError unless ``obj`` is a well-formed file entry of a manifest."""
        cls.from_json(obj, where)


def _named_file(
    obj: dict[str, Any], where: str, pattern: re.Pattern[str], what: str
) -> tuple[str, str]:
    """The ``file`` (matching ``pattern``) and ``sha256`` of a manifest file entry."""
    name = _str(obj, "file", where)
    if not pattern.fullmatch(name):
        raise ValueError(f"{where}.file {name[:80]!r} is not {what}")
    sha = _str(obj, "sha256", where)
    if not _SHA_RE.fullmatch(sha):
        raise ValueError(f"{where}.sha256 is not a SHA-256 hex digest")
    return name, sha


def _sized_file(
    obj: dict[str, Any], where: str, pattern: re.Pattern[str], what: str, size: int, rule: str
) -> tuple[str, str, int]:
    """The ``file``, ``sha256`` and ``bytes`` of an entry whose size follows from the rows
    (``rule`` says how, for the message)."""
    name, sha = _named_file(obj, where, pattern, what)
    got = _int(obj, "bytes", where)
    if got != size:
        raise ValueError(f"{where}.bytes is {got}, not {rule} = {size}")
    return name, sha, got


def _crc(obj: dict[str, Any], where: str) -> str:
    """The ``crc32`` of an entry: a CRC-32 as 8 hex digits."""
    crc = _str(obj, "crc32", where)
    if not re.fullmatch(r"[0-9a-f]{8}", crc):
        raise ValueError(f"{where}.crc32 is not a CRC-32 hex digest")
    return crc


def _chunked_crc(
    obj: dict[str, Any], where: str, size_key: str, rows: int, what: str
) -> tuple[int, str]:
    """``(rows per piece, crc32)`` of an entry checked piece by piece: ``crc32`` must hold
    one CRC-32 (8 hex digits) per ``size_key`` rows of the ``rows``."""
    step = _int(obj, size_key, where, low=1)
    crc = _str(obj, "crc32", where)
    pieces = -(-rows // step)
    if len(crc) != 8 * pieces or not re.fullmatch(r"[0-9a-f]*", crc):
        raise ValueError(f"{where}.crc32 does not hold {pieces} {what} checksums")
    return step, crc


@dataclass(frozen=True)
class VectorsRef:
    """The raw float32 file of a version-2 segment: ``rows × dim`` little-endian floats.

    ``crc32`` holds one CRC-32 per block of ``block_rows`` rows (8 hex digits each), so a
    reader checks only the blocks a query touches, once per process; ``sha256`` covers the
    whole file for ``verify``.
    """

    file: str
    sha256: str
    bytes: int
    block_rows: int
    crc32: str

    def to_json(self) -> dict[str, Any]:
        # (not dataclasses.asdict: it deep-copies field by field, and a manifest at 5M rows
        # serialises 300 of these on every commit)
        return {
            "file": self.file,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "block_rows": self.block_rows,
            "crc32": self.crc32,
        }

    @classmethod
    def from_json(cls, obj: Any, where: str, rows: int, dim: int) -> VectorsRef:
        obj = _obj(obj, where)
        name, sha, size = _sized_file(
            obj, where, VECTORS_RE, "a vector file name", rows * dim * 4, "rows × dim × 4"
        )
        block, crc = _chunked_crc(obj, where, "block_rows", rows, "block")
        return cls(name, sha, size, block, crc)


@dataclass(frozen=True)
class BlocksRef:
    """The CRC-32 of each ``block_bytes`` bytes of a segment's Arrow file (format 7; the
    last block may be shorter), 8 hex digits each: a reader checks the blocks it reads from,
    each once per process, instead of the whole file."""

    block_bytes: int
    crc32: str

    def to_json(self) -> dict[str, Any]:
        return {"block_bytes": self.block_bytes, "crc32": self.crc32}

    @classmethod
    def from_json(cls, obj: Any, where: str, file_bytes: int) -> BlocksRef:
        obj = _obj(obj, where)
        step, crc = _chunked_crc(obj, where, "block_bytes", file_bytes, "block")
        if step % 4096:
            raise ValueError(f"{where}.block_bytes is not a multiple of 4096")
        return cls(step, crc)


@dataclass(frozen=True)
class IdsRef:
    """A segment's id index (format 3): ``rows`` sorted uint64 id hashes, then the uint32
    row of each (see :mod:`embedsearch.idhash`); ``crc32`` of the whole file, checked when a
    process first looks an id up in the segment, ``sha256`` for ``verify``."""

    file: str
    sha256: str
    bytes: int
    crc32: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes, "crc32": self.crc32}

    @classmethod
    def from_json(cls, obj: Any, where: str, rows: int) -> IdsRef:
        obj = _obj(obj, where)
        # 12 B a row: idhash.RUN_ROW_BYTES (a module of this layer, so not imported)
        name, sha, size = _sized_file(
            obj, where, IDS_RE, "an id index file name", rows * 12, "rows × 12"
        )
        return cls(name, sha, size, _crc(obj, where))


@dataclass(frozen=True)
class RowCrcsRef:
    """A segment's row checksums (format 4): the CRC-32 of each row of its vector file, as
    ``rows`` little-endian uint32. ``crc32`` holds one CRC-32 per chunk of ``chunk_rows``
    of those values (8 hex digits each), so a reader checks only the chunks it uses;
    ``sha256`` covers the whole file for ``verify``."""

    file: str
    sha256: str
    bytes: int
    chunk_rows: int
    crc32: str

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "chunk_rows": self.chunk_rows,
            "crc32": self.crc32,
        }

    @classmethod
    def from_json(cls, obj: Any, where: str, rows: int) -> RowCrcsRef:
        obj = _obj(obj, where)
        name, sha, size = _sized_file(
            obj, where, CRCS_RE, "a row checksum file name", rows * 4, "rows × 4"
        )
        chunk, crc = _chunked_crc(obj, where, "chunk_rows", rows, "chunk")
        return cls(name, sha, size, chunk, crc)


#: The Arrow types of typed metadata columns, by the name a layout gives them, and the
#: buffers each has: validity then values (int, float, bool) or offsets and bytes (string).
COLUMN_TYPES = {"int64": 2, "double": 2, "bool": 2, "string": 3}


@dataclass(frozen=True)
class ColumnLayout:
    """One typed column of a segment's Arrow file (format 5): ``key`` (the metadata key),
    ``type`` (a :data:`COLUMN_TYPES` name), ``nulls`` (rows without the key), ``buffers``
    (``(offset, length)`` in the file, or None for an absent validity bitmap) and ``crc32``
    of the bytes from the first buffer's start to the last one's end."""

    key: str
    type: str
    nulls: int
    buffers: tuple[tuple[int, int] | None, ...]
    crc32: str

    @property
    def span(self) -> tuple[int, int]:
        """``(start, end)`` in the file of the bytes the checksum covers."""
        present = [b for b in self.buffers if b is not None]
        return min(o for o, _ in present), max(o + n for o, n in present)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "type": self.type,
            "nulls": self.nulls,
            "buffers": [None if b is None else list(b) for b in self.buffers],
            "crc32": self.crc32,
        }

    @classmethod
    def from_json(cls, obj: Any, where: str, rows: int, file_bytes: int) -> ColumnLayout:
        """Checked against the segment: every buffer inside the file and long enough for
        ``rows`` values of its type (a string column's offsets then bound its bytes when
        the column is validated on read)."""
        obj = _obj(obj, where)
        key, kind = _str(obj, "key", where), _str(obj, "type", where)
        if kind not in COLUMN_TYPES:
            raise ValueError(f"{where}.type {kind[:40]!r} is not one of {sorted(COLUMN_TYPES)}")
        nulls = _int(obj, "nulls", where)
        if nulls > rows:
            raise ValueError(f"{where}.nulls exceeds the segment's rows")
        raw = obj.get("buffers")
        if not isinstance(raw, list) or len(raw) != COLUMN_TYPES[kind]:
            raise ValueError(f"{where}.buffers is not a list of {COLUMN_TYPES[kind]} buffers")
        bits = -(-rows // 8)
        least = [
            bits,
            {"int64": 8 * rows, "double": 8 * rows, "bool": bits, "string": 4 * rows + 4}[kind],
        ]
        least += [0] if kind == "string" else []
        buffers: list[tuple[int, int] | None] = []
        for i, (b, need) in enumerate(zip(raw, least)):
            if b is None and i == 0 and nulls == 0:
                buffers.append(None)
                continue
            ok = isinstance(b, list) and len(b) == 2 and all(type(v) is int for v in b)
            if ok and b[1] == 0 == need:
                # An empty buffer holds no bytes; formats 5-6 recorded some as Arrow's
                # shared empty buffer's address, anywhere: clamped into the file, which is
                # also where the checksum of the column's span stopped when it was written.
                b = [min(max(b[0], 0), file_bytes), 0]
            if not ok or b[0] < 0 or b[1] < need or b[0] + b[1] > file_bytes:
                raise ValueError(
                    f"{where}.buffers[{i}] is not [offset, length] of at least {need} bytes "
                    "inside the segment's file"
                )
            buffers.append((b[0], b[1]))
        if buffers[-1] is None:
            raise ValueError(f"{where}.buffers has no values")
        return cls(key, kind, nulls, tuple(buffers), _crc(obj, where))


@dataclass(frozen=True)
class ColumnsRef:
    """A segment's typed metadata columns (format 5): each one's layout, and the keys that
    some rows hold with values no typed column can keep (filters read those from the JSON)."""

    typed: tuple[ColumnLayout, ...]
    untyped: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"typed": [c.to_json() for c in self.typed], "untyped": list(self.untyped)}

    @classmethod
    def from_json(cls, obj: Any, where: str, rows: int, file_bytes: int) -> ColumnsRef:
        obj = _obj(obj, where)
        typed, untyped = obj.get("typed"), obj.get("untyped")
        if not isinstance(typed, list) or not isinstance(untyped, list):
            raise ValueError(f"{where} does not hold lists 'typed' and 'untyped'")
        if not all(isinstance(k, str) for k in untyped):
            raise ValueError(f"{where}.untyped is not a list of keys")
        cols = tuple(
            ColumnLayout.from_json(c, f"{where}.typed[{i}]", rows, file_bytes)
            for i, c in enumerate(typed)
        )
        if len({c.key for c in cols}) != len(cols):
            raise ValueError(f"{where}.typed names a key twice")
        return cls(cols, tuple(untyped))


@dataclass(frozen=True)
class SegmentRef(FileRef):
    """A segment: its main file (Parquet in v1, Arrow IPC in v2) and, in v2, its vectors.

    ``crc32`` is the CRC-32 of the whole Arrow file (checked when a process first touches
    it, unless ``blocks`` gives its blocks' checksums; ``sha256`` is for ``verify``). Both
    are absent for Parquet segments.
    """

    crc32: str | None = None
    vectors: VectorsRef | None = None
    ids: IdsRef | None = None
    crcs: RowCrcsRef | None = None
    columns: ColumnsRef | None = None
    blocks: BlocksRef | None = None

    @property
    def legacy(self) -> bool:
        """A version-1 Parquet segment (vectors inside; read whole)."""
        return self.file.endswith(".parquet")

    @property
    def lacks_row_crcs(self) -> bool:
        """A segment of more than one checksum block without row checksums (formats 2-3).
        A segment of one block has none: checking its block reads no more than its rows,
        and a one-document ``add`` is spared a file (and its fsyncs)."""
        vec = self.vectors
        return vec is not None and self.crcs is None and self.rows > vec.block_rows

    @property
    def lacks_columns(self) -> bool:
        """An Arrow segment without its typed column layout (formats 2-4)."""
        return self.vectors is not None and self.columns is None

    @property
    def lacks_derived(self) -> bool:
        """An Arrow segment lacking anything an upgrade adds without rewriting its rows."""
        return not self.legacy and (
            self.ids is None or self.lacks_row_crcs or self.lacks_columns or self.lacks_blocks
        )

    @property
    def lacks_blocks(self) -> bool:
        """An Arrow segment without its file's block checksums (formats 2-6)."""
        return self.vectors is not None and self.blocks is None

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if self.vectors is not None:
            out["crc32"] = self.crc32
            out["vectors"] = self.vectors.to_json()
        if self.ids is not None:
            out["ids"] = self.ids.to_json()
        if self.crcs is not None:
            out["crcs"] = self.crcs.to_json()
        if self.columns is not None:
            out["columns"] = self.columns.to_json()
        if self.blocks is not None:
            out["blocks"] = self.blocks.to_json()
        return out

    @classmethod
    def parse(cls, obj: Any, where: str, dim: int) -> SegmentRef:
        base = FileRef.from_json(obj, where, SEGMENT_RE)
        if base.rows < 1:
            raise ValueError(f"{where}.rows is 0; an empty segment is never written")
        if base.file.endswith(".parquet"):
            return cls(base.file, base.rows, base.sha256, base.bytes)
        crc = _crc(obj, where)
        vec = VectorsRef.from_json(obj.get("vectors"), f"{where}.vectors", base.rows, dim)
        if vec.file[:-4] != base.file[:-6]:
            raise ValueError(f"{where}.vectors.file does not belong to {base.file}")
        ids = None
        if obj.get("ids") is not None:
            ids = IdsRef.from_json(obj["ids"], f"{where}.ids", base.rows)
            if ids.file[:-4] != base.file[:-6]:
                raise ValueError(f"{where}.ids.file does not belong to {base.file}")
        crcs = None
        if obj.get("crcs") is not None:
            crcs = RowCrcsRef.from_json(obj["crcs"], f"{where}.crcs", base.rows)
            if crcs.file[:-4] != base.file[:-6]:
                raise ValueError(f"{where}.crcs.file does not belong to {base.file}")
        columns = None
        if obj.get("columns") is not None:
            columns = ColumnsRef.from_json(
                obj["columns"], f"{where}.columns", base.rows, base.bytes
            )
        blocks = None
        if obj.get("blocks") is not None:
            blocks = BlocksRef.from_json(obj["blocks"], f"{where}.blocks", base.bytes)
        return cls(
            base.file, base.rows, base.sha256, base.bytes, crc, vec, ids, crcs, columns, blocks
        )

    def files(self) -> list[str]:
        parts = (getattr(self, key) for key in SEGMENT_PARTS)
        return [self.file] + [part.file for part in parts if part is not None]


@dataclass(frozen=True)
class IndexFileRef(FileRef):
    """A saved FAISS index: valid for the collection ``epoch`` it was built in."""

    epoch: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    #: CRC-32 of the whole file, checked when a reader loads it (SHA-256 is for ``verify``).
    crc32: str | None = None
    #: ``(bytes, crc32)`` of the index's training saved after it at the file's end (the
    #: index emptied of its rows: coarse cells and codebooks), or None. A writer that only
    #: appends rows encodes them with it instead of reading the whole index; FAISS and
    #: code that does not know it read the index and ignore it.
    trained: tuple[int, str] | None = None

    def to_json(self) -> dict[str, Any]:
        out = {**super().to_json(), "epoch": self.epoch, "info": self.info}
        if self.crc32 is not None:
            out["crc32"] = self.crc32
        if self.trained is not None:
            out["trained"] = {"bytes": self.trained[0], "crc32": self.trained[1]}
        return out

    @classmethod
    def parse(cls, obj: Any, where: str) -> IndexFileRef:
        base = FileRef.from_json(obj, where, INDEX_RE)
        epoch = _str(obj, "epoch", where)
        info = _obj(obj.get("info"), f"{where}.info")
        for key in ("spec", "resolved", "kind"):
            _str(info, key, f"{where}.info")
        crc = _crc32(obj, where) if obj.get("crc32") is not None else None
        trained = None
        if obj.get("trained") is not None:
            part = _obj(obj["trained"], f"{where}.trained")
            size = _int(part, "bytes", f"{where}.trained")
            if not 0 < size < base.bytes:
                raise ValueError(f"{where}.trained.bytes is not a part of the file's {base.bytes}")
            trained = (size, _crc32(part, f"{where}.trained"))
        return cls(base.file, base.rows, base.sha256, base.bytes, epoch, info, crc, trained)


def _crc32(obj: dict[str, Any], where: str) -> str:
    """The ``crc32`` of a file entry: eight lowercase hex digits."""
    crc = obj.get("crc32")
    if not isinstance(crc, str) or not re.fullmatch(r"[0-9a-f]{8}", crc):
        raise ValueError(f"{where}.crc32 is not a CRC-32 hex digest")
    return crc


@dataclass(frozen=True)
class TailRef(FileRef):
    """A tail of the saved index (format 6): the FAISS codes of ``rows`` rows added after
    the index file and the tails before it, read into the index with them."""

    #: CRC-32 of the whole file, checked when a reader loads it (SHA-256 is for ``verify``).
    crc32: str = ""

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "crc32": self.crc32}

    @classmethod
    def parse(cls, obj: Any, where: str) -> TailRef:
        base = FileRef.from_json(obj, where, TAIL_RE)
        crc = _crc32(obj, where)
        if base.rows < 1:
            raise ValueError(f"{where}.rows must be at least 1")
        return cls(base.file, base.rows, base.sha256, base.bytes, crc)


@dataclass(frozen=True)
class IndexSection:
    """The index the collection asks for (``spec``), the saved file, if any, and its tails:
    the saved index holds ``file.rows`` rows and then each tail's rows, in order."""

    spec: str
    file: IndexFileRef | None = None
    tail: tuple[TailRef, ...] = ()

    @property
    def rows(self) -> int:
        """Rows the saved index holds with its tails (0 when none is saved)."""
        return self.file.rows + sum(t.rows for t in self.tail) if self.file else 0

    def files(self) -> list[FileRef]:
        """The saved index file, then its tails, in the order they are read."""
        return [self.file, *self.tail] if self.file else []

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "spec": self.spec,
            "file": self.file.to_json() if self.file else None,
        }
        if self.tail:
            out["tail"] = [t.to_json() for t in self.tail]
        return out


@dataclass(frozen=True)
class Manifest:
    """Everything ``manifest.json`` says, checked. Change one with :func:`dataclasses.replace`.

    Attributes:
        format_version: 1 to 7 (see the module docstring).
        generation: bumped by every commit.
        epoch: changes when positions are renumbered (compaction, repair) or the collection
            is re-created; a saved index is valid only for its own epoch.
        model: ``{"name", "dim", ...}`` as the encoder described itself.
        index: the index spec and the saved index file.
        segments: in position order: row ``i`` of the collection is row ``i`` of their
            concatenation.
        tombstones: files of deleted row positions.
        rows: sum of the segments' rows.
    """

    format_version: int
    generation: int
    epoch: str
    created: str
    updated: str
    model: dict[str, Any]
    metric: str
    index: IndexSection
    segments: tuple[SegmentRef, ...]
    tombstones: tuple[FileRef, ...]
    rows: int
    checksum: str | None = None

    # ------------------------------------------------------------------ derived
    @property
    def dim(self) -> int:
        return int(self.model["dim"])

    @property
    def model_name(self) -> str:
        return str(self.model["name"])

    @property
    def version(self) -> tuple[str, int]:
        """``(epoch, generation)``: identifies one commit of one history."""
        return (self.epoch, self.generation)

    @property
    def legacy_segments(self) -> list[SegmentRef]:
        """Segments still in the version-1 (Parquet) format."""
        return [s for s in self.segments if s.legacy]

    @property
    def segments_to_upgrade(self) -> list[SegmentRef]:
        """Segments a writer brings to the current format first: format 1 (rewritten) and
        formats 2-6 (no id index, row checksums, column layout or block checksums yet)."""
        return [s for s in self.segments if s.legacy or s.lacks_derived]

    @property
    def needs_upgrade(self) -> bool:
        return bool(self.segments_to_upgrade)

    def files(self) -> set[str]:
        """Every file name (relative to the collection) this manifest keeps alive."""
        names = {f for s in self.segments for f in s.files()}
        names |= {t.file for t in self.tombstones}
        names |= {ref.file for ref in self.index.files()}
        return names

    def with_segments(
        self, segments: list[SegmentRef] | tuple[SegmentRef, ...], **changes: Any
    ) -> Manifest:
        """A copy naming ``segments`` (row count kept in step)."""
        segs = tuple(segments)
        return dataclasses.replace(self, segments=segs, rows=sum(s.rows for s in segs), **changes)

    def replace(self, **changes: Any) -> Manifest:
        if "segments" in changes:
            segs = tuple(changes.pop("segments"))
            return self.with_segments(segs, **changes)
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "generation": self.generation,
            "epoch": self.epoch,
            "created": self.created,
            "updated": self.updated,
            "model": self.model,
            "metric": self.metric,
            "index": self.index.to_json(),
            "segments": [s.to_json() for s in self.segments],
            "tombstones": [t.to_json() for t in self.tombstones],
            "rows": self.rows,
        }
        if self.checksum is not None:
            out["checksum"] = self.checksum
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Manifest:
        """Parse and check a manifest object; raises ValueError naming what is wrong."""
        obj = _obj(obj, "manifest")
        version = obj.get("format_version")
        if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
            raise ValueError(f"format_version {version!r} is not one this code reads")
        generation = _int(obj, "generation", "manifest")
        epoch = _str(obj, "epoch", "manifest")
        model = _obj(obj.get("model"), "model")
        _str(model, "name", "model")
        dim = _int(model, "dim", "model", low=1)
        if dim > 65_536:
            raise ValueError(f"model.dim {dim} is beyond any embedding model")
        index = _obj(obj.get("index"), "index")
        spec = _str(index, "spec", "index")
        if not _SPEC_RE.fullmatch(spec):
            raise ValueError(f"index.spec {spec[:80]!r} is not an index spec")
        saved = (
            IndexFileRef.parse(index["file"], "index.file")
            if index.get("file") is not None
            else None
        )
        raw_tail = index.get("tail", [])
        if not isinstance(raw_tail, list) or (raw_tail and saved is None):
            raise ValueError("index.tail is not a list of the saved index file's tails")
        tail = tuple(TailRef.parse(raw, f"index.tail[{i}]") for i, raw in enumerate(raw_tail))
        for key in ("segments", "tombstones"):
            if not isinstance(obj.get(key), list):
                raise ValueError(f"{key} is not a list")
        _no_repeats(obj["segments"] + obj["tombstones"])  # before any per-entry work
        segments = tuple(
            SegmentRef.parse(raw, f"segments[{i}]", dim) for i, raw in enumerate(obj["segments"])
        )
        if version < 2 and any(not s.legacy for s in segments):
            raise ValueError("a version-1 manifest names a version-2 segment")
        tombstones = tuple(
            FileRef.from_json(raw, f"tombstones[{i}]", TOMBSTONE_RE)
            for i, raw in enumerate(obj["tombstones"])
        )
        seen: set[str] = set()
        named = [f for s in segments for f in s.files()] + [t.file for t in tombstones]
        named += [t.file for t in tail]
        for name in named:  # a file listed twice would show its rows twice
            if name in seen:
                raise ValueError(f"{name} is listed more than once")
            seen.add(name)
        rows = sum(s.rows for s in segments)
        if obj.get("rows") is not None and obj.get("rows") != rows:
            raise ValueError(f"rows is {obj.get('rows')!r} but the segments hold {rows}")
        section = IndexSection(spec, saved, tail)
        if section.rows > rows:
            raise ValueError(
                f"index.file and its tails hold {section.rows} rows, the segments only {rows}"
            )
        return cls(
            format_version=version,
            generation=generation,
            epoch=epoch,
            created=str(obj.get("created", "")),
            updated=str(obj.get("updated", "")),
            model=model,
            metric=str(obj.get("metric", "cosine")),
            index=section,
            segments=segments,
            tombstones=tombstones,
            rows=rows,
            checksum=obj.get("checksum") if isinstance(obj.get("checksum"), str) else None,
        )

    @classmethod
    def new(cls, model: dict[str, Any], index_spec: str, stamp: str) -> Manifest:
        """The manifest of an empty collection."""
        return cls(
            format_version=FORMAT_VERSION,
            generation=0,
            epoch=uuid.uuid4().hex,
            created=stamp,
            updated=stamp,
            model=dict(model),
            metric="cosine",
            index=IndexSection(index_spec, None),
            segments=(),
            tombstones=(),
            rows=0,
        )
