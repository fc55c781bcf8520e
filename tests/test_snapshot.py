"""Snapshots: consistent while a writer runs, restored identically, hostile archives refused."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

import embedsearch
from embedsearch import CollectionExistsError, SnapshotError


def _vecs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 384)).astype(np.float32)


def _build(path: Path, n: int = 300) -> embedsearch.Collection:
    col = embedsearch.open(path)
    v = _vecs(n)
    col.add(
        [f"text {i}" for i in range(n)],
        ids=[f"d{i}" for i in range(n)],
        vectors=v,
        metadata=[{"k": i % 5} for i in range(n)],
    )
    col.delete([f"d{i}" for i in range(0, n, 7)])
    return col


def _answers(col) -> list:
    q = _vecs(5, 99)
    return [
        [(h.id, round(h.score, 6), h.metadata) for h in col.search(v, k=10, where=w)]
        for v in q
        for w in (None, {"k": {"$in": [1, 3]}})
    ]


def test_round_trip_is_identical_and_self_contained(tmp_path):
    col = _build(tmp_path / "src")
    col.tag("t0")
    col.upsert(["changed"], ids=["d1"], vectors=_vecs(1, 5))
    info = col.snapshot(tmp_path / "a.tar")
    assert info.version == col.version and info.files >= 3 and info.bytes > 0
    old = col.snapshot(tmp_path / "old.tar", version="t0")
    assert old.version == col.resolve_version("t0")
    want, want_old = _answers(col), _answers(col.at("t0"))
    col.close()

    restored = embedsearch.restore_snapshot(tmp_path / "a.tar", tmp_path / "copy")
    assert restored.version == info.version
    copy = embedsearch.open(tmp_path / "copy")
    assert _answers(copy) == want
    assert sorted(copy.ids()) == sorted(embedsearch.open(tmp_path / "src").ids())
    assert copy.versions()[-1].rows == len(copy)
    copy.add(["more"], ids=["new"], vectors=_vecs(1, 6))  # a normal, writable collection
    embedsearch.restore_snapshot(tmp_path / "old.tar", tmp_path / "copy-old")
    assert _answers(embedsearch.open(tmp_path / "copy-old")) == want_old
    with pytest.raises(CollectionExistsError):
        embedsearch.restore_snapshot(tmp_path / "a.tar", tmp_path / "copy")


def test_snapshot_while_a_writer_commits_and_compacts(tmp_path):
    """Each archive is exactly one committed version, even as files are replaced under it."""
    path = tmp_path / "busy"
    col = embedsearch.open(path)
    col.set_retention(0)  # compaction frees old files at once: the snapshot must cope
    batch = 40
    v = _vecs(batch * 40, 3)
    col.add(
        [f"b0-{j}" for j in range(batch)], ids=[f"b0-{j}" for j in range(batch)], vectors=v[:batch]
    )
    stop = threading.Event()

    def writer() -> None:
        for b in range(1, 40):
            if stop.is_set():
                return
            lo = b * batch
            ids = [f"b{b}-{j}" for j in range(batch)]
            col.add(ids, ids=ids, vectors=v[lo : lo + batch])
            if b % 3 == 0:
                col.compact()

    t = threading.Thread(target=writer)
    t.start()
    reader = embedsearch.open(path)  # another handle: no lock
    archives = []
    try:
        for i in range(6):
            archives.append(reader.snapshot(tmp_path / f"s{i}.tar"))
    finally:
        stop.set()
        t.join()
    col.close()
    for i, info in enumerate(archives):
        embedsearch.restore_snapshot(info.path, tmp_path / f"r{i}")
        got = embedsearch.open(tmp_path / f"r{i}")
        ids = set(got.ids())
        batches = {x.split("-")[0] for x in ids}
        n = len(batches)
        assert batches == {f"b{b}" for b in range(n)}, "not a prefix of the committed batches"
        assert len(ids) == n * batch, "a torn batch"
        assert got.info()["version"] == info.version


# ----------------------------------------------------------------------------- hostile
def _members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]


def _write(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _reg(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@pytest.fixture
def good(tmp_path) -> list[tuple[tarfile.TarInfo, bytes]]:
    col = _build(tmp_path / "src", 60)
    col.snapshot(tmp_path / "good.tar")
    col.close()
    return _members(tmp_path / "good.tar")


def _seg(members):
    return next(i for i, (m, _) in enumerate(members) if "/seg-" in m.name)


def _hostile_cases(good):
    seg = _seg(good)
    name = good[seg][0].name
    cases = {}
    cases["traversal"] = (good + [_reg("../evil.txt", b"x")], "path traversal|not a file")
    cases["absolute"] = (good[:2] + [_reg("/tmp/evil.txt", b"x")] + good[2:], "outside|not a file")
    link = tarfile.TarInfo(name)
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    cases["symlink"] = (good[:seg] + [(link, None)] + good[seg + 1 :], "is a link")
    hard = tarfile.TarInfo(name)
    hard.type, hard.linkname = tarfile.LNKTYPE, "manifest.json"
    cases["hardlink"] = (good[:seg] + [(hard, None)] + good[seg + 1 :], "is a link")
    dev = tarfile.TarInfo(name)
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    cases["device"] = (good[:seg] + [(dev, None)] + good[seg + 1 :], "not a regular file")
    big = good[seg][1] + b"\0" * 4096
    cases["oversize"] = (good[:seg] + [_reg(name, big)] + good[seg + 1 :], "bytes; the manifest")
    cases["duplicate"] = (good + [good[seg]], "appears twice")
    data = bytearray(good[seg][1])
    data[len(data) // 2] ^= 0xFF
    cases["flipped-byte"] = (good[:seg] + [_reg(name, bytes(data))] + good[seg + 1 :], "checksum")
    cases["missing-file"] = (good[:seg] + good[seg + 1 :], "lacks 1 file")
    manifest = json.loads(good[1][1])
    manifest["generation"] += 1  # the manifest's own checksum no longer matches
    cases["edited-manifest"] = (
        good[:1] + [_reg("manifest.json", json.dumps(manifest).encode())] + good[2:],
        "manifest is not valid",
    )
    cases["no-header"] = (good[1:], "comes first")
    return cases


def test_hostile_archives_are_refused_and_leave_nothing(tmp_path, good):
    home = tmp_path / "home"
    home.mkdir()
    for label, (members, message) in _hostile_cases(good).items():
        archive = _write(tmp_path / f"{label}.tar", members)
        with pytest.raises(SnapshotError, match=message):
            embedsearch.restore_snapshot(archive, home / label)
        assert list(home.iterdir()) == [], f"{label}: something was left behind"
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()

    raw = (tmp_path / "good.tar").read_bytes()
    (tmp_path / "trunc.tar").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SnapshotError, match="truncated|damaged"):
        embedsearch.restore_snapshot(tmp_path / "trunc.tar", home / "t")
    import gzip

    (tmp_path / "good.tar.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(SnapshotError, match="compressed"):
        embedsearch.restore_snapshot(tmp_path / "good.tar.gz", home / "gz")
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(SnapshotError, match="not a readable tar|not an embedsearch"):
        embedsearch.restore_snapshot(tmp_path / "junk.tar", home / "j")
    assert list(home.iterdir()) == []
    embedsearch.restore_snapshot(tmp_path / "good.tar", home / "ok")  # the real one restores
    assert [p.name for p in home.iterdir()] == ["ok"]


def test_http_and_cli_snapshot_twins(tmp_path, monkeypatch, capsys):
    import httpx

    from embedsearch.cli import main
    from embedsearch.server import Limits, create_app
    from embedsearch.server.runner import ServerThread

    home = tmp_path / "home"
    monkeypatch.setenv("EMBEDSEARCH_HOME", str(home))
    _build(home / "src", 120).close()
    want = _answers(embedsearch.open(home / "src"))
    # CLI
    assert main(["snapshot", "src", str(tmp_path / "cli.tar")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["restore-snapshot", str(tmp_path / "cli.tar"), "cli-copy"]) == 0
    assert "all checksums verified" in capsys.readouterr().out
    assert _answers(embedsearch.open("cli-copy")) == want
    assert main(["restore-snapshot", str(tmp_path / "cli.tar"), "cli-copy"]) == 2
    assert "already exists" in capsys.readouterr().err
    # HTTP, with a server running on the same home
    limits = Limits(max_body_bytes=64 * 1024)  # archives are bigger: their own limit applies
    app = create_app(home, api_keys=[], write_wait_s=0.2, limits=limits)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        r = c.get("/collections/src/snapshot")
        assert len(r.content) > limits.max_body_bytes
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
        assert "src-v" in r.headers["content-disposition"]
        r2 = c.post("/collections/http-copy/snapshot/restore", content=r.content)
        assert r2.status_code == 201, r2.text
        assert r2.json()["version"] == embedsearch.open(home / "src").version
        assert _answers(embedsearch.open(home / "http-copy")) == want
        r3 = c.post("/collections/http-copy/snapshot/restore", content=r.content)
        assert r3.status_code == 409
        big = {"query": "x" * 70_000}
        assert c.post("/collections/src/search", json=big).status_code == 413  # others: 64 KB
        bad = bytearray(r.content)
        bad[len(bad) // 2] ^= 0xFF
        r4 = c.post("/collections/bad/snapshot/restore", content=bytes(bad))
        assert r4.status_code == 422 and "nothing was restored" in r4.text.lower()
        assert c.get("/collections/bad").status_code == 404
        assert c.get("/collections/src/snapshot?version=nope").status_code == 422
        assert not list((home / ".snapshots").iterdir())  # temporary files are gone
        assert "/collections/{name}/snapshot/restore" in c.get("/openapi.json").json()["paths"]


def test_a_killed_restore_or_drop_leaves_nothing_the_next_one_keeps(tmp_path):
    """SIGKILL during restore_snapshot leaves its hidden staging directory; the next restore
    (or drop) in the same folder removes it once its owner is dead, and leaves live work."""
    import os
    import signal
    import subprocess
    import sys
    import time

    col = _build(tmp_path / "src", n=20_000)  # ~35 MB of vectors: the copy takes a while
    col.snapshot(tmp_path / "big.tar")
    col.close()
    dest = tmp_path / "dest"
    dest.mkdir()
    code = "import sys, embedsearch; embedsearch.restore_snapshot(sys.argv[1], sys.argv[2])"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "big.tar"), str(dest / "r")]
    )
    deadline = time.monotonic() + 120
    while not [p for p in dest.iterdir() if ".restore-" in p.name]:
        assert proc.poll() is None and time.monotonic() < deadline, "no staging directory seen"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = [p.name for p in dest.iterdir()]
    assert left and all(".restore-" in n for n in left), left  # no collection, only staging
    live = dest / f".other.restore-{os.getpid()}-{'0' * 12}"  # this process is alive
    live.mkdir()
    trash = dest / f".deleted-gone-{proc.pid}-{'a' * 12}"  # a killed drop's trash
    trash.mkdir()
    embedsearch.restore_snapshot(tmp_path / "big.tar", dest / "again")
    assert sorted(p.name for p in dest.iterdir()) == sorted(["again", live.name, trash.name])
    assert len(embedsearch.open(dest / "again")) == len(embedsearch.open(tmp_path / "src"))
    embedsearch.drop(dest / "again")
    assert sorted(p.name for p in dest.iterdir()) == [live.name]
