"""Scale-out commands: ``ray-index`` (distributed ingest) and ``ray-search`` (sharded search)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from .common import parse_json_arg, print_hits


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ray-index",
        help="embed Parquet/JSONL/CSV shards on a Ray cluster into a collection (resumable)",
        description="Embed input shards with a pool of encoder actors on Ray and commit them "
        "into a collection (created if needed). Re-running the same command resumes: finished "
        "shards are skipped. Needs `pip install 'embedsearch[distributed]'`.",
    )
    p.add_argument("name", help="collection name (under EMBEDSEARCH_HOME) or path")
    p.add_argument(
        "sources",
        nargs="+",
        metavar="GLOB",
        help="files, folders, globs or URIs pyarrow reads (s3://bucket/part-*.parquet)",
    )
    p.add_argument("--address", help="Ray cluster (default: RAY_ADDRESS or a new local Ray)")
    p.add_argument("--actors", type=int, default=1, help="encoder actors (default 1)")
    p.add_argument("--batch-size", type=int, default=256, help="texts per encoder call")
    p.add_argument("--shards", type=int, help="create the collection sharded into N shards")
    p.add_argument("--model", help="model path or name for a new collection")
    p.add_argument("--index", default="auto", help="index spec for a new collection")
    p.add_argument("--upsert", action="store_true", help="replace documents whose id exists")
    p.add_argument(
        "--restart", action="store_true", help="ignore recorded progress (do not resume)"
    )
    p.add_argument("--text-field", help="field holding the text (default: text; BEIR: title+text)")
    p.add_argument("--id-field", help="field holding the id (default: _id or id, else file:row)")
    p.add_argument("--meta-fields", help="comma-separated metadata fields (default: all others)")
    p.add_argument("--cpus-per-actor", type=float, help="CPUs per encoder actor")
    p.add_argument("--gpus-per-actor", type=float, help="GPUs per encoder actor")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_ray_index)

    p = sub.add_parser("ray-search", help="search a sharded collection (fan-out over Ray)")
    p.add_argument("name", help="sharded collection name or path")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    p.add_argument("--where", help="metadata filter as JSON")
    p.add_argument("--address", help="Ray cluster (default: RAY_ADDRESS or a new local Ray)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_ray_search)


def _shard_done(uri: str, record: dict[str, Any]) -> None:
    """Progress line per finished shard (stderr, so --json output stays clean)."""
    print(f"  shard done: {uri} ({record['documents']} documents)", file=sys.stderr)


def run_ingest(args: argparse.Namespace, sources: list[str], address: str | None) -> int:
    """Run a distributed ingest from parsed arguments (``ray-index``, or ``index --ray``).

    Options a caller's parser lacks take their defaults, so ``embedsearch index --ray`` can
    hand over its own namespace (name, files, text/id/meta fields, model, index, upsert).
    """
    from ..distributed import ingest
    from ..distributed.ingest import DEFAULT_BATCH_SIZE

    if not getattr(args, "verbose", False):  # Ray Data logs every execution plan at INFO
        logging.getLogger("ray.data").setLevel(logging.WARNING)

    meta_fields = getattr(args, "meta_fields", None)
    meta = [f.strip() for f in meta_fields.split(",")] if meta_fields else None
    report = ingest(
        sources,
        args.name,
        model=getattr(args, "model", None),
        index=getattr(args, "index", "auto"),
        num_actors=getattr(args, "actors", 1),
        batch_size=getattr(args, "batch_size", DEFAULT_BATCH_SIZE),
        resume=not getattr(args, "restart", False),
        upsert=getattr(args, "upsert", False),
        address=address,
        shards=getattr(args, "shards", None),
        text_field=getattr(args, "text_field", None),
        id_field=getattr(args, "id_field", None),
        meta_fields=meta,
        cpus_per_actor=getattr(args, "cpus_per_actor", None),
        gpus_per_actor=getattr(args, "gpus_per_actor", None),
        on_shard=_shard_done,
        progress=sys.stderr.isatty(),
    )
    if getattr(args, "json", False):
        print(json.dumps(report.to_json(), indent=2))
        return 0
    print(
        f"{report.documents_added} documents from {report.shards_ingested} shard(s) into "
        f"{report.collection} in {report.seconds:.1f} s ({report.docs_per_s:.0f} docs/s overall, "
        f"{report.steady_docs_per_s:.0f} docs/s while encoding, {report.actors} encoder "
        f"actor(s)); {report.shards_skipped} shard(s) already done, {report.shards_verified} "
        f"verified without re-embedding; {report.shards_total} in all"
    )
    return 0


def cmd_ray_index(args: argparse.Namespace) -> int:
    return run_ingest(args, args.sources, args.address)


def cmd_ray_search(args: argparse.Namespace) -> int:
    from ..distributed import ShardedCollection

    where = parse_json_arg(args.where, "--where")
    with ShardedCollection.open(args.name, create=False, address=args.address) as col:
        hits = col.search(args.query, k=args.k, where=where)
    print_hits(hits, as_json=args.json)
    return 0
