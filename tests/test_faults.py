"""Faults from below: disk full, read-only storage, damaged files; ``verify`` and ``repair``.

* Disk full is simulated with ``RLIMIT_FSIZE`` in a subprocess (``SIGXFSZ`` ignored, so a
  write that crosses the limit fails with ``EFBIG`` like a full disk would with ``ENOSPC``).
  Every write must fail with an :class:`EmbedSearchError` and leave the collection exactly
  as it was (same manifest bytes, same documents; leftovers gone after the next writer).
* Read-only storage: the tests run as root, which ignores permission bits, so they use
  ``chattr +i`` (immutable directories) and, where ``unshare -m`` works, a read-only bind
  mount. Both are skipped (with the reason) where the environment lacks them.
* Corruption: flipped bytes and truncation in the manifest, a segment, a tombstone file and
  the index file. Data files fail on open with a :class:`CorruptionError` naming the file;
  the index file is derived, so it is rebuilt (with a warning naming it) and flagged by
  ``verify``; ``repair`` quarantines what cannot be read and rebuilds the rest.

Reproduce: ``.venv/bin/pytest tests/test_faults.py -q``.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import embedsearch
from embedsearch import CorruptionError, EmbedSearchError, LockedError, store
from embedsearch.cli import main as cli_main
from embedsearch.maintenance import repair, verify

N_DOCS = 96


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, encoder: Any, demo_rows: list) -> Path:
    """IVF16,Flat collection: 3 segments of 32 docs, one tombstone file, a saved index."""
    path = tmp_path_factory.mktemp("faults") / "tpl"
    col = embedsearch.open(path, index="IVF16,Flat")
    for b in range(3):
        rows = demo_rows[b * 32 : (b + 1) * 32]
        col.add(
            [r["text"] for r in rows],
            ids=[r["id"] for r in rows],
            metadata=[{"topic": r["topic"], "year": r["year"]} for r in rows],
        )
    col.delete([demo_rows[1]["id"], demo_rows[40]["id"], demo_rows[90]["id"]])
    col.close()
    m = store.read_manifest_json(path)
    assert len(m["segments"]) == 3 and len(m["tombstones"]) == 1 and m["index"]["file"]
    return path


@pytest.fixture
def col_path(template: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "col"
    shutil.copytree(template, dst)
    return dst


def _files(path: Path) -> dict[str, str]:
    m = store.read_manifest_json(path)
    return {
        "manifest": store.MANIFEST,
        "segment": m["segments"][1]["file"],
        "vectors": m["segments"][1]["vectors"]["file"],
        "tombstone": m["tombstones"][0]["file"],
        "index": m["index"]["file"]["file"],
    }


def _flip(path: Path, where: float) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x5A
    path.write_bytes(bytes(data))


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _contents(path: Path) -> dict[str, Any]:
    col = embedsearch.open(path)
    try:
        return {d.id: (d.text, d.metadata) for d in col.get(col.ids())}
    finally:
        col.close()


# ----------------------------------------------------------------------------- corruption
def _open_and_read(path: Path) -> None:
    """Open, then touch every stored byte a reader can reach: ids, texts, vectors."""
    col = embedsearch.open(path)
    try:
        col.get(col.ids(), include_vectors=True)
        col.search(np.ones(col.dim), k=3, exact=True)
    finally:
        col.close()


@pytest.mark.parametrize("damage", ["flip-start", "flip-middle", "flip-end", "truncate", "empty"])
@pytest.mark.parametrize("which", ["manifest", "segment", "vectors", "tombstone"])
def test_damaged_data_file_is_detected_before_use_naming_the_file(
    col_path: Path, which: str, damage: str
) -> None:
    """Open maps segments (O(manifest)); their bytes are checked before first use, so
    damage surfaces as a CorruptionError naming the file, never as a wrong result."""
    rel = _files(col_path)[which]
    target = col_path / rel
    if damage.startswith("flip"):
        _flip(target, {"flip-start": 0.02, "flip-middle": 0.5, "flip-end": 0.97}[damage])
    else:
        _truncate(target, 0.5 if damage == "truncate" else 0.0)
    with pytest.raises(EmbedSearchError) as info:
        _open_and_read(col_path)
    assert Path(rel).name in str(info.value)
    if which != "manifest" or damage != "flip-start":  # "format" itself may be hit: not ours
        assert isinstance(info.value, CorruptionError)
    report = verify(col_path)
    assert not report.ok
    assert any(p.file == rel for p in report.errors), report.to_dict()


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_index_file_is_never_loaded_and_is_rebuilt(
    col_path: Path, damage: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    rel = _files(col_path)["index"]
    expected = _contents(col_path)
    (_flip if damage == "flip" else _truncate)(col_path / rel, 0.5)
    from embedsearch.index import faiss

    read = []
    real_read = faiss().read_index
    monkeypatch.setattr(faiss(), "read_index", lambda p, *a: read.append(p) or real_read(p, *a))
    with caplog.at_level(logging.WARNING):
        col = embedsearch.open(col_path)  # the index is read on first need (VectorIndex.defer)
        assert {d.id: (d.text, d.metadata) for d in col.get(col.ids())} == expected
        q = col.vectors([col.ids()[5]])[0]
        approximate = [h.id for h in col.search(q, k=5, nprobe=16)]  # reads it: damaged
    assert read == [], "FAISS read a file whose checksum does not match the manifest"
    assert rel in caplog.text
    assert approximate == [h.id for h in col.search(q, k=5, exact=True)]
    col.close()
    report = verify(col_path)
    assert [(p.file, p.kind) for p in report.errors] == [(rel, "checksum")]
    fixed = repair(col_path)
    assert fixed.index_rebuilt and fixed.ok, fixed.to_dict()
    assert verify(col_path).problems == []
    assert _contents(col_path) == expected


def test_missing_segment_is_named(col_path: Path) -> None:
    rel = _files(col_path)["segment"]
    (col_path / rel).unlink()
    with pytest.raises(CorruptionError, match=Path(rel).name):
        embedsearch.open(col_path)
    assert [(p.file, p.kind) for p in verify(col_path).errors] == [(rel, "missing")]


# ----------------------------------------------------------------------------- verify/repair
def test_verify_intact_collection_and_cli_exit_codes(
    col_path: Path, capsys: pytest.CaptureFixture
) -> None:
    report = verify(col_path)
    assert report.ok and report.problems == []
    assert (report.segments, report.rows, report.live) == (3, N_DOCS, N_DOCS - 3)
    assert cli_main(["verify", str(col_path)]) == 0
    assert cli_main(["verify", str(col_path), "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{") :])["ok"] is True
    _flip(col_path / _files(col_path)["segment"], 0.5)
    assert cli_main(["verify", str(col_path)]) == 1
    assert "DAMAGED" in capsys.readouterr().out


def test_verify_reports_leftovers_as_warnings(col_path: Path) -> None:
    (col_path / "segments" / f".seg-{'a' * 32}.parquet.{'b' * 32}.tmp").write_bytes(b"partial")
    (col_path / "segments" / f"seg-{'0' * 32}.parquet").write_bytes(b"uncommitted")
    # Files embedsearch never writes are someone else's: never reported, never removed.
    (col_path / "segments" / "notes.txt").write_bytes(b"mine")
    (col_path / "segments" / ".seg-abc.parquet.tmp").write_bytes(b"not our name either")
    report = verify(col_path)
    assert report.ok
    assert sorted(p.kind for p in report.warnings) == ["orphan", "temp-file"]
    fixed = repair(col_path)
    assert len(fixed.removed_leftovers) == 2 and verify(col_path).problems == []
    assert (col_path / "segments" / "notes.txt").read_bytes() == b"mine"
    assert (col_path / "segments" / ".seg-abc.parquet.tmp").exists()


def test_repair_quarantines_a_bad_segment_and_deletes_stay_deleted(
    col_path: Path, demo_rows: list, capsys: pytest.CaptureFixture
) -> None:
    before = _contents(col_path)
    rel = _files(col_path)["segment"]  # the second segment: rows 32..63
    _flip(col_path / rel, 0.5)
    assert cli_main(["repair", str(col_path)]) == 0
    assert "quarantined" in capsys.readouterr().out
    assert (col_path / "quarantine" / Path(rel).name).is_file()
    after = _contents(col_path)
    lost = {r["id"] for r in demo_rows[32:64]}
    assert after == {k: v for k, v in before.items() if k not in lost}
    for gone in (demo_rows[1]["id"], demo_rows[90]["id"]):  # deleted before: stay deleted
        assert gone not in after
    assert demo_rows[91]["id"] in after  # the row after a renumbered tombstone survives
    assert verify(col_path).problems == []
    col = embedsearch.open(col_path)
    q = col.vectors([demo_rows[80]["id"]])[0]
    assert col.search(q, k=1)[0].id == demo_rows[80]["id"]
    # past versions that named the quarantined segment are forgotten; every one still
    # listed opens and answers
    listed = [v.version for v in col.versions()]
    col.close()
    for version in listed:
        with embedsearch.open(col_path, version=version) as past:
            assert len(past.search(q, k=1)) == min(1, len(past))


def test_repair_drops_a_bad_tombstone_file(col_path: Path) -> None:
    _flip(col_path / _files(col_path)["tombstone"], 0.5)
    report = repair(col_path)
    assert report.lost_tombstone_files == 1 and report.ok
    assert len(_contents(col_path)) == N_DOCS  # the deletes of that operation are undone


def test_repair_refuses_a_damaged_manifest(col_path: Path) -> None:
    _truncate(col_path / store.MANIFEST, 0.5)
    with pytest.raises(CorruptionError, match="backup"):
        repair(col_path)
    assert cli_main(["repair", str(col_path)]) == 2


def test_repair_waits_for_no_writer(col_path: Path) -> None:
    col = embedsearch.open(col_path)
    col.delete([], missing_ok=True)  # takes the write lock
    with pytest.raises(LockedError):
        repair(col_path)
    col.close()


# ----------------------------------------------------------------------------- disk full
_FSIZE_SCRIPT = textwrap.dedent(
    """
    import json, os, resource, shutil, signal, sys
    import embedsearch
    from embedsearch import store
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    template, work = sys.argv[1], sys.argv[2]
    HARD = resource.getrlimit(resource.RLIMIT_FSIZE)[1]

    def run(name, limit, op, prepare=None):
        path = os.path.join(work, name)
        shutil.copytree(template, path)
        if prepare:
            prepare(path)
        col = embedsearch.open(path)
        before = (open(os.path.join(path, "manifest.json"), "rb").read(), col.ids())
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit(path), HARD))
        try:
            op(col)
            outcome = "ok"
        except embedsearch.EmbedSearchError as exc:
            outcome = "EmbedSearchError: " + str(exc)
        except BaseException as exc:
            outcome = "OTHER " + type(exc).__name__ + ": " + str(exc)[:300]
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (HARD, HARD))
        manifest_same = open(os.path.join(path, "manifest.json"), "rb").read() == before[0]
        tmp_after_op = tmps(path)
        col.close()
        col = embedsearch.open(path)
        same = manifest_same and col.ids() == before[1]
        col.delete([], missing_ok=True)  # the next writer cleans up
        left = tmps(path)
        col.close()
        print(json.dumps({"name": name, "outcome": outcome, "unchanged": same, "tmp": left,
                          "tmp_after_op": tmp_after_op}))

    def tmps(path):
        return [p for p in os.listdir(path) + os.listdir(os.path.join(path, "segments"))
                if p.endswith(".tmp")]

    def manifest_size(path):
        return os.path.getsize(os.path.join(path, "manifest.json"))

    meta = lambda col, n: col.upsert(
        [d.text for d in col.get(col.ids()[:n])], ids=col.ids()[:n],
        metadata=[{"pad": "x" * 200, "i": i} for i in range(n)])
    run("compact", lambda p: 20_000, lambda col: col.compact())
    run("upsert", lambda p: 20_000, lambda col: meta(col, 60))
    run("delete-manifest", manifest_size, lambda col: col.delete(col.ids()[:1]))
    run("reindex", lambda p: 60_000, lambda col: col.reindex("HNSW16"))

    def hnsw_without_saved_index(path):
        # An HNSW collection whose manifest names no index file yet (as after a failed save).
        col = embedsearch.open(path, index="HNSW16")
        col.close()
        lock = store.WriterLock(__import__("pathlib").Path(path))
        lock.acquire()
        m = store.read_manifest_json(lock.path.parent)
        m["index"]["file"] = None
        store.write_manifest(lock.path.parent, m)
        lock.release()

    run("upsert-then-index-save", lambda p: 60_000, lambda col: meta(col, 1),
        prepare=hnsw_without_saved_index)
    """
)


@pytest.fixture(scope="module")
def fsize_results(template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    work = tmp_path_factory.mktemp("fsize")
    proc = subprocess.run(
        [sys.executable, "-c", _FSIZE_SCRIPT, str(template), str(work)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {r["name"]: r for r in rows}


@pytest.mark.parametrize("name", ["compact", "upsert", "delete-manifest"])
def test_disk_full_fails_cleanly_and_changes_nothing(fsize_results: dict, name: str) -> None:
    r = fsize_results[name]
    assert r["outcome"].startswith("EmbedSearchError: No room to write"), r
    assert r["unchanged"] and r["tmp"] == r["tmp_after_op"] == [], r


@pytest.mark.parametrize("name", ["reindex", "upsert-then-index-save"])
def test_disk_full_while_saving_the_index_is_clean(fsize_results: dict, name: str) -> None:
    """The index is saved after the commit. Either the write reports success (it committed;
    the derived index is rebuilt on the next open) or it fails with an EmbedSearchError and
    changed nothing. Never a foreign exception for a write that happened."""
    r = fsize_results[name]
    assert r["outcome"] == "ok" or (
        r["outcome"].startswith("EmbedSearchError") and r["unchanged"]
    ), r
    assert r["tmp"] == r["tmp_after_op"] == [], r


def test_io_error_after_the_manifest_rename_loses_nothing(
    col_path: Path, monkeypatch: pytest.MonkeyPatch, demo_vectors: Any
) -> None:
    import errno

    from embedsearch import durable

    real_fsync = durable.fsync_fd  # fault injection point: the directory fsync

    def failing(fd: int, path: Any, *, directory: bool = False) -> None:
        if directory and Path(path) == col_path:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd, path, directory=directory)

    col = embedsearch.open(col_path)
    monkeypatch.setattr(durable, "fsync_fd", failing)
    with pytest.raises(EmbedSearchError):
        col.add(["after the fault"], ids=["late"], vectors=demo_vectors[:1])
    monkeypatch.undo()
    col.close()
    col = embedsearch.open(col_path)  # must open: the old state, or the new one whole
    assert len(col) in (N_DOCS - 3, N_DOCS - 2)
    col.close()


# ----------------------------------------------------------------------------- read-only
def _chattr(flag: str, *paths: Path) -> bool:
    try:
        proc = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True)
    except FileNotFoundError:
        return False
    return proc.returncode == 0


@pytest.fixture
def immutable(col_path: Path):
    """The collection's directories made immutable (no entry can be created or removed)."""
    dirs = [col_path.parent, col_path, col_path / "segments"]
    if not _chattr("+i", *dirs):
        pytest.skip("chattr +i is not available here (needs root on ext2/3/4, xfs or btrfs)")
    yield col_path
    _chattr("-i", *dirs)


def test_read_only_directory_reads_work_writes_fail_cleanly(immutable: Path) -> None:
    before = _contents(immutable)
    col = embedsearch.open(immutable)
    q = col.vectors(col.ids()[:1])[0]
    assert col.search(q, k=3)[0].id == col.ids()[0]
    for write in (
        lambda: col.delete(col.ids()[:2]),
        lambda: col.upsert([col.get(col.ids()[0])[0].text], ids=[col.ids()[0]], metadata=[{}]),
        col.compact,
        lambda: col.reindex("HNSW16"),
    ):
        with pytest.raises(EmbedSearchError, match="permissions"):
            write()
    col.close()
    assert _contents(immutable) == before


def test_creating_a_collection_in_a_read_only_directory_is_a_clean_error(immutable: Path) -> None:
    with pytest.raises(EmbedSearchError):
        embedsearch.open(immutable.parent / "new-collection")


_RO_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import embedsearch
    col = embedsearch.open(sys.argv[1])
    out = {"count": len(col), "search": col.search(np.ones(col.dim), k=1)[0].id}
    try:
        col.delete(col.ids()[:1])
        out["delete"] = "ok"
    except embedsearch.EmbedSearchError as exc:
        out["delete"] = "EmbedSearchError: " + str(exc)
    except BaseException as exc:
        out["delete"] = "OTHER " + type(exc).__name__ + ": " + str(exc)
    print(json.dumps(out))
    """
)


def test_write_is_not_reported_failed_after_it_committed(fsize_results: dict) -> None:
    r = fsize_results["upsert-then-index-save"]
    assert r["outcome"] == "ok" or (
        r["outcome"].startswith("EmbedSearchError") and r["unchanged"]
    ), r


def test_read_only_mount_writes_fail_cleanly(col_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) not available")
    script = col_path.parent / "ro_script.py"
    script.write_text(_RO_SCRIPT)
    shell = (
        f"mount --bind {col_path} {col_path} && mount -o remount,ro,bind {col_path} && "
        f"exec {sys.executable} {script} {col_path}"
    )
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", shell],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0 and "mount" in proc.stderr and "{" not in proc.stdout:
        pytest.skip(f"cannot make a read-only bind mount here: {proc.stderr.strip()[-200:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["count"] == N_DOCS - 3 and out["search"]
    assert out["delete"].startswith("EmbedSearchError"), out
