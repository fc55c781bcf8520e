"""Why a filter matched nothing: compares a ``where`` with the metadata actually stored.

The filter language itself (:mod:`embedsearch.filters`) is strict and silent by design: a
number never equals a string, so ``{"year": {"$lt": 2022}}`` over a field that holds
``"1999"`` matches nothing. When a search comes back empty, surfaces call
:func:`filter_hints` with a sample of stored metadata and show what it finds: a number
compared with a field that only holds text (or the reverse), or a field no document has.
It never changes what a filter matches.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator
from typing import Any

_ORDER_OPS = ("$gt", "$gte", "$lt", "$lte")
_VALUE_OPS = ("$eq", "$ne", "$in", "$nin", *_ORDER_OPS)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _conditions(where: Any, depth: int = 0) -> Iterator[tuple[str, str, Any]]:
    """(field path, operator, operand) of every comparison in a filter."""
    if not isinstance(where, dict) or depth > 32:
        return
    for key, value in where.items():
        if key in ("$and", "$or") and isinstance(value, list):
            for sub in value:
                yield from _conditions(sub, depth + 1)
        elif key == "$not":
            yield from _conditions(value, depth + 1)
        elif not key.startswith("$"):
            if isinstance(value, dict) and value and all(str(k).startswith("$") for k in value):
                for op, operand in value.items():
                    yield key, op, operand
            else:
                yield key, "$eq", value


def _lookup(meta: dict[str, Any], path: str) -> tuple[bool, Any]:
    cur: Any = meta
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def _kind(values: list[Any]) -> str:
    if values and all(_is_number(v) for v in values):
        return "numbers"
    if values and all(isinstance(v, str) for v in values):
        return "text"
    return "mixed"


def filter_hints(where: Any, metadata: Iterable[dict[str, Any] | None]) -> list[str]:
    """Plain-language reasons why ``where`` may match nothing in ``metadata`` (a sample).

    Returns:
        One sentence per problem found (empty when the filter looks consistent).
    """
    if isinstance(where, str):
        try:
            where = json.loads(where)
        except ValueError:
            return []
    sample = [m or {} for m in metadata]
    keys = sorted({k for m in sample for k in m})
    hints: list[str] = []
    for path, op, operand in _conditions(where):
        if op not in _VALUE_OPS:
            continue
        found = [v for ok, v in (_lookup(m, path) for m in sample) if ok and v is not None]
        if not found:
            close = difflib.get_close_matches(path.split(".")[0], keys, n=1)
            also = f" (did you mean {close[0]!r}?)" if close else ""
            hints.append(f"no document has a field {path!r}{also}; fields: {', '.join(keys[:12])}.")
            continue
        operands = operand if op in ("$in", "$nin") and isinstance(operand, list) else [operand]
        kind = _kind(found)
        examples = ", ".join(json.dumps(v) for v in found[:3])
        shown = json.dumps({op: operand})
        if kind == "text" and any(_is_number(o) for o in operands):
            hints.append(
                f"field {path!r} holds text ({examples}...), not numbers, so {shown} compares a "
                "number with text and never matches. Store it as a number (CSV columns are now "
                "typed when indexed; re-index the file), or compare with a string."
            )
        elif kind == "numbers" and any(isinstance(o, str) for o in operands):
            hints.append(
                f"field {path!r} holds numbers ({examples}...), so {shown} compares text with "
                "numbers and never matches; write the value without quotes."
            )
    return hints
