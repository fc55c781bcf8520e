"""Congruence: the same calls, good and hostile, through every implementation of a collection.

In the spirit of qdrant-client's ``tests/congruence_tests`` (``compare_client_results``):
one ordered list of calls runs against each implementation, and every implementation must
give the same answer (ids, texts and metadata equal, scores within 1e-5) or fail with the
same error class. The implementations, all holding the same 60 demo documents with the same
real vectors:

* ``plain`` — an :func:`embedsearch.open` handle kept open;
* ``reopened`` — a fresh handle opened from disk for every call (writes must persist);
* ``sharded`` — a :class:`~embedsearch.distributed.ShardedCollection` of 2 shards on a real
  local Ray;
* ``http`` — a real uvicorn server on loopback, through httpx;
* ``http-sharded`` — the same server fronting a copy of the sharded collection.

An HTTP answer's error class is the ``error.type`` of its JSON body. A request the HTTP
schema refuses before any embedsearch code runs answers ``ValidationError``; it is congruent
with any :class:`~embedsearch.InvalidInputError` subclass on the Python side (the schema is
the HTTP surface's argument check). Any other exception (``TypeError``, a 500) is a failure.

Calls a surface cannot express (a single id string where HTTP takes a list, an empty batch
HTTP's schema refuses, non-string metadata keys JSON cannot carry) say so and run through
the Python implementations only.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest

pytest.importorskip("ray", reason="ray is not installed (extra 'distributed')")

import embedsearch  # noqa: E402
from embedsearch.distributed import ShardedCollection  # noqa: E402
from embedsearch.errors import (  # noqa: E402
    DocumentNotFoundError,
    DuplicateIdError,
    EmbedSearchError,
    FilterError,
    InvalidInputError,
)
from embedsearch.server import create_app  # noqa: E402
from embedsearch.server.runner import ServerThread  # noqa: E402

N_DOCS = 60
SCORE_ATOL = 1e-5
PYTHON_ONLY = frozenset({"plain", "reopened", "sharded"})
OK = "ok"
NO_ROUTE = "select() has no HTTP route of its own (maps and clusters use it server-side)"


# ----------------------------------------------------------------------------- adapters
def _hits(hits: Any) -> list[tuple[str, float, str, dict[str, Any]]]:
    return [(h.id, float(h.score), h.text, h.metadata or {}) for h in hits]


def _docs(docs: Any) -> list[tuple[str, str, dict[str, Any]]]:
    return [(d.id, d.text, d.metadata or {}) for d in docs]


class PythonImpl:
    """Calls straight into a collection object; ``opener`` gives the handle for each call."""

    def __init__(self, opener: Callable[[], Any], per_call: bool) -> None:
        self._opener = opener
        self._per_call = per_call
        self._col = None if per_call else opener()

    def _run(self, fn: Callable[[Any], Any]) -> Any:
        if not self._per_call:
            return fn(self._col)
        with self._opener() as col:
            return fn(col)

    def search(self, query: Any, **kw: Any) -> Any:
        return _hits(self._run(lambda c: c.search(query, **kw)))

    def batch_search(self, queries: Any, **kw: Any) -> Any:
        return [_hits(r) for r in self._run(lambda c: c.batch_search(queries, **kw))]

    def search_ids(self, query: Any, **kw: Any) -> Any:
        return [(i, float(s)) for i, s in self._run(lambda c: c.search_ids(query, **kw))]

    def get(self, ids: Any) -> Any:
        return _docs(self._run(lambda c: c.get(ids)))

    def count(self) -> int:
        return self._run(len)

    def select(self, where: Any = None) -> Any:
        """``(id, vector)`` pairs sorted by id (shards list their documents shard by shard)."""
        ids, vectors = self._run(lambda c: c.select(where))
        return sorted((i, v.astype(float).tolist()) for i, v in zip(ids, vectors))

    def add(self, texts: Any, ids: Any, metadata: Any = None) -> Any:
        return self._run(lambda c: c.add(texts, ids=ids, metadata=metadata, progress=False))

    def upsert(self, texts: Any, ids: Any, metadata: Any = None) -> Any:
        return self._run(lambda c: c.upsert(texts, ids=ids, metadata=metadata, progress=False))

    def delete(self, ids: Any, missing_ok: bool = False) -> int:
        return self._run(lambda c: c.delete(ids, missing_ok=missing_ok))

    def close(self) -> None:
        if self._col is not None:
            self._col.close()


class HttpError(Exception):
    """An HTTP answer >= 400, carrying the ``error.type`` of its JSON body."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(f"{status} {kind}: {message}")
        self.kind = kind


class HttpImpl:
    """The same calls as HTTP requests to a real server; bodies are sent as ASCII JSON, so
    NaN, infinities and lone surrogates reach the server as a client could send them."""

    def __init__(self, client: httpx.Client, name: str) -> None:
        self._c = client
        self._base = f"/collections/{name}"

    def _call(self, method: str, route: str, body: Any = None) -> Any:
        content = None if body is None else json.dumps(body)
        r = self._c.request(
            method,
            self._base + route,
            content=content,
            headers={"content-type": "application/json"} if content else None,
        )
        if r.status_code >= 400:
            err = r.json().get("error", {})
            raise HttpError(r.status_code, err.get("type", "?"), err.get("message", r.text))
        return r.json()

    @staticmethod
    def _knobs(kw: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in kw.items() if v is not None}

    @staticmethod
    def _hits(hits: list[dict[str, Any]]) -> Any:
        return [(h["id"], float(h["score"]), h["text"], h["metadata"] or {}) for h in hits]

    def search(self, query: Any, **kw: Any) -> Any:
        key = "query" if isinstance(query, str) else "vector"
        if isinstance(query, np.ndarray):
            query = query.tolist()
        body = self._call("POST", "/search", {key: query, **self._knobs(kw)})
        return self._hits(body["hits"])

    def batch_search(self, queries: Any, **kw: Any) -> Any:
        if isinstance(queries, list):
            queries = [q.tolist() if isinstance(q, np.ndarray) else q for q in queries]
        body = self._call("POST", "/search/batch", {"queries": queries, **self._knobs(kw)})
        return [self._hits(r["hits"]) for r in body["results"]]

    def get(self, ids: Any) -> Any:
        docs = self._call("POST", "/get", {"ids": ids})["documents"]
        return [(d["id"], d["text"], d["metadata"] or {}) for d in docs]

    def count(self) -> int:
        return self._call("GET", "/count")["count"]

    def _docs(self, texts: Any, ids: Any, metadata: Any) -> list[dict[str, Any]]:
        metas = metadata if metadata is not None else [None] * len(texts)
        docs = []
        for t, i, m in zip(texts, ids, metas):
            d: dict[str, Any] = {"id": i, "text": t}
            if m is not None:
                d["metadata"] = m
            docs.append(d)
        return docs

    def add(self, texts: Any, ids: Any, metadata: Any = None) -> Any:
        return self._call("POST", "/documents", {"documents": self._docs(texts, ids, metadata)})[
            "ids"
        ]

    def upsert(self, texts: Any, ids: Any, metadata: Any = None) -> Any:
        if ids is None:
            body = {"documents": [{"text": t} for t in texts]}
        else:
            body = {"documents": self._docs(texts, ids, metadata)}
        return self._call("PUT", "/documents", body)["ids"]

    def delete(self, ids: Any, missing_ok: bool = False) -> int:
        return self._call("POST", "/delete", {"ids": ids, "missing_ok": missing_ok})["deleted"]

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- outcomes
def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", value), ("error", class name) for an embedsearch error or an HTTP error
    answer, or ("crash", ...) for anything else — never congruent with a clean answer."""
    try:
        return ("ok", fn())
    except HttpError as exc:
        return ("error", exc.kind)
    except EmbedSearchError as exc:
        return ("error", type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - a crash is a finding, reported below
        return ("crash", f"{type(exc).__name__}: {exc}")


def _invalid_input(kind: str) -> bool:
    cls = getattr(embedsearch.errors, kind, None)
    return isinstance(cls, type) and issubclass(cls, InvalidInputError)


def same_error(a: str, b: str) -> bool:
    if a == b:
        return True
    if "ValidationError" in (a, b):  # the HTTP schema refused it: any invalid-input class
        other = b if a == "ValidationError" else a
        return other == "ValidationError" or _invalid_input(other)
    return False


def same_value(a: Any, b: Any) -> bool:
    """Equal, with floats within SCORE_ATOL (scores cross processes and JSON)."""
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, (int, float))
            and isinstance(b, (int, float))
            and math.isclose(a, b, rel_tol=0, abs_tol=SCORE_ATOL)
        )
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return a == b


def congruent(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    if a[0] != b[0] or a[0] == "crash":
        return False
    return same_error(a[1], b[1]) if a[0] == "error" else same_value(a[1], b[1])


# ----------------------------------------------------------------------------- calls
@dataclass(frozen=True)
class Call:
    """One call through every implementation.

    Attributes:
        name: what the call is, as reported on a mismatch.
        run: the call, on an implementation adapter.
        expect: ``OK`` or the error class the reference (``plain``) must give.
        only: implementations to run it through (default: all), with ``why`` saying why.
        nonempty: a successful answer must hold something (empty results prove nothing).
    """

    name: str
    run: Callable[[Any], Any]
    expect: Any = OK
    only: frozenset[str] | None = None
    why: str = ""
    nonempty: bool = False


def run_calls(impls: dict[str, Any], calls: list[Call]) -> tuple[list[str], int]:
    """Run each call through every implementation; return the mismatches and the runs made."""
    problems: list[str] = []
    runs = 0
    for call in calls:
        names = [n for n in impls if call.only is None or n in call.only]
        results = {n: outcome(lambda n=n, call=call: call.run(impls[n])) for n in names}
        runs += len(names)
        ref = results["plain"]
        if call.expect == OK:
            expected = ref[0] == "ok"
        else:
            cls = getattr(embedsearch.errors, str(ref[1]), None) if ref[0] == "error" else None
            expected = isinstance(cls, type) and issubclass(cls, call.expect)
        if not expected:
            problems.append(f"{call.name}: plain gave {str(ref)[:300]}, expected {call.expect}")
        if call.nonempty and ref[0] == "ok" and not ref[1]:
            problems.append(f"{call.name}: plain gave an empty answer")
        for n, res in results.items():
            if not congruent(ref, res):
                problems.append(f"{call.name}: {n} gave {str(res)[:300]}, plain {str(ref)[:300]}")
    return problems, runs


def read_calls(ids: list[str], vec: list[float]) -> list[Call]:
    """Reads on the 60 documents: good inputs, then hostile ones."""
    big = [x * 1e30 for x in vec]
    tiny = [x * 1e-30 for x in vec]
    huge = [x * 1e39 for x in vec]
    where_year = {"year": {"$gte": 2012}}
    return [
        # ---- good
        Call("search text k=5", lambda c: c.search("cats and kittens", k=5), nonempty=True),
        Call("search text k=1", lambda c: c.search("interest rates", k=1), nonempty=True),
        Call("search where", lambda c: c.search("space", k=10, where=where_year), nonempty=True),
        Call(
            "search where $in + exclude",
            lambda c: c.search(
                "food", k=8, where={"topic": {"$in": ["cooking", "animals"]}}, exclude=ids[:3]
            ),
            nonempty=True,
        ),
        Call("search stored vector", lambda c: c.search(vec, k=5), nonempty=True),
        Call(
            "search_ids where",
            lambda c: c.search_ids("space", k=10, where=where_year),
            only=PYTHON_ONLY,
            why="search_ids is the Python API's (HTTP's /search returns whole hits)",
            nonempty=True,
        ),
        Call(
            "search_ids stored vector",
            lambda c: c.search_ids(vec, k=5),
            only=PYTHON_ONLY,
            why="search_ids is the Python API's",
            nonempty=True,
        ),
        Call(
            "search_ids k=0",
            lambda c: c.search_ids("cats", k=0),
            InvalidInputError,
            only=PYTHON_ONLY,
            why="search_ids is the Python API's",
        ),
        Call(
            "search_ids bad where",
            lambda c: c.search_ids("x", k=3, where={"y": {"$bad": 1}}),
            FilterError,
            only=PYTHON_ONLY,
            why="search_ids is the Python API's",
        ),
        Call("search vector * 1e30", lambda c: c.search(big, k=5), nonempty=True),
        Call("search vector * 1e-30", lambda c: c.search(tiny, k=5), nonempty=True),
        Call("search vector * 1e39 (> float32)", lambda c: c.search(huge, k=5), nonempty=True),
        Call("search k = all", lambda c: c.search("music", k=N_DOCS), nonempty=True),
        Call("search k > count", lambda c: c.search("music", k=500), nonempty=True),
        Call("search exact", lambda c: c.search("music", k=7, exact=True), nonempty=True),
        Call("search nprobe on Flat", lambda c: c.search("music", k=3, nprobe=4), nonempty=True),
        Call("search where matches nothing", lambda c: c.search("x y", k=5, where={"year": 1})),
        Call(
            "search $or filter",
            lambda c: c.search(
                "history", k=6, where={"$or": [{"year": {"$lt": 2005}}, {"topic": "space"}]}
            ),
            nonempty=True,
        ),
        Call(
            "batch texts + vector",
            lambda c: c.batch_search(["cats", "stock markets", vec], k=4),
            nonempty=True,
        ),
        Call(
            "batch where",
            lambda c: c.batch_search(["cats", "galaxies"], k=3, where=where_year),
            nonempty=True,
        ),
        Call("get two", lambda c: c.get([ids[5], ids[2]]), nonempty=True),
        Call("get repeated id", lambda c: c.get([ids[1], ids[1]]), nonempty=True),
        Call("count", lambda c: c.count(), nonempty=True),
        Call("select all", lambda c: c.select(), only=PYTHON_ONLY, why=NO_ROUTE, nonempty=True),
        Call(
            "select where",
            lambda c: c.select({"topic": {"$in": ["astronomy", "sports"]}, "year": {"$gte": 2005}}),
            only=PYTHON_ONLY,
            why=NO_ROUTE,
            nonempty=True,
        ),
        Call(
            "select bad filter",
            lambda c: c.select({"year": {"$near": 3}}),
            FilterError,
            only=PYTHON_ONLY,
            why=NO_ROUTE,
        ),
        # ---- hostile: k
        Call("k=0", lambda c: c.search("cats", k=0), InvalidInputError),
        Call("k=-3", lambda c: c.search("cats", k=-3), InvalidInputError),
        Call("k=10001", lambda c: c.search("cats", k=10_001), InvalidInputError),
        Call("k=True", lambda c: c.search("cats", k=True), InvalidInputError),
        Call("k=2.5", lambda c: c.search("cats", k=2.5), InvalidInputError),
        Call("k='3'", lambda c: c.search("cats", k="3"), InvalidInputError),
        Call("batch k=0", lambda c: c.batch_search(["cats"], k=0), InvalidInputError),
        # ---- hostile: queries
        Call("query ''", lambda c: c.search("", k=3), InvalidInputError),
        Call("query whitespace", lambda c: c.search("  \n\t ", k=3), InvalidInputError),
        Call("query NUL", lambda c: c.search("a\x00b", k=3), InvalidInputError),
        Call("query lone surrogate", lambda c: c.search("cat \ud800", k=3), InvalidInputError),
        Call("query None", lambda c: c.search(None, k=3), InvalidInputError),
        Call("query int", lambda c: c.search(7, k=3), InvalidInputError),
        Call("vector wrong dim", lambda c: c.search([0.1, 0.2, 0.3], k=3), InvalidInputError),
        Call("vector zero", lambda c: c.search([0.0] * len(vec), k=3), InvalidInputError),
        Call("vector NaN", lambda c: c.search([math.nan, *vec[1:]], k=3), InvalidInputError),
        Call("vector inf", lambda c: c.search([math.inf, *vec[1:]], k=3), InvalidInputError),
        Call("vector of str", lambda c: c.search(["a", "b"], k=3), InvalidInputError),
        Call("batch one string", lambda c: c.batch_search("cats", k=3), InvalidInputError),
        Call("batch with an int", lambda c: c.batch_search(["cats", 5], k=3), InvalidInputError),
        Call("batch with ''", lambda c: c.batch_search(["cats", ""], k=3), InvalidInputError),
        Call(
            "batch empty",
            lambda c: c.batch_search([], k=3),
            only=PYTHON_ONLY,
            why="Python returns [] for an empty batch; the HTTP schema needs one query",
        ),
        # ---- hostile: filters, knobs, exclude
        Call(
            "where bad operator",
            lambda c: c.search("x", k=3, where={"y": {"$bad": 1}}),
            FilterError,
        ),
        Call(
            "where $in not a list",
            lambda c: c.search("x", k=3, where={"y": {"$in": 3}}),
            FilterError,
        ),
        Call("where not a dict", lambda c: c.search("x", k=3, where="year"), InvalidInputError),
        Call("nprobe=0", lambda c: c.search("cats", k=3, nprobe=0), InvalidInputError),
        Call("ef_search=True", lambda c: c.search("cats", k=3, ef_search=True), InvalidInputError),
        Call("rerank=-1", lambda c: c.search("cats", k=3, rerank=-1), InvalidInputError),
        Call(
            "exclude one string",
            lambda c: c.search(vec, k=3, exclude=ids[3]),
            only=PYTHON_ONLY,
            why="HTTP's exclude is a list",
            nonempty=True,
        ),
        Call("exclude unknown ids", lambda c: c.search("cats", k=3, exclude=["zz"]), nonempty=True),
        # ---- hostile: get
        Call("get unknown", lambda c: c.get([ids[0], "no-such-id"]), DocumentNotFoundError),
        Call("get ''", lambda c: c.get([""]), InvalidInputError),
        Call("get int", lambda c: c.get([17]), InvalidInputError),
        Call("get id too long", lambda c: c.get(["x" * 513]), InvalidInputError),
        Call(
            "get one string",
            lambda c: c.get(ids[4]),
            only=PYTHON_ONLY,
            why="HTTP's get takes a list (one id: GET /documents/{id})",
            nonempty=True,
        ),
    ]


def write_calls(texts: list[str]) -> list[Call]:
    """Writes of documents w1..w3 (removed again at the end), failed ones in between."""
    meta = [{"topic": "test", "year": 2031}, {"topic": "test", "year": 2032}]
    return [
        Call("count before", lambda c: c.count()),
        Call("add w1 w2", lambda c: c.add([texts[0], texts[1]], ["w1", "w2"], meta), nonempty=True),
        Call("add w1 again", lambda c: c.add([texts[2]], ["w1"]), DuplicateIdError),
        Call("add w3 twice", lambda c: c.add([texts[2], texts[3]], ["w3", "w3"]), DuplicateIdError),
        Call("add ''", lambda c: c.add(["ok text", ""], ["w3", "w4"]), InvalidInputError),
        Call("add NUL", lambda c: c.add(["a\x00"], ["w3"]), InvalidInputError),
        Call("add id ''", lambda c: c.add(["text"], [""]), InvalidInputError),
        Call("add id too long", lambda c: c.add(["text"], ["i" * 513]), InvalidInputError),
        Call(
            "add metadata NaN", lambda c: c.add(["t"], ["w3"], [{"a": math.nan}]), InvalidInputError
        ),
        Call("add metadata list", lambda c: c.add(["t"], ["w3"], [[1, 2]]), InvalidInputError),
        Call(
            "add metadata int key",
            lambda c: c.add(["t"], ["w3"], [{1: "x"}]),
            InvalidInputError,
            only=PYTHON_ONLY,
            why="JSON object keys are always strings",
        ),
        Call("failed adds left nothing: get w3", lambda c: c.get(["w3"]), DocumentNotFoundError),
        Call("search finds w1", lambda c: c.search(texts[0], k=3), nonempty=True),
        Call(
            "filter finds w1 w2",
            lambda c: c.search("x", k=5, where={"topic": "test"}),
            nonempty=True,
        ),
        Call(
            "upsert w1 new text, w2 new metadata",
            lambda c: c.upsert([texts[4], texts[1]], ["w1", "w2"], [meta[0], {"topic": "t2"}]),
            nonempty=True,
        ),
        Call("get after upsert", lambda c: c.get(["w1", "w2"]), nonempty=True),
        Call("search finds new w1", lambda c: c.search(texts[4], k=3), nonempty=True),
        Call("upsert without ids", lambda c: c.upsert(["t"], None), InvalidInputError),
        Call("delete w1 + unknown", lambda c: c.delete(["w1", "nope"]), DocumentNotFoundError),
        Call("nothing deleted", lambda c: c.get(["w1"]), nonempty=True),
        Call("delete '' id", lambda c: c.delete([""]), InvalidInputError),
        Call("delete w1 w2", lambda c: c.delete(["w1", "w2"]), nonempty=True),
        Call("delete w1 missing_ok", lambda c: c.delete(["w1"], missing_ok=True)),
        Call("delete w1 again", lambda c: c.delete(["w1"]), DocumentNotFoundError),
        Call(
            "delete []",
            lambda c: c.delete([]),
            only=PYTHON_ONLY,
            why="the HTTP schema needs at least one id",
        ),
        Call("search after delete", lambda c: c.search(texts[4], k=3), nonempty=True),
        Call("count after", lambda c: c.count(), nonempty=True),
    ]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def impls(
    tmp_path_factory: pytest.TempPathFactory,
    ray_cluster: None,
    encoder: Any,
    demo_rows: list[dict[str, Any]],
    demo_vectors: np.ndarray,
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("congruence")
    rows = demo_rows[:N_DOCS]
    home = root / "http-home"
    home.mkdir()
    with embedsearch.open(root / "plain") as col:
        col.add(
            [r["text"] for r in rows],
            ids=[r["id"] for r in rows],
            metadata=[{"topic": r["topic"], "year": r["year"]} for r in rows],
            vectors=demo_vectors[:N_DOCS],
        )
        ShardedCollection.from_collection(col, root / "sharded", 2).close()
    for src, dst in (
        ("plain", "reopened"),
        ("plain", "http-home/flat"),
        ("sharded", "http-home/shard"),
    ):
        shutil.copytree(root / src, root / dst)
    out: dict[str, Any] = {
        "plain": PythonImpl(lambda: embedsearch.open(root / "plain", create=False), False),
        "reopened": PythonImpl(lambda: embedsearch.open(root / "reopened", create=False), True),
        "sharded": PythonImpl(
            lambda: ShardedCollection.open(root / "sharded", create=False), False
        ),
    }
    app = create_app(home, api_keys=[], warm=False)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=120) as client:
        out["http"] = HttpImpl(client, "flat")
        out["http-sharded"] = HttpImpl(client, "shard")
        yield out
        for impl in out.values():
            impl.close()


@pytest.fixture(scope="module")
def corpus(
    demo_rows: list[dict[str, Any]], demo_vectors: np.ndarray
) -> tuple[list[str], list[float]]:
    return [r["id"] for r in demo_rows[:N_DOCS]], demo_vectors[7].astype(float).tolist()


# ----------------------------------------------------------------------------- tests
def test_reads_agree_on_good_and_hostile_input(impls, corpus) -> None:
    ids, vec = corpus
    calls = read_calls(ids, vec)
    problems, runs = run_calls(impls, calls)
    assert not problems, "\n".join(problems)
    assert len(calls) >= 50 and runs >= 4 * len(calls)


def test_writes_agree_and_failed_writes_change_nothing(impls, demo_rows) -> None:
    texts = [r["text"] for r in demo_rows[N_DOCS : N_DOCS + 5]]
    calls = write_calls(texts)
    problems, runs = run_calls(impls, calls)
    assert not problems, "\n".join(problems)
    assert runs >= 4 * len(calls)
    counts = {n: impl.count() for n, impl in impls.items()}
    assert set(counts.values()) == {N_DOCS}, counts


def test_suite_size(corpus, demo_rows) -> None:
    """The suite's size as the closing note reports it: calls × implementations."""
    ids, vec = corpus
    calls = read_calls(ids, vec) + write_calls([r["text"] for r in demo_rows[:5]])
    implementations = 5
    full = sum(1 for c in calls if c.only is None)
    partial = len(calls) - full
    assert all(c.why for c in calls if c.only is not None), "a restricted call must say why"
    print(
        f"congruence: {len(calls)} calls ({full} through all {implementations} implementations, "
        f"{partial} Python-only) = {full * implementations + partial * 3} runs"
    )
    assert full >= 60
