"""The shared checks below everything: names and paths, texts, ids, metadata, ``k``, vectors.

This is the ground floor of the package (with :mod:`.errors` and :mod:`.types`): it imports
nothing of ours above it, so :class:`~embedsearch.Collection`, ``ShardedCollection``, the
query wings (``latent/``, ``rag/``), vocabularies and every surface (CLI, HTTP) run the same
checks and say the same words — no module imports helpers back from ``collection.py``.

Every check raises :class:`~embedsearch.errors.InvalidInputError` with a message that says
what was wrong and what to do; ``where``/``what`` name the argument in the caller's words.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidInputError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # always used with fullmatch
MAX_K = 10_000
MAX_ID_LENGTH = 512
#: Longest text accepted (characters). The encoder reads only its first max_seq_length
#: tokens anyway; a longer text is a whole file that wants chunking (``add_documents``).
MAX_TEXT_CHARS = 1_000_000
#: Deepest metadata nesting accepted (the same bound as a ``where`` filter) and the largest
#: metadata JSON per document. Deeper documents broke every read that touched them (HTTP
#: serialisation and the old row filter recurse), so the limit is checked at write time.
MAX_METADATA_DEPTH = 32
MAX_METADATA_BYTES = 1 << 20


# ----------------------------------------------------------------------------- paths
def home() -> Path:
    """Where bare collection names live: ``EMBEDSEARCH_HOME`` or ``./indexes``."""
    return Path(os.environ.get("EMBEDSEARCH_HOME") or "indexes")


def resolve_path(name_or_path: str | os.PathLike[str], base: Path | None = None) -> Path:
    """A bare name → ``<home>/<name>``; anything path-like is used as given.

    Bare names are 1–128 characters of letters, digits, ``.``, ``_``, ``-`` (not starting
    with ``.`` or ``-``), so a name can never escape the home directory.
    """
    if isinstance(name_or_path, os.PathLike):
        return Path(name_or_path)
    if not isinstance(name_or_path, str) or not name_or_path or "\x00" in name_or_path:
        raise InvalidInputError("A collection is named by a non-empty string or a path.")
    if NAME_RE.fullmatch(name_or_path) and ".." not in name_or_path:
        return (base or home()) / name_or_path
    if "/" in name_or_path or name_or_path.startswith(("~", ".")):
        return Path(name_or_path).expanduser()
    raise InvalidInputError(
        f"{name_or_path!r} is not a valid collection name: use 1–128 letters, digits, '.', '_' "
        "or '-' (starting with a letter or digit), or pass a path."
    )


def validate_name(name: str) -> str:
    """Check a bare collection name (the HTTP API accepts nothing else)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidInputError(
            f"{name!r} is not a valid collection name: use 1–128 letters, digits, '.', '_' or "
            "'-', starting with a letter or digit."
        )
    return name


# ----------------------------------------------------------------------------- input checks
def check_text(text: Any, where: str) -> str:
    """A non-empty str without NUL, at most :data:`MAX_TEXT_CHARS`, encodable as UTF-8."""
    if not isinstance(text, str):
        raise InvalidInputError(
            f"{where} is {type(text).__name__}, not str; pass texts as strings."
        )
    if not text.strip():
        raise InvalidInputError(f"{where} is empty or whitespace; remove it or give it content.")
    if "\x00" in text:
        raise InvalidInputError(f"{where} contains a NUL character; strip it before adding.")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInputError(
            f"{where} is {len(text):,} characters long, over the {MAX_TEXT_CHARS:,}-character "
            "limit; split it into passages with col.add_documents()."
        )
    check_encodable(text, where)
    return text


def check_encodable(text: str, where: str) -> None:
    """Refuse lone surrogates (``"\\ud800"``): valid in a Python str, not in UTF-8 storage."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{where} is not valid Unicode (a lone surrogate at position {exc.start}); "
            "decode the source text with errors='replace' first."
        ) from None


def check_id(doc_id: Any, where: str) -> str:
    """A non-empty str without NUL, at most :data:`MAX_ID_LENGTH` characters."""
    if not isinstance(doc_id, str) or not doc_id or "\x00" in doc_id:
        raise InvalidInputError(f"{where} must be a non-empty string without NUL, got {doc_id!r}.")
    if len(doc_id) > MAX_ID_LENGTH:
        raise InvalidInputError(f"{where} is longer than {MAX_ID_LENGTH} characters.")
    check_encodable(doc_id, where)
    return doc_id


#: The canonical metadata encoder, built once: ``json.dumps`` with options builds a new
#: encoder per call (a third of the per-row cost of a 1M-row ingest).
_METADATA_JSON = json.JSONEncoder(allow_nan=False, ensure_ascii=False, sort_keys=True)


def check_metadata(meta: Any, where: str) -> str | None:
    """A JSON-serialisable dict with string keys (or None); returns its canonical JSON."""
    if meta is None:
        return None
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise InvalidInputError(
            f"{where} must be a dict with string keys (or None), got {str(meta)[:200]}."
        )
    nested = any(isinstance(v, (dict, list)) for v in meta.values())  # flat: depth 1
    if nested and metadata_depth(meta, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
        raise InvalidInputError(
            f"{where} is nested more than {MAX_METADATA_DEPTH} levels deep; flatten it (for "
            "example join the keys of a path with '.') or store the deep part as a JSON string."
        )
    try:
        out = _METADATA_JSON.encode(meta)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(
            f"{where} is not JSON-serialisable ({exc}); use strings, numbers, booleans, None, "
            "lists and dicts."
        ) from exc
    check_encodable(out, where)
    if len(out) > MAX_METADATA_BYTES:  # characters; the UTF-8 bytes are at least as many
        raise InvalidInputError(
            f"{where} is {len(out):,} characters of JSON, over the {MAX_METADATA_BYTES:,} limit "
            "per document; keep large payloads outside the collection and store a reference."
        )
    return out


def metadata_depth(obj: Any, limit: int | None = None) -> int:
    """Nesting depth of dicts/lists in ``obj`` (a scalar is 0, ``{}`` is 1), computed without
    recursion; stops counting once past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        cur, depth = stack.pop()
        if isinstance(cur, (dict, list)):
            depth += 1
            deepest = max(deepest, depth)
            if limit is not None and deepest > limit:
                return deepest
            stack.extend((v, depth) for v in (cur.values() if isinstance(cur, dict) else cur))
    return deepest


def clip_metadata(obj: Any, limit: int = MAX_METADATA_DEPTH) -> Any:
    """``obj`` with every dict/list below nesting level ``limit`` replaced by its JSON text.

    Documents stored by older versions (before :data:`MAX_METADATA_DEPTH` was checked at
    write time) may nest hundreds of levels; reads return them clipped so that every
    surface can serialise them, and nothing is lost (the deep part is its JSON text).
    """
    if metadata_depth(obj, limit) <= limit:
        return obj

    def clip(cur: Any, depth: int) -> Any:
        if not isinstance(cur, (dict, list)):
            return cur
        if depth >= limit:
            try:
                return json.dumps(cur, ensure_ascii=False)
            except RecursionError:
                return "<metadata nested too deeply to show>"
        if isinstance(cur, dict):
            return {k: clip(v, depth + 1) for k, v in cur.items()}
        return [clip(v, depth + 1) for v in cur]

    return clip(obj, 0)


def check_k(k: Any) -> int:
    """``k`` must be an int in [1, MAX_K]."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise InvalidInputError(f"k must be an integer between 1 and {MAX_K}, got {k!r}.")
    return int(k)


def check_share(value: Any, name: str) -> float:
    """A share of rows: a number in [0, 1], named ``name`` in the error."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not 0 <= value <= 1
    ):
        raise InvalidInputError(f"{name} must be a number from 0 to 1, got {value!r}.")
    return float(value)


def unit_vector(vector: Any, dim: int, what: str = "vector") -> np.ndarray:
    """Validate a caller's vector (shape, finiteness, non-zero) and L2-normalise it.

    Components are scaled by their largest magnitude before the norm is taken, so vectors
    with components near 1e30 (or 1e-300) keep a finite, non-zero norm.
    """
    try:
        v = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} must be a list of numbers ({exc}).") from exc
    if v.ndim != 1 or v.shape[0] != dim:
        raise InvalidInputError(
            f"{what} has shape {v.shape}; this collection's vectors have {dim} dimensions."
        )
    if not np.all(np.isfinite(v)):
        raise InvalidInputError(f"{what} contains NaN or infinity.")
    peak = float(np.max(np.abs(v)))
    if peak == 0.0:
        raise InvalidInputError(f"{what} is the zero vector; it has no direction to search.")
    v = v / peak  # scale first: the norm of 1e200-sized (or 1e-300) components stays finite
    return (v / np.linalg.norm(v)).astype(np.float32)


def unit_rows(matrix: np.ndarray, dim: int, what: str = "vectors") -> np.ndarray:
    """:func:`unit_vector` for every row of an ``(n, dim)`` array at once, in numpy.

    Same checks, same results (to float32 rounding) and the same message naming the first
    bad row (``vectors[i]``), without a Python call per row: at 1M rows the per-row checks
    cost more than the index did.
    """
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        if matrix.ndim == 2 and matrix.shape[0]:
            unit_vector(matrix[0], dim, f"{what}[0]")  # raises with the per-row wording
        raise InvalidInputError(
            f"{what} has shape {matrix.shape}; give one {dim}-dimensional vector per text."
        )
    out = np.empty(matrix.shape, dtype=np.float32)
    # float64 work arrays of 3 MB at 384 dims stay in cache: 50k rows 48 ms, against
    # 87 ms in 8192-row blocks (25 MB), with the same results
    step = 1024
    for lo in range(0, matrix.shape[0], step):
        try:
            block = np.asarray(matrix[lo : lo + step], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"{what} must hold numbers ({exc}).") from exc
        peak = np.max(np.abs(block), axis=1) if block.size else np.zeros(0)
        bad = ~np.isfinite(peak) | (peak == 0.0)
        if bad.any():
            first = lo + int(np.flatnonzero(bad)[0])
            unit_vector(matrix[first], dim, f"{what}[{first}]")  # raises with its message
        block /= peak[:, None]  # scale first, as unit_vector does
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[lo : lo + step] = block
    return out


# ----------------------------------------------------------------------------- rows
def sized(obj: Any) -> int | None:
    """``len(obj)``, or None for an iterable without a length (a generator)."""
    try:
        return len(obj)
    except TypeError:
        return None


_END = object()


def _check_columns(texts: Iterable[str], columns: dict[str, Iterable[Any] | None]) -> None:
    """The checks a write's columns get before any row: texts is not one string, every
    column is a list (not one value), and columns with lengths agree with the texts'."""
    if isinstance(texts, (str, bytes)):
        raise InvalidInputError("texts must be a list (or iterable) of strings, not one string.")
    n_t = sized(texts)
    for name, obj in columns.items():
        if isinstance(obj, (str, bytes, dict)):
            raise InvalidInputError(f"{name} must be a list with one entry per text.")
        n = sized(obj) if obj is not None else None
        if n_t is not None and n is not None and n != n_t:
            raise InvalidInputError(f"{n_t} texts but {n} {name}; give one per text.")


def rows(texts: Iterable[str], **columns: Iterable[Any] | None) -> Iterator[tuple[Any, ...]]:
    """Zip texts with optional per-text columns, failing on a length mismatch (generators too).

    Yields ``(i, text, *column values)``; an absent column yields ``None``.
    """
    _check_columns(texts, columns)
    its = [iter(texts)] + [iter(c) if c is not None else None for c in columns.values()]
    names = "texts, " + ", ".join(columns)
    for i in itertools.count():
        row = [next(c, _END) if c is not None else None for c in its]
        ends = [r is _END for r, c in zip(row, its) if c is not None]
        if all(ends):
            return
        if any(ends):
            raise InvalidInputError(f"{names} have different lengths (at item {i}).")
        yield (i, *row)


def column_chunks(
    texts: Iterable[str], size: int, **columns: Iterable[Any] | None
) -> Iterator[tuple[Any, ...]]:
    """:func:`rows` by chunks of up to ``size`` rows, as columns: yields ``(texts, *columns)``
    with a list (or, for a matrix column, a slice of its rows) per column and None for an
    absent one. Lists, tuples and arrays are sliced, with no Python step per row (a 1M-row add spent
    1.4 s zipping rows); any other iterable streams through :func:`rows`, lazily as before.
    Mismatched lengths raise the same errors as :func:`rows`.
    """
    given = [texts, *(c for c in columns.values() if c is not None)]
    if not all(isinstance(c, (list, tuple, np.ndarray)) for c in given):
        stream = rows(texts, **columns)
        while batch := list(itertools.islice(stream, size)):
            cols = list(zip(*batch))[1:]
            yield tuple(
                list(col) if obj is not None else None
                for col, obj in zip(cols, [texts, *columns.values()])
            )
        return
    _check_columns(texts, columns)
    for lo in range(0, len(texts), size):  # type: ignore[arg-type]
        yield tuple(_rows_of(c, lo, size) for c in [texts, *columns.values()])


def _rows_of(column: Any, lo: int, size: int) -> Any:
    """Rows ``lo .. lo + size`` of one sliceable column: a view of a matrix of vectors, a
    list of anything else (texts or ids given as an array too), None for an absent one."""
    if column is None:
        return None
    if isinstance(column, np.ndarray) and column.ndim == 2:
        return column[lo : lo + size]
    return list(column[lo : lo + size])


# ----------------------------------------------------------------------------- bulk checks
#: The value types of flat metadata that JSON encodes as it is (no NaN check aside).
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain_strings(items: list[Any], limit: int) -> bool:
    """Whether every item is a plain ``str``, non-empty, not whitespace only, without NUL,
    valid UTF-8 and at most ``limit`` characters: decided with whole-list passes in C."""
    if not items:
        return True
    if set(map(type, items)) != {str} or max(map(len, items)) > limit:
        return False
    if not all(items) or any(map(str.isspace, items)):  # what `not s.strip()` refuses
        return False
    joined = "".join(items)
    return "\x00" not in joined and _utf8(joined)


def _utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def plain_texts(texts: list[Any]) -> bool:
    """Whether :func:`check_text` passes every text, decided for the whole list at once.

    False means only "check them one by one": a ``str`` subclass, say, is refused here and
    accepted there. Used for large writes, where a Python call per row added up."""
    return _plain_strings(texts, MAX_TEXT_CHARS)


def plain_ids(ids: list[Any]) -> bool:
    """Whether :func:`check_id` passes every id (with :func:`plain_texts`'s meaning of False;
    an id that is whitespace only is refused here and accepted there)."""
    return _plain_strings(ids, MAX_ID_LENGTH)


def plain_metadata(metadata: list[Any]) -> list[str | None] | None:
    """The canonical JSON of every entry, as :func:`check_metadata` gives it, for a list of
    flat dicts (string keys, scalar values) or Nones; None when any entry needs the per-entry
    check (a nested value, another type, NaN, a lone surrogate, an entry over the limit)."""
    if not set(map(type, metadata)) <= {dict, type(None)}:
        return None
    dicts = [m for m in metadata if m]
    if set(map(type, itertools.chain.from_iterable(dicts))) - {str}:
        return None
    values = itertools.chain.from_iterable(map(dict.values, dicts))
    if not set(map(type, values)) <= _SCALARS:
        return None
    try:
        out = [None if m is None else _METADATA_JSON.encode(m) for m in metadata]
    except ValueError:  # NaN or infinity
        return None
    texts = [o for o in out if o is not None]
    if texts and (max(map(len, texts)) > MAX_METADATA_BYTES or not _utf8("".join(texts))):
        return None
    return out


__all__ = [
    "MAX_ID_LENGTH",
    "MAX_K",
    "MAX_TEXT_CHARS",
    "NAME_RE",
    "check_encodable",
    "check_id",
    "check_k",
    "check_metadata",
    "check_text",
    "column_chunks",
    "home",
    "plain_ids",
    "plain_metadata",
    "plain_texts",
    "resolve_path",
    "rows",
    "sized",
    "unit_rows",
    "unit_vector",
    "validate_name",
]
