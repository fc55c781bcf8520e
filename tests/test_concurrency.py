"""Concurrency: reader threads against one writer, a second writer process, per-call params.

* Reader threads search (exact, all-cells IVF and default IVF) and count while one writer
  thread adds, upserts, deletes, compacts and re-indexes. The writer publishes a snapshot
  of the reference contents after each operation returns; every search must equal exact
  search over one of the snapshots that could have been visible during the call (the
  one published before it started up to the one being committed when it ended).
* A second writer *process* gets :class:`LockedError` naming this process, can still read,
  and can write once the lock is released.
* The same searches with different per-call knobs (``nprobe``, ``ef_search``, ``rerank``,
  ``exact``, filters) give identical answers in parallel and alone.
* Deterministic reproductions of races found by reading the code (all fixed in the core; kept as regression tests).

``ES_CONCURRENCY_SECONDS`` (default 4) sets the length of the mixed run. Reproduce::

    .venv/bin/pytest tests/test_concurrency.py -q
    ES_CONCURRENCY_SECONDS=120 .venv/bin/pytest tests/test_concurrency.py -q -k readers
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import embedsearch
from embedsearch import LockedError, store

SECONDS = float(os.environ.get("ES_CONCURRENCY_SECONDS", "4"))
READERS = 4
PRELOAD = 120
TOL = 1e-5


def _build(path: Path, spec: str, demo_rows: list, n: int = PRELOAD) -> Any:
    col = embedsearch.open(path, index=spec)
    rows = demo_rows[:n]
    col.add(
        [r["text"] for r in rows],
        ids=[r["id"] for r in rows],
        metadata=[{"g": i % 4} for i in range(n)],
    )
    return col


@pytest.fixture(scope="module")
def full_template(tmp_path_factory: pytest.TempPathFactory, encoder: Any, demo_rows: list) -> Path:
    """The whole demo corpus embedded once (Flat); tests copy it and re-index (no re-encoding)."""
    path = tmp_path_factory.mktemp("conc") / "full"
    _build(path, "Flat", demo_rows, n=len(demo_rows)).close()
    return path


def _copy(template: Path, dst: Path, spec: str, keep: int | None = None) -> Any:
    shutil.copytree(template, dst)
    col = embedsearch.open(dst, index=spec)
    if keep is not None:
        col.delete(col.ids()[keep:])
        col.compact()
    return col


def _exact(state: dict[str, tuple[int, int]], vecs: np.ndarray, q: np.ndarray, k: int, g: Any):
    scores = sorted(
        ((float(vecs[t] @ q), i) for i, (t, gg) in state.items() if g is None or gg == g),
        reverse=True,
    )
    return scores[:k]


def _matches(hits: list[Any], want: list[tuple[float, str]], state: dict) -> bool:
    if len(hits) != len(want):
        return False
    for h, (score, _) in zip(hits, want):
        if h.id not in state or abs(h.score - score) > TOL:
            return False
    return True


def test_readers_and_one_writer_see_only_committed_states(
    tmp_path: Path, demo_rows: list, demo_vectors: Any, full_template: Path
) -> None:
    vecs = np.asarray(demo_vectors, dtype=np.float32)
    index_of = {r["id"]: i for i, r in enumerate(demo_rows)}
    col = _copy(full_template, tmp_path / "c", "IVF16,Flat", keep=PRELOAD)
    states: list[dict[str, tuple[int, int]]] = [
        {r["id"]: (i, i % 4) for i, r in enumerate(demo_rows[:PRELOAD])}
    ]
    specs = ["IVF16,Flat"]  # index spec of each snapshot
    version = 0
    stop = threading.Event()
    errors: list[BaseException] = []
    records: list[tuple[int, int, int, int, Any, str, list]] = []
    counts = {"writes": 0, "searches": 0}

    def writer() -> None:
        nonlocal version
        rng = random.Random(7)
        nxt = PRELOAD
        try:
            while not stop.is_set():
                state = dict(states[-1])
                op = rng.choice(["add", "add", "upsert", "delete", "delete", "compact", "reindex"])
                if op == "add" and nxt < len(demo_rows):
                    rows = demo_rows[nxt : nxt + rng.randint(1, 4)]
                    nxt += len(rows)
                    col.add(
                        [r["text"] for r in rows],
                        ids=[r["id"] for r in rows],
                        metadata=[{"g": index_of[r["id"]] % 4} for r in rows],
                    )
                    state.update(
                        {r["id"]: (index_of[r["id"]], index_of[r["id"]] % 4) for r in rows}
                    )
                elif op == "upsert" and state:  # same text, new metadata: no encoding
                    ids = rng.sample(sorted(state), min(len(state), 5))
                    gs = [rng.randint(0, 3) for _ in ids]
                    col.upsert(
                        [demo_rows[state[i][0]]["text"] for i in ids],
                        ids=ids,
                        metadata=[{"g": g} for g in gs],
                    )
                    state.update({i: (state[i][0], g) for i, g in zip(ids, gs)})
                elif op == "delete" and len(state) > 20:
                    ids = rng.sample(sorted(state), 3)
                    col.delete(ids)
                    for i in ids:
                        del state[i]
                elif op == "compact":
                    col.compact()
                elif op == "reindex":
                    spec = rng.choice(["IVF16,Flat", "HNSW16", "Flat"])
                    col.reindex(spec)
                    specs.append(spec)
                if len(specs) == len(states):
                    specs.append(specs[-1])
                states.append(state)
                version = len(states) - 1
                counts["writes"] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                t = rng.randrange(len(vecs))
                k = rng.randint(1, 12)
                g = rng.choice([None, None, 0, 1, 2, 3])
                mode = rng.choice(["exact", "all-cells", "default", "count"])
                v0 = version
                if mode == "count":
                    got: Any = len(col)
                else:
                    kw = {"exact": True} if mode == "exact" else {}
                    if mode == "all-cells":
                        kw = {"nprobe": 16, "ef_search": 512}
                    where = None if g is None else {"g": g}
                    got = col.search(vecs[t], k=k, where=where, **kw)
                v1 = version
                records.append((v0, v1, t, k, g, mode, got))
                counts["searches"] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(i,)) for i in range(READERS)
    ]
    for th in threads:
        th.start()
    time.sleep(SECONDS)
    stop.set()
    for th in threads:
        th.join(timeout=120)
    col.close()
    assert not errors, errors
    assert counts["writes"] >= 3 and counts["searches"] >= 20, counts

    bad = []
    approx_ok = 0
    for v0, v1, t, k, g, mode, got in records:
        candidates = states[v0 : min(v1 + 2, len(states))]
        hnsw = any(sp.startswith("HNSW") for sp in specs[v0 : min(v1 + 2, len(specs))])
        if mode == "count":
            ok = any(got == len(s) for s in candidates)
        elif mode == "default" or (mode == "all-cells" and hnsw):
            # approximate: every hit from one snapshot, correctly scored, k of them
            ok = any(
                len(got) == min(k, sum(1 for _, gg in s.values() if g is None or gg == g))
                and all(
                    h.id in s
                    and (g is None or s[h.id][1] == g)
                    and abs(h.score - float(vecs[s[h.id][0]] @ vecs[t])) < TOL
                    for h in got
                )
                for s in candidates
            )
            approx_ok += ok
        else:
            ok = any(_matches(got, _exact(s, vecs, vecs[t], k, g), s) for s in candidates)
        if not ok:
            bad.append(
                (v0, v1, t, k, g, mode, [(h.id, h.score) for h in got] if mode != "count" else got)
            )
    stats = {"seconds": SECONDS, "readers": READERS, **counts, "violations": len(bad)}
    _report({**stats, "approximate_checked": approx_ok})
    assert not bad, bad[:3]


def _report(stats: dict[str, Any]) -> None:
    print("concurrency:", json.dumps(stats))
    out = os.environ.get("ES_RELIABILITY_REPORT")
    if out:
        data = json.loads(Path(out).read_text()) if Path(out).exists() else {}
        data["concurrency"] = stats
        Path(out).write_text(json.dumps(data, indent=1, sort_keys=True))


# ----------------------------------------------------------------------------- second writer
_SECOND_WRITER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import embedsearch
    col = embedsearch.open(sys.argv[1])
    def attempt():
        try:
            col.delete(["nope"], missing_ok=True)
            return "ok"
        except embedsearch.LockedError as exc:
            return "LockedError: " + str(exc)
        except BaseException as exc:
            return "OTHER " + type(exc).__name__ + ": " + str(exc)
    first = attempt()
    hits = col.search(np.ones(col.dim), k=3)
    print(json.dumps({"first": first, "read": len(hits), "count": len(col)}), flush=True)
    sys.stdin.readline()
    print(json.dumps({"second": attempt()}), flush=True)
    """
)


def test_second_writer_process_gets_locked_error(
    tmp_path: Path, encoder: Any, demo_rows: list
) -> None:
    col = _build(tmp_path / "c", "auto", demo_rows, n=20)  # holds the write lock
    with pytest.raises(LockedError, match=f"pid={os.getpid()}"):
        embedsearch.open(col.path).delete([], missing_ok=True)  # a second handle, same process
    proc = subprocess.Popen(
        [sys.executable, "-c", _SECOND_WRITER, str(col.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = json.loads(proc.stdout.readline())
        assert first["first"].startswith("LockedError"), first
        assert f"pid={os.getpid()}" in first["first"] and "retry" in first["first"]
        assert (first["read"], first["count"]) == (3, 20)  # reading needs no lock
        col.close()  # release: now the other process may write
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline()) == {"second": "ok"}
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read()[-1000:]


# ----------------------------------------------------------------------------- per-call params
@pytest.mark.parametrize("spec", ["IVF16,Flat", "HNSW16"])
def test_parallel_searches_with_different_params_match_sequential(
    tmp_path: Path, demo_rows: list, demo_vectors: Any, spec: str, full_template: Path
) -> None:
    col = _copy(full_template, tmp_path / "c", spec)
    col.delete([r["id"] for r in demo_rows[::7]])
    vecs = np.asarray(demo_vectors, dtype=np.float32)
    knobs: list[dict[str, Any]] = [
        {},
        {"exact": True},
        {"rerank": 12},
        {"rerank": 200},
        {"where": {"g": 2}},
        {"where": {"g": {"$in": [0, 1]}}, "rerank": 20},
    ]
    if spec.startswith("IVF"):
        knobs += [{"nprobe": n} for n in (1, 2, 4, 16)]
    else:
        knobs += [{"ef_search": e} for e in (16, 32, 128, 512)]
    queries = list(range(0, len(vecs), 29))
    expected = {
        (i, q): [(h.id, h.score) for h in col.search(vecs[q], k=10, **kw)]
        for i, kw in enumerate(knobs)
        for q in queries
    }
    jobs = list(expected) * 3
    random.Random(3).shuffle(jobs)
    mismatches: list[Any] = []
    errors: list[BaseException] = []

    def worker(part: list) -> None:
        try:
            for i, q in part:
                got = [(h.id, h.score) for h in col.search(vecs[q], k=10, **knobs[i])]
                if got != expected[(i, q)]:
                    mismatches.append((knobs[i], q, got, expected[(i, q)]))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(jobs[j::4],)) for j in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    col.close()
    assert not errors and not mismatches, (errors, mismatches[:2])
    # and the knobs really differ: a 1-cell probe is not always the all-cells answer
    if spec.startswith("IVF"):
        assert any(expected[(6, q)] != expected[(9, q)] for q in queries)


# ----------------------------------------------------------------------------- races (fixed in 6ad695a)
def test_reader_refresh_racing_a_compaction_sees_no_corruption(
    tmp_path: Path, encoder: Any, demo_rows: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c"
    _build(path, "auto", demo_rows, n=10).close()
    reader = embedsearch.open(path)
    writer = embedsearch.open(path)
    writer.delete([demo_rows[0]["id"]])
    real = store.read_manifest
    fired = []

    def read_then_compact(root: Path) -> dict:
        manifest = real(root)
        if not fired and threading.current_thread() is threading.main_thread():
            fired.append(True)
            writer.compact()  # commits N+1 and deletes N's segments before N is loaded
        return manifest

    monkeypatch.setattr(store, "read_manifest", read_then_compact)
    assert len(reader) == 9
    writer.close()


def test_refresh_racing_a_write_on_the_same_handle_loses_nothing(
    tmp_path: Path, encoder: Any, demo_rows: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c"
    _build(path, "auto", demo_rows, n=2).close()
    handle = embedsearch.open(path)
    other = embedsearch.open(path)
    other.add([demo_rows[2]["text"]], ids=["from-other"])  # makes `handle` stale
    other.close()
    entered, release = threading.Event(), threading.Event()
    from embedsearch import collection as collection_module

    real = collection_module.open_segment  # what a reader calls per segment while loading

    def slow_read(*args: Any, **kw: Any) -> Any:
        if threading.current_thread().name == "slow-reader":
            entered.set()
            release.wait(30)
        return real(*args, **kw)

    monkeypatch.setattr(collection_module, "open_segment", slow_read)
    th = threading.Thread(
        target=lambda: handle.search(np.ones(handle.dim), k=1), name="slow-reader"
    )
    th.start()
    assert entered.wait(30)
    handle.upsert([demo_rows[0]["text"]], ids=["mine"])  # committed while the reader loads
    release.set()
    th.join(30)
    handle.upsert([demo_rows[1]["text"]], ids=["mine-2"])
    handle.close()
    assert {"mine", "mine-2", "from-other"} <= set(embedsearch.open(path).ids())


def test_stale_handle_after_collection_recreated(tmp_path: Path, encoder: Any) -> None:
    path = tmp_path / "c"
    col = embedsearch.open(path)
    col.add(["the old collection's only document"], ids=["old"])
    col.close()
    stale = embedsearch.open(path)
    shutil.rmtree(path)
    col = embedsearch.open(path)
    col.add(["the new collection's only document"], ids=["new"])
    col.close()
    assert stale.ids() == ["new"]
    stale.add(["added through the stale handle"], ids=["x"])
    stale.close()
    assert sorted(embedsearch.open(path).ids()) == ["new", "x"]


def _hook_after_read_manifest(monkeypatch: pytest.MonkeyPatch, action: Any) -> None:
    """Run ``action`` once, right after the main thread's next manifest read."""
    real = store.read_manifest
    fired: list[bool] = []

    def read_then_act(root: Path) -> dict:
        manifest = real(root)
        if not fired and threading.current_thread() is threading.main_thread():
            fired.append(True)
            action()
        return manifest

    monkeypatch.setattr(store, "read_manifest", read_then_act)


def test_handle_opened_while_a_commit_lands_does_not_stay_stale(
    tmp_path: Path, demo_vectors: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c"
    writer = embedsearch.open(path)
    writer.add(["a", "b", "c"], ids=["a", "b", "c"], vectors=demo_vectors[:3])
    _hook_after_read_manifest(monkeypatch, lambda: writer.delete(["b"]))
    reader = embedsearch.open(path)
    monkeypatch.undo()
    writer.close()
    assert sorted(reader.ids()) == ["a", "c"]


def test_open_racing_a_compaction_sees_no_corruption(
    tmp_path: Path, demo_vectors: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c"
    writer = embedsearch.open(path)
    writer.add(["a", "b", "c"], ids=["a", "b", "c"], vectors=demo_vectors[:3])
    writer.delete(["a"])
    _hook_after_read_manifest(monkeypatch, writer.compact)
    reader = embedsearch.open(path)
    monkeypatch.undo()
    writer.close()
    assert sorted(reader.ids()) == ["b", "c"]


def test_a_write_looks_its_ids_up_beside_the_model(home, encoder, monkeypatch):
    """While the model embeds a chunk, its ids are looked up on a thread of their own (the
    first look-up of a process at 5M rows reads every segment's id index); an error there
    is the add's own error, and nothing is written."""
    from embedsearch.errors import CorruptionError
    from embedsearch.table import Table

    col = embedsearch.open("beside")
    col.add(["a first document about rivers"], ids=["a"])
    seen: dict[str, str] = {}
    real_lookup, real_encode = Table.lookup, type(encoder).encode

    def lookup(self, ids):  # a probe: records the thread, then the real look-up
        seen.setdefault("lookup", threading.current_thread().name)
        return real_lookup(self, ids)

    def encode(self, texts, *args, **kwargs):
        seen.setdefault("encode", threading.current_thread().name)
        return real_encode(self, texts, *args, **kwargs)

    monkeypatch.setattr(Table, "lookup", lookup)
    monkeypatch.setattr(type(encoder), "encode", encode)
    col.add(["a second document about mountains"], ids=["b"])
    assert seen["encode"] == threading.current_thread().name
    assert seen["lookup"] != seen["encode"] and seen["lookup"].startswith("embedsearch-")
    with pytest.raises(embedsearch.DuplicateIdError, match="'a'"):
        col.add(["a duplicate"], ids=["a"])

    def damaged(self, ids):
        raise CorruptionError("the id index is damaged (a test's)")

    monkeypatch.setattr(Table, "lookup", damaged)
    with pytest.raises(CorruptionError, match="a test's"):
        col.add(["a third document"], ids=["c"])
    monkeypatch.setattr(Table, "lookup", real_lookup)
    assert sorted(col.ids()) == ["a", "b"] and len(col) == 2
    col.close()


def test_ahead_runs_a_few_calls_ahead_and_hands_each_result_once() -> None:
    """concurrency.Ahead (pure plumbing, real threads): every planned item's result comes
    back by its key, computed on the pool at most ``workers`` ahead of the taker; an item
    not planned is computed in the taker's thread; an error comes out of ``take``; leaving
    the block leaves no thread running."""
    from embedsearch.concurrency import Ahead

    lock = threading.Lock()
    running, most, threads = 0, 0, set()

    def work(x: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            threads.add(threading.current_thread().name)
        time.sleep(0.01)
        with lock:
            running -= 1
        if x == 13:
            raise ValueError("thirteen")
        return x * x

    with Ahead(work, list(range(12)), lambda x: x, 3) as ahead:
        time.sleep(0.1)
        assert len(ahead._pending) == 3  # no more than 3 ahead of the taker
        assert [ahead.take(x) for x in range(12)] == [x * x for x in range(12)]
        assert ahead.take(5) == 25  # taken twice: computed again, here
        assert ahead.take(99) == 99 * 99  # not planned
    assert most <= 3 and any(n.startswith("embedsearch-ahead") for n in threads)
    with Ahead(work, [1, 13, 2], lambda x: x, 2) as ahead:
        assert ahead.take(1) == 1
        with pytest.raises(ValueError, match="thirteen"):
            ahead.take(13)
    assert not [t for t in threading.enumerate() if t.name.startswith("embedsearch-ahead")]
    with Ahead(work, [1, 2], lambda x: x, 1) as ahead:  # one worker: nothing ahead
        assert ahead._pool is None and ahead.take(2) == 4
