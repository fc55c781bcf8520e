"""Keyword retrieval at scale: what ``retrieve(mode="bm25")`` costs a user with a large collection.

Issue 19 asks for a collection of millions on one machine; the keyword side of retrieval
(modes ``bm25`` and ``hybrid``) is part of it. This benchmark builds collections of real
texts (the shared corpora's ~50k headlines, news articles and BEIR abstracts, repeated to
size; ids ``k<i>``; metadata ``{"cat": i % 1000}``; random vectors, ``Flat`` index: the vector
side is not measured here) and runs, for the code under test and optionally for an older
checkout of embedsearch (``--baseline``: the whole-collection BM25 index that per-segment
postings replaced), each in fresh processes on its own hard-linked copy of the collection:

* **cold**: a process opens the collection and asks its first keyword query (everything the
  keyword index needs is built here, then saved);
* **queries**: p50/p95 of ``--queries`` real queries (SciFact and NFCorpus questions) with
  ``k=10``, unfiltered and with ``where={"cat": 7}`` (0.1 % of rows);
* **after an add**: 1,000 new documents added, then the next keyword query (what a
  commit costs the keyword side);
* **warm**: a second fresh process opens the collection and asks its first keyword query
  (what was saved is read back);
* RSS after the cold query and after the query runs; bytes of the derived files on disk.

Usage::

    python benchmarks/keywords_at_scale.py [--sizes 100000 1000000] [--baseline /path/to/old]

Results: ``benchmarks/results/keywords_at_scale.json`` and ``keywords_at_scale.png``.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_DATA, RESULTS, ROOT, read_jsonl, table, write_result  # noqa: E402

ADD_ROWS = 1_000
BATCH = 50_000
WHERE = {"cat": 7}


def _texts(data: Path) -> list[str]:
    from vectors import corpus_texts

    texts, _ = corpus_texts(data)
    return [t for t in texts if t.strip()]


def queries(data: Path, count: int) -> list[str]:
    """Real questions: SciFact's and NFCorpus's queries (another distribution than the texts)."""
    out: list[str] = []
    for name in ("scifact", "nfcorpus-original"):
        out += [r["text"] for r in read_jsonl(data / "beir" / name / "queries.jsonl")]
    return out[:count]


def build(path: Path, n: int, data: Path) -> float:
    """A collection of ``n`` real texts (repeated to size) at ``path``; seconds taken."""
    import numpy as np

    import embedsearch

    texts = _texts(data)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    col = embedsearch.open(path, index="Flat")
    for lo in range(0, n, BATCH):
        hi = min(n, lo + BATCH)
        col.add(
            [texts[i % len(texts)] for i in range(lo, hi)],
            ids=[f"k{i}" for i in range(lo, hi)],
            metadata=[{"cat": i % 1000} for i in range(lo, hi)],
            vectors=rng.standard_normal((hi - lo, col.dim), dtype=np.float32),
            progress=False,
        )
        print(f"  built {hi:,} of {n:,} rows", flush=True)
    col.close()
    return time.perf_counter() - started


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _derived_bytes(path: Path) -> int:
    root = path / "derived"
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def child(path: str, data: Path, n_queries: int, phase: str) -> dict[str, Any]:
    """One fresh process (``phase`` ``cold``: first query, query runs, an add; ``warm``: the
    first query of a process that finds everything saved)."""
    import numpy as np

    import embedsearch

    qs = queries(data, n_queries)
    t0 = time.perf_counter()
    col = embedsearch.open(path)
    col.retrieve(qs[0], k=10, mode="bm25")
    out: dict[str, Any] = {"first_query_s": time.perf_counter() - t0, "rss_first_mb": _rss_mb()}
    if phase == "warm":
        col.close()
        return out
    for label, where in (("", None), ("filtered_", WHERE)):
        times = []
        for q in qs:
            t = time.perf_counter()
            col.retrieve(q, k=10, mode="bm25", where=where)
            times.append(time.perf_counter() - t)
        out[f"{label}p50_ms"] = float(np.percentile(times, 50) * 1000)
        out[f"{label}p95_ms"] = float(np.percentile(times, 95) * 1000)
    out["rss_queries_mb"] = _rss_mb()
    texts = _texts(data)
    t = time.perf_counter()
    col.add(
        texts[:ADD_ROWS],
        ids=[f"added-{i}" for i in range(ADD_ROWS)],
        metadata=[{"cat": i % 1000} for i in range(ADD_ROWS)],
        vectors=np.random.default_rng(1).standard_normal((ADD_ROWS, col.dim), dtype=np.float32),
        progress=False,
    )
    out["add_s"] = time.perf_counter() - t
    t = time.perf_counter()
    col.retrieve(qs[1], k=10, mode="bm25")
    out["query_after_add_s"] = time.perf_counter() - t
    out["rss_after_add_mb"] = _rss_mb()
    col.close()
    out["derived_mb"] = _derived_bytes(Path(path)) / 1e6
    return out


def run_child(code: Path, path: Path, args: argparse.Namespace, phase: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, __file__, "--child", str(path), "--phase", phase]
    cmd += ["--data", str(args.data), "--queries", str(args.queries)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise SystemExit(f"child failed ({code}, {phase}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    codes = [("embedsearch", ROOT)] + ([("baseline", args.baseline)] if args.baseline else [])
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        src = args.root / f"kw-{n}"
        if not (src / "manifest.json").exists():
            print(f"building {n:,} rows at {src}", flush=True)
            shutil.rmtree(src, ignore_errors=True)
            build_s = build(src, n, args.data)
        else:
            build_s = None
        for label, code in codes:
            with tempfile.TemporaryDirectory(prefix="kw-", dir=args.root) as tmp:
                copy = Path(tmp) / "c"
                shutil.copytree(src, copy, copy_function=os.link)
                cold = run_child(code, copy, args, "cold")
                warm = run_child(code, copy, args, "warm")
            row = {"code": label, "rows": n, "build_s": build_s, **cold}
            row["warm_first_query_s"] = warm["first_query_s"]
            row["rss_warm_first_mb"] = warm["rss_first_mb"]
            rows.append({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
            print(
                f"{label:>11} {n:>9,}: cold first query {cold['first_query_s']:.2f} s, warm "
                f"{warm['first_query_s']:.2f} s, p50 {cold['p50_ms']:.1f} ms (filtered "
                f"{cold['filtered_p50_ms']:.1f}), after an add {cold['query_after_add_s']:.2f} s, "
                f"RSS {cold['rss_queries_mb']:.0f} MB",
                flush=True,
            )
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [
        ("first_query_s", "cold: open + first query (s)"),
        ("warm_first_query_s", "warm: open + first query (s)"),
        ("query_after_add_s", f"first query after adding {ADD_ROWS:,} (s)"),
        ("p50_ms", "query p50 (ms)"),
        ("filtered_p50_ms", "filtered query p50 (ms)"),
        ("rss_queries_mb", "RSS after the queries (MB)"),
    ]
    sizes = sorted({r["rows"] for r in rows})
    codes = list(dict.fromkeys(r["code"] for r in rows))
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    width = 0.8 / len(codes)
    for ax, (key, title) in zip(axes.flat, panels):
        for j, code in enumerate(codes):
            vals = [
                next((r[key] for r in rows if r["rows"] == n and r["code"] == code), 0)
                for n in sizes
            ]
            xs = np.arange(len(sizes)) + (j - (len(codes) - 1) / 2) * width
            bars = ax.bar(xs, vals, width, label=code)
            ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_xticks(np.arange(len(sizes)), [f"{n:,} docs" for n in sizes])
        ax.set_title(title, fontsize=10)
        ax.set_yscale("log")
        ax.margins(y=0.25)
    axes.flat[0].legend(fontsize=9)
    fig.suptitle(
        "Keyword retrieval (mode='bm25', k=10) over real texts: fresh processes; "
        "'baseline' is the whole-collection BM25 index",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "kw-scale")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--baseline", type=Path, help="an older embedsearch checkout to compare")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--phase", default="cold", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.data, args.queries, args.phase)))
        return 0
    args.root.mkdir(parents=True, exist_ok=True)
    rows = run(args)
    cols = [
        "code",
        "rows",
        "first_query_s",
        "warm_first_query_s",
        "query_after_add_s",
        "p50_ms",
        "p95_ms",
        "filtered_p50_ms",
        "rss_first_mb",
        "rss_queries_mb",
        "add_s",
        "derived_mb",
    ]
    md = table(rows, cols)
    print(md)
    write_result("keywords_at_scale", {"rows": rows, "markdown": md, "add_rows": ADD_ROWS})
    plot(rows, RESULTS / "keywords_at_scale.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
