"""Id → position without a Python object per row: 64-bit id hashes in sorted runs.

A collection finds a document by id through :class:`IdMap`: sorted runs of (hash,
position), searched with ``np.searchsorted``; every candidate is confirmed by reading the
stored id itself, so a hash collision never returns a wrong row.

Since format 3 each segment carries its run on disk, ``seg-<hex>.ids``: the segment's
``rows`` id hashes as little-endian uint64 in ascending order, then ``rows`` little-endian
uint32 row numbers within the segment (the row of each hash, in the same order). A fresh
process then finds ids by mapping these files (12 bytes a row, checked once each) instead of
reading and hashing every id of the collection: the first ``get`` at 1M rows took 0.5 s
that way, all of it O(rows).

The hash is part of the format: :func:`hash_strings` must never change.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from .arrays import utf8

_P = np.uint64(0x100000001B3)  # FNV prime; the polynomial base of the id hash
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
#: Bytes a row takes in a segment's id index (uint64 hash + uint32 row).
RUN_ROW_BYTES = 12


def hash_strings(arr: pa.Array | Sequence[str]) -> np.ndarray:
    """A 64-bit hash of each string of an Arrow string array (or a list of str), in numpy.

    Polynomial over the UTF-8 bytes, then splitmix64-finalised. Not collision-free: lookups
    confirm the id itself (:meth:`IdMap.candidates` gives candidates only). A Python list is
    hashed from its encoded bytes without building an Arrow array: ``pa.array`` imports
    pandas (0.4 s of a cold CLI call that looks up a few ids).
    """
    if not isinstance(arr, pa.Array):
        if not arr:
            return np.zeros(0, dtype=np.uint64)
        offsets, joined = utf8(arr, "surrogatepass")  # a lone surrogate is never stored
        data = np.frombuffer(joined, dtype=np.uint8).astype(np.uint64) if joined else None
        return _hash_bytes(offsets, data)
    arr = arr.cast(pa.string()) if arr.type != pa.string() else arr
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32)[arr.offset : arr.offset + n + 1].astype(
        np.int64
    )
    base = int(offsets[0])
    total = int(offsets[-1] - base)
    data = np.frombuffer(bufs[2], dtype=np.uint8)[base : base + total] if total else None
    return _hash_bytes(offsets - base, None if data is None else data.astype(np.uint64))


def _hash_bytes(offsets: np.ndarray, data: np.ndarray | None) -> np.ndarray:
    """The hash of :func:`hash_strings` over strings ``data[offsets[i]:offsets[i+1]]``."""
    lens = np.diff(offsets)
    total = int(offsets[-1])
    if data is None:
        data = np.zeros(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = lens.astype(np.uint64) * _MIX2
        if total:
            maxlen = int(lens.max())
            powers = np.ones(maxlen, dtype=np.uint64)
            for i in range(1, maxlen):
                powers[i] = powers[i - 1] * _P
            starts = offsets[:-1]
            within = np.arange(total, dtype=np.int64) - np.repeat(starts, lens)
            vals = (data + np.uint64(1)) * powers[within]
            nonempty = lens > 0
            h[nonempty] += np.add.reduceat(vals, starts[nonempty])
        h ^= h >> np.uint64(30)
        h *= _MIX1
        h ^= h >> np.uint64(27)
        h *= _MIX2
        h ^= h >> np.uint64(31)
    return h


def encode_run(hashes: np.ndarray) -> bytes:
    """The bytes of a segment's id index for the ids whose hashes are ``hashes`` (in row
    order): the hashes sorted, then the row of each."""
    order = np.argsort(hashes, kind="stable")
    return hashes[order].astype("<u8").tobytes() + order.astype("<u4").tobytes()


def decode_run(buf: memoryview | bytes, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted hashes, rows) of a segment's id index, zero-copy views of ``buf``.

    Raises:
        ValueError: ``buf`` is not an index of ``rows`` rows: wrong size, hashes out of
            order, or a row number past the segment (a crafted file with a valid
            checksum must not send a lookup outside its segment).
    """
    if len(buf) != rows * RUN_ROW_BYTES:
        raise ValueError(f"{len(buf)} bytes, not {rows} × {RUN_ROW_BYTES}")
    hashes = np.frombuffer(buf, dtype="<u8", count=rows)
    local = np.frombuffer(buf, dtype="<u4", count=rows, offset=rows * 8)
    if rows and (bool((hashes[1:] < hashes[:-1]).any()) or int(local.max()) >= rows):
        raise ValueError("hashes out of order or rows out of range")
    return hashes, local


class IdMap:
    """id → position as sorted runs of (hash, position): O(log n) lookups, no dict of strings.

    Two kinds of runs: a segment's on-disk index (:func:`decode_run`, added with
    :meth:`add_sorted`), used where it lies and never merged (building the map reads nothing
    else); and runs hashed here from ids (:meth:`add`), merged when the newest is at least
    half the size of the one before (as in a log-structured merge), so each row is re-sorted
    O(log n) times in all and the cost of one add does not grow with the collection.
    """

    def __init__(self) -> None:
        # (sorted hashes, positions relative to start, start, mergeable)
        self._runs: list[tuple[np.ndarray, np.ndarray, int, bool]] = []

    def add(self, hashes: np.ndarray, start: int) -> None:
        """Add rows ``start, start + 1, ...`` whose id hashes are ``hashes``."""
        order = np.argsort(hashes, kind="stable")
        self._runs.append((hashes[order], order.astype(np.int64) + start, 0, True))
        while len(self._runs) > 1 and self._runs[-2][3] and self._runs[-1][3]:
            (h1, p1, _, _), (h2, p2, _, _) = self._runs[-2], self._runs[-1]
            if len(h1) > 2 * len(h2):
                break
            h = np.concatenate([h1, h2])
            p = np.concatenate([p1, p2])
            order = np.argsort(h, kind="stable")
            self._runs[-2:] = [(h[order], p[order], 0, True)]

    def add_sorted(self, hashes: np.ndarray, local: np.ndarray, start: int) -> None:
        """Add a segment's on-disk run (:func:`decode_run`) whose first row is ``start``."""
        self._runs.append((hashes, local, start, False))

    def candidates(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query index, position) for every stored row whose hash equals a query's.

        The queries are sorted once, so each run's binary searches walk it in order (numpy
        starts each search where the previous one ended), and only the queries found in a
        run search it a second time for their last equal hash: 10,000 ids against 100 runs
        of 50k took 325 ms with two searches of the unsorted queries per run.
        """
        order = np.argsort(hashes, kind="stable")
        sq = np.ascontiguousarray(hashes[order], dtype=np.uint64)
        qi: list[np.ndarray] = []
        pos: list[np.ndarray] = []
        for h, p, start, _ in self._runs:
            if not len(h):
                continue
            lo = np.searchsorted(h, sq, side="left")
            found = h[np.minimum(lo, len(h) - 1)] == sq
            found &= lo < len(h)
            hit = np.flatnonzero(found)
            if not hit.size:
                continue
            first = lo[hit]
            reps = np.searchsorted(h, sq[hit], side="right") - first
            q = np.repeat(order[hit], reps)
            offs = np.arange(int(reps.sum())) - np.repeat(np.cumsum(reps) - reps, reps)
            qi.append(q)
            pos.append(p[np.repeat(first, reps) + offs].astype(np.int64) + start)
        if not qi:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(qi), np.concatenate(pos)
