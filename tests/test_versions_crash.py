"""Crash consistency of the history: SIGKILL during tag, untag, restore, snapshot, cleanup.

A writer subprocess (precomputed vectors: no model) runs a random loop of add / delete /
tag / untag / restore / snapshot / compact / retention changes (each retention change and
compaction runs a cleanup), logging ``BEGIN`` before and ``ACK {version}`` after each
operation. The test SIGKILLs it (half the trials right after a chosen kind of operation
began) and then demands, against its own model of every acknowledged version:

1. the collection opens, and its newest version is the last acknowledged one or the one
   the operation in flight committed (all or nothing);
2. every version that must still be kept (tagged, or any while retention is 7 days) is
   listed by ``versions()``, opens, and holds exactly the ids it held when acknowledged;
3. every acknowledged snapshot restores to exactly its version's ids; a killed snapshot
   leaves no archive under its final name;
4. ``verify`` finds no error, and after the next writer's cleanup no file outside the kept
   versions remains.

``ES_VERSIONS_CRASH_TRIALS`` (default 10) scales it.
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
from pathlib import Path
from typing import Any

TRIALS = int(os.environ.get("ES_VERSIONS_CRASH_TRIALS", "10"))
TARGETS = ["tag", "restore", "snapshot", "retention", "compact", "untag"]

WRITER = r"""
import json, os, random, sys
import numpy as np
import embedsearch
path, log, seed, snaps = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
def emit(kind, obj):
    os.write(fd, (kind + " " + json.dumps(obj, separators=(",", ":")) + "\n").encode())
rng = random.Random(seed)
col = embedsearch.open(path)
emit("READY", {"version": col.version})
for seq in range(100000):
    live = col.ids()
    tags = col.tags()
    ops = {"add": 4, "delete": 2 if live else 0, "tag": 2, "untag": 1 if tags else 0,
           "restore": 1.5 if col.version > 1 else 0, "snapshot": 1, "compact": 1,
           "retention": 1}
    op = rng.choices(list(ops), weights=list(ops.values()))[0]
    kept = [v.version for v in col.versions()] if op in ("tag", "restore") else []
    if op == "restore" and len(kept) < 2:
        op = "compact"
    arg = {}
    if op == "add":
        n = rng.randint(1, 20)
        arg["ids"] = [f"s{seed}-{seq}-{j}" for j in range(n)]
    elif op == "delete":
        arg["ids"] = rng.sample(live, min(len(live), rng.randint(1, 8)))
    elif op == "tag":
        arg["tag"] = f"t{seed}-{seq}"
        arg["version"] = rng.choice(kept)
    elif op == "untag":
        arg["tag"] = rng.choice(sorted(tags))
    elif op == "restore":
        arg["version"] = rng.choice(kept[:-1])
    elif op == "snapshot":
        arg["file"] = os.path.join(snaps, f"snap-{seed}-{seq}.tar")
    elif op == "retention":
        arg["days"] = rng.choice([0, 7])
    emit("BEGIN", {"seq": seq, "op": op, **arg})
    out = None
    if op == "add":
        vec = np.random.default_rng(seq).normal(size=(len(arg["ids"]), 384)).astype("float32")
        col.add(arg["ids"], ids=arg["ids"], vectors=vec)
    elif op == "delete":
        col.delete(arg["ids"])
    elif op == "tag":
        col.tag(arg["tag"], arg["version"])
    elif op == "untag":
        col.untag(arg["tag"])
    elif op == "restore":
        col.restore(arg["version"])
    elif op == "snapshot":
        out = col.snapshot(arg["file"]).version
    elif op == "compact":
        col.compact()
    elif op == "retention":
        col.set_retention(arg["days"])
    emit("ACK", {"seq": seq, "version": col.version, "snapshot": out})
"""


def _parse(log: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None, int]:
    lines = log.read_text().split("\n")[:-1] if log.exists() else []
    begun: dict[int, dict[str, Any]] = {}
    acked: list[dict[str, Any]] = []
    start = -1
    for line in lines:
        kind, _, payload = line.partition(" ")
        obj = json.loads(payload)
        if kind == "READY":
            start = obj["version"]
        elif kind == "BEGIN":
            begun[obj["seq"]] = obj
        else:
            acked.append({**begun.pop(obj["seq"]), **obj})
    return acked, next(iter(begun.values()), None), start


class Model:
    """The parent's view: ids of every acknowledged version, tags, retention, snapshots."""

    def __init__(self) -> None:
        self.ids: dict[int, frozenset[str]] = {}
        self.current = 1
        self.tags: dict[str, int] = {}
        self.days = 7
        self.snapshots: dict[str, int] = {}
        self.alive: set[int] = {1}  # versions retention has not expired

    def apply(self, op: dict[str, Any]) -> None:
        cur = self.ids.get(self.current, frozenset())
        kind, v = op["op"], op["version"]
        if kind == "add":
            self.ids[v] = cur | set(op["ids"])
        elif kind == "delete":
            self.ids[v] = cur - set(op["ids"])
        elif kind == "restore":
            self.ids[v] = self.ids[op["version_arg"]]
        elif kind == "tag":
            self.tags[op["tag"]] = op["version_arg"]
        elif kind == "untag":
            self.tags.pop(op["tag"], None)
        elif kind == "snapshot":
            self.snapshots[op["file"]] = op["snapshot"]
        elif kind == "retention":
            self.days = op["days"]
        if kind in ("compact", "retention") or v not in self.ids:
            self.ids[v] = cur  # compaction (and its saved index) keeps the contents
        for gen in range(self.current + 1, v):  # e.g. add or compact, then a saved index
            self.ids.setdefault(gen, self.ids[v])
            self.alive.add(gen)
        self.current = v
        self.alive.add(v)
        if self.days == 0:  # every commit and cleanup expires the untagged past
            self.alive = {v} | set(self.tags.values())

    def must_keep(self) -> set[int]:
        return self.alive | {self.current} | set(self.tags.values())


def test_sigkill_during_history_operations_loses_nothing(tmp_path: Path) -> None:
    import embedsearch
    from embedsearch import store, versions
    from embedsearch.maintenance import verify

    path = tmp_path / "col"
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    embedsearch.open(path).close()
    model = Model()
    model.ids[1] = frozenset()
    rng = random.Random(int(os.environ.get("ES_CRASH_SEED", "17")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    repo = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = f"{repo}{os.pathsep}{env.get('PYTHONPATH', '')}"
    killed_in: dict[str, int] = {}
    for trial in range(TRIALS):
        log = tmp_path / f"trial-{trial}.log"
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(log), str(trial), str(snaps)],
            env=env,
            stderr=subprocess.PIPE,
        )
        target = TARGETS[trial // 2 % len(TARGETS)] if trial % 2 else None
        deadline = time.monotonic() + 90
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            raw = log.read_bytes() if log.exists() else b""
            if ready is None and raw.startswith(b"READY"):
                ready = time.monotonic()
                deadline = ready + (rng.uniform(0.2, 2.0) if target is None else 8)
            if target and f'"op":"{target}"'.encode() in raw[raw.rfind(b"\nBEGIN ") :]:
                time.sleep(rng.uniform(0, 0.05))
                break
            time.sleep(0.002)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
        acked, in_flight, start = _parse(log)
        assert start == model.current, "the writer did not start from the last known version"
        for op in acked:  # the BEGIN's "version" argument was overwritten by the ACK's
            model.apply(_with_arg(op, log))
        killed_in[in_flight["op"] if in_flight else "between"] = (
            killed_in.get(in_flight["op"] if in_flight else "between", 0) + 1
        )

        # 1. opens; newest = last acknowledged, or what the op in flight committed
        col = embedsearch.open(path)
        newest = col.version
        if newest != model.current:
            assert in_flight is not None and newest > model.current, (newest, model.current)
            infl = _with_arg({**in_flight, "version": newest}, log, begin_only=True)
            if infl["op"] in ("add", "delete", "restore"):
                model.apply(infl)
            else:  # compact / retention / tag: the contents did not change
                for gen in range(model.current + 1, newest + 1):
                    model.ids.setdefault(gen, model.ids[model.current])
                    model.alive.add(gen)
                model.current = newest
                if model.days == 0:  # that commit expired the untagged past, as apply() has it
                    model.alive = {newest} | set(model.tags.values())
        assert frozenset(col.ids()) == model.ids[model.current]
        if in_flight and in_flight["op"] == "tag":  # all or nothing
            assert col.tags().get(in_flight["tag"]) in (None, in_flight["version"])
            if in_flight["tag"] in col.tags():
                model.tags[in_flight["tag"]] = in_flight["version"]
        if in_flight and in_flight["op"] == "untag" and in_flight["tag"] not in col.tags():
            model.tags.pop(in_flight["tag"], None)
            if model.days == 0:  # untagged, its version follows retention: 0 days expires it
                model.alive = {model.current} | set(model.tags.values())
        if in_flight and in_flight["op"] == "retention":
            model.days = col.keep_days
            if model.days == 0:
                model.alive = {model.current} | set(model.tags.values())
        assert col.tags() == model.tags
        # 2. every version that must be kept is listed, opens, and holds its ids
        listed = {v.version for v in col.versions()}
        must = sorted(model.must_keep())
        for gen in sorted(
            set(must[-5:]) | set(model.tags.values()) | set(rng.sample(must, min(8, len(must))))
        ):
            assert gen in listed, f"trial {trial}: version {gen} lost ({sorted(listed)})"
            view = embedsearch.open(path, version=gen)
            assert frozenset(view.ids()) == model.ids[gen], f"trial {trial}: version {gen}"
            if view.ids():
                assert view.search(view.vectors()[0], k=1)[0].id in model.ids[gen]
        col.close()
        # 3. acknowledged snapshots restore exactly; a killed one left no final archive
        for file, gen in list(model.snapshots.items()):
            dest = tmp_path / f"restored-{Path(file).stem}-{trial}"
            embedsearch.restore_snapshot(file, dest)
            assert frozenset(embedsearch.open(dest).ids()) == model.ids[gen]
            del model.snapshots[file]
        if in_flight and in_flight["op"] == "snapshot" and Path(in_flight["file"]).exists():
            embedsearch.restore_snapshot(in_flight["file"], tmp_path / f"inflight-{trial}")
        # 4. intact, and the next writer leaves no file outside the kept versions
        report = verify(path)
        assert report.ok, [p.to_dict() for p in report.errors]
        w = embedsearch.open(path)
        w.delete([], missing_ok=True)
        manifest = store.read_manifest(path)
        assert store.leftovers(path, manifest, keep=versions.kept_files(path, manifest)) == []
        w.close()
    print("versions crash harness:", json.dumps(killed_in, sort_keys=True))
    assert sum(killed_in.values()) == TRIALS
    assert len(model.ids) > 5


def _with_arg(op: dict[str, Any], log: Path, begin_only: bool = False) -> dict[str, Any]:
    """The op with its BEGIN's ``version`` argument (tag/restore) as ``version_arg``."""
    out = dict(op)
    if op["op"] in ("tag", "restore"):
        for line in log.read_text().split("\n"):
            if line.startswith("BEGIN ") and json.loads(line[6:])["seq"] == op["seq"]:
                out["version_arg"] = json.loads(line[6:])["version"]
    return out
