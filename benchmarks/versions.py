"""The cost and use of version history: commits, disk, time travel, snapshots, a real diff.

Four parts, each bounded (sizes are arguments; the defaults fit a 2-core machine):

1. **History cost** — two collections of ``--rows`` precomputed vectors (random unit
   vectors: the store does not care what they mean; Flat index so that no index training
   blurs the measure), one with retention on (the default, 7 days), one off (0 days). Then
   ``--upserts`` upserts of existing ids in batches of ``--batch`` on both, alternating, so
   the two are timed side by side (the retention-on one has its base version tagged). Reported: commit latency p50/p95, disk after the upserts
   and after a compaction (retention on keeps the pre-compaction files for the kept versions).
2. **Time travel** — search latency (vector queries, k=10) on the version before the
   upserts vs the newest version, and the time to open each.
3. **Snapshots** — ``snapshot`` and ``restore-snapshot`` throughput (MB/s) of the newest
   version while a writer process keeps committing upserts; the restored collection must
   answer ``--queries`` searches exactly as the source's version did.
4. **Diff** — a real case: ``--headlines`` news headlines, tagged, then the AG News
   ``World`` articles added; the diff with probe queries, and its side-by-side map.

Writes ``benchmarks/results/versions.json`` and ``versions_diff.png``; prints a table.

    python benchmarks/versions.py [--rows 100000 --upserts 10000 --batch 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, RESULTS, ROOT, read_jsonl, table, write_result  # noqa: E402

sys.path.insert(0, str(ROOT))
import embedsearch  # noqa: E402

DIM = 384


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def history_cost(work: Path, rows: int, upserts: int, batch: int, log: Any) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    cols = {}
    for label, days in (("retention on (7 days)", 7), ("retention off (0 days)", 0)):
        col = embedsearch.open(work / f"hist-{days}", index="Flat")
        col.set_retention(days)
        for lo in range(0, rows, 50_000):
            n = min(50_000, rows - lo)
            ids = [f"d{i}" for i in range(lo, lo + n)]
            col.add(ids, ids=ids, vectors=_unit(np.random.default_rng(lo), n), progress=False)
        if days:  # only the retention-on collection is travelled back to; a tag would keep
            col.tag("base")  # the base's files in the retention-off one too
        cols[label] = col
        log(f"built {label}: {rows} rows, {_disk(col.path) / 1e6:.0f} MB")
    lat: dict[str, list[float]] = {k: [] for k in cols}
    for b in range(upserts // batch):
        ids = [f"d{i}" for i in rng.choice(rows, batch, replace=False)]
        vec = _unit(rng, batch)
        for label, col in cols.items():
            t = time.perf_counter()
            col.upsert(ids, ids=ids, vectors=vec, progress=False)
            lat[label].append(time.perf_counter() - t)
        if b % 20 == 0:
            log(f"upsert batch {b + 1}/{upserts // batch}")
    out = []
    for label, col in cols.items():
        after = _disk(col.path)
        versions_bytes = _disk(col.path / "versions")
        t = time.perf_counter()
        col.compact()
        compact_s = time.perf_counter() - t
        out.append(
            {
                "config": label,
                "rows": rows,
                "upserts": upserts,
                "batch": batch,
                "commit_p50_ms": _pct(lat[label], 50),
                "commit_p95_ms": _pct(lat[label], 95),
                "kept_versions": len(col.versions()),
                "disk_after_upserts_mb": after / 1e6,
                "history_records_mb": versions_bytes / 1e6,
                "disk_after_compact_mb": _disk(col.path) / 1e6,
                "compact_s": compact_s,
            }
        )
    base, newest = out
    for row in out:
        row["commit_p50_vs_off"] = row["commit_p50_ms"] / newest["commit_p50_ms"]
        row["disk_vs_off"] = row["disk_after_upserts_mb"] / newest["disk_after_upserts_mb"]
    for col in cols.values():
        col.close()
    return {"rows": out, "path_on": str(cols[next(iter(cols))].path)}


def time_travel(path: Path, queries: int) -> dict[str, Any]:
    q = _unit(np.random.default_rng(99), queries)
    out = {}
    for label, version in (("newest", None), ("version 'base' (before the upserts)", "base")):
        t = time.perf_counter()
        col = embedsearch.open(path, version=version)
        open_s = time.perf_counter() - t
        col.search(q[0], k=10)
        lat = []
        for v in q:
            t = time.perf_counter()
            col.search(v, k=10)
            lat.append(time.perf_counter() - t)
        out[label] = {"open_s": open_s, "p50_ms": _pct(lat, 50), "p95_ms": _pct(lat, 95)}
        col.close()
    return out


WRITER = """
import sys, time, numpy as np, embedsearch
col = embedsearch.open(sys.argv[1]); rows = int(sys.argv[2]); rng = np.random.default_rng(5)
n = 0
while True:
    ids = [f"d{i}" for i in rng.choice(rows, 200, replace=False)]
    x = rng.normal(size=(200, 384)).astype("float32")
    col.upsert(ids, ids=ids, vectors=x, progress=False); n += 1
    print(n, flush=True)
"""


def snapshots(path: Path, work: Path, rows: int, queries: int, log: Any) -> dict[str, Any]:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(rows)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        writer.stdout.readline()  # the writer has committed once: it holds the lock
        reader = embedsearch.open(path)
        before = reader.version
        snap = reader.snapshot(work / "snap.tar")
        during_snapshot = reader.version - before
        t = time.perf_counter()
        restored_info = embedsearch.restore_snapshot(work / "snap.tar", work / "restored")
        restore_s = time.perf_counter() - t
        during_restore = reader.version - before - during_snapshot
    finally:
        writer.kill()
        writer.wait()
    log(
        f"snapshot {snap.bytes / 1e6:.0f} MB in {snap.seconds:.1f} s; restored in {restore_s:.1f} s"
    )
    source = embedsearch.open(path, version=snap.version)
    restored = embedsearch.open(work / "restored")
    q = _unit(np.random.default_rng(7), queries)
    a = source.batch_search(q, 10)
    b = restored.batch_search(q, 10)
    same = all([(h.id, h.score) for h in x] == [(h.id, h.score) for h in y] for x, y in zip(a, b))
    return {
        "rows": len(restored),
        "archive_mb": snap.bytes / 1e6,
        "snapshot_s": snap.seconds,
        "snapshot_mb_s": snap.mb_per_s,
        "restore_s": restore_s,
        "restore_mb_s": snap.bytes / 1e6 / restore_s,
        "writer_commits_during_snapshot": during_snapshot,
        "writer_commits_during_restore": during_restore,
        "version": snap.version,
        "newest_version_after": embedsearch.open(path).version,
        "queries_compared": queries,
        "restored_results_identical": same,
        "restored_files": restored_info.files,
    }


def real_diff(work: Path, data: Path, headlines: int, log: Any) -> dict[str, Any]:
    corpora = data / "corpora"
    heads = read_jsonl(corpora / "news_headlines.jsonl.gz", limit=headlines)
    world = [r for r in read_jsonl(corpora / "ag_news_test.jsonl.gz") if r["topic"] == "World"]
    col = embedsearch.open(work / "news")
    t = time.perf_counter()
    col.add(
        [h["text"] for h in heads],
        ids=[f"h{i}" for i in range(len(heads))],
        metadata=[{"source": "headlines"}] * len(heads),
    )
    col.tag("headlines")
    col.add(
        [f"{w['title']}. {w['text']}" for w in world],
        ids=[f"w{i}" for i in range(len(world))],
        metadata=[{"source": "ag_news_world"}] * len(world),
    )
    log(
        f"embedded {len(heads)} headlines + {len(world)} World articles in {time.perf_counter() - t:.0f} s"
    )
    probes = [
        "war in Iraq",
        "peace talks in the Middle East",
        "election results",
        "stock market falls",
        "new smartphone release",
        "baseball playoffs",
    ]
    png = RESULTS / "versions_diff.png"
    d = col.diff("headlines", probes=probes, map_path=png)
    col.diff("headlines", probes=probes, map_path=RESULTS / "versions_diff.html")
    log(d.summary())
    out = d.to_dict(max_ids=5)
    out["summary"] = d.summary()
    out["png"] = str(png.relative_to(ROOT))
    col.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--upserts", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--snapshot-rows",
        type=int,
        help="measure snapshots on a separate collection of this many rows (e.g. 1000000) "
        "instead of the history one",
    )
    ap.add_argument("--headlines", type=int, default=6000)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--work", type=Path, help="scratch directory (default: a temp dir)")
    ap.add_argument("--skip-diff", action="store_true")
    ap.add_argument("--out", default="versions", help="result name (benchmarks/results/NAME.json)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="es-versions-"))
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    try:
        hist = history_cost(work, args.rows, args.upserts, args.batch, log)
        travel = time_travel(Path(hist["path_on"]), args.queries)
        snap_path, snap_rows = Path(hist["path_on"]), args.rows
        if args.snapshot_rows:
            snap_path, snap_rows = work / "big", args.snapshot_rows
            big = embedsearch.open(snap_path, index="Flat")
            for lo in range(0, snap_rows, 50_000):
                n = min(50_000, snap_rows - lo)
                ids = [f"d{i}" for i in range(lo, lo + n)]
                big.add(ids, ids=ids, vectors=_unit(np.random.default_rng(lo), n), progress=False)
                log(f"built {lo + n}/{snap_rows} rows for the snapshot test")
            big.close()
        snap = snapshots(snap_path, work, snap_rows, args.queries, log)
        diff = None if args.skip_diff else real_diff(work, args.data, args.headlines, log)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "command": "python benchmarks/versions.py " + " ".join(sys.argv[1:]),
        "vectors": "random unit vectors (history, time travel, snapshots); real MiniLM "
        "embeddings (diff)",
        "index": "Flat (history, time travel, snapshots)",
        "history": hist["rows"],
        "time_travel": travel,
        "snapshot": snap,
        "diff": diff,
        "seconds": time.perf_counter() - t0,
    }
    path = write_result(args.out, result)
    print()
    print(
        table(
            hist["rows"],
            [
                "config",
                "commit_p50_ms",
                "commit_p95_ms",
                "commit_p50_vs_off",
                "kept_versions",
                "disk_after_upserts_mb",
                "history_records_mb",
                "disk_vs_off",
                "disk_after_compact_mb",
            ],
        )
    )
    print()
    print(
        table(
            [{"version": k, **v} for k, v in travel.items()],
            ["version", "open_s", "p50_ms", "p95_ms"],
        )
    )
    print()
    print(
        table(
            [snap],
            [
                "rows",
                "archive_mb",
                "snapshot_mb_s",
                "restore_mb_s",
                "writer_commits_during_snapshot",
                "restored_results_identical",
            ],
        )
    )
    if diff:
        print()
        print(diff["summary"])
    print(f"\nwrote {path}")
    print(json.dumps({"seconds": round(result["seconds"], 1)}))


if __name__ == "__main__":
    main()
