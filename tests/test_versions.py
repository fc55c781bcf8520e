"""Version history: every commit a version, time travel, tags, retention, restore."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

import embedsearch
from embedsearch import InvalidInputError, ReadOnlyError, versions

QUERIES = ["black holes", "retirement savings", "tomato garden", "memory leak"]


def _vecs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 384)).astype(np.float32)


def _answers(col) -> dict:
    """Everything a reader can ask, rounded: search, filters, RAG retrieval, latent methods."""
    return {
        "search": [[(h.id, round(h.score, 5)) for h in col.search(q, k=5)] for q in QUERIES],
        "filtered": [
            [h.id for h in col.search(q, k=5, where={"year": {"$gte": 2010}})] for q in QUERIES
        ],
        "retrieve": [[p.id for p in col.retrieve(q, k=3)] for q in QUERIES[:2]],
        "similar": [h.id for h in col.most_similar(["space telescope"], k=5)],
        "clusters": sorted(len(c.ids) for c in col.cluster(k=4, seed=1).clusters),
        "count": len(col),
        "ids": sorted(col.ids()),
    }


def test_every_commit_is_a_version_with_op_and_counts(tmp_path):
    col = embedsearch.open(tmp_path / "c")
    v = _vecs(20)
    col.add([f"t{i}" for i in range(20)], ids=[f"d{i}" for i in range(20)], vectors=v)
    col.delete(["d1", "d2", "d3"])
    col.upsert(["t0 again", "fresh"], ids=["d0", "new"], vectors=v[:2])
    got = [(x.version, x.op, x.added, x.deleted, x.rows) for x in col.versions()]
    assert got == [
        (1, "create", 0, 0, 0),
        (2, "add", 20, 0, 20),
        (3, "delete", 0, 3, 17),
        (4, "upsert", 2, 1, 18),
    ]
    assert [x.current for x in col.versions()] == [False, False, False, True]
    assert col.version == 4
    # a second process sees the same history
    other = embedsearch.open(tmp_path / "c")
    assert [x.to_dict() for x in other.versions()] == [x.to_dict() for x in col.versions()]
    col.close()
    other.close()


def test_time_travel_answers_exactly_as_then(home, encoder, demo_rows):
    col = embedsearch.open("tt")
    col.add(
        [r["text"] for r in demo_rows[:200]],
        ids=[r["id"] for r in demo_rows[:200]],
        metadata=[{"topic": r["topic"], "year": r["year"]} for r in demo_rows[:200]],
    )
    then = _answers(col)
    v = col.version
    col.delete([r["id"] for r in demo_rows[:60]])
    col.add(
        [r["text"] for r in demo_rows[200:]],
        ids=[r["id"] for r in demo_rows[200:]],
        metadata=[{"topic": r["topic"], "year": r["year"]} for r in demo_rows[200:]],
    )
    col.compact()  # old segments are replaced: the kept version must still have its files
    now = _answers(col)
    assert now != then
    col.close()

    view = embedsearch.open("tt", version=v)
    assert _answers(view) == then
    assert view.info()["read_only"] and view.info()["version"] == v
    assert embedsearch.open("tt", version=-1).version == embedsearch.open("tt").version
    for write in (
        lambda: view.add(["x"]),
        lambda: view.upsert(["x"], ids=["x"]),
        lambda: view.delete([demo_rows[0]["id"]]),
        lambda: view.compact(),
        lambda: view.reindex("Flat"),
        lambda: view.tag("x"),
        lambda: view.add_documents(["a passage of text to ingest"]),
    ):
        with pytest.raises(ReadOnlyError, match=f"version {v}.*read-only"):
            write()
    assert _answers(embedsearch.open("tt")) == now  # nothing the view refused changed it


def test_tags_restore_and_errors(tmp_path):
    col = embedsearch.open(tmp_path / "c")
    v = _vecs(30, 1)
    col.add([f"t{i}" for i in range(30)], ids=[f"d{i}" for i in range(30)], vectors=v)
    tagged = col.tag("before-cleanup")
    col.delete([f"d{i}" for i in range(10)])
    col.upsert(["changed"], ids=["d20"], vectors=v[:1], metadata=[{"m": 1}])
    assert col.tags() == {"before-cleanup": tagged}
    assert [x.tags for x in col.versions() if x.tags] == [("before-cleanup",)]

    new = col.restore("before-cleanup")
    assert new == tagged + 3 and col.version == new
    assert sorted(col.ids()) == sorted(f"d{i}" for i in range(30))
    assert col.get("d20")[0].text == "t20"
    last = col.versions()[-1]
    assert (last.op, last.added, last.deleted, last.rows) == ("restore", 10, 0, 30)
    # the history in between is kept: undo the undo
    col.restore(new - 1)
    assert len(col) == 20 and col.get("d20")[0].text == "changed"

    with pytest.raises(InvalidInputError, match="already names version"):
        col.tag("before-cleanup")
    with pytest.raises(InvalidInputError, match="not a valid tag"):
        col.tag("../etc")
    with pytest.raises(InvalidInputError, match="no tag 'nope'"):
        embedsearch.open(tmp_path / "c", version="nope")
    with pytest.raises(InvalidInputError, match="does not exist"):
        embedsearch.open(tmp_path / "c", version=999)
    col.untag("before-cleanup")
    assert col.tags() == {}
    with pytest.raises(InvalidInputError, match="no tag"):
        col.untag("before-cleanup")
    col.tag("again", version=tagged)
    assert embedsearch.open(tmp_path / "c", version="again").version == tagged
    col.close()


def test_retention_keeps_what_versions_need_and_frees_the_rest(tmp_path):
    root = tmp_path / "c"
    col = embedsearch.open(root)
    v = _vecs(40, 2)
    col.add([f"t{i}" for i in range(40)], ids=[f"d{i}" for i in range(40)], vectors=v)
    col.delete([f"d{i}" for i in range(20)])
    assert col.keep_days == versions.DEFAULT_KEEP_DAYS
    col.compact()
    # default retention: the pre-compaction segments are still named by kept versions
    assert len(embedsearch.open(root, version=2)) == 40
    before = len(list((root / "segments").iterdir()))
    assert before >= 3

    col.tag("keep-me", version=2)
    col.set_retention(0)
    vs = [x.version for x in col.versions()]
    assert vs == [2, col.version]  # only the tagged one and the newest
    assert len(embedsearch.open(root, version="keep-me")) == 40
    from embedsearch.maintenance import verify

    assert verify(root).ok
    seg = next(iter(versions.files_of(versions.kept_manifests(root, col._manifest)[2])))
    saved = (root / seg).read_bytes()
    (root / seg).unlink()  # a file only the tagged version needs goes missing
    report = verify(root)
    assert not report.ok and any(
        p.kind == "history" and "kept version 2" in p.detail for p in report.errors
    )
    (root / seg).write_bytes(saved)
    assert verify(root).ok
    col.untag("keep-me")
    col.set_retention(0)  # cleanup runs: version 2's files are no longer needed
    assert [x.version for x in col.versions()] == [col.version]
    # one segment left: its columns, its vectors and its id index (40 rows: one checksum
    # block, so no row checksums)
    assert sorted(p.suffix for p in (root / "segments").iterdir()) == [".arrow", ".f32", ".ids"]
    with pytest.raises(InvalidInputError, match="no longer kept"):
        embedsearch.open(root, version=2)
    with pytest.raises(InvalidInputError, match="keep_days"):
        col.set_retention(-1)
    col.close()


def test_expired_by_age(tmp_path):
    root = tmp_path / "c"
    col = embedsearch.open(root)
    v = _vecs(5, 3)
    col.add(["a", "b"], ids=["a", "b"], vectors=v[:2])
    col.add(["c"], ids=["c"], vectors=v[2:3])
    col.set_retention(1)
    old = versions.record_path(root, 2)
    obj = json.loads(old.read_text())
    obj["time"] = "2020-01-01T00:00:00+00:00"  # 2 is old: expired on the next cleanup
    old.write_text(json.dumps(obj))
    os.utime(old, (time.time() - 5 * 86400,) * 2)
    col.add(["d"], ids=["d"], vectors=v[3:4])
    assert 2 not in [x.version for x in col.versions()]
    assert 3 in [x.version for x in col.versions()]
    col.close()


def test_expiry_after_a_commit_walks_from_the_oldest_record(tmp_path):
    """After each commit the records past the window go, oldest first, judged by mtime,
    and the walk stops at the first record inside the window: a tagged record stays, and
    one out of order (the clock set back) waits for the writer's full cleanup."""
    root = tmp_path / "c"
    col = embedsearch.open(root)
    v = _vecs(9, 7)
    col.set_retention(1)
    for i in range(6):
        col.add([f"t{i}"], ids=[f"d{i}"], vectors=v[i : i + 1])
    gens = [x.version for x in col.versions()]
    first, tagged, young, late = gens[0], gens[1], gens[2], gens[3]
    col.tag("kept", version=tagged)
    for gen in (first, tagged, late):  # older than the window; `late` after a young one
        path = versions.record_path(root, gen)
        obj = json.loads(path.read_text())
        obj["time"] = "2020-01-01T00:00:00+00:00"
        path.write_text(json.dumps(obj))
        os.utime(path, (time.time() - 5 * 86400,) * 2)
    col.add(["x"], ids=["x"], vectors=v[6:7])  # the commit's quick expiry
    on_disk = {g for g in gens if versions.record_path(root, g).exists()}
    assert on_disk == set(gens) - {first}
    assert young in [x.version for x in col.versions()]
    versions.cleanup(root, col._manifest)  # a writer's first write: every record judged
    assert not versions.record_path(root, late).exists()
    assert versions.record_path(root, tagged).exists()
    assert versions.record_path(root, young).exists()
    col.close()


def test_uncommitted_record_is_ignored(tmp_path):
    """A crash after the record but before the manifest rename: no phantom version."""
    root = tmp_path / "c"
    col = embedsearch.open(root)
    col.add(["a"], ids=["a"], vectors=_vecs(1))
    cur = col._manifest.to_json()
    phantom = dict(cur, generation=cur["generation"] + 1, segments=[])
    versions.record_hook(root, "delete")(phantom)
    assert [x.version for x in col.versions()] == [1, 2]
    with pytest.raises(InvalidInputError, match="does not exist"):
        embedsearch.open(root, version=3)
    col.add(["b"], ids=["b"], vectors=_vecs(1, 5))  # overwrites the phantom record
    assert [(x.version, x.op) for x in col.versions()][-1] == (3, "add")
    assert len(embedsearch.open(root, version=3)) == 2
    col.close()


def test_http_versions_tags_restore_and_version_param(tmp_path, encoder, demo_rows):
    import httpx

    from embedsearch.server import create_app
    from embedsearch.server.runner import ServerThread

    home = tmp_path / "srv"
    app = create_app(home, api_keys=[], write_wait_s=0.2)
    docs = [
        {"id": r["id"], "text": r["text"], "metadata": {"year": r["year"]}} for r in demo_rows[:80]
    ]
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        assert c.post("/collections", json={"name": "h"}).status_code == 201
        assert c.post("/collections/h/documents", json={"documents": docs}).status_code == 201
        r = c.post("/collections/h/tags", json={"tag": "full"})
        assert r.status_code == 201 and r.json() == {"tag": "full", "version": 2}
        q = {"query": demo_rows[0]["text"], "k": 3}
        before = c.post("/collections/h/search", json=q).json()["hits"]
        assert c.post("/collections/h/delete", json={"ids": [demo_rows[0]["id"]]}).is_success
        now = c.post("/collections/h/search", json=q).json()["hits"]
        assert now[0]["id"] != demo_rows[0]["id"]
        for ref in ("full", "2", "-2"):
            old = c.post(f"/collections/h/search?version={ref}", json=q).json()["hits"]
            assert old == before
        assert c.get("/collections/h/count?version=full").json()["count"] == 80
        assert c.get("/collections/h/count").json()["count"] == 79
        assert c.get(f"/collections/h/documents/{demo_rows[0]['id']}?version=2").is_success
        m_old = c.post("/collections/h/map?version=full", json={"max_points": 100}).json()
        m_new = c.post("/collections/h/map", json={"max_points": 100}).json()
        assert len(m_old["points"]) == 80 and len(m_new["points"]) == 79
        info = c.get("/collections/h?version=full").json()
        assert info["count"] == 80
        listing = c.get("/collections/h/versions").json()
        assert [v["op"] for v in listing["versions"]] == ["create", "add", "delete"]
        assert listing["tags"] == {"full": 2} and listing["keep_days"] == 7
        # bad references: 4xx that say what to do
        r = c.post("/collections/h/search?version=nope", json=q)
        assert r.status_code == 422 and "no tag 'nope'" in r.json()["error"]["message"]
        r = c.post("/collections/h/search?version=77", json=q)
        assert r.status_code == 422 and "does not exist" in r.json()["error"]["message"]
        r = c.post("/collections/h/tags", json={"tag": "full"})
        assert r.status_code == 422 and "already names" in r.json()["error"]["message"]
        r = c.post("/collections/h/cluster?version=full", json={"k": 2, "persist": True})
        assert r.status_code == 409, r.text
        # restore over HTTP, then the newest answers as the tagged one did
        r = c.post("/collections/h/restore", json={"version": "full"})
        assert r.status_code == 200 and r.json()["version"] == 4 and r.json()["count"] == 80
        assert c.post("/collections/h/search", json=q).json()["hits"] == before
        r = c.put("/collections/h/retention", json={"keep_days": 0})
        assert [v["version"] for v in r.json()["versions"]] == [2, 4]
        assert c.delete("/collections/h/tags/full").is_success
        assert c.get("/collections/h/versions").json()["tags"] == {}
        spec = c.get("/openapi.json").json()
        for route in ("/collections/{name}/versions", "/collections/{name}/restore"):
            assert route in spec["paths"]
        params = spec["paths"]["/collections/{name}/search"]["post"]["parameters"]
        assert any(p["name"] == "version" for p in params)


def test_cli_versions_tag_restore(tmp_path, monkeypatch, encoder, capsys):
    from embedsearch.cli import main

    monkeypatch.setenv("EMBEDSEARCH_HOME", str(tmp_path))
    col = embedsearch.open("c")
    col.add(["the cat sat on the mat", "stocks fell sharply"], ids=["a", "b"])
    col.close()
    assert main(["tag", "c", "two-docs"]) == 0
    assert main(["delete", "c", "a"]) == 0
    assert main(["versions", "c", "--json"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out[out.index("[") :])
    assert [(v["version"], v["op"], v["tags"]) for v in rows] == [
        (1, "create", []),
        (2, "add", ["two-docs"]),
        (3, "delete", []),
    ]
    assert main(["search", "c", "a kitten", "-k", "1", "--version", "two-docs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == "a"
    assert main(["restore", "c", "two-docs"]) == 0
    assert "as version 4" in capsys.readouterr().out
    assert sorted(embedsearch.open("c").ids()) == ["a", "b"]
    assert main(["tag", "c", "bad/tag"]) == 2
    assert "not a valid tag" in capsys.readouterr().err


def test_time_travel_on_an_approximate_index_is_exact_to_then(tmp_path):
    """The saved IVF index a version used is kept with it: its answers, not a rebuild's."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=(4000, 384)).astype(np.float32)
    col = embedsearch.open(tmp_path / "c", index="IVF16,Flat")
    col.add([f"t{i}" for i in range(3000)], ids=[f"i{i}" for i in range(3000)], vectors=v[:3000])
    col.close()
    col = embedsearch.open(tmp_path / "c")
    q = rng.normal(size=(30, 384)).astype(np.float32)
    then = [[(h.id, round(h.score, 6)) for h in r] for r in col.batch_search(q, 10)]
    col.tag("t")
    ids = [f"i{i}" for i in range(3000, 4000)]
    col.add(ids, ids=ids, vectors=v[3000:])
    col.delete([f"i{i}" for i in range(100)])
    col.compact()
    col.reindex("IVF32,Flat")
    col.close()
    view = embedsearch.open(tmp_path / "c", version="t")
    assert view.info()["index"]["resolved"] == "IVF16,Flat"
    assert [[(h.id, round(h.score, 6)) for h in r] for r in view.batch_search(q, 10)] == then


def test_an_untagged_past_version_borrows_the_current_index(tmp_path, monkeypatch, unit_vectors):
    """A past version keeps its rows, not its index file (derived data: one per saved index
    kept a week had doubled a 1M-row collection's disk): a newer save removes it. Opening
    that version borrows the current index limited to its rows (its segments are the first
    of the current ones), never shows a later row, and builds nothing; verify, snapshot
    and restore all still work. A tag keeps a version's own index file."""
    from embedsearch.index import VectorIndex, exact_search
    from embedsearch.maintenance import verify

    rng = np.random.default_rng(4)
    v = unit_vectors(4, 3000)
    root = tmp_path / "c"
    col = embedsearch.open(root, index="IVF16,Flat")
    col.add([f"t{i}" for i in range(2000)], ids=[f"i{i}" for i in range(2000)], vectors=v[:2000])
    tagged_index = col._manifest.index.file.file
    col.tag("kept")  # tagged: this version keeps its own index file
    ids = [f"i{i}" for i in range(2000, 2500)]
    col.add(ids, ids=ids, vectors=v[2000:2500])
    col.reindex("IVF16,Flat")  # an index file over 2,500 rows
    middle, middle_index = col.version, col._manifest.index.file.file
    ids = [f"i{i}" for i in range(2500, 3000)]
    col.add(ids, ids=ids, vectors=v[2500:])
    col.reindex("IVF16,Flat")  # one over all 3,000 rows: the untagged middle's goes
    assert len({tagged_index, middle_index, col._manifest.index.file.file}) == 3
    assert not (root / middle_index).exists()
    assert (root / tagged_index).exists()
    assert verify(root).ok
    assert len(embedsearch.open(root, version="kept")) == 2000
    col.close()

    def no_build(self, vectors, **kw):
        raise AssertionError("a view of a past version built an index")

    monkeypatch.setattr(VectorIndex, "build", no_build)
    view = embedsearch.open(root, version=middle)
    assert len(view) == 2500
    q = v[2600:2610] + 0.01 * rng.normal(size=(10, 384)).astype(np.float32)  # near later rows
    hits = view.batch_search(q, 10)
    got = {h.id for r in hits for h in r}
    assert not got & {f"i{i}" for i in range(2500, 3000)}, "a later row leaked into the past"
    _, want = exact_search(v[:2500], q, 10)
    recall = np.mean(
        [len({h.id for h in r} & {f"i{p}" for p in w}) / 10 for r, w in zip(hits, want)]
    )
    assert recall >= 0.8, recall  # the IVF index's answers, not a random ten
    assert view.info()["index"]["kind"] == "approximate"
    snap = view.snapshot(tmp_path / "middle.tar")
    assert snap.version == middle
    view.close()
    monkeypatch.undo()

    embedsearch.restore_snapshot(tmp_path / "middle.tar", tmp_path / "r")
    restored = embedsearch.open(tmp_path / "r")
    assert len(restored) == 2500 and restored.search(v[10], k=1)[0].id == "i10"
    restored.close()
    col = embedsearch.open(root)
    col.restore(middle)
    assert len(col) == 2500 and col.search(v[2499], k=1)[0].id == "i2499"
    assert col._manifest.index.file is not None  # re-made and saved
    assert verify(root).ok
    col.close()


def _count_parses(monkeypatch) -> list[int]:
    """The generations whose records get parsed from now on (a spy around the real parser:
    plumbing only)."""
    parsed: list[int] = []
    real = versions._parse_record

    def counting(raw, where, generation):
        parsed.append(generation)
        return real(raw, where, generation)

    monkeypatch.setattr(versions, "_parse_record", counting)
    return parsed


def _one_row_commits(root, adds: int, seed: int, deleted: str):  # noqa: ANN202 - a Collection
    """A collection at ``root`` with ``adds`` commits of one row each (ids d0, d1, ...),
    then one deleting ``deleted``: a version history to read back."""
    col = embedsearch.open(root)
    v = _vecs(12, seed)
    for i in range(adds):
        col.add([f"t{i}"], ids=[f"d{i}"], vectors=v[i : i + 1])
    col.delete([deleted])
    return col


def test_cleanup_parses_each_version_record_once_per_process(tmp_path, monkeypatch):
    """A record holds its version's whole manifest (1.6 MB at 10M rows): a writer's cleanup
    reads what it needs of each (time, files) once, and again only when the file changes."""
    root = tmp_path / "c"
    col = _one_row_commits(root, 4, seed=4, deleted="d0")
    versions._SUMMARIES.clear()
    versions._SAVED.clear()
    (root / versions.VERSIONS_DIR / versions.SUMMARIES_FILE).unlink()  # see the test below
    parsed = _count_parses(monkeypatch)
    current = col._manifest.to_json()
    first = versions.kept_files(root, current)
    assert sorted(parsed) == list(range(1, col.version + 1))
    parsed.clear()
    versions.cleanup(root, col._manifest)
    assert versions.kept_files(root, current) == first
    assert parsed == []  # every summary came from the first pass
    # what kept_files answers is what the whole records say (the rule before the summaries)
    _, recs = versions._kept_generations(root, col.version)
    expected = versions.files_of(current)
    for rec in recs.values():
        m = rec["manifest"]
        expected |= versions.files_of(m) - versions.index_files_of(m)
    assert first == expected
    # a record replaced (a new file) is read again: 2 now falls outside the window
    parsed.clear()
    old = versions.record_path(root, 2)
    obj = json.loads(old.read_text())
    obj["time"] = "2020-01-01T00:00:00+00:00"
    tmp = old.with_suffix(".new")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, old)
    versions.expire(root, current)
    assert parsed.count(2) == 1 and set(parsed) == {2}
    assert 2 not in [x.version for x in col.versions()]
    col.close()


def test_a_fresh_process_reads_the_saved_summaries_not_the_records(tmp_path, monkeypatch):
    """A writer's cleanup saves the kept records' summaries; the next process's cleanup
    reads them instead of parsing every record (each a whole manifest), and trusts one only
    for the record file it was made from: a damaged, copied or stale file changes nothing
    but the time it takes."""
    root = tmp_path / "c"
    col = _one_row_commits(root, 5, seed=5, deleted="d1")
    current = col._manifest.to_json()
    versions.cleanup(root, col._manifest)  # as a writer's first write does
    saved = root / versions.VERSIONS_DIR / versions.SUMMARIES_FILE
    assert saved.is_file()
    parsed = _count_parses(monkeypatch)

    def fresh_kept_files() -> set[str]:  # as a new process sees them
        versions._SUMMARIES.clear()
        versions._SAVED.clear()
        parsed.clear()
        return versions.kept_files(root, current)

    _, recs = versions._kept_generations(root, col.version)  # the whole records' answer
    expected = versions.files_of(current)
    for rec in recs.values():
        expected |= versions.files_of(rec["manifest"]) - versions.index_files_of(rec["manifest"])
    opened: list[str] = []  # a spy around the real open (plumbing only)
    real_open = versions.durable.open_file

    def spy(where, rel):  # noqa: ANN001, ANN202
        opened.append(str(rel))
        return real_open(where, rel)

    monkeypatch.setattr(versions.durable, "open_file", spy)
    assert fresh_kept_files() == expected and parsed == []
    # the directory's listing names each record file: none is opened, the summaries are
    records = {f"{versions.VERSIONS_DIR}/{versions.record_name(g)}" for g in recs}
    assert not records & set(opened)
    assert f"{versions.VERSIONS_DIR}/{versions.SUMMARIES_FILE}" in opened
    monkeypatch.setattr(versions.durable, "open_file", real_open)

    good = saved.read_bytes()
    saved.write_bytes(good[: len(good) // 2])  # damaged: every record parsed
    assert fresh_kept_files() == expected and sorted(parsed) == sorted(recs)

    obj = json.loads(good)  # a summary that drops a record's files, with another stamp
    obj["records"][0]["new"] = []
    obj["records"][0]["stamp"][1] += 1
    saved.write_text(json.dumps(obj))
    assert fresh_kept_files() == expected and parsed == [obj["records"][0]["generation"]]

    saved.write_bytes(good)  # a record rewritten since (a new file): only it is parsed
    record = versions.record_path(root, 2)
    tmp = record.with_suffix(".new")
    tmp.write_bytes(record.read_bytes())
    os.replace(tmp, record)
    assert fresh_kept_files() == expected and parsed == [2]

    versions._SUMMARIES.clear()
    versions._SAVED.clear()
    versions.cleanup(root, col._manifest)  # the writer saves them again
    assert fresh_kept_files() == expected and parsed == []
    col.close()


def test_an_upgrade_keeps_the_files_of_kept_versions(tmp_path, demo_vectors):
    """The first write after ``repair`` dropped a derived part upgrades the segments; its
    cleanup spares every file a kept past version names. It had removed each file the
    newest version does not name, so a version from before a compaction (or a merge of
    small segments) could no longer be opened and ``verify`` reported it."""
    from v1_format import rewrite_manifest

    from embedsearch import store
    from embedsearch.maintenance import repair, verify

    vecs = np.asarray(demo_vectors)
    path = tmp_path / "c"
    col = embedsearch.open(path)
    for lo in (0, 100):
        ids = [f"d{i}" for i in range(lo, lo + 100)]
        col.add(ids, ids=ids, metadata=[{"year": 2000 + i % 20} for i in range(100)],
                vectors=vecs[lo : lo + 100])  # fmt: skip
    col.delete(["d150"])
    before = col.version
    col.compact(min_deleted_share=0)  # the second segment rewritten; the old one is kept
    col.close()

    def damage(obj: dict) -> None:
        column = obj["segments"][0]["columns"]["typed"][0]
        column["crc32"] = f"{int(column['crc32'], 16) ^ 1:08x}"

    rewrite_manifest(path, damage)
    assert repair(path).lost_rows == 0
    assert store.read_manifest(path).needs_upgrade  # the layout dropped: the next write
    col = embedsearch.open(path)
    col.add(["one more"], ids=["more"], vectors=vecs[200:201])  # upgrades, then cleans up
    col.close()
    report = verify(path)
    assert report.ok and not report.problems, report.problems
    past = embedsearch.open(path, version=before)
    assert len(past) == 199 and past.get(["d199"])[0].text == "d199"
    past.close()
