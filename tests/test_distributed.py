"""Scale-out on a real local Ray: distributed ingest, resume, sharded search.

Congruence is the point: a collection built on Ray must equal the one ``embedsearch index``
builds from the same files (ids, texts, metadata, vectors, search results), and a sharded
collection must answer exactly like the unsharded one (exact index), with filters and
deletes. Ray starts once for the module (``ray.init(num_cpus=2)``); the module is skipped,
with the reason, only when Ray is not installed or cannot start.
"""

from __future__ import annotations

import gzip
import importlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray", reason="ray[data] is not installed (extra 'distributed')")

import embedsearch  # noqa: E402
from embedsearch.cli import main  # noqa: E402
from embedsearch.distributed import ShardedCollection, ingest, shard_of  # noqa: E402
from embedsearch.errors import (  # noqa: E402
    DocumentNotFoundError,
    DuplicateIdError,
    FilterError,
    InvalidInputError,
)
from embedsearch.readers import read_paths  # noqa: E402

ingest_module = importlib.import_module("embedsearch.distributed.ingest")

BATCH = 32
QUERIES = ["cats and kittens", "interest rates and inflation", "searing a steak", "telescopes"]
FILTERS: list[Any] = [
    None,
    {"year": {"$gte": 2012}},
    {"topic": {"$in": ["animals", "cooking", "finance"]}},
    {"$or": [{"year": {"$lt": 2005}}, {"topic": "space"}]},
]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, demo_rows: list[dict[str, Any]]) -> list[Path]:
    """The demo corpus as 5 input shards: JSONL, Parquet, and gzip JSONL without ids."""
    root = tmp_path_factory.mktemp("src")
    parts = [demo_rows[i * 70 : (i + 1) * 70] for i in range(5)]
    paths = []
    for i in range(3):
        p = root / f"part-{i}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in parts[i]))
        paths.append(p)
    p = root / "part-3.parquet"
    pq.write_table(pa.Table.from_pylist(parts[3]), p)
    paths.append(p)
    p = root / "part-4.jsonl.gz"  # ids come from "<stem>:<row>"; one empty text, one blank line
    lines = [json.dumps({k: v for k, v in r.items() if k != "id"}) for r in parts[4]]
    lines.insert(10, json.dumps({"text": "  ", "topic": "none"}))
    lines.insert(20, "")
    p.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    paths.append(p)
    return paths


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, shards: list[Path], encoder):
    """The single-node reference: what `embedsearch index` builds from the same files."""
    records = list(read_paths(shards))
    col = embedsearch.open(tmp_path_factory.mktemp("single") / "single")
    col.add(
        [r.text for r in records],
        ids=[r.id for r in records],
        metadata=[r.metadata or None for r in records],
    )
    col.close()
    col = embedsearch.open(col.path)
    yield col
    col.close()


def _rows_in(path: Path) -> int:
    return sum(1 for _ in read_paths([path]))


@pytest.fixture(scope="module")
def resumed(ray_cluster, tmp_path_factory: pytest.TempPathFactory, shards: list[Path]):
    """Ingest interrupted right after shard 1 committed (before its progress was recorded),
    then restarted; returns (collection path, count after run 1, run-2 report, run-3 report).
    """
    target = tmp_path_factory.mktemp("dist") / "dist"
    real_save = ingest_module._save_progress
    part1 = str(shards[1])

    def kill_after_commit_of_part1(root: Path, progress: dict[str, Any]) -> None:
        rec = progress["shards"].get(part1)
        if rec and not rec["done"] and 0 < rec["pending_rows"] == rec["committed_rows"]:
            raise KeyboardInterrupt("simulated kill between commit and progress record")
        real_save(root, progress)

    ingest_module._save_progress = kill_after_commit_of_part1
    try:
        with pytest.raises(KeyboardInterrupt):
            ingest([str(shards[0].parent / "part-*")], target, batch_size=BATCH)
    finally:
        ingest_module._save_progress = real_save
    with embedsearch.open(target, create=False) as col:
        after_kill = len(col)
    second = ingest([str(shards[0].parent / "part-*")], target, batch_size=BATCH)
    third = ingest([str(shards[0].parent / "part-*")], target, batch_size=BATCH)
    return target, after_kill, second, third


def test_cli_ray_index_resumes_and_reports(resumed, shards, capsys) -> None:
    """The CLI on the finished collection: every shard already done, nothing embedded."""
    target, *_ = resumed
    assert main(["ray-index", str(target), str(shards[0].parent / "part-*"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["shards_skipped"], report["rows_embedded"]) == (5, 0)
    assert main(["ray-index", str(target), str(shards[0].parent / "*.csv")]) == 2
    assert "matches no" in capsys.readouterr().err
    assert main(["ray-search", str(target), "cats"]) == 2  # a plain collection is not sharded
    assert "sharded" in capsys.readouterr().err


# ----------------------------------------------------------------------------- ingest
def test_restart_embeds_only_unfinished_shards(resumed, shards: list[Path]) -> None:
    _, after_kill, second, third = resumed
    assert after_kill == 140  # shards 0 and 1 committed before the kill
    assert second.shards_skipped == 1  # shard 0: recorded done
    assert second.shards_verified == 1  # shard 1: committed, unrecorded; found by id lookup
    assert second.embedded_shards == [str(p) for p in shards[2:]]
    rest = [_rows_in(p) for p in shards[2:]]
    assert second.rows_embedded == sum(rest) == second.documents_added
    assert second.encode_calls == sum(math.ceil(n / BATCH) for n in rest)
    assert (third.rows_embedded, third.encode_calls, third.documents_added) == (0, 0, 0)
    assert third.shards_skipped == 5


def test_distributed_collection_equals_single_node(resumed, single) -> None:
    path, *_ = resumed
    with embedsearch.open(path, create=False) as dist:
        assert len(dist) == len(single) == 350  # the empty text and the blank line are skipped
        assert dist.ids() == single.ids()  # same ids, same storage order
        assert len(set(dist.ids())) == len(dist)  # exactly one copy of each document
        assert any(i.startswith("part-4:") for i in dist.ids())
        a, b = dist.get(single.ids()), single.get(single.ids())
        assert [(d.text, d.metadata) for d in a] == [(d.text, d.metadata) for d in b]
        np.testing.assert_allclose(dist.vectors(), single.vectors(), atol=1e-5)
        for where in FILTERS:
            got = dist.batch_search(QUERIES, k=10, where=where)
            want = single.batch_search(QUERIES, k=10, where=where)
            for g, w in zip(got, want):
                assert [h.id for h in g] == [h.id for h in w], where
                np.testing.assert_allclose([h.score for h in g], [h.score for h in w], atol=1e-5)


def test_changed_shard_is_refused_without_upsert(ray_cluster, shards, tmp_path) -> None:
    """A shard whose size/mtime differ from what an earlier run recorded is not mixed in."""
    target = tmp_path / "c"
    embedsearch.open(target).close()
    progress = ingest_module.load_progress(target)
    progress["shards"][str(shards[0])] = {
        "uri": str(shards[0]),
        "size": 1,  # recorded when the file was different
        "mtime_ns": 1,
        "committed_rows": 3,
        "pending_rows": 3,
        "done": False,
        "documents": 3,
    }
    ingest_module._save_progress(target, progress)
    with pytest.raises(InvalidInputError, match="changed"):
        ingest([shards[0]], target, batch_size=BATCH)


def test_source_errors_are_clear(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InvalidInputError, match="unsupported file type"):
        ingest([tmp_path / "notes.txt"], tmp_path / "c")
    with pytest.raises(InvalidInputError, match="matches no"):
        ingest([str(tmp_path / "*.parquet")], tmp_path / "c")


# ----------------------------------------------------------------------------- sharded
@pytest.fixture(scope="module")
def sharded(ray_cluster, tmp_path_factory: pytest.TempPathFactory, single):
    col = ShardedCollection.from_collection(single, tmp_path_factory.mktemp("sh") / "sh", 3)
    yield col
    col.close()


def _same(got: list[Any], want: list[Any]) -> None:
    assert [h.id for h in got] == [h.id for h in want]
    np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-6)
    assert [h.metadata for h in got] == [h.metadata for h in want]


def test_sharded_search_equals_unsharded(sharded, single) -> None:
    counts = [s["count"] for s in sharded.info()["shards"]]
    assert sum(counts) == len(single) and min(counts) > 0
    for where in FILTERS:
        for got, want in zip(
            sharded.batch_search(QUERIES, k=15, where=where),
            single.batch_search(QUERIES, k=15, where=where),
        ):
            _same(got, want)
    excl = [h.id for h in single.search(QUERIES[0], k=5)]
    _same(
        sharded.search(QUERIES[0], k=5, exclude=excl), single.search(QUERIES[0], k=5, exclude=excl)
    )
    vec = single.vectors([single.ids()[7]])[0]
    _same(sharded.search(vec, k=8), single.search(vec, k=8))
    with pytest.raises(FilterError):
        sharded.search("x", where={"year": {"$regex": "x"}})


def test_sharded_writes_route_and_behave_like_one_node(sharded, single, tmp_path) -> None:
    ref = embedsearch.open(tmp_path / "ref")  # a writable copy of the reference
    ids = single.ids()
    docs = single.get(ids, include_vectors=True)
    ref.add(
        [d.text for d in docs],
        ids=ids,
        metadata=[d.metadata for d in docs],
        vectors=np.stack([d.vector for d in docs]),
    )
    gone = ids[::9]
    assert sharded.delete(gone) == ref.delete(gone) == len(gone)
    with pytest.raises(DocumentNotFoundError):
        sharded.delete([ids[1], "no-such-id"])
    assert ids[1] in sharded  # all or nothing: nothing was deleted
    with pytest.raises(DuplicateIdError):
        sharded.add(["a new text"], ids=[ids[2]])
    new_ids = sharded.add(["Kittens chase a ball of yarn across the kitchen floor."], ids=["n1"])
    ref.add(["Kittens chase a ball of yarn across the kitchen floor."], ids=["n1"])
    sharded.upsert([docs[3].text], ids=[ids[3]], metadata=[{"topic": "moved", "year": 1999}])
    ref.upsert([docs[3].text], ids=[ids[3]], metadata=[{"topic": "moved", "year": 1999}])
    assert new_ids == ["n1"] and len(sharded) == len(ref)
    for where in [*FILTERS, {"topic": "moved"}]:
        for got, want in zip(
            sharded.batch_search(QUERIES, k=12, where=where),
            ref.batch_search(QUERIES, k=12, where=where),
        ):
            _same(got, want)
    assert sharded.get([ids[3]])[0].metadata == {"topic": "moved", "year": 1999}
    with pytest.raises(DocumentNotFoundError):
        sharded.get([gone[0]])
    np.testing.assert_allclose(sharded.vectors([ids[4]]), ref.vectors([ids[4]]), atol=1e-6)
    assert sorted(sharded.ids()) == sorted(ref.ids())
    info, want = sharded.info(), ref.info()
    assert (info["count"], info["rows"], info["deleted"]) == (
        want["count"],
        want["rows"],
        want["deleted"],
    )
    ref.close()
    stats = sharded.compact()  # every shard's, summed; the old files stay for past versions
    assert stats["rows_before"] == info["rows"] and stats["rows_after"] == len(sharded)
    assert stats["rows_rewritten"] == len(sharded)  # small segments: all merged anew
    assert 0 < stats["bytes_past_versions"] < stats["bytes_after"]
    # Every shard is an ordinary collection on disk holding exactly the ids that hash to it.
    total = 0
    for n, d in enumerate(sharded.layout["dirs"]):
        with embedsearch.open(sharded.path / d, create=False) as shard:
            assert all(shard_of(i, 3) == n for i in shard.ids())
            total += len(shard)
    assert total == len(sharded)


def test_ingest_into_sharded_collection(ray_cluster, shards, single, tmp_path) -> None:
    """Ingest writes through the shard actors; an explicit IVF spec ends trained on all rows."""
    report = ingest(
        shards[:2], tmp_path / "sh-ingest", shards=2, index="IVF4,Flat", batch_size=BATCH
    )
    assert report.documents_added == 140
    with ShardedCollection.open(tmp_path / "sh-ingest", create=False) as col:
        ids = sorted(col.ids())
        assert ids == sorted(single.ids()[:140])
        np.testing.assert_allclose(col.vectors(ids), single.vectors(ids), atol=1e-5)
        parts = col.info()["shards"]
        assert [p["count"] for p in parts] == [
            sum(shard_of(i, 2) == s for i in ids) for s in (0, 1)
        ]
        for p in parts:  # trained once at the end on every row, not on the first commit only
            assert p["index"]["kind"] == "approximate"
            assert p["index"]["trained_rows"] == p["count"]
