"""Issue 14 findings 6, 7, 8 and 11: a lock never released, deep metadata, server 500s,
auth before body parsing, route names in messages, plain directories, stale index files.

Real collections, a real uvicorn server on loopback, subprocesses where a process-wide
limit (RLIMIT_FSIZE) is the fault being injected.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import embedsearch
from embedsearch import IndexSpecError, InvalidInputError, store, versions
from embedsearch.server import create_app
from embedsearch.server.runner import ServerThread

KEY = "hostile-requests-key-0123456789"


def _deep(depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        out = {"a": out}
    return out


# ----------------------------------------------------------------------------- finding 6
_LOCK_CHILD = r"""
import resource, signal, sys, numpy as np, embedsearch, pathlib
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # EFBIG instead of a signal
path = pathlib.Path(sys.argv[1])
col = embedsearch.open(path)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))   # not even the pid fits in LOCK
try:
    col.add(["x"], ids=["x"], vectors=np.ones((1, 384)))
    print("first: ok")
except embedsearch.EmbedSearchError as exc:
    print("first:", type(exc).__name__, str(exc)[:120])
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
col.add(["y"], ids=["y"], vectors=np.ones((1, 384)))   # the lock was given back
print("second: ok", len(col))
"""


def test_a_failed_pid_write_releases_the_lock(tmp_path: Path, demo_vectors: Any) -> None:
    path = tmp_path / "c"
    col = embedsearch.open(path)
    col.add(["a"], ids=["a"], vectors=demo_vectors[:1])
    col.close()
    (path / "LOCK").unlink()  # a fresh LOCK must be written (and extended) on acquire
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    proc = subprocess.run(
        [sys.executable, "-c", _LOCK_CHILD, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("first: EmbedSearchError") and "No room" in lines[0], lines
    assert lines[1] == "second: ok 2", lines
    col = embedsearch.open(path)
    col.add(["z"], ids=["z"], vectors=demo_vectors[:1])  # and another process can write
    assert len(col) == 3
    col.close()


# ----------------------------------------------------------------------------- finding 7
def test_deep_metadata_is_refused_at_write_time(tmp_path: Path, demo_vectors: Any) -> None:
    col = embedsearch.open(tmp_path / "c")
    col.add(["ok"], ids=["ok"], metadata=[_deep(32)], vectors=demo_vectors[:1])
    for depth in (33, 990, 5000):
        with pytest.raises(InvalidInputError, match="nested more than 32 levels"):
            col.add(["deep"], ids=[f"d{depth}"], metadata=[_deep(depth)], vectors=demo_vectors[:1])
    with pytest.raises(InvalidInputError, match="over the"):
        col.add(["big"], ids=["big"], metadata=[{"x": "y" * (1 << 20)}], vectors=demo_vectors[:1])
    assert col.ids() == ["ok"]
    col.close()


def test_deep_metadata_stored_by_an_older_version_is_readable(
    tmp_path: Path, demo_vectors: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedsearch import validation

    path = tmp_path / "c"
    col = embedsearch.open(path)
    monkeypatch.setattr(validation, "MAX_METADATA_DEPTH", 10_000)  # what older versions did
    col.add(
        ["deep doc", "plain doc"],
        ids=["deep", "plain"],
        metadata=[_deep(300), {"k": 1}],
        vectors=demo_vectors[:2],
    )
    monkeypatch.undo()
    col.close()
    col = embedsearch.open(path)
    hits = col.search(demo_vectors[0], k=2, where={"k": {"$ne": 2}})
    assert {h.id for h in hits} == {"deep", "plain"}
    doc = col.get(["deep"])[0]
    depth = validation.metadata_depth(doc.metadata)
    assert depth <= validation.MAX_METADATA_DEPTH  # clipped: the deep part is its JSON text
    json.dumps(doc.metadata)
    col.close()
    app = create_app(tmp_path, api_keys=[])
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        r = client.post("/collections/c/search", json={"query": "deep doc", "k": 2})
        assert r.status_code == 200, r.text
        assert {h["id"] for h in r.json()["hits"]} == {"deep", "plain"}
        r = client.post(
            "/collections/c/documents", json={"documents": [{"text": "t", "metadata": _deep(300)}]}
        )
        assert r.status_code == 422, r.text
        assert "nested more than 32" in r.json()["error"]["message"]


# ----------------------------------------------------------------------------- 8 and 11
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, encoder: Any) -> Iterator[tuple[Path, str]]:
    home = tmp_path_factory.mktemp("hostile-home")
    app = create_app(home, api_keys=[KEY])
    with ServerThread(app) as srv:
        yield home, srv.url


@pytest.fixture(scope="module")
def client(served: tuple[Path, str]) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=served[1], timeout=120, headers=headers) as c:
        yield c


def test_lone_surrogate_in_embeddings_is_a_4xx(client: httpx.Client) -> None:
    body = '{"input": ["ok", "bad \\ud800 text"], "model": "all-MiniLM-L6-v2"}'
    r = client.post("/v1/embeddings", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert "surrogate" in r.json()["error"]["message"]
    body = '{"query": "bad \\udfff", "k": 1}'
    client.post("/collections", json={"name": "sur"})
    r = client.post(
        "/collections/sur/search", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text


def test_reindex_to_unbuildable_specs_is_a_clean_4xx(
    client: httpx.Client, demo_rows: list[dict[str, Any]]
) -> None:
    assert client.post("/collections", json={"name": "re"}).status_code == 201
    docs = [{"id": r["id"], "text": r["text"]} for r in demo_rows[:40]]
    assert client.post("/collections/re/documents", json={"documents": docs}).status_code == 201
    for spec in ("PCA1000,Flat", "LSQ4x8", "HNSW0", "NSG32"):
        r = client.post("/collections/re/reindex", json={"index": spec})
        assert r.status_code == 422, (spec, r.text)
        assert r.json()["error"]["type"] == "IndexSpecError"
    r = client.post("/collections/re/search", json={"query": "plants", "k": 3})
    assert r.status_code == 200 and len(r.json()["hits"]) == 3


def test_unauthenticated_malformed_json_is_401(served: tuple[Path, str]) -> None:
    with httpx.Client(base_url=served[1], timeout=30) as anon:
        r = anon.post(
            "/collections", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 401, r.text
        r = anon.post(
            "/collections",
            content=b"{not json",
            headers={"Content-Type": "application/json", "Authorization": "Bearer wrong"},
        )
        assert r.status_code == 401, r.text


def test_messages_name_routes_and_plain_directories_agree(
    served: tuple[Path, str], client: httpx.Client
) -> None:
    home = served[0]
    assert client.post("/collections", json={"name": "taken"}).status_code == 201
    r = client.post("/collections", json={"name": "taken"})
    assert r.status_code == 409
    assert "DELETE /collections/taken" in r.json()["error"]["message"], r.text
    (home / "plain").mkdir()
    (home / "plain" / "notes.txt").write_text("mine")
    got = client.get("/collections/plain")
    made = client.post("/collections", json={"name": "plain"})
    assert got.status_code == made.status_code == 409, (got.text, made.text)
    for r in (got, made):
        assert "not an embedsearch collection" in r.json()["error"]["message"]
    assert (home / "plain" / "notes.txt").read_text() == "mine"


def test_reindex_leaves_no_old_index_file(tmp_path: Path, demo_vectors: Any) -> None:
    col = embedsearch.open(tmp_path / "c", index="HNSW16")
    vecs = np.random.default_rng(0).standard_normal((120, 384)).astype(np.float32)
    col.add([f"t{i}" for i in range(120)], ids=[f"d{i}" for i in range(120)], vectors=vecs)
    root = tmp_path / "c"

    def unnamed() -> list[str]:  # index files neither the current nor a kept version names
        kept = versions.kept_files(root, store.read_manifest(root))
        return [p.name for p in root.glob("index-*.faiss") if p.name not in kept]

    for spec in ("IVF4,Flat", "HNSW8", "IVF8,SQ8"):
        col.reindex(spec)
        assert unnamed() == [], spec
        assert store.read_manifest(root).index.file.file in os.listdir(root)
        # the commit that names the spec names its index too: no reader opens it without
        assert col.versions()[-1].op == "reindex"
        assert store.read_manifest(root).index.file.info["spec"] == spec
    before = sorted(os.listdir(root))
    with pytest.raises(IndexSpecError):
        col.reindex("PCA1000,Flat")
    assert sorted(os.listdir(root)) == before
    col.close()


def test_idle_and_slowloris_connections_are_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection that sends nothing, or trickles a header, is closed after the header
    deadline; a normal request on the same server still works."""
    import socket
    import time

    from embedsearch.server import protocol

    monkeypatch.setattr(protocol.TimedH11Protocol, "header_timeout_s", 1.0)
    app = create_app(tmp_path, api_keys=[])
    with ServerThread(app) as srv:
        idle = socket.create_connection((srv.host, srv.port), timeout=10)
        slow = socket.create_connection((srv.host, srv.port), timeout=10)
        t0 = time.monotonic()
        closed_at = {}
        for _ in range(8):  # one header byte every 0.5 s: never completes
            try:
                slow.sendall(b"G")
            except OSError:
                break
            time.sleep(0.5)
        for name, sock in (("idle", idle), ("slow", slow)):
            sock.settimeout(10)
            try:
                data = sock.recv(1024)
            except (ConnectionResetError, TimeoutError) as exc:
                data = type(exc).__name__.encode()
            closed_at[name] = (time.monotonic() - t0, data)
            sock.close()
        assert closed_at["idle"][1] in (b"", b"ConnectionResetError"), closed_at
        assert closed_at["slow"][1] in (b"", b"ConnectionResetError"), closed_at
        assert max(t for t, _ in closed_at.values()) < 9, closed_at
        r = httpx.get(f"{srv.url}/healthz", timeout=10)
        assert r.status_code == 200


def test_a_trickled_request_body_is_cut_off_and_a_steady_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that announces a body and trickles it a byte at a time is disconnected at
    the body deadline; a body that arrives at a real rate (longer than the base deadline)
    is answered."""
    import socket
    import time

    from embedsearch.server import protocol

    monkeypatch.setattr(protocol.TimedH11Protocol, "body_timeout_s", 1.5)
    monkeypatch.setattr(protocol.TimedH11Protocol, "body_min_rate", 2000.0)
    app = create_app(tmp_path, api_keys=[])
    with ServerThread(app) as srv:
        head = (
            f"POST /collections HTTP/1.1\r\nHost: {srv.host}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        ).encode()
        slow = socket.create_connection((srv.host, srv.port), timeout=10)
        slow.sendall(head)
        t0 = time.monotonic()
        cut = None
        for _ in range(40):  # one byte every 0.25 s: 4 B/s, far below the minimum rate
            try:
                slow.sendall(b" ")
            except OSError:
                cut = time.monotonic() - t0
                break
            time.sleep(0.25)
        if cut is None:
            slow.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                assert slow.recv(1024) == b""
            cut = time.monotonic() - t0
        slow.close()
        assert cut < 8, f"a trickled body held the connection {cut:.1f} s"

        body = json.dumps({"name": "steady", "pad": "x" * 12_000}).encode()
        steady = socket.create_connection((srv.host, srv.port), timeout=10)
        steady.sendall(
            (
                f"POST /collections HTTP/1.1\r\nHost: {srv.host}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
        )
        for i in range(0, len(body), 1000):  # 4 kB/s for 3 s: past the 1.5 s base deadline
            steady.sendall(body[i : i + 1000])
            time.sleep(0.25)
        reply = b""
        while chunk := steady.recv(65536):
            reply += chunk
        steady.close()
        assert reply.startswith(b"HTTP/1.1 "), reply[:200]
        assert int(reply.split()[1]) < 500, reply[:300]


def test_the_encoder_refuses_lone_surrogates_cleanly(encoder: Any) -> None:
    with pytest.raises(InvalidInputError, match="surrogate"):
        encoder.encode(["fine", "bad \ud800"])
    with pytest.raises(InvalidInputError, match="not str"):
        encoder.encode(["fine", 3])  # type: ignore[list-item]
