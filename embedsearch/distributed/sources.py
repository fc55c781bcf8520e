"""Input shards for distributed ingest: find them (paths, globs, URIs) and read their rows.

A *shard* is one input file. It is the unit of parallelism (one encoder actor reads and
embeds a whole shard) and of resumability (progress is recorded per shard), so split big
inputs into many files — 100k to 1M rows each works well.

Files are reached through :mod:`pyarrow.fs`, so anything pyarrow can open works: local
paths, ``file://``, ``s3://``, ``gs://``, ``hdfs://``, ``abfs://``. Rows are turned into
documents by the same rules as the single-node reader (:mod:`embedsearch.readers`): the same
text field defaults, the same ids (``_id``/``id``, else ``<file stem>:<row number>``) and the
same metadata, so a collection built on Ray equals one built by ``embedsearch index``:
both read through :mod:`embedsearch.readers`, the one reader of input formats.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError
from ..readers import (
    TABLE_SUFFIXES,
    ReadOptions,
    base_suffix,
    row_id_prefixes,
    row_record,
    table_rows,
)

SUFFIXES = TABLE_SUFFIXES
_WILDCARDS = "*?["


@dataclass(frozen=True)
class Shard:
    """One input file: where it is and the size/mtime that identify its version."""

    uri: str
    size: int
    mtime_ns: int | None
    prefix: str | None = None

    @property
    def stem(self) -> str:
        """The prefix of generated ids: the file name before its first dot (its path from the
        common folder when two shards share a stem, as :func:`readers.row_id_prefixes`)."""
        return self.prefix or self.uri.rstrip("/").rsplit("/", 1)[-1].split(".")[0]

    def to_json(self) -> dict[str, Any]:
        return {"uri": self.uri, "size": self.size, "mtime_ns": self.mtime_ns}


kind_of = base_suffix  # the shard's format suffix, ignoring a trailing ``.gz``


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
    prefixes = row_id_prefixes(sorted(found))
    return [dataclasses.replace(found[k], prefix=prefixes[k]) for k in sorted(found)]


def stat(uri: str) -> Shard:
    """The current size and mtime of one shard."""
    fs, path = _filesystem(uri)
    return _shard(uri, fs.get_file_info(path))


@dataclass
class Row:
    """One document of a shard, with its row number (the resume position)."""

    n: int
    id: str
    text: str
    metadata_json: str | None


def read_rows(
    uri: str, opts: ReadOptions | None = None, prefix: str | None = None
) -> Iterator[Row]:
    """Documents of one shard, in file order; rows with empty text are skipped.

    ``n`` is the row number in the file (blank JSONL lines not counted), as in the
    single-node reader, so ``<stem>:<n>`` ids agree with ``embedsearch index``.

    Raises:
        InvalidInputError: unreadable rows, a missing text field, metadata that is not JSON.
    """
    opts = opts or ReadOptions()
    stem = prefix or uri.rstrip("/").rsplit("/", 1)[-1].split(".")[0]
    for n, raw in enumerate(table_rows(uri, opts)):
        rec = row_record(raw, n, stem, opts)
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
