"""A writer merges its newest small segments: many small writes end in few segments.

Real collections on disk, the real index; the merge plan checked as a pure function over
simulated ingests (how many rows each policy rewrites, how many segments wait).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import embedsearch
from embedsearch import collection as collection_mod
from embedsearch import manifest as manifest_mod
from embedsearch import store
from embedsearch.maintenance import verify
from embedsearch.table import merge_plan

SMALL, FAN_IN, ROWS = 32_768, 32, 65_536


def _ingest(batches: list[int]) -> tuple[list[int], int]:
    """Segment sizes after adds of ``batches`` rows each, merging as a writer does, and
    the rows written in all (adds and merges)."""
    segs: list[int] = []
    written = 0
    for b in batches:
        segs.append(b)
        written += b
        while (first := merge_plan(segs, SMALL, FAN_IN, ROWS)) is not None:
            written += sum(segs[first:])
            segs = segs[:first] + [sum(segs[first:])]
    return segs, written


@pytest.mark.parametrize(
    ("batch", "adds", "most_segments", "most_written"),
    [
        (2048, 489, 24 + 1, 2.0),  # embedsearch index's batches: each row rewritten once
        (1, 20_000, 3 * (FAN_IN - 1) + 1, 4.0),  # one document a request: once a level
        (10_000, 100, 17, 2.0),
        (50_000, 20, 20, 1.0),  # segments this large are never merged
    ],
)
def test_merge_plan_bounds_segments_and_rewrites(
    batch: int, adds: int, most_segments: int, most_written: float
) -> None:
    segs, written = _ingest([batch] * adds)
    assert sum(segs) == batch * adds
    assert len(segs) <= most_segments
    assert written <= most_written * batch * adds
    small = [n for n in segs if n < SMALL]
    levels = [min(2, int(np.log(n) / np.log(FAN_IN) + 1e-9)) for n in small]
    assert all(levels.count(lv) < FAN_IN for lv in range(3))  # fewer than FAN_IN a level


def test_merge_plan_only_merges_a_trailing_run_of_small_segments() -> None:
    assert merge_plan([50_000] + [100] * 31, SMALL, FAN_IN, ROWS) is None
    assert merge_plan([50_000] + [100] * 32, SMALL, FAN_IN, ROWS) == 1
    # a large segment stops the run: the small ones before it stay where they are
    assert merge_plan([100] * 40 + [40_000] + [100] * 3, SMALL, FAN_IN, ROWS) is None
    assert merge_plan([30_000, 30_000, 6_000], SMALL, FAN_IN, ROWS) == 0  # by rows
    assert merge_plan([1_000] * 31 + [5] * 31, SMALL, FAN_IN, ROWS) is None  # no level full
    assert merge_plan([1_000] * 31 + [5] * 32, SMALL, FAN_IN, ROWS) == 31  # level 0 carries


def _add_one_by_one(col: Any, vecs: np.ndarray, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        col.add([f"t{i}"], ids=[f"d{i}"], metadata=[{"i": i, "odd": bool(i % 2)}],
                vectors=vecs[i : i + 1])  # fmt: skip


def test_small_writes_are_merged_in_place(tmp_path: Path, demo_vectors: Any) -> None:
    """32 one-document adds become one segment: every row at its position (the index is not
    touched), a deleted row stays deleted, past versions still open, verify passes."""
    vecs = np.asarray(demo_vectors)
    path = tmp_path / "c"
    col = embedsearch.open(path)
    col.add([f"t{i}" for i in range(100)], ids=[f"d{i}" for i in range(100)],
            metadata=[{"i": i, "odd": bool(i % 2)} for i in range(100)],
            vectors=vecs[:100])  # fmt: skip
    _add_one_by_one(col, vecs, FAN_IN - 1, start=100)
    col.delete(["d105"])
    before = store.read_manifest(path)
    assert len(before.segments) == FAN_IN  # 100 rows (level 1: not merged yet) + 31 single
    version_before = col.version
    answers = [[h.id for h in col.search(vecs[i], k=5)] for i in (3, 104, 120)]
    where = [h.id for h in col.search(vecs[3], k=10, where={"odd": True})]
    index_file = before.index.file
    index = col._index

    _add_one_by_one(col, vecs, 1, start=131)  # the 32nd single row: level 0 carries
    after = store.read_manifest(path)
    assert len(after.segments) == 2 and after.segments[0] == before.segments[0]
    assert after.segments[1].rows == 32 and col._index is index
    assert after.index.file == index_file and after.tombstones == before.tombstones
    assert [v.op for v in col.versions()][-2:] == ["add", "merge"]
    assert [[h.id for h in col.search(vecs[i], k=5)] for i in (3, 104, 120)] == answers
    assert [h.id for h in col.search(vecs[3], k=10, where={"odd": True})] == where
    assert "d105" not in col and col.get(["d131"])[0].metadata == {"i": 131, "odd": True}
    assert len(col) == 131
    col.close()

    col = embedsearch.open(path)  # a fresh process's view
    assert [[h.id for h in col.search(vecs[i], k=5)] for i in (3, 104, 120)] == answers
    assert col.ids()[100:104] == ["d100", "d101", "d102", "d103"]
    past = embedsearch.open(path, version=version_before)  # its small files are kept
    assert len(past) == 130 and "d105" not in past and "d131" not in past
    past.close()
    col.close()
    report = verify(path)
    assert report.ok, report


def test_a_failed_merge_keeps_the_write(
    tmp_path: Path, demo_vectors: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """The merge's commit fails (a full disk): the add it followed stays committed, the
    merge's files are removed, and the next write merges."""
    vecs = np.asarray(demo_vectors)
    path = tmp_path / "c"
    col = embedsearch.open(path)
    _add_one_by_one(col, vecs, FAN_IN - 1)
    files = {p.name for p in (path / "segments").iterdir()}
    commit = collection_mod.Collection._commit
    ops: list[str] = []

    def full_disk(self: Any, manifest: Any, op: str = "unknown", **kw: Any) -> Any:
        ops.append(op)
        if op == "merge":
            raise OSError(28, "No space left on device")
        return commit(self, manifest, op, **kw)

    monkeypatch.setattr(collection_mod.Collection, "_commit", full_disk)
    with caplog.at_level(logging.WARNING, logger="embedsearch.collection"):
        _add_one_by_one(col, vecs, 1, start=FAN_IN - 1)
    assert ops == ["add", "merge"] and "could not merge" in caplog.text
    assert len(col) == FAN_IN and col.get([f"d{FAN_IN - 1}"])[0].text == f"t{FAN_IN - 1}"
    assert len(store.read_manifest(path).segments) == FAN_IN  # committed, not merged
    new = {p.name for p in (path / "segments").iterdir()} - files
    assert sorted(n.rsplit(".", 1)[1] for n in new) == ["arrow", "f32", "ids"]  # the add's
    monkeypatch.setattr(collection_mod.Collection, "_commit", commit)
    _add_one_by_one(col, vecs, 1, start=FAN_IN)  # the next write merges
    assert len(store.read_manifest(path).segments) == 1 and len(col) == FAN_IN + 1
    col.close()
    assert verify(path).ok


@pytest.mark.parametrize("when", ["before-commit", "after-commit"])
def test_a_writer_killed_in_a_merge_loses_nothing(tmp_path: Path, when: str) -> None:
    """A writer SIGKILLed inside the merge that follows its 32nd add: that add has committed
    and is there; the merge is all or nothing (the next writer removes its orphans, or
    finds it done); verify passes and the next write merges what is left to merge."""
    import signal
    import subprocess
    import sys

    path = tmp_path / "c"
    vecs = np.random.default_rng(7).normal(size=(FAN_IN + 1, 384)).astype(np.float32)
    np.save(tmp_path / "v.npy", vecs)
    code = f"""
import os, numpy as np, embedsearch
from embedsearch import collection, store
vecs = np.load({str(tmp_path / "v.npy")!r})
write = store.write_manifest
def kill_in_merge(root, manifest, hook=None):
    merging = len(manifest.segments) == 1 and manifest.segments[0].rows == {FAN_IN}
    if merging and {when!r} == "before-commit":
        os.kill(os.getpid(), 9)
    out = write(root, manifest, hook)
    if merging:
        os.kill(os.getpid(), 9)
    return out
collection.store.write_manifest = kill_in_merge
col = embedsearch.open({str(path)!r})
for i in range({FAN_IN}):
    col.add([f"t{{i}}"], ids=[f"d{{i}}"], vectors=vecs[i : i + 1])
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-800:]
    col = embedsearch.open(path)
    assert len(col) == FAN_IN and col.get([f"d{FAN_IN - 1}"])[0].text == f"t{FAN_IN - 1}"
    merged = len(store.read_manifest(path).segments) == 1
    assert merged == (when == "after-commit")
    assert [h.id for h in col.search(vecs[5], k=1)] == ["d5"]
    col.add(["last"], ids=["last"], vectors=vecs[FAN_IN : FAN_IN + 1])  # the next writer
    assert len(store.read_manifest(path).segments) == (2 if merged else 1)
    col.close()
    report = verify(path)
    assert report.ok, report
    named: set[str] = set()  # every file a kept version names (past ones keep theirs)
    for record in (path / "versions").glob("v-*.json"):
        body = json.loads(record.read_text())["manifest"]
        named |= set(manifest_mod.Manifest.from_json(body).files())
    on_disk = {f"segments/{p.name}" for p in (path / "segments").iterdir()}
    assert on_disk <= named  # the killed merge's files, if uncommitted, are gone


def test_a_past_version_borrows_the_index_across_a_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unit_vectors: Any
) -> None:
    """A past version whose own index file is gone borrows the current index when its rows
    are the current version's first rows: also when the writer has since merged its newest
    small segments (the rows' vector checksums agree), never when a restore put other rows
    at those positions (then the view builds its own, and answers from its own rows)."""
    from embedsearch.index import VectorIndex, exact_search

    rng = np.random.default_rng(11)
    v = unit_vectors(11, 2100)
    root = tmp_path / "c"
    col = embedsearch.open(root, index="IVF16,Flat")
    col.add([f"t{i}" for i in range(2000)], ids=[f"i{i}" for i in range(2000)], vectors=v[:2000])
    first = col.version
    for i in range(2000, 2031):
        col.add([f"t{i}"], ids=[f"i{i}"], vectors=v[i : i + 1])
    middle = col.version
    col.add(["t2031"], ids=["i2031"], vectors=v[2031:2032])  # 32 single rows: merged
    assert [s.rows for s in store.read_manifest(root).segments] == [2000, 32]
    col.reindex("IVF16,Flat")  # a newer saved index: the middle version's own goes
    col.close()
    builds: list[int] = []
    build = VectorIndex.build

    def counted(self: Any, vectors: Any, **kw: Any) -> Any:
        builds.append(len(vectors))
        return build(self, vectors, **kw)

    monkeypatch.setattr(VectorIndex, "build", counted)
    q = v[2005:2035] + 0.01 * rng.normal(size=(30, 384)).astype(np.float32)
    view = embedsearch.open(root, version=middle)
    assert len(view) == 2031 and builds == []  # borrowed, nothing built
    hits = view.batch_search(q, 10)
    assert "i2031" not in {h.id for r in hits for h in r}  # a later row never shows
    _, want = exact_search(v[:2031], q, 10)
    got = [{h.id for h in r} for r in hits]
    assert np.mean([len(g & {f"i{p}" for p in w}) / 10 for g, w in zip(got, want)]) >= 0.8
    view.close()

    col = embedsearch.open(root)
    col.restore(first)  # the same epoch, and other rows where the middle's small ones were
    other = rng.normal(size=(32, 384)).astype(np.float32)
    for i in range(32):
        col.add([f"o{i}"], ids=[f"o{i}"], vectors=other[i : i + 1])
    assert [s.rows for s in store.read_manifest(root).segments] == [2000, 32]
    col.reindex("IVF16,Flat")
    col.close()
    builds.clear()
    view = embedsearch.open(root, version=middle)
    assert builds == [2031]  # not borrowed: the view made its own
    assert [h.id for h in view.search(v[2010], k=1)] == ["i2010"]
    assert not {h.id for h in view.search(other[3], k=10)} & {f"o{i}" for i in range(32)}
    view.close()


def test_a_text_add_writes_large_segments_while_embedding_in_chunks(
    tmp_path: Path, demo_rows: Any, demo_vectors: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Texts are embedded WRITE_CHUNK at a time, but written VECTOR_CHUNK rows a segment: an
    add of many texts is few segments, with the same rows, order and vectors."""
    monkeypatch.setattr(collection_mod, "WRITE_CHUNK", 100)
    monkeypatch.setattr(collection_mod, "VECTOR_CHUNK", 250)
    path = tmp_path / "c"
    col = embedsearch.open(path)
    texts = [r["text"] for r in demo_rows]  # 350: chunks of 100, 100, 100, 50
    col.add(texts, ids=[r["id"] for r in demo_rows], metadata=[{"n": i} for i in range(350)])
    assert [s.rows for s in store.read_manifest(path).segments] == [300, 50]
    assert col.ids() == [r["id"] for r in demo_rows]
    got = col._table.take(np.arange(350))
    assert np.allclose(got, np.asarray(demo_vectors), atol=1e-5)
    assert col.get([demo_rows[299]["id"]])[0].metadata == {"n": 299}
    col.close()
    assert verify(path).ok
