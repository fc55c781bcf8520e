"""The rows of a collection as the query code sees them: positions over memory-mapped segments.

Row ``i`` (a *position*) is the i-th row of the segments in manifest order; positions are
stable until compaction renumbers them, which is why the FAISS index can use them as ids.
Nothing here holds a Python object per row: vectors stay in the segments' memory maps,
ids/texts/metadata in their Arrow columns, liveness in one numpy bool array, and
id → position in sorted arrays of 64-bit id hashes.

**The contract** (what :mod:`embedsearch.index`, :mod:`embedsearch.filters` and the
collection rely on; keep it when changing this file):

* ``rows`` — positions in use, tombstoned ones included; ``count`` — live rows;
  ``live`` — ``np.bool_`` array of length ``rows`` (replaced, never mutated in place, once
  published: a reader holding it keeps a consistent view); ``has_tombstones``.
* ``take(positions) -> (len, dim) float32`` — rows in the order asked (checksummed blocks);
  ``blocks() -> Iterator[(start, (n, dim) float32 view)]`` — every row, one view per
  segment, zero-copy: for full scans and index builds. ``vectors_view()`` — a ``(rows,
  dim)`` array-like (``shape``, ``__getitem__`` → ``take``, ``__array__``); turning it into
  one ndarray copies every vector (O(n) memory), so hot paths use ``take``/``blocks``.
* ``metadata_columns(paths) -> {path: KeyColumn}`` — a typed column per key path over every
  position (:mod:`embedsearch.columns`), built from the segments' on-disk typed columns
  where they have one (int64/float64/bool/string per top-level key of a single scalar type
  in that segment), from the metadata JSON otherwise; ``metadata_rows(positions)`` — parsed
  metadata of the rows a column cannot decide; ``metadata_json(positions)`` — the stored
  JSON, the source of truth.
* ``text(pos)``, ``metadata(pos)``, ``metadata_json(positions)``, ``ids_at(positions)``,
  ``positions(ids) -> (found positions, missing ids)``, ``live_positions()``.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .allocator import trim_heap
from .arrays import indices
from .columns import KeyColumn, columns_from_json_array
from .columns import Path as ColumnPath
from .idhash import IdMap, hash_strings
from .segment import PREAD_MAX_ROWS, MappedSegment, Segment, run_heads
from .validation import clip_metadata

#: A :meth:`Table.take` of at most this many rows (a re-rank shortlist, hits being hydrated,
#: a selective filter's rows) leaves no vector page mapped (``MappedSegment.take`` with
#: ``release``: ``pread`` or one ``madvise`` per segment). Without this, RSS grew by ~6 MB a
#: query at 1M rows, and with large page-cache folios by up to 2 MB a touched row. Larger
#: takes keep their pages: a gather that big comes back soon.
RELEASE_AFTER_TAKE = 65_536

#: Key paths whose typed columns a table keeps (1-13 bytes a row each, see
#: :meth:`KeyColumn.compact`).
MAX_CACHED_PATHS = 32

#: Read-ahead hints for rows read the first time stop after this many gathers in a row found
#: every row in the page cache, and start again at the first gather that reads from disk.
#: A hint is a system call a run (~0.7 us here): 0.15-0.18 ms of a 1.25 ms query at 1M rows
#: with the files cached, where it saves nothing; with the files evicted it lets the disk
#: read a query's rows in parallel instead of one after another.
HINTS_OFF_AFTER = 16
#: A gather's reads took the disk when the process read blocks meanwhile (``ru_inblock``),
#: or where that is not counted (network file systems) when they took longer than this a
#: run on average: a cached row is read in 0.5-1.5 us here, an uncached one in 9 us or more.
SLOW_READ_S = 4e-6

try:
    import resource

    _RUSAGE_THREAD: int | None = resource.RUSAGE_THREAD  # Linux
except (ImportError, AttributeError):  # no per-thread counts: hints follow the time alone
    _RUSAGE_THREAD = None


class VectorView:
    """``Table.vectors_view()``: a (rows, dim) float32 array-like over the segments.

    Indexing with positions (int array, list, slice, int) returns an ndarray via
    :meth:`Table.take`; ``np.asarray(view)`` or ``view.T`` builds one contiguous copy of
    every vector (cached until the table changes): fine for small collections, O(n) memory
    for large ones, so hot paths use ``take`` and ``blocks``.
    """

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, table: Table) -> None:
        self._table = table
        self.shape = (table.rows, table.dim)

    def __len__(self) -> int:
        return self.shape[0]

    def blocks(self, *, release: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """:meth:`Table.blocks`: exact scans go segment by segment, without a copy."""
        return self._table.blocks(release=release)

    def release(self) -> None:
        """:meth:`Table.release_vectors`: unmap what a writer's pass over the rows read."""
        self._table.release_vectors()

    def take_released(self, positions: np.ndarray) -> np.ndarray:
        """:meth:`Table.take_released`: a writer's large one-off read of rows."""
        return self._table.take_released(positions)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            rows, rest = key[0], key[1:]
            return self[rows][(slice(None), *rest)]
        if isinstance(key, slice):
            return self._table.take(np.arange(self.shape[0])[key])
        if isinstance(key, (int, np.integer)):
            pos = int(key) + (self.shape[0] if key < 0 else 0)
            return self._table.take(np.array([pos]))[0]
        arr = np.asarray(key)
        if arr.dtype == bool:
            arr = np.flatnonzero(arr)
        return self._table.take(arr.astype(np.int64, copy=False))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        full = self._table.contiguous(self.shape[0])
        return full if dtype is None else full.astype(dtype, copy=False)

    @property
    def T(self) -> np.ndarray:  # noqa: N802 - numpy's name
        return np.asarray(self).T


class RowsView:
    """Some positions of a table, read on demand: ``view[i:j]`` and ``view[idx]`` are float32
    rows (:meth:`Table.take`), :meth:`ids` their ids.

    What the whole-collection views (outliers, maps) read instead of a copy of every chosen
    vector: at 1M rows ``select()`` copied 1.5 GB and a million id strings, where the
    outlier scan needs one block of rows at a time and a map only its sample.
    ``np.asarray(view)`` still builds the full copy, for the views that need it.
    """

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, table: Table, positions: np.ndarray) -> None:
        self._table = table
        self._positions = np.asarray(positions, dtype=np.int64)
        self.shape = (int(self._positions.size), table.dim)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            rows, rest = key[0], key[1:]
            return self[rows][(slice(None), *rest)]
        chosen = self._positions[key]
        if np.ndim(chosen) == 0:
            return self._table.take(np.array([int(chosen)]))[0]
        return self._take(chosen)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        full = self._take(self._positions)
        return full if dtype is None else full.astype(dtype, copy=False)

    def _take(self, positions: np.ndarray) -> np.ndarray:
        return self._table.take_released(positions)

    def ids(self, rows: np.ndarray | Sequence[int]) -> list[str]:
        """The ids of ``rows`` (indices into this view)."""
        return self._table.ids_at(self._positions[np.asarray(rows, dtype=np.int64)])

    def texts(self, rows: np.ndarray | Sequence[int]) -> list[str]:
        """The texts of ``rows`` (indices into this view)."""
        return self._table.texts_at(self._positions[np.asarray(rows, dtype=np.int64)])


class Table:
    """Rows of a collection over its segments (see the module docstring for the contract)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._segments: list[Segment] = []
        self._starts = np.zeros(0, dtype=np.int64)  # first position of each segment
        self.rows = 0
        self.count = 0
        self.live = np.zeros(0, dtype=bool)
        self._live_buf = self.live
        self._idmap: IdMap | None = None
        # Typed metadata columns for filters, per segment, built on first use of a key path.
        self._seg_cols: dict[ColumnPath, list[KeyColumn]] = {}
        self._full_cols: dict[ColumnPath, KeyColumn] = {}
        self._cols_lock = threading.Lock()
        self._ids_lock = threading.Lock()
        # A contiguous copy of every vector, made only when something asks for one
        # (vectors_view() as an ndarray); grown by doubling so appends stay amortised O(1).
        self._contiguous: np.ndarray | None = None
        self._contiguous_n = 0
        self._cached_gathers = 0  # gathers in a row that read no block from disk

    # ------------------------------------------------------------------ sizes
    @property
    def has_tombstones(self) -> bool:
        return self.count != self.rows

    @property
    def segments(self) -> list[Segment]:
        return list(self._segments)

    def segment_starts(self) -> list[int]:
        """First position of each segment."""
        return self._starts.tolist()

    # ------------------------------------------------------------------ changes
    def append(self, seg: Segment) -> None:
        """Add a committed segment's rows (see :meth:`extend`)."""
        self.extend([seg])

    def extend(self, segments: Sequence[Segment]) -> None:
        """Add committed segments' rows; the caller kills the rows they replace.

        Amortised O(rows added): liveness grows by doubling (rows a reader may hold are
        never written), and the id map, when built, takes one sorted run per segment.
        """
        if not segments:
            return
        start = self.rows
        starts = np.cumsum([0] + [s.rows for s in segments])[:-1] + start
        self._segments.extend(segments)
        self._starts = np.concatenate([self._starts, starts.astype(np.int64)])
        rows = start + sum(s.rows for s in segments)
        if self._live_buf.shape[0] < rows:
            buf = np.zeros(max(2 * self._live_buf.shape[0], rows, 1024), dtype=bool)
            buf[:start] = self.live
            self._live_buf = buf
        self._live_buf[start:rows] = True
        self.live = self._live_buf[:rows]
        self.rows = rows
        self.count += rows - start
        if self._idmap is not None:
            for first, seg in zip(starts.tolist(), segments):
                _add_ids(self._idmap, seg, first)
        if self._contiguous is not None and self._contiguous_n == start:
            buf = self._contiguous
            if buf.shape[0] < rows:  # never write into rows a reader may hold
                buf = np.empty((max(2 * buf.shape[0], rows), self.dim), dtype=np.float32)
                buf[:start] = self._contiguous[:start]
            for first, seg in zip(starts.tolist(), segments):
                buf[first : first + seg.rows] = seg.vectors()
            self._contiguous, self._contiguous_n = buf, rows
        else:
            self._contiguous, self._contiguous_n = None, 0

    def kill(self, positions: Sequence[int] | np.ndarray) -> None:
        """Apply tombstones: the rows stop being visible."""
        positions = np.asarray(positions, dtype=np.int64)
        positions = positions[(positions >= 0) & (positions < self.rows)]
        buf = self._live_buf.copy()  # readers holding the old mask keep a consistent view
        buf[positions] = False
        self._live_buf = buf
        self.live = buf[: self.rows]
        self.count = int(np.count_nonzero(self.live))

    # ------------------------------------------------------------------ locating
    def _locate(self, positions: np.ndarray) -> np.ndarray:
        """Segment index of each position."""
        return np.searchsorted(self._starts, positions, side="right") - 1

    def _groups(self, positions: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(segment, indices into ``positions``, local rows) for each segment touched."""
        seg = self._locate(positions)
        order = np.argsort(seg, kind="stable")
        bounds = np.flatnonzero(np.diff(seg[order])) + 1
        for idx in np.split(order, bounds):
            if idx.size:
                s = int(seg[idx[0]])
                yield s, idx, positions[idx] - self._starts[s]

    def _check(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if positions.size and (positions.min() < 0 or positions.max() >= self.rows):
            raise IndexError(f"positions outside 0..{self.rows - 1}")
        return positions

    # ------------------------------------------------------------------ vectors
    def take_released(self, positions: np.ndarray) -> np.ndarray:
        """:meth:`take` in pieces of :data:`RELEASE_AFTER_TAKE` rows, each released after
        it is copied, for large reads made once (a training sample, a tuning filter's rows,
        the rows of a map): a 100,000-row training sample spread over a 1M-row collection
        had left 1.5 GB of the vector files mapped (RSS) by one larger take."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size <= RELEASE_AFTER_TAKE:
            return self.take(positions)
        out = np.empty((positions.size, self.dim), dtype=np.float32)
        for lo in range(0, positions.size, RELEASE_AFTER_TAKE):
            hi = min(positions.size, lo + RELEASE_AFTER_TAKE)
            out[lo:hi] = self.take(positions[lo:hi])
        return out

    def take(self, positions: np.ndarray | Sequence[int]) -> np.ndarray:
        """Vectors of ``positions`` (in that order) as a new (len, dim) float32 array."""
        positions = self._check(positions)
        if self._contiguous_n == self.rows and self._contiguous is not None:
            return self._contiguous[positions]
        release = positions.size <= RELEASE_AFTER_TAKE
        if release:
            read = self._read_runs(positions)
            if read is not None:
                return read
        out = np.empty((positions.size, self.dim), dtype=np.float32)
        groups = list(self._groups(positions))
        if release:  # a few rows: start every segment's disk reads before waiting on one
            for s, _, local in groups:
                self._segments[s].prefetch(local)
        for s, idx, local in groups:
            rows = self._segments[s].take(local, release=release)
            lo = int(idx[0])
            # idx ascends (stable argsort): a contiguous run is a slice copy, not a scatter
            if int(idx[-1]) - lo + 1 == idx.size:
                out[lo : lo + idx.size] = rows
            else:
                out[idx] = rows
        return out

    def _read_runs(self, positions: np.ndarray) -> np.ndarray | None:
        """Rows ``positions`` read with one ``pread`` per run of consecutive rows (asked in
        that order: each run lands in one slice of the result), in one loop over the runs
        of every segment (``None`` where a segment cannot be read so, or
        gives more than ``PREAD_MAX_ROWS`` rows: then the per-segment :meth:`take`).

        A re-rank's shortlist touches most segments for a few rows each: at 5M rows, 512
        rows from 101 segments. Asking each segment in turn cost ~20 µs of numpy calls a
        segment, 2 ms of a 3 ms query; here the positions are sorted and split into runs,
        each touched segment's checked-rows flags are looked up once for all its rows, and
        only segments with rows read for the first time are called again, to read those rows
        and their row checksums ahead and to check the rows once read. The reads themselves
        are one loop of ``preadv`` calls with every offset worked out beforehand. At 1M rows
        a re-rank's 256 reads took 0.53 ms of a 1.4 ms query, against 0.30 ms for the same
        calls in a bare loop; a dictionary look-up and a flag tested per run, now per
        segment, made most of the difference (0.47 ms since)."""
        if not positions.size:
            return np.empty((0, self.dim), dtype=np.float32)
        order = np.argsort(positions, kind="stable")
        ordered = positions[order]
        seg = np.searchsorted(self._starts, ordered, side="right") - 1
        # each touched segment's entries: one slice of the sorted positions
        cuts = np.flatnonzero(seg[1:] != seg[:-1]) + 1
        los, his = np.concatenate(([0], cuts)), np.append(cuts, ordered.size)
        if int((his - los).max()) > PREAD_MAX_ROWS:
            return None
        local = ordered - self._starts[seg]
        # per segment, not per run: its descriptor, and whether any of its rows is read for
        # the first time (one look-up of its checked flags instead of one per row)
        touched = seg[los].tolist()
        spans = list(zip(touched, los.tolist(), his.tolist()))
        fds = np.empty(len(self._segments), dtype=np.int64)
        fresh: list[tuple[MappedSegment, int, int]] = []  # segments with rows read the
        for s, lo, hi in spans:  # first time, and their slice
            segment = self._segments[s]
            got = segment.row_reader() if isinstance(segment, MappedSegment) else None
            if got is None:
                return None
            fds[s], checked = got
            if not checked[local[lo:hi]].all():
                fresh.append((segment, lo, hi))
        at = run_heads(local, seg, order)
        counts = np.diff(np.append(at, ordered.size))
        blocks = None
        if fresh:
            blocks = _blocks_read()  # the disk's count before the first hint
            hint = self._cached_gathers < HINTS_OFF_AFTER  # (warm gathers skip the rows')
            for segment, lo, hi in fresh:  # start every disk read before waiting on any
                if hint:  # the unchecked rows, and their row checksums
                    segment.prefetch(local[lo:hi])
                else:
                    segment.prefetch_checksums(local[lo:hi])
        # each run is read straight into its place in the result (no second buffer to
        # scatter from: a fresh 1.5 MB array costs ~375 page faults when malloc maps it);
        # the loop does nothing but the reads, in bytes worked out beforehand
        out = np.empty((ordered.size, self.dim), dtype=np.float32)
        width = self.dim * 4
        flat, pread = memoryview(out).cast("B"), os.preadv
        reads = zip(
            (order[at] * width).tolist(),
            (counts * width).tolist(),
            fds[seg[at]].tolist(),
            (local[at] * width).tolist(),
        )
        started = time.perf_counter()
        for to, size, fd, offset in reads:
            if pread(fd, [flat[to : to + size]], offset) != size:
                short = next(self._segments[s] for s in touched if fds[s] == fd)
                raise short.short_read()
        if fresh:  # only first reads are hinted, so only they tell whether hints pay
            slow = time.perf_counter() - started > SLOW_READ_S * at.size
            cached = not slow and (blocks is None or _blocks_read() == blocks)
            self._cached_gathers = self._cached_gathers + 1 if cached else 0
        for segment, lo, hi in fresh:  # raises CorruptionError before a damaged row
            segment.check_rows(local[lo:hi], out, order[lo:hi])  # is handed out
        return out

    def blocks(self, *, release: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """``(start position, (n, dim) float32 view)`` per segment, zero-copy, checksummed.

        ``release``: unmap each segment's pages once the caller asks for the next one (a
        writer's one-off pass over every row; a query's scan keeps them, it comes back)."""
        for start, seg in zip(self._starts.tolist(), self._segments):
            yield start, seg.vectors()
            if release:
                seg.release_vectors()

    def release_vectors(self) -> None:
        """Unmap every segment's vector pages from this process (the page cache keeps them)."""
        for seg in self._segments:
            seg.release_vectors()

    def check_all(self) -> None:
        """Checksum every byte of every segment now (otherwise checked on first touch)."""
        for seg in self._segments:
            seg.vectors()
            seg.ids()

    def vectors_view(self) -> VectorView:
        return VectorView(self)

    def contiguous(self, rows: int | None = None) -> np.ndarray:
        """One (rows, dim) ndarray of every vector: a view for one segment, else a cached copy."""
        rows = self.rows if rows is None else rows
        if len(self._segments) == 1 and self._segments[0].rows == rows:
            return self._segments[0].vectors()
        if not self._segments:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._contiguous is None or self._contiguous_n != self.rows:
            self._contiguous = np.concatenate([seg.vectors() for seg in self._segments])
            self._contiguous_n = self.rows
        return self._contiguous[:rows]

    # ------------------------------------------------------------------ strings
    def _strings(self, positions: np.ndarray, *columns: str) -> list[list[Any]]:
        """Values of each string column in ``columns`` at ``positions`` (one list per
        column), the positions grouped by segment once for all of them."""
        positions = self._check(positions)
        outs: list[list[Any]] = [[None] * positions.size for _ in columns]
        which = [("id", "text", "metadata").index(c) for c in columns]
        for s, idx, local in self._groups(positions):
            seg = self._segments[s]
            at = idx.tolist()
            for out, column in zip(outs, which):
                if local.size <= 256:  # a few hits: read them alone (MappedSegment.strings)
                    vals = seg.strings(column, local)
                else:  # (``take`` imports pyarrow.compute, ~1 s cold: only for many rows)
                    arr = (seg.ids, seg.texts, seg.metadata_json)[column]()
                    vals = arr.take(indices(local)).to_pylist()
                for i, v in zip(at, vals):
                    out[i] = v
        return outs

    def hit_strings(
        self, positions: np.ndarray | Sequence[int]
    ) -> tuple[list[str], list[str], list[str | None]]:
        """Ids, texts and metadata JSON of ``positions``: what a search hit shows."""
        ids, texts, metas = self._strings(np.asarray(positions), "id", "text", "metadata")
        return ids, texts, metas

    def ids_at(self, positions: np.ndarray | Sequence[int]) -> list[str]:
        return self._strings(np.asarray(positions), "id")[0]

    def texts_at(self, positions: np.ndarray | Sequence[int]) -> list[str]:
        return self._strings(np.asarray(positions), "text")[0]

    def metadata_json(self, positions: np.ndarray | Sequence[int]) -> list[str | None]:
        """The stored metadata JSON (or None) of ``positions``: the source of truth."""
        return self._strings(np.asarray(positions), "metadata")[0]

    def typed_columns_at(
        self, positions: np.ndarray
    ) -> tuple[dict[str, pa.Array], list[str]] | None:
        """The typed metadata columns (and untyped keys) of the rows at ``positions``
        (ascending), taken from their segments' own columns; None when those segments do
        not type their keys alike (or store no typed columns): the caller then infers the
        types from the JSON.

        Compaction rewrites rows whose segments typed them already: parsing their JSON
        again and inferring the same types was 4.1 s of a 6.8 s compaction at 1M rows
        with 30 % deleted. Taken this way, a key stays untyped that the rows left might
        type (its odd values were deleted), and a typed key may hold only nulls (no row
        left has it): a filter answers the same either way (from the JSON, or from a
        column whose null means the row lacks the key).
        """
        positions = self._check(positions)
        if positions.size > 1 and not (np.diff(positions) > 0).all():
            return None
        parts: list[tuple[dict[str, pa.Array], np.ndarray]] = []
        kinds: tuple[Any, ...] | None = None
        for s, _idx, local in self._groups(positions):  # segments in order: rows in order
            cols, untyped = self._segments[s].typed()
            if untyped is None:
                return None
            mine = (sorted((k, str(c.type)) for k, c in cols.items()), sorted(untyped))
            if kinds is not None and mine != kinds:
                return None
            kinds = mine
            parts.append((cols, local))
        if kinds is None:
            return None
        out = {
            key: pa.concat_arrays([cols[key].take(indices(local)) for cols, local in parts])
            for key, _ in kinds[0]
        }
        return out, list(kinds[1])

    def text(self, pos: int) -> str:
        return self.texts_at([pos])[0]

    def metadata(self, pos: int) -> dict[str, Any]:
        return parse_metadata(self.metadata_json([pos])[0]) or {}

    def live_positions(self) -> np.ndarray:
        return np.flatnonzero(self.live)

    # ------------------------------------------------------------------ ids
    def _ids(self) -> IdMap:
        with self._ids_lock:  # built once, by the first caller; others wait for it
            if self._idmap is None:
                idmap = IdMap()
                for start, seg in zip(self._starts.tolist(), self._segments):
                    _add_ids(idmap, seg, start)
                self._idmap = idmap
            return self._idmap

    def lookup(self, ids: Sequence[str]) -> np.ndarray:
        """Live position of each id, or -1 (vectorised; the id strings are confirmed)."""
        out = np.full(len(ids), -1, dtype=np.int64)
        if not ids or not self.rows:
            return out
        qi, pos = self._ids().candidates(hash_strings(list(ids)))
        keep = self.live[pos]
        qi, pos = qi[keep], pos[keep]
        if not qi.size:
            return out
        stored = self.ids_at(pos)
        for q, p, s in zip(qi.tolist(), pos.tolist(), stored):
            if s == ids[q] and p > out[q]:
                out[q] = p
        return out

    def positions(self, ids: Sequence[str]) -> tuple[list[int], list[str]]:
        """Positions of the live ``ids`` and the list of ids that are not live."""
        found = self.lookup(ids)
        return (
            [int(p) for p in found if p >= 0],
            [d for d, p in zip(ids, found.tolist()) if p < 0],
        )

    def __contains__(self, doc_id: str) -> bool:
        return bool(self.lookup([doc_id])[0] >= 0)

    # ------------------------------------------------------------------ metadata
    def metadata_columns(self, paths: Sequence[ColumnPath]) -> dict[ColumnPath, KeyColumn]:
        """Typed columns of ``paths`` over every position, for vectorised filters.

        Per segment: a top-level key stored as a typed column on disk converts without
        parsing (:meth:`KeyColumn.from_arrow`); a key the segment does not hold is absent
        everywhere in it; only keys a segment marks as mixed/null/nested (and format-1
        segments) are parsed from the JSON, by pyarrow's JSON reader. Built per segment on
        first use of a path, then kept: an append builds only its own segments. Columns of
        the least recently used paths are dropped past :data:`MAX_CACHED_PATHS`.
        """
        with self._cols_lock:  # concurrent readers share the caches
            return self._metadata_columns(paths)

    def _metadata_columns(self, paths: Sequence[ColumnPath]) -> dict[ColumnPath, KeyColumn]:
        n_seg = len(self._segments)
        start = min((len(self._seg_cols.get(p, ())) for p in paths), default=n_seg)
        for s in range(start, n_seg):
            todo = [p for p in paths if len(self._seg_cols.setdefault(p, [])) <= s]
            if not todo:
                continue
            built = _segment_columns(self._segments[s], todo)
            for p in todo:
                self._seg_cols[p].append(built[p])
        out: dict[ColumnPath, KeyColumn] = {}
        freed = 0
        for p in paths:
            full = self._full_cols.pop(p, None)
            if full is None or len(full) != self.rows:
                parts = self._seg_cols.get(p, [])[:n_seg]
                full = KeyColumn.concat(parts) if parts else KeyColumn.absent(0)
                if len(parts) > 1:  # the parts become views of the whole: one copy of a
                    # row's column in memory, not two (130 MB a key at 10M rows)
                    freed += sum(_owned_bytes(part) for part in parts)
                    bounds = np.cumsum([0] + [len(part) for part in parts]).tolist()
                    self._seg_cols[p][: len(parts)] = [
                        full.slice(lo, hi) for lo, hi in zip(bounds, bounds[1:])
                    ]
            self._full_cols[p] = out[p] = full  # re-inserted: most recently used last
        while len(self._full_cols) > MAX_CACHED_PATHS:
            oldest = next(iter(self._full_cols))
            self._full_cols.pop(oldest, None)
            self._seg_cols.pop(oldest, None)
        if freed >= TRIM_AFTER_BYTES:
            trim_heap()
        return out

    def metadata_rows(self, positions: np.ndarray) -> list[dict[str, Any] | None]:
        """Parsed metadata of ``positions`` (rows a typed column cannot decide)."""
        return [_parse(m) for m in self.metadata_json(np.asarray(positions, dtype=np.int64))]


def _add_ids(idmap: IdMap, seg: Segment, start: int) -> None:
    """Add a segment's ids: its on-disk id index where it has one (format 3), else the
    hashes of its ids (read and hashed here: O(rows))."""
    run = seg.id_run()
    if run is not None:
        idmap.add_sorted(*run, start)
    else:
        idmap.add(hash_strings(seg.ids()), start)


#: Bytes of per-segment columns freed by one build of whole columns past which the C heap
#: is trimmed (see :func:`trim_heap`).
TRIM_AFTER_BYTES = 8 * 2**20


def _owned_bytes(col: KeyColumn) -> int:
    """Bytes held by ``col``'s own arrays (not views of another column's)."""
    return sum(a.nbytes for a in (col.kind, col.num, col.codes) if a.base is None)


def _segment_columns(seg: Segment, paths: Sequence[ColumnPath]) -> dict[ColumnPath, KeyColumn]:
    """Typed columns of ``paths`` over one segment (see :meth:`Table.metadata_columns`)."""
    typed, untyped = seg.typed([p[0] for p in paths])
    out: dict[ColumnPath, KeyColumn] = {}
    parse: list[ColumnPath] = []
    for p in paths:
        if untyped is None or p[0] in untyped:
            parse.append(p)  # mixed, null or nested values: the JSON decides
        elif p[0] in typed:
            # a scalar has no sub-keys: a nested path under a typed key is absent
            out[p] = (
                KeyColumn.from_arrow(typed[p[0]]).compact()
                if len(p) == 1
                else KeyColumn.absent(seg.rows)
            )
        else:
            out[p] = KeyColumn.absent(seg.rows)  # no row of this segment has the key
    if parse:
        out.update(columns_from_json_array(seg.metadata_json(), parse))
    seg.release_columns()  # the columns are copied out: unmap the Arrow pages read for them
    return out


def parse_metadata(raw: str | None) -> dict[str, Any] | None:
    """Stored metadata JSON as a dict, clipped to the depth writes allow (metadata stored by
    older versions may be deeper: its deep part comes back as JSON text, never an error)."""
    if raw is None:
        return None
    try:
        return clip_metadata(json.loads(raw))
    except RecursionError:  # stored by an older version, deeper than json can parse
        return {"_unreadable": "metadata nested too deeply to parse; rewrite this document"}


_parse = parse_metadata


def compaction_plan(
    sizes: Sequence[int], live: np.ndarray, keep_rows: int, min_deleted_share: float = 0.0
) -> list[tuple[int | None, np.ndarray | None]]:
    """What compaction does with each segment, in row order: ``(i, None)`` keeps segment
    ``i`` as it is; ``(None, positions)`` rewrites the live ``positions`` of a run of
    segments into new ones. ``live``: one bool per row (the table's live mask); segment
    ``i`` holds ``sizes[i]`` rows after those before it.

    A segment of at least ``keep_rows`` rows is kept when fewer than ``min_deleted_share``
    of its rows are deleted (0: only when none is): its deleted rows stay as tombstones,
    so a few deletes spread over every segment do not rewrite every row. The others form
    runs between kept ones (so the rows keep their order), and a run that is one segment
    with nothing deleted is kept too (rewriting it would copy it).
    """
    plan: list[tuple[int | None, np.ndarray | None]] = []
    run: list[tuple[int, np.ndarray, bool]] = []  # (segment, its live positions, whole)

    def flush() -> None:
        if len(run) == 1 and run[0][2]:
            plan.append((run[0][0], None))
        elif run:
            plan.append((None, np.concatenate([pos for _, pos, _ in run])))
        run.clear()

    start = 0
    for i, size in enumerate(sizes):
        pos = np.flatnonzero(live[start : start + size]) + start
        start += size
        whole = pos.size == size
        dead = size - pos.size
        if size >= keep_rows and (whole or (pos.size and dead < min_deleted_share * size)):
            flush()
            plan.append((i, None))
        elif pos.size:
            run.append((i, pos, whole))
    flush()
    return plan


def merge_plan(sizes: Sequence[int], small_rows: int, fan_in: int, merge_rows: int) -> int | None:
    """Where a writer merges its newest small segments into one, or None: the index of the
    first segment of the trailing run to merge (every segment from there to the last).

    Text ingest commits a segment per batch (2,048 documents for ``embedsearch index``), and
    a service that adds a few documents at a time one per request; each segment costs a
    manifest entry (written twice by every commit and parsed by every open), files to map
    and a step in every scan. A 1M-document collection in 489 such segments answered in
    4.1 ms against 1.7 ms in 20.

    Segments of fewer than ``small_rows`` rows are small; a small one's level is how many
    times ``fan_in`` divides into its rows (with 32: 1-31 rows level 0, 32-1,023 level 1,
    1,024 and more level 2). From the lowest level up, the trailing run of small segments
    of at most that level is merged once it holds ``fan_in`` segments *of* that level, or
    ``merge_rows`` rows: ``fan_in`` segments of one level make one of the next, as a counter
    carries, so a row is rewritten about once per level it climbs (2,048-row batches: once,
    into a 65,536-row segment; single documents: about four times), and fewer than
    ``fan_in`` segments of each level wait to be merged. Merging only a trailing run keeps
    every row at its position: the index, the tombstones and past versions stay valid.
    """
    level = [-1 if n >= small_rows else int(math.log(max(n, 1), fan_in) + 1e-9) for n in sizes]
    for top in range(int(math.log(max(small_rows - 1, 1), fan_in) + 1e-9) + 1):
        first = len(sizes)
        while first > 0 and 0 <= level[first - 1] <= top:
            first -= 1
        run = sizes[first:]
        peers = sum(1 for lv in level[first:] if lv == top)  # a level's own count carries
        if len(run) >= 2 and (peers >= fan_in or sum(run) >= merge_rows):
            return first
    return None


def _blocks_read() -> int | None:
    """Blocks this thread has read from disk so far (``None`` where the system does not
    count them per thread): a gather that read none found its rows in the page cache."""
    if _RUSAGE_THREAD is None:
        return None
    return resource.getrusage(_RUSAGE_THREAD).ru_inblock
