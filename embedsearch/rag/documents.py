"""Ingest documents as chunks: load, chunk, skip unchanged, replace changed, prune removed.

Every source (a file path, or a text with a source name) is stored as chunks with ids
``<source>#<chunk index>`` (``sha256:<hash>#<i>`` when the source name is very long) and
metadata::

    source, chunk_index, chunks (total in the source), char_start, char_end, heading_path,
    content_hash (sha256 of the file bytes), chunker (its signature), format, tokens,
    title / page / page_end when known, plus the caller's metadata.

Re-ingesting: a source whose content hash, chunker and caller metadata all match what is
stored — and whose stored chunk ids are exactly ``#0..#n-1`` — is skipped without being
chunked or embedded. A changed source is written with ``upsert`` (chunks whose text did not
change keep their vectors: no re-embedding) and its surplus old chunks are deleted, so no
duplicates or orphans remain. Writes are batched: each batch is one upsert commit (all or
nothing) followed by one delete commit; if a process dies between the two, the surplus
chunks are found and removed by the next ingest of that source.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError
from .chunking import Chunker, make_chunker
from .loaders import Skipped, SourceDoc, Unchanged, file_hash, iter_sources

if TYPE_CHECKING:
    from ..base import CollectionBase

RESERVED_KEYS = frozenset(
    [
        "source",
        "chunk_index",
        "chunks",
        "char_start",
        "char_end",
        "heading_path",
        "content_hash",
        "chunker",
        "format",
        "tokens",
        "title",
        "page",
        "page_end",
    ]
)
BATCH_CHUNKS = 2048
_MAX_KEY = 400


@dataclass
class IngestReport:
    """What an ``add_documents`` call did, source by source.

    Attributes:
        added: sources indexed for the first time.
        updated: sources whose chunks were replaced (content, chunking or metadata changed).
        unchanged: sources skipped because nothing changed.
        skipped: sources not indexed, with the reason (unreadable, binary, empty, ...).
        removed: sources pruned because they disappeared from an ingested folder.
        ignored: files in folders left out for their type (not .txt/.md/.html/.pdf).
        chunks_written: chunks upserted; chunks_deleted: stale chunks removed.
    """

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    chunks_written: int = 0
    chunks_deleted: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for humans."""
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, {len(self.unchanged)} "
            f"unchanged, {len(self.skipped)} skipped, {len(self.removed)} removed; "
            f"{self.chunks_written} chunks written, {self.chunks_deleted} deleted"
        )


def source_key(source: str) -> str:
    """The id prefix of a source's chunks (the source itself unless it is very long)."""
    if len(source) <= _MAX_KEY:
        return source
    return "sha256:" + hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()


def chunk_id(source: str, index: int) -> str:
    """Id of chunk ``index`` of ``source``."""
    return f"{source_key(source)}#{index}"


def _ids_by_key(col: CollectionBase) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for doc_id in col.ids():
        key, sep, num = doc_id.rpartition("#")
        if sep and num.isdigit():
            out.setdefault(key, set()).add(int(num))
    return out


def _user_meta(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k not in RESERVED_KEYS}


def _check_user_meta(meta: Any, where: str) -> dict[str, Any]:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise InvalidInputError(f"{where} must be a dict, got {type(meta).__name__}.")
    clash = RESERVED_KEYS & set(meta)
    if clash:
        raise InvalidInputError(
            f"{where} uses reserved chunk metadata keys {sorted(clash)}; rename them."
        )
    return dict(meta)


class _Writer:
    """Accumulates chunks and commits them in batches (upsert, then delete surplus)."""

    def __init__(self, col: CollectionBase, report: IngestReport, progress: bool | None) -> None:
        self.col, self.report, self.progress = col, report, progress
        self.texts: list[str] = []
        self.ids: list[str] = []
        self.meta: list[dict[str, Any]] = []
        self.stale: list[str] = []

    def add(self, ids: list[str], texts: list[str], meta: list[dict[str, Any]], stale: list[str]):
        self.ids += ids
        self.texts += texts
        self.meta += meta
        self.stale += stale
        if len(self.ids) >= BATCH_CHUNKS:
            self.flush()

    def flush(self) -> None:
        if self.ids:
            self.col.upsert(self.texts, ids=self.ids, metadata=self.meta, progress=self.progress)
            self.report.chunks_written += len(self.ids)
        if self.stale:
            self.report.chunks_deleted += self.col.delete(self.stale, missing_ok=True)
        self.texts, self.ids, self.meta, self.stale = [], [], [], []


def add_documents(
    col: CollectionBase,
    sources: Iterable[Any] | str | os.PathLike[str],
    *,
    chunker: str | Chunker = "auto",
    max_tokens: int | None = None,
    overlap: int | None = None,
    metadata: dict[str, Any] | None = None,
    encoding: str = "utf-8",
    prune: bool = False,
    progress: bool | None = None,
    on_source: Callable[[str], None] | None = None,
) -> IngestReport:
    """See :meth:`embedsearch.rag.mixin.RetrievalMixin.add_documents`."""
    if isinstance(sources, (str, os.PathLike, dict)):
        sources = [sources]
    sources = list(sources)
    base_meta = _check_user_meta(metadata, "metadata")
    ch = make_chunker(chunker, col.encoder, max_tokens=max_tokens, overlap=overlap)
    report = IngestReport()
    existing = _ids_by_key(col)
    writer = _Writer(col, report, progress)
    seen: set[str] = set()

    def precheck(source: str, digest: str) -> bool:  # skip parsing unchanged files
        return source not in seen and _is_unchanged(col, source, digest, ch, base_meta, existing)

    for loaded, item_meta in iter_sources(
        sources, encoding=encoding, ignored=report.ignored, precheck=precheck
    ):
        try:
            if isinstance(loaded, Skipped):
                report.skipped.append(loaded)
                continue
            if loaded.source in seen:
                continue
            seen.add(loaded.source)
            if isinstance(loaded, Unchanged):
                report.unchanged.append(loaded.source)
                continue
            try:
                user = {**base_meta, **_check_user_meta(item_meta, f"metadata of {loaded.source}")}
            except InvalidInputError as exc:
                report.skipped.append(Skipped(loaded.source, str(exc)))
                continue
            _ingest_one(col, ch, loaded, user, existing, writer, report)
        finally:  # a file is done (indexed, unchanged or skipped)
            if on_source is not None:
                on_source(loaded.source)
    writer.flush()
    if prune:
        _prune(col, sources, seen, existing, report)
    from .retrieval import bm25_store

    bm25_store(col).prepare()  # the keyword index too: passages are what hybrid retrieval asks
    return report


def _is_unchanged(
    col: CollectionBase,
    source: str,
    digest: str,
    ch: Chunker,
    user: dict[str, Any],
    existing: dict[str, set[int]],
) -> bool:
    """Stored chunks of ``source`` match this content, chunker and metadata, and are complete."""
    key = source_key(source)
    have = existing.get(key)
    if not have or f"{key}#0" not in col:
        return False
    head = col.get([f"{key}#0"])[0].metadata
    return (
        head.get("content_hash") == digest
        and head.get("chunker") == ch.signature
        and _user_meta(head) == user
        and have == set(range(int(head.get("chunks", -1))))
    )


def _ingest_one(
    col: CollectionBase,
    ch: Chunker,
    doc: SourceDoc,
    user: dict[str, Any],
    existing: dict[str, set[int]],
    writer: _Writer,
    report: IngestReport,
) -> None:
    key = source_key(doc.source)
    have = existing.get(key, set())
    if _is_unchanged(col, doc.source, doc.content_hash, ch, user, existing):
        report.unchanged.append(doc.source)
        return
    chunks = ch.split(doc)
    if not chunks:
        report.skipped.append(Skipped(doc.source, "no text left after chunking"))
        return
    ids, texts, metas = [], [], []
    for c in chunks:
        m: dict[str, Any] = {
            **user,
            "source": doc.source,
            "chunk_index": c.index,
            "chunks": len(chunks),
            "char_start": c.char_start,
            "char_end": c.char_end,
            "heading_path": list(c.heading_path),
            "content_hash": doc.content_hash,
            "chunker": ch.signature,
            "format": doc.format,
            "tokens": c.tokens,
        }
        if doc.title:
            m["title"] = doc.title
        if doc.page_starts:
            m["page"] = doc.page_of(c.char_start)
            m["page_end"] = doc.page_of(max(c.char_start, c.char_end - 1))
        ids.append(f"{key}#{c.index}")
        texts.append(c.text)
        metas.append(m)
    stale = [f"{key}#{i}" for i in sorted(have) if i >= len(chunks)]
    writer.add(ids, texts, metas, stale)
    existing[key] = set(range(len(chunks)))
    (report.updated if have else report.added).append(doc.source)


def _prune(
    col: CollectionBase,
    sources: list[Any],
    seen: set[str],
    existing: dict[str, set[int]],
    report: IngestReport,
) -> None:
    """Delete the chunks of files that were ingested from a folder given now but are gone."""
    roots = [
        str(Path(s).expanduser().resolve())
        for s in sources
        if isinstance(s, (str, os.PathLike)) and Path(s).is_dir()
    ]
    if not roots:
        return
    gone: list[str] = []
    for key, nums in existing.items():
        if key in seen or not any(key.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
            continue
        if Path(key).exists() and key not in {s for s in seen}:
            # still there but not loaded now (e.g. became unreadable): keep the old chunks
            continue
        gone.append(key)
        report.chunks_deleted += col.delete([f"{key}#{i}" for i in nums], missing_ok=True)
    report.removed.extend(gone)


def remove_documents(col: CollectionBase, sources: Iterable[str | os.PathLike[str]]) -> int:
    """Delete every chunk of the given sources (paths are resolved as at ingest).

    Returns:
        The number of chunks deleted (0 for sources that were never ingested).
    """
    existing = _ids_by_key(col)
    ids: list[str] = []
    for s in [sources] if isinstance(sources, (str, os.PathLike)) else sources:
        name = str(s)
        cands = {name}
        if os.path.exists(name) or isinstance(s, os.PathLike):
            cands.add(str(Path(name).expanduser().resolve()))
        for cand in cands:
            key = source_key(cand)
            ids.extend(f"{key}#{i}" for i in existing.get(key, ()))
    return col.delete(sorted(set(ids)), missing_ok=True) if ids else 0


def unchanged_on_disk(path: str | os.PathLike[str], stored_hash: str) -> bool:
    """True when ``path``'s bytes still hash to ``stored_hash`` (citations still valid)."""
    return file_hash(Path(path)) == stored_hash
