"""The HTTP server fronting a sharded collection, against the same data unsharded.

One home holds ``flat`` (the demo corpus, an ordinary collection) and ``sharded`` (the same
documents and vectors partitioned into 2 shards on a real local Ray). One real uvicorn
serves both; every comparison goes through HTTP on both names and expects the same ids and
scores (within 1e-5): text queries, vector queries, ``where`` filters, and again after
adds, an upsert and deletes made through HTTP. Ray starts once for the module
(``ray.init(num_cpus=2)``); the module is skipped, saying why, only when Ray is not
installed or cannot start.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (extra 'distributed')")

import embedsearch  # noqa: E402
from embedsearch import store  # noqa: E402
from embedsearch.cli import build_parser  # noqa: E402
from embedsearch.cli.cmd_serve import server_config  # noqa: E402
from embedsearch.distributed import ShardedCollection, shard_of  # noqa: E402
from embedsearch.errors import LockedError  # noqa: E402
from embedsearch.server import create_app  # noqa: E402
from embedsearch.server import latent as latent_routes  # noqa: E402
from embedsearch.server import retrieve as retrieve_routes  # noqa: E402
from embedsearch.server.runner import ServerThread  # noqa: E402

SHARDS = 2
QUERIES = [
    "cats and kittens",
    "interest rates and inflation",
    "searing a steak",
    "telescopes and distant galaxies",
]
FILTERS: list[Any] = [
    {"year": {"$gte": 2012}},
    {"$or": [{"topic": {"$in": ["animals", "cooking"]}}, {"year": {"$lt": 2005}}]},
]
NEW_DOCS = [
    {"id": "new-1", "text": "A kitten naps in a sunny window.", "metadata": {"topic": "animals"}},
    {
        "id": "new-2",
        "text": "The central bank cut interest rates again.",
        "metadata": {"year": 2030},
    },
]


@pytest.fixture(scope="module")
def home(
    tmp_path_factory: pytest.TempPathFactory,
    ray_cluster: None,
    demo_rows: list[dict[str, Any]],
    demo_vectors: np.ndarray,
) -> Path:
    """``flat`` and ``sharded`` (2 shards): the same documents with the same real vectors;
    ``doomed`` is a copy of ``sharded`` (a sharded collection is its files) to delete."""
    root = tmp_path_factory.mktemp("sharded-home")
    with embedsearch.open(root / "flat") as flat:
        flat.add(
            [r["text"] for r in demo_rows],
            ids=[r["id"] for r in demo_rows],
            metadata=[{"topic": r["topic"], "year": r["year"]} for r in demo_rows],
            vectors=demo_vectors,
        )
        ShardedCollection.from_collection(flat, root / "sharded", SHARDS).close()
    shutil.copytree(root / "sharded", root / "doomed")
    return root


@pytest.fixture(scope="module")
def server(home: Path, encoder: Any) -> Iterator[ServerThread]:
    app = create_app(home, api_keys=[], warm=False)
    with ServerThread(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def both(client: httpx.Client, method: str, route: str, **kw: Any) -> tuple[Any, Any]:
    """The same request on ``flat`` and on ``sharded``: (flat answer, sharded answer)."""
    flat = client.request(method, f"/collections/flat{route}", **kw)
    sharded = client.request(method, f"/collections/sharded{route}", **kw)
    assert flat.status_code == sharded.status_code, (flat.text, sharded.text)
    return flat, sharded


def same_hits(flat: list[dict[str, Any]], sharded: list[dict[str, Any]]) -> None:
    assert flat, "a comparison of empty results proves nothing"
    assert [h["id"] for h in sharded] == [h["id"] for h in flat]
    np.testing.assert_allclose(
        [h["score"] for h in sharded], [h["score"] for h in flat], atol=1e-5, rtol=0
    )
    assert [(h["text"], h["metadata"]) for h in sharded] == [
        (h["text"], h["metadata"]) for h in flat
    ]


def assert_same_search(client: httpx.Client, vectors: list[list[float]]) -> None:
    """Single text and vector searches, and batches under each filter, agree."""
    for q in QUERIES:
        f, s = both(client, "POST", "/search", json={"query": q, "k": 10})
        assert f.status_code == 200, f.text
        same_hits(f.json()["hits"], s.json()["hits"])
    for v in vectors:
        f, s = both(client, "POST", "/search", json={"vector": v, "k": 7})
        assert f.status_code == 200, f.text
        same_hits(f.json()["hits"], s.json()["hits"])
    for where in FILTERS:
        body = {"queries": [*QUERIES, *vectors], "k": 12, "where": where}
        f, s = both(client, "POST", "/search/batch", json=body)
        assert f.status_code == 200, f.text
        for fr, sr in zip(f.json()["results"], s.json()["results"], strict=True):
            same_hits(fr["hits"], sr["hits"])
            assert all(_matches(h["metadata"], where) for h in sr["hits"])


def _matches(meta: dict[str, Any], where: dict[str, Any]) -> bool:
    if "$or" in where:
        return any(_matches(meta, w) for w in where["$or"])
    ((field, cond),) = where.items()
    value = meta.get(field)
    if "$in" in cond:
        return value in cond["$in"]
    if value is None:
        return False
    return value >= cond["$gte"] if "$gte" in cond else value < cond["$lt"]


def stored_vectors(client: httpx.Client, ids: list[str]) -> list[list[float]]:
    r = client.post("/collections/flat/get", json={"ids": ids, "include_vectors": True})
    assert r.status_code == 200, r.text
    return [d["vector"] for d in r.json()["documents"]]


# ----------------------------------------------------------------------------- reads
def test_sharded_collection_is_listed_and_described(
    client: httpx.Client, demo_rows: list[dict[str, Any]]
) -> None:
    listed = {c["name"]: c for c in client.get("/collections").json()["collections"]}
    assert sorted(listed) == ["doomed", "flat", "sharded"]
    assert listed["sharded"]["kind"] == "sharded" and listed["flat"]["kind"] == "collection"
    assert listed["sharded"]["count"] == listed["flat"]["count"] == len(demo_rows)
    f, s = both(client, "GET", "")
    flat, info = f.json(), s.json()
    assert info["count"] == flat["count"] == len(demo_rows)
    assert info["model"]["name"] == flat["model"]["name"]
    assert info["sharding"] == {"shards": SHARDS, "hash": "blake2b-64-mod"}
    counts = [p["count"] for p in info["shards"]]
    assert sum(counts) == len(demo_rows) and min(counts) > 0
    assert "path" not in info
    f, s = both(client, "GET", "/count")
    assert s.json() == f.json() == {"count": len(demo_rows)}
    f, s = both(client, "GET", "/ids", params={"limit": 10_000})
    assert sorted(s.json()["ids"]) == sorted(f.json()["ids"])
    assert s.json()["total"] == len(demo_rows)


def test_search_matches_unsharded(client: httpx.Client, demo_rows: list[dict[str, Any]]) -> None:
    ids = [demo_rows[7]["id"], demo_rows[200]["id"]]
    vectors = stored_vectors(client, ids)
    rng = np.random.default_rng(0)
    off_corpus = (np.asarray(vectors[0]) + 0.3 * rng.standard_normal(len(vectors[0]))).tolist()
    assert_same_search(client, [*vectors, off_corpus])
    f, s = both(client, "POST", "/search", json={"query": QUERIES[0], "k": 5, "exclude": ids})
    same_hits(f.json()["hits"], s.json()["hits"])
    f, s = both(client, "POST", "/search", json={"query": "x", "where": {"year": {"$regex": 1}}})
    assert f.status_code == 422 and s.json()["error"]["type"] == f.json()["error"]["type"]


# ----------------------------------------------------------------------------- writes
def test_writes_through_http_keep_the_two_equal(
    client: httpx.Client, demo_rows: list[dict[str, Any]]
) -> None:
    ids = [r["id"] for r in demo_rows]
    f, s = both(client, "POST", "/documents", json={"documents": NEW_DOCS})
    assert f.status_code == 201, f.text
    assert s.json()["ids"] == ["new-1", "new-2"] and s.json()["count"] == f.json()["count"]
    f, s = both(client, "POST", "/documents", json={"documents": NEW_DOCS[:1]})
    assert f.status_code == 409  # the id exists: nothing added on either
    moved = {"id": ids[3], "text": demo_rows[3]["text"], "metadata": {"topic": "moved"}}
    f, s = both(client, "PUT", "/documents", json={"documents": [moved]})
    assert f.status_code == 200, f.text
    gone = ids[::9]
    f, s = both(client, "POST", "/delete", json={"ids": gone})
    assert s.json() == f.json() == {"deleted": len(gone), "count": len(ids) + 2 - len(gone)}
    f, s = both(client, "POST", "/delete", json={"ids": [ids[1], "no-such-id"]})
    assert f.status_code == 404  # all or nothing: ids[1] stays on both
    f, s = both(client, "DELETE", f"/documents/{ids[1]}")
    assert s.json() == f.json() == {"deleted": 1, "count": len(ids) + 1 - len(gone)}

    f, s = both(client, "GET", "/count")
    assert s.json() == f.json()
    f, s = both(client, "POST", "/get", json={"ids": [ids[3], "new-2"], "include_vectors": True})
    # Shard actors embed with their own thread count, so the float sums may differ in the
    # last bits: everything but the vectors is equal, the vectors to float32 precision.
    s_docs, f_docs = s.json()["documents"], f.json()["documents"]
    s_vecs = np.array([d.pop("vector") for d in s_docs])
    f_vecs = np.array([d.pop("vector") for d in f_docs])
    assert s_docs == f_docs and np.allclose(s_vecs, f_vecs, atol=1e-6)
    assert s.json()["documents"][0]["metadata"] == {"topic": "moved"}
    f, s = both(client, "GET", f"/documents/{gone[0]}")
    assert f.status_code == 404
    f, s = both(client, "GET", "")
    assert [s.json()[k] for k in ("count", "rows", "deleted")] == [
        f.json()[k] for k in ("count", "rows", "deleted")
    ]
    assert_same_search(client, stored_vectors(client, ["new-1", ids[50]]))
    where = {"topic": "moved"}
    f, s = both(client, "POST", "/search", json={"query": QUERIES[0], "where": where})
    same_hits(f.json()["hits"], s.json()["hits"])
    assert [h["id"] for h in s.json()["hits"]] == [ids[3]]


# ----------------------------------------------------------------------------- limits
def test_latent_and_rag_routes_answer_not_supported(client: httpx.Client) -> None:
    asked = 0
    for method, body in [
        ("expr", {"expression": "kittens + cooking", "k": 3}),
        ("cluster", {"k": 2}),
        ("outliers", {"n": 3}),
    ]:
        if method not in latent_routes.available():
            continue
        ok = client.post(f"/collections/flat/{method}", json=body)
        assert ok.status_code == 200, ok.text
        r = client.post(f"/collections/sharded/{method}", json=body)
        _not_supported(r, method)
        asked += 1
    if retrieve_routes.available():
        r = client.post("/collections/sharded/retrieve", json={"query": "kittens", "k": 3})
        _not_supported(r, "retrieve")
        asked += 1
    if not asked:
        pytest.skip("this build has neither latent nor retrieve routes")


def _not_supported(r: httpx.Response, method: str) -> None:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "NotSupportedError"
    assert method in err["message"] and "sharded" in err["message"]


def test_without_ray_a_sharded_collection_says_what_to_install(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server whose Python cannot import Ray still serves ``flat``; ``sharded`` is a 503."""
    app = create_app(home, api_keys=[], warm=False)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        assert c.get("/collections/flat/count").status_code == 200
        listed = [x["name"] for x in c.get("/collections").json()["collections"]]
        assert "sharded" in listed and "flat" in listed
        r = c.get("/collections/sharded")
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["type"] == "ShardedUnavailableError"
        assert "pip install 'embedsearch[distributed]'" in err["message"]


def test_serve_ray_option() -> None:
    parser = build_parser()
    assert server_config(parser.parse_args(["serve"]))["ray_address"] is None
    assert server_config(parser.parse_args(["serve", "--ray"]))["ray_address"] is None
    assert parser.parse_args(["serve", "--ray"]).ray == ""  # bare: start Ray at startup
    cfg = server_config(parser.parse_args(["serve", "--ray", "auto", "--workers", "2"]))
    assert (cfg["ray_address"], cfg["shared_writes"]) == ("auto", True)


# ----------------------------------------------------------------------------- lifecycle
def test_shared_worker_mode_uses_named_actors_and_drop_stops_them(
    home: Path, demo_rows: list[dict[str, Any]]
) -> None:
    """As one of several workers (``--workers N``): the shard actors are named and shared
    with the other workers, writes go through them, and deleting the collection stops them."""
    app = create_app(home, api_keys=[], warm=False, shared_writes=True)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        assert c.get("/collections/doomed/count").json() == {"count": len(demo_rows)}
        col = app.state.server.registry.open_handles()["doomed"]
        named = ray.util.list_named_actors(all_namespaces=True)
        assert sum(a["namespace"] == "embedsearch" for a in named) >= SHARDS
        gone = demo_rows[0]["id"]
        r = c.post("/collections/doomed/delete", json={"ids": [gone]})
        assert r.json() == {"deleted": 1, "count": len(demo_rows) - 1}, r.text
        r = c.delete("/collections/doomed")
        assert r.status_code == 200, r.text
        assert not (home / "doomed").exists()
        assert c.get("/collections/doomed").status_code == 404
        _assert_dead(col._handles)
    assert not any(a["namespace"] == "embedsearch" for a in ray.util.list_named_actors(True))


def test_stopping_the_server_stops_the_shard_actors(home: Path, server: ServerThread) -> None:
    registry = server.server.config.app.state.server.registry
    handles = registry.open_handles()["sharded"]._handles
    assert all(isinstance(ray.get(h.ping.remote(), timeout=60), int) for h in handles)
    written = {shard_of(d["id"], SHARDS) for d in NEW_DOCS}
    for i in written:  # the actor that committed the HTTP writes holds its shard's lock
        with pytest.raises(LockedError):
            store.WriterLock(home / "sharded" / f"shard-{i:04d}").acquire()
    server.stop()
    assert not server.thread.is_alive()
    _assert_dead(handles)
    for i in range(SHARDS):  # closed cleanly: every shard's write lock is free again
        lock = store.WriterLock(home / "sharded" / f"shard-{i:04d}")
        lock.acquire()
        lock.release()
    assert ray.is_initialized()  # the caller's Ray is not the server's to shut down


def _assert_dead(handles: list[Any]) -> None:
    for h in handles:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(h.ping.remote(), timeout=60)
