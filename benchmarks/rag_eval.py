"""RAG retrieval evaluation: dense / BM25 / hybrid (rrf, convex, dbsf) on three BEIR sets.

Protocol:
  1. Each corpus is indexed whole (``title text``) into a collection under ``--home``
     (default ``.cache/rag_eval``), built once and reused by later runs.
  2. Tuning on SciFact *train* only: BM25 ``k1``/``b``, the dense weight ``alpha`` of each
     fusion, and the Rocchio PRF settings, each by nDCG@10. The other sets are then
     evaluated with those settings untouched.
  3. Every reported row runs all judged queries through ``Collection.retrieve`` (the real
     pipeline, one query at a time, query-embedding cache cleared first) and is scored by
     ranx: nDCG@10, Recall@100, MRR@10; time per query includes embedding the query.

Writes ``benchmarks/results/rag_eval.json`` and prints a Markdown table.

Run: ``.venv/bin/python benchmarks/rag_eval.py`` (first run embeds ~9.7k documents: minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SETS = [("scifact", "train"), ("cranfield", "test"), ("nfcorpus-original", "test")]
ALPHAS = [round(0.05 * i, 2) for i in range(21)]
BM25_GRID = [(k1, b) for k1 in (0.9, 1.2, 1.5) for b in (0.4, 0.6, 0.75, 0.9)]
PRF_GRID = [(d, beta) for d in (3, 5, 10) for beta in (0.25, 0.5, 1.0)]
DEPTH = 100


def candidates(col: Any, ds: Any, bm25_index: Any) -> tuple[dict, dict]:
    """Per query: dense top-DEPTH and BM25 top-DEPTH (id, score) lists (what fusion sees)."""
    qids = list(ds.queries)
    hits = col.batch_search([ds.queries[q] for q in qids], k=DEPTH)
    dense = {q: [(h.id, h.score) for h in hs] for q, hs in zip(qids, hits)}
    keyword = {q: bm25_index.search(ds.queries[q], DEPTH) for q in qids}
    return dense, keyword


def as_run(lists: dict[str, list[tuple[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        q: {d: float(DEPTH - r) for r, (d, _) in enumerate(ls[:DEPTH])} for q, ls in lists.items()
    }


def tune(col: Any, ds: Any, log: Any) -> dict[str, Any]:
    """Choose BM25 k1/b, per-fusion alpha and PRF settings on this (SciFact train) set."""
    from embedsearch.evaluation import score_run
    from embedsearch.rag.bm25 import BM25Config, BM25Store
    from embedsearch.rag.fusion import FUSIONS, fuse
    from embedsearch.rag.prf import rocchio

    bm25_scores = {}
    for k1, b in BM25_GRID:  # k1 and b only score: every store reads the same postings
        idx = BM25Store(col, replace(BM25Config(), k1=k1, b=b))
        run = as_run({q: idx.search(t, DEPTH) for q, t in ds.queries.items()})
        bm25_scores[(k1, b)] = score_run(run, ds.qrels)["ndcg@10"]
    k1, b = max(bm25_scores, key=bm25_scores.get)
    log("BM25 k1/b grid (nDCG@10): " + ", ".join(f"{k}:{v:.4f}" for k, v in bm25_scores.items()))
    idx = BM25Store(col, replace(BM25Config(), k1=k1, b=b))
    dense, keyword = candidates(col, ds, idx)
    alpha_scores: dict[str, dict[float, float]] = {}
    for fusion in FUSIONS:
        alpha_scores[fusion] = {}
        for a in ALPHAS:
            fused = {q: fuse(fusion, dense[q], keyword[q], a) for q in ds.queries}
            alpha_scores[fusion][a] = score_run(as_run(fused), ds.qrels)["ndcg@10"]
        best = max(alpha_scores[fusion], key=alpha_scores[fusion].get)
        log(f"{fusion}: best alpha {best} nDCG@10 {alpha_scores[fusion][best]:.4f}")
    alphas = {f: max(s, key=s.get) for f, s in alpha_scores.items()}
    best_fusion = max(FUSIONS, key=lambda f: alpha_scores[f][alphas[f]])
    # PRF: Rocchio on the dense side, feedback from the dense top passages
    qids = list(ds.queries)
    qvecs = col.embed([ds.queries[q] for q in qids])
    prf_scores = {}
    for docs, beta in PRF_GRID:
        moved = []
        for qi, q in enumerate(qids):
            top = [d for d, _ in dense[q][:docs]]
            moved.append(rocchio(qvecs[qi], col.vectors(top), beta) if top else qvecs[qi])
        hits = col.batch_search(moved, k=DEPTH)
        run = {q: [(h.id, h.score) for h in hs] for q, hs in zip(qids, hits)}
        prf_scores[(docs, beta)] = score_run(as_run(run), ds.qrels)["ndcg@10"]
    prf = max(prf_scores, key=prf_scores.get)
    log("PRF grid (dense nDCG@10): " + ", ".join(f"{k}:{v:.4f}" for k, v in prf_scores.items()))
    return {
        "bm25": {"k1": k1, "b": b, "grid": {f"{k[0]}/{k[1]}": v for k, v in bm25_scores.items()}},
        "alpha": alphas,
        "alpha_grid": {f: {str(a): v for a, v in s.items()} for f, s in alpha_scores.items()},
        "best_fusion_on_train": best_fusion,
        "prf": {"docs": prf[0], "beta": prf[1]},
        "prf_grid": {f"{k[0]}/{k[1]}": v for k, v in prf_scores.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "beir"))
    ap.add_argument("--home", default=str(ROOT / ".cache" / "rag_eval"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rag_eval.json"))
    ap.add_argument("--sets", default=",".join(f"{n}:{s}" for n, s in SETS))
    ap.add_argument("--no-tune", action="store_true", help="use the code defaults as they are")
    ap.add_argument("--limit", type=int, help="only the first N queries per set (smoke test)")
    ap.add_argument(
        "--timing-sample",
        type=int,
        default=100,
        help="time the first N queries of each set cold (metrics use all queries; default 100)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch/BLAS threads (default 1: on a shared 2-core machine two spinning OpenMP "
        "threads made one query embedding 12x slower than one thread)",
    )
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import torch  # before faiss (OpenMP order, see FINDINGS.md)

    torch.set_num_threads(args.threads)

    import embedsearch
    from embedsearch.evaluation import build_collection, evaluate_mode, load_beir, markdown_table
    from embedsearch.rag import retrieval
    from embedsearch.rag.bm25 import BM25Config
    from embedsearch.rag.fusion import FUSIONS

    t_start = time.perf_counter()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    sets = [tuple(s.split(":")) for s in args.sets.split(",")]
    loaded = {}
    for name, split in sets:
        ds = load_beir(Path(args.data) / name, split)
        if args.limit:
            keep = list(ds.queries)[: args.limit]
            ds.queries = {q: ds.queries[q] for q in keep}
            ds.qrels = {q: ds.qrels[q] for q in keep}
        t0 = time.perf_counter()
        col = build_collection(ds, Path(args.home) / f"beir-{name}", progress=True)
        log(
            f"{name}: {len(col)} docs, {len(ds.queries)} queries, ready in {time.perf_counter() - t0:.1f} s"
        )
        loaded[name] = (ds, col)

    defaults = {
        "bm25": {"k1": BM25Config().k1, "b": BM25Config().b},
        "alpha": dict(retrieval.DEFAULT_ALPHA),
        "default_fusion": retrieval.DEFAULT_FUSION,
    }
    tuning = None
    if not args.no_tune and "scifact" in loaded:
        tuning = tune(loaded["scifact"][1], loaded["scifact"][0], log)
        log(
            f"tuned on SciFact train: {json.dumps({k: tuning[k] for k in ('bm25', 'alpha', 'prf')})}"
        )
    alpha = tuning["alpha"] if tuning else defaults["alpha"]
    prf = tuning["prf"] if tuning else {"docs": 3, "beta": 0.5}
    if tuning and (tuning["bm25"]["k1"], tuning["bm25"]["b"]) != (BM25Config().k1, BM25Config().b):
        log("note: tuned BM25 k1/b differ from the code defaults; the table uses the tuned values")

    results = []
    for name, (ds, col) in loaded.items():
        if tuning:  # the keyword side with the tuned k1/b
            from embedsearch.rag.bm25 import BM25Store

            col._rag_bm25 = BM25Store(  # the store RetrievalMixin declares
                col, replace(BM25Config(), k1=tuning["bm25"]["k1"], b=tuning["bm25"]["b"])
            )
        n = args.timing_sample
        rows = [
            evaluate_mode(col, ds, "dense", timing_sample=n),
            evaluate_mode(col, ds, "bm25", timing_sample=n),
        ]
        for fusion in FUSIONS:
            rows.append(
                evaluate_mode(
                    col, ds, "hybrid", fusion=fusion, alpha=alpha[fusion], timing_sample=n
                )
            )
        rows.append(evaluate_mode(col, ds, "dense", prf=prf, timing_sample=n))
        best = tuning["best_fusion_on_train"] if tuning else defaults["default_fusion"]
        rows.append(
            evaluate_mode(
                col, ds, "hybrid", fusion=best, alpha=alpha[best], prf=prf, timing_sample=n
            )
        )
        for r in rows:
            log(
                f"{name} {r.mode} {r.fusion or ''} {r.settings} -> "
                f"{ {k: round(v, 4) for k, v in r.metrics.items()} } {r.ms_per_query:.1f} ms"
            )
        results.extend(rows)

    out = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_avg_at_end": os.getloadavg(),
            "threads": args.threads,
            "note": "shared 2-core machine; other jobs ran at the same time, so ms/query is noisy",
        },
        "model": loaded[next(iter(loaded))][1].model,
        "candidates_per_side": DEPTH,
        "code_defaults": defaults,
        "tuning_on_scifact_train": tuning,
        "results": [r.to_dict() for r in results],
        "seconds": round(time.perf_counter() - t_start, 1),
        "embedsearch": embedsearch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(markdown_table(results))
    print(f"\nwrote {args.out} in {out['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
