"""The numpy parts of index building (issue 19): k-means, cell assignment, vector checks.

Each is checked against what FAISS (or the per-row code it replaces) computes itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from embedsearch.errors import InvalidInputError
from embedsearch.index import SearchOptions, VectorIndex, exact_search, faiss, spherical_kmeans
from embedsearch.validation import unit_rows, unit_vector


def _clustered(n: int, dim: int = 64, centers: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32)
    x = c[rng.integers(0, centers, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_spherical_kmeans_is_as_good_as_faiss_kmeans() -> None:
    x = _clustered(6000)
    ours = spherical_kmeans(x, 64, niter=10, seed=1)
    assert ours.shape == (64, 64) and np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    km = faiss().Kmeans(64, 64, niter=10, spherical=True, seed=1, verbose=False)
    km.train(x)
    ours_fit = float(np.mean(np.max(x @ ours.T, axis=1)))
    faiss_fit = float(np.mean(np.max(x @ km.centroids.T, axis=1)))
    assert ours_fit >= faiss_fit - 0.01, (ours_fit, faiss_fit)
    cells = np.argmax(x @ ours.T, axis=1)
    assert np.bincount(cells, minlength=64).min() > 0  # empty cells were split


def test_numpy_assignment_puts_rows_where_faiss_would() -> None:
    x = _clustered(5000, dim=384, seed=2)
    ours = VectorIndex("IVF32,SQ8", 384)
    ours.build(x)  # numpy k-means, then rows added with numpy-computed cells
    ivf = faiss().extract_index_ivf(ours._index)
    _, want = ivf.quantizer.search(x, 1)  # FAISS's own assignment to the same centroids
    sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)])
    assert np.array_equal(sizes, np.bincount(want[:, 0], minlength=ivf.nlist))
    theirs = faiss().index_factory(384, "IVF32,SQ8", faiss().METRIC_INNER_PRODUCT)
    faiss().extract_index_ivf(theirs).quantizer.add(ivf.quantizer.reconstruct_n(0, ivf.nlist))
    theirs.train(x)
    theirs.add(x)  # FAISS's add path
    q = x[:50]
    p = faiss().SearchParametersIVF()
    p.nprobe = 4
    assert np.array_equal(ours._index.search(q, 10, params=p)[1], theirs.search(q, 10, params=p)[1])


def test_unit_rows_matches_the_per_row_check() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 16)) * 1e30
    x[7] = rng.standard_normal(16) * 1e-300  # tiny but not zero: scaled first, as per row
    got = unit_rows(x, 16)
    assert got.dtype == np.float32
    assert np.array_equal(got, np.stack([unit_vector(r, 16) for r in x]))
    for bad, msg in ((np.nan, "NaN"), (0.0, "zero vector")):
        y = x.copy()
        y[2999] = bad
        with pytest.raises(InvalidInputError, match=rf"vectors\[2999\].*{msg}"):
            unit_rows(y, 16)
    with pytest.raises(InvalidInputError, match="16 dimensions"):
        unit_rows(x[:, :8], 16)


@pytest.mark.parametrize("spec", ["IVF32,SQ8", "IVF32,PQ16x4fs", "IVF32,PQ16x4fs,SOAR"])
def test_numpy_coarse_step_finds_faiss_cells_and_the_same_hits(spec: str) -> None:
    """Queries find their probed cells by one numpy product over the quantizer's centroids
    (read in place); the cells, best first, and the hits, filtered or not, are FAISS's own."""
    x = _clustered(6000, dim=64, seed=4)
    queries = _clustered(40, dim=64, seed=5)
    index = VectorIndex(spec, 64)
    index.build(x)
    ivf = index._unwrapped()[0]
    for nprobe in (1, 5, 32, 40):  # 40 > nlist: every cell
        for batch in (queries[:1], queries[:4]):
            sims, cells = index._coarse(batch, nprobe)
            want_sims, want_cells = ivf.quantizer.search(batch, min(nprobe, 32))
            assert np.array_equal(cells, want_cells)
            assert np.allclose(sims, want_sims, atol=1e-5)
    assert index._coarse(queries, 5) is None  # a batch of 40: FAISS finds the cells
    live = np.random.default_rng(6).random(6000) < 0.3
    opts = SearchOptions(nprobe=4, rerank=64)
    for mask in (None, live):
        for batch in [queries[i : i + 1] for i in range(10)] + [queries[10:14]]:
            ours = index.search(x, batch, 10, mask, opts)  # cells from numpy
            index._unwrapped_of = (index._index, ivf, False, None)  # plumbing: no centroids
            assert index._coarse(batch, 4) is None  # so FAISS's quantizer finds them
            theirs = index.search(x, batch, 10, mask, opts)
            index._unwrapped_of = None
            assert np.array_equal(ours[1], theirs[1]) and np.allclose(ours[0], theirs[0])
            if mask is not None:
                assert live[ours[1][ours[1] >= 0]].all()


class _Blocks:
    """Pure plumbing (named as such): an in-memory matrix that offers ``blocks()`` the way a
    collection's segments do, so exact_search takes its block-by-block path."""

    def __init__(self, x: np.ndarray, rows: int) -> None:
        self._x, self._rows, self.shape = x, rows, x.shape

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:  # a selective filter gathers
        return self._x[rows]

    def blocks(self):  # noqa: ANN201 - an iterator of (start, view)
        for lo in range(0, self._x.shape[0], self._rows):
            yield lo, self._x[lo : lo + self._rows]


@pytest.mark.parametrize("k", [1, 10, 266, 700])
def test_block_scan_finds_the_exact_top_k(k: int) -> None:
    """The segment-by-segment scan returns the brute-force top k: scores in order, each
    position's own score, dead rows never, -1 / -inf padding past the live rows."""
    from embedsearch.index import exact_search

    x = _clustered(2_000, seed=3)
    x[1500:1600] = x[100]  # a hundred copies: equal scores across blocks
    q = np.concatenate([x[[100, 7, 1999]], _clustered(5, seed=4)])
    for live in (None, np.arange(2_000) % 3 == 0, np.arange(2_000) < 40):
        sims = q @ x.T
        if live is not None:
            sims[:, ~live] = -np.inf
        s, p = exact_search(_Blocks(x, 300), q, k, live)
        want = np.sort(sims, axis=1)[:, ::-1][:, :k]
        finite = np.isfinite(want)
        assert np.allclose(s[finite], want[finite])
        assert (p[~np.isfinite(s)] == -1).all() and not np.isfinite(s[~finite]).any()
        for i in range(q.shape[0]):
            got = p[i][p[i] >= 0]
            assert live is None or live[got].all()
            assert np.allclose(sims[i, got], s[i, : got.size])
            assert len(set(got.tolist())) == got.size
        dense_s, dense_p = exact_search(x, q, k, live)  # the in-memory path agrees
        assert np.allclose(dense_s[finite], s[finite])


def test_later_blocks_are_searched_above_the_kth_best_so_far(monkeypatch) -> None:
    """Once each query holds k scores, a block contributes only the scores at least its
    k-th best (found a word of eight flags at a time): the answer is the brute-force one
    and most blocks never go through a selection of all their scores."""
    import embedsearch.index as index_mod

    rng = np.random.default_rng(12)
    for shape in [(0,), (5,), (7, 3), (3, 13), (40, 1000)]:
        for share in (0.0, 0.01, 0.5, 1.0):
            mask = rng.random(shape) < share
            np.testing.assert_array_equal(index_mod._true_at(mask), np.flatnonzero(mask))
    picks: list[bool] = []
    above = index_mod._above_floor

    def spy(*args):  # noqa: ANN002, ANN202 - records whether the floor served the block
        out = above(*args)
        picks.append(out is not None)
        return out

    monkeypatch.setattr(index_mod, "_above_floor", spy)
    x = _clustered(6_000, seed=13)
    q = _clustered(9, seed=14)
    s, p = exact_search(_Blocks(x, 500), q, 10)
    want = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_allclose(s, np.take_along_axis(q @ x.T, want, axis=1), atol=1e-6)
    assert (np.sort(p, axis=1) == np.sort(want, axis=1)).mean() > 0.99  # ties may swap
    assert len(picks) == 11 and sum(picks) >= 8


def test_a_segment_larger_than_a_block_is_scored_a_block_at_a_time(monkeypatch) -> None:
    """A segment of more rows than ``_EXACT_BLOCK_ROWS`` (compaction writes 200k-row ones)
    is scored in pieces of at most that many rows, so 200 tuning queries never hold one
    (200, segment) score matrix; the answer is the one unsplit blocks give."""
    import embedsearch.index as index_mod

    x = _clustered(2_000, seed=6)
    q = _clustered(7, seed=7)
    whole_s, whole_p = exact_search(_Blocks(x, 700), q, 25)
    seen: list[int] = []
    scan = index_mod._exact_blocks

    def recording(blocks, *args):  # noqa: ANN001, ANN202 - records each block's rows
        def counted():  # noqa: ANN202
            for start, block in blocks:
                seen.append(block.shape[0])
                yield start, block

        return scan(counted(), *args)

    monkeypatch.setattr(index_mod, "_EXACT_BLOCK_ROWS", 128)
    monkeypatch.setattr(index_mod, "_exact_blocks", recording)
    s, p = exact_search(_Blocks(x, 700), q, 25)
    assert max(seen) == 128 and sum(seen) == 2_000
    assert np.array_equal(p, whole_p) and np.allclose(s, whole_s)


@pytest.mark.parametrize("batch_rows", [32_768, 200])
def test_a_batch_is_re_ranked_as_each_query_alone(monkeypatch, batch_rows: int) -> None:
    """A batch's shortlists are read in one gather of their distinct rows (in pieces of
    ``_RERANK_BATCH_ROWS``); each query's answer is the one it gets searched alone, padding
    included (a shortlist longer than the rows)."""
    import embedsearch.index as index_mod

    monkeypatch.setattr(index_mod, "_RERANK_BATCH_ROWS", batch_rows)
    x = _clustered(3_000, dim=64, seed=5)
    idx = VectorIndex("IVF16,SQ8", 64)
    idx.build(x)
    q = _clustered(30, dim=64, seed=6)
    for opts in (SearchOptions(2, None, 64), SearchOptions(16, None, 4_000)):
        s, p = idx.search(x, q, 10, None, opts)
        for i in range(q.shape[0]):
            s1, p1 = idx.search(x, q[i : i + 1], 10, None, opts)
            assert np.array_equal(p[i], p1[0]) and np.allclose(s[i], s1[0])
    wide = exact_search(_Blocks(x, 700), q, 5)  # exact top 5 over blocks, for comparison
    s, p = idx.search(x, q, 5, None, SearchOptions(16, None, 4_000))  # every row re-ranked
    assert np.array_equal(p, wide[1])


@pytest.mark.parametrize(
    "spec", ["IVF32,Flat", "IVF32,SQ8", "IVF32,PQ16x4fs", "PCA32,IVF32,PQ8", "IVF32,PQ16x4fs,SOAR"]
)
def test_compaction_renumbers_the_index_without_encoding_a_row_again(spec: str) -> None:
    """``renumbered(dead)`` removes the dead rows' entries and shifts each list's ids down
    by the dead positions before them: every cell holds the rows the trained index filled
    again with the live rows (``refilled``) holds there, and it answers as that index
    does, without assigning or encoding any row. (Removal moves a list's last entries into
    the holes, so where fast-scan's 16-bit distance estimates tie at the shortlist's edge
    the two may keep different rows.) An index that spills rows into a second list (SOAR)
    is refilled instead."""
    from embedsearch.index import faiss as load_faiss

    faiss = load_faiss()

    x = _clustered(6000, dim=64, seed=7)
    queries = _clustered(20, dim=64, seed=8)
    index = VectorIndex(spec, 64)
    index.build(x)
    assert index.info.kind == "approximate"  # a PCA pre-transform too (it trained no cells)
    dead = np.sort(np.random.default_rng(9).choice(6000, 2500, replace=False))
    live = np.setdiff1d(np.arange(6000), dead)
    renumbered = index.renumbered(dead)
    if spec.endswith("SOAR"):
        assert renumbered is None
        return
    refilled = index.refilled(x[live])
    assert renumbered.info.rows == refilled.info.rows == live.size
    assert renumbered._index.ntotal == live.size

    def cells(v: VectorIndex) -> list[list[int]]:
        ivf = faiss.extract_index_ivf(v._index)
        lists = ivf.invlists
        return [
            sorted(faiss.rev_swig_ptr(lists.get_ids(c), lists.list_size(c)).tolist())
            for c in range(ivf.nlist)
        ]

    assert cells(renumbered) == cells(refilled)
    opts = SearchOptions(nprobe=8, rerank=40)
    truth = exact_search(x[live], queries, 10)[1]
    recall = {"renumbered": [], "refilled": []}
    for i in range(len(queries)):
        q = queries[i : i + 1]
        a = renumbered.search(x[live], q, 10, None, opts)
        b = refilled.search(x[live], q, 10, None, opts)
        if "x4fs" not in spec:
            assert np.array_equal(a[1], b[1]) and np.allclose(a[0], b[0])
        for name, got in (("renumbered", a), ("refilled", b)):
            recall[name].append(len(set(got[1][0].tolist()) & set(truth[i].tolist())) / 10)
    assert np.mean(recall["renumbered"]) >= np.mean(recall["refilled"]) - 0.02, recall
    assert index._index.ntotal == 6000  # the original is untouched
