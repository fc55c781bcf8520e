"""Keyword postings of one segment: the inverted index the BM25 side of retrieval reads.

A segment never changes once written, so its postings are built once (by the first keyword
query that needs them), saved with the collection as derived data and read back by later
processes; a commit adds segments, so it adds postings for those only, and a compaction's
new segments get theirs on the next keyword query. BM25's statistics over the collection
(live documents, their mean length, each term's document frequency) change with every
commit; they are not stored but summed over the segments when a query runs, deleted rows
left out (see :mod:`.bm25`).

The file is an ``.npz`` read without pickle: ``term_hash`` (sorted 64-bit hashes of the
analysed terms), ``term_text`` and ``term_end`` (the terms' UTF-8 in the same order, to
confirm a hash), ``indptr`` (each term's run of postings), ``docs`` (rows of the segment,
ascending within a term), ``tf`` (the term's count in that row), ``doclen`` (each row's
number of terms) and ``source`` (the segment's SHA-256, which ties the file to the rows it
was built from). :meth:`SegmentPostings.from_npz` checks every array's shape and bounds,
so a damaged or crafted file is refused (and rebuilt by the caller), never read past.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..idhash import hash_strings


@dataclass(frozen=True)
class SegmentPostings:
    """One segment's terms and, per term, the rows holding it with their counts."""

    source: str
    term_hash: np.ndarray  # (terms,) uint64, ascending
    term_text: bytes
    term_end: np.ndarray  # (terms,) int64: term i is term_text[term_end[i-1]:term_end[i]]
    indptr: np.ndarray  # (terms + 1,) int64
    docs: np.ndarray  # (postings,) int32
    tf: np.ndarray  # (postings,) uint32
    doclen: np.ndarray  # (rows,) uint32

    @property
    def rows(self) -> int:
        return int(self.doclen.size)

    @property
    def nbytes(self) -> int:
        arrays = (self.term_hash, self.term_end, self.indptr, self.docs, self.tf, self.doclen)
        return len(self.term_text) + sum(a.nbytes for a in arrays)

    @classmethod
    def from_tokens(
        cls, source: str, token_ids: Sequence[Sequence[int]], vocab: Sequence[str]
    ) -> SegmentPostings:
        """Postings of rows whose analysed terms are ``token_ids`` (indexes into ``vocab``,
        one list per row, repeats counted)."""
        rows = len(token_ids)
        lens = np.fromiter((len(t) for t in token_ids), dtype=np.int64, count=rows)
        total = int(lens.sum())
        flat = np.fromiter((i for t in token_ids for i in t), dtype=np.int64, count=total)
        docs = np.repeat(np.arange(rows, dtype=np.int64), lens)
        return cls.from_pairs(source, flat, docs, vocab, rows)

    @classmethod
    def from_pairs(
        cls, source: str, terms: np.ndarray, docs: np.ndarray, vocab: Sequence[str], rows: int
    ) -> SegmentPostings:
        """Postings of ``rows`` rows from one (term, row) pair per occurrence (``terms``
        index ``vocab``; rows ascending), repeats counted."""
        # terms in the order of their hashes, so a query finds them by binary search
        hashes = hash_strings(list(vocab))
        order = np.argsort(hashes, kind="stable")
        rank = np.empty(len(vocab), dtype=np.int64)
        rank[order] = np.arange(len(vocab))
        # one (term, row) key per occurrence; equal keys counted: the term's count in the row
        span = max(rows, 1)
        pairs, tf = np.unique(rank[terms] * span + docs, return_counts=True)
        term, row = np.divmod(pairs, span)
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.cumsum(np.bincount(term, minlength=len(vocab)), out=indptr[1:])
        encoded = [vocab[i].encode() for i in order.tolist()]
        return cls(
            source=source,
            term_hash=np.ascontiguousarray(hashes[order], dtype=np.uint64),
            term_text=b"".join(encoded),
            term_end=np.cumsum([len(e) for e in encoded], dtype=np.int64),
            indptr=indptr,
            docs=row.astype(np.int32),
            tf=tf.astype(np.uint32),
            doclen=np.bincount(docs, minlength=rows).astype(np.uint32),
        )

    def find(self, terms: Sequence[str], hashes: np.ndarray) -> list[int]:
        """Index of each of ``terms`` (hashed as ``hashes``) in this segment, or -1."""
        if not self.term_hash.size:
            return [-1] * len(terms)
        at = np.searchsorted(self.term_hash, hashes)
        out = []
        for term, h, i in zip(terms, hashes.tolist(), at.tolist()):
            found = -1
            while i < self.term_hash.size and int(self.term_hash[i]) == h:
                lo = int(self.term_end[i - 1]) if i else 0
                if self.term_text[lo : int(self.term_end[i])] == term.encode():
                    found = i
                    break
                i += 1
            out.append(found)
        return out

    def postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, counts)`` of term index ``term``."""
        lo, hi = int(self.indptr[term]), int(self.indptr[term + 1])
        return self.docs[lo:hi], self.tf[lo:hi]

    def to_npz(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf,
            source=np.frombuffer(self.source.encode(), dtype=np.uint8),
            term_hash=self.term_hash,
            term_text=np.frombuffer(self.term_text, dtype=np.uint8),
            term_end=self.term_end,
            indptr=self.indptr,
            docs=self.docs,
            tf=self.tf,
            doclen=self.doclen,
        )
        return buf.getvalue()

    @classmethod
    def from_npz(cls, raw: bytes, source: str, rows: int) -> SegmentPostings:
        """Postings read from :meth:`to_npz`'s bytes, checked against the segment they
        must describe (``source``: its SHA-256; ``rows``). Raises ValueError if they are
        not that segment's or their arrays do not fit together."""
        want = {
            "source": np.uint8,
            "term_hash": np.uint64,
            "term_text": np.uint8,
            "term_end": np.int64,
            "indptr": np.int64,
            "docs": np.int32,
            "tf": np.uint32,
            "doclen": np.uint32,
        }
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            if set(z.files) != set(want):
                raise ValueError(f"arrays {sorted(z.files)}, expected {sorted(want)}")
            arr = {name: z[name] for name in want}
        for name, dtype in want.items():
            if arr[name].dtype != dtype or arr[name].ndim != 1:
                raise ValueError(f"{name} is not a 1-D {np.dtype(dtype).name} array")
        if arr["source"].tobytes().decode("ascii", "replace") != source:
            raise ValueError("built from other rows (the segment's checksum differs)")
        terms, nnz, text = arr["term_hash"].size, arr["docs"].size, arr["term_text"].size
        indptr, ends = arr["indptr"], arr["term_end"]
        if arr["doclen"].size != rows:
            raise ValueError(f"{arr['doclen'].size} rows, the segment has {rows}")
        if indptr.size != terms + 1 or ends.size != terms or arr["tf"].size != nnz:
            raise ValueError("array lengths do not match")
        if indptr[0] != 0 or indptr[-1] != nnz or (np.diff(indptr) < 0).any():
            raise ValueError("indptr is not a run of postings")
        if terms and (ends[-1] != text or (np.diff(ends) < 0).any() or ends[0] < 0):
            raise ValueError("term_end does not cut term_text")
        th = arr["term_hash"]
        if (th[1:] < th[:-1]).any():  # (np.diff of uint64 would wrap, never negative)
            raise ValueError("term_hash is not sorted")
        if nnz and (arr["docs"].min() < 0 or arr["docs"].max() >= rows):
            raise ValueError("a posting names a row outside the segment")
        return cls(
            source=source,
            term_hash=arr["term_hash"],
            term_text=arr["term_text"].tobytes(),
            term_end=ends,
            indptr=indptr,
            docs=arr["docs"],
            tf=arr["tf"],
            doclen=arr["doclen"],
        )
