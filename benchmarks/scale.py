"""A whole collection at 100k and 1M documents, side by side with the engines users would pick.

The same vectors and metadata for every engine: realistic vectors (the real embeddings of
``../shared/data``, extended by small noise as :mod:`vectors` does), metadata
``{"cat": i % 1000, "year": 1990 + i % 30, "tag": "t" + str(i % 7)}``, texts
``"document i"``. Queries: held-out documents (perturbed, never stored) and AG News
*titles* (a different distribution from the stored title + text documents).

Each engine runs in fresh processes (``--child``): one builds (50k batches, then its
recommended index), one opens the collection and queries it, one adds 10k rows. Measured:
build time; fresh-process import + open + first filtered query; RSS after open and after
1,000 queries; disk; unfiltered p50/p95 and recall@10; filtered p50 and recall@10 at four
selectivities (``cat < 100`` 10 %, ``cat < 10`` 1 %, ``cat = 7`` 0.1 %, ``cat = 7 and tag =
't3'`` 0.014 %), against exact (filtered) search computed here in numpy.

Engines: ``embedsearch`` (``auto`` index), ``lancedb`` (IVF_PQ index with its defaults,
scalar indexes on the filtered columns, default query knobs) and ``lancedb-tuned`` (the same
table, queried with nprobes=200, refine_factor=50), ``chroma`` (HNSW, cosine) and ``txtai``
(faiss, SQL filters). Peers run in their own venv::

    python benchmarks/scale.py --sizes 100000 1000000 --engines embedsearch lancedb lancedb-tuned
    python benchmarks/scale.py --sizes 100000 --engines chroma txtai --python /work/venv-peers/bin/python
    python benchmarks/scale.py --sizes 1000000 --engines chroma --queries 50 --python ...
    python benchmarks/scale.py --sizes 5000000 --engines embedsearch   # alone, RAM allowing

``--queries N`` asks each kind for its first N queries only (a row records
``queries_per_kind``): Chroma's filtered queries take seconds at 1M.

Results: ``benchmarks/results/scale.json`` (merged across runs) and ``scale.png``. Each
query phase also records ``machine_speed_ms``, a fixed pure-Python loop timed before and
after its query loop ("yardstick" in the table): this shared machine's speed varied by 1.5x
within one session, and rows measured minutes apart are comparable only alongside it.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # before the heavy imports: "fresh process" includes them

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import dir_bytes  # noqa: E402

RESULTS = HERE / "results"
WORK = HERE / ".cache" / "scale"
BATCH = 50_000
K = 10
N_QUERIES = 200  # of each kind (held-out documents, AG News titles)
ADD_ROWS = 10_000
SELECTIVITIES: list[tuple[str, dict[str, Any], str, float]] = [
    ("10%", {"cat": {"$lt": 100}}, "cat < 100", 0.1),
    ("1%", {"cat": {"$lt": 10}}, "cat < 10", 0.01),
    ("0.1%", {"cat": 7}, "cat = 7", 0.001),
    ("0.014%", {"$and": [{"cat": 7}, {"tag": "t3"}]}, "cat = 7 AND tag = 't3'", 1 / 7000),
]


def meta_arrays(lo: int, hi: int) -> dict[str, np.ndarray]:
    i = np.arange(lo, hi)
    return {"cat": i % 1000, "year": 1990 + i % 30, "tag": np.array([f"t{j % 7}" for j in i])}


def masks(n: int) -> list[np.ndarray]:
    m = meta_arrays(0, n)
    return [
        m["cat"] < 100,
        m["cat"] < 10,
        m["cat"] == 7,
        (m["cat"] == 7) & (m["tag"] == "t3"),
    ]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine_speed_ms() -> float:
    """Milliseconds a fixed pure-Python loop takes now (median of 5): a yardstick of this
    shared machine's speed at the time of a phase. Its speed varied by 1.5x within one
    session here, so each row records it and rows measured minutes apart can be compared."""
    times = []
    for _ in range(5):
        t = time.perf_counter()
        total = 0
        for i in range(300_000):
            total += i
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


# --------------------------------------------------------------------------- engines
class Engine:
    dist = "embedsearch"  # the distribution whose version a row records

    def __init__(self, path: Path) -> None:
        self.path = path

    def build(self, base: np.ndarray) -> None: ...
    def open(self) -> None: ...
    def search(self, q: np.ndarray, where: int | None) -> list[str]: ...  # where: SELECTIVITIES idx
    def add(self, vecs: np.ndarray, start: int) -> None: ...
    def explain(self, where: int | None) -> Any:
        return None


class EmbedSearch(Engine):
    def build(self, base: np.ndarray) -> None:
        import embedsearch

        col = embedsearch.open(self.path)
        for lo in range(0, len(base), BATCH):
            self._add(col, base[lo : lo + BATCH], lo)
            print(f"  embedsearch: {lo + BATCH:,}/{len(base):,} rows", file=sys.stderr, flush=True)
        col.close()

    @staticmethod
    def _add(col: Any, vecs: np.ndarray, lo: int) -> None:
        m = meta_arrays(lo, lo + len(vecs))
        ids = [str(i) for i in range(lo, lo + len(vecs))]
        metas = [
            {"cat": int(c), "year": int(y), "tag": str(t)}
            for c, y, t in zip(m["cat"], m["year"], m["tag"])
        ]
        col.add(
            [f"document {i}" for i in ids],
            ids=ids,
            metadata=metas,
            vectors=np.ascontiguousarray(vecs),
            progress=False,
        )

    def open(self) -> None:
        import embedsearch

        self.col = embedsearch.open(self.path)

    def search(self, q: np.ndarray, where: int | None) -> list[str]:
        w = None if where is None else SELECTIVITIES[where][1]
        return [h.id for h in self.col.search(q, k=K, where=w)]

    def explain(self, where: int | None) -> Any:
        return self.col.explain(where=None if where is None else SELECTIVITIES[where][1])

    def add(self, vecs: np.ndarray, start: int) -> None:
        self.open()
        self._add(self.col, vecs, start)
        self.col.close()


class Lance(Engine):
    dist = "lancedb"
    nprobes: int | None = None
    refine: int | None = None

    def _table(self, vecs: np.ndarray, lo: int) -> Any:
        import pyarrow as pa

        m = meta_arrays(lo, lo + len(vecs))
        flat = pa.array(np.ascontiguousarray(vecs, dtype=np.float32).ravel())
        return pa.table(
            {
                "id": pa.array([str(i) for i in range(lo, lo + len(vecs))]),
                "text": pa.array([f"document {i}" for i in range(lo, lo + len(vecs))]),
                "cat": pa.array(m["cat"], pa.int64()),
                "year": pa.array(m["year"], pa.int64()),
                "tag": pa.array(m["tag"].tolist()),
                "vector": pa.FixedSizeListArray.from_arrays(flat, vecs.shape[1]),
            }
        )

    def build(self, base: np.ndarray) -> None:
        import lancedb

        db = lancedb.connect(str(self.path))
        tbl = db.create_table("bench", self._table(base[:BATCH], 0))
        for lo in range(BATCH, len(base), BATCH):
            tbl.add(self._table(base[lo : lo + BATCH], lo))
        tbl.create_index(metric="cosine", vector_column_name="vector")  # default IVF_PQ
        for col in ("cat", "year", "tag"):
            tbl.create_scalar_index(col)

    def open(self) -> None:
        import lancedb

        self.tbl = lancedb.connect(str(self.path)).open_table("bench")

    def search(self, q: np.ndarray, where: int | None) -> list[str]:
        s = self.tbl.search(q, vector_column_name="vector").distance_type("cosine").limit(K)
        if where is not None:
            s = s.where(SELECTIVITIES[where][2], prefilter=True)
        if self.nprobes:
            s = s.nprobes(self.nprobes)
        if self.refine:
            s = s.refine_factor(self.refine)
        return [r["id"] for r in s.select(["id"]).to_list()]

    def add(self, vecs: np.ndarray, start: int) -> None:
        self.open()
        self.tbl.add(self._table(vecs, start))
        self.tbl.optimize()  # folds the new rows into the index, as documented


class LanceTuned(Lance):
    nprobes, refine = 200, 50


class Chroma(Engine):
    dist = "chromadb"

    def _client(self) -> Any:
        import chromadb
        from chromadb.config import Settings

        return chromadb.PersistentClient(
            path=str(self.path), settings=Settings(anonymized_telemetry=False)
        )

    def build(self, base: np.ndarray) -> None:
        client = self._client()
        col = client.create_collection("bench", metadata={"hnsw:space": "cosine"})
        self._add(client, col, base, 0)

    def _add(self, client: Any, col: Any, vecs: np.ndarray, lo: int) -> None:
        step = min(5000, client.get_max_batch_size())
        for a in range(0, len(vecs), step):
            b = min(len(vecs), a + step)
            m = meta_arrays(lo + a, lo + b)
            col.add(
                ids=[str(i) for i in range(lo + a, lo + b)],
                embeddings=vecs[a:b],
                documents=[f"document {i}" for i in range(lo + a, lo + b)],
                metadatas=[
                    {"cat": int(c), "year": int(y), "tag": str(t)}
                    for c, y, t in zip(m["cat"], m["year"], m["tag"])
                ],
            )

    def open(self) -> None:
        self.client = self._client()
        self.col = self.client.get_collection("bench")

    def search(self, q: np.ndarray, where: int | None) -> list[str]:
        w = None if where is None else SELECTIVITIES[where][1]
        res = self.col.query(query_embeddings=[q], n_results=K, where=w, include=[])
        return res["ids"][0]

    def add(self, vecs: np.ndarray, start: int) -> None:
        self.open()
        self._add(self.client, self.col, vecs, start)


class Txtai(Engine):
    dist = "txtai"

    def _transform(self) -> Any:
        self.lookup: dict[str, np.ndarray] = {}
        lookup = self.lookup

        def transform(inputs: list[str]) -> np.ndarray:
            return np.stack([lookup[t] for t in inputs])

        return transform

    def _emb(self) -> Any:
        from txtai import Embeddings

        return Embeddings(
            method="external", transform=self._transform(), content=True, backend="faiss"
        )

    def build(self, base: np.ndarray) -> None:
        emb = self._emb()
        docs = []
        for i in range(len(base)):
            key = f"v{i}"
            self.lookup[key] = base[i]
            docs.append(
                (
                    str(i),
                    {"text": key, "cat": i % 1000, "year": 1990 + i % 30, "tag": f"t{i % 7}"},
                    None,
                )
            )
        emb.index(docs)
        emb.save(str(self.path / "index"))

    def open(self) -> None:
        from txtai import Embeddings

        # txtai 9 saves the transform as a name it refuses to resolve on load (unless
        # ALLOW_RESOLVE_TRANSFORM is set): pass the function itself as a config override.
        self.emb = Embeddings()
        self.emb.load(str(self.path / "index"), config={"transform": self._transform()})

    def search(self, q: np.ndarray, where: int | None) -> list[str]:
        self.lookup["query"] = q
        if where is None:
            return [r["id"] for r in self.emb.search("query", K)]
        sql = f"select id, score from txtai where similar('query') and {SELECTIVITIES[where][2]}"
        return [r["id"] for r in self.emb.search(sql, K)]

    def add(self, vecs: np.ndarray, start: int) -> None:
        self.open()
        docs = []
        for j, v in enumerate(vecs):
            i = start + j
            self.lookup[f"v{i}"] = v
            docs.append(
                (
                    str(i),
                    {"text": f"v{i}", "cat": i % 1000, "year": 1990 + i % 30, "tag": f"t{i % 7}"},
                    None,
                )
            )
        self.emb.upsert(docs)
        self.emb.save(str(self.path / "index"))


ENGINES = {
    "embedsearch": EmbedSearch,
    "lancedb": Lance,
    "lancedb-tuned": LanceTuned,
    "chroma": Chroma,
    "txtai": Txtai,
}
#: Engines that query another engine's files (no build of their own).
SHARES = {"lancedb-tuned": "lancedb"}


# --------------------------------------------------------------------------- child
def child(args: argparse.Namespace) -> dict[str, Any]:
    engine = ENGINES[args.child](Path(args.dir))
    work = Path(args.work)
    out: dict[str, Any] = {"version": importlib.metadata.version(engine.dist)}
    if args.phase == "build":
        base = np.load(work / f"base-{args.n}.npy", mmap_mode="r")
        if not isinstance(engine, EmbedSearch):  # embedsearch reads its batches from the map
            base = np.ascontiguousarray(base)
        t = time.perf_counter()
        engine.build(base)
        out["build_s"] = time.perf_counter() - t
        out["disk_mb"] = dir_bytes(Path(args.dir)) / 2**20
        return out
    if args.phase in ("add", "add-again"):
        extra = np.load(work / f"extra-{args.n}.npy")
        # ids after the first add's: a range of their own per run (the same vectors again)
        start = args.n if args.phase == "add" else args.n + ADD_ROWS * (1 + int(time.time()))
        t = time.perf_counter()
        engine.add(extra, start)
        out["add_10k_s"] = time.perf_counter() - t
        return out
    queries = np.load(work / "queries.npy")
    truth = np.load(work / f"truth-{args.n}.npy")  # (1 + len(SELECTIVITIES), nq, K)
    if args.queries < N_QUERIES:  # the first of each kind: held-out documents, then titles
        pick = np.r_[0 : args.queries, N_QUERIES : N_QUERIES + args.queries]
        queries, truth = queries[pick], truth[:, pick]
    out["queries_per_kind"] = len(queries) // 2
    engine.open()
    out["rss_open_mb"] = rss_mb()
    engine.search(queries[0], 2)
    out["open_first_query_s"] = time.perf_counter() - _T0
    out["rss_first_query_mb"] = rss_mb()
    before = machine_speed_ms()
    done = 1
    for j, where in enumerate([None, 0, 1, 2, 3]):
        times, recalls = [], []
        for qi, q in enumerate(queries):
            t = time.perf_counter()
            got = engine.search(q, where)
            times.append(time.perf_counter() - t)
            want = [str(p) for p in truth[j, qi] if p >= 0]
            recalls.append(len(set(got) & set(want)) / max(1, len(want)))
            done += 1
        name = "unfiltered" if where is None else SELECTIVITIES[where][0]
        out[name] = {
            "p50_ms": 1000 * float(np.percentile(times, 50)),
            "p95_ms": 1000 * float(np.percentile(times, 95)),
            "recall_at_10": float(np.mean(recalls)),
            "recall_docs": float(np.mean(recalls[: len(queries) // 2])),
            "recall_titles": float(np.mean(recalls[len(queries) // 2 :])),
            "plan": engine.explain(where),
        }
    while done < 1000:
        engine.search(queries[done % len(queries)], None)
        done += 1
    out["rss_1000_queries_mb"] = rss_mb()
    # the yardstick before and after the query loop (outside every timed part)
    out["machine_speed_ms"] = [before, machine_speed_ms()]
    return out


# --------------------------------------------------------------------------- driver
def prepare(sizes: list[int], data: Path) -> None:
    """Vectors, queries and exact ground truth (unfiltered + each selectivity) on disk."""
    from vectors import BASE_BACKEND, embed_cached, vector_set

    WORK.mkdir(parents=True, exist_ok=True)
    _, held = vector_set(1000)
    titles_path = WORK / "queries.npy"
    if not titles_path.exists():
        from _common import read_jsonl

        rows = list(read_jsonl(data / "corpora" / "ag_news_test.jsonl.gz"))
        rng = np.random.default_rng(11)
        pick = rng.choice(len(rows), N_QUERIES, replace=False)
        titles = embed_cached([rows[i]["title"] for i in pick], BASE_BACKEND, "scale-titles")
        q = np.concatenate([held[:N_QUERIES], titles]).astype(np.float32)
        np.save(titles_path, q)
    queries = np.load(titles_path)
    for n in sizes:
        if (WORK / f"truth-{n}.npy").exists():
            continue
        # Past 1M the set is not cached by vector_set as well (5M: 7.7 GB once is enough).
        base_path = WORK / f"base-{n}.npy"
        if not base_path.exists():
            base, _ = vector_set(n, cache=n <= 1_000_000)
            np.save(base_path.with_suffix(".tmp.npy"), base)
            base_path.with_suffix(".tmp.npy").rename(base_path)
            del base
        # The truth reads the saved set mapped, a block of rows at a time: at 10M the set
        # (15.4 GB) plus one query chunk's scores over every row ran this machine (24 GB)
        # out of memory.
        base = np.load(base_path, mmap_mode="r")
        # Rows added after the query phase are random directions (cosine ~0 to everything),
        # so that an engine whose store another row queries later (lancedb-tuned) still
        # answers against the same truth.
        extra = np.random.default_rng(5).standard_normal((ADD_ROWS, base.shape[1]))
        extra = (extra / np.linalg.norm(extra, axis=1, keepdims=True)).astype(np.float32)
        np.save(WORK / f"extra-{n}.npy", extra)
        truth = np.full((1 + len(SELECTIVITIES), len(queries), K), -1, dtype=np.int64)
        for j, mask in enumerate([None, *masks(n)]):
            truth[j] = exact_top(base, queries, mask, K)
        np.save(WORK / f"truth-{n}.npy", truth)
        del base
        print(f"prepared {n:,}", file=sys.stderr, flush=True)


def exact_top(
    base: np.ndarray, queries: np.ndarray, mask: np.ndarray | None, k: int, block: int = 262_144
) -> np.ndarray:
    """Positions of each query's ``k`` best rows of ``base`` (where ``mask``), best first,
    -1 past the matching rows: exact, one block of rows at a time, so that memory stays at
    one block's scores whatever the set's size (``base`` may be a memory map)."""
    m = len(queries)
    best_s = np.full((m, k), -np.inf, dtype=np.float32)
    best_p = np.full((m, k), -1, dtype=np.int64)
    for lo in range(0, len(base), block):
        hi = min(len(base), lo + block)
        rows = np.arange(lo, hi) if mask is None else lo + np.flatnonzero(mask[lo:hi])
        if not rows.size:
            continue
        sub = np.asarray(base[lo:hi]) if mask is None else np.asarray(base[rows])
        sims = queries @ sub.T
        kk = min(k, rows.size)
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        all_s = np.concatenate([best_s, np.take_along_axis(sims, part, axis=1)], axis=1)
        all_p = np.concatenate([best_p, rows[part]], axis=1)
        top = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(all_s, top, axis=1)
        best_p = np.take_along_axis(all_p, top, axis=1)
    best_p[~np.isfinite(best_s)] = -1
    return best_p


def run_child(
    python: str, engine: str, phase: str, n: int, path: Path, queries: int = N_QUERIES
) -> dict[str, Any]:
    cmd = [
        python,
        __file__,
        "--child",
        engine,
        "--phase",
        phase,
        "--n",
        str(n),
        "--dir",
        str(path),
        "--work",
        str(WORK),
        "--queries",
        str(queries),
    ]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=7200)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--engines", nargs="+", default=["embedsearch", "lancedb", "lancedb-tuned"])
    ap.add_argument("--python", default=sys.executable, help="interpreter for peer engines")
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--root", type=Path, default=Path("/tmp/embedsearch-scale"))
    ap.add_argument("--no-add", action="store_true", help="skip adding 10k rows")
    ap.add_argument("--reuse", action="store_true", help="query the stores already built")
    ap.add_argument(
        "--add-again",
        action="store_true",
        help="with --reuse: measure adding 10k rows again (each such run grows the store)",
    )
    ap.add_argument(
        "--queries",
        type=int,
        default=N_QUERIES,
        help=f"queries of each kind (at most {N_QUERIES}); fewer for a slow peer (Chroma at 1M)",
    )
    ap.add_argument("--child")
    ap.add_argument("--phase")
    ap.add_argument("--n", type=int)
    ap.add_argument("--dir")
    ap.add_argument("--work")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args), default=str))
        return
    prepare(args.sizes, args.data)
    out_path = RESULTS / "scale.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {"runs": {}}
    for n in args.sizes:
        for engine in args.engines:
            python = sys.executable if engine == "embedsearch" else args.python
            owner = SHARES.get(engine, engine)
            path = args.root / f"{owner}-{n}"
            row: dict[str, Any] = {"engine": engine, "n": n}
            old = results["runs"].get(f"{engine}-{n}", {})
            if args.reuse and path.exists():  # keep the build (and add) figures measured then
                row.update(
                    {k: v for k, v in old.items() if k in ("build_s", "disk_mb", "add_10k_s")}
                )
            elif owner == engine:
                shutil.rmtree(path, ignore_errors=True)
                row.update(run_child(python, engine, "build", n, path))
            print(f"{engine} {n:,} build: {row}", file=sys.stderr, flush=True)
            row.update(run_child(python, engine, "query", n, path, args.queries))
            if not args.no_add and (not args.reuse or args.add_again) and owner == engine:
                phase = "add-again" if args.reuse else "add"
                row.update(run_child(python, engine, phase, n, path))
            print(json.dumps(row, default=str)[:1500], file=sys.stderr, flush=True)
            # Re-read before writing: runs of other sizes may be going on at the same time.
            results = json.loads(out_path.read_text()) if out_path.exists() else {"runs": {}}
            results["runs"][f"{engine}-{n}"] = row
            out_path.write_text(json.dumps(results, indent=1, default=str))
    print(table(results))
    print(ratios(results))
    # kept by hand in the results file: why a peer is ahead on a row (the rule)
    for row, why in results.get("explanations", {}).items():
        print(f"- {row}: {why}")
    plot(results, RESULTS / "scale.png")


def table(results: dict[str, Any]) -> str:
    cols = ["build_s", "open_first_query_s", "rss_open_mb", "rss_1000_queries_mb", "disk_mb"]
    lines = [
        "| engine | n | build s | open+1st query s | RSS open MB | RSS 1k q MB | disk MB | "
        "p50 ms | p95 ms | recall | 10% p50 / R | 1% | 0.1% | 0.014% | add 10k s | "
        "yardstick ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---:|---:|",
    ]
    for row in results["runs"].values():
        if "error" in row:
            lines.append(f"| {row['engine']} | {row['n']:,} | error: {row['error'][-80:]!r} |")
            continue
        cells = [f"{row.get(c, float('nan')):,.1f}" if c in row else "—" for c in cols]
        u = row.get("unfiltered", {})
        f = [
            f"{row[s]['p50_ms']:.1f} / {row[s]['recall_at_10']:.3f}" if s in row else "—"
            for s in [x[0] for x in SELECTIVITIES]
        ]
        lines.append(
            f"| {row['engine']} | {row['n']:,} | "
            + " | ".join(cells)
            + f" | {u.get('p50_ms', float('nan')):.2f} | {u.get('p95_ms', float('nan')):.2f}"
            + f" | {u.get('recall_at_10', float('nan')):.3f} | "
            + " | ".join(f)
            + f" | {row.get('add_10k_s', float('nan')):.1f} | "
            + (
                "/".join(f"{v:.0f}" for v in row["machine_speed_ms"])
                if "machine_speed_ms" in row
                else "—"
            )
            + " |"
        )
    return "\n".join(lines)


def ratios(results: dict[str, Any]) -> str:
    """embedsearch / peer at the same size: < 1 favours embedsearch for time and memory."""
    runs = [r for r in results["runs"].values() if "error" not in r and "unfiltered" in r]
    lines = [
        "| embedsearch / peer | n | build | open+1st query | RSS 1k q | disk | p50 | "
        + " | ".join(f"{s[0]} p50" for s in SELECTIVITIES)
        + " | recall (es vs peer, unfiltered / worst filtered) |",
        "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(SELECTIVITIES) + "---|",
    ]
    mine = {r["n"]: r for r in runs if r["engine"] == "embedsearch"}

    def q(a: Any, b: Any) -> str:
        return (
            f"{a / b:.2f}"
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b
            else "—"
        )

    for r in runs:
        es = mine.get(r["n"])
        if es is None or r["engine"] == "embedsearch":
            continue
        sel = [q(es[s[0]]["p50_ms"], r[s[0]]["p50_ms"]) for s in SELECTIVITIES]
        worst = lambda x: min(x[s[0]]["recall_at_10"] for s in SELECTIVITIES)  # noqa: E731
        lines.append(
            f"| vs {r['engine']} | {r['n']:,} | {q(es.get('build_s'), r.get('build_s'))} | "
            f"{q(es['open_first_query_s'], r['open_first_query_s'])} | "
            f"{q(es['rss_1000_queries_mb'], r['rss_1000_queries_mb'])} | "
            f"{q(es.get('disk_mb'), r.get('disk_mb'))} | "
            f"{q(es['unfiltered']['p50_ms'], r['unfiltered']['p50_ms'])} | "
            + " | ".join(sel)
            + f" | {es['unfiltered']['recall_at_10']:.3f} vs {r['unfiltered']['recall_at_10']:.3f}"
            f" / {worst(es):.3f} vs {worst(r):.3f} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    runs = [r for r in results["runs"].values() if "error" not in r and "unfiltered" in r]
    sizes = sorted({r["n"] for r in runs})
    fig, axes = plt.subplots(len(sizes), 2, figsize=(13, 4.2 * len(sizes)), squeeze=False)
    labels = ["unfiltered"] + [s[0] for s in SELECTIVITIES]
    # the floor: a 1-2-5 step below the fastest bar of any panel (a fixed 0.5 ms floor hid
    # embedsearch's 0.3-0.4 ms bars at 100k once the machine got faster)
    fastest = min(r[lab]["p50_ms"] for r in runs for lab in labels)
    floor = max(
        (t for t in (m * 10**e for e in range(-3, 1) for m in (1, 2, 5)) if t <= fastest / 1.3),
        default=0.001,
    )
    for row_ax, n in zip(axes, sizes):
        # the legend's order in every panel (runs are stored in the order they were made)
        here = sorted(
            (r for r in runs if r["n"] == n), key=lambda r: list(ENGINES).index(r["engine"])
        )
        width = min(0.5, 0.8 / max(1, len(here)))
        alone = len(here) == 1  # e.g. 5M: embedsearch alone, so its values are written on
        for j, r in enumerate(here):
            x = np.arange(len(labels)) + j * width
            for ax, key, fmt in (
                (row_ax[0], "p50_ms", "{:.1f}"),
                (row_ax[1], "recall_at_10", "{:.3f}"),
            ):
                vals = [r[lab][key] for lab in labels]
                bars = ax.bar(x, vals, width, label=r["engine"])
                if alone:
                    for bar, v in zip(bars, vals):
                        ax.annotate(
                            fmt.format(v),
                            (bar.get_x() + bar.get_width() / 2, v),
                            xytext=(0, 2),
                            textcoords="offset points",
                            ha="center",
                            va="bottom",
                            fontsize=8,
                            zorder=5,  # above the dashed target line it may sit on
                            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none"},
                        )
        titles = ("p50 ms (log; dashed: 5 ms target)", "recall@10 (dashed: 0.95)")
        for ax, title in zip(row_ax, titles):
            ax.set_xticks(np.arange(len(labels)) + (len(here) - 1) * width / 2, labels)
            # a row kept from another run says where (``measured_on``, set by hand)
            where = f"\nmeasured on {here[0]['measured_on']}" if "measured_on" in here[0] else ""
            who = f" ({here[0]['engine']} alone)" if alone else ""
            ax.set_title(f"{n:,} documents{who}: {title}{where if alone else ''}", fontsize=10)
        row_ax[0].set_yscale("log")
        row_ax[0].yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        row_ax[0].yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        row_ax[0].yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        # one floor for every panel: a log axis starting at the data's minimum drew the
        # fastest bars as stubs whose height said nothing
        # ...and a top on a labelled tick (1-2-5 steps), so the tallest bar can be read
        top = max(r[lab]["p50_ms"] for r in here for lab in labels)
        steps = [m * 10**e for e in range(-1, 6) for m in (1, 2, 5)]
        row_ax[0].set_ylim(bottom=floor, top=next((t for t in steps if t >= top * 1.15), top * 1.3))
        row_ax[0].axhline(5, color="k", lw=0.8, ls="--")  # the filtered p50 target
        row_ax[1].set_ylim(0, 1.05)
        row_ax[1].axhline(0.95, color="k", lw=0.8, ls="--")
    names = sorted({r["engine"] for r in runs}, key=list(ENGINES).index)
    colors = {name: f"C{i}" for i, name in enumerate(names)}
    for ax in axes.ravel():
        for bar_group in ax.containers:
            label = bar_group.get_label()
            for bar in bar_group:
                bar.set_color(colors.get(label, "grey"))
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[name]) for name in names]
    fig.legend(handles, names, loc="upper center", ncol=len(names), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
