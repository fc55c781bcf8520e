"""Spilled IVF lists (SOAR) for the 1M compass: a prototype measured before the index uses it.

Issue 19's compass asks for >= 200x the exact single-query rate at recall@10 >= 0.95 with
<= 0.5 KB/vector. With ``IVF2048,PQ96x4fs`` + re-ranking 256 rows, the coarse partition sets
the recall per probe (docs/benchmarks.md): a true neighbour in a cell next to the query's
nearest cells is found only by probing many cells. SOAR (Sun et al., "SOAR: Improved
Indexing for Approximate Nearest Neighbor Search", NeurIPS 2023; ScaNN) stores each vector
in a second list as well, chosen so that its residual there is nearly orthogonal to its
residual in the first: the query scores that the first list misjudges most are the ones the
second list gets right. Secondary cell ``c'`` minimises, over the ``--candidates`` cells
nearest to ``x`` other than its own ``c``::

    ||x - c'||^2 + lambda * <r, x - c'>^2 / ||r||^2,   r = x - c

This script builds, on the same coarse centroids and PQ codebooks (4-bit fast-scan codes of
the raw vectors, as embedsearch's fast-scan indexes), the plain index and spilled ones (every
vector spilled, or only the ``--share`` of vectors nearest a cell boundary), then times one
query at a time: FAISS's shortlist, duplicates dropped, re-ranked exactly from the
memory-mapped float32 vectors (as a collection does), with 1 and 2 threads, beside exact
search with the same threads. FAISS's fast-scan index has no way to add a vector to a list
of our choosing (``add_core`` corrupts its block lists), so lists are filled in a plain
``IndexIVFPQ`` (same 4-bit codes) and converted (``IndexIVFPQFastScan(ivfpq)``).

Usage::

    python benchmarks/soar_spill.py [--n 1000000] [--lam 1 2] [--share 1.0 0.5]

Writes ``benchmarks/results/soar_spill.json`` and ``soar_spill.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _common import RESULTS, table, write_result  # noqa: E402
from index_curves import ground_truth  # noqa: E402
from vectors import DEFAULT_SIGMA, vector_set  # noqa: E402

from embedsearch.spill import secondary_cells  # noqa: E402

K = 10
PQ_M = 96


def nearest_cells(faiss: Any, centroids: np.ndarray, base: np.ndarray, k: int) -> tuple:
    """(similarities, cells) of each row's ``k`` nearest centroids, by blocks."""
    quant = faiss.IndexFlatIP(centroids.shape[1])
    quant.add(centroids)
    sims = np.empty((base.shape[0], k), np.float32)
    cells = np.empty((base.shape[0], k), np.int64)
    for lo in range(0, base.shape[0], 50_000):
        block = np.ascontiguousarray(base[lo : lo + 50_000], dtype=np.float32)
        sims[lo : lo + 50_000], cells[lo : lo + 50_000] = quant.search(block, k)
    return sims, cells


def build(faiss: Any, trained: Any, base: np.ndarray, lists: list[tuple[np.ndarray, np.ndarray]]):
    """A fast-scan index holding rows ``ids`` in ``cells`` for each (ids, cells) given."""
    ivf = faiss.clone_index(trained)
    for ids, cells in lists:
        for lo in range(0, ids.size, 100_000):
            part = ids[lo : lo + 100_000]
            x = np.ascontiguousarray(base[part], dtype=np.float32)
            ivf.add_core(
                part.size,
                faiss.swig_ptr(x),
                faiss.swig_ptr(np.ascontiguousarray(part)),
                faiss.swig_ptr(np.ascontiguousarray(cells[lo : lo + 100_000])),
            )
    return faiss.IndexIVFPQFastScan(ivf), ivf


def time_queries(
    index: Any, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, nprobe: int, short: int
) -> dict[str, float]:
    """One query at a time: shortlist, duplicates dropped, exact re-rank from ``base``."""
    index.nprobe = nprobe
    faiss_ms, whole_ms, found, unique = [], [], 0, 0
    for q, want in zip(queries, truth):
        t0 = time.perf_counter()
        _, pos = index.search(q[None], short)
        t1 = time.perf_counter()
        pos = np.unique(pos[0][pos[0] >= 0])
        scores = np.asarray(base[pos]) @ q
        top = pos[np.argpartition(-scores, min(K, pos.size) - 1)[:K]]
        whole_ms.append(1e3 * (time.perf_counter() - t0))
        faiss_ms.append(1e3 * (t1 - t0))
        found += len(set(top.tolist()) & set(want.tolist()))
        unique += pos.size
    return {
        "recall_at_10": found / (K * len(queries)),
        "faiss_ms": float(np.median(faiss_ms)),
        "whole_ms": float(np.median(whole_ms)),
        "unique_shortlist": unique / len(queries),
    }


def exact_ms(base_ram: np.ndarray, queries: np.ndarray) -> float:
    ts = []
    for q in queries:
        t0 = time.perf_counter()
        s = base_ram @ q
        np.argpartition(-s, K - 1)[:K]
        ts.append(1e3 * (time.perf_counter() - t0))
    return float(np.median(ts))


def plot(points: list[dict[str, Any]], exact: dict[int, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    threads = sorted({p["threads"] for p in points})
    fig, axes = plt.subplots(1, len(threads), figsize=(6.5 * len(threads), 4.8), squeeze=False)
    names = list(dict.fromkeys(p["index"] for p in points))
    for ax, t in zip(axes[0], threads):
        for j, name in enumerate(names):
            for short, ls in ((256, "-"), (128, ":")):
                pts = sorted(
                    (
                        p
                        for p in points
                        if p["threads"] == t and p["index"] == name and p["rerank"] == short
                    ),
                    key=lambda p: p["nprobe"],
                )
                if not pts:
                    continue
                x = [exact[t] / p["whole_ms"] for p in pts]
                y = [p["recall_at_10"] for p in pts]
                ax.plot(x, y, ls, marker="o", ms=3, color=f"C{j}", label=f"{name}, re-rank {short}")
                for p, xi, yi in zip(pts, x, y):
                    ax.annotate(
                        str(p["nprobe"]),
                        (xi, yi),
                        fontsize=6,
                        xytext=(2, 2),
                        textcoords="offset points",
                    )
        ax.axhline(0.95, color="grey", lw=0.8, ls="--")
        ax.axvline(200, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xticks([100, 150, 200, 300, 400, 600])
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.0f}×"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(
            f"× exact single-query rate ({t} thread{'s' if t > 1 else ''}; exact {exact[t]:.0f} ms)"
        )
        ax.set_ylabel("recall@10")
        ax.set_ylim(0.85, 1.0)
        ax.grid(alpha=0.3, which="both")
        ax.set_title(f"{t} thread{'s' if t > 1 else ''}: whole query (labels: nprobe)", fontsize=10)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("IVF2048,PQ96x4fs at 1M: plain lists against spilled (SOAR) lists", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--nlist", type=int, default=2048)
    ap.add_argument("--lam", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--share", type=float, nargs="+", default=[1.0, 0.5])
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    from threadpoolctl import threadpool_limits

    from embedsearch.index import faiss as load_faiss
    from embedsearch.index import spherical_kmeans

    faiss = load_faiss()
    base, queries = vector_set(args.n, mmap=True)
    name = f"set-n{args.n}-q1000-s{DEFAULT_SIGMA:g}-seed7"
    truth = ground_truth(base, queries, name)[: args.queries]
    queries = np.ascontiguousarray(queries[: args.queries], dtype=np.float32)
    n, dim = base.shape
    rng = np.random.default_rng(0)
    sample = np.asarray(base[np.sort(rng.choice(n, min(n, 40 * args.nlist), replace=False))])
    t0 = time.perf_counter()
    centroids = spherical_kmeans(sample, args.nlist, 10).astype(np.float32)
    trained = faiss.IndexIVFPQ(
        faiss.IndexFlatIP(dim), dim, args.nlist, PQ_M, 4, faiss.METRIC_INNER_PRODUCT
    )
    trained.by_residual = False
    trained.quantizer.add(centroids)
    trained.train(sample[:65_536])
    sims, cells = nearest_cells(faiss, centroids, base, args.candidates)
    t_train = time.perf_counter() - t0
    ids = np.arange(n, dtype=np.int64)
    primary = np.ascontiguousarray(cells[:, 0])
    indexes: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    fs, _keep = build(faiss, trained, base, [(ids, primary)])
    indexes["plain"] = {
        "index": fs,
        "keep": _keep,
        "entries": n,
        "build_s": time.perf_counter() - t0,
    }
    for lam in args.lam:
        t0 = time.perf_counter()
        second = secondary_cells(base, centroids, sims, cells, lam)
        gap = sims[:, 0] - sims[:, 1]  # small: near a cell border, where spilling helps most
        t_soar = time.perf_counter() - t0
        for share in args.share:
            t0 = time.perf_counter()
            spilled = (
                ids if share >= 1 else np.sort(np.argsort(gap, kind="stable")[: int(share * n)])
            )
            fs, _keep = build(faiss, trained, base, [(ids, primary), (spilled, second[spilled])])
            label = f"SOAR λ={lam:g}, {share:.0%} spilled"
            indexes[label] = {
                "index": fs,
                "keep": _keep,
                "entries": n + spilled.size,
                "build_s": time.perf_counter() - t0,
                "soar_s": t_soar,
            }
    base_ram = np.asarray(base)
    exact: dict[int, float] = {}
    points: list[dict[str, Any]] = []
    probes = {"plain": (32, 48, 64, 96)}
    for t in args.threads:
        with threadpool_limits(limits=t):
            exact[t] = exact_ms(base_ram, queries[:40])
            configs = [
                (label, p, s)
                for label in indexes
                for p in probes.get(label, (8, 12, 16, 24))
                for s in (128, 256)
            ]
            runs: dict[tuple, list[dict[str, float]]] = {c: [] for c in configs}
            for r in range(args.rounds):
                for c in configs if r % 2 == 0 else configs[::-1]:
                    runs[c].append(
                        time_queries(indexes[c[0]]["index"], base, queries, truth, c[1], c[2])
                    )
            for (label, p, s), rs in runs.items():
                point = {
                    "threads": t,
                    "index": label,
                    "nprobe": p,
                    "rerank": s,
                    "recall_at_10": rs[0]["recall_at_10"],
                    "unique_shortlist": rs[0]["unique_shortlist"],
                    "faiss_ms": float(np.median([x["faiss_ms"] for x in rs])),
                    "whole_ms": float(np.median([x["whole_ms"] for x in rs])),
                }
                point["x_exact"] = exact[t] / point["whole_ms"]
                # codes (PQ_M / 2 bytes) + id (8 bytes) per list entry, per vector
                point["bytes_per_vector"] = indexes[label]["entries"] * (PQ_M // 2 + 8) / n
                points.append(point)
    del base_ram
    rows = sorted(points, key=lambda p: (p["threads"], p["index"], p["rerank"], p["nprobe"]))
    print(
        table(
            rows,
            [
                "threads",
                "index",
                "nprobe",
                "rerank",
                "recall_at_10",
                "faiss_ms",
                "whole_ms",
                "x_exact",
                "bytes_per_vector",
            ],
        )
    )
    print("exact single query ms:", exact)
    out = write_result(
        "soar_spill",
        {
            "n": n,
            "nlist": args.nlist,
            "pq": f"PQ{PQ_M}x4fs",
            "candidates": args.candidates,
            "queries": args.queries,
            "rounds": args.rounds,
            "train_s": t_train,
            "builds": {
                k: {kk: v for kk, v in d.items() if kk not in ("index", "keep")}
                for k, d in indexes.items()
            },
            "exact_ms": exact,
            "points": points,
        },
    )
    plot(points, exact, RESULTS / "soar_spill.png")
    print(f"wrote {out} and soar_spill.png")


if __name__ == "__main__":
    main()
