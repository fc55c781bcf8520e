"""The one reader of input formats: files and folders → ``(id, text, metadata)`` rows.

``embedsearch index``, the Ray ingest (:mod:`embedsearch.distributed.sources`) and the RAG
loader (:mod:`embedsearch.rag.loaders`, for walking folders and decoding) all read through
here, so a file means the same thing everywhere. Rows stay rows (:class:`Record`, a named
tuple) until the storage layer, as txtai's ``(id, data, tags)`` stream does.

The rules (also printed by ``embedsearch index --help``):

* ``.jsonl`` / ``.ndjson`` / ``.csv`` / ``.parquet`` (``.gz`` too): one document per row.
  Text: the ``text`` field (with ``title`` in front when a row has one, as BEIR corpora
  do); id: ``_id``, else ``id``, else ``<file stem>:<row number>`` (``<path from the common
  folder>:<row>`` when two inputs share a stem); metadata: every other non-empty field.
  CSV values are typed: a column whose values all read as integers becomes ``int``, as
  numbers ``float``, as ``true``/``false`` ``bool``; anything else (dates too) stays text.
* a ``.txt`` file named on the command line: one document per non-empty line
  (id ``<stem>:<line>``).
* ``.md`` / ``.markdown`` files, and ``.txt`` files inside a folder: one document per file,
  id = its path relative to the common folder of all inputs (so two ``README.md`` in two
  folders never collide).
* folders are walked recursively in sorted order; hidden entries (``.git``, ``.venv``…),
  ``__pycache__`` and ``node_modules`` are skipped; files of other types are counted by
  extension in :class:`ReadReport` (``ignored``), never dropped silently.
* text files are decoded strictly with ``encoding`` (UTF-8 by default); a file that does not
  decode is an error naming the file and the option to pass.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .errors import InvalidInputError

TABLE_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".parquet")
TEXT_SUFFIXES = (".txt", ".md", ".markdown")
SKIPPED_DIRS = frozenset({"__pycache__", "node_modules"})
_TYPE_SAMPLE = 1000


class Record(NamedTuple):
    """One document read from a file: a row ``(id, text, metadata)``."""

    id: str
    text: str
    metadata: dict[str, Any]


@dataclass
class ReadOptions:
    """How rows map to documents.

    Attributes:
        text_field / id_field / meta_fields: override the field defaults (module docs).
        encoding: text encoding of every text file (strict).
        infer_types: type CSV values (int, float, bool); False keeps every value a string.
        hidden: also walk hidden folders and files.
        flag_names: how the caller's surface names the options, for error messages
            (the CLI: ``--text-field``; Python: ``text_field=``).
    """

    text_field: str | None = None
    id_field: str | None = None
    meta_fields: Sequence[str] | None = None
    encoding: str = "utf-8"
    infer_types: bool = True
    hidden: bool = False
    flag_names: dict[str, str] = field(
        default_factory=lambda: {
            "text_field": "text_field=",
            "id_field": "id_field=",
            "encoding": "encoding=",
            "meta_fields": "meta_fields=",
        }
    )


@dataclass
class ReadReport:
    """What was read and what was not, so nothing disappears silently."""

    files: int = 0
    skipped_empty: int = 0
    skipped_files: list[str] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)
    ignored_files: list[str] = field(default_factory=list)

    def ignored_summary(self) -> str | None:
        """``ignored 3 files (.pdf ×2, .png ×1)``, or None when nothing was ignored."""
        if not self.ignored:
            return None
        n = sum(self.ignored.values())
        kinds = ", ".join(f"{ext or 'no extension'} ×{c}" for ext, c in self.ignored.most_common())
        return f"ignored {n} file{'s' if n != 1 else ''} of other types ({kinds})"


# ----------------------------------------------------------------------------- walking
def base_suffix(name: str | os.PathLike[str]) -> str:
    """The format suffix of a file name, ignoring a trailing ``.gz`` (``a.jsonl.gz`` → ``.jsonl``)."""
    base = os.fspath(name).rstrip("/").rsplit("/", 1)[-1].lower()
    if base.endswith(".gz"):
        base = base[:-3]
    return os.path.splitext(base)[1]


def _hidden(name: str) -> bool:
    return name.startswith(".") or name in SKIPPED_DIRS


def walk(
    paths: Iterable[str | os.PathLike[str]],
    accept: Iterable[str],
    report: ReadReport | None = None,
    *,
    hidden: bool = False,
) -> Iterator[tuple[Path, bool]]:
    """Files named by ``paths``, as ``(path, named)``: files as given (``named`` True),
    folders walked in sorted order for files whose suffix is in ``accept``.

    Hidden entries and ``__pycache__``/``node_modules`` are skipped unless ``hidden``; other
    suffixes are counted in ``report.ignored``.

    Raises:
        InvalidInputError: a path that does not exist.
    """
    accept = {s.lower() for s in accept}
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if hidden or not _hidden(d))
                for name in sorted(files):
                    if not hidden and name.startswith("."):
                        continue
                    f = Path(root) / name
                    if base_suffix(name) in accept:
                        yield f, False
                    elif report is not None:
                        report.ignored[base_suffix(name) or Path(name).suffix.lower()] += 1
                        report.ignored_files.append(str(f))
        elif p.exists():
            yield p, True
        else:
            raise InvalidInputError(f"{p} does not exist; check the path.")


def common_root(paths: Sequence[str | os.PathLike[str]]) -> Path:
    """The deepest folder holding every input (a folder counts as itself)."""
    dirs = []
    for raw in paths:
        p = Path(raw).expanduser().resolve()
        dirs.append(str(p if p.is_dir() else p.parent))
    return Path(os.path.commonpath(dirs)) if dirs else Path.cwd()


def row_id_prefixes(files: Sequence[str]) -> dict[str, str]:
    """The id prefix of each table file: its stem, or its path without suffixes relative to
    the common folder when two files share a stem (their row ids would collide)."""
    stems = {f: f.rstrip("/").rsplit("/", 1)[-1].split(".")[0] for f in files}
    clash = {s for s, n in Counter(stems.values()).items() if n > 1}
    if not clash:
        return stems
    root = os.path.commonpath([os.path.dirname(f) for f in files]) if len(files) > 1 else ""
    out = {}
    for f, stem in stems.items():
        if stem in clash:
            rel = os.path.relpath(f, root) if root else f
            out[f] = rel.split(".")[0].replace(os.sep, "/")
        else:
            out[f] = stem
    return out


# ----------------------------------------------------------------------------- decoding
def decode_error(path: Any, exc: UnicodeDecodeError | LookupError, opts: ReadOptions) -> Exception:
    """The error for a file that does not decode: which file, where, and what to pass."""
    flag = opts.flag_names.get("encoding", "encoding=")
    if isinstance(exc, LookupError) and not isinstance(exc, UnicodeError):
        return InvalidInputError(
            f"unknown encoding {opts.encoding!r}; pass {flag} with a Python codec name "
            "(utf-8, latin-1, cp1252, utf-16...)."
        )
    assert isinstance(exc, UnicodeDecodeError)
    return InvalidInputError(
        f"{path} is not valid {opts.encoding} ({exc.reason} at byte {exc.start}); pass "
        f"{flag} with its encoding (e.g. latin-1 or cp1252), or convert it to UTF-8."
    )


def open_text(path: str | os.PathLike[str], encoding: str = "utf-8") -> io.TextIOBase:
    """A local text file (gzip when it ends in ``.gz``), strictly decoded, newlines kept."""
    path = Path(path)
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")  # noqa: SIM115 - returned to the caller


def _open_uri(uri: str, encoding: str) -> io.TextIOBase:
    """A text stream of a local path or any URI pyarrow opens (s3://, gs://, hdfs://...)."""
    if "://" not in uri:
        return open_text(uri, encoding)
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError with its own text
        raise InvalidInputError(f"pyarrow cannot open {uri!r} ({exc}).") from exc
    compression = "gzip" if uri.lower().endswith(".gz") else None
    raw = fs.open_input_stream(path, compression=compression)
    return io.TextIOWrapper(raw, encoding=encoding, newline="")


# ----------------------------------------------------------------------------- typing
_INT = re.compile(r"[+-]?(0|[1-9]\d*)")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")
_BOOLS = {"true": True, "false": False}


def _kind(value: str) -> str:
    if _INT.fullmatch(value):
        return "int"
    if _FLOAT.fullmatch(value):
        return "float"
    if value.lower() in _BOOLS:
        return "bool"
    return "str"


def _column_types(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The type of each column over a sample: int, float, bool, or str (mixed or text)."""
    kinds: dict[str, set[str]] = {}
    for row in rows:
        for k, v in row.items():
            if isinstance(v, str) and v != "":
                kinds.setdefault(k, set()).add(_kind(v))
    out = {}
    for k, seen in kinds.items():
        if seen == {"int"}:
            out[k] = "int"
        elif seen <= {"int", "float"}:
            out[k] = "float"
        elif seen == {"bool"}:
            out[k] = "bool"
    return out


def _convert(row: dict[str, Any], types: dict[str, str]) -> dict[str, Any]:
    for k, t in types.items():
        v = row.get(k)
        if not isinstance(v, str) or v == "":
            continue
        kind = _kind(v)
        if t == "int" and kind == "int":
            row[k] = int(v)
        elif t == "float" and kind in ("int", "float"):
            row[k] = float(v)
        elif t == "bool" and kind == "bool":
            row[k] = _BOOLS[v.lower()]
    return row


def typed_csv(reader: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """CSV rows with typed values: types decided on the first rows, applied to all (a value
    that does not fit its column's type stays a string)."""
    it = iter(reader)
    sample = []
    for row in it:
        sample.append(row)
        if len(sample) >= _TYPE_SAMPLE:
            break
    types = _column_types(sample)
    for row in sample:
        yield _convert(row, types)
    for row in it:
        yield _convert(row, types)


# ----------------------------------------------------------------------------- rows
def table_rows(uri: str, opts: ReadOptions | None = None) -> Iterator[dict[str, Any]]:
    """Raw rows (dicts) of a JSONL/CSV/Parquet file, local or at a URI pyarrow opens.

    Raises:
        InvalidInputError: not valid JSON, a line that is not an object, a file that does not
            decode with ``opts.encoding``, or an unsupported type.
    """
    opts = opts or ReadOptions()
    kind = base_suffix(uri)
    if kind == ".parquet":
        import pyarrow.parquet as pq

        if "://" in uri:
            import pyarrow.fs as pafs

            fs, path = pafs.FileSystem.from_uri(uri)
            with fs.open_input_file(path) as fh:
                for batch in pq.ParquetFile(fh).iter_batches(batch_size=4096):
                    yield from batch.to_pylist()
            return
        for batch in pq.ParquetFile(uri).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
        return
    if kind not in TABLE_SUFFIXES:
        raise InvalidInputError(
            f"{uri}: unsupported file type {kind!r}; rows are read from "
            f"{', '.join(TABLE_SUFFIXES)} (optionally .gz)."
        )
    try:
        with _open_uri(uri, opts.encoding) as fh:
            if kind == ".csv":
                reader = csv.DictReader(fh)
                yield from typed_csv(reader) if opts.infer_types else reader
                return
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise InvalidInputError(f"{uri}:{lineno} is not valid JSON ({exc}).") from exc
                if not isinstance(row, dict):
                    raise InvalidInputError(f"{uri}:{lineno} is not a JSON object.")
                yield row
    except (UnicodeDecodeError, LookupError) as exc:
        raise decode_error(uri, exc, opts) from exc


def _likely_text_field(row: dict[str, Any]) -> str | None:
    """The field of ``row`` most likely to hold its text, for an error's hint: the longest
    string value that is neither a number nor an id (a CSV's ``title`` beside ``price``)."""
    best, longest = None, 0
    for key, value in row.items():
        if not isinstance(value, str) or str(key).lower() in ("id", "_id"):
            continue
        try:
            float(value)
            continue  # a number read as text (CSV without type inference)
        except ValueError:
            pass
        if len(value.strip()) > longest:
            best, longest = str(key), len(value.strip())
    return best


def row_record(row: dict[str, Any], n: int, stem: str, opts: ReadOptions) -> Record | None:
    """The document of one table row (None when its text is empty).

    Raises:
        InvalidInputError: the text or id field is missing (names the option to pass).
    """
    names = opts.flag_names
    if opts.text_field:
        if opts.text_field not in row:
            raise InvalidInputError(
                f"{stem}: row {n} has no field {opts.text_field!r} (fields: {sorted(row)}); "
                f"choose another {names.get('text_field', 'text_field=')}."
            )
        text = row[opts.text_field]
        used = {opts.text_field}
    elif "text" in row:
        text, used = row["text"], {"text"}
        if row.get("title"):
            text = f"{row['title']} {text or ''}"
            used.add("title")
    else:
        flag = names.get("text_field", "text_field=")
        likely = _likely_text_field(row)
        hint = ""
        if likely is not None:
            hint = (
                f" (here likely {flag} {likely})"
                if flag.startswith("-")
                else f" (here likely {flag}{likely!r})"
            )
        raise InvalidInputError(
            f"{stem}: row {n} has no 'text' field (fields: {sorted(row)}); pass "
            f"{flag} naming the field that holds the text{hint}."
        )
    id_field = opts.id_field or next((f for f in ("_id", "id") if f in row), None)
    if opts.id_field and opts.id_field not in row:
        raise InvalidInputError(
            f"{stem}: row {n} has no id field {opts.id_field!r} (fields: {sorted(row)}); "
            f"fix {names.get('id_field', 'id_field=')}."
        )
    doc_id = str(row[id_field]) if id_field else f"{stem}:{n}"
    keep = (
        opts.meta_fields
        if opts.meta_fields is not None
        else [k for k in row if k not in used and k != id_field]
    )
    meta = {k: row[k] for k in keep if k in row and row[k] not in (None, "", {}, [])}
    text = "" if text is None else str(text)
    return Record(doc_id, text, meta) if text.strip() else None


def _text_lines(path: Path, opts: ReadOptions, report: ReadReport) -> Iterator[Record]:
    stem = path.name.split(".")[0]
    try:
        with open_text(path, opts.encoding) as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    meta = {"source": path.name, "line": lineno}
                    yield Record(f"{stem}:{lineno}", line.rstrip("\r\n"), meta)
                else:
                    report.skipped_empty += 1
    except (UnicodeDecodeError, LookupError) as exc:
        raise decode_error(path, exc, opts) from exc


def _text_file(path: Path, root: Path, opts: ReadOptions, report: ReadReport) -> Iterator[Record]:
    try:
        rel = path.resolve().relative_to(root).as_posix()
    except ValueError:
        rel = path.name
    try:
        with open_text(path, opts.encoding) as fh:
            text = fh.read()
    except (UnicodeDecodeError, LookupError) as exc:
        raise decode_error(path, exc, opts) from exc
    except OSError as exc:
        report.skipped_files.append(f"{rel}: {exc.strerror or exc}")
        return
    if text.strip():
        yield Record(rel, text, {"source": rel})
    else:
        report.skipped_empty += 1


def read_paths(
    paths: Sequence[str | os.PathLike[str]],
    opts: ReadOptions | None = None,
    report: ReadReport | None = None,
) -> Iterator[Record]:
    """The documents of files and folders, one after the other, as ``(id, text, metadata)``.

    Raises:
        InvalidInputError: a missing path, an unsupported named file, a row without the
            text field, a file that does not decode.
    """
    opts = opts or ReadOptions()
    report = report if report is not None else ReadReport()
    paths = list(paths)
    files = list(walk(paths, TABLE_SUFFIXES + TEXT_SUFFIXES, report, hidden=opts.hidden))
    root = common_root(paths) if paths else Path.cwd()
    prefixes = row_id_prefixes([str(f) for f, _ in files if base_suffix(f) in TABLE_SUFFIXES])
    for path, named in files:
        report.files += 1
        kind = base_suffix(path)
        if kind in TABLE_SUFFIXES:
            prefix = prefixes[str(path)]
            for n, row in enumerate(table_rows(str(path), opts)):
                rec = row_record(row, n, prefix, opts)
                if rec is None:
                    report.skipped_empty += 1
                else:
                    yield rec
        elif kind == ".txt" and named:
            yield from _text_lines(path, opts, report)
        elif kind in TEXT_SUFFIXES:
            yield from _text_file(path, root, opts, report)
        else:
            raise InvalidInputError(
                f"{path}: unsupported file type {kind!r}; `index` reads "
                f"{', '.join(TABLE_SUFFIXES + TEXT_SUFFIXES)} (and .gz), and `embedsearch "
                "ingest` reads .html and .pdf documents too."
            )


def count_paths(
    paths: Sequence[str | os.PathLike[str]], opts: ReadOptions | None = None
) -> int | None:
    """How many rows/documents :func:`read_paths` will yield at most (for a progress total):
    Parquet from its footer, text formats by lines. None when it cannot tell cheaply."""
    opts = opts or ReadOptions()
    total = 0
    try:
        for path, named in walk(paths, TABLE_SUFFIXES + TEXT_SUFFIXES, hidden=opts.hidden):
            kind = base_suffix(path)
            if kind == ".parquet":
                import pyarrow.parquet as pq

                total += pq.ParquetFile(path).metadata.num_rows
            elif kind in (".jsonl", ".ndjson") or (kind == ".txt" and named):
                with open_text(path, opts.encoding) as fh:
                    total += sum(1 for line in fh if line.strip())
            elif kind == ".csv":
                with open_text(path, opts.encoding) as fh:
                    total += sum(1 for _ in csv.reader(fh)) - 1
            else:
                total += 1
    except (OSError, UnicodeDecodeError, LookupError, ValueError, csv.Error):
        return None  # the reader itself reports what is wrong
    return total
