"""Index upkeep in a whole collection: readers load the saved index, writers retrain it.

Real FAISS and real files; the vectors are given (no encoder). The ``auto`` policy's
thresholds are lowered so that a few hundred rows exercise what happens at a million.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

import embedsearch
import embedsearch.index as index_mod
import embedsearch.table
from embedsearch.index import VectorIndex


@pytest.fixture
def small_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_mod, "EXACT_MAX_ROWS", 300)
    monkeypatch.setattr(index_mod, "_TRAIN_PER_CELL", 4)
    monkeypatch.setattr(index_mod, "_TRAIN_MIN_SAMPLE", 256)


def _vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(16, 384))
    x = centers[rng.integers(0, 16, n)] + 0.5 * rng.normal(size=(n, 384))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _add(col, vecs: np.ndarray, start: int) -> None:
    ids = [f"d{i}" for i in range(start, start + len(vecs))]
    col.add(ids, ids=ids, vectors=vecs, progress=False)


def test_open_loads_the_saved_index_and_never_retrains(home, small_policy, monkeypatch) -> None:
    col = embedsearch.open("big")
    data = _vectors(700, 0)
    _add(col, data[:400], 0)
    assert col.info()["index"]["kind"] == "approximate"
    _add(col, data[400:700], 400)  # past 4x the training sample: the old rule retrained here
    info = col.info()["index"]
    assert info["trained_for"] == 400 and info["rows"] == 700
    col.close()

    def no_build(self, vectors, **kw):  # a reader must load, not train
        raise AssertionError("a reader rebuilt the index")

    monkeypatch.setattr(VectorIndex, "build", no_build)
    reader = embedsearch.open("big")
    hits = reader.search(data[5], k=3)
    assert hits[0].id == "d5"
    assert reader.info()["index"]["trained_for"] == 400
    reader.close()


def test_writer_retrains_without_blocking_readers(home, small_policy, monkeypatch) -> None:
    col = embedsearch.open("grow")
    data = _vectors(1700, 1)
    _add(col, data[:400], 0)
    old = col._index
    started, release = threading.Event(), threading.Event()
    real_build = VectorIndex.build

    def slow_build(self, vectors, **kw):
        started.set()
        assert release.wait(60)
        real_build(self, vectors, **kw)

    monkeypatch.setattr(VectorIndex, "build", slow_build)
    writer = threading.Thread(target=_add, args=(col, data[400:1700], 400))
    writer.start()
    assert started.wait(60)  # the writer is retraining (1,700 rows >= 4 x 400) ...
    # ... and searches meanwhile are answered by the previous index, new rows included.
    assert col._index is old
    assert col.search(data[1600], k=1)[0].id == "d1600"
    release.set()
    writer.join(60)
    assert col._index is not old and col.info()["index"]["trained_for"] == 1700
    assert col.search(data[1650], k=1)[0].id == "d1650"
    col.close()


def test_a_saved_index_is_read_on_first_need_not_at_open(tmp_path, monkeypatch):
    """Open defers reading the saved index (VectorIndex.defer): info, explain and a search
    whose filter makes the plan exact never read it; the first approximate search reads it
    once; every answer equals those of an eagerly loaded handle."""
    import embedsearch
    from embedsearch.index import faiss

    rng = np.random.default_rng(3)
    v = rng.normal(size=(12_000, 384)).astype(np.float32)
    col = embedsearch.open(tmp_path / "c", index="IVF64,SQ8")
    col.add(
        [f"t{i}" for i in range(12_000)],
        ids=[f"i{i}" for i in range(12_000)],
        vectors=v,
        metadata=[{"cat": i % 100} for i in range(12_000)],
    )
    col.close()
    read = []
    real = faiss().read_index
    monkeypatch.setattr(faiss(), "read_index", lambda p, *a: read.append(p) or real(p, *a))
    q = rng.normal(size=(6, 384)).astype(np.float32)
    lazy = embedsearch.open(tmp_path / "c")
    assert lazy.info()["index"]["kind"] == "approximate" and read == []
    assert lazy.explain(10, where={"cat": 7})["plan"] == "exact-filtered"
    few = [[h.id for h in r] for r in lazy.batch_search(q, 10, where={"cat": 7})]
    assert read == []  # a selective filter is answered exactly: nothing to read
    many = [[h.id for h in r] for r in lazy.batch_search(q, 10)]
    many_again = [[h.id for h in r] for r in lazy.batch_search(q, 10)]
    assert len(read) == 1 and many == many_again
    monkeypatch.setenv("EMBEDSEARCH_EAGER_INDEX", "1")
    eager = embedsearch.open(tmp_path / "c")
    assert len(read) == 2  # read at open
    assert [[h.id for h in r] for r in eager.batch_search(q, 10, where={"cat": 7})] == few
    assert [[h.id for h in r] for r in eager.batch_search(q, 10)] == many


def test_reindex_reads_the_rows_a_chunk_at_a_time(
    home, small_policy, monkeypatch, take_sizes
) -> None:
    """``reindex`` (and any build over a whole collection) hands FAISS the rows in chunks of
    ``_ADD_CHUNK``: it never takes every vector of the segments into one copy (7.7 GB at 5M
    rows), and the index it builds answers as one built from a contiguous copy does."""
    from embedsearch.table import Table

    monkeypatch.setattr(index_mod, "_ADD_CHUNK", 128)
    monkeypatch.setattr(index_mod, "_RERANK_BATCH_ROWS", 256)  # a batch's shortlist reads
    col = embedsearch.open("chunks")
    data = _vectors(900, 3)
    for lo in range(0, 900, 300):  # three segments
        _add(col, data[lo : lo + 300], lo)
    largest = take_sizes

    def no_copy(self, rows=None):
        raise AssertionError("a build made one contiguous copy of every vector")

    monkeypatch.setattr(Table, "contiguous", no_copy)
    largest.clear()  # the adds above read rows too: count from here
    col.reindex("IVF8,SQ8")
    assert col.info()["index"]["resolved"] == "IVF8,SQ8"
    assert largest and max(largest) <= 300, max(largest)  # chunks, samples, shortlists
    reference = VectorIndex("IVF8,SQ8", 384)
    reference.build(data)
    for q in data[[5, 450, 899]]:
        _, want = reference.search(data, q[None, :], 5, None)
        got = col.search(q, k=5)
        assert [h.id for h in got] == [f"d{p}" for p in want[0]]
    col.close()


def test_the_index_takes_a_writes_rows_from_memory_not_from_its_segments(
    home, small_policy, monkeypatch
) -> None:
    """An add hands the index the vectors it just wrote (as stored: unit float32) instead
    of reading them back from the new segments, and the index is byte for byte the one
    built by reading them back; a write past FRESH_INDEX_BYTES reads its rows back."""
    import faiss

    import embedsearch.collection as collection_mod
    from embedsearch.table import VectorView

    data = _vectors(800, 3) * 3.0  # not unit: the index must get the stored (normalised) rows
    reads: list[int] = []
    real_getitem = VectorView.__getitem__

    def counting(self, key):
        out = real_getitem(self, key)
        reads.append(len(out) if getattr(out, "ndim", 1) == 2 else 1)
        return out

    monkeypatch.setattr(VectorView, "__getitem__", counting)
    indexes = []
    for name, budget in (("memory", collection_mod.FRESH_INDEX_BYTES), ("read-back", 0)):
        monkeypatch.setattr(collection_mod, "FRESH_INDEX_BYTES", budget)
        col = embedsearch.open(name)
        _add(col, data[:400], 0)
        assert col.info()["index"]["kind"] == "approximate"
        reads.clear()
        with monkeypatch.context() as m:  # re-tuning reads rows to re-rank: not counted here
            m.setattr(collection_mod.Collection, "_maintain_index", lambda self: False)
            _add(col, data[400:600], 400)
            _add(col, data[600:800], 600)
        assert sum(reads) == (0 if budget else 400)  # 200 rows of 384 floats: 300 KB each
        indexes.append(faiss.serialize_index(col._index._index))
        assert col._index.ntotal == 800
        assert [col.search(data[i], k=1)[0].id for i in range(0, 800, 80)] == [
            f"d{i}" for i in range(0, 800, 80)
        ]
        col.close()
    assert np.array_equal(indexes[0], indexes[1])


@pytest.mark.parametrize("spec", ["auto", "IVF16,Flat"])
def test_the_write_that_calls_for_a_first_index_commits_it_with_its_rows(
    home, small_policy, monkeypatch, spec
) -> None:
    """Below the exact threshold (``auto``) or the rows a spec trains on (``IVF16`` waits
    for 16), search is exact and no index is saved. The write whose rows call for the first
    trained index trains and saves it *before* it commits: one commit names the rows and
    their index, so a reader opening them at once loads it and never trains one itself."""
    col = embedsearch.open("first", index=spec)
    data = _vectors(500, 3)
    few = 200 if spec == "auto" else 10
    _add(col, data[:few], 0)
    assert col.info()["index"]["kind"] == "exact"
    assert col._manifest.index.file is None
    _add(col, data[few:500], few)
    assert [v.op for v in col.versions()][-2:] == ["add", "add"]  # no separate 'index' commit
    saved = col._manifest.index.file
    assert saved is not None and saved.rows == 500 and saved.epoch == col._manifest.epoch
    assert col.info()["index"]["kind"] == "approximate" and col._index.ntotal == 500

    def no_build(self, vectors, **kw):  # a reader must load, not train
        raise AssertionError("a reader trained the index")

    monkeypatch.setattr(VectorIndex, "build", no_build)
    reader = embedsearch.open("first")
    assert reader.info()["index"]["kind"] == "approximate"
    assert reader.search(data[450], k=1)[0].id == "d450"
    reader.close()
    col.close()


def _resident_vector_kb(root) -> int:
    """Resident KB of this process's maps of ``root``'s vector files (``/proc/self/smaps``)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and not head[0].endswith(":"):  # a mapping's header line
            inside = head[-1].endswith(".f32") and head[-1].startswith(str(root))
        elif inside and head[0] == "Rss:":
            total += int(head[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads Linux's smaps")
def test_a_writers_pass_over_every_row_leaves_no_vector_page_mapped(
    home, tmp_path, monkeypatch
) -> None:
    """Training, filling and tuning an index read every stored row through the segments'
    maps, which left whole vector files resident in the writer (1.3 GB of a 1M-row build's
    2.35 GB peak RSS). Each pass now unmaps what it read (the page cache keeps the bytes),
    while a scan a query makes keeps its pages. The sizes are scaled to 12,000 rows as
    they stand at a million: a take this large keeps its pages (as the training sample's,
    a filter's 10 % and the fill's chunks do there), a re-rank's batch does not."""
    monkeypatch.setattr(embedsearch.table, "RELEASE_AFTER_TAKE", 500)
    monkeypatch.setattr(index_mod, "_RERANK_BATCH_ROWS", 250)
    monkeypatch.setattr(index_mod, "_TRAIN_MIN_SAMPLE", 1_000)  # a sample, not every row
    col = embedsearch.open(tmp_path / "wide")
    for b in range(4):
        _add(col, _vectors(3_000, 10 + b), 3_000 * b)
    files = list((tmp_path / "wide").rglob("*.f32"))
    file_kb = sum(f.stat().st_size for f in files) // 1024
    assert len(files) >= 2 and file_kb > 15_000
    col.search(_vectors(1, 99)[0], k=5)  # an exact scan of a query keeps its pages
    assert _resident_vector_kb(tmp_path / "wide") > 0.9 * file_kb
    col.close()
    col = embedsearch.open(tmp_path / "wide")  # nothing mapped yet
    tune, kmeans, before_tuning, before_training = (
        VectorIndex.tune,
        index_mod.spherical_kmeans,
        [],
        [],
    )

    def tune_and_note(self, *args, **kwargs):  # what sampling and filling left mapped
        before_tuning.append(_resident_vector_kb(tmp_path / "wide"))
        return tune(self, *args, **kwargs)

    def kmeans_and_note(*args, **kwargs):  # what reading the training sample left mapped
        before_training.append(_resident_vector_kb(tmp_path / "wide"))
        return kmeans(*args, **kwargs)

    monkeypatch.setattr(VectorIndex, "tune", tune_and_note)
    monkeypatch.setattr(index_mod, "spherical_kmeans", kmeans_and_note)
    col.reindex("IVF32,SQ8")  # sample, train, fill and tune (filters too) over 12,000 rows
    assert col.info()["index"]["kind"] == "approximate"
    assert before_training and max(before_training) < 0.05 * file_kb
    assert before_tuning and max(before_tuning) < 0.05 * file_kb
    assert _resident_vector_kb(tmp_path / "wide") < 0.05 * file_kb
    hits = col.search(_vectors(1, 7)[0], k=5)  # the rows are still read correctly
    assert len(hits) == 5
