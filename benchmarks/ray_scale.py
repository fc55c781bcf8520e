"""Issue 8: Ray ingest throughput (1 and 2 encoder actors vs one process) and fan-out cost.

Usage:
    python benchmarks/ray_scale.py [--data ../shared/data] [--docs 4000] [--shards 8]
                                   [--queries 200] [--fanout-rows 50000]

Runs on a local Ray (``ray.init(num_cpus=<cores>)``), in one process tree:

1. *Ingest.* The first ``--docs`` headlines of news_headlines.jsonl.gz, split into
   ``--shards`` JSONL files, are embedded into a fresh collection by
   a. the single-process path (``read_paths`` + ``Collection.add``, what ``embedsearch index``
      runs; model already loaded),
   b. ``embedsearch.distributed.ingest`` with 1 encoder actor (all cores),
   c. the same with 2 encoder actors (one core each).
   For Ray, *total* includes starting the actors and loading the model in each; *steady*
   is rows / (last encoder call's end - first one's start): the running pipeline.
2. *Fan-out.* The embedded vectors (repeated with small noise up to ``--fanout-rows``, so
   the exact search has real work) go into an unsharded collection and into sharded ones
   with 1, 2 and 4 shards. Each query vector is searched (k=10) one at a time; the
   overhead is the sharded p50 minus the unsharded p50. Batches of 32 queries too.

Prints tables and writes benchmarks/results/ray_scale.json (with the load average: the
machine is shared, so compare rows of one run, not runs).
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
    from embedsearch.ingest import read_paths

    get_encoder().encode(["warm up"])
    t0 = time.perf_counter()
    records = list(read_paths(paths))
    with embedsearch.open(target) as col:
        col.add(
            [r.text for r in records],
            ids=[r.id for r in records],
            metadata=[r.metadata or None for r in records],
            progress=False,
        )
    took = time.perf_counter() - t0
    return {
        "path": "single process",
        "docs": len(records),
        "total_s": round(took, 2),
        "total_docs_per_s": round(len(records) / took, 1),
        "steady_docs_per_s": round(len(records) / took, 1),
    }


def _ray(paths: list[Path], target: Path, actors: int, cores: int) -> dict[str, Any]:
    from embedsearch.distributed import ingest

    report = ingest(
        [str(p) for p in paths], target, num_actors=actors, cpus_per_actor=max(1, cores // actors)
    )
    return {
        "path": f"ray, {actors} actor(s)",
        "docs": report.documents_added,
        "total_s": round(report.seconds, 2),
        "total_docs_per_s": round(report.docs_per_s, 1),
        "steady_docs_per_s": round(report.steady_docs_per_s, 1),
        "encode_calls": report.encode_calls,
        "actor_encode_s": report.encode_s,
    }


def _latencies(fn: Any, items: list[Any]) -> dict[str, float]:
    fn(items[0])
    times = []
    for q in items:
        t0 = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"p50_ms": statistics.median(times), "p95_ms": times[int(0.95 * (len(times) - 1))]}


def _fanout(vectors: np.ndarray, rows: int, queries: int, root: Path) -> list[dict[str, Any]]:
    import embedsearch
    from embedsearch.distributed import ShardedCollection

    rng = np.random.default_rng(0)
    reps = -(-rows // len(vectors))
    big = np.concatenate(
        [vectors + rng.normal(0, 0.02, vectors.shape).astype(np.float32) for _ in range(reps)]
    )[:rows]
    big /= np.linalg.norm(big, axis=1, keepdims=True)
    ids = [f"d{i}" for i in range(rows)]
    base = embedsearch.open(root / "unsharded")
    base.add(
        [f"doc {i}" for i in range(rows)],
        ids=ids,
        metadata=[{"g": i % 10} for i in range(rows)],
        vectors=big,
        progress=False,
    )
    qv = [v for v in vectors[rng.choice(len(vectors), size=queries, replace=False)]]
    batches = [np.stack(qv[i : i + 32]) for i in range(0, len(qv) - 31, 32)]
    out = []
    single = _latencies(lambda q: base.search(q, k=10), qv)
    single_b = _latencies(lambda b: base.batch_search(list(b), k=10), batches)
    out.append(
        {
            "shards": "unsharded",
            **{k: round(v, 2) for k, v in single.items()},
            "batch32_p50_ms": round(single_b["p50_ms"], 2),
            "overhead_p50_ms": 0.0,
        }
    )
    for n in (1, 2, 4):
        with ShardedCollection.from_collection(base, root / f"sharded-{n}", n) as col:
            got = _latencies(lambda q, c=col: c.search(q, k=10), qv)
            got_b = _latencies(lambda b, c=col: c.batch_search(list(b), k=10), batches)
            same = all(
                [h.id for h in col.search(q, k=10)] == [h.id for h in base.search(q, k=10)]
                for q in qv[:20]
            )
        out.append(
            {
                "shards": n,
                **{k: round(v, 2) for k, v in got.items()},
                "batch32_p50_ms": round(got_b["p50_ms"], 2),
                "overhead_p50_ms": round(got["p50_ms"] - single["p50_ms"], 2),
                "same_top10_as_unsharded": same,
            }
        )
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
    ap.add_argument("--fanout-rows", type=int, default=50_000)
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
        load = [os.getloadavg()[0]]
        ingest_rows = [_single(paths, root / "single")]
        ingest_rows.append(_ray(paths, root / "ray1", 1, cores))
        ingest_rows.append(_ray(paths, root / "ray2", 2, cores))
        load.append(os.getloadavg()[0])
        import embedsearch

        with embedsearch.open(root / "single", create=False) as col:
            vectors = col.vectors()
        fan = _fanout(vectors, args.fanout_rows, args.queries, root / "fan")
        load.append(os.getloadavg()[0])
        ray.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"ray.init: {ray_init_s:.1f} s; load average during the run: {load}")
    print(
        table(
            ingest_rows,
            ["path", "docs", "total_s", "total_docs_per_s", "steady_docs_per_s", "encode_calls"],
        )
    )
    print()
    print(
        table(
            fan,
            [
                "shards",
                "p50_ms",
                "p95_ms",
                "overhead_p50_ms",
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
            "fanout_rows": args.fanout_rows,
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
