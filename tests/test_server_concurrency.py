"""Concurrency over HTTP: searches during adds see committed states only; health stays up.

Bounded in count (a fixed number of adds, at most ``MAX_SEARCHES`` searches) and in time
(every request has a timeout); nothing here asserts a latency.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from embedsearch.server import create_app
from embedsearch.server.runner import ServerThread

TOPICS = ["rivers", "markets", "violins", "planets", "bread", "football", "compilers", "tigers"]
MAX_SEARCHES = 400


def texts(prefix: str, n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}{i}", "text": f"{prefix} note {i} about {TOPICS[i % len(TOPICS)]}"}
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, encoder: Any) -> Iterator[ServerThread]:
    app = create_app(tmp_path_factory.mktemp("conc-home"), api_keys=[])
    with ServerThread(app) as srv:
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            for _ in range(3000):  # the query encoder loads in the background
                if c.get("/readyz").status_code == 200:
                    break
                threading.Event().wait(0.05)
        yield srv


def test_searches_during_adds_see_only_committed_states(server: ServerThread) -> None:
    base, batches = texts("base", 40), [texts(f"b{j}-", 60) for j in range(3)]
    states = [{d["id"] for d in base}]
    for batch in batches:
        states.append(states[-1] | {d["id"] for d in batch})
    valid = {frozenset(s) for s in states}
    total = len(states[-1])

    with httpx.Client(base_url=server.url, timeout=120) as c:
        assert c.post("/collections", json={"name": "conc"}).status_code == 201
        assert c.post("/collections/conc/documents", json={"documents": base}).is_success

    done = threading.Event()
    seen: list[frozenset[str]] = []
    counts: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def writer() -> None:
        try:
            with httpx.Client(base_url=server.url, timeout=120) as c:
                for batch in batches:
                    r = c.post("/collections/conc/documents", json={"documents": batch})
                    if r.status_code != 201:
                        errors.append(f"add: {r.status_code} {r.text[:200]}")
        finally:
            done.set()

    def reader(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            i = 0
            while not done.is_set() and len(seen) < MAX_SEARCHES:
                query = f"a note about {TOPICS[(worker + i) % len(TOPICS)]}"
                r = c.post(
                    "/collections/conc/search", json={"query": query, "k": total, "exact": True}
                )
                n = c.get("/collections/conc/count")
                with lock:
                    if r.status_code != 200 or n.status_code != 200:
                        errors.append(f"search: {r.status_code} {r.text[:200]}")
                        continue
                    seen.append(frozenset(h["id"] for h in r.json()["hits"]))
                    counts.append(n.json()["count"])
                i += 1

    with ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(reader, w) for w in range(4)]
        pool.submit(writer).result(timeout=300)
        for f in futures:
            f.result(timeout=300)

    assert not errors, errors[:3]
    assert seen, "no search ran"
    torn = [s for s in seen if s not in valid]
    assert not torn, f"{len(torn)} searches saw a state that was never committed"
    assert set(counts) <= {len(s) for s in states}
    with httpx.Client(base_url=server.url, timeout=120) as c:
        final = c.post(
            "/collections/conc/search", json={"query": "note", "k": total, "exact": True}
        )
        assert {h["id"] for h in final.json()["hits"]} == states[-1]


def test_health_and_text_search_answer_while_a_large_add_runs(server: ServerThread) -> None:
    """A 600-text add holds the shared encoder for its whole batch; /healthz and text
    searches (the server's own query encoder) must still answer before it finishes."""
    with httpx.Client(base_url=server.url, timeout=120) as c:
        assert c.post("/collections", json={"name": "big"}).status_code == 201
        seed = c.post("/collections/big/documents", json={"documents": texts("seed", 5)})
        assert seed.is_success
    in_flight = threading.Event()
    finished = threading.Event()
    result: dict[str, Any] = {}

    def big_add() -> None:
        with httpx.Client(base_url=server.url, timeout=300) as c:
            in_flight.set()
            result["add"] = c.post(
                "/collections/big/documents", json={"documents": texts("bulk", 600)}
            )
            finished.set()

    thread = threading.Thread(target=big_add)
    thread.start()
    in_flight.wait(10)
    health_during = search_during = 0
    with httpx.Client(base_url=server.url, timeout=120) as c:
        for i in range(200):
            if finished.is_set():
                break
            h = c.get("/healthz")
            s = c.post("/collections/big/search", json={"query": f"note {i} about tigers", "k": 3})
            if finished.is_set():
                break  # answered, but perhaps only after the add: do not count it
            assert h.status_code == 200 and s.status_code == 200
            assert {hit["id"] for hit in s.json()["hits"]} <= {f"seed{j}" for j in range(5)} | {
                f"bulk{j}" for j in range(600)
            }
            health_during += 1
            search_during += 1
    thread.join(300)
    assert result["add"].status_code == 201, result["add"].text
    assert health_during >= 1 and search_during >= 1
    with httpx.Client(base_url=server.url, timeout=120) as c:
        assert c.get("/collections/big/count").json()["count"] == 605


def test_shared_writes_mode_releases_the_lock(tmp_path: Path, encoder: Any) -> None:
    """With several workers (shared_writes), two apps on one home can both write."""
    one = create_app(tmp_path, api_keys=[], shared_writes=True, separate_query_encoder=False)
    two = create_app(tmp_path, api_keys=[], shared_writes=True, separate_query_encoder=False)
    with ServerThread(one) as s1, ServerThread(two) as s2, httpx.Client(timeout=120) as c:
        assert c.post(f"{s1.url}/collections", json={"name": "shared"}).status_code == 201
        for k, url in enumerate([s1.url, s2.url, s1.url]):
            doc = {"documents": [{"id": f"x{k}", "text": f"text number {k}"}]}
            r = c.post(f"{url}/collections/shared/documents", json=doc)
            assert r.status_code == 201, r.text
        for url in (s1.url, s2.url):  # each worker sees the other's commits
            assert c.get(f"{url}/collections/shared/count").json()["count"] == 3
        assert c.delete(f"{s2.url}/collections/shared").status_code == 200
        assert c.get(f"{s1.url}/collections/shared/count").status_code == 404
