"""Retrieval evaluation on BEIR-format data sets, with metrics computed by ``ranx``.

A BEIR folder holds ``corpus.jsonl`` (``{"_id", "title", "text"}``), ``queries.jsonl``
(``{"_id", "text"}``) and ``qrels/<split>.tsv`` (``query-id corpus-id score`` with a header
line; graded relevance, 0 = judged not relevant). Only queries with judgments in the split
are evaluated.

Documents are indexed whole, as ``title + " " + text`` (how MTEB and the published numbers
feed them to sentence-transformers; the encoder reads the first 256 tokens). The collection
is built once and reused: its corpus fingerprint (sha256 of ``corpus.jsonl``) is kept under
``<collection>/derived/beir/``.

Metrics (ranx, trec_eval definitions): nDCG@10 (linear gains), Recall@100, MRR@10.

Example:
    >>> ds = load_beir("../shared/data/beir/scifact", split="train")
    >>> col = build_collection(ds, "beir-scifact")
    >>> result = evaluate_mode(col, ds, mode="hybrid", fusion="rrf")
    >>> result.metrics["ndcg@10"]
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import durable
from .errors import InvalidInputError

if TYPE_CHECKING:
    from .collection import Collection

METRICS: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr@10")
RUN_DEPTH = 100
BUILD_BATCH = 500  # documents per commit while building: an interrupted build resumes


@dataclass
class BeirDataset:
    """A loaded BEIR data set (one split of judgments).

    Attributes:
        name: the folder name.
        path: the folder.
        split: the qrels split loaded.
        corpus: doc id → (title, text).
        queries: query id → text, only for queries judged in ``split``.
        qrels: query id → {doc id: relevance}.
    """

    name: str
    path: Path
    split: str
    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def doc_text(self, doc_id: str) -> str:
        """What gets embedded and keyword-indexed for a document: ``title text``."""
        title, text = self.corpus[doc_id]
        return f"{title} {text}".strip() if title else text.strip()


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise InvalidInputError(f"{path}:{n} is not valid JSON ({exc}).") from exc
                if not isinstance(row, dict) or "_id" not in row:
                    raise InvalidInputError(f"{path}:{n} has no '_id'; is this a BEIR file?")
                yield row


def load_beir(path: str | os.PathLike[str], split: str = "test") -> BeirDataset:
    """Load a BEIR folder.

    Raises:
        InvalidInputError: a file is missing (the message lists the splits that exist), a
            line is malformed, or the split has no judged query with a known text.
    """
    root = Path(path).expanduser()
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).is_file():
            raise InvalidInputError(
                f"{root} has no {name}; a BEIR folder holds corpus.jsonl, queries.jsonl and "
                "qrels/<split>.tsv."
            )
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        have = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        raise InvalidInputError(
            f"{root} has no qrels/{split}.tsv; splits here: {', '.join(have) or 'none'} "
            "(choose one with --split)."
        )
    corpus = {
        str(r["_id"]): (str(r.get("title") or ""), str(r.get("text") or ""))
        for r in _jsonl(root / "corpus.jsonl")
    }
    all_queries = {str(r["_id"]): str(r.get("text") or "") for r in _jsonl(root / "queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    with open(qrels_path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        for n, row in enumerate(reader, 1):
            if not row or (n == 1 and not row[-1].strip().lstrip("-").isdigit()):
                continue  # header
            if len(row) < 3:
                raise InvalidInputError(f"{qrels_path}:{n} needs query-id, corpus-id, score.")
            qid, did, rel = row[0].strip(), row[1].strip(), int(row[-1])
            if did in corpus:
                qrels.setdefault(qid, {})[did] = rel
    queries = {q: all_queries[q] for q in qrels if all_queries.get(q, "").strip()}
    qrels = {q: r for q, r in qrels.items() if q in queries}
    if not queries:
        raise InvalidInputError(f"{qrels_path}: no judged query has a text in queries.jsonl.")
    return BeirDataset(root.name, root, split, corpus, queries, qrels)


def corpus_fingerprint(path: str | os.PathLike[str]) -> str:
    """sha256 of a BEIR folder's corpus.jsonl (identifies the corpus a collection holds)."""
    return durable.sha256_file(Path(path) / "corpus.jsonl")


def build_collection(
    ds: BeirDataset,
    name_or_path: str | os.PathLike[str],
    *,
    model: str | None = None,
    progress: bool | None = None,
) -> Any:
    """Open the collection of ``ds``'s corpus, building it on first use.

    Documents are added in committed batches of :data:`BUILD_BATCH`; a build that was
    interrupted resumes where it stopped.

    Raises:
        InvalidInputError: the collection exists but holds something else (another corpus):
            delete it or name another collection.
    """
    from .collection import open as open_collection

    col = open_collection(name_or_path, model=model)
    marker = Path("derived") / "beir" / "source.json"
    fingerprint = corpus_fingerprint(ds.path)
    try:
        stored = json.loads(durable.read_bytes(Path(col.path), marker))
    except (FileNotFoundError, NotADirectoryError):
        stored = {}
    have = set(col.ids()) if len(col) else set()
    if stored.get("fingerprint") == fingerprint and have == set(ds.corpus):
        return col
    if stored or not have <= set(ds.corpus):
        col.close()
        raise InvalidInputError(
            f"collection {col.path} is not an index of {ds.path} (it holds another corpus); "
            "delete it or pass another collection name."
        )
    # new, or an interrupted build: add what is missing, one committed batch at a time
    todo = [d for d in ds.corpus if d not in have]
    for lo in range(0, len(todo), BUILD_BATCH):
        ids = todo[lo : lo + BUILD_BATCH]
        col.add([ds.doc_text(d) for d in ids], ids=ids, progress=progress)
    info = {"fingerprint": fingerprint, "source": str(ds.path)}
    durable.write_file(Path(col.path), marker, json.dumps(info).encode(), create_dirs=True)
    return col


def score_run(
    run: dict[str, dict[str, float]],
    qrels: dict[str, dict[str, int]],
    metrics: Sequence[str] = METRICS,
) -> dict[str, float]:
    """Mean metrics of ``run`` (query → {doc: score}) against ``qrels``, computed by ranx.

    Queries missing from ``run`` count as zero (every judged query is evaluated).
    """
    from ranx import Qrels, Run, evaluate

    full = {q: (run.get(q) or {}) for q in qrels}
    # ranx needs at least one document per query: an empty result scores 0 anyway
    full = {q: (docs or {"__none__": 0.0}) for q, docs in full.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba type-safety chatter from ranx internals
        out = evaluate(Qrels(qrels), Run(full), list(metrics), make_comparable=True)
    if isinstance(out, dict):
        return {m: float(v) for m, v in out.items()}
    return {metrics[0]: float(out)}


@dataclass
class EvalResult:
    """Metrics and latency of one retrieval configuration on one data set."""

    dataset: str
    split: str
    mode: str
    fusion: str | None
    metrics: dict[str, float]
    queries: int
    ms_per_query: float
    p50_ms: float
    p95_ms: float
    settings: dict[str, Any] = field(default_factory=dict)
    timed_queries: int = 0

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def run_queries(
    col: Collection,
    ds: BeirDataset,
    mode: str,
    *,
    fusion: str | None = None,
    depth: int = RUN_DEPTH,
    **settings: Any,
) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Retrieve ``depth`` passages per query; returns (run, seconds per query).

    Run scores are ``depth - rank`` so ranx sees exactly the pipeline's order (no ties).
    """
    run: dict[str, dict[str, float]] = {}
    times: list[float] = []
    for qid, text in ds.queries.items():
        t0 = time.perf_counter()
        passages = col.retrieve(text, k=depth, mode=mode, fusion=fusion, truncate=True, **settings)
        times.append(time.perf_counter() - t0)
        ranked: dict[str, float] = {}
        for p in passages:
            doc = str(p.metadata.get("doc_id", p.id))
            if doc not in ranked:  # chunked corpora: a document ranks at its best passage
                ranked[doc] = float(depth - len(ranked))
        run[qid] = ranked
    return run, times


def evaluate_mode(
    col: Collection,
    ds: BeirDataset,
    mode: str,
    *,
    fusion: str | None = None,
    timing_sample: int | None = None,
    **settings: Any,
) -> EvalResult:
    """Run every judged query of ``ds`` through ``col.retrieve`` and score the run.

    Times always include embedding the query (the encoder's query cache is cleared first),
    i.e. what a new question costs.

    Args:
        timing_sample: time only the first N queries (cold); the metrics then run over all
            queries with their embeddings computed up front in batches. Saves re-embedding
            every query for every configuration of a large evaluation.
        settings: more ``retrieve`` arguments (alpha, prf, mmr, candidates...).
    """
    col.encoder.clear_query_cache()
    if timing_sample:
        sample = BeirDataset(
            ds.name,
            ds.path,
            ds.split,
            ds.corpus,
            dict(list(ds.queries.items())[:timing_sample]),
            {},
        )
        _, times = run_queries(col, sample, mode, fusion=fusion, **settings)
        if mode != "bm25":
            col.batch_search(list(ds.queries.values()), k=1)  # batched: fills the query cache
        run, _ = run_queries(col, ds, mode, fusion=fusion, **settings)
    else:
        run, times = run_queries(col, ds, mode, fusion=fusion, **settings)
    ms = sorted(t * 1000 for t in times)
    return EvalResult(
        dataset=ds.name,
        split=ds.split,
        mode=mode,
        fusion=fusion if mode == "hybrid" else None,
        metrics=score_run(run, ds.qrels),
        queries=len(ds.queries),
        ms_per_query=statistics.fmean(ms),
        p50_ms=ms[len(ms) // 2],
        p95_ms=ms[min(len(ms) - 1, int(len(ms) * 0.95))],
        settings={k: v for k, v in settings.items() if v is not None},
        timed_queries=len(ms),
    )


def markdown_table(results: Sequence[EvalResult], metrics: Sequence[str] = METRICS) -> str:
    """Results as a Markdown table (one row per data set and configuration)."""
    head = ["data set", "split", "method", *metrics, "ms/query (p50)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        method = r.mode if r.mode != "hybrid" else f"hybrid-{r.fusion}"
        extra = ",".join(f"{k}={v}" for k, v in r.settings.items())
        if extra:
            method += f" ({extra})"
        vals = [f"{100 * r.metrics[m]:.1f}" for m in metrics]
        lines.append(
            f"| {r.dataset} | {r.split} | {method} | "
            + " | ".join(vals)
            + f" | {r.ms_per_query:.1f} ({r.p50_ms:.1f}) |"
        )
    return "\n".join(lines)
