"""Keyword side of hybrid retrieval: BM25 over per-segment postings, kept with the collection.

Analysis (bm25s's, done here: a test holds the two equal): lower-casing, ``\\w\\w+``
tokens, English stop words removed, Snowball English stemming (PyStemmer). Scoring: Lucene
BM25 with ``k1`` / ``b`` (1.2 and 0.5, chosen on single and mixed corpora; see
docs/rag.md), or Robertson's or ATIRE's variant.

The index is built the way the collection is stored, so it holds at millions of documents:

* **Per segment, once.** Each segment's postings (:mod:`.postings`) are built once and saved
  under ``<collection>/derived/keywords/<analysis>/`` (``<analysis>``: a hash of the
  analysis settings and PyStemmer's version; ``k1``/``b`` are applied at query time, so they
  share the files): first by :meth:`BM25Store.prepare` (``prepare_keywords``, a document
  ingest) or the first keyword query, then by each writer for its new segments once the
  collection keeps them (``RetrievalMixin._keep_keywords``). Segments never change, so a
  commit costs the keyword index only its new segments' postings: adding 1,000 documents to
  a million re-reads none of the million (the index this replaces re-tokenised every live
  document after every commit).
* **Groups of settled segments share a file** (:mod:`.grouping`): a query reads one run a
  term per file, so about eight segments merged into one cut that fixed cost eightfold. A
  group is merged from its members' postings (no text is analysed again) by the query that
  first finds it complete, and replaces their own files.
* **Statistics at query time.** The live document count, their mean length and each query
  term's document frequency are summed over the segments when the query runs, deleted rows
  left out, so a score is the one a BM25 index built over exactly the live documents gives
  (tests hold it equal to bm25s's) and a deleted document can never be returned.
* **Filters** run on the collection's typed metadata columns, as ``search``'s do.
* **Scoring** (:mod:`.scoring`) skips the postings that cannot change the top ``k``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

import numpy as np

from .. import durable
from ..allocator import keep_large_blocks, trim_heap
from ..arrays import numbers
from ..concurrency import Ahead, cpus
from ..errors import CorruptionError, EmbedSearchError
from ..filters import column_mask
from ..idhash import hash_strings
from ..progress import progress_bar
from ..table import parse_metadata
from .grouping import Group
from .grouping import plan as group_plan
from .postings import SegmentPostings, unpack_runs
from .scoring import Run, Weighting, batches, top_k
from .tokens import TOKEN, token_rows

if TYPE_CHECKING:
    import pyarrow as pa

    from ..base import CollectionBase
    from ..segment import Segment
    from ..table import Table

log = logging.getLogger(__name__)

#: Where the postings live: ``<collection>/derived/keywords/<analysis digest>/<segment>.kw``.
DIRNAME = "keywords"
#: The folder of the index this layout replaced (one whole index per collection state).
_OLD_DIRNAME = "bm25"
_FILE_RE = re.compile(r"(seg-[0-9a-f]{32})\.kw")  # a segment's own postings
_GROUP_RE = re.compile(r"grp-[0-9a-f]{32}\.kw")  # a group's (see .grouping)
_DIGEST_RE = re.compile(r"[0-9a-f]{12}")
#: A temp file of postings older than this is a killed build's (a live one is written in
#: seconds): the next tidy removes it.
STALE_TMP_S = 3600.0
#: Scoring variants whose score is zero for a document without the term (bm25s's names).
METHODS = ("lucene", "robertson", "atire")


@dataclass(frozen=True)
class BM25Config:
    """BM25 analysis and scoring settings. A change of analysis (``stemmer``, ``stopwords``)
    builds new postings; ``k1``, ``b`` and ``method`` only change how they are scored."""

    k1: float = 1.2
    #: Length normalisation. 0.5, not Lucene's 0.75: a corpus alone barely notices (nDCG@10
    #: within 0.004 on SciFact, Cranfield and NFCorpus), but among a million passages of
    #: mixed lengths 0.75 sank long documents under short ones (at 0.5: BM25
    #: +0.054/+0.026/+0.067, hybrid +0.032/+0.014/+0.035; see docs/rag.md).
    b: float = 0.5
    method: str = "lucene"
    stemmer: str | None = "english"
    stopwords: str | None = "en"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")

    def digest(self) -> str:
        """A hash of what the postings depend on: the analysis and PyStemmer's version."""
        import Stemmer  # its own version(): importlib.metadata's look-up took 25 ms

        analysis = {k: v for k, v in asdict(self).items() if k in ("stemmer", "stopwords")}
        raw = json.dumps(
            {**analysis, "analysis": ANALYSIS, "pystemmer": Stemmer.version()}, sort_keys=True
        )
        return hashlib.sha256(raw.encode()).hexdigest()[:12]


def _bm25s() -> Any:
    """Import bm25s (for a stop-word list other than English's), undoing its module-level
    ``setLevel(DEBUG)`` (it floods CLI output).

    bm25s imports numba whenever it is installed (ranx brings it), to offer a backend this
    module never uses. That import is 0.4 s, so unless numba is already loaded it is hidden
    while bm25s loads (an ``ImportError`` there makes bm25s fall back to numpy) and unhidden
    right after, for anyone who imports numba later.
    """
    if "bm25s" not in sys.modules and "numba" not in sys.modules:
        sys.modules["numba"] = None  # type: ignore[assignment]  # `import numba` -> ImportError
        try:
            import bm25s
        finally:
            sys.modules.pop("numba", None)
    import bm25s

    quiet = logging.getLogger("bm25s")
    if quiet.level == logging.DEBUG:
        quiet.setLevel(logging.WARNING)
    return bm25s


#: Segments analysed at once by a first keyword query (each holds its tokens in memory:
#: for 50,000 abstracts ~100 MB at its peak, where the whole-array build first took ~230
#: and the one-text-at-a-time build 384).
MAX_BUILDERS = 4
#: The analysis below, numbered: a change builds new postings (see :meth:`BM25Config.digest`).
ANALYSIS = 1
#: bm25s's English stop words (its ``STOPWORDS_EN``, Lucene's list), kept here so that a
#: keyword query does not import bm25s: that import (scipy.sparse) was 0.19 s of the first
#: query of a process. A test holds the two lists equal.
STOPWORDS_EN = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "if",
        "in",
        "into",
        "is",
        "it",
        "no",
        "not",
        "of",
        "on",
        "or",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "will",
        "with",
    ]
)


@functools.lru_cache(maxsize=8)
def _stopwords(name: str | None) -> frozenset[str]:
    """The stop words bm25s's tokenizer drops for ``name`` (``en``: English)."""
    if not name:
        return frozenset()
    if name in ("en", "english"):
        return STOPWORDS_EN
    _bm25s()
    from bm25s.tokenization import _infer_stopwords

    return frozenset(_infer_stopwords(name))


def _stemmer(name: str | None) -> Any:
    if not name:
        return None
    import Stemmer

    return Stemmer.Stemmer(name)


def analyse(text: str, stop: frozenset[str], stemmer: Any) -> list[str]:
    """The terms of ``text`` as bm25s's ``tokenize`` gives them: lower-cased, split by its
    pattern, stop words dropped, stemmed (one call over the text's tokens)."""
    tokens = [t for t in TOKEN.findall(text.lower()) if t not in stop]
    return stemmer.stemWords(tokens) if stemmer is not None and tokens else tokens


def build_postings(
    texts: pa.Array | Sequence[str], source: str, config: BM25Config
) -> SegmentPostings:
    """Analyse ``texts`` (one segment's rows, in order; an Arrow string array or strings)
    into their postings.

    :func:`analyse`'s steps over whole arrays: the tokens of all rows at once
    (:func:`~embedsearch.rag.tokens.token_rows`), dictionary-encoded in Arrow, stop words
    and stems looked up once per distinct token. For 50,000 abstracts (2.4M tokens): 2.6 s
    when each text was split by the regular expression and each token was a Python string,
    1.1-1.5 s now. Positions are int32 and each array is let go once used: the build's
    arrays peak at ~100 MB (numpy 77, Arrow 21), half of what whole int64 passes held."""
    tokens, rows = token_rows(texts)
    encoded = tokens.dictionary_encode()  # one dictionary shared by every chunk
    del tokens
    chunks = encoded.chunks
    distinct = chunks[0].dictionary.to_pylist() if chunks else []
    idx = np.concatenate(
        [numbers(c.indices).astype(np.int32, copy=False) for c in chunks] or [np.zeros(0, np.int32)]
    )
    del encoded, chunks
    stop = _stopwords(config.stopwords)
    kept = [w for w in distinct if w not in stop]
    stemmer = _stemmer(config.stemmer)
    stems = stemmer.stemWords(kept) if stemmer is not None and kept else kept
    vocab = list(dict.fromkeys(stems))
    term_of = dict(zip(vocab, range(len(vocab))))
    to_term = np.full(len(distinct), -1, dtype=np.int32)
    to_term[[i for i, w in enumerate(distinct) if w not in stop]] = [term_of[x] for x in stems]
    terms = to_term[idx]
    del idx
    keep = terms >= 0
    terms, rows = terms[keep], rows[keep]
    del keep
    return SegmentPostings.from_pairs(source, terms, rows, vocab, len(texts))


@dataclass(frozen=True)
class _Lengths:
    """Row lengths of one table state (``key``), and its live rows and their total length."""

    key: tuple[int, ...]
    doclen: np.ndarray  # (rows,) float32, by position
    live: int
    total: float
    shortest: float  # the smallest length of a row holding any term (0 where none does)


class _Unit(NamedTuple):
    """Postings of consecutive rows from ``start``: a group's or one segment's (``name``:
    its file name or the segment's file)."""

    start: int
    postings: SegmentPostings
    name: str


class Found(NamedTuple):
    """Keyword matches ``(id, score)``, best first, and ``shown``: the text and metadata of
    the first few, by id (see :meth:`BM25Store.found`)."""

    ranked: list[tuple[str, float]]
    shown: dict[str, tuple[str, dict[str, Any]]]


def _file(seg: Segment) -> str:
    return seg.ref.file


def _stem(seg: Segment) -> str:
    """A segment's file name without its extension (``seg-<id>``)."""
    return Path(seg.ref.file).name.split(".")[0]


def _is_temp(name: str) -> bool:
    """Whether ``name`` is a temp file of a postings file being written."""
    return durable.is_temp_of(name, _FILE_RE) or durable.is_temp_of(name, _GROUP_RE)


class _Damaged(Exception):
    """A query found a segment's saved postings damaged (``error`` says how)."""

    def __init__(self, file: str, error: CorruptionError) -> None:
        super().__init__(file)
        self.file, self.error = file, error


class _Source(Protocol):
    """What the store needs of a collection handle (:class:`embedsearch.Collection`)."""

    path: Path

    def _reading(self) -> AbstractContextManager[Table]: ...


class BM25Store:
    """The keyword index of one collection handle: segments' postings, loaded or built on
    need and kept in memory while their segments are the handle's."""

    def __init__(self, col: CollectionBase, config: BM25Config | None = None) -> None:
        self.col = col
        self.config = config or BM25Config()
        self._lock = threading.Lock()
        self._postings: dict[str, SegmentPostings] = {}  # a segment's own, by its file
        self._groups: dict[str, SegmentPostings] = {}  # a group's, by its file name
        self._stem = _stemmer(self.config.stemmer)
        self._stem_lock = threading.Lock()
        self._digest = self.config.digest()  # names the postings folder
        self._dir = Path("derived", DIRNAME, self._digest)  # that folder, in the collection
        self._stats: _Lengths | None = None  # for one table state
        self._ahead: Ahead | None = None  # builds run ahead during _ensure
        #: Seconds the last query that built postings spent on it (None: none built here).
        self.last_build_s: float | None = None
        #: Segments whose postings this handle built (the rest were read from disk).
        self.built_segments = 0
        #: Groups whose postings this handle merged (:mod:`.grouping`).
        self.merged_groups = 0
        self._plans: tuple[Any, list[Group]] | None = None  # (segment list, its groups)

    @property
    def root(self) -> Path:
        """The folder of this store's postings files."""
        return Path(self.col.path) / self._dir

    def prepare(self) -> None:
        """Postings for every committed segment now, read where saved and built (and saved)
        where not: what a first keyword query would otherwise do before answering."""
        with self._lock:
            self._ensure()

    def close(self) -> None:
        """Close every postings file held (after any query in flight): the handle closes."""
        with self._lock:
            for held in [*self._postings.values(), *self._groups.values()]:
                held.close()
            self._postings.clear()
            self._groups.clear()
            self._stats = None

    def query_terms(self, query: str) -> Counter[str]:
        """The query's analysed terms, each with its number of occurrences."""
        with self._stem_lock:  # a stemmer object is not safe to share between threads
            terms = analyse(query, _stopwords(self.config.stopwords), self._stem)
        return Counter(terms)

    # ------------------------------------------------------------------ postings
    def _reading(self) -> AbstractContextManager[Table]:
        return cast(_Source, self.col)._reading()

    def _current_segments(self) -> list[Segment]:
        """Every segment of the current state."""
        with self._reading() as table:
            return table.segments

    def _plan(self, segments: Sequence[Segment]) -> list[Group]:
        """The groups of ``segments`` whose postings share a file (:mod:`.grouping`); the
        last list's kept (every query asks)."""
        key = [s.ref.file for s in segments]
        if self._plans is None or self._plans[0] != key:
            self._plans = (key, group_plan(segments, lambda seg: self._rel(seg) is not None))
        return self._plans[1]

    def _todo(self, segments: list[Segment]) -> tuple[list[Group], list[Segment]]:
        """What the state of ``segments`` lacks in memory: groups, and segments outside any
        group."""
        groups = self._plan(segments)
        grouped = {i for g in groups for i in range(g.first, g.end)}
        singles = [
            s
            for i, s in enumerate(segments)
            if i not in grouped and s.ref.file not in self._postings
        ]
        return [g for g in groups if g.name not in self._groups], singles

    def _ensure(self) -> None:
        """Postings for the current state: each group's file and each other segment's,
        read, or built (a group merged from its members') and saved.

        Built outside the collection's read lock (a first keyword query over a million rows
        analyses them all: writers must not wait on it); a commit meanwhile is taken on the
        next pass, or by the query itself under the lock."""
        segments = self._current_segments()
        groups, singles = self._todo(segments)
        if not groups and not singles:
            return
        started, built, merged = time.perf_counter(), 0, self.merged_groups
        todo = self._to_build(groups, singles, segments)
        bar = _bar(sum(s.rows for s in todo))  # saved ones load fast
        # those segments analysed on a few threads, ahead of their turn (see Ahead)
        workers = min(cpus(), MAX_BUILDERS)
        try:
            with Ahead(self._analyse, todo, _file, workers) as self._ahead:
                for _ in range(3):
                    for group in groups:
                        built += self._materialise(group, segments, bar)
                    for seg in singles:
                        postings, fresh = self._load_or_build(seg)
                        self._postings[seg.ref.file] = postings
                        built += fresh
                        bar.update(seg.rows if fresh else 0)
                    segments = self._current_segments()
                    groups, singles = self._todo(segments)
                    if not groups and not singles:
                        break
        finally:
            bar.close()
            self._ahead = None
        self._drop_stale(segments)
        if built:
            trim_heap()  # a build's token lists are freed; hand their pages back
            self.built_segments += built
            self.last_build_s = time.perf_counter() - started
            log.info("built keyword postings of %d segments in %.2f s", built, self.last_build_s)
        if built or self.merged_groups > merged:
            self._prune()

    def _materialise(self, group: Group, segments: list[Segment], bar: Any) -> int:
        """Read group ``group``'s file, or merge its members' postings (read or built) into
        one, save it and drop the members' own files. Returns the segments built."""
        rel = self._dir / group.name
        saved = self._open_saved(rel, group.key, group.rows)
        if saved is not None:
            self._groups[group.name] = saved
            return 0
        members = segments[group.first : group.end]
        parts, built = [], 0
        for seg in members:
            part = self._postings.get(seg.ref.file)
            if part is None:  # built here are not saved alone: the group file holds them
                part, fresh = self._load_or_build(seg, save=False)
                built += fresh
                bar.update(seg.rows if fresh else 0)
            parts.append(part)
        stems = [_stem(seg) for seg in members]
        try:
            merged = SegmentPostings.merge(parts, group.key, stems)
        except (CorruptionError, ValueError) as exc:  # a member's saved file: build them all
            log.warning("rebuilding the postings of %s's members: %s", group.name, exc)
            parts = [self._build(s) for s in members]
            built += len(members)
            merged = SegmentPostings.merge(parts, group.key, stems)
        self.merged_groups += 1
        self._groups[group.name] = self._save(rel, merged)
        if self._groups[group.name] is merged:  # not saved: the members keep their files
            return built
        for seg in members:  # the group holds them now
            self._drop(seg.ref.file)
            own = self._rel(seg)
            if own is not None:
                with contextlib.suppress(FileNotFoundError, OSError, EmbedSearchError):
                    durable.unlink(self.col.path, own)
        return built

    def _drop(self, file: str) -> None:
        """Close and forget segment ``file``'s own postings, if held."""
        held = self._postings.pop(file, None)
        if held is not None:
            held.close()

    def _drop_stale(self, segments: list[Segment]) -> None:
        """Close what the state of ``segments`` does not use: postings of segments merged
        or compacted away, groups it does not form, and segments' own postings where their
        group is held."""
        groups = {g.name: g for g in self._plan(segments)}
        for name in [n for n in self._groups if n not in groups]:
            self._groups.pop(name).close()
        covered = {
            seg.ref.file
            for g in groups.values()
            if g.name in self._groups
            for seg in segments[g.first : g.end]
        }
        live = {s.ref.file for s in segments}
        for file in [f for f in self._postings if f not in live or f in covered]:
            self._drop(file)

    def _to_build(
        self, groups: list[Group], singles: list[Segment], segments: list[Segment]
    ) -> list[Segment]:
        """The segments of ``groups`` and ``singles`` that no saved file holds (one
        listing), in the order :meth:`_ensure` builds them."""
        try:
            saved = set(durable.list_files(self.col.path, self._dir))
        except (OSError, EmbedSearchError):
            saved = set()
        todo = []
        for g in groups:
            if g.name not in saved:
                todo += [s for s in segments[g.first : g.end] if s.ref.file not in self._postings]
        todo += singles
        return [s for s in todo if (rel := self._rel(s)) is None or rel.name not in saved]

    def _units(self, table: Table) -> list[_Unit]:
        """The postings covering ``table``'s segments, in order: a group's where it is held,
        else each segment's (read, or built here under the caller's read lock: a commit
        after :meth:`_ensure`)."""
        segments, starts = table.segments, table.segment_starts()
        groups = {g.first: g for g in self._plan(segments)}
        out: list[_Unit] = []
        i = 0
        while i < len(segments):
            group = groups.get(i)
            if group is not None and group.name in self._groups:
                out.append(_Unit(starts[i], self._groups[group.name], group.name))
                i = group.end
                continue
            seg = segments[i]
            held = self._postings.get(seg.ref.file)
            if held is None:
                held, fresh = self._load_or_build(seg)
                self._postings[seg.ref.file] = held
                self.built_segments += fresh
            out.append(_Unit(starts[i], held, seg.ref.file))
            i += 1
        return out

    def _rel(self, seg: Segment) -> Path | None:
        stem = _stem(seg)
        if not _FILE_RE.fullmatch(f"{stem}.kw"):
            return None  # not a name this layout can keep: held in memory only
        return self._dir / f"{stem}.kw"

    def _load_or_build(self, seg: Segment, save: bool = True) -> tuple[SegmentPostings, int]:
        """The segment's saved postings, or new ones built, saved and read back from the
        file (so that they are read from disk as saved ones are). Returns ``(postings,
        1 if built)``; a file that cannot be saved (or ``save=False``: a group's member,
        merged next) leaves them in memory."""
        rel = self._rel(seg)
        if rel is not None:
            saved = self._open_saved(rel, seg.ref.sha256, seg.ref.rows)
            if saved is not None:
                return saved, 0
        built = self._build(seg)
        if rel is None or not save:
            return built, 1
        return self._save(rel, built), 1

    def _build(self, seg: Segment) -> SegmentPostings:
        """Segment ``seg``'s postings analysed from its texts (in memory): ahead, on
        another thread, during :meth:`_ensure`."""
        ahead = self._ahead
        return ahead.take(seg) if ahead is not None else self._analyse(seg)

    def _analyse(self, seg: Segment) -> SegmentPostings:
        try:
            return build_postings(seg.texts(), seg.ref.sha256, self.config)
        finally:
            # the texts were read through the segment's map: without this each analysed
            # segment's Arrow file stayed in the process's RSS (16 MB a segment of 50,000
            # abstracts: +330 MB by the end of a first query over a million rows)
            seg.release_columns()

    def _open_saved(self, rel: Path, source: str, rows: int) -> SegmentPostings | None:
        """The postings saved at ``rel`` for ``source`` (its ``rows``), or None where there
        are none or they cannot be used (derived data: the caller builds them again)."""
        try:
            fd = durable.open_fd(self.col.path, rel)
            return SegmentPostings.open(fd, source, rows, str(rel))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EmbedSearchError) as exc:
            log.warning("keyword postings %s unusable (%s); building them again", rel, exc)
            return None

    def _save(self, rel: Path, built: SegmentPostings) -> SegmentPostings:
        """``built`` saved at ``rel`` and read back from the file (so they are read as saved
        ones are); ``built`` itself where the file cannot be written (read-only, links)."""
        try:
            durable.write_file(self.col.path, rel, built.write_to, create_dirs=True)
            fd = durable.open_fd(self.col.path, rel)
            return SegmentPostings.open(fd, built.source, built.rows, str(rel))
        except (OSError, ValueError, EmbedSearchError) as exc:
            log.warning("cannot save keyword postings %s (%s)", rel, exc)
            return built

    def _prune(self) -> None:
        """Remove saved postings that no segment on disk needs, and the folders of older
        layouts and other analysis settings (derived data: failures are only logged).

        A segment's own file goes with the segment's file, and so does a group's with any
        member's; a segment's own file also goes once a whole group holds it. A segment
        merged or compacted away stays on disk while a kept version names it, and so do its
        postings: a handle open at that version reads them instead of building."""
        rel = self._dir
        try:
            present = {n.split(".")[0] for n in durable.list_files(self.col.path, "segments")}
            stale = time.time_ns() - int(STALE_TMP_S * 1e9)
            stamps = durable.file_stamps(self.col.path, rel)
            covered: set[str] = set()
            for name in [n for n in stamps if _GROUP_RE.fullmatch(n)]:
                members = self._members(rel / name)
                if members is None or not set(members) <= present:
                    durable.unlink(self.col.path, rel / name)
                else:
                    covered.update(members)
            for name, stamp in stamps.items():
                m = _FILE_RE.fullmatch(name)
                if (m and (m.group(1) not in present or m.group(1) in covered)) or (
                    _is_temp(name) and stamp[3] < stale  # a killed build's
                ):
                    durable.unlink(self.col.path, rel / name)
            with durable.opened_dir(self.col.path, Path("derived", DIRNAME)) as fd:
                others = [n for n in os.listdir(fd) if n != rel.name and _DIGEST_RE.fullmatch(n)]
            for name in others:  # other analysis settings, or another PyStemmer's
                durable.remove_tree(self.col.path, Path("derived", DIRNAME, name))
            durable.remove_tree(self.col.path, Path("derived", _OLD_DIRNAME))
        except (OSError, EmbedSearchError) as exc:
            log.warning("cannot tidy %s (%s)", self.root, exc)

    def _members(self, rel: Path) -> list[str] | None:
        """The member segments a group file names (None: unreadable, so removable)."""
        try:
            fd = durable.open_fd(self.col.path, rel)
        except FileNotFoundError:
            return []  # removed meanwhile
        except (OSError, EmbedSearchError):  # a link, or not a file: never followed
            return None
        try:
            header, _ = SegmentPostings.read_header(fd)
            return cast(list[str], header.get("members", []))
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ scoring
    def _lengths(self, table: Table, units: list[_Unit]) -> _Lengths:
        """Every row's length (float32, by position), the live rows and their total length,
        cached for the table's state (4 bytes a row)."""
        key = (id(table), table.rows, table.count, len(table.segments))
        if self._stats is not None and self._stats.key == key:
            return self._stats
        doclen = np.zeros(table.rows, dtype=np.float32)
        for start, postings, _ in units:
            doclen[start : start + postings.rows] = postings.doclen
        if table.has_tombstones:
            live, total = table.count, float(doclen[table.live].sum(dtype=np.float64))
        else:
            live, total = table.rows, float(doclen.sum(dtype=np.float64))
        held = [p.shortest for _, p, _ in units if p.shortest]  # (a row of no term: 0)
        self._stats = _Lengths(key, doclen, live, total, float(min(held, default=0)))
        return self._stats

    def search(
        self, query: str, k: int, where: dict[str, Any] | None = None
    ) -> list[tuple[str, float]]:
        """Top-``k`` keyword matches ``(id, score)`` among live documents passing ``where``,
        best first (ties in stored order); only documents with a query term score."""
        return self.found(query, k, where).ranked

    def found(
        self, query: str, k: int, where: dict[str, Any] | None = None, shown: int = 0
    ) -> Found:
        """:meth:`search`'s matches, and the text and metadata of the first ``shown`` of
        them, read with their ids from the same state of the collection: a caller that shows
        them needs no look-up by id afterwards (``col.get`` of ten ids was a sixth of a
        keyword ``retrieve`` at 1M rows), and none that a commit meanwhile could fail."""
        terms = self.query_terms(query)
        if not terms:
            return Found([], {})
        words = list(terms)
        hashes = hash_strings(words)
        with self._lock:
            self._ensure()
            rebuilt: set[str] = set()
            while True:
                try:
                    with self._reading() as table:
                        return self._search(table, words, hashes, terms, k, where, shown)
                except _Damaged as exc:  # derived data: rebuild it, then ask again
                    if exc.file in rebuilt:  # damaged as soon as rebuilt: say so
                        raise exc.error from None
                    rebuilt.add(exc.file)
                    log.warning("rebuilding: %s", exc.error)
                    self._rebuild(exc.file)

    def _rebuild(self, name: str) -> None:
        """Drop the damaged postings ``name`` (a group's file or a segment's: memory and
        disk) and build them again if the collection still has them: a segment's now, a
        group's members on the query's next pass and the group on the next query."""
        if name in self._groups:
            self._groups.pop(name).close()
            with contextlib.suppress(FileNotFoundError, OSError, EmbedSearchError):
                durable.unlink(self.col.path, self._dir / name)
            return
        self._drop(name)
        seg = next((s for s in self._current_segments() if s.ref.file == name), None)
        if seg is None:  # compacted away meanwhile: nothing to rebuild
            return
        rel = self._rel(seg)
        if rel is not None:
            durable.unlink(self.col.path, rel)
        self._postings[name] = self._load_or_build(seg)[0]
        self.built_segments += 1

    def _search(
        self,
        table: Table,
        words: list[str],
        hashes: np.ndarray,
        counts: Counter[str],
        k: int,
        where: dict[str, Any] | None,
        shown: int = 0,
    ) -> Found:
        """Gather each query term's postings over the segments (deleted rows dropped), whose
        sizes are the terms' document frequencies and give their idf weights; then score
        them (:func:`.scoring.top_k`: MaxScore, batches of segments)."""
        keep_large_blocks()  # (once) a query's temporaries reused, not faulted in afresh
        units = self._units(table)
        lengths = self._lengths(table, units)
        if not lengths.live:
            return Found([], {})
        runs = self._runs(table, units, words, hashes)
        df = [0 if r is None else int(r.rows.size) for r in runs]
        if not any(df):
            return Found([], {})
        method, k1, b = self.config.method, self.config.k1, self.config.b
        n = lengths.live
        weight = np.array(
            [_idf(method, d, n) * counts[w] if d else 0.0 for w, d in zip(words, df)],
            dtype=np.float32,
        )
        if method == "atire":
            weight *= np.float32(k1 + 1)
        mask = None
        if where is not None:
            mask = column_mask(where, table.rows, table.metadata_columns, table.metadata_rows)
        per_len = k1 * b * n / lengths.total if lengths.total else 0.0
        weighting = Weighting(
            weight, np.float32(k1 * (1 - b)), np.float32(per_len), lengths.doclen, lengths.shortest
        )
        spans = batches(table.segment_starts(), table.rows)
        pos, scores = top_k(runs, weighting, k, spans, mask)
        head, rest = pos[:shown], pos[shown:]
        ids, texts, metas = table.hit_strings(head) if head.size else ([], [], [])
        docs = {i: (t, parse_metadata(m) or {}) for i, t, m in zip(ids, texts, metas)}
        if rest.size:
            ids += table.ids_at(rest)
        return Found(list(zip(ids, scores.tolist())), docs)

    def _runs(
        self, table: Table, units: list[_Unit], words: list[str], hashes: np.ndarray
    ) -> list[Run | None]:
        """Each of ``words``' postings over the collection (None: in no live row): one read
        a term and unit (a group or a segment), joined a term at a time, rows checked
        against their unit's end (a file changed after its blocks were checked is never
        read past)."""
        found: list[list[tuple[_Unit, int, int]]] = [[] for _ in words]  # (unit, lo, hi)
        encoded = [w.encode() for w in words]
        for unit in units:
            for t, i in unit.postings.find(encoded, hashes):
                lo, hi = unit.postings.span(i)
                if hi > lo:  # an empty run adds nothing (the joins below assume none)
                    found[t].append((unit, lo, hi))
        live = table.live if table.has_tombstones else None
        runs: list[Run | None] = []
        for parts in found:
            if not parts:
                runs.append(None)
                continue
            sizes = [hi - lo for _, lo, hi in parts]
            packed = np.empty(sum(sizes), dtype=np.uint32)  # every run read straight into it
            at = 0
            for (unit, lo, hi), size in zip(parts, sizes):
                try:
                    unit.postings.read_into(lo, hi, packed[at : at + size])
                except CorruptionError as exc:
                    raise _Damaged(unit.name, exc) from None
                at += size
            rows, tf = unpack_runs(
                packed,
                [(u.postings, lo, size) for (u, lo, _), size in zip(parts, sizes)],
                [u.start for u, _, _ in parts],
            )
            firsts = np.cumsum([0, *sizes[:-1]])  # parts are never empty
            ends = np.array([u.start + u.postings.rows for u, _, _ in parts], dtype=np.int64)
            over = np.maximum.reduceat(rows, firsts) >= ends
            if over.any():  # say which file
                unit = parts[int(np.argmax(over))][0]
                raise _Damaged(unit.name, unit.postings.damaged("names a row outside its segment"))
            if live is not None:
                keep = live[rows]
                rows, tf = rows[keep], tf[keep]
            runs.append(Run(rows, tf) if rows.size else None)
        return runs


#: Rows to read or build from which a first keyword query shows a progress bar (on stderr,
#: once it has taken a second: reading saved postings is quicker than that).
PROGRESS_ROWS = 100_000


def saved_postings(root: Path, digest: str | None = None) -> dict[str, durable.Stamp]:
    """The postings files (name: stamp) a collection keeps for analysis ``digest``
    (default: :class:`BM25Config`'s), empty where it keeps none: made by a keyword query,
    :meth:`BM25Store.prepare` or a document ingest, and from then on kept current by its
    writers. The default digest is computed only where some postings exist (it imports
    PyStemmer): a collection never asked for keywords pays a ``stat`` here."""
    if not os.path.isdir(os.path.join(root, "derived", DIRNAME)):
        return {}
    rel = Path("derived", DIRNAME, digest or BM25Config().digest())
    try:
        stamps = durable.file_stamps(root, rel)
    except (OSError, EmbedSearchError):
        return {}
    return {name: stamp for name, stamp in stamps.items() if name.endswith(".kw")}


def _bar(rows: int) -> Any:
    """A progress bar over ``rows`` rows of postings to read or build (none for few)."""
    return progress_bar(rows, rows >= PROGRESS_ROWS, "keyword index", unit="row", delay=1.0)


def _idf(method: str, df: int, n: int) -> float:
    """Inverse document frequency of a term in ``df`` of ``n`` documents (bm25s's formulas)."""
    if method == "atire":
        return math.log(n / df)
    inner = (n - df + 0.5) / (df + 0.5)
    if method == "robertson":
        return math.log(max(inner, 1.0))
    return math.log(1 + inner)
