"""``Collection``: the one facade every surface uses — add, upsert, delete, get, search.

A collection is a directory (see :mod:`embedsearch.store`). Its invariants:

* **Committed means durable.** A write returns only after its files and the manifest that
  names them are fsynced and renamed into place; a process killed right after loses nothing.
* **Failed means unchanged.** All validation happens before anything is written; files
  written by a write that then fails are removed, and nothing is live until the manifest
  rename. On disk and in memory the collection stays as it was.
* **One writer, many readers.** The first write takes the directory's ``LOCK`` (a second
  writer gets :class:`LockedError`); searches in the same process run concurrently and see
  the state before or after a commit, never a torn one. Readers in other processes pick up
  new commits on their next call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from . import durable, store, versions
from .base import COMPACT_MIN_DELETED_SHARE, CollectionBase, Query, SearchRequest, Selection
from .concurrency import RWLock, beside
from .encoder import Encoder, get_encoder
from .errors import (
    CollectionNotFoundError,
    CommitUncertainError,
    CorruptionError,
    DocumentNotFoundError,
    DuplicateIdError,
    EmbedSearchError,
    IndexSpecError,
    InvalidInputError,
    ModelMismatchError,
    NotACollectionError,
    ReadOnlyError,
)
from .filters import column_mask, compile_filter
from .history import HistoryMixin
from .index import (
    Ahead,
    SearchOptions,
    VectorIndex,
    build_or_exact,
    exact_fallback,
    exact_search,
    validate_spec,
)
from .latent.mixin import LatentMixin
from .manifest import IndexFileRef, IndexSection, Manifest, SegmentRef, TailRef
from .progress import progress_bar
from .rag.mixin import RetrievalMixin
from .segment import Segment, open_segment, row_checksums
from .segment import add_derived as _add_derived
from .segment import write_segment as _write_segment
from .table import RowsView, Table, compaction_plan, merge_plan, parse_metadata
from .types import Document, Hit
from .validation import (
    check_k,
    check_share,
    home,
    resolve_path,
    sized,
    validate_name,
)

log = logging.getLogger(__name__)

#: Documents embedded at a time while streaming an add; their segments are written
#: VECTOR_CHUNK rows at a time (a 10,000-text add is one segment, not five to merge later).
WRITE_CHUNK = 2048
#: Rows per segment when the caller passes a matrix of vectors (nothing to embed, and the
#: rows are in memory already): every segment costs a file pair to map and a step in each
#: column scan, and 2,048-row segments made a 1M-row collection 500 of them.
VECTOR_CHUNK = 65_536
#: The most bytes of a write's vectors kept in memory for the index after its commit; a
#: larger write's rows are read back from its segments instead (see _index_add_committed).
FRESH_INDEX_BYTES = 256 * 2**20

#: A saved index takes at most this many tail files (see Collection._tail_file) ...
MAX_TAILS = 32
#: ... holding at most this share of the index file's rows, or this many rows if more:
#: past either, the next save writes the whole index again. A reader appends the tails on
#: its first approximate search: at 5M rows (8,192 lists) 10k rows of codes took 0.16 s.
TAIL_SHARE = 0.02
TAIL_MIN_ROWS = 20_000

#: A writer merges its newest small segments (fewer than COMPACT_KEEP_ROWS rows) into one
#: once MERGE_FAN_IN of a level wait, or MERGE_ROWS rows (see table.merge_plan).
MERGE_FAN_IN = 32
MERGE_ROWS = 65_536

COMPACT_SEGMENT_ROWS = 200_000
#: Compaction keeps a segment with no deleted rows as it is (the file is not rewritten and
#: stays shared with past versions) when it holds at least this many rows; smaller ones
#: are merged with their neighbours' live rows, so many small writes still end in few
#: segments. Half a :data:`VECTOR_CHUNK`: a 50k-row ``add`` of vectors is kept.
COMPACT_KEEP_ROWS = 32_768


def _write_held(root: Path, held: list[tuple[Any, ...]]) -> SegmentRef:
    """One segment of the chunks in ``held`` (ids, texts, metadata JSON, vectors and
    metadata dicts, each), which it empties."""
    if len(held) == 1:
        parts = list(held[0])
    else:  # the vectors as one matrix; the other fields as lists
        parts = [
            np.concatenate([h[3] for h in held]) if k == 3 else [x for h in held for x in h[k]]
            for k in range(5)
        ]
    held.clear()
    return _write_segment(root, *parts)


# ----------------------------------------------------------------------------- facade
class Collection(CollectionBase, LatentMixin, RetrievalMixin, HistoryMixin):
    """A persistent, searchable set of texts with their embeddings and metadata.

    Open one with :func:`embedsearch.open`. Example:
        >>> col = embedsearch.open("notes")
        >>> col.add(["the cat sat", "stocks fell"], metadata=[{"k": 1}, {"k": 2}])
        >>> col.search("a kitten", k=1)[0].text
        'the cat sat'
    """

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        model: str | None,
        backend: str | None,
        *,
        stamp: tuple[int, int, int] | None = None,
        version: int | None = None,
    ):
        self.path = path
        #: The version this handle is pinned to (a read-only view), or None (follows commits).
        self.pinned_version = version
        self.name = path.name
        self._manifest = manifest
        self._model_name = model or manifest.model_name
        self._backend = backend
        self._encoder: Encoder | None = None
        self.dim = manifest.dim
        self._writer = store.WriterLock(path)
        self._write_mutex = threading.RLock()
        self._add_prepared = False  # the index readied for adds beside a first encoding
        self._rw = RWLock()
        self._closed = False
        # The stamp must describe the manifest we hold or an *older* one: taken after the
        # read, a commit landing in between would make refresh() believe we are current.
        self._stamp = stamp if stamp is not None else self._manifest_stamp()
        self._load_following(manifest)

    # ------------------------------------------------------------------ loading
    def _manifest_stamp(self) -> tuple[int, int, int]:
        st = (self.path / store.MANIFEST).lstat()
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self, manifest: Manifest) -> None:
        """Map the segments of a committed manifest and load (or build) its index.

        O(manifest) for format-2 segments: each file is mapped and its size checked; its
        bytes are checksummed when a query first touches them (:mod:`embedsearch.segment`).
        Format-1 (Parquet) segments are read whole, as version 1 did, until upgraded.
        """
        table = Table(self.dim)
        table.extend([open_segment(self.path, ref, self.dim) for ref in manifest.segments])
        for ref in manifest.tombstones:
            table.kill(store.read_tombstones(self.path, ref))
        index = self._load_index(manifest, table)
        with self._rw.write():
            self._manifest, self._table, self._index = manifest, table, index

    def _load_following(self, manifest: Manifest) -> None:
        """Load ``manifest``, following newer commits that replaced its files meanwhile.

        A reader that read manifest N while a writer committed N+1 and removed N's files
        (compaction, leftovers) sees a file vanish: that is a newer commit, not corruption.
        The stamp is left as it was (older than what gets loaded): at worst one extra
        refresh, never a missed commit.
        """
        if self.pinned_version is not None:  # a view of one version never moves
            self._load(manifest)
            return
        for _attempt in range(5):
            try:
                self._load(manifest)
                return
            except CorruptionError:
                newer = store.read_manifest(self.path)
                if newer.version == manifest.version:
                    raise  # the same commit is still damaged: real corruption
                manifest = newer
        self._load(manifest)

    def _borrowed_index(self, manifest: Manifest, table: Table) -> IndexSection | None:
        """For a view of a past version whose own saved index is gone: the current version's
        saved index, when its positions are that version's: the same epoch (a compaction
        renumbers), and that version's rows the current ones' first rows. A restore keeps
        an old epoch, so the epoch alone does not say the rows line up: the segments both
        versions name are the same rows; past those, where the writer has since merged the
        version's newest small segments (``table``: its rows), their vectors must be the
        current version's at the same positions, row checksum for row checksum."""
        try:
            current = store.read_manifest(self.path)
        except EmbedSearchError:
            return None
        saved = current.index.file
        if saved is None or saved.epoch != manifest.epoch or current.epoch != manifest.epoch:
            return None
        shared = 0
        for mine, theirs in zip(manifest.segments, current.segments):
            if mine.file != theirs.file:
                break
            shared += 1
        if shared == len(manifest.segments):
            return current.index
        start = sum(ref.rows for ref in manifest.segments[:shared])
        if current.rows is not None and current.rows < table.rows:
            return None
        try:
            want = np.concatenate([row_checksums(seg) for seg in table.segments[shared:]])
            got: list[np.ndarray] = []
            rows = 0
            for ref in current.segments[shared:]:
                if rows >= want.size:
                    break
                got.append(row_checksums(open_segment(self.path, ref, self.dim)))
                rows += got[-1].size
        except (OSError, EmbedSearchError):  # a file of the current version gone or damaged
            return None
        have = np.concatenate(got) if got else np.zeros(0, dtype=np.uint32)
        if have.size < want.size or not np.array_equal(have[: want.size], want):
            return None
        log.info("version %d borrows the current index (rows from %d merged since)",
                 manifest.generation, start)  # fmt: skip
        return current.index

    def _load_index(self, manifest: Manifest, table: Table) -> VectorIndex:
        spec = manifest.index.spec  # one refused today falls back to exact (build_or_exact)
        index = VectorIndex(spec, self.dim)
        section: IndexSection | None = manifest.index
        self._index_file_ok = True
        vectors = table.vectors_view()
        if self.pinned_version is not None and versions.index_gone(self.path, manifest):
            # its own went with the version (kept_files)
            section = self._borrowed_index(manifest, table)
        borrowed = section is not None and section is not manifest.index
        saved = section.file if section is not None else None
        if (
            section
            and saved
            and saved.epoch == manifest.epoch
            and (section.rows <= table.rows or borrowed)
        ):
            tails = section.tail

            def load(index: VectorIndex) -> None:
                """Read the saved file (checksum first) and its tails, or rebuild when the
                file is unusable (a tail that is: its rows come from the segments)."""
                try:
                    store.load_verified(self.path, saved, lambda src: index.load(src, saved.info))
                    problem = index.check_against(saved.rows)
                    if problem:
                        raise CorruptionError(f"{saved.file}: {problem}")
                except Exception as exc:  # derived data: rebuild rather than fail
                    log.warning(
                        "index file %s unusable (%s); rebuilding from segments", saved.file, exc
                    )
                    self._index_file_ok = False  # the next writer replaces it
                    index.adopt(build_or_exact(spec, self.dim, vectors))
                    return
                codes = []
                for ref in tails:
                    try:
                        codes.append(
                            store.load_verified(
                                self.path, ref, lambda src, n=ref.rows: index.read_codes(src, n)
                            )
                        )
                    except Exception as exc:  # noqa: BLE001 - derived data, as above
                        log.warning(
                            "index tail %s unusable (%s); its rows are indexed from the segments",
                            ref.file,
                            exc,
                        )
                        self._index_file_ok = False  # the next writer saves the index whole
                        break
                if codes:
                    index.append_codes(np.concatenate(codes))
                if index.ntotal < table.rows:
                    index.add(vectors[index.ntotal :], vectors)  # catch up with newer rows

            # Read on first need (an approximate search, a save), not here: see defer(). A
            # writer that only appends rows encodes them with the training saved at the
            # file's end and never reads the rest (VectorIndex._add_encoded).
            trained = None
            if saved.trained is not None and not borrowed:
                trained = functools.partial(store.read_trained, self.path, saved)
            index.defer(saved.info, table.rows, load, trained, section.rows)
            if section.rows > table.rows:  # borrowed from the current version: later rows too
                index.limit_rows(table.rows)
            if os.environ.get("EMBEDSEARCH_EAGER_INDEX", "") not in ("", "0"):
                index.load_deferred()
            return index
        return build_or_exact(spec, self.dim, vectors)

    @staticmethod
    def _version(manifest: Manifest) -> tuple[str, int]:
        # The epoch changes on compaction *and* when a collection is deleted and re-created, so
        # a generation number alone cannot tell two different histories apart.
        return manifest.version

    def _load_latest(self) -> None:
        """Load the newest committed manifest unless this handle already holds it."""
        manifest = store.read_manifest(self.path)
        if manifest.version != self._manifest.version:
            self._load_following(manifest)

    def refresh(self) -> bool:
        """Pick up commits made by another process since this handle last looked.

        Returns:
            True if the collection changed. Read calls do this automatically.
        """
        if self.pinned_version is not None:
            return False
        # A write in progress on this handle has the newest state; never race it.
        if not self._write_mutex.acquire(blocking=False):
            return False
        try:
            if self._writer.held:
                return False
            try:
                stamp = self._manifest_stamp()
            except FileNotFoundError:
                return False
            if stamp == self._stamp:
                return False
            before = self._version(self._manifest)
            self._load_latest()
            self._stamp = stamp
            return self._version(self._manifest) != before
        finally:
            self._write_mutex.release()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Table]:
        """The newest committed rows, held still (the read lock) while the caller reads them:
        for derived indexes kept per segment (the keyword side of retrieval)."""
        self._ensure_open()
        self.refresh()
        with self._rw.read():
            yield self._table

    # ------------------------------------------------------------------ properties
    @property
    def encoder(self) -> Encoder:
        """The model that embeds this collection's texts (loaded on first use)."""
        if self._encoder is None:
            enc = get_encoder(
                self._model_name, self._backend or self._manifest.model.get("backend")
            )
            if enc.dim != self.dim:
                raise ModelMismatchError(
                    f"Model {enc.name!r} makes {enc.dim}-d vectors; collection {self.name!r} holds "
                    f"{self.dim}-d vectors. Open it with model={self._manifest.model_name!r}."
                )
            self._encoder = enc
        return self._encoder

    @property
    def state_key(self) -> str:
        """Changes whenever the committed contents change: a cache key for derived data."""
        self.refresh()
        return f"{self._manifest.epoch}-{self._table.rows}-{self._table.count}"

    @property
    def model(self) -> str:
        return self._manifest.model_name

    def __len__(self) -> int:
        self.refresh()
        return self._table.count

    def _contains(self, doc_id: str) -> bool:
        self.refresh()
        return doc_id in self._table

    def __repr__(self) -> str:
        return f"Collection({str(self.path)!r}, count={self._table.count}, model={self.model!r})"

    # ------------------------------------------------------------------ writes
    def _begin_write(self) -> None:
        """Take the cross-process lock; on first take, catch up with disk, clean leftovers,
        and upgrade format-1 segments (the first write after an upgrade of embedsearch)."""
        self._ensure_open()
        if self.pinned_version is not None:
            raise ReadOnlyError(
                f"collection {self.name!r} is open at version {self.pinned_version}, a read-only "
                "view of the past: it cannot be changed. Open it without version= to write, or "
                f"restore({self.pinned_version}) to make this state the newest version."
            )
        if self._writer.held:
            return
        self._writer.acquire()
        try:
            try:
                stamp: tuple[int, int, int] | None = self._manifest_stamp()
            except FileNotFoundError:
                stamp = None  # reading it says what is wrong
            if stamp is None or stamp != self._stamp:  # committed to since: catch up
                self._load_latest()  # (a read and parse: 9 ms at 5M rows)
                stamp = self._manifest_stamp() if stamp is None else stamp
            self._stamp = stamp
            removed = versions.cleanup(self.path, self._manifest)
            if removed:
                log.info("removed %d leftover files of interrupted writes", len(removed))
            if self._manifest.needs_upgrade:
                self._upgrade_locked()
        except BaseException:
            self._writer.release()
            raise

    def upgrade(self) -> dict[str, int]:
        """Bring every segment to the current format; nothing else changes.

        Format-1 (Parquet) segments are rewritten; format-2 to -6 segments get what they
        lack of their id index (format 3: their ids hashed once), row checksums (format 4:
        each vector row checked by its block checksum, then checksummed), typed column
        layout (format 5) and Arrow block checksums (format 7: summed once the whole file's
        checksum holds); the rows are untouched. Row positions, tombstones and
        the saved index stay valid (rows keep their order), so no index is rebuilt. Writes
        do this by themselves first; ``embedsearch upgrade NAME`` does it ahead of time.

        Returns:
            ``{"segments": segments upgraded, "rows": rows they hold}``.
        """
        with self._write_mutex:
            old = self._manifest.segments_to_upgrade
            self._begin_write()  # upgrades whatever is not in the current format
            return {"segments": len(old), "rows": sum(s.rows for s in old)}

    def _upgrade_locked(self) -> None:
        manifest = self._manifest
        table = self._table
        refs: list[SegmentRef] = []
        written: list[str] = []
        try:
            for start, seg, ref in zip(table.segment_starts(), table.segments, manifest.segments):
                if not ref.legacy:
                    if ref.lacks_derived:  # formats 2-6
                        new = _add_derived(self.path, ref, seg)
                        written += sorted(set(new.files()) - set(ref.files()))
                        ref = new
                    refs.append(ref)
                    continue
                pos = np.arange(start, start + ref.rows)
                new = _write_segment(
                    self.path,
                    table.ids_at(pos),
                    table.texts_at(pos),
                    table.metadata_json(pos),
                    seg.vectors(),
                )
                written += new.files()
                refs.append(new)
            upgraded = self._commit(manifest.replace(segments=refs))
        except BaseException as exc:
            self._discard(written, exc)
            raise
        log.info("upgraded %d segments of %s", len(manifest.segments_to_upgrade), self.name)
        self._load(upgraded)
        # the files the upgrade replaced, but not those a kept past version names
        versions.cleanup(self.path, self._manifest)

    def _write(
        self,
        texts: Iterable[str],
        ids: Iterable[str] | None,
        metadata: Iterable[Any] | None,
        vectors: Iterable[Any] | None,
        *,
        upsert: bool,
        progress: bool | None,
    ) -> list[str]:
        with self._write_mutex:
            self._begin_write()
            table = self._table
            total = sized(texts)
            show = progress if progress is not None else (total or 0) > 2000
            bar = progress_bar(total, show, "embedding")
            written: list[SegmentRef] = []
            tombs: list[store.FileRef] = []
            replaced: list[int] = []
            out_ids: list[str] = []
            fresh: list[np.ndarray] | None = []  # the rows' vectors as written, for the index
            fresh_bytes = 0
            held: list[tuple[Any, ...]] = []  # chunks embedded, not yet written (see below)
            trained, saved = None, None  # the index trained before the commit, its file
            try:
                step = VECTOR_CHUNK if isinstance(vectors, np.ndarray) else WRITE_CHUNK
                for chunk in self._checked_chunks(texts, ids, metadata, vectors, step):
                    c_ids, c_texts, c_meta = chunk.ids, chunk.texts, chunk.metadata_json
                    c_dicts = [m or None for m in chunk.metadata]
                    c_vectors = chunk.vectors
                    if c_vectors is None and not upsert:  # the model runs: meanwhile, the
                        found = beside(table.lookup, c_ids)  # ids are looked up (read-only)
                        if not self._add_prepared:  # and the index readied, once a handle
                            self._add_prepared = True
                            beside(self._index.prepare_add)
                        c_vectors = self._vectors_for(c_ids, c_texts, None)
                        old = found.result()
                    else:
                        old = table.lookup(c_ids)  # one vectorised look-up per chunk
                    if old.max(initial=-1) >= 0:
                        if not upsert:
                            doc_id = c_ids[int(np.flatnonzero(old >= 0)[0])]
                            raise DuplicateIdError(
                                f"id {doc_id!r} already exists; use upsert() to replace it or "
                                "delete() it first."
                            )
                        replaced.extend(old[old >= 0].tolist())
                    if c_vectors is None:  # an upsert reuses unchanged texts' vectors
                        c_vectors = self._vectors_for(c_ids, c_texts, table)
                    c_vectors = np.ascontiguousarray(c_vectors, dtype="<f4")  # as stored
                    held.append((c_ids, c_texts, c_meta, c_vectors, c_dicts))
                    if sum(len(h[0]) for h in held) >= VECTOR_CHUNK:
                        written.append(_write_held(self.path, held))
                    fresh_bytes += c_vectors.nbytes
                    if fresh is not None and fresh_bytes <= FRESH_INDEX_BYTES:
                        fresh.append(c_vectors)
                    else:  # a large write: the index reads its rows back
                        fresh = None
                    out_ids.extend(c_ids)
                    bar.update(len(c_ids))
                if held:
                    written.append(_write_held(self.path, held))
                if not out_ids:
                    return []
                if replaced:
                    tombs.append(store.write_tombstones(self.path, replaced))
                segments = [open_segment(self.path, r, self.dim, verified=True) for r in written]
                trained, saved = self._first_training(table, segments)
                new_rows = None  # the rows as written, and their index codes (encoded
                codes = None  # beside the commit)
                if trained is None and fresh:
                    new_rows = fresh[0] if len(fresh) == 1 else np.concatenate(fresh)
                    codes = beside(self._index.codes_ahead, new_rows)
                manifest = self._manifest.replace(
                    segments=self._manifest.segments + tuple(written),
                    tombstones=self._manifest.tombstones + tuple(tombs),
                    index=self._manifest.index
                    if trained is None
                    else IndexSection(self._manifest.index.spec, saved),
                )
                manifest = self._commit(
                    manifest,
                    "upsert" if upsert else "add",
                    added=len(out_ids),
                    deleted=len(replaced),
                    live=table.count + len(out_ids) - len(replaced),
                )
            except BaseException as exc:
                files = [f for r in written for f in r.files()] + [t.file for t in tombs]
                self._discard(files + ([saved.file] if saved else []), exc)
                raise
            finally:
                bar.close()
            with self._rw.write():
                table.extend(segments)
                table.kill(replaced)
                self._manifest = manifest
                if trained is None:
                    self._index_add_committed(new_rows, codes)
                else:
                    self._index, self._index_file_ok = trained, True
            if trained is None:
                self._maybe_save_index(force=self._maintain_index())
            self._merge_small_segments()
            self._keep_keywords()
            return out_ids

    def _merge_small_segments(self) -> None:
        """Merge the newest small segments into one where :func:`merge_plan` says so: many
        small writes (text ingest commits a segment per batch) end in few segments.

        Runs in the writer after a write has committed, as a commit of its own (``merge``
        in the history). Only a trailing run is merged, deleted rows included, so every
        row keeps its position: the index, the tombstones and the rows' order are those of
        the version before, and readers that opened it keep reading its files (kept while a
        past version names them, as after compaction). A merge that fails is dropped with a
        warning: the write it follows has committed and stays so.
        """
        table = self._table
        sizes = [seg.rows for seg in table.segments]
        first = merge_plan(sizes, COMPACT_KEEP_ROWS, MERGE_FAN_IN, MERGE_ROWS)
        if first is None:
            return
        pos = np.arange(table.segment_starts()[first], table.rows)
        written: list[str] = []
        try:
            ref = self._rewritten(pos)
            written = ref.files()
            merged = open_segment(self.path, ref, self.dim, verified=True)
            segments = self._manifest.segments[:first] + (ref,)
            manifest = self._commit(self._manifest.replace(segments=segments), "merge")
        except Exception as exc:  # noqa: BLE001 - the write before has committed: keep it
            self._discard(written, exc)
            log.warning("could not merge %d small segments (%s)", len(sizes) - first, exc)
            return
        except BaseException as exc:  # Ctrl-C: the write has committed, the merge has not
            self._discard(written, exc)
            raise
        fresh = Table(self.dim)
        fresh.extend(list(table.segments[:first]) + [merged])
        fresh.kill(np.flatnonzero(~table.live[: table.rows]))
        with self._rw.write():
            self._manifest, self._table = manifest, fresh
        log.info("merged %d segments (%d rows) into one", len(sizes) - first, pos.size)

    def _first_training(
        self, table: Table, written: list[Segment]
    ) -> tuple[VectorIndex | None, IndexFileRef | None]:
        """When the rows of ``table`` and ``written`` call for the index's first training
        (:meth:`VectorIndex.first_training_due`): the index trained over them and its saved
        file, both made before the write commits; else ``(None, None)``.

        Until then no trained index is on disk, and a reader that opened the new rows
        before the writer had saved one trained its own (readers never wait on the
        writer). Trained first, the rows and their index arrive in one commit, as
        compaction and reindex do. Later retrains still happen after the commit: readers
        then load the previous saved index and add the new rows to it, which is cheap.
        """
        rows = table.rows + sum(seg.rows for seg in written)
        if not self._index.first_training_due(rows):
            return None, None
        staged = Table(self.dim)
        staged.extend(table.segments + written)
        index = build_or_exact(self._manifest.index.spec, self.dim, staged.vectors_view())
        if not index.worth_saving:  # it could not be trained: exact, as before
            return index, None
        return index, self._index_file(index, self._manifest.epoch)

    def _maintain_index(self) -> bool:
        """Retrain or re-tune the index when its policy says so, without blocking readers.

        Returns whether the index was replaced. Runs in the writer (under its mutex, so the
        stored vectors cannot change meanwhile) but outside the read/write lock: searches keep
        using the current index until the rebuilt one is swapped in, and the swap is the only
        moment they wait for.
        """
        try:
            fresh = self._index.maintain(self._table.vectors_view())
        except Exception as exc:  # noqa: BLE001 - the write has committed: never fail it
            fresh = exact_fallback(self._index.spec, self.dim, self._table.vectors_view(), exc)
        if fresh is None:
            return False
        with self._rw.write():
            self._index = fresh
        return True  # a new index: save it whatever the saved one holds

    def _index_add_committed(
        self, new_rows: np.ndarray | None = None, codes: Future[Ahead | None] | None = None
    ) -> None:
        """Index rows that a commit just made live (caller holds the write lock).

        ``new_rows``: the vectors of the rows this write appended, as written. When the
        index held every row before them, it takes them from memory instead of reading them
        back from the segments just written (a copy of each row out of the page cache: 2.4 s
        of a 55 s build of 1M rows in 50k-row adds). ``codes``: their index codes being
        encoded beside the commit (:meth:`VectorIndex.codes_ahead`).

        The commit has happened, so a failure here must not fail the write: the index is
        derived data, and exact search stands in for one that cannot take the rows.
        """
        vectors = self._table.vectors_view()
        try:
            # A saved index not read yet counts the rows it will hold once read (see
            # VectorIndex.defer): add() reads it, or encodes the rows without it.
            start = self._index.ntotal
            ahead = None
            if new_rows is None or start + len(new_rows) != vectors.shape[0]:
                new_rows = vectors[start:]
            elif codes is not None:
                with contextlib.suppress(Exception):  # then encoded by the add itself
                    ahead = codes.result()
            self._index.add(new_rows, vectors, ahead)
        except Exception as exc:  # noqa: BLE001 - FAISS raises RuntimeError with C++ text
            self._index = exact_fallback(self._index.spec, self.dim, vectors, exc)

    def _vectors_for(self, ids: list[str], texts: list[str], table: Table | None) -> np.ndarray:
        """Embed ``texts``, reusing stored vectors of upserted documents whose text is unchanged."""
        reuse: dict[int, int] = {}
        if table is not None:
            found = table.lookup(ids)
            have = np.flatnonzero(found >= 0)
            stored_texts = table.texts_at(found[have])
            for j, old_text in zip(have.tolist(), stored_texts):
                if old_text == texts[j]:
                    reuse[j] = int(found[j])
        todo = [j for j in range(len(texts)) if j not in reuse]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if todo:
            out[todo] = self.encoder.encode([texts[j] for j in todo])
        if reuse and table is not None:
            out[list(reuse)] = table.take(np.array(list(reuse.values()), dtype=np.int64))
        return out

    def _delete(self, ids: list[str], missing_ok: bool) -> int:
        """Tombstone ``ids`` (checked, unique); see :meth:`CollectionBase.delete`."""
        with self._write_mutex:
            self._begin_write()
            positions, missing = self._table.positions(ids)
            if missing and not missing_ok:
                shown = ", ".join(repr(m) for m in missing[:5])
                raise DocumentNotFoundError(
                    f"{len(missing)} id(s) not found ({shown}{', …' if len(missing) > 5 else ''}); "
                    "nothing was deleted. Pass missing_ok=True to ignore unknown ids."
                )
            if not positions:
                return 0
            ref = store.write_tombstones(self.path, positions)
            manifest = self._manifest.replace(tombstones=self._manifest.tombstones + (ref,))
            try:
                manifest = self._commit(
                    manifest,
                    "delete",
                    deleted=len(positions),
                    live=self._table.count - len(positions),
                )
            except BaseException as exc:
                self._discard([ref.file], exc)
                raise
            with self._rw.write():
                self._table.kill(positions)
                self._manifest = manifest
            return len(positions)

    def _discard(self, files: list[str], exc: BaseException) -> None:
        """Remove the files of a write that failed, unless its manifest did reach the disk.

        When the manifest was renamed into place but the directory sync failed
        (:class:`CommitUncertainError`), those files are named by the manifest on disk and
        removing them would destroy a collection. The handle then gives up its writer lock,
        so its next write starts from what is on disk.
        """
        if isinstance(exc, CommitUncertainError):
            self._writer.release()
            self._stamp = (0, 0, 0)  # the next refresh() reloads from disk
            return
        for name in files:
            with contextlib.suppress(OSError):
                durable.unlink(self.path, name)

    def _commit(
        self,
        manifest: Manifest,
        op: str = "unknown",
        *,
        added: int = 0,
        deleted: int = 0,
        live: int | None = None,
    ) -> Manifest:
        """Commit ``manifest``, recording it in the version history as made by ``op``."""
        live = self._table.count if live is None else live
        hook = versions.record_hook(self.path, op, added, deleted, live)
        committed = store.write_manifest(self.path, manifest, hook)
        self._stamp = self._manifest_stamp()
        with contextlib.suppress(OSError, EmbedSearchError):
            versions.expire_quick(self.path, committed.generation)
        return committed

    def compact(self, min_deleted_share: float = COMPACT_MIN_DELETED_SHARE) -> dict[str, int]:
        """Reclaim deleted rows: rewrite the live rows of segments that lost at least
        ``min_deleted_share`` of their rows (and of small segments, merged with them) into
        fresh segments, and renumber or refill the index to match (trained again only where
        :meth:`VectorIndex.refilled` says so).

        A segment that lost fewer keeps its file, and its deleted rows stay hidden by a
        tombstone, as before compacting: deleting 1 % of a large collection at random does
        not rewrite the other 99 %. ``min_deleted_share=0`` rewrites every segment that
        lost a row, so no deleted row is left in the current version's files.

        The old segments stay on disk while a kept past version names them (retention:
        untagged versions are kept ``keep_days``, 7 by default), so right after compacting
        the files may take *more* room than before; ``bytes_past_versions`` says how much of
        ``bytes_after`` that is, and ``set_retention(0)`` frees it now.

        Returns:
            ``{"rows_before", "rows_after", "bytes_before", "bytes_after",
            "bytes_past_versions", "rows_rewritten", "deleted_kept"}``: ``rows_rewritten``
            counts the live rows copied into new segments; ``deleted_kept`` the deleted
            rows left in kept segments (counted in ``rows_after``, hidden by tombstones).
        """
        share = check_share(min_deleted_share, "min_deleted_share")
        with self._write_mutex:
            self._begin_write()
            table = self._table
            before, old_rows = self.disk_bytes(), table.rows
            live = table.live[: table.rows]
            sizes = [seg.rows for seg in table.segments]
            plan = compaction_plan(sizes, live, COMPACT_KEEP_ROWS, share)
            kept = np.zeros(table.rows, dtype=bool)  # rows of the segments kept as they are
            starts = table.segment_starts()
            for i in (keep for keep, _ in plan if keep is not None):
                kept[starts[i] : starts[i] + sizes[i]] = True
            removed = np.flatnonzero(~(kept | live))  # sorted: the rows compaction drops
            kept_dead = np.flatnonzero(kept & ~live)
            kept_dead -= np.searchsorted(removed, kept_dead)  # in the new numbering
            if not removed.size and all(keep is not None for keep, _ in plan):
                # no row moves: at most the tombstone files become one
                self._merge_tombstones(kept_dead)
                return self._compact_stats(old_rows, before, 0, int(kept_dead.size))
            refs: list[SegmentRef] = []  # the new manifest's segments, in row order
            segments: list[Segment] = []
            written: list[SegmentRef] = []  # of those, the files this compaction writes
            epoch = uuid.uuid4().hex
            index, saved, tombs = None, None, ()
            try:
                for keep, pos in plan:
                    if keep is not None:  # the same file, not rewritten
                        refs.append(self._manifest.segments[keep])
                        segments.append(table.segments[keep])
                        continue
                    for lo in range(0, len(pos), COMPACT_SEGMENT_ROWS):
                        rows = pos[lo : lo + COMPACT_SEGMENT_ROWS]
                        ref = self._rewritten(rows)
                        written.append(ref)
                        refs.append(ref)
                        segments.append(open_segment(self.path, ref, self.dim, verified=True))
                if kept_dead.size:
                    tombs = (store.write_tombstones(self.path, kept_dead),)
                # The index is filled and saved before the commit, so that no reader ever
                # opens the compacted rows without it (a reader builds a missing one itself).
                fresh = Table(self.dim)
                fresh.extend(segments)
                fresh.kill(kept_dead)
                try:  # the same codes renumbered; else the trained index filled again
                    index = self._index.renumbered(removed) or self._index.refilled(
                        fresh.vectors_view()
                    )
                except Exception as exc:  # noqa: BLE001 - derived data: built afresh below
                    log.warning("could not refill the index (%s); building a new one", exc)
                if index is not None:
                    saved = self._index_file(index, epoch)
                manifest = self._manifest.replace(
                    segments=refs,
                    tombstones=tombs,
                    epoch=epoch,
                    index=IndexSection(self._manifest.index.spec, saved),
                )
                manifest = self._commit(manifest, "compact")
            except BaseException as exc:
                files = [f for r in written for f in r.files()]
                files += [t.file for t in tombs] + ([saved.file] if saved else [])
                self._discard(files, exc)
                raise
            if index is None:  # an index of their own for these rows (see refilled)
                index = self._load_index(manifest, fresh)
            with self._rw.write():
                self._manifest, self._table, self._index = manifest, fresh, index
            if saved is None:
                self._maybe_save_index(force=True)
            else:
                self._index_file_ok = True
            versions.cleanup(self.path, self._manifest)
            self._keep_keywords()
            rewritten = sum(ref.rows for ref in written)
            return self._compact_stats(old_rows, before, rewritten, int(kept_dead.size))

    def _rewritten(self, positions: np.ndarray) -> SegmentRef:
        """A new segment (not yet committed) of the stored rows at ``positions``, ascending:
        their ids, texts, metadata, vectors and typed columns as stored (compaction, merges)."""
        table = self._table
        return _write_segment(
            self.path,
            *table.hit_strings(positions),  # ids, texts, metadata JSON
            table.take(positions),
            columns=table.typed_columns_at(positions),
        )

    def _merge_tombstones(self, positions: np.ndarray) -> None:
        """Compaction that moves no row: the deletes, kept, in one tombstone file instead of
        one a delete (each is read on open). Nothing is committed when there is one."""
        if len(self._manifest.tombstones) < 2:
            return
        tomb = store.write_tombstones(self.path, positions)
        try:
            manifest = self._commit(self._manifest.replace(tombstones=(tomb,)), "compact")
        except BaseException as exc:
            self._discard([tomb.file], exc)
            raise
        with self._rw.write():
            self._manifest = manifest
        versions.cleanup(self.path, self._manifest)

    def _compact_stats(
        self, rows_before: int, bytes_before: int, rewritten: int, deleted_kept: int
    ) -> dict[str, int]:
        return {
            "rows_before": rows_before,
            "rows_after": self._table.rows,
            "bytes_before": bytes_before,
            "bytes_after": self.disk_bytes(),
            "bytes_past_versions": self._past_version_bytes(),
            "rows_rewritten": rewritten,
            "deleted_kept": deleted_kept,
        }

    def _past_version_bytes(self) -> int:
        """Bytes of the files on disk the current version does not name: after a cleanup,
        those of past versions that retention keeps (until they expire or are untagged)."""
        return sum(
            os.lstat(self.path / rel).st_size for rel in store.leftovers(self.path, self._manifest)
        )

    def reindex(self, spec: str) -> None:
        """Change the index spec (``auto`` or a FAISS factory string) without re-encoding."""
        spec = validate_spec(spec, self.dim)
        with self._write_mutex:
            self._begin_write()
            index = VectorIndex(spec, self.dim)
            try:
                index.build(self._table.vectors_view())
            except Exception as exc:  # nothing committed yet: refuse the spec cleanly
                first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                raise IndexSpecError(
                    f"index {spec!r} cannot be built over this collection's "
                    f"{self._table.rows} rows ({first}); nothing was changed. Choose another "
                    "spec (e.g. 'auto')."
                ) from exc
            old = self._manifest.index.file
            # saved before the commit, so that no reader opens the new spec without its index
            # (a reader builds a missing one itself: a full training at 1M rows)
            saved = self._index_file(index, self._manifest.epoch) if index.worth_saving else None
            manifest = self._manifest.replace(index=IndexSection(spec, saved))
            try:
                manifest = self._commit(manifest, "reindex")
            except BaseException as exc:
                self._discard([saved.file] if saved else [], exc)
                raise
            with self._rw.write():
                self._index, self._manifest = index, manifest
            self._index_file_ok = True
            if old:  # the previous index file is no longer named: not left behind
                with contextlib.suppress(OSError, EmbedSearchError):
                    versions.cleanup(self.path, self._manifest)

    def _maybe_save_index(self, force: bool = False) -> None:
        """Persist a trained index when it is missing on disk or far behind the segments.

        Runs after a commit, so it must not fail the write that committed: the index is
        derived data, and one that cannot be saved (disk full...) is rebuilt on the next open.
        """
        try:
            self._save_index(force)
        except Exception as exc:
            self._index_file_ok = False
            log.warning(
                "could not save the index of %s (%s); the data is committed and the index will "
                "be rebuilt from the segments when the collection is next opened",
                self.name,
                exc,
            )

    def _saved_rows(self) -> int:
        section = self._manifest.index
        return section.rows if section.file and section.file.epoch == self._manifest.epoch else 0

    def _save_index(self, force: bool) -> None:
        """Save the index when it is missing on disk or far behind (``force``: when behind at
        all): the rows appended since it was saved as a tail file of their codes where the
        index kept them (see :meth:`_tail_file`), else the whole index."""
        index = self._index
        if not index.worth_saving:
            return
        section = self._manifest.index
        saved = section.file
        current = saved is not None and saved.epoch == self._manifest.epoch
        behind = index.ntotal - section.rows
        if (
            not force
            and self._index_file_ok
            and current
            and behind < max(10_000, index.ntotal // 10)
        ):
            return
        tail = self._tail_file(index, section) if current and self._index_file_ok else None
        if tail is not None and saved is not None:
            # The knobs may have been re-tuned since the file was written: they are the
            # manifest's record of the file, not its bytes.
            main = dataclasses.replace(saved, info={**index.info.to_json(), "rows": saved.rows})
            new = IndexSection(section.spec, main, (*section.tail, tail))
            written = tail.file
        else:
            ref = self._index_file(index, self._manifest.epoch)
            new, written = IndexSection(section.spec, ref), ref.file
        try:
            self._manifest = self._commit(self._manifest.replace(index=new), "index")
        except BaseException as exc:
            self._discard([written], exc)
            raise
        self._index_file_ok = True
        index.saved_through(new.rows)
        if saved and tail is None:  # the old files go unless a kept version still names them
            versions.cleanup(self.path, self._manifest)

    def _tail_file(self, index: VectorIndex, section: IndexSection) -> TailRef | None:
        """Write the codes of the rows ``index`` holds past ``section``'s as a new tail file;
        None where the index is to be saved whole instead: it kept no codes of those rows
        (see :meth:`VectorIndex.codes_since`), or the tails would pass :data:`MAX_TAILS`
        files or :data:`TAIL_SHARE` of the saved file's rows (a reader applies them on
        load: a whole file now and then keeps that bounded, its cost amortised over the
        rows added meanwhile)."""
        assert section.file is not None
        start = section.rows
        if len(section.tail) >= MAX_TAILS or index.ntotal <= start:
            return None
        codes = index.codes_since(start)  # its rows, not ntotal's: a search may be reading
        if codes is None:  # the index meanwhile (VectorIndex.load_deferred)
            return None
        new_rows = codes.shape[0]
        tail_rows = start - section.file.rows + new_rows
        if new_rows <= 0 or tail_rows > max(TAIL_MIN_ROWS, int(section.file.rows * TAIL_SHARE)):
            return None
        name = f"index-{uuid.uuid4().hex}.tail"
        size, digest, crc = store.write_file_checksums(
            self.path, name, lambda out: index.write_codes(out, codes)
        )
        return TailRef(name, new_rows, digest, size, crc)

    def _index_file(self, index: VectorIndex, epoch: str) -> IndexFileRef:
        """Write ``index`` to a new durable file for the rows of ``epoch``; its record."""
        name = f"index-{uuid.uuid4().hex}.faiss"
        size, digest, crc = store.write_file_checksums(self.path, name, index.save)
        trained = index.trained_blob()  # what save wrote after the index (None: nothing)
        return IndexFileRef(
            name,
            index.ntotal,
            digest,
            size,
            epoch=epoch,
            info=index.info.to_json(),
            crc32=crc,
            trained=None if trained is None else store.part_checksum(trained),
        )

    # ------------------------------------------------------------------ reads
    def _get(self, ids: list[str], include_vectors: bool) -> list[Document]:
        self.refresh()
        with self._rw.read():
            table = self._table
            positions, missing = table.positions(ids)
            if missing:
                raise DocumentNotFoundError(
                    f"{len(missing)} id(s) not found: {', '.join(repr(m) for m in missing[:5])}."
                )
            return _documents(table, positions, include_vectors)

    def ids(self) -> list[str]:
        """Ids of all live documents, in storage order."""
        self.refresh()
        with self._rw.read():
            return self._table.ids_at(self._table.live_positions())

    def vectors(self, ids: Sequence[str] | None = None) -> np.ndarray:
        """Stored unit vectors: of ``ids`` (in that order), or of all live documents (``ids()`` order)."""
        self.refresh()
        with self._rw.read():
            table = self._table
            if ids is None:
                return table.take(table.live_positions())
            positions, missing = table.positions(list(ids))
            if missing:
                raise DocumentNotFoundError(
                    f"id(s) not found: {', '.join(repr(m) for m in missing[:5])}."
                )
            return table.take(np.asarray(positions, dtype=np.int64))

    @contextlib.contextmanager
    def selection(self, where: dict[str, Any] | None = None) -> Iterator[Selection]:
        """:meth:`CollectionBase.selection`: the live (and matching) positions of one
        snapshot, their rows and ids read only when asked, under the read lock."""
        self.refresh()
        with self._rw.read():
            table = self._table
            mask = self._allowed(table, where, [])
            view = RowsView(table, np.flatnonzero(table.live if mask is None else mask))
            yield Selection(view, view.ids, view.texts)

    def select(self, where: dict[str, Any] | None = None) -> tuple[list[str], np.ndarray]:
        """:meth:`CollectionBase.select`, with ``where`` evaluated over the typed metadata
        columns in one snapshot (no Python object per row)."""
        if where is None:
            return super().select()
        with self.selection(where) as chosen:  # the same positions, read whole
            return chosen.ids(np.arange(chosen.count)), np.asarray(chosen.vectors)

    def _search_vectors(self, request: SearchRequest) -> list[list[Hit]]:
        """One FAISS call (or an exact scan) for the batch, under ``where`` and ``exclude``."""
        self.refresh()
        with self._rw.read():
            table, scores, pos = self._positions(request)
            return _hits(table, scores, pos, request.texts)

    def _positions(self, request: SearchRequest) -> tuple[Table, np.ndarray, np.ndarray]:
        """The table searched and each query's (scores, positions); under the read lock."""
        k, qvecs, excluded, where = request.k, request.vectors, request.exclude, request.where
        opts = SearchOptions(
            nprobe=request.nprobe, ef_search=request.ef_search, rerank=request.rerank
        )
        table = self._table
        mask = self._allowed(table, where, excluded)
        vectors = table.vectors_view()
        if request.exact:
            scores, pos = exact_search(vectors, qvecs, k, mask)
        else:
            count = table.count if mask is table.live else None  # known: not counted
            scores, pos = self._index.search(vectors, qvecs, k, mask, opts, matching=count)
        return table, scores, pos

    def _rank_ids(
        self, query: Query, k: int, *, where: dict[str, Any] | None = None
    ) -> tuple[list[tuple[str, float]], Callable[[list[str]], list[Document]]]:
        """:meth:`CollectionBase._rank_ids`, whose reader reads by the positions ranked while
        the table is the one searched (no look-up by id: a look-up binary-searches every
        segment's mapped id index, which left ~12 bytes a row of the maps in RSS at 1M
        rows), and by id for anything else, all from the handle's table under one lock."""
        request = self._ids_request(query, k, where)
        self.refresh()
        with self._rw.read():
            table, scores, pos = self._positions(request)
            keep = pos[0] >= 0
            rows, ranked_scores = pos[0][keep], scores[0][keep]
            ids = table.ids_at(rows)
        at = dict(zip(ids, rows.tolist()))

        def read(wanted: list[str]) -> list[Document]:
            with self._rw.read():
                now = self._table  # rows keep their positions until a compaction replaces it
                pos = [at.get(d, -1) if now is table else -1 for d in wanted]
                pos = [p if p >= 0 and now.live[p] else -1 for p in pos]
                unknown = [i for i, p in enumerate(pos) if p < 0]
                if unknown:  # by id (live positions; -1 for ids deleted since)
                    found = now.lookup([wanted[i] for i in unknown]).tolist()
                    for i, p in zip(unknown, found):
                        pos[i] = p
                return _documents(now, [p for p in pos if p >= 0])

        return [(d, float(s)) for d, s in zip(ids, ranked_scores.tolist())], read

    @staticmethod
    def _allowed(
        table: Table, where: dict[str, Any] | str | None, excluded: list[str]
    ) -> np.ndarray | None:
        """Mask of the positions a search may return (``None``: all of them)."""
        mask = table.live if table.has_tombstones else None
        if where is not None:
            mask = column_mask(where, table.rows, table.metadata_columns, table.metadata_rows)
            np.logical_and(mask, table.live, out=mask)  # the mask is fresh: no third array
        if excluded:
            positions, _ = table.positions(excluded)
            if positions:
                mask = (table.live if mask is None else mask).copy()
                mask[positions] = False
        return mask

    def explain(
        self,
        k: int = 10,
        *,
        where: dict[str, Any] | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        rerank: int | None = None,
    ) -> dict[str, Any]:
        """How :meth:`search` with these arguments would run, without running it.

        Returns the plan chosen from the numbers the engine sees: ``plan`` (``exact``,
        ``exact-filtered``: exact search over the rows the filter matches, ``approximate``,
        or ``approximate-filtered``: the index with the filter inside FAISS and raised
        probes), ``rows``, ``matching`` and ``selectivity`` of the filter, the knobs used
        (``nprobe``/``ef_search``, ``rerank``), and ``filter_ms``, the time the filter took.

        Example:
            >>> col.explain(where={"year": 2015})["plan"]
            'exact-filtered'
        """
        self._ensure_open()
        k = check_k(k)
        if where is not None:
            compile_filter(where)
        self.refresh()
        with self._rw.read():
            table = self._table
            started = time.perf_counter()
            mask = self._allowed(table, where, [])
            took = time.perf_counter() - started
            matching = None if mask is None else int(np.count_nonzero(mask))
            opts = SearchOptions(nprobe=nprobe, ef_search=ef_search, rerank=rerank)
            plan = self._index.choose(table.vectors_view(), mask, matching, k, opts)[0]
            out = plan.to_json()
        out["filter_ms"] = round(took * 1000, 3)
        return out

    # ------------------------------------------------------------------ status
    def disk_bytes(self) -> int:
        """Bytes the collection's files take on disk."""
        return sum(p.lstat().st_size for p in self.path.rglob("*") if not p.is_symlink())

    def info(self) -> dict[str, Any]:
        """Counts, model, index kind and measured recall, size on disk, and whether keyword
        postings are kept (``keywords``: ``kept``, ``files``, ``bytes``)."""
        self.refresh()
        m = self._manifest
        table = self._table
        return {
            "name": self.name,
            "path": str(self.path),
            "count": table.count,
            "rows": table.rows,
            "deleted": table.rows - table.count,
            "segments": len(m.segments),
            "format_version": m.format_version,
            "legacy_segments": len(m.legacy_segments),
            "model": m.model,
            "index": self._index.info.to_json(),
            "disk_bytes": self.disk_bytes(),
            "created": m.created,
            "updated": m.updated,
            "generation": m.generation,
            "version": m.generation,
            "read_only": self.pinned_version is not None,
            "keywords": self._keywords_info(),
        }

    def close(self) -> None:
        """Save a trained index if it is behind, and release the write lock (idempotent)."""
        if self._closed:
            return
        with self._write_mutex:
            try:
                if self._writer.held:  # leave no catching up to readers (see _save_index)
                    self._maybe_save_index(force=self._index.ntotal != self._saved_rows())
            finally:
                self._writer.release()
                self._closed = True
                self._close_keywords()


def _unfinished_creation(path: Path) -> bool:
    """True for an empty directory, or what a creation killed before its first manifest leaves."""
    for entry in path.iterdir():
        if entry.name == store.LOCK_FILE or entry.name.endswith(".tmp"):
            continue
        if entry.name == store.SEGMENTS_DIR and entry.is_dir() and not any(entry.iterdir()):
            continue
        return False
    return True


def _hits(table: Table, scores: np.ndarray, pos: np.ndarray, texts: bool = True) -> list[list[Hit]]:
    """Hydrate search results: one vectorised read of ids, texts and metadata for all hits
    (``texts`` False: of ids alone; text ``""`` and metadata ``{}``)."""
    flat = pos[pos >= 0]
    if texts:
        ids, words, metas = table.hit_strings(flat)
    else:
        ids = table.ids_at(flat)
        words, metas = [""] * len(ids), [None] * len(ids)
    out: list[list[Hit]] = []
    i = 0
    for srow, prow in zip(scores, pos):
        row = []
        for s, p in zip(srow.tolist(), prow.tolist()):
            if p >= 0:
                row.append(Hit(ids[i], float(s), words[i], parse_metadata(metas[i]) or {}))
                i += 1
        out.append(row)
    return out


def _documents(
    table: Table, positions: Sequence[int], include_vectors: bool = False
) -> list[Document]:
    """The stored documents at ``positions`` of ``table`` (under its read lock), in order."""
    if not len(positions):
        return []
    vecs = table.take(positions) if include_vectors else None
    ids, texts, metas = table.hit_strings(positions)
    return [
        Document(doc_id, text, parse_metadata(meta) or {}, vecs[i] if vecs is not None else None)
        for i, (doc_id, text, meta) in enumerate(zip(ids, texts, metas))
    ]


# ----------------------------------------------------------------------------- open
def _path_error(exc: OSError, path: Path) -> InvalidInputError:
    return InvalidInputError(
        f"Cannot use {str(path)[:200]!r} as a collection path ({exc.strerror}); choose a "
        "shorter or simpler path."
    )


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError as exc:  # ENAMETOOLONG, ELOOP...: the path itself is unusable
        raise _path_error(exc, path) from None


def _stat_manifest(path: Path) -> tuple[int, int, int] | None:
    """The manifest's (inode, mtime, size) stamp, or None if there is none."""
    try:
        st = (path / store.MANIFEST).stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise _path_error(exc, path) from None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def open(  # noqa: A001 - the public name is embedsearch.open, by contract
    name_or_path: str | os.PathLike[str],
    *,
    model: str | None = None,
    index: str = "auto",
    create: bool = True,
    backend: str | None = None,
    version: int | str | None = None,
) -> Collection:
    """Open (or create) a collection.

    Args:
        name_or_path: a bare name (``indexes/<name>/`` under ``EMBEDSEARCH_HOME``) or a path.
        model: sentence-transformers model (path or hub name). New collections default to
            ``EMBEDSEARCH_MODEL`` or all-MiniLM-L6-v2; an existing collection must be opened
            with the model it was built with (or ``None``).
        index: ``"auto"`` or a FAISS factory string (``"HNSW32"``, ``"IVF1024,SQ8"``…). For an
            existing collection, a spec other than ``auto`` that differs from the stored one
            re-indexes from the stored vectors (no re-encoding).
        create: create the collection if it does not exist.
        backend: encoder backend (``torch``, ``onnx``, ``onnx-int8``); default
            ``EMBEDSEARCH_BACKEND`` or what the collection recorded.
        version: open a read-only view of a kept past version: its number (see
            :meth:`Collection.versions`; negative counts back from the newest) or a tag.
            Search, filters, RAG retrieval and the latent methods answer as the collection
            did then; writes raise :class:`ReadOnlyError`.

    Raises:
        CollectionNotFoundError, NotACollectionError, ModelMismatchError, CorruptionError,
        IndexSpecError.
    """
    from .encoder import _DEFAULT_ALIASES, DEFAULT_MODEL

    path = resolve_path(name_or_path)
    want = DEFAULT_MODEL if model in _DEFAULT_ALIASES else model
    stamp = _stat_manifest(path)
    if stamp is not None:
        manifest = store.read_manifest(path)
        stored = manifest.model_name
        if want is not None and want != stored:
            raise ModelMismatchError(
                f"Collection {path.name!r} was built with model {stored!r}, not {want!r}; open it "
                "with that model (or model=None), or build a new collection for the other model."
            )
        if version is not None:
            past = versions.manifest_at(path, version, manifest)
            gen = past.generation
            return Collection(path, past, None, backend, stamp=(0, 0, 0), version=gen)
        col = Collection(path, manifest, None, backend, stamp=stamp)
        if index != "auto" and validate_spec(index, col.dim) != manifest.index.spec:
            col.reindex(index)
            col._writer.release()
        return col
    if not create or version is not None:
        raise CollectionNotFoundError(
            f"No collection at {path}. Create it with embedsearch.open({str(name_or_path)!r}) "
            "(create=True) or `embedsearch index`, or check EMBEDSEARCH_HOME."
        )
    if _exists(path) and (not path.is_dir() or not _unfinished_creation(path)):
        raise NotACollectionError(
            f"{path} exists and is not an embedsearch collection; choose another name or path."
        )
    enc = get_encoder(want, backend)
    spec = validate_spec(index, enc.dim)
    try:
        store.ensure_layout(path)
    except OSError as exc:
        store.raise_storage_error(exc, path / store.SEGMENTS_DIR)
    lock = store.WriterLock(path)
    lock.acquire()
    try:
        if not (path / store.MANIFEST).exists():  # another process may have just created it
            hook = versions.record_hook(path, "create", live=0)
            store.write_manifest(path, store.new_manifest(enc.describe(), spec), hook)
        manifest = store.read_manifest(path)
    finally:
        lock.release()
    col = Collection(path, manifest, None, backend)
    col._encoder = enc if enc.dim == col.dim else None
    return col


__all__ = [
    "Collection",
    "open",
    "home",
    "resolve_path",
    "validate_name",
    "check_k",
    "CorruptionError",
    "NotACollectionError",
]
