"""Core commands: index, search, info, delete, compact, list, demo."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

from .common import open_existing, parse_json_arg, print_hits


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="embed files into a collection (created if needed)")
    p.add_argument("name", help="collection name (under EMBEDSEARCH_HOME) or path")
    p.add_argument(
        "files", nargs="+", help=".jsonl/.csv/.parquet/.txt files (.gz too) or folders of .txt/.md"
    )
    p.add_argument(
        "--text-field", help="field holding the text (default: text; BEIR: title + text)"
    )
    p.add_argument("--id-field", help="field holding the id (default: _id or id, else file:row)")
    p.add_argument(
        "--meta-fields", help="comma-separated fields to keep as metadata (default: all others)"
    )
    p.add_argument("--model", help="model path or name for a new collection")
    p.add_argument("--index", default="auto", help="index spec: auto or a FAISS factory string")
    p.add_argument("--upsert", action="store_true", help="replace documents whose id exists")
    p.add_argument("--limit", type=int, help="index at most N documents")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="semantic search in a collection")
    p.add_argument("name")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    p.add_argument("--where", help='metadata filter as JSON, e.g. \'{"year": {"$gte": 2010}}\'')
    p.add_argument("--nprobe", type=int, help="IVF cells to visit (approximate indexes)")
    p.add_argument("--ef-search", type=int, help="HNSW search breadth (approximate indexes)")
    p.add_argument("--exact", action="store_true", help="force exact search")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("info", help="count, model, index kind, recall, size on disk")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("delete", help="delete documents by id")
    p.add_argument("name")
    p.add_argument("ids", nargs="+")
    p.add_argument("--missing-ok", action="store_true", help="ignore ids that do not exist")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("compact", help="make deletes permanent and shrink the files")
    p.add_argument("name")
    p.set_defaults(func=cmd_compact)

    p = sub.add_parser("list", help="list the collections under EMBEDSEARCH_HOME")
    p.add_argument("--home", help="home directory (default EMBEDSEARCH_HOME or ./indexes)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("demo", help="build a collection from the bundled corpus and search it")
    p.add_argument("--keep", metavar="NAME", help="keep the demo collection under this name")
    p.add_argument("queries", nargs="*", help="queries to run (default: a few examples)")
    p.set_defaults(func=cmd_demo)


def cmd_index(args: argparse.Namespace) -> int:
    from .. import open as open_collection
    from ..ingest import ReadOptions, ReadReport, read_paths

    opts = ReadOptions(
        text_field=args.text_field,
        id_field=args.id_field,
        meta_fields=[f.strip() for f in args.meta_fields.split(",")] if args.meta_fields else None,
    )
    report = ReadReport()
    records = read_paths(args.files, opts, report)
    if args.limit:
        records = itertools.islice(records, args.limit)
    t0 = time.perf_counter()
    with open_collection(args.name, model=args.model, index=args.index) as col:
        r_ids, r_texts, r_meta = (iter(x) for x in itertools.tee(records, 3))
        write = col.upsert if args.upsert else col.add
        ids = write(
            (r.text for r in r_texts),
            ids=(r.id for r in r_ids),
            metadata=(r.metadata or None for r in r_meta),
            progress=sys.stderr.isatty() or None,
        )
        took = time.perf_counter() - t0
        info = col.info()
    rate = len(ids) / took if took else 0.0
    print(
        f"indexed {len(ids)} documents into {info['path']} in {took:.1f} s ({rate:.0f} docs/s); "
        f"collection now holds {info['count']} ({info['index']['resolved']}, "
        f"{info['disk_bytes'] / 1e6:.1f} MB on disk)"
    )
    if report.skipped_empty or report.skipped_files:
        print(
            f"skipped {report.skipped_empty} empty rows/files; unreadable: {report.skipped_files or 'none'}"
        )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    where = parse_json_arg(args.where, "--where")
    col = open_existing(args.name)
    hits = col.search(
        args.query,
        k=args.k,
        where=where,
        nprobe=args.nprobe,
        ef_search=args.ef_search,
        exact=args.exact,
    )
    print_hits(hits, as_json=args.json)
    return 0


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def cmd_info(args: argparse.Namespace) -> int:
    info = open_existing(args.name).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    idx = info["index"]
    recall = (
        f", recall@10 {idx['recall_at_10']:.3f} vs exact"
        if idx.get("recall_at_10") is not None
        else ""
    )
    knob = (
        f", nprobe {idx['nprobe']}"
        if idx.get("nprobe")
        else (f", efSearch {idx['ef_search']}" if idx.get("ef_search") else "")
    )
    print(f"collection  {info['name']}  ({info['path']})")
    print(
        f"documents   {info['count']}  ({info['deleted']} deleted, not yet compacted; {info['segments']} segments)"
    )
    print(
        f"model       {info['model']['name']}  ({info['model']['dim']}-d, {info['model'].get('backend', 'torch')})"
    )
    print(
        f"index       {idx['spec']} -> {idx['resolved']} ({idx['kind']}{knob}{recall}) on {idx['device']}"
    )
    print(f"disk        {_human(info['disk_bytes'])}")
    print(f"updated     {info['updated']}  (generation {info['generation']})")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from .. import open as open_collection

    with open_collection(args.name, create=False) as col:
        n = col.delete(args.ids, missing_ok=args.missing_ok)
    print(f"deleted {n} document(s)")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from .. import open as open_collection

    with open_collection(args.name, create=False) as col:
        r = col.compact()
    print(
        f"compacted: {r['rows_before']} -> {r['rows_after']} rows, "
        f"{_human(r['bytes_before'])} -> {_human(r['bytes_after'])}"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ..validation import home

    root = Path(args.home) if args.home else home()
    names = (
        sorted(p.name for p in root.glob("*/manifest.json") for p in [p.parent])
        if root.is_dir()
        else []
    )
    for name in names:
        print(name)
    if not names:
        print(f"no collections under {root}", file=sys.stderr)
    return 0


DEMO_QUERIES = (
    "how do I keep tomatoes healthy",
    "black holes and gravity",
    "saving money for retirement",
    "a dog that learns tricks",
    "fixing a memory leak in my code",
)


def demo_records() -> list[dict[str, Any]]:
    """The bundled demo corpus: a few hundred short texts with topic and year metadata."""
    from importlib import resources

    text = (
        resources.files("embedsearch")
        .joinpath("data/demo_corpus.jsonl")
        .read_text(encoding="utf-8")
    )
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    from .. import open as open_collection

    rows = demo_records()
    with tempfile.TemporaryDirectory(prefix="embedsearch-demo-") as tmp:
        target = args.keep or str(Path(tmp) / "demo")
        t0 = time.perf_counter()
        with open_collection(target) as col:
            if len(col) == 0:
                col.add(
                    [r["text"] for r in rows],
                    ids=[r["id"] for r in rows],
                    metadata=[{"topic": r["topic"], "year": r["year"]} for r in rows],
                )
            print(
                f"built {col.name!r}: {len(col)} documents in {time.perf_counter() - t0:.1f} s "
                f"(model {col.model}, index {col.info()['index']['resolved']})\n"
            )
            for q in args.queries or DEMO_QUERIES:
                print(f'search: "{q}"')
                print_hits(col.search(q, k=3), as_json=False)
                print()
            where = {"year": {"$gte": 2015}}
            print(f'search: "space telescopes" where {json.dumps(where)}')
            print_hits(col.search("space telescopes", k=3, where=where), as_json=False)
    return 0
