"""Metadata as typed columns: one :class:`KeyColumn` per key path, for vectorised filters.

A key path (``("author", "name")`` for ``author.name``) becomes a column over every row
position, split by JSON type so that mixed-type keys keep the filter semantics of
:mod:`embedsearch.filters` exactly:

* ``kind`` (int8 per row): :data:`ABSENT`, :data:`NULL`, :data:`BOOL`, :data:`NUMBER`,
  :data:`STRING`, :data:`OTHER` (a list or an object: present, equal to no scalar) or
  :data:`UNDECIDED` (an integer beyond float64's exact range: the filter decides that row
  from its JSON, see :func:`embedsearch.filters.filter_mask`);
* ``num`` (float64): the value of booleans (0/1) and numbers;
* ``codes`` (int32) into ``strings``, the *sorted* distinct strings, so that ``$eq`` and
  ``$in`` are integer comparisons and ``$lt``… on strings are a binary search plus one.

A collection keeps its columns :meth:`~KeyColumn.compact`: ``num`` in the narrowest signed
integer type that holds every value exactly (int8/16/32; float64 otherwise), ``codes`` in the
narrowest that holds the dictionary's size, and an array whose rows all hold one value (the
``kind`` of a key every row has, the ``codes`` of a numeric key) as a zero-stride view of
that value. At 10M rows the three keys of ``benchmarks/scale.py`` take 50 MB instead of
390 MB, and a filter reads a quarter of the bytes. :mod:`embedsearch.filters` compares an
integer column with integer bounds, so every filter gives the float64 answer.

numpy, not pyarrow.compute / DuckDB / Polars: a filter is a handful of element-wise
comparisons over arrays already in memory, which numpy does at memory speed (~1 ms per
operation at 1M rows) with no extra import time; pyarrow.compute has no type-split
representation for mixed-type keys, and DuckDB or Polars would add a dependency and 0.1-0.5 s
of import to every cold CLI call. Typed columns read from disk (pyarrow) convert with
:meth:`KeyColumn.from_arrow`, without a Python object per row.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .arrays import numbers, validity
from .arrays import strings as arrow_strings

ABSENT, NULL, BOOL, NUMBER, STRING, OTHER, UNDECIDED = range(7)
#: Integers beyond this magnitude do not all have an exact float64: decided from the JSON.
_EXACT_INT = 2**53

Path = tuple[str, ...]


@dataclass
class KeyColumn:
    """One key path over ``len(kind)`` rows (see the module docstring)."""

    kind: np.ndarray
    num: np.ndarray
    codes: np.ndarray
    strings: np.ndarray  # sorted distinct strings (object array)

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    @functools.cached_property
    def uniform(self) -> int | None:
        """The kind every row has (e.g. NUMBER for a key every row holds a number in), else
        None: a filter then skips its per-row kind test (a 1M-row scan saved per query)."""
        if not len(self):
            return None
        first = int(self.kind[0])
        return first if constant(self.kind) or bool((self.kind == first).all()) else None

    @classmethod
    def absent(cls, n: int) -> KeyColumn:
        """A key none of ``n`` rows holds, in a few bytes (see :meth:`compact`)."""
        return cls(
            repeat(ABSENT, n, np.int8),
            repeat(0, n, np.int8),
            repeat(-1, n, np.int8),
            np.array([], dtype=object),
        )

    def compact(self) -> KeyColumn:
        """The same column in the narrowest arrays that hold it exactly (module docstring)."""
        return KeyColumn(
            _collapse(self.kind, np.int8),
            _narrow_num(self.num),
            _narrow_codes(self.codes, len(self.strings)),
            self.strings,
        )

    def of_kind(self, kind: int, mask: np.ndarray) -> np.ndarray:
        """``mask`` restricted to rows of ``kind``."""
        u = self.uniform
        if u is not None:
            return mask if u == kind else np.zeros(len(self), dtype=bool)
        return mask & (self.kind == kind)

    @functools.cached_property
    def undecided(self) -> np.ndarray:
        """Positions whose value the filter must decide from the JSON (rare; usually empty)."""
        return np.flatnonzero(self.kind == UNDECIDED)

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> KeyColumn:
        """Build from one Python value per row (``MISSING`` marks an absent key)."""
        n = len(values)
        kind = np.zeros(n, dtype=np.int8)
        num = np.zeros(n, dtype=np.float64)
        raw: dict[int, str] = {}
        for i, v in enumerate(values):
            if v is MISSING:
                continue
            if v is None:
                kind[i] = NULL
            elif isinstance(v, bool):
                kind[i], num[i] = BOOL, float(v)
            elif isinstance(v, int):
                if -_EXACT_INT <= v <= _EXACT_INT:
                    kind[i], num[i] = NUMBER, float(v)
                else:
                    kind[i] = UNDECIDED
            elif isinstance(v, float):
                kind[i], num[i] = NUMBER, v
            elif isinstance(v, str):
                kind[i] = STRING
                raw[i] = v
            else:
                kind[i] = OTHER
        codes = np.full(n, -1, dtype=np.int32)
        strings = np.array([], dtype=object)
        if raw:
            rows = np.fromiter(raw.keys(), dtype=np.int64, count=len(raw))
            vals = np.array(list(raw.values()), dtype=object)
            strings, inverse = np.unique(vals, return_inverse=True)
            codes[rows] = inverse.astype(np.int32)
        return cls(kind, num, codes, strings)

    @classmethod
    def from_arrow(cls, array: Any) -> KeyColumn:
        """Build from a typed pyarrow array (null = key absent): int, float, bool or string."""
        import pyarrow as pa
        import pyarrow.compute as pc

        array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
        n = len(array)
        valid = validity(array)
        kind = np.zeros(n, dtype=np.int8)
        num = np.zeros(n, dtype=np.float64)
        codes = np.full(n, -1, dtype=np.int32)
        strings = np.array([], dtype=object)
        t = array.type
        if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t):
            kind[valid] = BOOL if pa.types.is_boolean(t) else NUMBER
            vals = np.where(valid, numbers(array), 0)  # a null slot's bytes are undefined
            num[:] = vals
            if pa.types.is_integer(t):
                kind[valid & ((vals > _EXACT_INT) | (vals < -_EXACT_INT))] = UNDECIDED
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            kind[valid] = STRING
            dictionary = pc.unique(array.drop_null())
            strings = np.array(sorted(dictionary.to_pylist()), dtype=object)
            index = pc.index_in(array, value_set=arrow_strings(strings.tolist()).cast(t))
            codes[valid] = numbers(index)[valid].astype(np.int32)
        elif not pa.types.is_null(t):
            raise TypeError(f"no typed column for arrow type {t}")
        return cls(kind, num, codes, strings)

    def slice(self, lo: int, hi: int) -> KeyColumn:
        """Rows ``lo:hi`` (views; the string dictionary is shared)."""
        return KeyColumn(self.kind[lo:hi], self.num[lo:hi], self.codes[lo:hi], self.strings)

    @classmethod
    def concat(cls, parts: Sequence[KeyColumn]) -> KeyColumn:
        """One column from consecutive row ranges (string codes re-mapped to one dictionary)."""
        if len(parts) == 1:
            return parts[0]
        dicts = list({id(p.strings): p.strings for p in parts}.values())
        if all(len(d) == len(dicts[0]) and (d == dicts[0]).all() for d in dicts[1:]):
            dicts = dicts[:1]  # every part has the same strings (each segment its "t0".."t6")
        if len(dicts) == 1:  # slices of one parse share their dictionary: no re-mapping
            strings, codes = dicts[0], [p.codes for p in parts]
        else:
            strings = np.unique(np.concatenate(dicts)).astype(object)
            codes = []
            for p in parts:
                c = p.codes
                if len(p.strings):
                    remap = np.searchsorted(strings, p.strings).astype(np.int32)
                    c = np.where(c >= 0, remap[np.maximum(c, 0)], -1).astype(np.int32)
                codes.append(c)
        return cls(
            _join([p.kind for p in parts]),
            _join([p.num for p in parts]),
            _narrow_codes(_join(codes), len(strings)),
            strings,
        )


def constant(a: np.ndarray) -> bool:
    """Whether ``a`` is a zero-stride view of one value (see :func:`repeat`)."""
    return a.ndim == 1 and a.shape[0] > 1 and a.strides[0] == 0


def repeat(value: Any, n: int, dtype: Any) -> np.ndarray:
    """``n`` copies of ``value`` in one element's memory (a read-only zero-stride view)."""
    return np.broadcast_to(np.asarray(value, dtype=dtype), (n,))


def _collapse(a: np.ndarray, dtype: Any) -> np.ndarray:
    """``a``, or its one value :func:`repeat`-ed (as ``dtype``) when every row holds it."""
    if len(a) > 1 and not constant(a) and bool((a == a[0]).all()):
        return repeat(a[0], len(a), dtype)
    return a


def _join(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The arrays one after another; one value repeated everywhere stays a :func:`repeat`."""
    held = [a for a in arrays if len(a)]
    if held and all(constant(a) and a[0] == held[0][0] for a in held):
        return repeat(held[0][0], sum(len(a) for a in held), np.result_type(*arrays))
    return np.concatenate(arrays)


_INTS = (np.int8, np.int16, np.int32)


def _narrow_num(num: np.ndarray) -> np.ndarray:
    """``num`` as the narrowest signed integers holding every value exactly, else as is."""
    if num.dtype != np.float64 or constant(num) or not len(num):
        return num
    lo, hi = float(num.min()), float(num.max())  # NaN: neither test below holds
    if lo == hi:
        return repeat(lo, len(num), _int_type(lo, hi) if lo.is_integer() else np.float64)
    dtype = _int_type(lo, hi)
    if dtype is None:
        return num
    ints = num.astype(dtype)
    return ints if bool((ints == num).all()) else num


def _int_type(lo: float, hi: float) -> Any:
    for dtype in _INTS:
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return dtype
    return None


def _narrow_codes(codes: np.ndarray, n_strings: int) -> np.ndarray:
    """String codes in the narrowest integers that hold ``n_strings`` (and -1)."""
    dtype = _int_type(-1, n_strings) or np.int32
    if not n_strings and len(codes) > 1:  # no string in the column: every code is -1
        return repeat(-1, len(codes), dtype)
    if constant(codes):
        return codes
    return _collapse(codes.astype(dtype, copy=False), dtype)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def lookup(meta: Any, path: Path) -> Any:
    """The value at ``path`` in parsed metadata, or :data:`MISSING`."""
    cur = meta
    for part in path:
        if not isinstance(cur, dict) or part not in cur:
            return MISSING
        cur = cur[part]
    return cur


def columns_from_json(raw: Iterable[str | None], paths: Sequence[Path]) -> dict[Path, KeyColumn]:
    """Typed columns for ``paths`` from rows of metadata JSON, parsed in Python (reference)."""
    values: dict[Path, list[Any]] = {p: [] for p in paths}
    for text in raw:
        try:
            meta = json.loads(text) if text is not None else None
        except RecursionError:  # nested deeper than json parses (older versions stored it)
            meta = None
        for p, out in values.items():
            out.append(lookup(meta, p))
    return {p: KeyColumn.from_values(v) for p, v in values.items()}


#: Rows parsed per pyarrow JSON call, and the most leaf columns accepted from one call (a
#: collection whose rows each have their own keys is parsed in Python, path by path).
_ARROW_SLICE = 262_144
_ARROW_MAX_LEAVES = 512


def columns_from_json_array(raw: Any, paths: Sequence[Path]) -> dict[Path, KeyColumn]:
    """Typed columns for ``paths`` from a pyarrow string array of metadata JSON.

    Parsed by pyarrow's JSON reader (C++, ~5x faster than ``json.loads`` per row) when the
    slice has one type per key and no JSON ``null`` (which Arrow cannot tell from an absent
    key); otherwise that slice is parsed in Python. Both give the same columns.
    """
    parts: dict[Path, list[KeyColumn]] = {p: [] for p in paths}
    for lo in range(0, len(raw), _ARROW_SLICE):
        piece = raw.slice(lo, _ARROW_SLICE)
        try:
            built = _arrow_parse(piece, paths)
        except _NeedPython:
            built = columns_from_json(piece.to_pylist(), paths)
        for p in paths:
            parts[p].append(built[p].compact())
    return {p: KeyColumn.concat(v) for p, v in parts.items()}


class _NeedPython(Exception):
    pass


def _arrow_parse(raw: Any, paths: Sequence[Path]) -> dict[Path, KeyColumn]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    n = len(raw)
    raw = raw.cast(pa.large_string()).fill_null("{}")
    if n == 0 or pc.any(pc.match_substring(raw, "null")).as_py():
        raise _NeedPython  # may hold a JSON null (or the word in a string): be exact
    sep = pa.scalar("\n", pa.large_string())
    joined = pc.binary_join(pa.LargeListArray.from_arrays([0, n], raw), sep)[0]
    try:
        table = pj.read_json(pa.BufferReader(joined.as_buffer()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise _NeedPython from exc  # mixed types in a key, huge integers...
    if table.num_rows != n or table.flatten().num_columns > _ARROW_MAX_LEAVES:
        raise _NeedPython
    out: dict[Path, KeyColumn] = {}
    for path in paths:
        array: Any = (
            table.column(path[0]).combine_chunks() if path[0] in table.column_names else None
        )
        for part in path[1:]:
            if array is None or not pa.types.is_struct(array.type):
                array = None
                break
            names = [array.type.field(i).name for i in range(array.type.num_fields)]
            array = array.field(part) if part in names else None
            # a child of a null parent reads as null (absent), as it should
        if array is None:
            out[path] = KeyColumn.absent(n)
        elif pa.types.is_struct(array.type) or pa.types.is_list(array.type):
            col = KeyColumn.from_values([MISSING] * n)
            col.kind[validity(array)] = OTHER
            out[path] = col
        else:
            try:
                out[path] = KeyColumn.from_arrow(array)
            except TypeError as exc:
                raise _NeedPython from exc
    return out
