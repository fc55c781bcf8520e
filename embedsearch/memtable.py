"""The in-memory image of a collection's committed rows.

Row ``i`` (a *position*) is the i-th row of the segments in manifest order; positions are
stable until compaction renumbers them, which is why the FAISS index can use them as ids.
Texts and metadata stay in compact Arrow arrays (no Python object per row); vectors live in
one growable float32 matrix; ``live`` marks rows not tombstoned.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .columns import KeyColumn, Path, columns_from_json_array
from .store import SegmentData
from .validation import clip_metadata

#: Key paths whose typed columns a table keeps (each ~13 bytes a row).
MAX_CACHED_PATHS = 32


class GrowableMatrix:
    """An (n, dim) float32 matrix that appends in amortised O(1) by doubling its buffer.

    Appending never moves rows a reader already holds a view of (a full buffer is copied to a
    new one instead), so a search running on ``view()`` stays valid during an append.
    """

    def __init__(self, dim: int) -> None:
        self._buf = np.zeros((0, dim), dtype=np.float32)
        self.n = 0

    def append(self, rows: np.ndarray) -> None:
        m = rows.shape[0]
        if self.n + m > self._buf.shape[0]:
            cap = max(1024, 2 * self._buf.shape[0], self.n + m)
            new = np.empty((cap, self._buf.shape[1]), dtype=np.float32)
            new[: self.n] = self._buf[: self.n]
            self._buf = new
        self._buf[self.n : self.n + m] = rows
        self.n += m

    def view(self) -> np.ndarray:
        return self._buf[: self.n]


class MemTable:
    """Rows of a collection: ids, texts, metadata, vectors, liveness, id → position."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.ids: list[str] = []
        self._texts: list[pa.Array] = []
        self._meta: list[pa.Array] = []
        self._offsets: list[int] = []  # first position of each chunk
        self.vectors = GrowableMatrix(dim)
        self.live = np.zeros(0, dtype=bool)
        self.id_to_pos: dict[str, int] = {}
        self._parsed_meta: list[dict[str, Any] | None] | None = None
        # Typed metadata columns for filters, built per chunk on first use of a key path.
        self._chunk_cols: dict[Path, list[KeyColumn]] = {}
        self._full_cols: dict[Path, KeyColumn] = {}

    # ------------------------------------------------------------------ sizes
    @property
    def rows(self) -> int:
        """Positions in use, tombstoned ones included."""
        return len(self.ids)

    @property
    def count(self) -> int:
        """Live documents."""
        return len(self.id_to_pos)

    @property
    def has_tombstones(self) -> bool:
        return self.count != self.rows

    # ------------------------------------------------------------------ changes
    def append(self, seg: SegmentData) -> None:
        """Add a committed segment's rows; a later row with a live id replaces the old one."""
        start = self.rows
        self._offsets.append(start)
        self._texts.append(seg.texts)
        self._meta.append(seg.metadata)
        self.ids.extend(seg.ids)
        self.vectors.append(seg.vectors)
        self.live = np.concatenate([self.live, np.ones(len(seg.ids), dtype=bool)])
        for i, doc_id in enumerate(seg.ids, start):
            self.id_to_pos[doc_id] = i
        if self._parsed_meta is not None:
            self._parsed_meta.extend(_parse(m) for m in seg.metadata.to_pylist())

    def kill(self, positions: Sequence[int] | np.ndarray) -> None:
        """Apply tombstones: the rows stop being visible."""
        positions = np.asarray(positions, dtype=np.int64)
        positions = positions[(positions >= 0) & (positions < self.rows)]
        self.live = self.live.copy()  # readers holding the old mask keep a consistent view
        self.live[positions] = False
        for p in positions.tolist():
            doc_id = self.ids[p]
            if self.id_to_pos.get(doc_id) == p:
                del self.id_to_pos[doc_id]

    # ------------------------------------------------------------------ reads
    def _locate(self, pos: int) -> tuple[int, int]:
        chunk = bisect.bisect_right(self._offsets, pos) - 1
        return chunk, pos - self._offsets[chunk]

    def text(self, pos: int) -> str:
        chunk, off = self._locate(pos)
        return self._texts[chunk][off].as_py()

    def metadata(self, pos: int) -> dict[str, Any]:
        if self._parsed_meta is not None:
            return dict(self._parsed_meta[pos] or {})
        chunk, off = self._locate(pos)
        return _parse(self._meta[chunk][off].as_py()) or {}

    def metadata_json(self, pos: int) -> str | None:
        chunk, off = self._locate(pos)
        return self._meta[chunk][off].as_py()

    def all_metadata(self) -> list[dict[str, Any] | None]:
        """Parsed metadata of every position (parsed once, then kept in step with appends)."""
        if self._parsed_meta is None:
            parsed: list[dict[str, Any] | None] = []
            for arr in self._meta:
                parsed.extend(_parse(m) for m in arr.to_pylist())
            self._parsed_meta = parsed
        return self._parsed_meta

    def metadata_columns(self, paths: Sequence[Path]) -> dict[Path, KeyColumn]:
        """Typed columns of ``paths`` over every position, for vectorised filters.

        Built from the metadata JSON on first use of a path (one parse per chunk for all the
        paths asked together), then kept: a later append builds only its own chunks.
        Columns of the least recently used paths are dropped past :data:`MAX_CACHED_PATHS`.
        """
        chunks = len(self._meta)
        todo = [p for p in paths if len(self._chunk_cols.get(p, ())) < chunks]
        if todo:
            start = min(len(self._chunk_cols.get(p, ())) for p in todo)
            raw = pa.concat_arrays([a.cast(pa.string()) for a in self._meta[start:chunks]])
            built = columns_from_json_array(raw, todo)
            bounds = np.cumsum([0] + [len(a) for a in self._meta[start:chunks]])
            for p in todo:
                have = self._chunk_cols.setdefault(p, [])
                whole = built[p]
                for c in range(len(have), chunks):
                    have.append(whole.slice(int(bounds[c - start]), int(bounds[c - start + 1])))
        out: dict[Path, KeyColumn] = {}
        for p in paths:
            full = self._full_cols.pop(p, None)
            if full is None or len(full) != self.rows:
                parts = self._chunk_cols.get(p, [])[:chunks]
                full = KeyColumn.concat(parts) if parts else KeyColumn.from_values([])
            self._full_cols[p] = out[p] = full  # re-inserted: most recently used last
        while len(self._full_cols) > MAX_CACHED_PATHS:
            oldest = next(iter(self._full_cols))
            self._full_cols.pop(oldest, None)
            self._chunk_cols.pop(oldest, None)
        return out

    def metadata_rows(self, positions: np.ndarray) -> list[dict[str, Any] | None]:
        """Parsed metadata of ``positions`` (rows a typed column cannot decide)."""
        return [self.metadata(int(p)) for p in positions]

    def positions(self, ids: Sequence[str]) -> tuple[list[int], list[str]]:
        """Positions of the live ``ids`` and the list of ids that are not live."""
        found, missing = [], []
        for doc_id in ids:
            pos = self.id_to_pos.get(doc_id)
            (missing.append(doc_id) if pos is None else found.append(pos))
        return found, missing

    def live_positions(self) -> np.ndarray:
        return np.flatnonzero(self.live)


def _parse(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        return clip_metadata(json.loads(raw))
    except RecursionError:  # stored by an older version, deeper than json can parse
        return {"_unreadable": "metadata nested too deeply to parse; rewrite this document"}
