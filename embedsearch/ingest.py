"""Read documents from files: JSONL, CSV, Parquet, plain text, and folders of .txt/.md.

Every reader yields :class:`Record` (id, text, metadata) lazily, so files of any size stream
into ``Collection.add`` with bounded memory. ``.gz`` variants of the text formats are read
transparently.

Field defaults (override with ``text_field``, ``id_field``, ``meta_fields``):

* text: ``text`` — and when a row also has ``title`` (BEIR corpus files), ``title + " " + text``;
* id: ``_id``, else ``id``, else ``<file stem>:<row number>`` (stable across re-runs);
* metadata: every other field with a JSON value (empty values dropped).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidInputError

TEXT_SUFFIXES = (".txt", ".md", ".markdown")


@dataclass
class Record:
    """One document read from a file."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReadOptions:
    """How rows map to documents."""

    text_field: str | None = None
    id_field: str | None = None
    meta_fields: Sequence[str] | None = None


@dataclass
class ReadReport:
    """What was skipped while reading, so nothing disappears silently."""

    skipped_empty: int = 0
    skipped_files: list[str] = field(default_factory=list)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")  # noqa: SIM115 - returned to the caller


def _base_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _row_record(row: dict[str, Any], n: int, stem: str, opts: ReadOptions) -> Record | None:
    if opts.text_field:
        if opts.text_field not in row:
            raise InvalidInputError(
                f"{stem}: row {n} has no field {opts.text_field!r} (fields: {sorted(row)}); "
                "choose --text-field."
            )
        text = row[opts.text_field]
        used = {opts.text_field}
    elif "text" in row:
        text, used = row["text"], {"text"}
        if row.get("title"):
            text = f"{row['title']} {text or ''}"
            used.add("title")
    else:
        raise InvalidInputError(
            f"{stem}: row {n} has no 'text' field (fields: {sorted(row)}); pass --text-field."
        )
    id_field = opts.id_field or next((f for f in ("_id", "id") if f in row), None)
    if opts.id_field and opts.id_field not in row:
        raise InvalidInputError(f"{stem}: row {n} has no id field {opts.id_field!r}.")
    doc_id = str(row[id_field]) if id_field else f"{stem}:{n}"
    names = (
        opts.meta_fields
        if opts.meta_fields is not None
        else [k for k in row if k not in used and k != id_field]
    )
    meta = {k: row[k] for k in names if k in row and row[k] not in (None, "", {}, [])}
    text = "" if text is None else str(text)
    return Record(doc_id, text, meta) if text.strip() else None


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    kind = _base_suffix(path)
    if kind in (".jsonl", ".ndjson"):
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except ValueError as exc:
                        raise InvalidInputError(
                            f"{path}:{lineno} is not valid JSON ({exc})."
                        ) from exc
                    if not isinstance(row, dict):
                        raise InvalidInputError(f"{path}:{lineno} is not a JSON object.")
                    yield row
    elif kind == ".csv":
        with _open_text(path) as fh:
            yield from csv.DictReader(fh)
    elif kind == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
    else:
        raise InvalidInputError(f"{path}: unsupported file type {kind!r}.")


def read_path(
    path: str | Path, opts: ReadOptions | None = None, report: ReadReport | None = None
) -> Iterator[Record]:
    """Yield the documents in ``path`` (a file of a supported type, or a folder).

    Raises:
        InvalidInputError: missing path, unsupported type, or a row without the text field.
    """
    opts = opts or ReadOptions()
    report = report if report is not None else ReadReport()
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"{path} does not exist.")
    if path.is_dir():
        yield from _read_folder(path, report)
        return
    kind = _base_suffix(path)
    stem = path.name.split(".")[0]
    if kind == ".txt":
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    yield Record(
                        f"{stem}:{lineno}", line.rstrip("\n"), {"source": path.name, "line": lineno}
                    )
                else:
                    report.skipped_empty += 1
        return
    if kind in (".md", ".markdown"):
        yield from _read_folder_file(path, path.parent, report)
        return
    for n, row in enumerate(_rows(path)):
        rec = _row_record(row, n, stem, opts)
        if rec is None:
            report.skipped_empty += 1
        else:
            yield rec


def _read_folder_file(path: Path, root: Path, report: ReadReport) -> Iterator[Record]:
    rel = path.relative_to(root).as_posix()
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        report.skipped_files.append(f"{rel}: {exc.__class__.__name__}")
        return
    if text.strip():
        yield Record(rel, text, {"source": rel})
    else:
        report.skipped_empty += 1


def _read_folder(root: Path, report: ReadReport) -> Iterator[Record]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in TEXT_SUFFIXES:
            yield from _read_folder_file(path, root, report)


def read_paths(
    paths: Sequence[str | Path], opts: ReadOptions | None = None, report: ReadReport | None = None
) -> Iterator[Record]:
    """Documents of several files/folders, one after the other."""
    for p in paths:
        yield from read_path(p, opts, report)
