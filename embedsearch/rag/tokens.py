"""Splitting many texts into keyword tokens at once: bm25s's tokens, in whole arrays.

bm25s (and scikit-learn) take a text's tokens as ``re.findall(r"(?u)\\b\\w\\w+\\b",
text.lower())``: runs of two or more word characters. Done text by text in Python that was
half of building a segment's postings (1.26 s of 2.6 s for 50,000 abstracts, 2.4M tokens),
and making Arrow strings of the 2.4M Python strings a quarter more.

For ASCII texts the same tokens come from the bytes with numpy: a word character is one of
``[A-Za-z0-9_]`` (what ``\\w`` matches below 128), a token is a run of two or more of them
inside one text, lowered byte by byte as ``str.lower`` lowers ASCII. The tokens are laid out
as one Arrow string array without a Python string per token. A text holding any other
character (``\\w`` then follows the Unicode database, and ``lower`` its case mappings) is
split by the regular expression itself, so every text gets exactly bm25s's tokens; a test
holds the two equal over random texts of both kinds.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from ..arrays import indices, numbers, strings

#: bm25s's token pattern (scikit-learn's): runs of two or more word characters.
TOKEN = re.compile(r"(?u)\b\w\w+\b")

#: ``str.lower`` of each ASCII byte.
_LOWER = np.arange(256, dtype=np.uint8)
_LOWER[ord("A") : ord("Z") + 1] += 32
#: Whether an ASCII byte is a word character (``\w``).
_WORD = np.zeros(256, dtype=bool)
_WORD[list(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")] = True


#: Bytes of ASCII text split in one pass. A pass holds about 10 bytes of arrays a byte of
#: text (a word flag and a step a byte, a start and an end a word), so a segment's texts
#: are split a few MiB at a time and only their tokens kept: for 50,000 abstracts (18 MB)
#: one pass over all of them had held ~120 MB at once.
CHUNK_BYTES = 4 << 20


def token_rows(texts: pa.Array | Sequence[str]) -> tuple[pa.ChunkedArray, np.ndarray]:
    """Every token of ``texts`` (an Arrow string array, or strings), lowered, as Arrow
    strings in a few chunks, and the row of each (int32): for ASCII rows the tokens of a row
    are in order and the rows ascending (the order of rows does not matter to postings,
    which count pairs)."""
    import pyarrow.compute as pc  # (~0.2 s on first import: only when building postings)

    arr = texts if isinstance(texts, pa.Array) else strings(list(texts))
    if arr.type != pa.string() or arr.null_count:  # (fill_null and cast may import pandas)
        arr = strings([t or "" for t in arr.to_pylist()])
    plain = numbers(pc.string_is_ascii(arr)).astype(bool)
    parts: list[pa.Array] = []
    rows: list[np.ndarray] = []
    at = np.flatnonzero(plain).astype(np.int32)
    if at.size:
        ascii_rows = arr if at.size == len(arr) else arr.take(indices(at))
        for lo, hi in _chunks(ascii_rows):
            tokens, row = _ascii_tokens(ascii_rows.slice(lo, hi - lo))
            parts.append(tokens)
            rows.append(at[row + lo])
    other = np.flatnonzero(~plain).astype(np.int32)
    if other.size:
        split = TOKEN.findall
        found = [split(t.lower()) for t in arr.take(indices(other)).to_pylist()]
        counts = np.fromiter(map(len, found), dtype=np.int64, count=len(found))
        parts.append(strings(list(itertools.chain.from_iterable(found))))
        rows.append(np.repeat(other, counts))
    out = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int32)
    return pa.chunked_array(parts, pa.string()), out


def _chunks(arr: pa.StringArray) -> list[tuple[int, int]]:
    """Row ranges of ``arr`` holding about :data:`CHUNK_BYTES` of text each (a row longer
    than that alone)."""
    n = len(arr)
    off = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + n + 1]
    marks = np.arange(int(off[0]), int(off[-1]), CHUNK_BYTES, dtype=np.int64)
    cuts = np.unique(np.searchsorted(off[:-1], marks, side="right") - 1).tolist()
    edges = [0, *[c for c in cuts if c > 0], n]
    return list(zip(edges[:-1], edges[1:]))


def _ascii_tokens(arr: pa.StringArray) -> tuple[pa.Array, np.ndarray]:
    """The tokens of ASCII strings ``arr`` and the row of each, from the bytes."""
    n = len(arr)
    off = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + n + 1]
    off = off.astype(np.int64)
    lo, hi = int(off[0]), int(off[-1])
    if hi == lo:
        return strings([]), np.zeros(0, dtype=np.int32)
    raw = np.frombuffer(arr.buffers()[2], dtype=np.uint8, count=hi - lo, offset=lo)
    off -= lo
    word = _WORD[raw]
    step = np.diff(word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    start, end = np.flatnonzero(step == 1), np.flatnonzero(step == -1)
    inner = off[1:-1]
    cross = inner[(inner > 0) & (inner < raw.size)]
    cross = cross[word[cross] & word[cross - 1]]  # a run over a row's end: two tokens
    if cross.size:
        start = np.sort(np.concatenate([start, cross]))
        end = np.sort(np.concatenate([end, cross]))
    length = end - start
    word[start[length == 1]] = False  # one character: not a token
    keep = length >= 2
    start, length = start[keep], length[keep]
    body = _LOWER[raw[word]]  # the tokens' bytes, in order, lowered
    ends = np.zeros(start.size + 1, dtype=np.int32)
    np.cumsum(length, out=ends[1:])
    tokens = pa.Array.from_buffers(
        pa.string(), start.size, [None, pa.py_buffer(ends), pa.py_buffer(body)]
    )
    return tokens, np.searchsorted(off[1:], start, side="right").astype(np.int32)
