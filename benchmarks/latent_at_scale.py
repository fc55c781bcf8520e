"""The latent views of a whole collection at a million documents: time and peak memory.

What a user with a large collection runs: ``col.cluster()``, ``col.topics()``,
``col.direction(...)`` + ``col.along(...)``, ``col.outliers()`` and ``col.map(...)``, each
in a fresh process (import, open, the call), timed with its peak RSS (``ru_maxrss`` of the
child). ``--compare-src DIR`` runs the same calls with another source tree of embedsearch
(e.g. a ``git worktree`` of an older commit) in alternation, so the two are compared side by
side on the same machine state (ratios; the machine is shared).

``--quality`` adds what sampling costs: top-level V-measure of ``topics`` on the 32,000 news
headlines (labelled news / clickbait) with the leaves made from the default sample against
every document, seeds 0..5.

Usage::

    python benchmarks/latent_at_scale.py /tmp/embedsearch-scale/embedsearch-1000000 \\
        [--compare-src /tmp/old-tree] [--ops cluster,topics,direction,outliers,map] \\
        [--quality] [--data ../shared/data]

Writes ``benchmarks/results/latent_at_scale.json`` and ``latent_at_scale.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, RESULTS, ROOT, table, write_result  # noqa: E402

OPS = ("cluster", "topics", "direction", "outliers", "map")

# one call in a fresh process; prints one JSON line
CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np
import embedsearch
col = embedsearch.open(sys.argv[1])
op = sys.argv[2]
t1 = time.perf_counter()
if op == "cluster":
    r = col.cluster()
    what = f"k={r.k}"
elif op == "topics":
    r = col.topics()
    what = "topics " + "/".join(str(level.k) for level in r.levels)
elif op == "direction":
    probe = np.ones(col.dim, dtype=np.float32) / np.sqrt(col.dim)
    ids = [h.id for h in col.search(probe, k=2)] + [h.id for h in col.search(-probe, k=2)]
    axis = col.direction(ids[:2], ids[2:])
    what = "along " + ",".join(h.id for h in col.along(axis, k=3))
elif op == "outliers":
    what = "outliers " + ",".join(h.id for h in col.outliers(n=5))
elif op == "map":
    r = col.map(sys.argv[3])
    what = "map " + str(getattr(r, "method", ""))
t2 = time.perf_counter()
print(json.dumps({"op": op, "open_s": t1 - t0, "call_s": t2 - t1,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "result": what, "src": embedsearch.__file__}))
"""


def run_op(src: Path, collection: Path, op: str, work: Path) -> dict[str, Any]:
    """One op in a fresh process importing embedsearch from ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(collection), op, str(work / f"map-{op}.png")],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,  # not the checkout: the current directory comes before PYTHONPATH
        check=False,
    )
    wall = time.perf_counter() - t
    if out.returncode != 0:
        return {"op": op, "error": out.stderr.strip().splitlines()[-1:], "wall_s": wall}
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    rec["wall_s"] = wall
    assert rec["src"].startswith(str(src)), f"imported {rec['src']}, not from {src}"
    return rec


def commit_of(src: Path) -> str:
    """The short commit of a source tree (and "+changes" if it has uncommitted ones)."""
    git = ["git", "-C", str(src)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "embedsearch"], capture_output=True, text=True
    )
    name = head.stdout.strip() or "unknown"
    return name + ("+changes" if dirty.stdout.strip() else "")


def quality(data: Path, seeds: int) -> list[dict[str, Any]]:
    """Top-level V of topics on the 32k headlines: leaves from the default sample vs all."""
    from sklearn.metrics import v_measure_score

    from embedsearch.latent import topics as T

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import latent_structure as ls

    texts, labels = ls.corpora(data)["hl"]
    vectors = ls.vectors("headlines-all", texts, ROOT / "benchmarks" / ".cache")
    rows = []
    default = T.LEAF_SAMPLE
    for name, cap in (
        ("leaves from a sample (default)", default),
        ("leaves from every document", 10**9),
    ):
        T.LEAF_SAMPLE = cap
        vs, secs = [], []
        for seed in range(seeds):
            t = time.perf_counter()
            r = T.build_topics(
                [str(i) for i in range(len(texts))],
                vectors,
                lambda rows: [texts[i] for i in rows],
                seed=seed,
                levels=2,
            )
            secs.append(time.perf_counter() - t)
            vs.append(float(v_measure_score(labels, r.levels[0].labels)))
        rows.append(
            {
                "variant": name,
                "documents": len(texts),
                "leaf_sample": min(cap, len(texts)),
                "V_per_seed": " / ".join(f"{v:.3f}" for v in vs),
                "V_mean": round(float(np.mean(vs)), 4),
                "seconds_mean": round(float(np.mean(secs)), 1),
            }
        )
        print(table(rows[-1:], list(rows[-1])), flush=True)
    T.LEAF_SAMPLE = default
    return rows


def plot(rows: list[dict[str, Any]], rows_n: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    trees = list(dict.fromkeys(r["tree"] for r in rows))
    ops = list(dict.fromkeys(r["op"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(trees)
    for ax, key, label in (
        (axes[0], "call_s", "seconds (the call, after open)"),
        (axes[1], "peak_rss_mb", "peak RSS of the process (MB)"),
    ):
        for j, tree in enumerate(trees):
            vals = [
                next(
                    (r.get(key, np.nan) for r in rows if r["op"] == op and r["tree"] == tree),
                    np.nan,
                )
                for op in ops
            ]
            bars = ax.bar(np.arange(len(ops)) + j * width, vals, width, label=tree)
            ax.bar_label(
                bars, labels=[f"{v:,.0f}" if v >= 100 else f"{v:.3g}" for v in vals], fontsize=8
            )
        ax.set_xticks(np.arange(len(ops)) + width * (len(trees) - 1) / 2, ops)
        ax.set_ylabel(label + ", log scale")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 3.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.10g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8)
    fig.suptitle(f"Latent views of a {rows_n:,}-document collection, one fresh process each")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "collection",
        type=Path,
        nargs="?",
        default=Path("/tmp/embedsearch-scale/embedsearch-1000000"),
    )
    ap.add_argument("--compare-src", type=Path, default=None)
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--quality", action="store_true")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON")
    args = ap.parse_args()
    if args.plot_only:
        saved = json.loads((RESULTS / "latent_at_scale.json").read_text())
        plot(saved["rows"], saved["documents"], RESULTS / "latent_at_scale.png")
        return
    if not (args.collection / "manifest.json").exists():
        sys.exit(
            f"{args.collection} is not a collection; build one with benchmarks/scale.py first."
        )
    import embedsearch

    docs = len(embedsearch.open(args.collection))
    trees = [(f"this tree ({commit_of(ROOT)})", ROOT)] + (
        [(f"compared tree ({commit_of(args.compare_src)})", args.compare_src)]
        if args.compare_src
        else []
    )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for op in args.ops.split(","):
            for name, src in trees:
                rec = run_op(src, args.collection, op, Path(tmp))
                rec["tree"] = name
                rows.append(rec)
                print(
                    f"{op:9s} {name:14s} "
                    + json.dumps({k: v for k, v in rec.items() if k not in ("op", "tree")}),
                    flush=True,
                )
    cols = ["op", "tree", "call_s", "peak_rss_mb", "open_s", "result"]
    for r in rows:
        for k in ("call_s", "peak_rss_mb", "open_s", "wall_s"):
            if k in r:
                r[k] = round(float(r[k]), 2 if k != "peak_rss_mb" else 0)
    print(table(rows, cols))
    if args.compare_src:
        for op in args.ops.split(","):
            a = next((r for r in rows if r["op"] == op and r["tree"] == trees[0][0]), {})
            b = next((r for r in rows if r["op"] == op and r["tree"] == trees[1][0]), {})
            if "call_s" in a and "call_s" in b:
                print(
                    f"{op}: time {a['call_s'] / b['call_s']:.2f}x, peak RSS {a['peak_rss_mb'] / b['peak_rss_mb']:.2f}x of the compared tree"
                )
    payload: dict[str, Any] = {"collection": str(args.collection), "documents": docs, "rows": rows}
    if args.compare_src:
        payload["compared_src"] = str(args.compare_src)
    if args.quality:
        payload["quality"] = quality(args.data, args.seeds)
    write_result("latent_at_scale", payload)
    plot(rows, docs, RESULTS / "latent_at_scale.png")
    print(f"wrote {RESULTS / 'latent_at_scale.json'} and latent_at_scale.png")


if __name__ == "__main__":
    main()
