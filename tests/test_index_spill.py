"""Spilled IVF lists (``IVF<nlist>,PQ<m>x4fs,SOAR``): every row in two lists, found once.

Real FAISS and real files. Checks the spec grammar, the SOAR choice of the second cell
(against a direct evaluation of its loss), that the lists hold every row exactly twice (in
its nearest cell and in its chosen one), that searches never return a row twice and find
more per probe than plain lists, and that a collection with such an index keeps it through
adds, saves, reopening, filters and ``verify``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import embedsearch
from embedsearch import IndexSpecError
from embedsearch.index import (
    SearchOptions,
    VectorIndex,
    entries_per_row,
    exact_search,
    faiss,
    validate_spec,
)
from embedsearch.maintenance import verify
from embedsearch.spill import CANDIDATES, LAMBDA, first_distinct, secondary_cells, spilled_entries


def _sphere(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _lists(index: VectorIndex) -> dict[int, list[int]]:
    """Row position -> the lists it is in, read from the FAISS inverted lists."""
    f = faiss()
    ivf = index._unwrapped()[0]
    where: dict[int, list[int]] = {}
    for lst in range(ivf.nlist):
        size = ivf.invlists.list_size(lst)
        if size:
            ptr = ivf.invlists.get_ids(lst)
            for pos in f.rev_swig_ptr(ptr, size).tolist():
                where.setdefault(pos, []).append(lst)
            ivf.invlists.release_ids(lst, ptr)
    return where


def test_the_spec_grammar_takes_soar_after_fast_scan_ivf_codes_only() -> None:
    assert validate_spec("IVF64,PQ16x4fs,SOAR", 32) == "IVF64,PQ16x4fs,SOAR"
    assert entries_per_row("IVF64,PQ16x4fs,SOAR") == 2 and entries_per_row("IVF64,SQ8") == 1
    for bad in (
        "IVF64,SQ8,SOAR",
        "IVF64,PQ8,SOAR",
        "HNSW32,SOAR",
        "SOAR",
        "PCA16,IVF64,PQ8x4fs,SOAR",
        "IVF64_HNSW32,PQ16x4fs,SOAR",
        "IVF1,PQ16x4fs,SOAR",
        "IVF64,PQ16x4fs,SOAR,SOAR",
        "IVF64,SOAR,PQ16x4fs",
    ):
        with pytest.raises(IndexSpecError) as err:
            validate_spec(bad, 32)
        assert "SOAR" in str(err.value) or "Supported" in str(err.value), bad


def test_the_second_cell_minimises_the_soar_loss() -> None:
    """Against the loss written out row by row over every candidate cell."""
    x = _sphere(300, 16, 1)
    centroids = _sphere(40, 16, 2)
    sims_all = x @ centroids.T
    cells = np.argsort(-sims_all, axis=1)[:, :CANDIDATES]
    sims = np.take_along_axis(sims_all, cells, axis=1)
    got = secondary_cells(x, centroids, sims, cells)
    for i in range(len(x)):
        r = x[i] - centroids[cells[i, 0]]
        losses = [
            float(
                np.sum((x[i] - centroids[c]) ** 2)
                + LAMBDA * float(r @ (x[i] - centroids[c])) ** 2 / float(r @ r)
            )
            for c in cells[i, 1:]
        ]
        assert got[i] == cells[i, 1 + int(np.argmin(losses))]
        assert got[i] != cells[i, 0]
    # not simply the second-nearest cell: the orthogonality term changes the choice
    assert (got != cells[:, 1]).mean() > 0.2


def test_every_row_is_in_its_own_cell_and_its_chosen_one_exactly() -> None:
    x = _sphere(6000, 32, 3)
    index = VectorIndex("IVF32,PQ16x4fs,SOAR", 32)
    index.build(x[:5000])
    index.add(x[5000:], x)  # rows added later are spilled too
    assert index._index.ntotal == 2 * len(x) and index.info.rows == len(x)
    assert index.check_against(len(x)) is None
    where = _lists(index)
    assert sorted(where) == list(range(len(x)))
    ivf = index._unwrapped()[0]
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    sims, cells = faiss().downcast_index(ivf.quantizer).search(x, CANDIDATES)
    second = secondary_cells(x, centroids, sims, cells)
    for pos, lists in where.items():
        assert sorted(lists) == sorted([int(cells[pos, 0]), int(second[pos])]), pos


def test_searches_return_each_row_once_and_find_more_per_probe() -> None:
    """Uniform points on a sphere (every cell has long borders): at each nprobe the spilled
    lists find clearly more true neighbours, about what plain lists find with twice the
    probes."""
    x = _sphere(20_000, 32, 0)
    queries = _sphere(300, 32, 9)
    _, truth = exact_search(x, queries, 10)
    recall = {}
    for spec in ("IVF64,PQ16x4fs", "IVF64,PQ16x4fs,SOAR"):
        index = VectorIndex(spec, 32)
        index.build(x)
        for probes in (1, 2, 4, 8):
            _, pos = index.search(x, queries, 10, None, SearchOptions(nprobe=probes, rerank=100))
            for row in pos:
                assert len(set(row.tolist())) == len(row), row  # no row twice
            found = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(pos, truth)]
            recall[spec, probes] = float(np.mean(found)) / 10
    for probes in (1, 2, 4):
        plain, spilled = recall["IVF64,PQ16x4fs", probes], recall["IVF64,PQ16x4fs,SOAR", probes]
        assert spilled > plain + 0.05, recall
        assert spilled >= recall["IVF64,PQ16x4fs", 2 * probes] - 0.03, recall


def test_a_plain_index_file_does_not_pass_for_a_spilled_one() -> None:
    x = _sphere(3000, 32, 4)
    plain = VectorIndex("IVF16,PQ16x4fs", 32)
    plain.build(x)
    assert plain.check_against(len(x)) is None
    plain.info.resolved = "IVF16,PQ16x4fs,SOAR"  # a manifest that says the lists are spilled
    assert "need 6000" in (plain.check_against(len(x)) or "")


def test_a_collection_keeps_its_spilled_index_through_adds_reopen_filters_and_verify(
    tmp_path: Path,
) -> None:
    spec = "IVF16,PQ96x4fs,SOAR"
    x = _sphere(4000, 384, 5)
    path = tmp_path / "spilled"
    col = embedsearch.open(path, index=spec)
    col.add(
        [f"text {i}" for i in range(3000)],
        ids=[f"d{i}" for i in range(3000)],
        metadata=[{"even": i % 2 == 0} for i in range(3000)],
        vectors=x[:3000],
    )
    col.close()
    col = embedsearch.open(path)
    assert col.info()["index"]["resolved"] == spec
    col.add(
        [f"text {i}" for i in range(3000, 4000)],
        ids=[f"d{i}" for i in range(3000, 4000)],
        metadata=[{"even": i % 2 == 0} for i in range(3000, 4000)],
        vectors=x[3000:],
    )
    col.close()
    report = verify(path)
    assert report.ok, report
    col = embedsearch.open(path)
    info = col.info()["index"]
    assert info["resolved"] == spec and info["rows"] == 4000 and "fallback" not in info
    for i in (0, 1234, 3999):  # each document finds itself first, once
        hits = col.search(x[i], k=20)
        assert hits[0].id == f"d{i}"
        assert len({h.id for h in hits}) == len(hits)
    hits = col.search(x[7], k=10, where={"even": False})
    assert hits[0].id == "d7" and all(int(h.id[1:]) % 2 == 1 for h in hits)
    assert col._index._index.ntotal == 8000  # two entries a row, rows added later included
    col.close()


def test_a_short_shortlist_still_holds_distinct_rows_without_falling_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A shortlist of k rows (``rerank=k``) from a spilled index holds k distinct rows: a
    row found twice must not leave it short, or the search widens its probes and ends in
    an exact scan (a spy on ``exact_search``, plumbing only, counts those)."""
    import embedsearch.index as index_module

    x = _sphere(20_000, 32, 6)
    queries = _sphere(50, 32, 7)
    index = VectorIndex("IVF64,PQ16x4fs,SOAR", 32)
    index.build(x)
    calls = []
    real = index_module.exact_search
    monkeypatch.setattr(
        index_module, "exact_search", lambda *a, **kw: calls.append(1) or real(*a, **kw)
    )
    _, pos = index.search(x, queries, 10, None, SearchOptions(nprobe=1, rerank=10))
    assert not calls
    assert all(len(set(row.tolist())) == 10 and (row >= 0).all() for row in pos)


def test_a_spilled_shortlist_holds_the_first_distinct_rows_in_order() -> None:
    """Against ``np.unique(return_index=True)``: each best-first shortlist's first ``fetch``
    distinct positions, in order, -1 slots dropped, padded; FAISS is asked for twice the
    shortlist, so that rows found through both of their lists still leave ``fetch``."""
    rng = np.random.default_rng(8)
    small = rng.integers(0, 60, (30, 80)).astype(np.int64)
    # a query's real shape (512 entries, positions of a 10-billion-row store) and one entry
    large = rng.integers(0, 10**10, (4, 300)).astype(np.int64)
    large = np.concatenate([large, large[:, rng.integers(0, 300, 212)]], axis=1)
    one = np.array([[5], [-1]], dtype=np.int64)
    for pos, fetches in ((small, (1, 10, 50, 80)), (large, (1, 256, 512)), (one, (1, 2))):
        pos[rng.random(pos.shape) < 0.1] = -1
        for fetch in fetches:
            got = first_distinct(pos, fetch)
            for i in range(len(pos)):
                _, first = np.unique(pos[i], return_index=True)
                first = np.sort(first[pos[i][first] >= 0])[:fetch]
                want = np.full(fetch, -1)
                want[: first.size] = pos[i][first]
                assert np.array_equal(got[i], want)
    assert all(spilled_entries(f) == 2 * f for f in (10, 256, 1000))
