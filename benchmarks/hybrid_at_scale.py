"""Retrieval at scale with its quality: judged questions over a million passages.

Issue 19 asks for millions of documents on one machine; a RAG user's questions go through
``retrieve`` (dense, keyword or hybrid), and what matters is both how fast the answer comes
and whether it is still the right one among a million rows. This benchmark asks the BEIR
questions whose answers are judged (SciFact train, Cranfield test, NFCorpus test) of a
collection that holds their corpora once among up to a million other passages, in
embedsearch and in LanceDB, from the same texts and vectors:

* **rows**: every real text of ``../shared/data`` once (~49k: news headlines, AG News, and
  the three BEIR corpora as ``title. text``, ids ``<corpus>:<doc id>``) with its real
  embedding (``vectors.real_embeddings``); then, to ``n`` rows, *news distractors*: the
  headline and AG News texts again, each with a new perturbed copy of its vector
  (``vectors.perturb``, ids ``x<i>``). Metadata ``{"cat": i % 1000}``. A judged document is
  stored once, so the judgements still hold among ``n`` rows; a size at or below the real
  count stores the real texts alone (the baseline without distractors).
* **build** (a fresh process): embedsearch ``open`` with its ``auto`` index, ``add`` in
  50k batches with the vectors, then ``prepare_keywords()`` (its keyword index); LanceDB a
  table of the same columns, its default vector index (IVF_PQ, cosine), its full-text
  index on ``text`` and a scalar index on ``cat``. Then the first hybrid question.
* **warm** (``--rounds`` fresh processes per engine, in turn): open + the first hybrid
  question; then every judged question in each mode, ``k=10``: ``dense``, ``bm25`` and
  ``hybrid`` (each engine's default fusion: embedsearch convex over 100 candidates a side,
  LanceDB RRF), and ``--filtered`` hybrid questions with ``cat = 7`` (0.1 % of rows). Each
  question is embedded in the timed call (the same encoder for both engines, its query
  cache cleared first: a user's new question), so a row's time is what a user waits.

Reported per engine and size: build, the first question, p50/p95 per mode, RSS, and
nDCG@10 / Recall@10 per corpus and mode (scored here from the returned ids with ranx).
embedsearch's hybrid defaults were tuned on SciFact train (``docs/rag.md``); Cranfield and
NFCorpus are untouched by that tuning.

Usage::

    python benchmarks/hybrid_at_scale.py [--sizes 0 1000000] [--peer-python PY] [--rounds 3]

Results: ``benchmarks/results/hybrid_at_scale.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    DEFAULT_DATA,
    RESULTS,
    ROOT,
    dir_bytes,
    finish_figure,
    peak_rss_mb,
    read_jsonl,
    rss_mb,
    table,
    write_result,
)

K = 10
BATCH = 50_000
MODES = ("dense", "bm25", "hybrid")
#: The judged sets asked (their corpora are among the stored rows), and their split.
SETS = (("scifact", "train"), ("cranfield", "test"), ("nfcorpus-original", "test"))
NEWS = ("news_headlines", "ag_news")
#: The BEIR corpora in ``vectors.corpus_texts``'s order.
BEIR_CORPORA = ("scifact", "cranfield", "nfcorpus-original")
FILTER_CAT = 7


def real_rows(data: Path) -> tuple[list[str], list[str], list[str]]:
    """``(ids, texts, sources)`` of every real text, in ``vectors.corpus_texts``'s order (the
    order of the cached real embeddings)."""
    from vectors import corpus_texts

    texts, sources = corpus_texts(data)
    ids = [f"h{i}" for i in range(sum(s == "news_headlines" for s in sources))]
    ids += [f"ag{i}" for i in range(sum(s == "ag_news" for s in sources))]
    for name in BEIR_CORPORA:
        ids += [f"{name}:{r['_id']}" for r in read_jsonl(data / "beir" / name / "corpus.jsonl")]
    if len(ids) != len(texts):
        raise SystemExit(f"{len(ids)} ids for {len(texts)} texts: the corpora changed")
    return ids, texts, sources


def batches(data: Path, n: int) -> Iterator[tuple[list[str], list[str], list[int], np.ndarray]]:
    """The rows ``0..n`` in batches of :data:`BATCH`: ``(ids, texts, cats, vectors)``, the
    same for every engine (each batch's noise seeded by its start)."""
    from vectors import BASE_BACKEND, DEFAULT_SIGMA, perturb, real_embeddings

    ids, texts, sources = real_rows(data)
    real = real_embeddings(data, backend=BASE_BACKEND, verbose=False)
    news = np.flatnonzero(np.isin(np.array(sources), NEWS))
    total = max(n, len(ids))
    for lo in range(0, total, BATCH):
        hi = min(total, lo + BATCH)
        rows = np.arange(lo, hi)
        src = np.where(rows < len(ids), rows, news[(rows - len(ids)) % len(news)])
        vecs = real[src].astype(np.float32)
        copies = rows >= len(ids)
        if copies.any():
            rng = np.random.default_rng((7, lo))
            vecs[copies] = perturb(vecs[copies], DEFAULT_SIGMA, rng)
        out_ids = [ids[r] if r < len(ids) else f"x{r}" for r in rows.tolist()]
        yield out_ids, [texts[s] for s in src.tolist()], (rows % 1000).tolist(), vecs


def questions(data: Path, limit: int | None) -> list[tuple[str, str, str]]:
    """``(set, query id, text)`` of every judged question of :data:`SETS` (the first
    ``limit`` of each set if given)."""
    out: list[tuple[str, str, str]] = []
    for name, split in SETS:
        judged = _qrels(data, name, split)
        text = {r["_id"]: r["text"] for r in read_jsonl(data / "beir" / name / "queries.jsonl")}
        asked = [q for q in text if q in judged][:limit]
        out += [(name, q, text[q]) for q in asked]
    return out


def _qrels(data: Path, name: str, split: str) -> dict[str, dict[str, int]]:
    """Judgements of one set, documents named as stored (``<set>:<doc id>``)."""
    out: dict[str, dict[str, int]] = {}
    lines = (data / "beir" / name / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]
    for line in lines:
        q, doc, score = line.split("\t")[:3]
        if int(score) > 0:
            out.setdefault(q, {})[f"{name}:{doc}"] = int(score)
    return out


class _Engine:
    """One engine's phases in a child process: ``build``, ``open``, ``ask``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        from embedsearch.encoder import get_encoder

        self.encoder = get_encoder()  # the same model and backend for both engines

    def ask(self, mode: str, text: str, where: int | None = None) -> list[str]:
        raise NotImplementedError


class _EmbedSearch(_Engine):
    def build(self, data: Path, n: int) -> None:
        import embedsearch

        col = embedsearch.open(self.path)
        for ids, texts, cats, vecs in batches(data, n):
            col.add(
                texts, ids=ids, metadata=[{"cat": c} for c in cats], vectors=vecs, progress=False
            )
            print(f"  built {len(col):,} rows", file=sys.stderr, flush=True)
        col.prepare_keywords()  # as LanceDB's build makes its full-text index
        col.close()

    def open(self) -> None:
        import embedsearch

        self.col = embedsearch.open(self.path)
        self.encoder = self.col.encoder

    def ask(self, mode: str, text: str, where: int | None = None) -> list[str]:
        w = None if where is None else {"cat": where}
        return [p.id for p in self.col.retrieve(text, k=K, mode=mode, where=w)]


class _Lance(_Engine):
    def build(self, data: Path, n: int) -> None:
        import lancedb
        import pyarrow as pa

        def rows(ids: list[str], texts: list[str], cats: list[int], vecs: np.ndarray) -> Any:
            flat = pa.array(vecs.ravel())
            return pa.table(
                {
                    "id": pa.array(ids),
                    "text": pa.array(texts),
                    "cat": pa.array(cats, pa.int64()),
                    "vector": pa.FixedSizeListArray.from_arrays(flat, vecs.shape[1]),
                }
            )

        db = lancedb.connect(str(self.path))
        tbl = None
        for batch in batches(data, n):
            if tbl is None:
                tbl = db.create_table("docs", rows(*batch))
            else:
                tbl.add(rows(*batch))
            print(f"  built {tbl.count_rows():,} rows", file=sys.stderr, flush=True)
        assert tbl is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tbl.create_index(metric="cosine", vector_column_name="vector")  # default IVF_PQ
            tbl.create_fts_index("text")
            tbl.create_scalar_index("cat")

    def open(self) -> None:
        import lancedb

        self.tbl = lancedb.connect(str(self.path)).open_table("docs")

    def ask(self, mode: str, text: str, where: int | None = None) -> list[str]:
        if mode == "bm25":
            s = self.tbl.search(text, query_type="fts")
        else:
            vec = self.encoder.encode_query(text)
            if mode == "dense":
                s = self.tbl.search(vec, vector_column_name="vector").distance_type("cosine")
            else:
                s = self.tbl.search(query_type="hybrid").vector(vec).text(text)
        if where is not None:
            s = s.where(f"cat = {where}", prefilter=True)
        # the text too: retrieve() hands back each passage's text and metadata
        return [r["id"] for r in s.limit(K).select(["id", "text", "cat"]).to_list()]


ENGINES = {"embedsearch": _EmbedSearch, "lancedb": _Lance}


def child(engine: str, path: Path, phase: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """One fresh process's phase (see the module's docstring)."""
    import logging

    logging.disable(logging.WARNING)
    os.environ.setdefault("RUST_LOG", "error")  # LanceDB's deprecation chatter
    eng = ENGINES[engine](path)
    asked = questions(args.data, args.questions)
    out: dict[str, Any] = {}
    if phase == "build":
        t = time.perf_counter()
        eng.build(args.data, n)
        out["build_s"] = time.perf_counter() - t
    t = time.perf_counter()
    eng.open()
    eng.encoder.clear_query_cache()
    eng.ask("hybrid", asked[0][2])
    out["first_query_s"] = time.perf_counter() - t
    out["rss_first_mb"] = rss_mb()
    if phase == "build":
        out["rss_peak_mb"] = peak_rss_mb()
        out["disk_mb"] = dir_bytes(path) / 1e6
        return out
    runs: dict[str, dict[str, list[str]]] = {}
    for mode in MODES:
        times, runs[mode] = [], {}
        for name, qid, text in asked:
            eng.encoder.clear_query_cache()
            t = time.perf_counter()
            runs[mode][f"{name}/{qid}"] = eng.ask(mode, text)
            times.append(time.perf_counter() - t)
        out[f"{mode}_p50_ms"] = float(np.percentile(times, 50) * 1000)
        out[f"{mode}_p95_ms"] = float(np.percentile(times, 95) * 1000)
        for name, _ in SETS:  # NFCorpus's questions include whole articles (35k words)
            mine = [t for t, (s, _, _) in zip(times, asked) if s == name]
            out[f"{mode}_{name}_p50_ms"] = float(np.percentile(mine, 50) * 1000)
            out[f"{mode}_{name}_p95_ms"] = float(np.percentile(mine, 95) * 1000)
    times = []
    for _, _, text in asked[: args.filtered]:
        eng.encoder.clear_query_cache()
        t = time.perf_counter()
        eng.ask("hybrid", text, FILTER_CAT)
        times.append(time.perf_counter() - t)
    out["filtered_hybrid_p50_ms"] = float(np.percentile(times, 50) * 1000)
    out["rss_queries_mb"] = rss_mb()
    out["runs"] = runs
    return out


def run_child(engine: str, path: Path, phase: str, n: int, args: argparse.Namespace) -> dict:
    python = sys.executable if engine == "embedsearch" else str(args.peer_python)
    cmd = [python, __file__, "--child", str(path), "--engine", engine, "--phase", phase]
    cmd += ["--rows", str(n), "--data", str(args.data), "--filtered", str(args.filtered)]
    if args.questions:
        cmd += ["--questions", str(args.questions)]
    # embedsearch from this checkout (LanceDB's process imports it for the encoder alone)
    env = {**os.environ, "PYTHONPATH": str(ROOT)} if engine == "embedsearch" else None
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise SystemExit(f"{engine} {phase} at {n:,} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def quality(runs: dict[str, dict[str, list[str]]], data: Path) -> dict[str, float]:
    """nDCG@10 and Recall@10 per set and mode of one warm process's answers."""
    from embedsearch.evaluation import score_run

    out: dict[str, float] = {}
    for name, split in SETS:
        qrels = _qrels(data, name, split)
        for mode, ranked in runs.items():
            run = {
                key.split("/", 1)[1]: {doc: float(K - i) for i, doc in enumerate(docs)}
                for key, docs in ranked.items()
                if key.startswith(f"{name}/")
            }
            asked = {q: qrels[q] for q in run}
            got = score_run(run, asked, ["ndcg@10", "recall@10"])
            out[f"{name}_{mode}_ndcg10"] = got["ndcg@10"]
            out[f"{name}_{mode}_recall10"] = got["recall@10"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[0, 1_000_000])
    ap.add_argument("--root", type=Path, default=Path("/tmp/hybrid-scale"))
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--rounds", type=int, default=3, help="warm processes per engine, in turn")
    ap.add_argument("--questions", type=int, help="at most this many judged questions a set")
    ap.add_argument("--filtered", type=int, default=200, help="filtered hybrid questions")
    ap.add_argument("--peer-python", type=Path, help="a Python with lancedb (and embedsearch)")
    ap.add_argument("--out", default="hybrid_at_scale", help="benchmarks/results/NAME.json")
    ap.add_argument("--replot", action="store_true", help="redraw the PNG from the JSON")
    ap.add_argument("--engine", default="embedsearch", help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--phase", default="warm", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.engine, args.child, args.phase, args.rows, args)))
        return 0
    if args.replot:
        plot(
            json.loads((RESULTS / f"{args.out}.json").read_text())["rows"],
            RESULTS / f"{args.out}.png",
        )
        return 0
    engines = ["embedsearch"] + (["lancedb"] if args.peer_python else [])
    n_real = len(real_rows(args.data)[0])
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        n = max(size, n_real)
        built = {}
        for engine in engines:
            path = args.root / f"{engine}-{n}"
            shutil.rmtree(path, ignore_errors=True)
            print(f"{engine}: building {n:,} rows at {path}", flush=True)
            built[engine] = run_child(engine, path, "build", n, args)
        warms: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
        for _ in range(args.rounds):  # engines in turn: a drift of the machine hits both
            for engine in engines:
                warms[engine].append(
                    run_child(engine, args.root / f"{engine}-{n}", "warm", n, args)
                )
        for engine in engines:
            row: dict[str, Any] = {"engine": engine, "rows": n}
            row.update(
                {f"cold_{k}" if k.startswith("first") else k: v for k, v in built[engine].items()}
            )
            numbers = [{k: v for k, v in w.items() if k != "runs"} for w in warms[engine]]
            row.update({k: statistics.median(w[k] for w in numbers) for k in numbers[0]})
            row["hybrid_p50_ms_rounds"] = [round(w["hybrid_p50_ms"], 2) for w in numbers]
            # the answers are the same in every round; the first round's are scored
            row.update(quality(warms[engine][0]["runs"], args.data))
            row["questions"] = len(warms[engine][0]["runs"]["hybrid"])
            rows.append({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
            print(json.dumps(rows[-1]), flush=True)
    cols = ["engine", "rows", "build_s", "cold_first_query_s", "first_query_s"]
    cols += [f"{m}_p50_ms" for m in MODES] + ["hybrid_p95_ms", "filtered_hybrid_p50_ms"]
    cols += ["rss_queries_mb", "disk_mb"]
    cols += [f"{s}_{m}_ndcg10" for s, _ in SETS for m in MODES]
    md = table(rows, cols)
    print(md)
    write_result(args.out, {"rows": rows, "markdown": md, "sets": [list(s) for s in SETS]})
    plot(rows, RESULTS / f"{args.out}.png")
    return 0


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Quality per set and mode at each size (top), the time per mode (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [(r["engine"], r["rows"]) for r in rows]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    width = 0.8 / len(series)
    colours = plt.get_cmap("tab20").colors
    for ax, (name, _) in zip(axes[0], SETS):
        for j, (engine, n) in enumerate(series):
            r = next(x for x in rows if (x["engine"], x["rows"]) == (engine, n))
            vals = [r[f"{name}_{m}_ndcg10"] for m in MODES]
            xs = np.arange(len(MODES)) + (j - (len(series) - 1) / 2) * width
            bars = ax.bar(xs, vals, width, label=f"{engine}, {n:,} rows", color=colours[j])
            ax.bar_label(
                bars, labels=[f"{v:.3f}" for v in vals], fontsize=7, rotation=90, padding=2
            )
        ax.set_xticks(np.arange(len(MODES)), MODES)
        ax.set_ylim(0, 1.25 * max(r[f"{name}_{m}_ndcg10"] for r in rows for m in MODES))
        ax.set_title(f"{name}: nDCG@10", fontsize=10)
    panels = [
        ([f"{m}_p50_ms" for m in MODES], MODES, "p50 per question (ms, embedding included)"),
        (
            ["hybrid_p95_ms", "filtered_hybrid_p50_ms"],
            ("hybrid p95", "filtered p50 (cat = 7)"),
            "hybrid (ms); p95: NFCorpus's whole-article questions",
        ),
        (
            ["first_query_s", "cold_first_query_s"],
            ("fresh process", "right after the build"),
            "open + first hybrid question (s); both engines\n"
            "build their keyword index in the build",
        ),
    ]
    for ax, (keys, labels, title) in zip(axes[1], panels):
        for j, (engine, n) in enumerate(series):
            r = next(x for x in rows if (x["engine"], x["rows"]) == (engine, n))
            vals = [r[k] for k in keys]
            xs = np.arange(len(keys)) + (j - (len(series) - 1) / 2) * width
            bars = ax.bar(xs, vals, width, color=colours[j])
            ax.bar_label(
                bars, labels=[f"{v:.3g}" for v in vals], fontsize=7, rotation=90, padding=2
            )
        ax.set_xticks(np.arange(len(keys)), labels)
        ax.set_ylim(0, 1.3 * max(r[k] for r in rows for k in keys))
        ax.set_title(title, fontsize=10)
    finish_figure(
        fig,
        axes[0][0],
        "Judged questions (k=10) among news distractors: the BEIR corpora stored once, "
        "each phase a fresh process",
        path,
        ncol=len(series),
        top=0.93,
    )


if __name__ == "__main__":
    raise SystemExit(main())
