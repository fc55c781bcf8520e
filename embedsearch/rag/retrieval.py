"""The retrieval pipeline behind ``Collection.retrieve``.

Stages, in order (each optional except the first):

1. **Candidates.** ``dense``: the collection's vector search (cosine). ``bm25``: the
   keyword index (:mod:`.bm25`). ``hybrid``: both, each fetching
   ``candidates = max(100, k)`` results (more when reranking or MMR need a deeper pool),
   with the same ``where`` filter applied on both sides before the top-N cut.
2. **Fusion** (hybrid only): ``rrf``, ``convex`` or ``dbsf`` (:mod:`.fusion`) with dense
   weight ``alpha`` (equal weights by default, :data:`DEFAULT_ALPHA` says why).
3. **Pseudo-relevance feedback** (``prf=``, dense/hybrid): Rocchio on the top passages of
   stage 1/2, then the dense side is searched again and fused again.
4. **Rerank** (``rerank=``): a cross-encoder rescores the top ``rerank_depth`` (default
   ``max(k, 30)``) passages.
5. **MMR** (``mmr=lambda``): diversify the top ``max(4k, 20)`` passages with the stored
   vectors; relevance is the current stage's score min-max scaled to [0, 1] over that pool.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from ..errors import DocumentNotFoundError, InvalidInputError
from ..validation import check_k
from .bm25 import BM25Store
from .fusion import FUSIONS, check_fusion, fuse, minmax
from .mmr import check_lambda, mmr_order
from .passage import Passage
from .prf import as_config, rocchio
from .rerank import rerank_scores, resolve

if TYPE_CHECKING:
    from ..base import CollectionBase

MODES: tuple[str, ...] = ("dense", "bm25", "hybrid")
DEFAULT_MODE = "dense"
#: Fusion used when none is named; chosen from the evaluation (docs/rag.md).
#: Convex combination of min-max normalised scores: best on SciFact train (73.1 nDCG@10 vs
#: 72.0 rrf, 71.8 dbsf) and, untouched, on NFCorpus (43.2 vs 41.8 / 42.8); dbsf led on
#: Cranfield (42.3 vs 41.3). benchmarks/results/rag_eval.json has the whole table.
DEFAULT_FUSION = "convex"
#: Dense weight per fusion: equal weights. Tuned on SciFact train alone (a homogeneous corpus
#: of 5k abstracts; benchmarks/rag_eval.py) the weights leaned to the keyword side (rrf 0.35,
#: convex 0.4, dbsf 0.45), and among a million mixed passages (benchmarks/hybrid_at_scale.py:
#: the BEIR corpora among 950k news distractors, whose short texts set BM25's mean length)
#: those weights ranked *below dense search alone* on SciFact, Cranfield and NFCorpus (convex
#: nDCG@10 0.603 / 0.368 / 0.321 against dense 0.628 / 0.373 / 0.328). Equal weights rank
#: above dense on all three there with convex (0.637 / 0.383 / 0.344) and dbsf (0.638 /
#: 0.391 / 0.360), level with it with rrf (0.627 / 0.382 / 0.340); on the 49k real texts
#: alone they are the best or level; on SciFact train alone they cost 0.0016 (convex),
#: 0.0014 (dbsf) and 0.011 (rrf) of nDCG@10 (docs/rag.md, "Hybrid retrieval among a
#: million passages"). Those figures are with BM25's ``b`` 0.75; with 0.5 (the default now)
#: convex at equal weights gives 0.669 / 0.397 / 0.379 there and 0.4, 0.6 and 0.7 do no better.
DEFAULT_ALPHA: dict[str, float] = {"rrf": 0.5, "convex": 0.5, "dbsf": 0.5}
MIN_CANDIDATES = 100
MAX_CANDIDATES = 10_000
_STORE_LOCK = threading.Lock()


def candidate_depth(k: int, candidates: int | None = None) -> int:
    """How many results each side fetches before fusion: ``max(100, k)`` unless given."""
    if candidates is None:
        return max(MIN_CANDIDATES, k)
    if (
        isinstance(candidates, bool)
        or not isinstance(candidates, int)
        or not k <= candidates <= MAX_CANDIDATES
    ):
        raise InvalidInputError(
            f"candidates must be an integer between k ({k}) and {MAX_CANDIDATES}, "
            f"got {candidates!r}."
        )
    return candidates


class _BM25Holder(Protocol):
    """A handle that keeps its BM25 store: :class:`~embedsearch.rag.mixin.RetrievalMixin`
    declares the attribute."""

    _rag_bm25: BM25Store | None


def bm25_store(col: CollectionBase) -> BM25Store:
    """The collection handle's BM25 store, created on first use.

    Kept in the attribute :class:`~embedsearch.rag.mixin.RetrievalMixin` declares for it, so
    it lives exactly as long as the handle.
    """
    holder = cast(_BM25Holder, col)
    store = holder._rag_bm25
    if store is None:
        with _STORE_LOCK:
            store = holder._rag_bm25
            if store is None:
                store = holder._rag_bm25 = BM25Store(col)
    return store


@dataclass
class _Pool:
    """Candidates seen so far: text/metadata when known, and each stage's scores."""

    text: dict[str, str] = field(default_factory=dict)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    #: reads the documents of the latest ranking by id alone (``CollectionBase._rank_ids``)
    read: Callable[[list[str]], list[Any]] | None = None

    def note(self, stage: str, ranked: Sequence[tuple[str, float]]) -> None:
        for doc, s in ranked:
            self.scores.setdefault(doc, {})[stage] = float(s)

    def show(self, docs: dict[str, tuple[str, dict[str, Any]]]) -> None:
        """Texts and metadata read with the candidates (the keyword side's first few)."""
        for doc, (text, meta) in docs.items():
            self.text.setdefault(doc, text)
            self.meta.setdefault(doc, meta)

    def fill(self, col: CollectionBase, ids: Sequence[str]) -> list[str]:
        """Read the texts and metadata of ``ids`` not seen yet; ``ids`` less any deleted
        since they were ranked (a writer may commit between the search and this read)."""
        missing = [d for d in ids if d not in self.text]
        if missing:
            for doc in (self.read or col._still_stored)(missing):
                self.text[doc.id] = doc.text
                self.meta[doc.id] = doc.metadata
        return [d for d in ids if d in self.text]


def _check_query(col: CollectionBase, query: Any, needs_model: bool, truncate: bool) -> str:
    if not isinstance(query, str):
        raise InvalidInputError(f"query must be a string, got {type(query).__name__}.")
    if not query.strip():
        raise InvalidInputError("query is empty; ask something.")
    if "\x00" in query:
        raise InvalidInputError("query contains a NUL character.")
    if needs_model and not truncate:
        enc = col.encoder
        n = enc.token_count(query)
        if n > enc.max_seq_length:
            raise InvalidInputError(
                f"query is {n} tokens; the model reads at most {enc.max_seq_length}, so the "
                "rest would be ignored. Shorten it, use mode='bm25', or pass truncate=True to "
                "embed only its beginning."
            )
    return query


def _dense(
    col: CollectionBase, q: Any, depth: int, where: Any, pool: _Pool, texts: bool
) -> list[tuple[str, float]]:
    """The dense side's ranking; with its hits' texts where all of them are kept (``texts``),
    else ids alone, the few kept read later (:meth:`_Pool.fill`)."""
    if not texts:
        ranked, pool.read = col._rank_ids(q, depth, where=where)
        return ranked
    hits = col.search(q, k=depth, where=where)
    for h in hits:
        pool.text[h.id] = h.text
        pool.meta[h.id] = h.metadata
    return [(h.id, h.score) for h in hits]


def retrieve(
    col: CollectionBase,
    query: str,
    k: int = 8,
    mode: str = DEFAULT_MODE,
    fusion: str | None = None,
    rerank: Any = None,
    mmr: float | None = None,
    where: dict[str, Any] | None = None,
    *,
    alpha: float | None = None,
    candidates: int | None = None,
    prf: Any = None,
    rerank_depth: int | None = None,
    truncate: bool = True,
) -> list[Passage]:
    """See :meth:`embedsearch.rag.mixin.RetrievalMixin.retrieve`."""

    k = check_k(k)
    if mode not in MODES:
        raise InvalidInputError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}.")
    fusion = check_fusion(fusion if fusion is not None else DEFAULT_FUSION)
    lam = check_lambda(mmr) if mmr is not None else None
    prf_cfg = as_config(prf)
    if prf_cfg is not None and mode == "bm25":
        raise InvalidInputError("prf (dense feedback) needs mode='dense' or 'hybrid'.")
    if alpha is None:
        alpha = DEFAULT_ALPHA[fusion]
    elif isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise InvalidInputError(f"alpha (dense weight) must be in [0, 1], got {alpha!r}.")
    if rerank_depth is not None and (
        isinstance(rerank_depth, bool)
        or not isinstance(rerank_depth, int)
        or not 1 <= rerank_depth <= MAX_CANDIDATES
    ):
        raise InvalidInputError(f"rerank_depth must be a positive integer, got {rerank_depth!r}.")
    reranker = resolve(rerank) if rerank is not None else None
    query = _check_query(col, query, mode != "bm25", truncate)

    r_depth = max(k, rerank_depth or 30) if reranker is not None else 0
    m_depth = max(4 * k, 20) if lam is not None else 0
    depth = candidate_depth(k, candidates)
    depth = max(depth, r_depth, m_depth) if candidates is None else depth

    # A side alone is asked for what the stages after it use (k, or the reranker's or MMR's
    # depth), not the fusion depth: the keyword side ranks exactly, so its first k are those
    # of any deeper ranking, and fewer are cheaper (the k-th score prunes more; a first query
    # at 1M rows read ids from 20 segments instead of 10); the dense side read the text and
    # metadata of 100 hits to return 10. Fusion, feedback and an explicit ``candidates``
    # take the depth.
    alone = max(k, r_depth, m_depth) if candidates is None else depth
    pool = _Pool()
    dense: list[tuple[str, float]] = []
    keyword: list[tuple[str, float]] = []
    if mode in ("dense", "hybrid"):
        deep = mode == "hybrid" or prf_cfg is not None
        # a deep pool is fused or fed back, and only its winners' texts are read (at 1M rows
        # a hybrid question's p50 8.67 -> 7.28 ms, the encoding aside)
        dense = _dense(col, query, depth if deep else alone, where, pool, not deep)
        pool.note("dense", dense)
    if mode in ("bm25", "hybrid"):
        # the first k (or the reranker's depth) read with their text: no look-up by id later
        found = bm25_store(col).found(
            query, depth if mode == "hybrid" else alone, where, max(k, r_depth)
        )
        keyword = found.ranked
        pool.show(found.shown)
        pool.note("bm25", keyword)

    def combine() -> list[tuple[str, float]]:
        if mode == "dense":
            return dense
        if mode == "bm25":
            return keyword
        fused = fuse(fusion, dense, keyword, alpha)
        pool.note("fused", fused)
        return fused

    ranked = combine()
    if prf_cfg is not None and ranked:
        top = [d for d, _ in ranked[: prf_cfg.docs]]
        qvec = col.encoder.encode_query(query)
        feedback = rocchio(qvec, col.vectors(top), prf_cfg.beta)
        dense = _dense(col, feedback, depth, where, pool, False)
        pool.note("dense", dense)
        ranked = combine()

    if reranker is not None and ranked:
        kept = set(pool.fill(col, [d for d, _ in ranked[:r_depth]]))
        head = [(d, s) for d, s in ranked[:r_depth] if d in kept]
        scores = rerank_scores(reranker, query, [pool.text[d] for d, _ in head])
        order = np.argsort(-scores, kind="stable")
        ranked = [(head[i][0], float(scores[i])) for i in order]
        pool.note("rerank", ranked)

    if lam is not None and len(ranked) > 1:
        head = ranked[:m_depth]
        try:
            vecs = col.vectors([d for d, _ in head])
        except DocumentNotFoundError:  # deleted since ranked: MMR picks among the rest
            head = [(d, s) for d, s in head if d in col]
            vecs = col.vectors([d for d, _ in head])
        rel = minmax(np.array([s for _, s in head], dtype=np.float64))
        picked = mmr_order(rel, vecs, k, lam) if head else []
        ranked = [head[i] for i in picked]

    final = ranked[:k]
    kept = set(pool.fill(col, [d for d, _ in final]))
    if len(kept) < len(final):  # deleted since ranked: the next ones take their places
        rest = ranked[k:]
        kept |= set(pool.fill(col, [d for d, _ in rest[: 2 * (len(final) - len(kept))]]))
        final = [(d, s) for d, s in ranked if d in kept][:k]
    return [
        Passage(
            id=d,
            text=pool.text[d],
            score=float(s) if math.isfinite(s) else 0.0,
            metadata=pool.meta.get(d) or {},
            scores=dict(pool.scores.get(d, {})),
        )
        for d, s in final
    ]


__all__ = ["DEFAULT_ALPHA", "DEFAULT_FUSION", "FUSIONS", "MODES", "candidate_depth", "retrieve"]
