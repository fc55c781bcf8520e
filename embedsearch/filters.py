"""Metadata filters (``where=``): a small Mongo/Chroma-style language compiled to a predicate.

Grammar::

    filter   := {field: value | {op: operand, ...}, ...}      # several keys: all must hold
              | {"$and": [filter, ...]} | {"$or": [filter, ...]} | {"$not": filter}
    op       := $eq $ne $in $nin $gt $gte $lt $lte $exists

``field`` may be dotted (``"author.name"``) to reach nested metadata. Ordering operators
compare numbers with numbers and strings with strings; a document whose value has another
type, or lacks the field, does not match (except ``$ne`` / ``$nin``, which it does, as in
MongoDB). The filter is validated once, up front, so a typo fails before any work is done.

Example:
    >>> pred = compile_filter({"year": {"$gte": 2010}, "topic": {"$in": ["music", "film"]}})
    >>> pred({"year": 2015, "topic": "music"})
    True
"""

from __future__ import annotations

import functools
import json
import math
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from . import columns as columns_mod
from .columns import KeyColumn, Path
from .errors import FilterError

Predicate = Callable[[dict[str, Any]], bool]
_MISSING = object()
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
#: Deepest nesting of $and/$or/$not accepted: real filters are a few levels deep, and a
#: limit turns a hostile 5000-deep body into a FilterError instead of a RecursionError.
MAX_DEPTH = 32
_OPS = {"$eq", "$ne", "$in", "$nin", "$exists", *_ORDER}


def _lookup(meta: dict[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = meta
    for part in path:
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _scalar(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise FilterError(f"{where}: operand must be a string, number, boolean or null, got {value!r}.")


def _comparable(a: Any, b: Any) -> bool:
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    return (isinstance(a, num) and isinstance(b, num)) or (
        isinstance(a, str) and isinstance(b, str)
    )


def _compile_op(path: tuple[str, ...], op: str, operand: Any, where: str) -> Predicate:
    if op not in _OPS:
        raise FilterError(f"{where}: unknown operator {op!r}; use one of {sorted(_OPS)}.")
    if op in ("$in", "$nin"):
        if not isinstance(operand, list):
            raise FilterError(f"{where}.{op}: needs a list of values, got {operand!r}.")
        keys = {_eq_key(_scalar(v, f"{where}.{op}")) for v in operand}
        if op == "$in":
            return lambda m: _eq_key(_lookup(m, path)) in keys
        return lambda m: _eq_key(_lookup(m, path)) not in keys
    if op == "$exists":
        if not isinstance(operand, bool):
            raise FilterError(f"{where}.$exists: needs true or false.")
        return lambda m: (_lookup(m, path) is not _MISSING) == operand
    value = _scalar(operand, f"{where}.{op}")
    if op == "$eq":
        return lambda m: _equal(_lookup(m, path), value)
    if op == "$ne":
        return lambda m: not _equal(_lookup(m, path), value)
    if value is None or isinstance(value, bool):
        raise FilterError(f"{where}.{op}: compare with a number or a string, not {value!r}.")
    compare = _ORDER[op]

    def ordered(m: dict[str, Any]) -> bool:
        got = _lookup(m, path)
        return _comparable(got, value) and bool(compare(got, value))

    return ordered


def _equal(a: Any, b: Any) -> bool:
    if a is _MISSING:
        return False
    if isinstance(a, bool) or isinstance(b, bool):  # True == 1 in Python; not in a filter
        return type(a) is type(b) and a == b
    return a == b


def _eq_key(value: Any) -> Any:
    """A hashable key under which two values are equal exactly when ``_equal`` says so.

    Booleans get their own tag (``True == 1`` in Python, not in a filter); lists, dicts and
    a missing field get a key no scalar operand has.
    """
    if isinstance(value, bool):
        return ("bool", value)
    if value is None or isinstance(value, (int, float, str)):
        return ("scalar", value)
    return ("other", id(_MISSING))


def _compile(obj: Any, where: str, depth: int = 0) -> Predicate:
    if depth > MAX_DEPTH:
        raise FilterError(
            f"{where}: filter nested deeper than {MAX_DEPTH} levels; flatten it "
            "(a list under one $and/$or holds any number of conditions)."
        )
    if not isinstance(obj, dict) or not obj:
        raise FilterError(f"{where}: a filter is a non-empty JSON object, got {obj!r}.")
    parts: list[Predicate] = []
    for key, val in obj.items():
        if not isinstance(key, str) or not key:
            raise FilterError(f"{where}: field names must be non-empty strings.")
        if key in ("$and", "$or"):
            if not isinstance(val, list) or not val:
                raise FilterError(f"{where}.{key}: needs a non-empty list of filters.")
            subs = [_compile(v, f"{where}.{key}[{i}]", depth + 1) for i, v in enumerate(val)]
            parts.append(
                (lambda s: lambda m: all(p(m) for p in s))(subs)
                if key == "$and"
                else (lambda s: lambda m: any(p(m) for p in s))(subs)
            )
        elif key == "$not":
            sub = _compile(val, f"{where}.$not", depth + 1)
            parts.append(lambda m, sub=sub: not sub(m))
        elif key.startswith("$"):
            raise FilterError(f"{where}: unknown top-level operator {key!r}; use $and, $or, $not.")
        else:
            path = tuple(key.split("."))
            if isinstance(val, dict):
                if not val:
                    raise FilterError(f"{where}.{key}: empty operator object.")
                parts.extend(
                    _compile_op(path, op, arg, f"{where}.{key}") for op, arg in val.items()
                )
            else:
                parts.append(_compile_op(path, "$eq", val, f"{where}.{key}"))
    return parts[0] if len(parts) == 1 else (lambda m: all(p(m) for p in parts))


def compile_filter(where: dict[str, Any] | str) -> Predicate:
    """Validate ``where`` (a dict, or its JSON text) and return a predicate over metadata dicts.

    Raises:
        FilterError: the filter is malformed; the message points at the offending part.
    """
    if isinstance(where, str):
        try:
            where = json.loads(where)
        except RecursionError as exc:
            raise FilterError(f"where is nested too deeply (limit {MAX_DEPTH}).") from exc
        except ValueError as exc:
            raise FilterError(f"where is not valid JSON: {exc}.") from exc
    return _compile(where, "where")


def filter_mask(
    where: dict[str, Any] | str, metadata: Sequence[dict[str, Any] | None]
) -> np.ndarray:
    """Boolean mask of the rows whose metadata satisfies ``where`` (row by row, in Python).

    The reference semantics; :func:`column_mask` computes the same mask over typed columns.
    """
    pred = compile_filter(where)
    return np.fromiter((pred(m or {}) for m in metadata), dtype=bool, count=len(metadata))


# --------------------------------------------------------------------------- columns
Columns = Callable[[Sequence[Path]], dict[Path, KeyColumn]]
Rows = Callable[[np.ndarray], Sequence[dict[str, Any] | None]]


def filter_paths(where: dict[str, Any] | str) -> list[Path]:
    """The key paths a (valid) filter reads, each once."""
    where = _as_dict(where)
    out: dict[Path, None] = {}

    def walk(obj: dict[str, Any]) -> None:
        for key, val in obj.items():
            if key in ("$and", "$or"):
                for sub in val:
                    walk(sub)
            elif key == "$not":
                walk(val)
            else:
                out[tuple(key.split("."))] = None

    walk(where)
    return list(out)


def column_mask(where: dict[str, Any] | str, n: int, columns: Columns, rows: Rows) -> np.ndarray:
    """Boolean mask over ``n`` rows of the rows satisfying ``where``, from typed columns.

    Same result as :func:`filter_mask` (the semantics in this module's docstring) at the
    cost of a few numpy operations per condition: ``columns(paths)`` hands the
    :class:`~embedsearch.columns.KeyColumn` of each path. Rows a column cannot decide
    (integers beyond float64's exact range) are re-evaluated with the row predicate on
    ``rows(positions)``, their parsed metadata: only those rows, only then.
    """
    pred = compile_filter(where)  # validates; also the fallback for undecided rows
    where = _as_dict(where)
    paths = filter_paths(where)
    if _has_big_int(where):  # no exact float64 for the operand: decide every row in Python
        return np.fromiter((pred(m or {}) for m in rows(np.arange(n))), dtype=bool, count=n)
    cols = columns(paths)
    mask = _eval(where, cols, n)
    undecided = [c.undecided for c in cols.values() if c.undecided.size]
    if undecided:
        todo = np.unique(np.concatenate(undecided))
        mask[todo] = [pred(m or {}) for m in rows(todo)]
    return mask


def _has_big_int(obj: Any) -> bool:
    if isinstance(obj, dict):
        return any(_has_big_int(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_has_big_int(v) for v in obj)
    return isinstance(obj, int) and not isinstance(obj, bool) and abs(obj) > 2**53


def _as_dict(where: dict[str, Any] | str) -> dict[str, Any]:
    return json.loads(where) if isinstance(where, str) else where


def _eval(obj: dict[str, Any], cols: dict[Path, KeyColumn], n: int) -> np.ndarray:
    mask: np.ndarray | None = None
    for key, val in obj.items():
        if key == "$and":
            part = _all(_eval(v, cols, n) for v in val)
        elif key == "$or":
            part = _any(_eval(v, cols, n) for v in val)
        elif key == "$not":
            part = _eval(val, cols, n)
            np.logical_not(part, out=part)
        else:
            col = cols[tuple(key.split("."))]
            ops = val.items() if isinstance(val, dict) else [("$eq", val)]
            part = _all(_op(col, op, arg) for op, arg in ops)
        mask = part if mask is None else np.logical_and(mask, part, out=mask)
    assert mask is not None  # validated: a filter is a non-empty object
    return mask


# Every mask below is a fresh array of the evaluation's own, never a column or a cached
# array, so masks are combined in place: at 10M rows each new mask is 10 MB of memory the
# process faults in, about as long as the comparison that fills it.
def _all(masks: Iterable[np.ndarray]) -> np.ndarray:
    return functools.reduce(lambda a, b: np.logical_and(a, b, out=a), masks)


def _any(masks: Iterable[np.ndarray]) -> np.ndarray:
    return functools.reduce(lambda a, b: np.logical_or(a, b, out=a), masks)


def _op(col: KeyColumn, op: str, arg: Any) -> np.ndarray:
    if op == "$exists":
        return (col.kind != columns_mod.ABSENT) == arg
    if op in ("$eq", "$in"):
        return _isin(col, [arg] if op == "$eq" else arg)
    if op in ("$ne", "$nin"):
        found = _isin(col, [arg] if op == "$ne" else arg)
        return np.logical_not(found, out=found)
    if isinstance(arg, str):
        s = col.strings
        if op in ("$lt", "$gte"):
            cut = int(np.searchsorted(s, arg, side="left")) if len(s) else 0
        else:
            cut = int(np.searchsorted(s, arg, side="right")) if len(s) else 0
        got = col.codes < cut if op in ("$lt", "$lte") else col.codes >= cut
        return col.of_kind(columns_mod.STRING, got)
    return col.of_kind(columns_mod.NUMBER, _order(col.num, op, arg))


#: For an integer column: the integer bound equivalent to a number bound, and the answer
#: of every row when that bound lies above the type's range.
_INT_BOUND = {"$lt": (math.ceil, True), "$lte": (math.floor, True)}
_INT_BOUND.update({"$gt": (math.floor, False), "$gte": (math.ceil, False)})


def _order(num: np.ndarray, op: str, arg: Any) -> np.ndarray:
    """``num <op> arg`` as float64 would answer it. An integer column (see
    :meth:`~embedsearch.columns.KeyColumn.compact`) compares with an integer bound of its own
    type (``x < 2.5`` is ``x < 3``), at the width it is stored in."""
    if num.dtype.kind != "i":
        return _ORDER[op](num, arg)
    rounding, above = _INT_BOUND[op]
    value = float(arg)
    if math.isnan(value):
        return np.zeros(len(num), dtype=bool)
    info = np.iinfo(num.dtype)
    if math.isinf(value) or not info.min <= rounding(value) <= info.max:
        over = value > 0  # the bound lies above (or below) every value of the type
        return np.full(len(num), over == above, dtype=bool)
    return _ORDER[op](num, num.dtype.type(rounding(value)))


def _isin(col: KeyColumn, values: list[Any]) -> np.ndarray:
    """Rows equal to one of ``values`` under :func:`_equal` (bool apart, 1 == 1.0)."""
    kind = col.kind
    parts: list[np.ndarray] = []
    if any(v is None for v in values):
        parts.append(kind == columns_mod.NULL)
    bools = [float(v) for v in values if isinstance(v, bool)]
    if bools:
        parts.append(col.of_kind(columns_mod.BOOL, _num_in(col.num, bools)))
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    exact = [float(v) for v in nums if not isinstance(v, int) or abs(v) <= 2**53]
    if exact:
        parts.append(col.of_kind(columns_mod.NUMBER, _num_in(col.num, exact)))
    strs = [v for v in values if isinstance(v, str)]
    if strs and len(col.strings):
        at = np.searchsorted(col.strings, strs)
        hit = [int(i) for i, v in zip(at, strs) if i < len(col.strings) and col.strings[i] == v]
        if 0 < len(hit) <= 8:  # a few comparisons beat a gather at 1M rows (codes < 0:
            parts.append(_any(col.codes == h for h in hit))  # not a string, never a hit)
        elif hit:
            table = np.zeros(len(col.strings) + 1, dtype=bool)  # code -1 reads the last: False
            table[hit] = True
            parts.append(table[col.codes])
    return _any(parts) if parts else np.zeros(len(col), dtype=bool)


def _num_in(num: np.ndarray, values: list[float]) -> np.ndarray:
    if num.dtype.kind == "i":  # compared at the column's width: only values it can hold
        info = np.iinfo(num.dtype)
        held = [int(v) for v in values if v.is_integer() and info.min <= v <= info.max]
        if not held:
            return np.zeros(len(num), dtype=bool)
        values = np.array(held, dtype=num.dtype)  # type: ignore[assignment]
    if len(values) <= 8:  # a few comparisons beat np.isin's sort at 1M rows
        return _any(num == v for v in values)
    return np.isin(num, values)
