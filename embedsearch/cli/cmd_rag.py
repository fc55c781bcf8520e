"""RAG commands: ingest (chunked document indexing), retrieve, eval (BEIR)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .common import explain_empty, long_query_note, open_existing, parse_json_arg

_MODES = ("dense", "bm25", "hybrid")
_FUSIONS = ("rrf", "convex", "dbsf")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="index .txt/.md/.html/.pdf files as passages (chunked; unchanged files skipped)",
        description="Chunk documents into passages that fit the model and index them with "
        "their source, character offsets and heading path. Re-running replaces the passages "
        "of changed files and skips unchanged ones.",
    )
    p.add_argument("name", help="collection name (under EMBEDSEARCH_HOME) or path")
    p.add_argument("paths", nargs="+", help="files or folders (walked for .txt .md .html .pdf)")
    p.add_argument(
        "--chunk",
        default="auto",
        choices=("auto", "token", "sentence", "markdown"),
        help="chunker: auto = headings for Markdown/HTML, sentences otherwise (default)",
    )
    p.add_argument("--max-tokens", type=int, help="tokens per chunk (default: model window)")
    p.add_argument("--overlap", type=int, help="tokens shared by consecutive chunks (32)")
    p.add_argument("--meta", help='JSON metadata stored with every chunk, e.g. \'{"team": "a"}\'')
    p.add_argument("--encoding", default="utf-8", help="encoding of text files (utf-8)")
    p.add_argument("--prune", action="store_true", help="drop files gone from the folders")
    p.add_argument("--model", help="model path or name for a new collection")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("retrieve", help="passages for a RAG prompt: dense, BM25 or hybrid")
    p.add_argument("name")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=8, help="passages to return (default 8)")
    p.add_argument("--mode", default="dense", choices=_MODES)
    p.add_argument("--fusion", choices=_FUSIONS, help="hybrid fusion (default: see docs)")
    p.add_argument("--alpha", type=float, help="dense weight in hybrid fusion, 0..1")
    p.add_argument("--mmr", type=float, metavar="LAMBDA", help="diversify: MMR lambda 0..1")
    p.add_argument("--rerank", metavar="PATH", help="CrossEncoder folder to rerank with")
    p.add_argument("--prf", action="store_true", help="dense pseudo-relevance feedback")
    p.add_argument("--where", help="metadata filter as JSON")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_retrieve)

    p = sub.add_parser(
        "eval",
        help="evaluate retrieval on a BEIR-format folder (nDCG@10, Recall@100, MRR@10)",
        description="Builds (or reuses) a collection of the BEIR corpus, runs the judged "
        "queries of a split and reports nDCG@10, Recall@100 and MRR@10 (computed by ranx).",
    )
    p.add_argument("beir_dir", help="folder with corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    p.add_argument("--split", default="test", help="qrels split (default test)")
    p.add_argument(
        "--mode",
        default="all",
        help="dense, bm25, hybrid or all (comma-separated list allowed; default all)",
    )
    p.add_argument(
        "--fusion", default=None, help="hybrid fusion: rrf, convex, dbsf or all (default all)"
    )
    p.add_argument("--prf", action="store_true", help="also apply dense pseudo-relevance feedback")
    p.add_argument("--collection", help="collection to build/reuse (default beir-<folder name>)")
    p.add_argument("--model", help="model path or name (for a new collection)")
    p.add_argument("--limit", type=int, help="evaluate only the first N judged queries")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_eval)


def cmd_ingest(args: argparse.Namespace) -> int:
    from ..catalog import drop
    from ..collection import open as open_collection
    from ..rag.loaders import expand_paths
    from ..validation import resolve_path
    from ..wording import reword
    from .progress import Progress

    meta = parse_json_arg(args.meta, "--meta")
    path = resolve_path(args.name)
    existed = (path / "manifest.json").is_file()
    t0 = time.perf_counter()
    files = Progress("ingest", "files", sum(1 for _ in expand_paths(args.paths)))
    try:
        with open_collection(args.name, model=args.model) as col:
            report = col.add_documents(
                [Path(p) for p in args.paths],
                chunker=args.chunk,
                max_tokens=args.max_tokens,
                overlap=args.overlap,
                metadata=meta,
                encoding=args.encoding,
                prune=args.prune,
                progress=False,
                on_source=lambda _source: files.update(1),
            )
            total = len(col)
    except BaseException:
        if not existed and (path / "manifest.json").is_file() and _empty(path):
            drop(path, missing_ok=True)  # a failed first run leaves no empty collection
        raise
    finally:
        files.close()
    if not existed and total == 0:
        drop(path, missing_ok=True)
    took = time.perf_counter() - t0
    if args.json:
        print(json.dumps({**report.to_dict(), "count": total, "seconds": round(took, 3)}))
    else:
        print(f"{report.summary()} in {took:.1f} s; collection holds {total} passages")
        if not existed and total == 0:
            print(f"  nothing was indexed, so no collection {args.name!r} was kept")
        for s in report.skipped:
            print(f"  skipped {s.source}: {reword(s.reason)}")
        if report.ignored:
            print(
                f"  ignored {len(report.ignored)} files of other types (e.g. {report.ignored[0]})"
            )
    return 1 if report.skipped and not (report.added or report.updated or report.unchanged) else 0


def _empty(path: Path) -> bool:
    from ..collection import open as open_collection

    with open_collection(path, create=False) as col:
        return len(col) == 0


def _print_passages(passages: list[Any], as_json: bool) -> None:
    if as_json:
        json.dump([p.to_dict() for p in passages], sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return
    for rank, p in enumerate(passages, 1):
        text = " ".join(p.text.split())
        text = text if len(text) <= 160 else text[:159] + "…"
        print(f"{rank:>3}. {p.score:.4f}  {p.citation()}\n     {text}")


def cmd_retrieve(args: argparse.Namespace) -> int:
    col = open_existing(args.name, embeds=args.mode != "bm25")
    where = parse_json_arg(args.where, "--where")
    if args.mode != "bm25":
        long_query_note(col, args.query)  # then embedded from its start, as `search` does
    passages = col.retrieve(
        args.query,
        k=args.k,
        mode=args.mode,
        fusion=args.fusion,
        rerank=args.rerank,
        mmr=args.mmr,
        where=where,
        alpha=args.alpha,
        prf=True if args.prf else None,
        truncate=True,
    )
    _print_passages(passages, args.json)
    if not passages:
        explain_empty(col, where)
    return 0


def _choices(value: str | None, allowed: tuple[str, ...], what: str) -> list[str]:
    from ..errors import InvalidInputError

    if value is None or value == "all":
        return list(allowed)
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise InvalidInputError(
            f"{what} must be one of {', '.join(allowed)} or all, got {value!r}."
        )
    return items


def cmd_eval(args: argparse.Namespace) -> int:
    from ..evaluation import build_collection, evaluate_mode, load_beir, markdown_table

    modes = _choices(args.mode, _MODES, "--mode")
    fusions = _choices(args.fusion, _FUSIONS, "--fusion")
    ds = load_beir(args.beir_dir, args.split)
    if args.limit:
        keep = list(ds.queries)[: args.limit]
        ds.queries = {q: ds.queries[q] for q in keep}
        ds.qrels = {q: ds.qrels[q] for q in keep}
    name = args.collection or f"beir-{ds.name}"
    t0 = time.perf_counter()
    col = build_collection(ds, name, model=args.model, progress=sys.stderr.isatty() or None)
    build_s = time.perf_counter() - t0
    prf = True if args.prf else None
    results = []
    with col:
        for mode in modes:
            for fusion in fusions if mode == "hybrid" else [None]:
                if prf and mode == "bm25":
                    continue
                results.append(evaluate_mode(col, ds, mode, fusion=fusion, prf=prf))
    if args.json:
        print(
            json.dumps(
                {
                    "dataset": ds.name,
                    "split": ds.split,
                    "documents": len(ds.corpus),
                    "queries": len(ds.queries),
                    "collection": str(col.path),
                    "build_seconds": round(build_s, 2),
                    "results": [r.to_dict() for r in results],
                }
            )
        )
    else:
        print(
            f"{ds.name} ({ds.split}): {len(ds.corpus)} documents, {len(ds.queries)} judged "
            f"queries; collection {col.path} (ready in {build_s:.1f} s)\n"
        )
        print(markdown_table(results))
    return 0
