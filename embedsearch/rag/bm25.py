"""Keyword side of hybrid retrieval: BM25 (bm25s + PyStemmer), persisted with the collection.

The index is derived data, built from the collection's live documents and stored under
``<collection>/derived/bm25/<key>/`` where the key is the collection's ``state_key`` (which
changes on every committed add, upsert, delete or compaction) plus a hash of the BM25
settings. Any change makes the next keyword query rebuild it (lazily, once), so a deleted or
replaced document can never be returned by the keyword side; results are also checked
against the live collection before they are returned. Older keys are removed after a
successful build.

Analysis: lower-casing, ``\\w\\w+`` tokens, English stop words removed, Snowball English
stemming. Scoring: Lucene BM25 with ``k1`` / ``b`` (defaults chosen on SciFact train; see
docs/rag.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import durable
from ..errors import EmbedSearchError

if TYPE_CHECKING:
    from ..base import CollectionBase

log = logging.getLogger(__name__)

DIRNAME = "bm25"
#: Names of saved BM25 indexes (``<state key>-<config digest>``) and of their temp folders.
_DIR_RE = re.compile(
    r"[A-Za-z0-9_-]+-[0-9a-f]{12}|\.[A-Za-z0-9_-]+-[0-9a-f]{12}\.[0-9a-f]{32}\.tmp"
)


@dataclass(frozen=True)
class BM25Config:
    """BM25 analysis and scoring settings (a change rebuilds the stored index)."""

    k1: float = 1.2
    b: float = 0.75
    method: str = "lucene"
    stemmer: str | None = "english"
    stopwords: str | None = "en"

    def digest(self) -> str:
        bm25s = _bm25s()
        raw = json.dumps({**asdict(self), "bm25s": bm25s.__version__}, sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:12]


def _bm25s() -> Any:
    """Import bm25s, undoing its module-level ``setLevel(DEBUG)`` (it floods CLI output).

    bm25s imports numba whenever it is installed (ranx brings it), to offer a backend this
    module never selects (it scores with ``get_scores``, numpy). That import is 0.4 s of a
    cold ``retrieve --mode hybrid``, so unless numba is already loaded it is hidden while
    bm25s loads (an ``ImportError`` there makes bm25s fall back to numpy) and unhidden
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


def _stemmer(name: str | None) -> Any:
    if not name:
        return None
    import Stemmer

    return Stemmer.Stemmer(name)


class BM25Index:
    """An in-memory BM25 index over ``ids`` (row ``i`` of the index is ``ids[i]``)."""

    def __init__(self, retriever: Any, ids: list[str], config: BM25Config) -> None:
        self.retriever = retriever
        self.ids = ids
        self.config = config
        self.pos = {d: i for i, d in enumerate(ids)}
        self._stem = _stemmer(config.stemmer)

    @classmethod
    def build(cls, ids: list[str], texts: list[str], config: BM25Config) -> BM25Index:
        """Tokenise ``texts`` and index them."""
        bm25s = _bm25s()

        retriever = bm25s.BM25(k1=config.k1, b=config.b, method=config.method)
        if texts:
            tokens = bm25s.tokenize(
                texts,
                stopwords=config.stopwords,
                stemmer=_stemmer(config.stemmer),
                show_progress=False,
            )
            retriever.index(tokens, show_progress=False)
        return cls(retriever, list(ids), config)

    def save(self, path: Path) -> None:
        """Write the index files and ``ids.json`` into the directory ``path``."""
        path.mkdir(parents=True, exist_ok=True)
        if self.ids:
            self.retriever.save(str(path), show_progress=False)
        (path / "ids.json").write_text(json.dumps(self.ids), encoding="utf-8")
        (path / "config.json").write_text(json.dumps(asdict(self.config)), encoding="utf-8")

    @classmethod
    def load(cls, path: Path, config: BM25Config) -> BM25Index:
        """Load an index written by :meth:`save`."""
        bm25s = _bm25s()

        ids = json.loads((path / "ids.json").read_text(encoding="utf-8"))
        if ids:
            retriever = bm25s.BM25.load(str(path), show_progress=False, mmap=False)
        else:
            retriever = bm25s.BM25(k1=config.k1, b=config.b, method=config.method)
        return cls(retriever, ids, config)

    def query_tokens(self, query: str) -> list[str]:
        """The query's analysed terms that occur in the index (may be empty)."""
        bm25s = _bm25s()

        toks = bm25s.tokenize(
            [query],
            stopwords=self.config.stopwords,
            stemmer=self._stem,
            return_ids=False,
            show_progress=False,
        )[0]
        vocab = getattr(self.retriever, "vocab_dict", None) or {}
        return [t for t in toks if t in vocab and t != ""]

    def search(
        self, query: str, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[str, float]]:
        """Top-``k`` (id, BM25 score) with score > 0; ``allowed`` masks rows (bool array)."""
        if not self.ids:
            return []
        terms = self.query_tokens(query)
        if not terms:
            return []
        scores = np.asarray(self.retriever.get_scores(terms), dtype=np.float32)
        if allowed is not None:
            scores = np.where(allowed, scores, 0.0)
        hits = np.flatnonzero(scores > 0)
        if hits.size == 0:
            return []
        if hits.size > k:
            hits = hits[np.argpartition(-scores[hits], k - 1)[:k]]
        hits = hits[np.argsort(-scores[hits], kind="stable")]
        return [(self.ids[i], float(scores[i])) for i in hits]


def _real_dir(root: Path, rel: Path) -> bool:
    """True if ``root/rel`` is a directory reached without following a link, holding only
    regular files (what :meth:`BM25Index.load` then reads by path)."""
    try:
        with durable.opened_dir(root, rel) as fd:
            return len(durable.list_files(root, rel)) == len(os.listdir(fd))
    except (OSError, EmbedSearchError):
        return False


class BM25Store:
    """The BM25 index of one collection handle: loaded or rebuilt when ``state_key`` moves."""

    def __init__(self, col: CollectionBase, config: BM25Config | None = None) -> None:
        self.col = col
        self.config = config or BM25Config()
        self._lock = threading.Lock()
        self._key: str | None = None
        self._index: BM25Index | None = None
        self._meta: list[dict[str, Any]] | None = None
        self.last_build_s: float | None = None

    @property
    def root(self) -> Path:
        return Path(self.col.path) / "derived" / DIRNAME

    def _dirname(self, state_key: str) -> str:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in state_key)
        return f"{safe}-{self.config.digest()}"

    def index(self) -> BM25Index:
        """The BM25 index matching the collection's current contents."""
        with self._lock:
            key = self.col.state_key
            if self._index is not None and key == self._key:
                return self._index
            path = self.root / self._dirname(key)
            index, meta = None, None
            if _real_dir(self.col.path, Path("derived", DIRNAME, self._dirname(key))):
                try:
                    index = BM25Index.load(path, self.config)
                except Exception as exc:  # derived data: rebuild rather than fail
                    log.warning("BM25 index %s unusable (%s); rebuilding", path, exc)
            if index is None:
                index, key, meta = self._build()
            self._index, self._key, self._meta = index, key, meta
            return index

    def _build(self) -> tuple[BM25Index, str, list[dict[str, Any]]]:
        t0 = time.perf_counter()
        for _ in range(5):  # the collection may change under us: retry until stable
            key = self.col.state_key
            ids = self.col.ids()
            docs = self.col.get(ids) if ids else []
            if self.col.state_key == key:
                break
        index = BM25Index.build(ids, [d.text for d in docs], self.config)
        self.last_build_s = time.perf_counter() - t0
        log.info("built BM25 over %d documents in %.2f s", len(ids), self.last_build_s)
        self._persist(index, key)
        return index, key, [d.metadata for d in docs]

    def _persist(self, index: BM25Index, key: str) -> None:
        """Publish the index durably under ``derived/bm25/<key>`` (through the store's file
        layer: no link followed, files and directories fsynced), then drop older ones."""
        rel = Path("derived", DIRNAME)
        final = self._dirname(key)
        try:
            durable.write_dir(self.col.path, rel / final, index.save)
            with durable.opened_dir(self.col.path, rel) as fd:  # never through a link
                names = os.listdir(fd)
            for old in names:
                if old != final and _DIR_RE.fullmatch(old):
                    durable.remove_tree(self.col.path, rel / old)
        except (OSError, EmbedSearchError) as exc:  # read-only, links: keep it in memory only
            log.warning("cannot save the BM25 index under %s (%s)", self.root, exc)

    def metadata(self, index: BM25Index) -> list[dict[str, Any]]:
        """Stored metadata of the index's documents, in index order (for ``where``)."""
        with self._lock:
            if self._meta is None or len(self._meta) != len(index.ids):
                self._meta = [d.metadata for d in self.col.get(index.ids)] if index.ids else []
            return self._meta

    def search(
        self, query: str, k: int, where: dict[str, Any] | None = None
    ) -> list[tuple[str, float]]:
        """Top-``k`` keyword matches (id, score) among documents passing ``where``."""
        from ..filters import compile_filter

        index = self.index()
        allowed = None
        if where is not None:
            pred = compile_filter(where)
            allowed = np.fromiter(
                (pred(m or {}) for m in self.metadata(index)), dtype=bool, count=len(index.ids)
            )
        hits = index.search(query, k, allowed)
        return [(d, s) for d, s in hits if d in self.col]  # never a deleted document
