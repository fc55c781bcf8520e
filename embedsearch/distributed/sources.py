"""Input shards for distributed ingest: find them (paths, globs, URIs) and read their rows.

A *shard* is one input file. It is the unit of parallelism (one encoder actor reads and
embeds a whole shard) and of resumability (progress is recorded per shard), so split big
inputs into many files — 100k to 1M rows each works well.

Files are reached through :mod:`pyarrow.fs`, so anything pyarrow can open works: local
paths, ``file://``, ``s3://``, ``gs://``, ``hdfs://``, ``abfs://``. Rows are turned into
documents by the same rules as the single-node reader (:mod:`embedsearch.ingest`): the same
text field defaults, the same ids (``_id``/``id``, else ``<file stem>:<row number>``) and the
same metadata, so a collection built on Ray equals one built by ``embedsearch index``.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..ingest import ReadOptions, _row_record

SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".csv")
_WILDCARDS = "*?["


@dataclass(frozen=True)
class Shard:
    """One input file: where it is and the size/mtime that identify its version."""

    uri: str
    size: int
    mtime_ns: int | None

    @property
    def stem(self) -> str:
        """The file name before its first dot: the prefix of generated ids."""
        return self.uri.rstrip("/").rsplit("/", 1)[-1].split(".")[0]

    def to_json(self) -> dict[str, Any]:
        return {"uri": self.uri, "size": self.size, "mtime_ns": self.mtime_ns}


def kind_of(uri: str) -> str:
    """The shard's format suffix (``.parquet``, ``.jsonl``…), ignoring a trailing ``.gz``."""
    name = uri.rstrip("/").rsplit("/", 1)[-1].lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return os.path.splitext(name)[1]


def _filesystem(uri: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError with its own text
        raise InvalidInputError(f"pyarrow cannot open {uri!r} ({exc}).") from exc


def _join(uri: str, fs_path: str) -> str:
    """Rebuild a URI for ``fs_path`` inside the filesystem that ``uri`` named."""
    if "://" not in uri:
        return fs_path
    scheme = uri.split("://", 1)[0]
    return f"{scheme}://{fs_path}" if scheme != "file" else f"file://{fs_path}"


def _shard(uri: str, info: Any) -> Shard:
    mtime = info.mtime_ns if info.mtime is not None else None
    return Shard(uri, int(info.size or 0), int(mtime) if mtime is not None else None)


def expand(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Shard]:
    """Resolve ``source`` into input shards, sorted by location (a stable order).

    Args:
        source: a file, a directory (its supported files, recursively), a glob
            (``data/*.parquet``, ``s3://bucket/docs/part-*.jsonl.gz``), or a list of these.

    Raises:
        InvalidInputError: nothing matched, or a named file has an unsupported type.
    """
    import pyarrow.fs as pafs

    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    found: dict[str, Shard] = {}
    for item in items:
        uri = os.fspath(item)
        fs, path = _filesystem(uri)
        if any(c in path for c in _WILDCARDS):
            parts = path.split("/")
            first = next(i for i, p in enumerate(parts) if any(c in p for c in _WILDCARDS))
            base = "/".join(parts[:first]) or "/"
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
            matches = [
                i
                for i in infos
                if i.type == pafs.FileType.File
                and fnmatch.fnmatchcase(i.path, path)
                and kind_of(i.path) in SUFFIXES
            ]
        else:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                raise InvalidInputError(f"{uri} does not exist.")
            if info.type == pafs.FileType.Directory:
                infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
                matches = [
                    i for i in infos if i.type == pafs.FileType.File and kind_of(i.path) in SUFFIXES
                ]
            else:
                if kind_of(path) not in SUFFIXES:
                    raise InvalidInputError(
                        f"{uri}: unsupported file type {kind_of(path)!r}; distributed ingest "
                        f"reads {', '.join(SUFFIXES)} (optionally .gz)."
                    )
                matches = [info]
        for info in matches:
            shard = _shard(_join(uri, info.path), info)
            found[shard.uri] = shard
    if not found:
        raise InvalidInputError(
            f"{source!r} matches no {'/'.join(SUFFIXES)} files; check the path or glob."
        )
    return [found[k] for k in sorted(found)]


def stat(uri: str) -> Shard:
    """The current size and mtime of one shard."""
    fs, path = _filesystem(uri)
    return _shard(uri, fs.get_file_info(path))


def _raw_rows(uri: str) -> Iterator[dict[str, Any]]:
    fs, path = _filesystem(uri)
    kind = kind_of(uri)
    if kind == ".parquet":
        import pyarrow.parquet as pq

        with fs.open_input_file(path) as fh:
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=4096):
                yield from batch.to_pylist()
        return
    compression = "gzip" if uri.lower().endswith(".gz") else None
    with fs.open_input_stream(path, compression=compression) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        if kind == ".csv":
            yield from csv.DictReader(text)
            return
        for lineno, line in enumerate(text, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise InvalidInputError(f"{uri}:{lineno} is not valid JSON ({exc}).") from exc
            if not isinstance(row, dict):
                raise InvalidInputError(f"{uri}:{lineno} is not a JSON object.")
            yield row


@dataclass
class Row:
    """One document of a shard, with its row number (the resume position)."""

    n: int
    id: str
    text: str
    metadata_json: str | None


def read_rows(uri: str, opts: ReadOptions | None = None) -> Iterator[Row]:
    """Documents of one shard, in file order; rows with empty text are skipped.

    ``n`` is the row number in the file (blank JSONL lines not counted), as in the
    single-node reader, so ``<stem>:<n>`` ids agree with ``embedsearch index``.

    Raises:
        InvalidInputError: unreadable rows, a missing text field, metadata that is not JSON.
    """
    opts = opts or ReadOptions()
    stem = Path(uri.rstrip("/").rsplit("/", 1)[-1]).name.split(".")[0]
    for n, raw in enumerate(_raw_rows(uri)):
        rec = _row_record(raw, n, stem, opts)
        if rec is None:
            continue
        meta = None
        if rec.metadata:
            try:
                meta = json.dumps(rec.metadata, allow_nan=False, ensure_ascii=False, sort_keys=True)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(
                    f"{uri}: row {n} has metadata that is not JSON-serialisable ({exc}); pass "
                    "meta_fields to keep only plain fields."
                ) from exc
        yield Row(n, rec.id, rec.text, meta)
