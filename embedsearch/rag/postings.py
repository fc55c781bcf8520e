"""Keyword postings of one segment, or of a group of consecutive segments merged (see
:mod:`.grouping`): the inverted index the BM25 side of retrieval reads.

A segment never changes once written, so its postings are built once (by the first keyword
query that needs them), saved with the collection as derived data and read back by later
processes; a commit adds segments, so it adds postings for those only, and a compaction's
new segments get theirs on the next keyword query. BM25's statistics over the collection
(live documents, their mean length, each term's document frequency) change with every
commit; they are not stored but summed over the segments when a query runs, deleted rows
left out (see :mod:`.bm25`).

**The file** (``seg-<id>.kw``, or ``grp-<key>.kw`` for a group): an 8-byte magic, the
length of a JSON header, the header (the segment's SHA-256, or the group's key; its rows;
each array's offset, length and CRC-32, for ``packed`` one CRC-32 per block of
:data:`BLOCK` bytes; ``row_bits``; a group's member segments), then the arrays,
little-endian, each at a 64-byte boundary and nothing after the last: ``term_hash`` (sorted
64-bit hashes of the analysed terms), ``term_end`` and ``term_text`` (the terms' UTF-8 in
the same order, to confirm a hash), ``indptr`` (each term's run of postings), ``doclen``
(each row's number of terms), ``big_at`` and ``big_tf`` (the postings whose count does not
fit beside their row, and their counts) and ``packed``: per posting, one 32-bit word
holding the row within the segment (ascending within a term) in its low ``row_bits`` bits
(enough for the file's rows, and at least :data:`MIN_ROW_BITS`) and the term's count in
that row in the others, or all ones there when the count is in ``big_tf`` (with 20 bits
for rows, counts up to 4,094 fit). Four bytes a posting where a pair of words took eight.

**Memory and checks.** Everything but ``packed`` (the dictionary) is mapped when the file
is opened, checked against its CRC-32 and for consistency, and held (its pages: about 30
bytes a distinct term and 4 a row). ``packed``, 4 bytes a posting and most of the file,
stays on disk: a query reads the runs of its terms with one ``pread`` each, as a re-rank
reads vector rows, so memory does not grow with the queries asked (a map would put every
touched page-cache folio in the process's RSS). A block of ``packed`` is checked against
its CRC-32 the first time a query reads from it, as vector blocks are: opening the
postings of a million abstracts maps and checks 12 MB of dictionary, not the files' 117. The rows a read hands out are bounds-checked by its caller, on every read and once
for all of a segment's runs (:meth:`~embedsearch.rag.bm25.BM25Store` gathers them). A
damaged or crafted file is refused (the caller rebuilds it), never read past; damage found
by a query raises :class:`~embedsearch.errors.CorruptionError` naming the file, and the
store rebuilds it. As with vector blocks, a block changed in place after a process checked
it is not checked again by that process, nor is the dictionary (a posting naming a row past
the segment's end still is, by the caller's check, and a run placed outside the file is
refused).
"""

from __future__ import annotations

import functools
import json
import mmap
import os
import struct
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

import numpy as np

from ..checksums import chunk_crcs, crc32
from ..errors import CorruptionError
from ..idhash import hash_strings

MAGIC = b"ESKWPST3"  # the layout's version: 3, packed postings (2: (row, count) pairs)
_ALIGN = 64
#: Arrays of the file, in file order, with their dtypes.
_ARRAYS = {
    "term_hash": "<u8",
    "term_end": "<i8",
    "indptr": "<i8",
    "doclen": "<u4",
    "term_text": "u1",
    "big_at": "<u8",
    "big_tf": "<u4",
    "packed": "<u4",
}
#: Fewest bits of a packed posting given to its row: one width for every file of up to a
#: million rows (a query then decodes a term's runs from all files at once), leaving counts
#: up to 4,094 beside them (tests raise it to make counts overflow).
MIN_ROW_BITS = 20
#: Bytes of ``packed`` under one CRC-32 (4,096 postings): what a query's first read of a
#: run checks at least (a median query at 1M rows reads 176 runs: 64 KB blocks made its
#: first reads check ~11 MB).
BLOCK = 1 << 14
_MAX_HEADER = 1 << 22


def row_bits(rows: int) -> int:
    """Bits of a packed posting that hold its row, in a file of ``rows`` rows."""
    return min(31, max(MIN_ROW_BITS, (max(rows, 2) - 1).bit_length()))


def pack(
    rows: np.ndarray, counts: np.ndarray, bits: int, first: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(packed, big_at, big_tf)`` of postings ``first ..`` (``rows`` below ``2**bits``;
    ``counts`` at least 1): one uint32 each, the row in the low ``bits`` bits, the count in
    the others or all ones there when it does not fit below that, the count then in
    ``big_tf`` at posting ``big_at`` (ascending)."""
    cap = np.uint32((1 << (32 - bits)) - 1)
    counts = np.asarray(counts, dtype=np.uint32)
    out = np.minimum(counts, cap) << np.uint32(bits)
    out |= np.asarray(rows, dtype=np.uint32)
    big = np.flatnonzero(counts >= cap)
    return out, (big + first).astype(np.uint64), counts[big]


def unpack(
    packed: np.ndarray, first: int, bits: int, big_at: np.ndarray, big_tf: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, counts)`` (uint32) of the packed postings ``first ..`` (see :func:`pack`)."""
    rows = packed & np.uint32((1 << bits) - 1)
    counts = packed >> np.uint32(bits)
    _restore(counts, first, big_at, big_tf)
    return rows, counts


def unpack_runs(
    words: np.ndarray,
    runs: Sequence[tuple[SegmentPostings, int, int]],
    offsets: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, counts)`` of runs read from several files and joined in ``words`` (uint32):
    run ``i`` is ``runs[i][2]`` packed postings of the file ``runs[i][0]`` from its posting
    ``runs[i][1]``. The rows come back as int64 with ``offsets[i]`` added to run ``i``'s
    (its file's first position in the collection), the counts as uint32.

    One query term's runs from every file, decoded at once where the files share their row
    bits (every file of up to ``2**MIN_ROW_BITS`` rows), run by run where not: decoding each
    run apart cost a few numpy calls a run, ~0.15 ms of a 1 ms filtered query at 100k rows.
    The rows are written as int64 by the decode itself and the offsets added in place: at
    5M rows a term's postings are millions of words, and a widening copy and an array of
    repeated offsets beside them were a third of reading a query's postings."""
    rows = np.empty(words.size, dtype=np.int64)
    widths = {p.row_bits for p, _, _ in runs}
    if len(widths) == 1:
        bits = widths.pop()
        np.bitwise_and(words, np.uint32((1 << bits) - 1), out=rows)
        counts = words >> np.uint32(bits)
    else:
        counts = np.empty_like(words)
        at = 0
        for p, _, size in runs:
            end = at + size
            np.bitwise_and(words[at:end], np.uint32((1 << p.row_bits) - 1), out=rows[at:end])
            np.right_shift(words[at:end], np.uint32(p.row_bits), out=counts[at:end])
            at = end
    at = 0
    for i, (p, first, size) in enumerate(runs):
        end = at + size
        if p.big_at.size:
            _restore(counts[at:end], first, p.big_at, p.big_tf)
        if offsets is not None and offsets[i]:
            rows[at:end] += offsets[i]
        at = end
    return rows, counts


def _restore(counts: np.ndarray, first: int, big_at: np.ndarray, big_tf: np.ndarray) -> None:
    """Put back, in ``counts`` (of postings ``first ..``), the counts kept apart."""
    if not big_at.size:
        return
    j0, j1 = np.searchsorted(big_at, [first, first + counts.size]).tolist()
    if j1 > j0:
        at = big_at[j0:j1].astype(np.int64) - first
        ok = (at >= 0) & (at < counts.size)  # (a map changed since it was checked)
        counts[at[ok]] = big_tf[j0:j1][ok]


@dataclass(eq=False)
class SegmentPostings:
    """One segment's terms and, per term, the rows holding it with their counts.

    The postings are packed as in the file (see the module notes): ``packed`` in memory
    (a build, a merge, or postings that could not be saved), or None when they are read
    from ``fd`` at ``offset``. Held packed, a group's members and their merge take half the
    memory (4 bytes a posting, not a pair of words)."""

    source: str
    term_hash: np.ndarray  # (terms,) uint64, ascending
    term_text: bytes | memoryview  # (a file's: a view of its map)
    term_end: np.ndarray  # (terms,) int64: term i is term_text[term_end[i-1]:term_end[i]]
    indptr: np.ndarray  # (terms + 1,) int64
    doclen: np.ndarray  # (rows,) uint32
    packed: np.ndarray | None = None  # (postings,) uint32, in memory
    fd: int | None = None
    offset: int = 0
    path: str = ""  # the file, for errors
    members: tuple[str, ...] = ()  # a group's segment files (see .grouping); () for one
    block_crcs: np.ndarray | None = None  # (blocks,) uint32: each BLOCK of packed
    checked: bytearray | None = None  # (blocks,): 1 where a read checked the block
    row_bits: int = 31  # bits of a packed posting holding its row
    big_at: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    big_tf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    _closer: weakref.finalize | None = field(default=None, repr=False)

    @property
    def rows(self) -> int:
        return int(self.doclen.size)

    @functools.cached_property
    def shortest(self) -> int:
        """The smallest length of a row holding a term (0 where none does): what MaxScore
        bounds a term's share with (see :meth:`.scoring.Weighting.bound`). Worked out from
        the checked lengths once per file and process (a file never changes), so a commit's
        next query does not pass over every row's length again; one pass where no row is
        empty (0.17 ms a million rows), a masked one where some are."""
        least = int(self.doclen.min()) if self.doclen.size else 0
        if least:
            return least
        top = np.iinfo(np.uint32).max
        least = int(np.min(self.doclen, where=self.doclen > 0, initial=top))
        return 0 if least == top else least

    # ------------------------------------------------------------------ building
    @classmethod
    def from_pairs(
        cls, source: str, terms: np.ndarray, docs: np.ndarray, vocab: Sequence[str], rows: int
    ) -> SegmentPostings:
        """Postings of ``rows`` rows from one (term, row) pair per occurrence (``terms``
        index ``vocab``; rows ascending), repeats counted. Held in memory."""
        # terms in the order of their hashes, so a query finds them by binary search
        hashes = hash_strings(list(vocab))
        order = np.argsort(hashes, kind="stable")
        rank = np.empty(len(vocab), dtype=np.int64)
        rank[order] = np.arange(len(vocab))
        # one (term, row) key per occurrence, sorted in place; equal keys counted: the
        # term's count in the row (np.unique's work, without its copies of the keys)
        span = max(rows, 1)
        keys = rank[terms]
        keys *= span
        keys += docs
        keys.sort()
        head = np.empty(keys.size, dtype=bool)
        head[:1] = True
        np.not_equal(keys[1:], keys[:-1], out=head[1:])
        first = np.flatnonzero(head)
        del head
        tf = np.diff(first, append=keys.size).astype(np.uint32)
        keys = keys[first]  # one per (term, row)
        del first
        term = keys // span
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.cumsum(np.bincount(term, minlength=len(vocab)), out=indptr[1:])
        row = np.empty(keys.size, dtype=np.uint32)
        term *= span
        np.subtract(keys, term, out=row, casting="unsafe")
        del keys, term
        bits = row_bits(rows)
        packed, big_at, big_tf = pack(row, tf, bits)
        del row, tf
        encoded = [vocab[i].encode() for i in order.tolist()]
        return cls(
            source=source,
            term_hash=np.ascontiguousarray(hashes[order], dtype=np.uint64),
            term_text=b"".join(encoded),
            term_end=np.cumsum([len(e) for e in encoded], dtype=np.int64),
            indptr=indptr,
            doclen=np.bincount(docs, minlength=rows).astype(np.uint32),
            packed=packed,
            row_bits=bits,
            big_at=big_at,
            big_tf=big_tf,
        )

    @classmethod
    def merge(
        cls, parts: Sequence[SegmentPostings], source: str, members: Sequence[str] = ()
    ) -> SegmentPostings:
        """The postings of consecutive segments as one unit, in memory: ``parts[i]``'s rows
        follow those of the parts before it. Terms are united by their bytes (Arrow's
        dictionary encoding) and hashed anew; each part's runs are copied to their place in
        the merged runs, in part order, so rows stay ascending within a term. Reads every
        part's postings (checking every block, and every row against its part's end).

        Raises:
            CorruptionError: a part's file is damaged or names rows outside its part.
        """
        import pyarrow as pa  # noqa: PLC0415 - only merges need it

        texts = [
            pa.Array.from_buffers(
                pa.large_binary(),
                part.term_hash.size,
                [
                    None,
                    pa.py_buffer(np.concatenate([[0], part.term_end]).astype(np.int64)),
                    pa.py_buffer(part.term_text),
                ],
            )
            for part in parts
        ]
        encoded = pa.chunked_array(texts, pa.large_binary()).dictionary_encode()
        vocab = encoded.chunks[0].dictionary
        hashes = hash_strings(vocab.cast(pa.large_string()).cast(pa.string()))
        order = np.argsort(hashes, kind="stable")
        rank = np.empty(order.size, dtype=np.int64)
        rank[order] = np.arange(order.size)
        remap = [rank[c.indices.to_numpy(zero_copy_only=False)] for c in encoded.chunks]
        lengths = [np.diff(part.indptr) for part in parts]
        counts = np.zeros(order.size, dtype=np.int64)
        for r, n in zip(remap, lengths):
            counts[r] += n  # a part's terms are distinct: no index repeats within r
        indptr = np.zeros(order.size + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        bits = row_bits(sum(part.rows for part in parts))
        packed = np.empty(int(indptr[-1]), dtype=np.uint32)
        big_at: list[np.ndarray] = [np.zeros(0, np.int64)]
        big_tf: list[np.ndarray] = [np.zeros(0, np.uint32)]
        cursor = indptr[:-1].copy()
        offset = 0
        for part, r, n in zip(parts, remap, lengths):
            rows, tf = part.all_postings()
            if rows.size and int(rows.max()) >= part.rows:  # crafted: never merged
                raise part.damaged("names a row outside its segment")
            dest = np.repeat(cursor[r] - part.indptr[:-1], n) + np.arange(rows.size)
            rows += np.uint32(offset)
            words, at, wide = pack(rows, tf, bits)
            del rows, tf
            packed[dest] = words
            big_at.append(dest[at.astype(np.int64)])
            big_tf.append(wide)
            cursor[r] += n
            offset += part.rows
        at = np.concatenate(big_at)
        order_big = np.argsort(at, kind="stable")
        ordered = vocab.take(pa.array(order))  # the terms' bytes in hash order
        ends = np.frombuffer(ordered.buffers()[1], dtype=np.int64)[: len(ordered) + 1]
        data = ordered.buffers()[2]
        text = b"" if data is None else data.to_pybytes()[int(ends[0]) : int(ends[-1])]
        return cls(
            source=source,
            term_hash=np.ascontiguousarray(hashes[order], dtype=np.uint64),
            term_text=text,
            term_end=(ends[1:] - ends[0]).astype(np.int64),
            indptr=indptr,
            doclen=np.concatenate([part.doclen for part in parts]).astype(np.uint32),
            packed=packed,
            row_bits=bits,
            big_at=at[order_big].astype(np.uint64),
            big_tf=np.concatenate(big_tf)[order_big],
            members=tuple(members),
        )

    def all_postings(self) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, counts)`` (uint32, new arrays) of every posting, in term order (a file's
        blocks all checked)."""
        return unpack(
            self._words(0, int(self.indptr[-1])), 0, self.row_bits, self.big_at, self.big_tf
        )

    # ------------------------------------------------------------------ reading
    def find(self, terms: Sequence[bytes], hashes: np.ndarray) -> list[tuple[int, int]]:
        """``(i, index)`` of each of ``terms`` (UTF-8, hashed as ``hashes``) held in this
        segment: ``terms[i]`` is term ``index`` here. The hash finds it, the text confirms."""
        size = self.term_hash.size
        if not size:
            return []
        at = np.searchsorted(self.term_hash, hashes)
        hit = np.flatnonzero(self.term_hash[np.minimum(at, size - 1)] == hashes)
        out = []
        for t in hit.tolist():
            i, h = int(at[t]), int(hashes[t])
            while i < size and int(self.term_hash[i]) == h:  # equal hashes: compare the text
                lo = int(self.term_end[i - 1]) if i else 0
                if self.term_text[lo : int(self.term_end[i])] == terms[t]:
                    out.append((t, i))
                    break
                i += 1
        return out

    def postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, counts)`` of term index ``term`` (uint32 each), read with one ``pread``
        from a file. The rows are not bounds-checked here: the caller checks them."""
        lo, hi = int(self.indptr[term]), int(self.indptr[term + 1])
        return unpack(self._words(lo, hi), lo, self.row_bits, self.big_at, self.big_tf)

    def span(self, term: int) -> tuple[int, int]:
        """Indices ``lo, hi`` of term index ``term``'s postings in this file."""
        return int(self.indptr[term]), int(self.indptr[term + 1])

    def read_into(self, lo: int, hi: int, out: np.ndarray) -> None:
        """Packed postings ``lo:hi`` into ``out`` (uint32, ``hi - lo`` words, contiguous):
        with one ``pread`` straight into it once the blocks they touch are checked (for
        :func:`unpack_runs`, which decodes many files' runs joined in one array); on a
        first read, from the whole blocks read and checked."""
        if self.packed is not None:
            out[:] = self.packed[lo:hi]
            return
        start, end = lo * 4, hi * 4
        if start == end:
            return
        assert self.fd is not None and self.checked is not None
        if not 0 <= start < end <= self._packed_bytes:  # (the map changed since it was checked)
            raise self.damaged("names postings outside its file")
        b0, b1 = start // BLOCK, (end - 1) // BLOCK + 1
        if self.checked.find(0, b0, b1) < 0:  # every block checked (a C-level scan)
            if os.preadv(self.fd, [memoryview(out).cast("B")], self.offset + start) != end - start:
                raise self.damaged("is shorter than its header says")
            return
        raw = self._checked_blocks(b0, b1)
        out[:] = np.frombuffer(raw, dtype="<u4", count=hi - lo, offset=start - b0 * BLOCK)

    def _words(self, lo: int, hi: int) -> np.ndarray:
        """Packed postings ``lo:hi``, from memory or read from the file."""
        if self.packed is not None:
            return self.packed[lo:hi]
        out = np.empty(hi - lo, dtype=np.uint32)
        self.read_into(lo, hi, out)
        return out

    def _checked_blocks(self, b0: int, b1: int) -> bytes:
        """Blocks ``b0:b1`` of ``packed`` read whole, each checked against its CRC-32 the
        first time."""
        assert self.fd is not None and self.checked is not None and self.block_crcs is not None
        first = b0 * BLOCK
        size = min(b1 * BLOCK, self._packed_bytes) - first
        raw = os.pread(self.fd, size, self.offset + first)
        if len(raw) != size:
            raise self.damaged("is shorter than its header says")
        view = memoryview(raw)
        for b in range(b0, b1):
            if self.checked[b]:
                continue
            block = view[(b - b0) * BLOCK : (b - b0 + 1) * BLOCK]
            if crc32(block) != int(self.block_crcs[b]):
                raise self.damaged(f"has a damaged block of postings (block {b})")
            self.checked[b] = 1
        return raw

    @property
    def _packed_bytes(self) -> int:
        return int(self.indptr[-1]) * 4

    def damaged(self, what: str) -> CorruptionError:
        """The error for this file found damaged (``what``: how)."""
        return CorruptionError(
            f"keyword postings {self.path} {what}. They are derived data: delete the file "
            "and the next keyword query rebuilds it."
        )

    def close(self) -> None:
        """Close the file the postings are read from (idempotent)."""
        if self._closer is not None:
            self._closer()

    # ------------------------------------------------------------------ the file
    def write_to(self, fh: IO[bytes]) -> None:
        """Write the file (see the module notes) to ``fh``, each array from where it is held:
        nothing is copied into one buffer first (the bytes of a merged group of ten
        segments' postings, 100 MB, had been held four times over while it was saved)."""
        assert self.packed is not None, "only postings held in memory are written"
        arrays = {
            "term_hash": self.term_hash,
            "term_end": self.term_end,
            "indptr": self.indptr,
            "doclen": self.doclen,
            "term_text": np.frombuffer(self.term_text, dtype=np.uint8),
            "big_at": self.big_at,
            "big_tf": self.big_tf,
            "packed": self.packed,
        }
        views = {
            n: memoryview(np.ascontiguousarray(a, dtype=_ARRAYS[n]).reshape(-1).view(np.uint8))
            for n, a in arrays.items()
        }
        layout: dict[str, list[object]] = {}
        at = 0
        for name, view in views.items():
            at += -at % _ALIGN
            crc = chunk_crcs(view, BLOCK) if name == "packed" else f"{crc32(view):08x}"
            layout[name] = [at, len(view), crc]
            at += len(view)  # no padding after the last: every byte is checked
        head: dict[str, object] = {
            "source": self.source,
            "rows": self.rows,
            "row_bits": self.row_bits,
            "arrays": layout,
        }
        if self.members:
            head["members"] = list(self.members)
        header = json.dumps(head, sort_keys=True).encode()
        start = len(MAGIC) + 8 + len(header)
        start += -start % _ALIGN
        written = fh.write(MAGIC + struct.pack("<Q", len(header)) + header)
        for name, view in views.items():
            gap = start + int(layout[name][0]) - written  # type: ignore[call-overload]
            written += fh.write(b"\0" * gap) + fh.write(view)

    @classmethod
    def open(cls, fd: int, source: str, rows: int, path: str = "") -> SegmentPostings:
        """Postings of the file open as ``fd`` (owned from here: closed with the object),
        checked against the segment they must describe (``source``: its SHA-256; ``rows``).
        Raises ValueError if the file is damaged, not that segment's, or inconsistent."""
        try:
            out = cls._open(fd, source, rows)
            out.path = path
        except BaseException:
            os.close(fd)
            raise
        out._closer = weakref.finalize(out, os.close, fd)
        return out

    @staticmethod
    def read_header(fd: int) -> tuple[dict[str, object], int]:
        """The file's JSON header and the length of the part before its arrays (raises
        ValueError if it is not a postings file of this layout)."""
        head = os.pread(fd, len(MAGIC) + 8, 0)
        if len(head) != len(MAGIC) + 8 or head[: len(MAGIC)] != MAGIC:
            raise ValueError("not a keyword postings file")
        (n,) = struct.unpack("<Q", head[len(MAGIC) :])
        if n > _MAX_HEADER:
            raise ValueError("header too long")
        try:
            header = json.loads(os.pread(fd, n, len(MAGIC) + 8))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed header ({exc!r})") from None
        if not isinstance(header, dict):
            raise ValueError("malformed header")
        members = header.get("members", [])
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ValueError("malformed header (members)")
        start = len(MAGIC) + 8 + n
        return header, start + -start % _ALIGN

    @classmethod
    def _open(cls, fd: int, source: str, rows: int) -> SegmentPostings:
        size = os.fstat(fd).st_size
        header, start = cls.read_header(fd)
        try:
            layout = {k: header["arrays"][k] for k in _ARRAYS}  # type: ignore[index]
            if header["source"] != source:
                raise ValueError("built from other rows (the segment's checksum differs)")
            if header["rows"] != rows:
                raise ValueError(f"{header['rows']} rows, the segment has {rows}")
            bits = header["row_bits"]
            if type(bits) is not int or not 1 <= bits <= 31 or max(rows - 1, 0) >> bits:
                raise ValueError(f"row_bits {bits!r} do not fit {rows} rows")
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed header ({exc!r})") from None
        # the dictionary (every array but packed) is read through a map: checking it there
        # took a fifth of the time of reading it into new memory (2.3 against 12 ms for a
        # million rows' 12 MB in a fresh process, whose first touch of each new page of its
        # own is a fault); the pages are held either way
        whole = mmap.mmap(fd, size, access=mmap.ACCESS_READ) if size else b""
        arrays: dict[str, np.ndarray] = {}
        for name, dtype in _ARRAYS.items():
            entry = layout[name]
            if (
                not isinstance(entry, list)
                or len(entry) != 3
                or not all(type(v) is int for v in entry[:2])
                or not isinstance(entry[2], str)
            ):
                raise ValueError(f"{name}: malformed layout")
            off, length, crc = start + entry[0], entry[1], entry[2]
            width = np.dtype(dtype).itemsize
            if entry[0] < 0 or length < 0 or length % width or off + length > size:
                raise ValueError(f"{name}: outside the file or not whole values")
            if name == "packed":  # checked block by block on first read: see the notes
                blocks = -(-length // BLOCK)
                if len(crc) != 8 * blocks:
                    raise ValueError("packed: not one checksum per block")
                try:
                    # (one int() a block was half of opening a million rows' postings)
                    raw_crcs = bytes.fromhex(crc)  # (skips spaces: the length says)
                    if len(raw_crcs) != 4 * blocks:
                        raise ValueError
                    block_crcs = np.frombuffer(raw_crcs, dtype=">u4").astype("<u4")
                except ValueError:
                    raise ValueError("packed: checksums are not hexadecimal") from None
                packed_at, postings = off, length // 4
                continue
            if f"{crc32(memoryview(whole)[off : off + length]):08x}" != crc:
                raise ValueError(f"{name}: checksum mismatch")
            arrays[name] = np.frombuffer(whole, dtype=dtype, count=length // width, offset=off)
        terms, text = arrays["term_hash"].size, arrays["term_text"].size
        indptr, ends, th = arrays["indptr"], arrays["term_end"], arrays["term_hash"]
        if arrays["doclen"].size != rows:
            raise ValueError(f"{arrays['doclen'].size} row lengths, the segment has {rows}")
        if indptr.size != terms + 1 or ends.size != terms:
            raise ValueError("array lengths do not match")
        if indptr[0] != 0 or indptr[-1] != postings or (indptr[1:] < indptr[:-1]).any():
            raise ValueError("indptr is not a run of postings")
        if terms and (ends[-1] != text or ends[0] < 0 or (ends[1:] < ends[:-1]).any()):
            raise ValueError("term_end does not cut term_text")
        if (th[1:] < th[:-1]).any():
            raise ValueError("term_hash is not sorted")
        big_at, big_tf = arrays["big_at"], arrays["big_tf"]
        if big_at.size != big_tf.size or (big_at.size and big_at[-1] >= postings):
            raise ValueError("big_at does not name postings")
        if (big_at[1:] <= big_at[:-1]).any():
            raise ValueError("big_at is not ascending")
        return cls(
            source=source,
            term_hash=th,
            term_text=memoryview(arrays["term_text"]),
            term_end=ends,
            indptr=indptr,
            doclen=arrays["doclen"],
            fd=fd,
            offset=packed_at,
            block_crcs=block_crcs,
            checked=bytearray(block_crcs.size),
            row_bits=bits,
            big_at=big_at,
            big_tf=big_tf,
            members=tuple(header.get("members", ())),  # type: ignore[arg-type]
        )
