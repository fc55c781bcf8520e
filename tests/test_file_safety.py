"""Hostile collection directories: links and odd files planted inside a collection.

A collection directory may come from someone else (a shared drive, an unpacked archive).
A symlinked ``segments/`` once made the first write delete every file in the link's target;
a symlinked ``LOCK`` was truncated and overwritten. Every file under a collection now goes
through :mod:`embedsearch.durable` (no link followed, regular files only, names matched
strictly before anything is removed). These tests plant real links pointing at a *victim*
directory or file and demand that the victim is untouched and a clear error comes back,
through Python, the CLI (a subprocess) and HTTP.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

import embedsearch
from embedsearch import EmbedSearchError, UnsafeFileError, durable, store
from embedsearch.maintenance import repair, verify
from embedsearch.server import create_app
from embedsearch.server.runner import ServerThread


def _snapshot(path: Path) -> dict[str, str]:
    """Name -> sha256 of every file under ``path`` (the victim's state)."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A directory of someone's files, including names embedsearch itself would write."""
    v = tmp_path / "victim"
    v.mkdir()
    (v / "thesis.txt").write_text("years of work")
    (v / f"seg-{'a' * 32}.parquet").write_bytes(b"looks like ours, is not")
    (v / f"index-{'b' * 32}.faiss").write_bytes(b"also not ours")
    (v / ".x.tmp").write_bytes(b"a temp file of someone else")
    return v


def _make(path: Path, vectors: Any, n: int = 6) -> None:
    col = embedsearch.open(path)
    col.add([f"text {i}" for i in range(n)], ids=[f"d{i}" for i in range(n)], vectors=vectors[:n])
    col.close()


def _link_segments(col: Path, victim: Path) -> None:
    """Replace a collection's ``segments/`` with a link to ``victim`` holding the same files."""
    for f in (col / "segments").iterdir():
        (victim / f.name).write_bytes(f.read_bytes())
    for f in list((col / "segments").iterdir()):
        f.unlink()
    (col / "segments").rmdir()
    (col / "segments").symlink_to(victim, target_is_directory=True)


# ----------------------------------------------------------------------------- Python
def test_symlinked_segments_of_an_empty_collection_is_refused_on_write(
    tmp_path: Path, victim: Path, demo_vectors: Any, encoder: Any
) -> None:
    path = tmp_path / "col"
    embedsearch.open(path).close()
    (path / "segments").rmdir()
    (path / "segments").symlink_to(victim, target_is_directory=True)
    before = _snapshot(victim)
    col = embedsearch.open(path)  # nothing to read yet
    with pytest.raises(UnsafeFileError, match="segments is a symbolic link"):
        col.add(["a"], ids=["a"], vectors=demo_vectors[:1])
    col.close()
    assert _snapshot(victim) == before
    assert sorted(p.name for p in victim.iterdir()) == sorted(before)


def test_symlinked_segments_with_data_is_refused_on_open_and_repair(
    tmp_path: Path, victim: Path, demo_vectors: Any, encoder: Any
) -> None:
    path = tmp_path / "col"
    _make(path, demo_vectors)
    _link_segments(path, victim)
    before = _snapshot(victim)
    with pytest.raises(UnsafeFileError):
        embedsearch.open(path)
    with pytest.raises(EmbedSearchError):
        repair(path)
    report = verify(path)  # verify reports, never follows
    assert not report.ok
    assert _snapshot(victim) == before


def test_segments_as_a_file_is_refused(tmp_path: Path, demo_vectors: Any, encoder: Any) -> None:
    path = tmp_path / "col"
    embedsearch.open(path).close()
    (path / "segments").rmdir()
    (path / "segments").write_text("not a directory")
    col = embedsearch.open(path)
    with pytest.raises(UnsafeFileError):
        col.add(["a"], ids=["a"], vectors=demo_vectors[:1])
    col.close()
    assert (path / "segments").read_text() == "not a directory"


def test_symlinked_lock_is_never_written_through(
    tmp_path: Path, demo_vectors: Any, encoder: Any
) -> None:
    path = tmp_path / "col"
    _make(path, demo_vectors)
    target = tmp_path / "precious.txt"
    target.write_text("do not truncate me")
    (path / "LOCK").unlink(missing_ok=True)
    (path / "LOCK").symlink_to(target)
    col = embedsearch.open(path)
    with pytest.raises(UnsafeFileError, match="LOCK is a symbolic link"):
        col.add(["a"], ids=["x"], vectors=demo_vectors[:1])
    col.close()
    with pytest.raises(UnsafeFileError):
        repair(path)
    assert target.read_text() == "do not truncate me"


def test_fifo_lock_is_refused_without_hanging(
    tmp_path: Path, demo_vectors: Any, encoder: Any
) -> None:
    path = tmp_path / "col"
    _make(path, demo_vectors)
    (path / "LOCK").unlink(missing_ok=True)
    os.mkfifo(path / "LOCK")
    col = embedsearch.open(path)
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        col.delete(["d1"])
    col.close()


def test_symlinked_manifest_and_segment_files_are_refused(
    tmp_path: Path, demo_vectors: Any, encoder: Any
) -> None:
    path = tmp_path / "col"
    _make(path, demo_vectors, n=100)  # more than one checksum block: row checksums too
    # A link to a byte-identical copy: the checksum would pass, the link must not.
    # columns, vectors, id index, row checksums
    for pattern in ("seg-*.arrow", "seg-*.f32", "seg-*.ids", "seg-*.crc"):
        seg = next((path / "segments").glob(pattern))
        copy = tmp_path / f"copy{seg.suffix}"
        copy.write_bytes(seg.read_bytes())
        seg.unlink()
        seg.symlink_to(copy)
        with pytest.raises(UnsafeFileError):
            embedsearch.open(path)
        assert any(p.kind == "unsafe" for p in verify(path).errors)
        seg.unlink()
        seg.write_bytes(copy.read_bytes())
    m = tmp_path / "manifest-copy.json"
    m.write_bytes((path / "manifest.json").read_bytes())
    (path / "manifest.json").unlink()
    (path / "manifest.json").symlink_to(m)
    with pytest.raises(UnsafeFileError):
        embedsearch.open(path)


def test_orphan_cleanup_removes_only_names_embedsearch_writes(
    tmp_path: Path, demo_vectors: Any, encoder: Any
) -> None:
    path = tmp_path / "col"
    _make(path, demo_vectors)
    mine = {
        "segments/notes.txt": b"keep",
        "segments/seg-123.parquet": b"not 32 hex: keep",
        "README.md": b"keep",
        "index-notours.faiss": b"keep",
        ".x.tmp": b"keep",
    }
    ours = {
        f"segments/seg-{'c' * 32}.parquet": b"orphan",
        f"segments/.del-{'d' * 32}.parquet.{'e' * 32}.tmp": b"temp",
        f"index-{'f' * 32}.faiss": b"orphan index",
        f".manifest.json.{'0' * 32}.tmp": b"temp manifest",
    }
    for rel, data in {**mine, **ours}.items():
        (path / rel).write_bytes(data)
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    (path / "segments" / f"seg-{'9' * 32}.parquet").symlink_to(outside)  # a link named like ours
    col = embedsearch.open(path)
    col.add(["new"], ids=["new"], vectors=demo_vectors[:1])  # first write removes leftovers
    col.close()
    for rel, data in mine.items():
        assert (path / rel).read_bytes() == data, rel
    for rel in ours:
        assert not (path / rel).exists(), rel
    assert outside.read_text() == "x"


def test_durable_helpers_refuse_links_inside_derived(tmp_path: Path, victim: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    (root / "derived").symlink_to(victim, target_is_directory=True)
    before = _snapshot(victim)
    with pytest.raises(UnsafeFileError):
        durable.write_file(root, "derived/x.json", b"{}", create_dirs=True)
    with pytest.raises(UnsafeFileError):
        durable.read_bytes(root, "derived/thesis.txt")
    assert durable.unlink(root, "derived") is False  # a link is not a file we remove
    assert _snapshot(victim) == before


def test_new_collection_directory_is_fsynced_into_its_parent(tmp_path: Path) -> None:
    ops: list[tuple[str, str]] = []
    with durable.recording(lambda op, path, d: ops.append((op, path))):
        store.ensure_layout(tmp_path / "a" / "b")
    assert ("mkdir", str(tmp_path / "a")) in ops
    # every mkdir is followed by an fsync of its parent directory
    for i, (op, path) in enumerate(ops):
        if op == "mkdir":
            assert ("fsync_dir", str(Path(path).parent)) in ops[i + 1 :], (path, ops)


# ----------------------------------------------------------------------------- CLI
def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EMBEDSEARCH_HOME": str(home), "PYTHONPATH": str(Path.cwd())}
    return subprocess.run(
        [sys.executable, "-c", "from embedsearch.cli import main; raise SystemExit(main())", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_cli_refuses_symlinked_segments_and_lock(
    tmp_path: Path, victim: Path, demo_vectors: Any, encoder: Any
) -> None:
    home = tmp_path / "home"
    _make(home / "c1", demo_vectors)
    _link_segments(home / "c1", victim)
    _make(home / "c2", demo_vectors)
    precious = tmp_path / "precious.txt"
    precious.write_text("keep")
    (home / "c2" / "LOCK").unlink(missing_ok=True)
    (home / "c2" / "LOCK").symlink_to(precious)
    before = _snapshot(victim)
    for args in (
        ("compact", "c1"),
        ("delete", "c1", "d1"),
        ("repair", "c1"),
        ("delete", "c2", "d1"),
    ):
        proc = _cli(*args, home=home)
        assert proc.returncode != 0, (args, proc.stdout)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert "symbolic link" in proc.stderr + proc.stdout, (args, proc.stderr)
    assert _snapshot(victim) == before
    assert precious.read_text() == "keep"


# ----------------------------------------------------------------------------- HTTP
def test_http_refuses_symlinked_segments_and_lock(
    tmp_path: Path, victim: Path, demo_vectors: Any, encoder: Any
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    app = create_app(home, api_keys=[])
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        assert client.post("/collections", json={"name": "c1"}).status_code == 201
        (home / "c1" / "segments").rmdir()
        (home / "c1" / "segments").symlink_to(victim, target_is_directory=True)
        before = _snapshot(victim)
        r = client.post("/collections/c1/documents", json={"documents": [{"text": "hello"}]})
        assert r.status_code == 409, r.text
        assert r.json()["error"]["type"] == "UnsafeFileError"
        assert "symbolic link" in r.json()["error"]["message"]
        assert _snapshot(victim) == before

        assert client.post("/collections", json={"name": "c2"}).status_code == 201
        precious = tmp_path / "precious.txt"
        precious.write_text("keep")
        (home / "c2" / "LOCK").unlink(missing_ok=True)
        (home / "c2" / "LOCK").symlink_to(precious)
        r = client.post("/collections/c2/documents", json={"documents": [{"text": "hi"}]})
        assert r.status_code == 409, r.text
        r = client.delete("/collections/c2")
        assert r.status_code < 500, r.text
        assert precious.read_text() == "keep"
        assert _snapshot(victim) == before


def test_lock_holder_and_sharded_layout_are_never_read_through_a_link(tmp_path: Path) -> None:
    from embedsearch.cli.common import writer_of
    from embedsearch.distributed.layout import SHARDED_FILE, read_layout

    secret = tmp_path / "secret.txt"
    secret.write_text("pid=1 host=x password=hunter2")
    col = tmp_path / "c"
    col.mkdir()
    (col / "LOCK").symlink_to(secret)
    assert writer_of(col) is None  # the secret is never read to name a "holder"
    (col / SHARDED_FILE).symlink_to(secret)
    with pytest.raises(UnsafeFileError):
        read_layout(col)
