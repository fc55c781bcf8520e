"""Issue 8: Ray ingest throughput (1 and 2 encoder actors vs one process) and fan-out cost.

Usage:
    python benchmarks/ray_scale.py [--data ../shared/data] [--docs 4000] [--shards 8]
                                   [--queries 200] [--fanout-rows 3000,50000]

Runs on a local Ray (``ray.init(num_cpus=<cores>)``), in one process tree:

1. *Ingest.* The first ``--docs`` headlines of news_headlines.jsonl.gz, split into
   ``--shards`` JSONL files, are embedded into a fresh collection by
   a. the single-process path (``read_paths`` + ``Collection.add``, what ``embedsearch index``
      runs; model already loaded),
   b. ``embedsearch.distributed.ingest`` with 1 encoder actor (all cores),
   c. the same with 2 encoder actors (one core each).
   For Ray, *total* includes starting the actors and loading the model in each; *steady*
   is rows / (last encoder call's end - first one's start): the running pipeline.
2. *Fan-out.* The embedded vectors (repeated with small noise up to each ``--fanout-rows``
   size: a small one where search costs nothing, so the difference is the fan-out itself,
   and a large one where the exact search has real work) go into an unsharded collection
   and into sharded ones with 1, 2 and 4 shards. Each query vector is searched (k=10) one at a time; the
   overhead is the sharded p50 minus the unsharded p50. Batches of 32 queries too. The
   configurations run in interleaved rounds; CPU per query excludes the CPU an idle Ray
   burns anyway (measured for 5 s before the rounds).

Prints tables and writes benchmarks/results/ray_scale.json. The machine is shared, so wall
times move with other people's work (the load average is recorded); CPU time per document /
per query (this process and every process it started, Ray's included) is the steadier
measure of what each path costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import DEFAULT_DATA, read_jsonl, table, write_result

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class CpuMeter:
    """CPU time of this process and of every process it started (Ray's raylet, GCS, workers,
    actors), sampled from /proc every 0.2 s so processes that exit are still counted.

    CPU time, unlike wall time, is barely affected by other work on a shared machine.
    """

    def __init__(self) -> None:
        import threading

        self.seen: dict[int, float] = {}  # pid -> last seen utime + stime (seconds)
        self.overhead = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        parent: dict[int, int] = {}
        times: dict[int, float] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry)] = int(fields[1])
            times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
        me = os.getpid()
        with self._lock:
            for pid, t in times.items():
                p, hops = pid, 0
                while p not in (me, 0, 1) and hops < 50:
                    p, hops = parent.get(p, 0), hops + 1
                if p == me and pid != me:
                    self.seen[pid] = max(self.seen.get(pid, 0.0), t)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            t0 = time.thread_time()
            self._sample()
            with self._lock:
                self.overhead += time.thread_time() - t0  # the meter's own cost, not counted

    def __call__(self) -> float:
        import resource

        self._sample()
        own = resource.getrusage(resource.RUSAGE_SELF)
        with self._lock:
            return sum(self.seen.values()) + own.ru_utime + own.ru_stime - self.overhead


cpu_seconds = CpuMeter()


def _split(rows: list[dict[str, Any]], shards: int, root: Path) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    per = -(-len(rows) // shards)
    paths = []
    for i in range(shards):
        p = root / f"part-{i:03d}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows[i * per : (i + 1) * per]))
        paths.append(p)
    return paths


def _single(paths: list[Path], target: Path) -> dict[str, Any]:
    import embedsearch
    from embedsearch.encoder import get_encoder
    from embedsearch.readers import read_paths

    get_encoder().encode(["warm up"])
    c0, t0 = cpu_seconds(), time.perf_counter()
    records = list(read_paths(paths))
    with embedsearch.open(target) as col:
        col.add(
            [r.text for r in records],
            ids=[r.id for r in records],
            metadata=[r.metadata or None for r in records],
            progress=False,
        )
    took, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {
        "path": "single process",
        "docs": len(records),
        "total_s": round(took, 2),
        "total_docs_per_s": round(len(records) / took, 1),
        "steady_docs_per_s": round(len(records) / took, 1),
        "cpu_ms_per_doc": round(1000 * cpu / len(records), 2),
    }


class _Noop:
    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return batch


def _warm_up_ray_data() -> None:
    """Start Ray Data's own helper actors before measuring, so no run pays for them."""
    import ray.data

    ray.data.range(4).map_batches(_Noop, compute=ray.data.ActorPoolStrategy(size=1)).take_all()


def _ray(paths: list[Path], target: Path, actors: int, cores: int) -> dict[str, Any]:
    from embedsearch.distributed import ingest

    c0 = cpu_seconds()
    report = ingest(
        [str(p) for p in paths], target, num_actors=actors, cpus_per_actor=max(1, cores // actors)
    )
    cpu = cpu_seconds() - c0
    return {
        "path": f"ray, {actors} actor(s)",
        "docs": report.documents_added,
        "total_s": round(report.seconds, 2),
        "total_docs_per_s": round(report.docs_per_s, 1),
        "steady_docs_per_s": round(report.steady_docs_per_s, 1),
        "encode_calls": report.encode_calls,
        "actor_encode_s": report.encode_s,
        "cpu_ms_per_doc": round(1000 * cpu / max(report.documents_added, 1), 2),
    }


def _timed(fn: Any, items: list[Any]) -> tuple[list[float], float]:
    """Per-call milliseconds of ``fn`` over ``items``, and CPU seconds used meanwhile."""
    fn(items[0])
    c0 = cpu_seconds()
    times = []
    for q in items:
        t0 = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t0) * 1000)
    return times, cpu_seconds() - c0


def _fanout(
    vectors: np.ndarray, rows: int, queries: int, rounds: int, root: Path
) -> list[dict[str, Any]]:
    """Single-query and batch latency, unsharded vs 1/2/4 shards, in interleaved rounds."""
    import embedsearch
    from embedsearch.distributed import ShardedCollection

    rng = np.random.default_rng(0)
    reps = -(-rows // len(vectors))
    big = np.concatenate(
        [vectors + rng.normal(0, 0.02, vectors.shape).astype(np.float32) for _ in range(reps)]
    )[:rows]
    big /= np.linalg.norm(big, axis=1, keepdims=True)
    base = embedsearch.open(root / "unsharded")
    base.add(
        [f"doc {i}" for i in range(rows)],
        ids=[f"d{i}" for i in range(rows)],
        metadata=[{"g": i % 10} for i in range(rows)],
        vectors=big,
        progress=False,
    )
    qv = list(vectors[rng.choice(len(vectors), size=queries, replace=False)])
    batches = [np.stack(qv[i : i + 32]) for i in range(0, len(qv) - 31, 32)]
    cols: dict[Any, Any] = {"unsharded": base}
    for n in (1, 2, 4):
        cols[n] = ShardedCollection.from_collection(base, root / f"sharded-{n}", n)
    single: dict[Any, list[float]] = {k: [] for k in cols}
    batch: dict[Any, list[float]] = {k: [] for k in cols}
    cpu: dict[Any, float] = dict.fromkeys(cols, 0.0)
    round_p50: dict[Any, list[float]] = {k: [] for k in cols}
    c0, t0 = cpu_seconds(), time.perf_counter()
    time.sleep(5)  # an idle Ray still burns CPU (raylet, GCS, actors polling): measure it
    idle_rate = (cpu_seconds() - c0) / (time.perf_counter() - t0)
    for r in range(rounds):  # interleaved, rotating order: load drifts hit every config alike
        keys = list(cols)
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            col = cols[key]
            t, c = _timed(lambda q, col=col: col.search(q, k=10), qv)
            single[key] += t
            cpu[key] += c - idle_rate * sum(t) / 1000
            round_p50[key].append(statistics.median(t))
            batch[key] += _timed(lambda b, col=col: col.batch_search(list(b), k=10), batches)[0]
    out = []
    base_p50 = statistics.median(single["unsharded"])
    for key, col in cols.items():
        t = sorted(single[key])
        row = {
            "shards": key,
            "p50_ms": round(statistics.median(t), 2),
            "p95_ms": round(t[int(0.95 * (len(t) - 1))], 2),
            "best_round_p50_ms": round(min(round_p50[key]), 2),
            "overhead_p50_ms": round(statistics.median(t) - base_p50, 2),
            "cpu_ms_per_query": round(1000 * cpu[key] / len(t), 2),
            "idle_ray_cpu_per_s": round(idle_rate, 3),
            "batch32_p50_ms": round(statistics.median(batch[key]), 2),
        }
        if key != "unsharded":
            row["same_top10_as_unsharded"] = all(
                [h.id for h in col.search(q, k=10)] == [h.id for h in base.search(q, k=10)]
                for q in qv[:50]
            )
            col.close()
        out.append(row)
    base.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--docs", type=int, default=4000)
    ap.add_argument("--shards", type=int, default=8, help="input files the docs are split into")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--fanout-rows",
        default="3000,50000",
        help="collection sizes for the fan-out test, comma-separated (small: pure overhead)",
    )
    ap.add_argument("--rounds", type=int, default=5, help="interleaved fan-out rounds")
    args = ap.parse_args()
    import ray

    rows = read_jsonl(args.data / "corpora" / "news_headlines.jsonl.gz", args.docs)
    cores = os.cpu_count() or 2
    root = Path(tempfile.mkdtemp(prefix="ray_scale-"))
    try:
        paths = _split(rows, args.shards, root / "src")
        t0 = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        ray_init_s = time.perf_counter() - t0
        _warm_up_ray_data()
        load = [os.getloadavg()[0]]
        ingest_rows = [_single(paths, root / "single")]
        ingest_rows.append(_ray(paths, root / "ray1", 1, cores))
        ingest_rows.append(_ray(paths, root / "ray2", 2, cores))
        load.append(os.getloadavg()[0])
        import embedsearch

        with embedsearch.open(root / "single", create=False) as col:
            vectors = col.vectors()
        fan = []
        for rows_n in (int(x) for x in str(args.fanout_rows).split(",")):
            got = _fanout(vectors, rows_n, args.queries, args.rounds, root / f"fan-{rows_n}")
            fan += [{"rows": rows_n, **r} for r in got]
        load.append(os.getloadavg()[0])
        ray.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"ray.init: {ray_init_s:.1f} s; load average during the run: {load}")
    print(
        table(
            ingest_rows,
            [
                "path",
                "docs",
                "total_s",
                "total_docs_per_s",
                "steady_docs_per_s",
                "cpu_ms_per_doc",
                "encode_calls",
            ],
        )
    )
    print()
    print(
        table(
            fan,
            [
                "rows",
                "shards",
                "p50_ms",
                "p95_ms",
                "best_round_p50_ms",
                "overhead_p50_ms",
                "cpu_ms_per_query",
                "batch32_p50_ms",
                "same_top10_as_unsharded",
            ],
        )
    )
    out = write_result(
        "ray_scale",
        {
            "docs": len(rows),
            "input_shards": args.shards,
            "cores": cores,
            "ray_init_s": round(ray_init_s, 1),
            "load_average_1min": load,
            "ingest": ingest_rows,
            "fanout": fan,
            "command": "python benchmarks/ray_scale.py "
            + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "data"
            ),
        },
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
