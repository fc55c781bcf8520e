"""Persistence: round trips, deletes that stay deleted, compaction, locks, corruption, open()."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import embedsearch
from embedsearch import (
    CollectionNotFoundError,
    CorruptionError,
    DocumentNotFoundError,
    InvalidInputError,
    LockedError,
    ModelMismatchError,
    NotACollectionError,
)

QUERIES = [
    "black holes",
    "retirement",
    "tomato garden",
    "memory leak",
    "hail storm",
    "guitar chords",
]


def _results(col, where=None):
    return [[(h.id, round(h.score, 5)) for h in col.search(q, k=8, where=where)] for q in QUERIES]


def _build(name, demo_rows, **kw):
    col = embedsearch.open(name, **kw)
    col.add(
        [r["text"] for r in demo_rows],
        ids=[r["id"] for r in demo_rows],
        metadata=[{"topic": r["topic"], "year": r["year"]} for r in demo_rows],
    )
    return col


def test_round_trip_and_deletes_never_come_back(home, encoder, demo_rows):
    col = _build("rt", demo_rows)
    before = _results(col)
    filtered = _results(col, where={"year": {"$gte": 2010}})
    col.close()

    col = embedsearch.open("rt")
    assert _results(col) == before
    assert _results(col, where={"year": {"$gte": 2010}}) == filtered

    gone = sorted({hid for row in before for hid, _ in row[:3]})
    col.delete(gone)
    after_delete = _results(col)
    assert not {hid for row in after_delete for hid, _ in row} & set(gone)
    col.close()

    col = embedsearch.open("rt")
    assert _results(col) == after_delete
    assert all(g not in col for g in gone)
    col.set_retention(0)  # keep no past versions: compaction may free their files
    stats = col.compact()
    assert stats["rows_after"] == len(demo_rows) - len(gone)
    assert stats["bytes_after"] < stats["bytes_before"] and stats["bytes_past_versions"] == 0
    assert _results(col) == after_delete
    assert not list(col.path.glob("segments/del-*"))  # tombstones made permanent
    col.close()

    col = embedsearch.open("rt")
    assert _results(col) == after_delete
    assert col.info()["deleted"] == 0 and len(col) == len(demo_rows) - len(gone)
    col.close()


def test_upsert_survives_reopen_and_old_version_is_gone(home, encoder):
    col = embedsearch.open("up")
    col.add(["The first version talks about apples."], ids=["a"])
    col.upsert(["The second version talks about submarines."], ids=["a"])
    col.close()
    col = embedsearch.open("up")
    assert len(col) == 1
    hits = col.search("apples", k=5)
    assert [h.text for h in hits] == ["The second version talks about submarines."]
    col.close()


def test_kill_after_add_loses_nothing(tmp_path, encoder):
    """A process killed (SIGKILL) right after add() returns has committed its data."""
    path = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        import os, signal, embedsearch
        col = embedsearch.open({str(path)!r})
        col.add(["durable one", "durable two"], ids=["1", "2"])
        col.delete(["1"])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    col = embedsearch.open(path)
    assert col.ids() == ["2"]
    col.add(["a third"], ids=["3"])  # the dead writer's lock was released by the kernel
    assert len(col) == 2
    col.close()


def test_readers_see_commits_of_a_writer(home, encoder):
    writer = embedsearch.open("shared")
    writer.add(["first document about rivers"], ids=["r1"])
    reader = embedsearch.open("shared")
    assert len(reader) == 1
    writer.add(["second document about mountains"], ids=["m1"])
    assert len(reader) == 2
    assert reader.search("mountain peaks", k=1)[0].id == "m1"
    writer.delete(["r1"])
    assert reader.ids() == ["m1"]
    writer.close()
    reader.close()


def test_second_writer_is_refused_with_the_lock_named(home, encoder):
    first = embedsearch.open("locked")
    first.add(["held by the first writer"], ids=["a"])
    second = embedsearch.open("locked")
    with pytest.raises(LockedError, match="LOCK"):
        second.add(["refused"], ids=["b"])
    assert len(second) == 1
    script = f"import embedsearch; embedsearch.open({str(first.path)!r}).add(['x'], ids=['c'])"
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert (
        proc.returncode != 0
        and "LockedError" in proc.stderr
        and f"pid={__import__('os').getpid()}" in proc.stderr
    )
    first.close()
    second.add(["now allowed"], ids=["b"])
    assert len(second) == 2
    second.close()


def test_open_errors(home, encoder, tmp_path):
    with pytest.raises(CollectionNotFoundError):
        embedsearch.open("nope", create=False)
    not_ours = tmp_path / "photos"
    not_ours.mkdir()
    (not_ours / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(NotACollectionError):
        embedsearch.open(not_ours)
    for bad in ("../escape", "a/../../b", "", "name\x00", "x" * 200, "-dash"):
        if "/" in bad:
            continue  # explicit paths are the caller's own choice in the Python API
        with pytest.raises(InvalidInputError):
            embedsearch.open(bad)
    embedsearch.open("m").close()
    with pytest.raises(ModelMismatchError):
        embedsearch.open("m", model="/some/other/model")


def test_corrupted_manifest_and_segment_are_detected(home, encoder):
    col = embedsearch.open("corrupt")
    col.add(["some text", "more text"], ids=["a", "b"])
    col.close()
    manifest = col.path / "manifest.json"
    good = manifest.read_bytes()
    obj = json.loads(good)
    obj["segments"][0]["rows"] = 3  # a plausible edit, caught by the checksum
    manifest.write_text(json.dumps(obj))
    with pytest.raises(CorruptionError, match="manifest"):
        embedsearch.open("corrupt")
    manifest.write_bytes(good[: len(good) // 2])
    with pytest.raises(CorruptionError):
        embedsearch.open("corrupt")
    manifest.write_bytes(good)
    # Segment bytes are checked when first touched (open maps them, O(manifest)): damage
    # surfaces on the first read that needs them, never as a wrong result.
    # (too few rows for row checksums: test_format damages those)
    for pattern in ("segments/seg-*.arrow", "segments/seg-*.f32", "segments/seg-*.ids"):
        seg = next(col.path.glob(pattern))
        pristine = seg.read_bytes()
        data = bytearray(pristine)
        data[len(data) // 2] ^= 0xFF
        seg.write_bytes(bytes(data))
        reopened = embedsearch.open("corrupt")
        with pytest.raises(CorruptionError, match=seg.name):
            reopened.get(["a", "b"], include_vectors=True)
        if seg.suffix != ".ids":  # the id index is read by look-ups by id only
            with pytest.raises(CorruptionError, match=seg.name):
                reopened.search("text", k=2)
        reopened.close()
        seg.write_bytes(pristine)
    seg.write_bytes(pristine[:-1])  # a truncated file is caught by open itself (sizes)
    with pytest.raises(CorruptionError, match=seg.name):
        embedsearch.open("corrupt")


@pytest.mark.parametrize("spec", ["IVF16,Flat", "HNSW16", "IVF16,SQ8"])
def test_approximate_indexes_keep_recall_and_persist(tmp_path, encoder, demo_rows, spec):
    col = _build(tmp_path / "approx", demo_rows, index=spec)
    info = col.info()["index"]
    assert info["kind"] == "approximate" and info["resolved"] == spec
    assert info["recall_at_10"] >= 0.95
    approx = [[h.id for h in col.search(q, k=10)] for q in QUERIES]
    exact = [[h.id for h in col.search(q, k=10, exact=True)] for q in QUERIES]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9
    col.close()
    saved = list((tmp_path / "approx").glob("index-*.faiss"))
    assert len(saved) == 1
    col = embedsearch.open(tmp_path / "approx")
    assert [[h.id for h in col.search(q, k=10)] for q in QUERIES] == approx
    col.close()


def _centroids(col: embedsearch.Collection) -> np.ndarray:
    ivf = col._index._unwrap(col._index._index)
    return ivf.quantizer.reconstruct_n(0, ivf.nlist)


@pytest.mark.parametrize("spec", ["IVF16,Flat", "IVF16,PQ8x4fs", "HNSW16"])
def test_compaction_fills_the_trained_index_again(tmp_path, encoder, demo_rows, spec):
    """Compaction renumbers the rows: an IVF index keeps its training (the same cells) and
    knobs and is filled with the live rows; an HNSW graph is built again. Either way it
    holds exactly the live rows, answers as exact search does, and opens again as saved."""
    from embedsearch.maintenance import verify

    col = _build(tmp_path / "c", demo_rows, index=spec)
    before = col.info()["index"]
    cells = _centroids(col) if spec.startswith("IVF") else None
    gone = [r["id"] for r in demo_rows[::3]]
    col.delete(gone)
    col.compact()
    after = col.info()["index"]
    live = len(demo_rows) - len(gone)
    # one commit names the compacted rows and their index together: a reader that opens
    # them right away never has to build the index itself
    ops = [v.op for v in col.versions()]
    refill = spec.startswith("IVF")  # an HNSW graph is built after the commit, then saved
    assert ops[-2:] == (["delete", "compact"] if refill else ["compact", "index"])
    on_disk = json.loads((tmp_path / "c" / "manifest.json").read_text())
    if refill:
        assert on_disk["index"]["file"]["rows"] == live
        assert on_disk["index"]["file"]["epoch"] == on_disk["epoch"]
    assert col._index._index.ntotal == live and after["rows"] == live
    assert after["kind"] == "approximate" and after["resolved"] == spec
    if cells is not None:  # not trained again: the same cells, the same knobs
        assert np.array_equal(_centroids(col), cells)
        assert (after["nprobe"], after["trained_for"]) == (before["nprobe"], before["trained_for"])
    full = {"nprobe": 16} if spec.startswith("IVF") else {}
    answers = [[h.id for h in col.search(q, k=10, **full)] for q in QUERIES]
    assert answers == [[h.id for h in col.search(q, k=10, exact=True)] for q in QUERIES]
    assert not set(gone) & {i for a in answers for i in a}
    col.close()
    assert verify(tmp_path / "c").problems == []
    col = embedsearch.open(tmp_path / "c")
    assert [[h.id for h in col.search(q, k=10, **full)] for q in QUERIES] == answers
    col.close()


def test_compaction_to_few_rows_builds_the_index_their_size_calls_for(
    tmp_path, encoder, demo_rows, monkeypatch
):
    """An ``auto`` index is not refilled for rows that call for another kind: 300 rows past
    a 200-row exact threshold get IVF; compacted to 100, exact search."""
    import embedsearch.index as index_mod

    monkeypatch.setattr(index_mod, "EXACT_MAX_ROWS", 200)
    col = _build(tmp_path / "auto", demo_rows[:300])
    assert col.info()["index"]["kind"] == "approximate"
    col.delete([r["id"] for r in demo_rows[100:300]])
    col.compact()
    assert col.info()["index"]["kind"] == "exact" and len(col) == 100
    hits = col.search(QUERIES[0], k=5)
    assert [h.id for h in hits] == [h.id for h in col.search(QUERIES[0], k=5, exact=True)]
    col.close()


def test_per_call_nprobe_does_not_leak_between_calls(tmp_path, encoder, demo_rows):
    col = _build(tmp_path / "ivf", demo_rows, index="IVF32,Flat")
    default = [h.id for h in col.search("black holes", k=10)]
    narrow = [h.id for h in col.search("black holes", k=10, nprobe=1, rerank=10)]
    full = [h.id for h in col.search("black holes", k=10, nprobe=32)]
    assert full == [h.id for h in col.search("black holes", k=10, exact=True)]
    assert [h.id for h in col.search("black holes", k=10)] == default
    assert len(narrow) == 10
    col.close()


def test_auto_policy_switches_to_approximate_above_threshold(
    tmp_path, encoder, demo_rows, monkeypatch
):
    import embedsearch.index as index_mod

    monkeypatch.setattr(index_mod, "EXACT_MAX_ROWS", 200)
    col = embedsearch.open(tmp_path / "auto")
    col.add([r["text"] for r in demo_rows[:150]], ids=[r["id"] for r in demo_rows[:150]])
    assert col.info()["index"]["kind"] == "exact"
    col.add([r["text"] for r in demo_rows[150:]], ids=[r["id"] for r in demo_rows[150:]])
    info = col.info()["index"]
    assert info["kind"] == "approximate" and info["resolved"].startswith("IVF")
    assert info["recall_at_10"] >= 0.95 and info["nprobe"] >= 1
    col.close()


def test_explicit_index_too_small_to_train_searches_exactly(tmp_path, encoder):
    col = embedsearch.open(tmp_path / "small", index="IVF1024,SQ8")
    col.add(["only a few", "documents here", "for now"])
    info = col.info()["index"]
    assert info["kind"] == "exact" and info["spec"] == "IVF1024,SQ8"
    assert len(col.search("documents", k=3)) == 3
    col.close()


def test_bad_index_spec_is_rejected(tmp_path, encoder):
    with pytest.raises(embedsearch.IndexSpecError):
        embedsearch.open(tmp_path / "bad", index="NotAnIndex99")
    assert not (tmp_path / "bad" / "manifest.json").exists()


def test_index_file_is_derived_and_rebuilt_when_missing_or_damaged(
    tmp_path, encoder, demo_rows, caplog
):
    col = _build(tmp_path / "derived", demo_rows, index="IVF16,Flat")
    expected = _results(col)
    col.close()
    index_file = next((tmp_path / "derived").glob("index-*.faiss"))
    index_file.write_bytes(index_file.read_bytes()[:100])  # truncated
    col = embedsearch.open(tmp_path / "derived")  # read on first need (VectorIndex.defer)
    assert _results(col) == expected
    assert "unusable" in caplog.text and index_file.name in caplog.text
    col.close()
    index_file.unlink()
    col = embedsearch.open(tmp_path / "derived")
    assert _results(col) == expected
    col.add(["one more document about lighthouses"], ids=["new"])  # writer re-saves on close
    col.close()
    assert len(list((tmp_path / "derived").glob("index-*.faiss"))) == 1


@pytest.mark.parametrize("spec", ["auto", "IVF8,Flat"])
def test_compaction_keeps_the_segments_that_lost_no_rows(home, monkeypatch, spec):
    """A segment with no row deleted (and not too small to stand alone) is kept as it is:
    its file is not rewritten and stays shared with past versions. The others' live rows
    are rewritten, small clean segments merged with them, and every row keeps its order,
    its vector and its metadata. A trained index is renumbered to match (kept rows
    between rewritten ones included) and answers as exact search does."""
    import embedsearch.collection as collection_mod
    from embedsearch.maintenance import verify

    monkeypatch.setattr(collection_mod, "COMPACT_KEEP_ROWS", 50)
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(400, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    col = embedsearch.open("keep", index=spec)
    for lo, n in [(0, 100), (100, 100), (200, 20), (220, 30), (250, 150)]:
        ids = [f"d{i}" for i in range(lo, lo + n)]
        meta = [{"i": i} for i in range(lo, lo + n)]
        col.add(ids, ids=ids, vectors=vecs[lo : lo + n], metadata=meta, progress=False)
    files = [seg.file for seg in col._manifest.segments]
    assert len(files) == 5
    before = col.versions()[-1].version
    col.delete(["d5", "d6", "d300"])
    live = [f"d{i}" for i in range(400) if i not in (5, 6, 300)]
    # failed means unchanged: a compaction that fails after writing a segment removes
    # what it wrote and nothing else (the kept segment's file is the current version's)
    real_write, calls = collection_mod._write_segment, []

    def second_write_fails(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_write(*args, **kw)

    on_disk = sorted(p.name for p in (col.path / "segments").iterdir())
    monkeypatch.setattr(collection_mod, "_write_segment", second_write_fails)
    with pytest.raises(OSError, match="No space"):
        col.compact(min_deleted_share=0)
    monkeypatch.setattr(collection_mod, "_write_segment", real_write)
    assert [seg.file for seg in col._manifest.segments] == files
    assert sorted(p.name for p in (col.path / "segments").iterdir()) == on_disk
    assert col._table.ids_at(col._table.live_positions()) == live
    stats = col.compact(min_deleted_share=0)
    # the first segment lost rows: rewritten; the second kept; the two small clean ones
    # are merged with the live rows of the last, which lost one
    assert stats["rows_rewritten"] == 98 + (20 + 30 + 149)
    after = [seg.file for seg in col._manifest.segments]
    assert len(after) == 3 and after[1] == files[1] and not {after[0], after[2]} & set(files)
    assert stats["rows_after"] == len(live) and col.info()["deleted"] == 0
    table = col._table
    assert table.ids_at(table.live_positions()) == live  # the rows keep their order
    docs = col.get(["d150", "d210", "d399"], include_vectors=True)
    assert [d.metadata["i"] for d in docs] == [150, 210, 399]
    assert np.allclose(np.stack([d.vector for d in docs]), vecs[[150, 210, 399]], atol=1e-6)
    assert col.search(vecs[120], k=1)[0].id == "d120"
    assert col.search(vecs[300], k=1)[0].id != "d300"
    if spec != "auto":  # renumbered, not trained again; every cell probed: exact answers
        assert col.info()["index"]["kind"] == "approximate" and col._index.ntotal == len(live)
        for q in vecs[::37]:
            want = [h.id for h in col.search(q, k=10, exact=True)]
            assert [h.id for h in col.search(q, k=10, nprobe=8)] == want
    col.close()
    assert verify(col.path).problems == []
    col = embedsearch.open("keep")
    assert col._table.ids_at(col._table.live_positions()) == live
    col.close()
    past = embedsearch.open("keep", version=before)  # kept files serve the past too
    old = past.get(["d5", "d150", "d300"], include_vectors=True)
    assert np.allclose(np.stack([d.vector for d in old]), vecs[[5, 150, 300]], atol=1e-6)
    past.close()


@pytest.mark.parametrize("spec", ["auto", "IVF8,Flat"])
def test_compaction_keeps_segments_that_lost_a_small_share_and_their_deletes(
    home, monkeypatch, spec
):
    """Deletes spread thinly over large segments do not rewrite them: compaction keeps
    their files and their deleted rows stay hidden, renumbered around the rows of the
    segment it does rewrite (one that lost 20 %). Search, get and filters answer as
    before less the deleted rows, here and after reopening, and ``verify`` passes. The
    deletes of three calls end in one tombstone file; a compaction that moves no row
    commits only that; ``min_deleted_share=0`` then rewrites the kept deletes away."""
    import embedsearch.collection as collection_mod
    from embedsearch.maintenance import verify

    monkeypatch.setattr(collection_mod, "COMPACT_KEEP_ROWS", 50)
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(400, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    col = embedsearch.open("thin", index=spec)
    for lo in range(0, 400, 100):
        ids = [f"d{i}" for i in range(lo, lo + 100)]
        meta = [{"i": i} for i in range(lo, lo + 100)]
        col.add(ids, ids=ids, vectors=vecs[lo : lo + 100], metadata=meta, progress=False)
    files = [seg.file for seg in col._manifest.segments]
    col.delete(["d5"])
    col.delete([f"d{i}" for i in range(100, 120)])
    col.delete(["d250"])
    gone = {5, 250, *range(100, 120)}
    live = [f"d{i}" for i in range(400) if i not in gone]
    assert len(col._manifest.tombstones) == 3
    with pytest.raises(InvalidInputError, match="min_deleted_share must be a number from 0"):
        col.compact(min_deleted_share=1.5)

    def check(col) -> None:
        table = col._table
        assert table.ids_at(table.live_positions()) == live and len(col) == len(live)
        with pytest.raises(DocumentNotFoundError):
            col.get(["d5"])
        docs = col.get(["d4", "d260", "d399"], include_vectors=True)
        assert [d.metadata["i"] for d in docs] == [4, 260, 399]
        assert np.allclose(np.stack([d.vector for d in docs]), vecs[[4, 260, 399]], atol=1e-6)
        assert col.search(vecs[260], k=1)[0].id == "d260"
        for dead in (5, 110, 250):
            assert f"d{dead}" not in {h.id for h in col.search(vecs[dead], k=20)}
        want = sorted(f"d{i}" for i in range(240, 270) if i not in gone)
        hits = col.search(vecs[0], k=400, where={"i": {"$gte": 240, "$lt": 270}})
        assert sorted(h.id for h in hits) == want
        if spec != "auto":  # renumbered around the dropped rows; every cell probed: exact
            assert col._index.ntotal == 400 - 20
            for q in vecs[::41]:
                exact = [h.id for h in col.search(q, k=10, exact=True)]
                assert [h.id for h in col.search(q, k=10, nprobe=8)] == exact

    stats = col.compact()
    assert stats["rows_rewritten"] == 80 and stats["deleted_kept"] == 2
    assert stats["rows_after"] == 380 and col.info()["deleted"] == 2
    after = [seg.file for seg in col._manifest.segments]
    assert len(after) == 4 and after[1] not in files
    assert [after[0], after[2], after[3]] == [files[0], files[2], files[3]]
    assert len(col._manifest.tombstones) == 1
    check(col)
    col.close()
    assert verify(col.path).problems == []
    col = embedsearch.open("thin")
    check(col)
    # no row moves: nothing is rewritten and, with one tombstone file, nothing committed
    generation = col._manifest.generation
    col.delete(["d399"])
    gone.add(399)
    live.remove("d399")
    stats = col.compact()
    assert stats["rows_rewritten"] == 0 and stats["deleted_kept"] == 3
    assert [seg.file for seg in col._manifest.segments] == after
    assert len(col._manifest.tombstones) == 1 and col._manifest.generation == generation + 2
    assert col.compact()["rows_rewritten"] == 0
    assert col._manifest.generation == generation + 2
    stats = col.compact(min_deleted_share=0)
    assert stats["rows_rewritten"] == 99 + 99 + 99 and stats["deleted_kept"] == 0
    assert col.info()["deleted"] == 0 and not col._manifest.tombstones
    assert col._table.ids_at(col._table.live_positions()) == live
    col.close()
    assert verify(col.path).problems == []


def test_the_compaction_plan_keeps_whole_segments_and_merges_the_rest():
    """Pure plumbing: which segments compaction keeps and which rows it rewrites."""
    from embedsearch.table import compaction_plan

    def plan(sizes, dead, keep=10, share=0.0):
        live = np.ones(sum(sizes), dtype=bool)
        live[dead] = False
        return [
            (i, None if pos is None else pos.tolist())
            for i, pos in compaction_plan(sizes, live, keep, share)
        ]

    # big and whole: kept; lost a row: rewritten
    assert plan([10, 10], [3]) == [(None, [0, 1, 2, *range(4, 10)]), (1, None)]
    # small whole segments are merged with their neighbours' live rows, in order
    assert plan([2, 2, 10, 2], [1]) == [(None, [0, 2, 3]), (2, None), (3, None)]
    # a small whole segment alone between kept ones is kept (rewriting would copy it)
    assert plan([10, 3, 10], []) == [(0, None), (1, None), (2, None)]
    # a segment whose rows are all deleted goes; nothing deleted anywhere: all kept
    assert plan([10, 10], list(range(10))) == [(1, None)]
    assert plan([5, 5], []) == [(None, list(range(10)))]
    # a big segment that lost under the share is kept, deletes and all; at the share, not
    assert plan([10, 10], [3], share=0.2) == [(0, None), (1, None)]
    assert plan([10, 10], [3, 4], share=0.2) == [(None, [0, 1, 2, *range(5, 10)]), (1, None)]
    assert plan([10, 3, 10], [3, 11], share=0.2) == [(0, None), (None, [10, 12]), (2, None)]
    assert plan([10], list(range(10)), share=1.0) == []  # all deleted: it goes


@pytest.mark.parametrize("chunk", [98, 1000])
def test_compaction_takes_typed_columns_from_the_old_segments(home, monkeypatch, chunk):
    """Rows rewritten from segments that type their keys alike keep those typed columns
    (no JSON parsed again); rows of segments that type a key differently (``cat``: int in
    two, float in the third) are typed from their JSON as a new write is. Either way each
    new segment's columns are what inference over its rows gives, and every filter
    answers as before, less the deleted rows."""
    import embedsearch.collection as collection_mod
    import embedsearch.segment as segment_mod

    monkeypatch.setattr(collection_mod, "COMPACT_SEGMENT_ROWS", chunk)
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(150, 384)).astype(np.float32)
    col = embedsearch.open("typed")
    for lo in (0, 50, 100):
        ids = [f"d{i}" for i in range(lo, lo + 50)]
        meta = [
            {
                "cat": i % 5 + (0.5 if lo == 100 else 0),
                "tag": f"t{i % 3}",
                "odd": i if i % 2 else "s",
            }
            for i in range(lo, lo + 50)
        ]
        col.add(ids, ids=ids, vectors=vecs[lo : lo + 50], metadata=meta, progress=False)
    wheres = [{"cat": 3}, {"cat": {"$gte": 2}}, {"tag": "t1"}, {"odd": "s"}, {"odd": {"$gt": 10}}]

    def matching() -> list[list[str]]:
        return [sorted(h.id for h in col.search(vecs[0], k=150, where=w)) for w in wheres]

    before = matching()
    gone = {"d0", "d60", "d120"}
    col.delete(sorted(gone))
    parsed, real_parse = [], segment_mod._parse_json
    monkeypatch.setattr(segment_mod, "_parse_json", lambda raw: parsed.append(1) or real_parse(raw))
    col.compact()
    # 98 rows a segment: the first two segments' rows together, then the third's alone,
    # each from segments typed alike; one segment of all: cat's types differ, so parsed
    assert len(parsed) == (0 if chunk == 98 else 147)
    monkeypatch.setattr(segment_mod, "_parse_json", real_parse)
    for seg in col._table.segments:
        cols, untyped = seg.typed()
        metas = [json.loads(m) for m in seg.metadata_json().to_pylist()]
        want, want_untyped = segment_mod.infer_typed_columns(metas)
        assert sorted(untyped) == want_untyped == ["odd"]
        assert {k: str(c.type) for k, c in cols.items()} == {
            k: str(c.type) for k, c in want.items()
        }
        assert {k: c.to_pylist() for k, c in cols.items()} == {
            k: c.to_pylist() for k, c in want.items()
        }
    assert matching() == [[i for i in ids if i not in gone] for ids in before]
    col.close()
