"""Open, memory and disk of a whole collection at scale, format 2 against format 1.

What a user with a million documents feels first: how long a fresh process takes to open
the collection and answer, how much memory that costs, and how long building it took.

Steps (each reported in the table and in ``benchmarks/results/scale_open.json``):

1. **build** — ``rows`` clustered 384-d unit vectors with short texts and metadata
   ``{"cat": i % 1000, "year": 1990 + i % 30, "tag": "t" + str(i % 7)}``, added through
   ``add(texts, ids=..., metadata=..., vectors=...)`` in batches of ``batch`` (seconds per
   batch recorded: ingest must stay linear).
2. **probe** — a *fresh process* imports embedsearch, opens the collection, runs one vector
   query, 200 more, a filtered query and the hydration of 10 hits; wall times and RSS
   (``VmRSS``; ``VmHWM`` for the peak) after each step.
3. **CLI** — ``embedsearch search NAME "text" --where ...`` end to end (includes loading the
   encoder).
4. **format 1 (before)** — the same collection rewritten in the version-1 layout
   (``tests/v1_format.py``), probed by the code of ``--before`` (a checkout of embedsearch
   before format 2, e.g. ``git archive <commit> | tar -x -C DIR``) and by this code, then
   ``Collection.upgrade()`` timed.

The vectors are synthetic (1,000 Gaussian clusters on the sphere): open time, memory and
disk do not depend on their geometry; recall benchmarks use ``benchmarks/vectors.py``.

Usage::

    python benchmarks/scale_open.py --rows 1000000 --work /tmp/scale \\
        [--before /tmp/embedsearch-v1] [--spec IVF4096,SQ8] [--skip-build]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

PROBE = r"""
import json, os, sys, time
t0 = time.perf_counter()
def rss():
    out = {}
    for line in open("/proc/self/status"):
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out
import numpy as np
import embedsearch
t_import = time.perf_counter()
path = sys.argv[1]
col = embedsearch.open(path)
t_open = time.perf_counter()
r_open = rss()
dim = col.dim
rng = np.random.default_rng(5)
q = rng.standard_normal((201, dim)).astype(np.float32)
t = time.perf_counter(); hits = col.search(q[0], k=10); t_q1 = time.perf_counter() - t
r_q1 = rss()
times = []
for v in q[1:]:
    t = time.perf_counter(); col.search(v, k=10); times.append(time.perf_counter() - t)
r_q200 = rss()
t = time.perf_counter(); fh = col.search(q[0], k=10, where={"cat": 7}); t_filter = time.perf_counter() - t
r_filter = rss()
ids = [h.id for h in hits]
t = time.perf_counter(); docs = col.get(ids); t_get = time.perf_counter() - t
info = col.info()
print(json.dumps({
    "import_s": t_import - t0, "open_s": t_open - t_import, "first_query_s": t_q1,
    "query_p50_ms": float(np.median(times)) * 1e3, "query_p95_ms": float(np.percentile(times, 95)) * 1e3,
    "filtered_query_s": t_filter, "filtered_hits": len(fh), "get_10_s": t_get,
    "rss_open_mb": r_open["VmRSS"], "rss_first_query_mb": r_q1["VmRSS"],
    "rss_200_queries_mb": r_q200["VmRSS"], "rss_filtered_mb": r_filter["VmRSS"],
    "peak_rss_mb": rss()["VmHWM"], "rows": info["rows"], "index": info["index"]["resolved"],
    "format_version": info.get("format_version", 1),
}))
"""


def clustered(n: int, dim: int, seed: int, centers: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = centers[rng.integers(0, len(centers), n)] + rng.standard_normal((n, dim)).astype(
        np.float32
    ) * np.float32(0.04)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build(path: Path, rows: int, batch: int, spec: str) -> dict[str, Any]:
    import embedsearch

    dim = 384
    centers = np.random.default_rng(0).standard_normal((1000, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    col = embedsearch.open(path, index=spec)
    per_batch = []
    t0 = time.perf_counter()
    for lo in range(0, rows, batch):
        hi = min(rows, lo + batch)
        vecs = clustered(hi - lo, dim, lo, centers)
        t = time.perf_counter()
        col.add(
            [f"document {i} about subject {i % 1000}" for i in range(lo, hi)],
            ids=[f"d{i}" for i in range(lo, hi)],
            metadata=[
                {"cat": i % 1000, "year": 1990 + i % 30, "tag": "t" + str(i % 7)}
                for i in range(lo, hi)
            ],
            vectors=vecs,
            progress=False,
        )
        per_batch.append(time.perf_counter() - t)
        print(f"  added {hi:,}/{rows:,} ({per_batch[-1]:.1f} s)", file=sys.stderr, flush=True)
    col.close()
    return {"build_s": time.perf_counter() - t0, "batch_s": per_batch}


def probe(path: Path, src: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    if out.returncode:
        raise SystemExit(f"probe failed:\n{out.stderr[-3000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "process_wall_s": wall}


def cli_search(path: Path, src: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1"}
    entry = "import sys; from embedsearch.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", entry, "search", str(path), "a subject"]
    t = time.perf_counter()
    out = subprocess.run(
        [*cmd, "-k", "10", "--where", '{"cat": 7}'], env=env, capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(f"cli failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - t


def disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def plot(result: dict[str, Any], out: Path) -> None:
    """Format 1 against format 2 when both were probed; otherwise (one format, e.g. 5M rows
    alone) what the run is for: seconds per added batch over the build (ingest linear,
    retrains visible) and RSS at each probe step against the index file's size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(k, v) for k, v in result["probes"].items()]
    if len(runs) == 1 and "batch_s" in result:
        _plot_alone(result, runs[0][1], out, plt)
        return
    labels = [k for k, _ in runs]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key, title in (
        (axes[0], "open_s", "open() in a fresh process (s)"),
        (axes[1], "rss_first_query_mb", "RSS after open + 1 query (MB)"),
        (axes[2], "process_wall_s", "whole probe process (s)"),
    ):
        vals = [v[key] for _, v in runs]
        bars = ax.bar(range(len(vals)), vals, color=["#4c72b0", "#dd8452", "#55a868"][: len(vals)])
        ax.set_xticks(range(len(vals)), labels, rotation=15, fontsize=8)
        ax.set_title(title, fontsize=10)
        for b, v in zip(bars, vals):
            ax.annotate(f"{v:.3g}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom")
    fig.suptitle(f"{result['rows']:,} rows × 384 dims, {result['spec']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def _plot_alone(result: dict[str, Any], probe_row: dict[str, Any], out: Path, plt: Any) -> None:
    batch = np.asarray(result["batch_s"])
    rows = result["batch"] * np.arange(1, len(batch) + 1) / 1e6
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.4), width_ratios=[3, 2])
    a1.bar(rows, batch, width=0.8 * result["batch"] / 1e6, color="#4c72b0")
    med = float(np.median(batch))
    a1.axhline(med, color="#55a868", lw=1, ls="--", label=f"median batch {med:.1f} s")
    for r, b in zip(rows, batch):
        if b > 4 * med:  # an index retrain: the writer re-trains for the size it has reached
            a1.annotate(f"{b:.0f} s", (r, b), ha="center", va="bottom", fontsize=8)
    a1.set_yscale("log")
    a1.set_xlabel("rows in the collection after the batch (millions)")
    a1.set_ylabel(f"seconds to add {result['batch']:,} rows")
    a1.set_title(
        f"ingest: {len(batch)} batches, {result['build_s']:.0f} s in all "
        "(tall bars: index retrains)",
        fontsize=10,
    )
    a1.legend(fontsize=8, loc="upper left")
    steps = [
        ("after open", "rss_open_mb"),
        ("after 1 query", "rss_first_query_mb"),
        ("after 200 queries", "rss_200_queries_mb"),
        ("after a filter", "rss_filtered_mb"),
        ("peak", "peak_rss_mb"),
    ]
    vals = [probe_row[k] for _, k in steps]
    bars = a2.bar(range(len(vals)), vals, color="#dd8452")
    for b, v in zip(bars, vals):
        a2.annotate(f"{v:,.0f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom")
    if result.get("index_bytes"):
        idx_mb = result["index_bytes"] / 2**20
        a2.axhline(idx_mb, color="black", lw=1, ls="--", label=f"index file {idx_mb:,.0f} MB")
        a2.legend(fontsize=8, loc="upper left")
    a2.set_xticks(range(len(vals)), [s for s, _ in steps], rotation=15, fontsize=8)
    a2.set_ylabel("RSS of a fresh process (MB)")
    a2.set_ylim(0, max(vals) * 1.25)
    a2.set_title(f"memory ({probe_row.get('index', result['spec'])})", fontsize=10)
    fig.suptitle(
        f"{result['rows']:,} rows × 384 dims, index {result['spec']}: "
        f"{result['disk_bytes_v2'] / 1e9:.1f} GB on disk",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=50_000)
    ap.add_argument("--spec", default="IVF4096,SQ8", help="index spec of the collection")
    ap.add_argument("--work", type=Path, default=Path("/tmp/embedsearch-scale"))
    ap.add_argument("--before", type=Path, help="source tree of embedsearch before format 2")
    ap.add_argument("--skip-build", action="store_true", help="reuse the collection in --work")
    ap.add_argument("--out", type=Path, default=RESULTS / "scale_open.json")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT))
    path = args.work / "v2"
    result: dict[str, Any] = {"rows": args.rows, "batch": args.batch, "spec": args.spec}
    if not args.skip_build:
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        result.update(build(path, args.rows, args.batch, args.spec))
    result["disk_bytes_v2"] = disk(path)
    result["index_bytes"] = sum(f.stat().st_size for f in path.glob("index-*.faiss"))
    probes: dict[str, Any] = {"format 2": probe(path, ROOT)}
    result["cli_search_s"] = {"format 2": cli_search(path, ROOT)}
    if args.before:
        sys.path.insert(0, str(ROOT / "tests"))
        from v1_format import downgrade

        v1 = args.work / "v1"
        shutil.rmtree(v1, ignore_errors=True)
        shutil.copytree(path, v1)
        t = time.perf_counter()
        downgrade(v1)
        result["downgrade_s"] = time.perf_counter() - t
        result["disk_bytes_v1"] = disk(v1)
        probes["format 1, old code"] = probe(v1, args.before)
        result["cli_search_s"]["format 1, old code"] = cli_search(v1, args.before)
        probes["format 1, new code"] = probe(v1, ROOT)
        import embedsearch

        col = embedsearch.open(v1)
        t = time.perf_counter()
        col.upgrade()
        result["upgrade_s"] = time.perf_counter() - t
        col.close()
        shutil.rmtree(v1, ignore_errors=True)
    result["probes"] = probes
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(result, args.out.with_suffix(".png"))

    keys = [
        ("import_s", "import (s)"),
        ("open_s", "open (s)"),
        ("first_query_s", "first query (s)"),
        ("query_p50_ms", "query p50 (ms)"),
        ("filtered_query_s", "filtered query (s)"),
        ("get_10_s", "get 10 hits (s)"),
        ("rss_open_mb", "RSS after open (MB)"),
        ("rss_first_query_mb", "RSS after 1 query (MB)"),
        ("rss_200_queries_mb", "RSS after 200 queries (MB)"),
        ("peak_rss_mb", "peak RSS (MB)"),
        ("process_wall_s", "whole process (s)"),
    ]
    names = list(probes)
    print(f"\n{args.rows:,} rows, index {args.spec}")
    print("| measure | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for key, label in keys:
        print(f"| {label} | " + " | ".join(f"{probes[n][key]:.3g}" for n in names) + " |")
    print(
        "| `embedsearch search` CLI (s) | "
        + " | ".join(f"{result['cli_search_s'].get(n, float('nan')):.3g}" for n in names)
        + " |"
    )
    if "build_s" in result:
        b = result["batch_s"]
        print(
            f"build {result['build_s']:.0f} s; batch first/last/max {b[0]:.1f}/{b[-1]:.1f}/{max(b):.1f} s"
        )
    print(f"disk: format 2 {result['disk_bytes_v2'] / 1e9:.2f} GB", end="")
    if "disk_bytes_v1" in result:
        print(
            f", format 1 {result['disk_bytes_v1'] / 1e9:.2f} GB; upgrade {result['upgrade_s']:.1f} s"
        )
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
