"""Keyword retrieval at scale: what ``retrieve(mode="bm25")`` costs a user with a large collection.

Issue 19 asks for a collection of millions on one machine; the keyword side of retrieval
(modes ``bm25`` and ``hybrid``) is part of it. This benchmark builds collections of real
texts (the shared corpora's ~50k headlines, news articles and BEIR abstracts, repeated to
size; ids ``k<i>``; metadata ``{"cat": i % 1000}``; random vectors, ``Flat`` index: the vector
side is not measured here) and runs, for the code under test and optionally for an older
checkout of embedsearch (``--baseline``: the whole-collection BM25 index that per-segment
postings replaced), each in fresh processes on its own hard-linked copy of the collection:

* **cold**: a process opens the collection and asks its first keyword query (everything the
  keyword index needs is built here, then saved); then it adds 1,000 new documents and asks
  the next keyword query (what a commit costs the keyword side);
* **warm**: a fresh process opens the collection and asks its first keyword query (what
  was saved is read back), then p50/p95 of ``--queries`` real queries (SciFact and
  NFCorpus questions) with ``k=10``, unfiltered and with ``where={"cat": 7}`` (0.1 % of
  rows): what every later process of a user sees. ``--rounds`` such processes per engine,
  the engines in turn (this machine is shared and drifts), medians reported;
* RSS (the cold process's after its first query, and its peak; the warm one's after its
  first query and after the query runs) and bytes of the derived files on disk.

Each embedsearch copy is first brought to its code's on-disk format (an untimed
``upgrade``: what a collection of an older format gets once, from its first write).

Usage::

    python benchmarks/keywords_at_scale.py [--sizes 100000 1000000] [--baseline /path/to/old]

Results: ``benchmarks/results/keywords_at_scale.json`` and ``keywords_at_scale.png`` (``--out NAME``
for another name).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    DEFAULT_DATA,
    RESULTS,
    ROOT,
    finish_figure,
    peak_rss_mb,
    read_jsonl,
    rss_mb,
    table,
    write_result,
)

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


def _derived_bytes(path: Path) -> int:
    """Bytes of the keyword index's files: ``derived/`` of a collection, LanceDB's
    ``_indices`` (its full-text and scalar indexes)."""
    roots = [path / "derived", *path.glob("*.lance/_indices")]
    return sum(p.stat().st_size for r in roots if r.exists() for p in r.rglob("*") if p.is_file())


def child(path: str, data: Path, n_queries: int, phase: str) -> dict[str, Any]:
    """One fresh process. ``cold``: the first query (everything built), then an add and the
    query after it. ``warm``: the first query of a process that finds everything saved, then
    the query runs (what a user's later processes see)."""
    import numpy as np

    import embedsearch

    if phase == "upgrade":  # untimed: the copy brought to this code's format, once
        col = embedsearch.open(path)
        done = col.upgrade() if hasattr(col, "upgrade") else {}
        col.close()
        return {"upgraded": done}
    qs = queries(data, n_queries)
    t0 = time.perf_counter()
    col = embedsearch.open(path)
    col.retrieve(qs[0], k=10, mode="bm25")
    out: dict[str, Any] = {"first_query_s": time.perf_counter() - t0, "rss_first_mb": rss_mb()}
    if phase == "cold":
        out["rss_peak_mb"] = peak_rss_mb()
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
        col.close()
        out["derived_mb"] = _derived_bytes(Path(path)) / 1e6
        return out
    for label, where in (("", None), ("filtered_", WHERE)):
        times = []
        for q in qs:
            t = time.perf_counter()
            col.retrieve(q, k=10, mode="bm25", where=where)
            times.append(time.perf_counter() - t)
        out[f"{label}p50_ms"] = float(np.percentile(times, 50) * 1000)
        out[f"{label}p95_ms"] = float(np.percentile(times, 95) * 1000)
    out["rss_queries_mb"] = rss_mb()
    col.close()
    return out


def lance_child(path: str, data: Path, n_queries: int, phase: str, n: int) -> dict[str, Any]:
    """The same phases for LanceDB's own full-text search (its native BM25 index over the
    same texts, ``cat`` with a scalar index for the filter): ``cold`` creates the table and
    both indexes (the table's write timed apart), asks the first query, then adds 1,000
    rows with ``optimize()`` (which folds them into the indexes, as LanceDB documents) and
    asks the next; ``warm`` opens and runs the queries."""
    import lancedb
    import numpy as np
    import pyarrow as pa

    qs = queries(data, n_queries)

    def rows(lo: int, hi: int, texts: list[str], prefix: str = "k") -> pa.Table:
        return pa.table(
            {
                "id": [f"{prefix}{i}" for i in range(lo, hi)],
                "text": [texts[i % len(texts)] for i in range(lo, hi)],
                "cat": pa.array([i % 1000 for i in range(lo, hi)], pa.int64()),
            }
        )

    def ask(tbl: Any, q: str, where: dict[str, Any] | None = None) -> list[str]:
        s = tbl.search(q, query_type="fts").limit(10)
        if where is not None:
            s = s.where(" AND ".join(f"{k} = {v}" for k, v in where.items()), prefilter=True)
        # the text too: retrieve() hands back each passage's text and metadata
        return [r["id"] for r in s.select(["id", "text", "cat", "_score"]).to_list()]

    out: dict[str, Any] = {}
    if phase == "cold":
        texts = _texts(data)
        t = time.perf_counter()
        db = lancedb.connect(path)
        tbl = db.create_table("kw", rows(0, min(n, BATCH), texts))
        for lo in range(BATCH, n, BATCH):
            tbl.add(rows(lo, min(n, lo + BATCH), texts))
        out["table_s"] = time.perf_counter() - t
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # the names of 0.40's documentation, deprecated since
            warnings.simplefilter("ignore")
            tbl.create_fts_index("text")
            tbl.create_scalar_index("cat")
        ask(tbl, qs[0])
        out["first_query_s"] = time.perf_counter() - t0
        out["rss_first_mb"] = rss_mb()
        out["rss_peak_mb"] = peak_rss_mb()  # (the table's write included)
        t = time.perf_counter()
        tbl.add(rows(0, ADD_ROWS, texts, "added-"))
        tbl.optimize()
        out["add_s"] = time.perf_counter() - t
        t = time.perf_counter()
        ask(tbl, qs[1])
        out["query_after_add_s"] = time.perf_counter() - t
        out["derived_mb"] = _derived_bytes(Path(path)) / 1e6
        return out
    t0 = time.perf_counter()
    tbl = lancedb.connect(path).open_table("kw")
    ask(tbl, qs[0])
    out["first_query_s"] = time.perf_counter() - t0
    out["rss_first_mb"] = rss_mb()
    for label, where in (("", None), ("filtered_", WHERE)):
        times = []
        for q in qs:
            t = time.perf_counter()
            ask(tbl, q, where)
            times.append(time.perf_counter() - t)
        out[f"{label}p50_ms"] = float(np.percentile(times, 50) * 1000)
        out[f"{label}p95_ms"] = float(np.percentile(times, 95) * 1000)
    out["rss_queries_mb"] = rss_mb()
    return out


def run_child(
    code: Path | None, path: Path, args: argparse.Namespace, phase: str, n: int = 0
) -> dict[str, Any]:
    """A fresh process: embedsearch from checkout ``code``, or LanceDB (``code`` None) under
    ``--peer-python``."""
    python = sys.executable if code is not None else str(args.peer_python)
    env = {**os.environ, "PYTHONPATH": str(code)} if code is not None else dict(os.environ)
    cmd = [python, __file__, "--child", str(path), "--phase", phase, "--engine"]
    cmd += ["embedsearch" if code is not None else "lancedb", "--rows", str(n)]
    cmd += ["--data", str(args.data), "--queries", str(args.queries)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise SystemExit(f"child failed ({code}, {phase}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    codes: list[tuple[str, Path | None]] = [("embedsearch", ROOT)]
    if args.baseline:
        codes.append((args.baseline_label, args.baseline))
    if args.peer_python:
        codes.append(("lancedb", None))
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        src = args.root / f"kw-{n}"
        if not (src / "manifest.json").exists():
            print(f"building {n:,} rows at {src}", flush=True)
            shutil.rmtree(src, ignore_errors=True)
            build_s = build(src, n, args.data)
        else:
            build_s = None
        with tempfile.TemporaryDirectory(prefix="kw-", dir=args.root) as tmp:
            colds: dict[str, dict[str, Any]] = {}
            for label, code in codes:  # each engine's own copy, its keyword index built
                copy = Path(tmp) / label.split()[0]
                if code is not None:
                    shutil.copytree(src, copy, copy_function=os.link)
                    # a collection of an older format is upgraded once, by the first
                    # write or `embedsearch upgrade`: not what the phases time
                    run_child(code, copy, args, "upgrade", n)
                colds[label] = run_child(code, copy, args, "cold", n)
            warms: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in codes}
            for _ in range(args.rounds):  # engines in turn: a drift of the machine hits all
                for label, code in codes:
                    copy = Path(tmp) / label.split()[0]
                    warms[label].append(run_child(code, copy, args, "warm", n))
        for label, code in codes:
            cold = colds[label]
            warm = {k: statistics.median(w[k] for w in warms[label]) for k in warms[label][0]}
            row = {"code": label, "rows": n, "build_s": build_s if code is not None else None}
            row.update({f"cold_{k}" if k.startswith("rss") else k: v for k, v in cold.items()})
            row["warm_first_query_s"] = warm.pop("first_query_s")
            row.update(warm)
            row["warm_rounds"] = args.rounds
            row["p50_ms_rounds"] = [round(w["p50_ms"], 3) for w in warms[label]]
            row["add_and_query_s"] = row["add_s"] + row["query_after_add_s"]
            rows.append({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
            print(
                f"{label:>11} {n:>9,}: cold first query {row['first_query_s']:.2f} s, warm "
                f"{row['warm_first_query_s']:.2f} s, p50 {row['p50_ms']:.1f} ms (filtered "
                f"{row['filtered_p50_ms']:.1f}), add + next query {row['add_and_query_s']:.2f} s, "
                f"RSS {row['rss_queries_mb']:.0f} MB",
                flush=True,
            )
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [
        ("first_query_s", "cold: keyword index built + first query (s)"),
        ("warm_first_query_s", "warm: open + first query (s)"),
        ("add_and_query_s", f"add {ADD_ROWS:,} + the next query (s)"),
        ("p50_ms", "query p50 (ms)"),
        ("filtered_p50_ms", "filtered query p50 (ms)"),
        ("rss_queries_mb", "RSS after the queries, warm (MB)"),
        ("p95_ms", "query p95 (ms)"),
        ("cold_rss_peak_mb", "cold: peak RSS while building (MB)"),
        ("derived_mb", "keyword index on disk (MB)"),
    ]
    sizes = sorted({r["rows"] for r in rows})
    codes = list(dict.fromkeys(r["code"] for r in rows))
    fig, axes = plt.subplots(3, 3, figsize=(14, 11))
    width = 0.8 / len(codes)
    for ax, (key, title) in zip(axes.flat, panels):
        for j, code in enumerate(codes):
            vals = [
                next((r[key] for r in rows if r["rows"] == n and r["code"] == code), 0)
                for n in sizes
            ]
            xs = np.arange(len(sizes)) + (j - (len(codes) - 1) / 2) * width
            bars = ax.bar(xs, vals, width, label=code)
            ax.bar_label(
                bars, labels=[f"{v:,.3g}" if v < 1000 else f"{v:,.0f}" for v in vals], fontsize=8
            )
        ax.set_xticks(np.arange(len(sizes)), [f"{n:,} docs" for n in sizes])
        ax.set_title(title, fontsize=10)
        shown = [r[key] for r in rows if r.get(key)]
        if shown and max(shown) > 20 * min(shown):  # values decades apart: a log scale
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.margins(y=0.25)
        else:  # a linear scale from 0, so that bars' heights compare as their values do
            ax.set_ylim(0, 1.2 * max(shown, default=1))
    finish_figure(
        fig,
        axes.flat[0],
        "Keyword retrieval (k=10) over real texts, each phase a fresh process "
        "(LanceDB: its full-text search)",
        path,
        ncol=len(codes),
        top=0.945,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "kw-scale")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--rounds", type=int, default=3, help="warm processes per engine, in turn (medians)"
    )
    ap.add_argument("--baseline", type=Path, help="an older embedsearch checkout to compare")
    ap.add_argument("--baseline-label", default="before (whole-collection BM25)")
    ap.add_argument(
        "--peer-python", type=Path, help="a Python with lancedb: its full-text search beside"
    )
    ap.add_argument(
        "--out",
        default="keywords_at_scale",
        help="result name (benchmarks/results/NAME.json, .png)",
    )
    ap.add_argument("--engine", default="embedsearch", help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--phase", default="cold", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        if args.engine == "lancedb":
            res = lance_child(args.child, args.data, args.queries, args.phase, args.rows)
        else:
            res = child(args.child, args.data, args.queries, args.phase)
        print(json.dumps(res))
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
        "cold_rss_first_mb",
        "cold_rss_peak_mb",
        "rss_first_mb",
        "rss_queries_mb",
        "add_s",
        "add_and_query_s",
        "derived_mb",
    ]
    md = table(rows, cols)
    print(md)
    write_result(args.out, {"rows": rows, "markdown": md, "add_rows": ADD_ROWS})
    plot(rows, RESULTS / f"{args.out}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
