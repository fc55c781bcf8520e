"""Crash consistency: a writer process is SIGKILLed at random moments, again and again.

The harness keeps one *zygote* process that has imported embedsearch and loaded the real
model once (single-threaded, so forking is safe). Each trial the zygote forks a writer that
opens the collection and runs a random loop of add / upsert / delete / compact / reindex /
close-and-reopen, appending ``BEGIN <op>`` before and ``ACK <seq>`` after every operation
to a log file (one ``write(2)`` per line, so a line is on disk before the next op starts).
The test SIGKILLs the writer after a random delay and then demands:

1. the collection opens (as a reader, then as a writer);
2. every acknowledged operation is there: ids, texts, metadata, vectors (compared with the
   session's own embeddings of the same texts) and the index spec;
3. the one operation in flight is all or nothing: the contents equal the state before it or
   the state after it, nothing in between;
4. the FAISS index agrees with the segments (``maintenance.verify`` finds no error; an
   approximate index covers every row; a search with every IVF cell probed equals exact
   search);
5. after the next writer has opened, no ``*.tmp`` or unreferenced files remain.

The collection carries over from trial to trial, so damage would accumulate.
``ES_CRASH_TRIALS`` (default 20) and ``ES_CRASH_MAX_DELAY`` (seconds, default 1.0) scale it;
``ES_RELIABILITY_REPORT`` names a JSON file for the counts. Reproduce::

    .venv/bin/pytest tests/test_crash.py -q
    ES_CRASH_TRIALS=300 .venv/bin/pytest tests/test_crash.py -q
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

TRIALS = int(os.environ.get("ES_CRASH_TRIALS", "20"))
MAX_DELAY = float(os.environ.get("ES_CRASH_MAX_DELAY", "1.0"))
SPECS = ["IVF16,Flat", "HNSW16", "IVF8,Flat", "Flat"]
MAX_LIVE = 300
TARGETS = ["compact", "reindex", "delete", "upsert", "add"]


# ============================================================================ writer side
def _log(fd: int, kind: str, payload: dict[str, Any]) -> None:
    os.write(fd, (kind + " " + json.dumps(payload, separators=(",", ":")) + "\n").encode())


def plan_op(rng: random.Random, live: dict[str, tuple[int, Any]], seed: int, seq: int) -> dict:
    """Choose the next operation from the writer's current view of the collection."""
    n_texts = 350
    weights = {"add": 4, "upsert": 3, "delete": 3, "compact": 1.5, "reindex": 1, "reopen": 0.5}
    if len(live) > MAX_LIVE:
        weights["add"] = 0.5
    if not live:
        weights.update(upsert=1, delete=0)
    op = rng.choices(list(weights), weights=list(weights.values()))[0]
    if op == "add":
        n = rng.randint(1, 12)
        ids = [f"s{seed}-{seq}-{j}" for j in range(n)]
        texts = [rng.randrange(n_texts) for _ in ids]
        metas = [{"seed": seed, "seq": seq, "j": j} if j % 3 else None for j in range(n)]
        return {"op": op, "ids": ids, "texts": texts, "metas": metas}
    if op == "upsert":
        old = rng.sample(sorted(live), min(len(live), rng.randint(0, 10)))
        new = [f"u{seed}-{seq}-{j}" for j in range(rng.randint(0 if old else 1, 5))]
        ids = old + new
        texts = [
            live[i][0] if i in live and rng.random() < 0.5 else rng.randrange(n_texts) for i in ids
        ]
        metas = [{"upserted": seq, "k": rng.randint(0, 9)} for _ in ids]
        return {"op": op, "ids": ids, "texts": texts, "metas": metas}
    if op == "delete":
        return {"op": op, "ids": rng.sample(sorted(live), min(len(live), rng.randint(1, 8)))}
    if op == "reindex":
        return {"op": op, "spec": rng.choice(SPECS)}
    return {"op": op}


def apply_model(model: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    """The reference: ``{"docs": {id: (text_idx, meta)}, "spec": str}`` after ``op``."""
    docs = dict(model["docs"])
    spec = model["spec"]
    if op["op"] in ("add", "upsert"):
        for i, t, m in zip(op["ids"], op["texts"], op["metas"]):
            docs[i] = (t, m)
    elif op["op"] == "delete":
        for i in op["ids"]:
            docs.pop(i, None)
    elif op["op"] == "reindex":
        spec = op["spec"]
    return {"docs": docs, "spec": spec}


def writer_loop(path: str, log_path: str, seed: int, texts: list[str]) -> None:
    """Runs in the forked child until killed (or after 10,000 ops)."""
    import embedsearch

    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    rng = random.Random(seed)
    col = embedsearch.open(path)
    live = {d.id: (texts.index(d.text), d.metadata or None) for d in col.get(col.ids())}
    _log(fd, "READY", {"seed": seed, "live": len(live)})
    for seq in range(10_000):
        op = plan_op(rng, live, seed, seq)
        _log(fd, "BEGIN", {"seq": seq, **op})
        kind = op["op"]
        if kind == "add":
            col.add([texts[t] for t in op["texts"]], ids=op["ids"], metadata=op["metas"])
        elif kind == "upsert":
            col.upsert([texts[t] for t in op["texts"]], ids=op["ids"], metadata=op["metas"])
        elif kind == "delete":
            col.delete(op["ids"])
        elif kind == "compact":
            col.compact()
        elif kind == "reindex":
            col.reindex(op["spec"])
        elif kind == "reopen":
            col.close()
            col = embedsearch.open(path)
        _log(fd, "ACK", {"seq": seq})
        live = apply_model({"docs": live, "spec": ""}, op)["docs"]
    col.close()


def zygote() -> None:
    """Load the model once, then fork one writer per request read from stdin."""
    import torch

    torch.set_num_threads(1)  # no thread pools before fork: the children stay healthy
    import embedsearch
    from embedsearch.index import faiss

    faiss()  # import FAISS before forking, not in every child

    texts = _corpus()
    embedsearch.get_encoder().encode(texts[:4])  # warm the model before forking
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:  # child
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)  # stdout is the zygote's protocol channel
            code = 0
            try:
                writer_loop(req["path"], req["log"], req["seed"], texts)
            except BaseException as exc:  # noqa: BLE001 - report, never return to the loop
                with open(req["log"] + ".err", "w") as fh:
                    fh.write(f"{type(exc).__name__}: {exc}")
                code = 3
            os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": status}), flush=True)


def _corpus() -> list[str]:
    from importlib import resources

    raw = resources.files("embedsearch").joinpath("data/demo_corpus.jsonl").read_text("utf-8")
    return [json.loads(line)["text"] for line in raw.splitlines() if line.strip()]


# ============================================================================ parent side
def parse_log(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(acknowledged ops in order, the op in flight or None). A torn last line is ignored."""
    raw = path.read_bytes().decode() if path.exists() else ""
    lines = raw.split("\n")[:-1]  # a line without its newline was never completely written
    begun: dict[int, dict[str, Any]] = {}
    acked: list[dict[str, Any]] = []
    for line in lines:
        kind, _, payload = line.partition(" ")
        obj = json.loads(payload)
        if kind == "READY":
            continue
        if kind == "BEGIN":
            begun[obj["seq"]] = obj
        elif kind == "ACK":
            acked.append(begun.pop(obj["seq"]))
    assert len(begun) <= 1, f"more than one op in flight: {sorted(begun)}"
    return acked, next(iter(begun.values()), None)


def snapshot(col: Any, texts: list[str]) -> dict[str, tuple[int, Any]]:
    index_of = {t: i for i, t in enumerate(texts)}
    return {d.id: (index_of[d.text], d.metadata or None) for d in col.get(col.ids())}


def check_collection(path: Path, model: dict[str, Any], vecs: np.ndarray) -> None:
    """Index/segment agreement and stored vectors, on a freshly opened reader."""
    import embedsearch
    from embedsearch.maintenance import verify

    report = verify(path)
    assert report.ok, [p.to_dict() for p in report.errors]
    col = embedsearch.open(path)
    try:
        info = col.info()
        assert info["index"]["rows"] == info["rows"], "index does not cover every row"
        ids = col.ids()
        if ids:
            stored = col.vectors(ids)
            want = vecs[[model["docs"][i][0] for i in ids]]
            assert np.all(np.sum(stored * want, axis=1) > 1 - 1e-5), "a stored vector changed"
            for q in vecs[:3]:
                exact = col.search(q, k=10, exact=True)
                probe_all = col.search(q, k=10, nprobe=16, ef_search=512)
                assert np.allclose(
                    [h.score for h in exact], [h.score for h in probe_all], atol=1e-5
                ) or info["index"]["resolved"].startswith("HNSW")
    finally:
        col.close()


def leftovers(path: Path) -> list[str]:
    from embedsearch import store, versions

    manifest = store.read_manifest(path)
    keep = versions.kept_files(path, manifest)  # the current version and every kept one
    out = [p.relative_to(path).as_posix() for p in path.rglob("*.tmp")]
    out += [
        p.relative_to(path).as_posix()
        for p in list((path / "segments").iterdir()) + list(path.glob("index-*"))
        if p.relative_to(path).as_posix() not in keep
    ]
    return out


class Zygote:
    """The forking parent of all writers (started once per test)."""

    def __init__(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        env.setdefault("HF_HUB_OFFLINE", "1")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert json.loads(self._line())["ready"]

    def _line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"zygote died (exit {self.proc.wait()})")
        return line

    def run(self, path: Path, log: Path, seed: int, delay: float, target: str | None = None) -> int:
        """Start a writer and SIGKILL it; return its wait status.

        Without ``target`` the kill comes ``delay`` s after the writer opened the collection;
        with one, ``delay`` s after the writer logged the start of a ``target`` operation
        (or 10 s after opening if it never gets there), so that rarer, shorter operations
        (compact, reindex, delete) are hit too.
        """
        self.proc.stdin.write(json.dumps({"path": str(path), "log": str(log), "seed": seed}) + "\n")
        self.proc.stdin.flush()
        pid = json.loads(self._line())["pid"]
        err = Path(str(log) + ".err")
        want = b"READY" if target is None else f'"op":"{target}"'.encode()
        deadline = time.monotonic() + 120
        ready_at = None
        while time.monotonic() < deadline and not err.exists():
            raw = log.read_bytes() if log.exists() else b""
            if ready_at is None and raw.startswith(b"READY"):
                ready_at = time.monotonic()
                deadline = ready_at + (0 if target is None else 10)
            begun = raw.rfind(b"\nBEGIN ")
            if want == b"READY" and ready_at is not None:
                break
            if begun >= 0 and want in raw[begun:] and b"\n" in raw[begun + 1 :]:
                break
            time.sleep(0.002)
        time.sleep(delay)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return json.loads(self._line())["status"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def test_sigkill_at_random_points_loses_nothing(tmp_path: Path, demo_vectors: Any) -> None:
    import embedsearch

    texts = _corpus()
    vecs = np.asarray(demo_vectors, dtype=np.float32)
    path = tmp_path / "crashcol"
    col = embedsearch.open(path, index="IVF16,Flat")
    col.close()
    model: dict[str, Any] = {"docs": {}, "spec": "IVF16,Flat"}
    rng = random.Random(int(os.environ.get("ES_CRASH_SEED", "20240607")))
    stats: Counter[str] = Counter()
    zyg = Zygote()
    try:
        for trial in range(TRIALS):
            log = tmp_path / f"trial-{trial}.log"
            if trial % 2:  # odd trials: kill shortly after a chosen kind of operation began
                target = TARGETS[(trial // 2) % len(TARGETS)]
                status = zyg.run(path, log, trial, rng.uniform(0, 0.15), target=target)
            else:
                status = zyg.run(path, log, trial, rng.uniform(0.05, MAX_DELAY))
            err = Path(str(log) + ".err")
            assert not err.exists(), f"trial {trial}: writer failed: {err.read_text()}"
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
            acked, in_flight = parse_log(log)
            for op in acked:
                model = apply_model(model, op)
            stats["acked_ops"] += len(acked)
            stats.update(f"acked_{op['op']}" for op in acked)
            stats[f"killed_during_{in_flight['op'] if in_flight else 'open_or_between'}"] += 1

            col = embedsearch.open(path)  # 1. opens
            try:
                actual = snapshot(col, texts)
                spec = store_spec(path)
            finally:
                col.close()
            after = apply_model(model, in_flight) if in_flight else model
            before_ok = actual == model["docs"] and spec == model["spec"]
            after_ok = actual == after["docs"] and spec == after["spec"]
            assert before_ok or after_ok, (  # 2 + 3
                f"trial {trial}: state matches neither before nor after op {in_flight}: "
                f"missing={sorted(set(model['docs']) - set(actual))[:5]} "
                f"extra={sorted(set(actual) - set(after['docs']))[:5]}"
            )
            if in_flight and not before_ok:
                model = after
                stats["in_flight_committed"] += 1
            check_collection(path, model, vecs)  # 4

            w = embedsearch.open(path)  # 5. the next writer cleans up
            w.delete([], missing_ok=True)
            assert leftovers(path) == []
            w.close()
            stats["trials"] += 1
    finally:
        zyg.close()
    stats["final_live"] = len(model["docs"])
    _report(dict(stats))
    assert stats["trials"] == TRIALS
    assert stats["acked_ops"] > 0


def store_spec(path: Path) -> str:
    from embedsearch import store

    return store.read_manifest(path).index.spec


def _report(stats: dict[str, int]) -> None:
    print("crash harness:", json.dumps(stats, sort_keys=True))
    out = os.environ.get("ES_RELIABILITY_REPORT")
    if out:
        data = json.loads(Path(out).read_text()) if Path(out).exists() else {}
        data["crash"] = stats
        Path(out).write_text(json.dumps(data, indent=1, sort_keys=True))


# ============================================================================ targeted crashes
def test_crash_while_creating_a_collection_can_be_reopened(tmp_path: Path, encoder: Any) -> None:
    import embedsearch

    path = tmp_path / "half"
    # Exactly what open() has written when killed before write_manifest: the layout and LOCK.
    (path / "segments").mkdir(parents=True)
    (path / "LOCK").write_text("pid=999999 host=x since=2024-01-01T00:00:00+00:00")
    col = embedsearch.open(path)
    col.add(["it works now"], ids=["a"])
    assert col.ids() == ["a"]
    col.close()


def test_kill_mid_commit_leaves_old_or_new_state(tmp_path: Path, encoder: Any) -> None:
    """Deterministic: a writer killed right after its segment is written, before the manifest
    rename, leaves the old state and an orphan that the next writer removes."""
    import embedsearch

    path = tmp_path / "c"
    col = embedsearch.open(path)
    col.add(["first text here"], ids=["a"])
    col.close()
    code = f"""
import os, embedsearch
from embedsearch import store
def die(*a, **k):
    os.kill(os.getpid(), 9)
store.write_manifest = die
col = embedsearch.open({str(path)!r})
col.upsert(["first text here"], ids=["a"], metadata=[{{"m": 1}}])  # same text: no encoder
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-500:]
    segs = path / "segments"
    assert len(list(segs.glob("seg-*.arrow"))) == len(list(segs.glob("seg-*.f32"))) == 2
    assert len(list(segs.glob("seg-*.ids"))) == 2
    assert not list(segs.glob("seg-*.crc"))  # one-row segments: their block is their row
    assert len(list(segs.glob("del-*.parquet"))) == 1  # old + orphan segment, and a delete
    col = embedsearch.open(path)
    assert col.ids() == ["a"] and col.get("a")[0].metadata == {}
    col.delete([], missing_ok=True)  # the next writer removes the orphans
    assert leftovers(path) == []
    col.close()


if __name__ == "__main__" and sys.argv[1:] == ["zygote"]:
    zygote()
