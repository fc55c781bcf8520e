"""MaxScore top-k (embedsearch.rag.scoring) against exhaustive scoring of the same postings.

Pure numpy: random postings over a few "segments", documents repeated (so scores tie), terms
common and rare, filters, every k. The pruned ranking must be the exhaustive one: the same
documents in the same order (ties in stored order), the same scores.
"""

from __future__ import annotations

import numpy as np
import pytest

from embedsearch.rag.scoring import Run, Weighting, batches, top_k


def _exhaustive(runs, weighting, k, mask):
    """Every document's score summed term by term, sorted best first, ties by position."""
    total = np.zeros(weighting.doclen.size, dtype=np.float64)
    seen = np.zeros(weighting.doclen.size, dtype=bool)
    for t, run in enumerate(runs):
        if run is None:
            continue
        share = weighting.score(weighting.weight[t], run.tf, run.rows)
        np.add.at(total, run.rows, share.astype(np.float64))
        seen[run.rows] = True
    if mask is not None:
        seen &= mask
    pos = np.flatnonzero(seen)
    val = total[pos].astype(np.float32)
    keep = val > 0
    pos, val = pos[keep], val[keep]
    order = np.lexsort((pos, -val))[:k]
    return pos[order], val[order]


def _collection(rng, segments, per_segment, terms, repeat):
    """Postings of ``terms`` over ``segments`` segments; every ``repeat``-th document is a
    copy of an earlier one (same terms, counts and length), so their scores tie exactly."""
    rows = segments * per_segment
    doclen = rng.integers(3, 60, rows).astype(np.float32)
    density = np.geomspace(0.4, 0.002, terms)  # common to rare
    hold = rng.random((terms, rows)) < density[:, None]
    tf = rng.integers(1, 4, (terms, rows))
    for i in range(repeat, rows, repeat):  # a copy of the document repeat rows before
        hold[:, i], tf[:, i], doclen[i] = hold[:, i - repeat], tf[:, i - repeat], doclen[i - repeat]
    runs = []
    for t in range(terms):
        r = np.flatnonzero(hold[t])
        runs.append(Run(r.astype(np.int64), tf[t, r].astype(np.uint32)) if r.size else None)
    starts = [s * per_segment for s in range(segments)]
    return runs, doclen, starts


@pytest.mark.parametrize("seed", range(12))
def test_pruned_top_k_is_the_exhaustive_ranking(seed):
    rng = np.random.default_rng(seed)
    segments = int(rng.integers(1, 12))
    runs, doclen, starts = _collection(rng, segments, int(rng.integers(50, 400)), 9, 37)
    weight = rng.uniform(0.05, 6.0, len(runs)).astype(np.float32)
    weight[rng.integers(len(runs))] = 0.0  # a term in more than half the rows (Robertson)
    if seed % 3 == 0:
        runs[int(rng.integers(len(runs)))] = None  # a query term in no document
    weighting = Weighting(weight, np.float32(0.3), np.float32(0.9 / doclen.mean()), doclen)
    spans = batches(starts, doclen.size)
    masks = [None, rng.random(doclen.size) < 0.1, rng.random(doclen.size) < 0.005]
    for mask in masks:
        for k in (1, 3, 10, 57, 10_000):
            got_pos, got_val = top_k(runs, weighting, k, spans, mask)
            ref_pos, ref_val = _exhaustive(runs, weighting, k, mask)
            assert got_pos.tolist() == ref_pos.tolist(), (k, mask is None)
            np.testing.assert_allclose(got_val, ref_val, rtol=1e-6)


def test_pruning_skips_postings_and_ties_go_to_the_earliest():
    """Every document appears in every segment (a corpus repeated), so the k-th score is
    reached in the first batch: the later batches' common terms are only looked up, and the
    ties the copies make go to the first copies."""
    base = np.random.default_rng(7)
    runs0, doclen0, _ = _collection(base, 1, 500, 6, 10**9)
    segments = 8
    runs = [
        None
        if r is None
        else Run(
            np.concatenate([r.rows + s * 500 for s in range(segments)]),
            np.tile(r.tf, segments),
        )
        for r in runs0
    ]
    doclen = np.tile(doclen0, segments)
    weight = np.array([0.2, 0.4, 0.6, 3.0, 4.0, 5.0], dtype=np.float32)
    weighting = _Counting(weight, np.float32(0.3), np.float32(0.9 / doclen.mean()), doclen)
    pos, val = top_k(runs, weighting, 5, batches([s * 500 for s in range(segments)], doclen.size))
    scored = weighting.scored[0]
    ref_pos, ref_val = _exhaustive(runs, weighting, 5, None)
    assert pos.tolist() == ref_pos.tolist()
    tied = pos[val == val[0]]
    assert tied.size > 1 and (np.diff(tied) > 0).all()  # the copies tie: the first ones win
    np.testing.assert_allclose(val, ref_val, rtol=1e-6)
    postings = sum(r.rows.size for r in runs if r is not None)
    assert scored < postings / 3  # the light terms' postings were mostly skipped


class _Counting(Weighting):
    """Weighting that counts the postings it scores (a test probe, not a fake: the scores
    are the real ones)."""

    def __init__(self, *args):
        super().__init__(*args)
        object.__setattr__(self, "scored", [0])

    def score(self, term_weight, tf, rows):
        self.scored[0] += np.size(rows)
        return super().score(term_weight, tf, rows)


def test_batches_grow_and_cover_every_segment():
    starts = [0, 10, 25, 40, 41, 90, 100]
    assert batches(starts[:1], 7) == [(0, 7)]
    spans = batches(starts, 130)
    assert spans == [(0, 10), (10, 40), (40, 130)]  # 1, 2, then 4 segments
    assert batches([], 0) == []


@pytest.mark.parametrize("seed", range(6))
def test_bounds_from_counts_and_the_shortest_row_prune_more_and_rank_the_same(seed):
    """A term's bound is the share of its largest count in a row of the shortest length
    (not its weight, which a share only nears as the count grows): the ranking is still the
    exhaustive one, and no more postings are scored than with the weights as bounds."""
    rng = np.random.default_rng(300 + seed)
    runs, doclen, starts = _collection(rng, 8, int(rng.integers(200, 500)), 9, 10**9)
    runs = [
        None if r is None else Run(r.rows, np.minimum(r.tf, 1 + (r.rows % 5 == 0))) for r in runs
    ]
    weight = rng.uniform(0.05, 6.0, len(runs)).astype(np.float32)
    spans = batches(starts, doclen.size)
    args = (weight, np.float32(0.9), np.float32(1.2 / doclen.mean()), doclen)
    loose, tight = _Counting(*args), _Counting(*args, float(doclen.min()))
    for k in (1, 10, 100):
        ref_pos, ref_val = _exhaustive(runs, Weighting(*args), k, None)  # (not counted)
        for weighting in (loose, tight):
            pos, val = top_k(runs, weighting, k, spans)
            assert pos.tolist() == ref_pos.tolist()
            np.testing.assert_allclose(val, ref_val, rtol=1e-6)
    assert tight.scored[0] < loose.scored[0]


@pytest.mark.parametrize("seed", range(8))
def test_a_terms_bound_holds_every_share_and_is_reached(seed):
    """``Weighting.bound`` is at least every share of the term's postings (as scored, in
    float32), and, where its largest count sits in a row of the shortest length, within
    rounding of that share: the bound MaxScore prunes by is never below a real share, and
    not looser than it need be."""
    rng = np.random.default_rng(400 + seed)
    rows = 5_000
    doclen = rng.integers(1, 400, rows).astype(np.float32)
    held = np.sort(rng.choice(rows, 600, replace=False))
    tf = rng.integers(1, 1 + int(rng.integers(1, 9000)), held.size).astype(np.uint32)
    weighting = Weighting(
        rng.uniform(0.01, 9.0, 1).astype(np.float32),
        np.float32(rng.uniform(0, 2)),
        np.float32(rng.uniform(0, 0.05)),
        doclen,
        float(doclen.min()),
    )
    run = Run(held.astype(np.int64), tf)
    shares = weighting.score(weighting.weight[0], run.tf, run.rows)
    assert weighting.bound(0, run) >= shares.max()
    shortest = held[np.argmin(doclen[held])]
    doclen[shortest] = doclen.min()
    tf[np.searchsorted(held, shortest)] = tf.max()
    reached = weighting.score(weighting.weight[0], run.tf, run.rows).max()
    assert reached <= weighting.bound(0, run) <= reached * (1 + 1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_a_question_of_hundreds_of_light_terms_ranks_as_exhaustive_scoring(seed):
    """A whole article asked as a question: hundreds of terms, most of them rare, so most
    are non-essential and looked up; a rare term's rows are searched among the documents
    found (the other way round for common ones) and the documents are pruned only every so
    often. The ranking and scores are still the exhaustive ones."""
    rng = np.random.default_rng(900 + seed)
    runs, doclen, starts = _collection(rng, 6, int(rng.integers(300, 700)), 400, 53)
    weight = rng.uniform(0.01, 0.4, len(runs)).astype(np.float32)
    weight[:5] = rng.uniform(3.0, 6.0, 5)  # a few heavy (common) terms among them
    weighting = _Counting(weight, np.float32(0.3), np.float32(0.9 / doclen.mean()), doclen)
    spans = batches(starts, doclen.size)
    for mask in (None, rng.random(doclen.size) < 0.2):
        for k in (1, 10, 100):
            got_pos, got_val = top_k(runs, weighting, k, spans, mask)
            ref_pos, ref_val = _exhaustive(runs, weighting, k, mask)
            assert got_pos.tolist() == ref_pos.tolist(), (k, mask is None)
            np.testing.assert_allclose(got_val, ref_val, rtol=1e-6)
