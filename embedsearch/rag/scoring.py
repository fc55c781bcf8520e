"""The best ``k`` BM25 scores of one query over the collection, skipping what cannot enter.

The keyword store (:mod:`.bm25`) hands over each query term's postings across every
segment, as *runs*: the positions (in the collection's stored order, ascending) of the live
documents holding the term, and the term's count in each. This module scores them, in whole
arrays rather than per segment or per document (a query over twenty segments costs a few
dozen numpy calls, not a few hundred), with **MaxScore** pruning:

* A term's share of a document's score, ``weight * tf / (tf + norm)`` (``weight``: its
  idf times its count in the query; ``norm`` grows with the document's length), is at most
  the share of the term's largest count in a document of the shortest length held
  (:meth:`Weighting.bound`), well below ``weight`` for a term found once or twice a
  document. So once ``k`` documents are held and the ``k``-th best score is ``theta``, the
  lightest terms whose bounds sum to less than ``theta`` are *non-essential*: a document
  holding only those cannot enter the top ``k``.
* The collection is scored in batches of positions, growing (1, 2, 4, ... segments), so
  ``theta`` is known early and rises between batches. In each, only the essential terms'
  postings are scored; the others are looked up for the documents the essential ones found,
  heaviest first (a binary search of the shorter side in the longer: a rare term's rows
  among the documents, or the documents among a common term's rows), and a document whose
  score plus the bounds still to look up falls below ``theta`` is dropped on the way.

The result is the exhaustive ranking's: best first, ties in stored order (a test holds it
equal to bm25s's and to scoring without pruning).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Bounds are widened by this share, so that float32 rounding never makes a document's
#: share of a term exceed the bound it was pruned by.
_SLACK = 1e-5
#: The documents found are pruned (a pass over all of them) once the bounds of the terms
#: still to look up have fallen by this share of the k-th score since the last pruning: a
#: question of thousands of light terms (a whole article) had made one pass per term. A
#: document kept longer is still scored exactly, so pruning less never changes the answer.
_PRUNE_STEP = 1 / 16
#: A batch's essential postings are summed in one array over its positions (a bincount)
#: where they number at least this share of them, else merged by a sort: 300 terms of 5,000
#: postings over 400,000 positions took 11 against 98 ms, 2 terms of 2,000 1.8 against
#: 0.08 ms; the two meet near one posting for 8-10 positions.
_DENSE_SHARE = 1 / 8


@dataclass(frozen=True)
class Run:
    """One query term's postings over the collection: ``rows`` (int64 positions in stored
    order, ascending, live documents only) and ``tf`` (the term's count in each)."""

    rows: np.ndarray
    tf: np.ndarray


@dataclass(frozen=True)
class Weighting:
    """What turns a posting into a score: ``weight[t] * tf / (tf + base + per_len * dl)``,
    ``dl`` from ``doclen`` (float32, by position)."""

    weight: np.ndarray  # (terms,) float32
    base: np.float32
    per_len: np.float32
    doclen: np.ndarray  # (rows,) float32
    shortest: float = 0.0  # a length no document holding a term is shorter than

    def bound(self, t: int, run: Run) -> float:
        """A share no posting of term ``t`` (its ``run``) exceeds: the share of its largest
        count in a document of length :attr:`shortest` (a share grows with the count and
        shrinks with the length), widened for float32 rounding. Bounded by the term's
        weight alone, MaxScore had taken a term found once a document for up to 2.5 times
        what it can add, and scored its postings in full; the length's part matters too
        (at 5M rows p95 25-26 ms with it, 28-31 without)."""
        most = float(run.tf.max())
        norm = float(self.base) + float(self.per_len) * self.shortest
        return float(self.weight[t]) * most / (most + norm) * (1 + _SLACK)

    def score(self, term_weight: np.ndarray, tf: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The shares (float32) of postings of counts ``tf`` at ``rows``: ``term_weight *
        tf / (tf + base + per_len * dl)``, computed in the same order as written (the same
        roundings) in three arrays instead of seven: at 5M rows a query scores millions of
        postings, and each temporary is an array of them faulted in."""
        tf32 = tf.astype(np.float32)
        denom = tf32 + self.base
        norm = self.doclen[rows]
        norm *= self.per_len
        denom += norm
        tf32 *= term_weight
        tf32 /= denom
        return tf32


def batches(starts: Sequence[int], rows: int) -> list[tuple[int, int]]:
    """Ranges of positions covering ``rows``, cut at segment ``starts``: 1, 2, 4, ...
    segments each, so the first batches set a threshold the later ones prune with."""
    edges = [*starts, rows]
    out, i, step = [], 0, 1
    while i < len(starts):
        j = min(i + step, len(starts))
        out.append((edges[i], edges[j]))
        i, step = j, step * 2
    return out


def top_k(
    runs: Sequence[Run | None],
    weighting: Weighting,
    k: int,
    spans: Sequence[tuple[int, int]],
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, scores)`` of the best ``k`` documents with a positive score, best
    first, ties in stored order. ``runs[t]`` is term ``t``'s (None: in no live document);
    ``spans`` are the batches of positions, in order, covering every run; ``mask`` (by
    position) leaves out the documents a filter does not pass."""
    weight = weighting.weight
    terms = [t for t, r in enumerate(runs) if r is not None and r.rows.size]
    if not terms or k <= 0 or not spans:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    bound = {t: weighting.bound(t, runs[t]) for t in terms}  # type: ignore[arg-type]
    terms.sort(key=lambda t: bound[t])  # lightest first
    edges = np.array([lo for lo, _ in spans] + [spans[-1][1]], dtype=np.int64)
    cuts = {t: np.searchsorted(runs[t].rows, edges).tolist() for t in terms}  # type: ignore[union-attr]
    held_pos = np.empty(0, dtype=np.int64)
    held_val = np.empty(0, dtype=np.float32)
    theta = 0.0  # the k-th best score held; 0 until k are
    for b in range(len(spans)):
        present = [t for t in terms if cuts[t][b + 1] > cuts[t][b]]
        cut, below = 0, 0.0  # present[:cut] are non-essential; their bounds sum to below
        while cut < len(present) and below + bound[present[cut]] < theta:
            below += bound[present[cut]]
            cut += 1
        essential = present[cut:]
        if not essential:  # nothing in this batch can reach the k-th score
            continue
        cand, acc = _essential(runs, weighting, essential, cuts, b, mask, spans[b])
        pruned_at = math.inf  # ``below`` when the documents were last pruned
        for t in reversed(present[:cut]):  # the non-essential ones, heaviest first
            if pruned_at - below >= theta * _PRUNE_STEP:
                keep = acc + below >= theta
                if not keep.all():
                    cand, acc = cand[keep], acc[keep]
                pruned_at = below
            if not cand.size:
                break
            below -= bound[t]
            run = runs[t]
            assert run is not None
            lo, hi = cuts[t][b], cuts[t][b + 1]
            rows = run.rows[lo:hi]
            doc, post = _matches(cand, rows)
            if doc.size:
                acc[doc] += weighting.score(weight[t], run.tf[lo:hi][post], cand[doc])
        if not cand.size:
            continue
        held_pos, held_val = _best(
            np.concatenate([held_pos, cand]), np.concatenate([held_val, acc.astype(np.float32)]), k
        )
        if held_pos.size >= k:
            theta = float(held_val[-1])
    keep = held_val > 0
    return held_pos[keep], held_val[keep]


def _matches(cand: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the sorted ``cand`` and ``rows`` (both unique) hold the same position: its
    index in each. The shorter side is searched in the longer (a rare term's rows among
    many documents, or few documents among a common term's rows)."""
    if rows.size < cand.size:
        at = np.minimum(np.searchsorted(cand, rows), cand.size - 1)
        hit = np.flatnonzero(cand[at] == rows)
        return at[hit], hit
    at = np.minimum(np.searchsorted(rows, cand), rows.size - 1)
    hit = np.flatnonzero(rows[at] == cand)
    return hit, at[hit]


def _essential(
    runs: Sequence[Run | None],
    weighting: Weighting,
    essential: list[int],
    cuts: dict[int, list[int]],
    b: int,
    mask: np.ndarray | None,
    span: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """The documents of batch ``b`` (positions ``span``) holding an essential term (and
    passing ``mask``), with the sum (float64) of those terms' shares: ``(positions
    ascending, sums)``."""
    parts = [(runs[t], cuts[t][b], cuts[t][b + 1]) for t in essential]
    rows = np.concatenate([r.rows[lo:hi] for r, lo, hi in parts])  # type: ignore[union-attr]
    tf = np.concatenate([r.tf[lo:hi] for r, lo, hi in parts])  # type: ignore[union-attr]
    term_weight = np.repeat(weighting.weight[essential], [hi - lo for _, lo, hi in parts])
    if mask is not None:  # only rows the filter passes are scored (df counted them all)
        keep = mask[rows]
        rows, tf, term_weight = rows[keep], tf[keep], term_weight[keep]
    share = weighting.score(term_weight, tf, rows).astype(np.float64)
    if len(essential) == 1:  # one run: its rows are distinct and ascending
        return rows, share
    lo, hi = span
    if rows.size >= (hi - lo) * _DENSE_SHARE:  # many postings: one pass over the positions
        at = rows - lo
        sums = np.bincount(at, weights=share, minlength=hi - lo)
        hit = np.zeros(hi - lo, dtype=bool)
        hit[at] = True
        found = np.flatnonzero(hit)
        return found + lo, sums[found]
    # the runs are each ascending: a stable sort merges them (timsort finds the runs)
    order = np.argsort(rows, kind="stable")
    rows, share = rows[order], share[order]
    if not rows.size:
        return rows, share
    first = np.flatnonzero(np.concatenate([[True], rows[1:] != rows[:-1]]))
    return rows[first], np.add.reduceat(share, first)


def _best(pos: np.ndarray, val: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of ``(pos, val)``, best first, ties in stored order (every document
    tied with the ``k``-th is weighed, so the tie goes to the earliest)."""
    if pos.size > k:
        kth = np.partition(val, pos.size - k)[pos.size - k]
        keep = np.flatnonzero(val >= kth)
        pos, val = pos[keep], val[keep]
    order = np.lexsort((pos, -val))[:k]
    return pos[order], val[order]
