"""Core commands: index, search, get, peek, info, delete, compact, list, drop, demo."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import (
    explain_empty,
    long_query_note,
    open_existing,
    parse_json_arg,
    print_hits,
)

INDEX_RULES = """\
How files become documents (the same rules as `ray-index`):
  .jsonl .ndjson .csv .parquet (also .gz)
      one document per row. Text: the `text` field (BEIR corpora: title + text), or
      --text-field. Id: `_id`, else `id`, else FILE-STEM:ROW (--id-field to choose).
      Metadata: every other non-empty field (--meta-fields to choose). CSV values are
      typed: integer, number and true/false columns become numbers and booleans (dates
      and everything else stay text); --no-types keeps every value a string.
  a .txt file named here
      one document per non-empty line (id STEM:LINE).
  .md / .markdown files, and .txt files inside a folder
      one document per file; id = its path relative to the common folder of all inputs,
      so two README.md in two folders never collide.
  folders
      walked recursively in sorted order; hidden entries (.git, .venv, ...), __pycache__
      and node_modules are skipped (--hidden walks them); files of other types are counted
      and reported, never dropped silently. HTML and PDF: use `embedsearch ingest`.
  Text files are decoded as --encoding (default utf-8); a file that does not decode stops
  the run with an error naming it.
The model reads the first 256 tokens of a document (all-MiniLM-L6-v2); longer documents
are counted and reported. To index long files as passages, use `embedsearch ingest`.

Documents are embedded --batch-size at a time and committed --commit-every at a time (one
segment each: fewer, larger commits leave the collection fewer segments to merge and fewer
versions to keep). Ctrl-C commits every document embedded so far and keeps it; a crash
(kill, power loss) loses at most the documents since the last commit. Re-running the same
command resumes, skipping ids already stored with the same text.
"""


#: Documents per commit of `embedsearch index`: one segment each, as large as the segments the
#: writer's merges leave alone (collection.COMPACT_KEEP_ROWS), so that a bulk ingest leaves
#: no small segments to merge, nor their files to keep for the versions that name them.
COMMIT_EVERY = 32_768


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="embed files into a collection (created if needed; resumable)",
        description="Embed documents read from files and folders into a collection.",
        epilog=INDEX_RULES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="collection name (under EMBEDSEARCH_HOME) or path")
    p.add_argument(
        "files", nargs="+", help=".jsonl/.csv/.parquet/.txt/.md files (.gz too) or folders"
    )
    p.add_argument(
        "--text-field", help="field holding the text (default: text; BEIR: title + text)"
    )
    p.add_argument("--id-field", help="field holding the id (default: _id or id, else file:row)")
    p.add_argument(
        "--meta-fields", help="comma-separated fields to keep as metadata (default: all others)"
    )
    p.add_argument("--encoding", default="utf-8", help="encoding of text files (utf-8)")
    p.add_argument("--no-types", action="store_true", help="keep CSV values as strings")
    p.add_argument("--hidden", action="store_true", help="also walk hidden folders and files")
    p.add_argument("--model", help="model path or name for a new collection")
    p.add_argument("--index", default="auto", help="index spec: auto or a FAISS factory string")
    p.add_argument("--upsert", action="store_true", help="replace documents whose id exists")
    p.add_argument("--limit", type=int, help="index at most N documents")
    p.add_argument(
        "--batch-size",
        type=int,
        default=2048,
        help="documents embedded per step (default 2048): what Ctrl-C discards at most",
    )
    p.add_argument(
        "--commit-every",
        type=int,
        default=COMMIT_EVERY,
        help=f"documents per commit (default {COMMIT_EVERY:,}): what a crash can lose at most",
    )
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="semantic search in a collection")
    p.add_argument("name")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    p.add_argument("--where", help='metadata filter as JSON, e.g. \'{"year": {"$gte": 2010}}\'')
    p.add_argument("--nprobe", type=int, help="IVF cells to visit (approximate indexes)")
    p.add_argument("--ef-search", type=int, help="HNSW search breadth (approximate indexes)")
    p.add_argument("--exact", action="store_true", help="force exact search")
    p.add_argument(
        "--version", help="search a kept past version (number, -1 = newest, or tag), read-only"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("get", help="print documents by id (text and metadata)")
    p.add_argument("name")
    p.add_argument("ids", nargs="+")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("peek", help="print the first documents of a collection")
    p.add_argument("name")
    p.add_argument("-n", "-k", dest="n", type=int, default=5, help="how many (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_peek)

    p = sub.add_parser("info", help="count, model, index kind, recall, size on disk")
    p.add_argument("name")
    p.add_argument("--version", help="describe a kept past version (number or tag)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("delete", help="delete documents by id")
    p.add_argument("name")
    p.add_argument("ids", nargs="+")
    p.add_argument("--missing-ok", action="store_true", help="ignore ids that do not exist")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser(
        "compact",
        help="reclaim deleted rows and merge small segments (old files go when past "
        "versions expire)",
    )
    p.add_argument("name")
    p.add_argument(
        "--min-deleted-share",
        type=float,
        default=0.1,  # base.COMPACT_MIN_DELETED_SHARE (not imported: parsing stays light)
        metavar="SHARE",
        help="rewrite a large segment only when at least this share of its rows is deleted "
        "(default 0.1); below it the deletes stay hidden. 0 rewrites every segment that "
        "lost a row",
    )
    p.set_defaults(func=cmd_compact)

    p = sub.add_parser(
        "list", help="list the collections under EMBEDSEARCH_HOME (documents, size, model)"
    )
    p.add_argument("--home", help="home directory (default EMBEDSEARCH_HOME or ./indexes)")
    p.add_argument(
        "--all", action="store_true", help="also list helper collections (vocabularies, eval)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("drop", help="delete whole collections and their files (no undo)")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--missing-ok", action="store_true", help="ignore names that do not exist")
    p.set_defaults(func=cmd_drop)

    p = sub.add_parser(
        "demo",
        help="build a temporary collection from the bundled corpus and search it",
        description="Build a collection from the bundled corpus (350 short texts), search "
        "it, and delete it at exit unless --keep NAME is given.",
    )
    p.add_argument("--keep", metavar="NAME", help="keep the demo collection under this name")
    p.add_argument("queries", nargs="*", help="queries to run (default: a few examples)")
    p.set_defaults(func=cmd_demo)


class _Embedded:
    """Documents embedded and not yet committed (ids, texts, metadata, vectors), in order;
    ``committed`` counts those written so far."""

    def __init__(self) -> None:
        self.committed = 0
        self._clear()

    def _clear(self) -> None:
        self.ids: list[str] = []
        self.texts: dict[str, str] = {}  # id -> text, for the checks of later batches
        self.metas: list[Any] = []
        self.vectors: list[Any] = []

    def __len__(self) -> int:
        return len(self.ids)

    def extend(
        self, ids: Sequence[str], texts: Sequence[str], metas: Sequence[Any], vecs: Any
    ) -> None:
        self.ids.extend(ids)
        self.texts.update(zip(ids, texts))
        self.metas.extend(metas)
        self.vectors.append(vecs)

    def commit(self, col: Any, upsert: bool) -> None:
        """Write them in one call (their vectors given: nothing is embedded again).

        A write that raised may still have committed: its add or upsert did, and what runs
        after it in the writer (a merge of small segments) was interrupted. A write is all
        or nothing, so its first document says which: stored with this text, they are
        counted and forgotten here; otherwise they stay, for the caller to commit again."""
        if not self.ids:
            return
        import numpy as np

        texts = [self.texts[i] for i in self.ids]
        write = col.upsert if upsert else col.add
        try:
            write(texts, ids=self.ids, metadata=self.metas,
                  vectors=np.concatenate(self.vectors), progress=False)  # fmt: skip
        except BaseException:
            first = self.ids[0]
            if first in col and col.get([first])[0].text == texts[0]:
                self.committed += len(self.ids)
                self._clear()
            raise
        self.committed += len(self.ids)
        self._clear()


def _batches(records: Any, size: int) -> Any:
    while batch := list(itertools.islice(records, size)):
        yield batch


def cmd_index(args: argparse.Namespace) -> int:
    from ..catalog import drop
    from ..collection import open as open_collection
    from ..errors import DuplicateIdError, InvalidInputError
    from ..readers import ReadOptions, ReadReport, count_paths, read_paths
    from ..validation import resolve_path
    from .progress import Progress

    if args.batch_size < 1:
        raise InvalidInputError("--batch-size must be at least 1.")
    if args.commit_every < 1:
        raise InvalidInputError("--commit-every must be at least 1.")
    if args.limit is not None and args.limit < 1:
        raise InvalidInputError("--limit must be at least 1.")
    opts = ReadOptions(
        text_field=args.text_field,
        id_field=args.id_field,
        meta_fields=[f.strip() for f in args.meta_fields.split(",")] if args.meta_fields else None,
        encoding=args.encoding,
        infer_types=not args.no_types,
        hidden=args.hidden,
        flag_names={
            "text_field": "--text-field",
            "id_field": "--id-field",
            "meta_fields": "--meta-fields",
            "encoding": "--encoding",
        },
    )
    report = ReadReport()
    records = read_paths(args.files, opts, report)
    if args.limit:
        records = itertools.islice(records, args.limit)
    batches = _batches(iter(records), args.batch_size)
    first = next(batches, [])  # bad input fails here, before a collection is created
    total = count_paths(args.files, opts)
    if total is not None and args.limit:
        total = min(total, args.limit)
    path = resolve_path(args.name)
    existed = (path / "manifest.json").is_file()
    t0 = time.perf_counter()
    resumed = long_docs = 0
    col = open_collection(args.name, model=args.model, index=args.index)
    progress = Progress("index", "documents", total)
    embedded = _Embedded()
    try:
        window = col.encoder.max_seq_length
        for batch in itertools.chain([first] if first else [], batches):
            if args.upsert and any(r.id in embedded.texts for r in batch):
                embedded.commit(col, args.upsert)  # an id again: replace it in a later write
            present = [r.id for r in batch if r.id in col]
            stored = {d.id: d.text for d in col.get(present)} if present else {}
            stored.update({r.id: embedded.texts[r.id] for r in batch if r.id in embedded.texts})
            if stored:
                differ = [r.id for r in batch if r.id in stored and stored[r.id] != r.text]
                if differ and not args.upsert:
                    embedded.commit(col, args.upsert)  # what came before is kept
                    raise DuplicateIdError(
                        f"id {differ[0]!r} already exists with a different text "
                        f"({len(differ)} such id(s) in this batch); pass --upsert to replace "
                        "them, or index into another collection."
                    )
                keep = [r for r in batch if r.id not in stored or stored[r.id] != r.text]
                resumed += len(batch) - len(keep)
                progress.update(len(batch) - len(keep))
                batch = keep
            if not batch:
                continue
            long_docs += sum(n > window for n in col.encoder.token_counts([r.text for r in batch]))
            ids, texts, raw_metas = zip(*batch)  # rows stay rows until here: the storage call
            metas = [m or None for m in raw_metas]
            try:  # what the write checks, before the model runs: a bad document fails its
                # own batch, after what came before is committed (as when each batch was a write)
                col.check_rows(list(texts), list(ids), metas)
            except InvalidInputError:
                embedded.commit(col, args.upsert)
                raise
            vectors = col.encoder.encode(list(texts))
            embedded.extend(ids, texts, metas, vectors)
            progress.update(len(batch))
            if len(embedded) >= args.commit_every:
                embedded.commit(col, args.upsert)
        embedded.commit(col, args.upsert)
    except KeyboardInterrupt:
        progress.close()
        try:  # what was embedded is kept: committed now (fast: nothing to embed)
            embedded.commit(col, args.upsert)
            lost = ""
        except KeyboardInterrupt:
            lost = f" {len(embedded):,} documents embedded since the last commit were not kept;"
        holds = len(col)
        col.close()
        print(
            f"interrupted: {embedded.committed:,} documents of this run were committed and are kept "
            f"(collection {args.name!r} holds {holds:,});{lost} the batch being embedded was "
            "discarded. Re-run the same command to resume: documents already stored are "
            "skipped.",
            file=sys.stderr,
        )
        return 130
    except BaseException:
        progress.close()
        empty = len(col) == 0
        col.close()
        if not existed and empty:
            drop(path, missing_ok=True)  # never leave an empty collection behind a failure
        raise
    progress.close()
    added = embedded.committed
    took = time.perf_counter() - t0
    info = col.info()
    col.close()
    rate = added / took if took else 0.0
    done = f"indexed {added:,} documents"
    if resumed:
        done += f" ({resumed:,} already stored with the same text: skipped)"
    print(
        f"{done} into {info['path']} in {took:.1f} s ({rate:.0f} docs/s); "
        f"collection now holds {info['count']:,} ({info['index']['resolved']}, "
        f"{info['disk_bytes'] / 1e6:.1f} MB on disk)"
    )
    if report.skipped_empty or report.skipped_files:
        print(
            f"skipped {report.skipped_empty} empty rows/files; unreadable: "
            f"{', '.join(report.skipped_files) or 'none'}"
        )
    ignored = report.ignored_summary()
    if ignored:
        print(f"{ignored}; `index` reads .jsonl .csv .parquet .txt .md (see --help)")
    if long_docs:
        print(
            f"{long_docs:,} document(s) are longer than the model window ({window} tokens): "
            f"only their start is embedded. Use `embedsearch ingest {args.name}-passages "
            "FILES...` to chunk long files into passages."
        )
    if not added and not resumed:
        print("nothing to index: the inputs hold no documents", file=sys.stderr)
        if not existed and info["count"] == 0:
            drop(path, missing_ok=True)
        return 1
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    where = parse_json_arg(args.where, "--where")
    col = open_existing(args.name, args.version, embeds=True)
    long_query_note(col, args.query)
    hits = col.search(
        args.query,
        k=args.k,
        where=where,
        nprobe=args.nprobe,
        ef_search=args.ef_search,
        exact=args.exact,
    )
    print_hits(hits, as_json=args.json)
    if not hits:
        explain_empty(col, where)
    return 0


def _print_docs(docs: list[Any], as_json: bool) -> None:
    if as_json:
        json.dump([d.to_dict() for d in docs], sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return
    for d in docs:
        meta = json.dumps(d.metadata, ensure_ascii=False) if d.metadata else "{}"
        print(f"id        {d.id}\nmetadata  {meta}\n{d.text}\n")


def cmd_get(args: argparse.Namespace) -> int:
    col = open_existing(args.name)
    _print_docs(col.get(args.ids), args.json)
    return 0


def cmd_peek(args: argparse.Namespace) -> int:
    from ..errors import InvalidInputError

    if args.n < 1:
        raise InvalidInputError("-n must be at least 1.")
    col = open_existing(args.name)
    ids = col.ids()[: args.n]
    if not ids:
        explain_empty(col, None)
        return 0
    _print_docs(col.get(ids), args.json)
    if len(col) > len(ids):
        print(f"({len(ids)} of {len(col):,} documents)", file=sys.stderr)
    return 0


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def cmd_info(args: argparse.Namespace) -> int:
    info = open_existing(args.name, args.version).info()
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
        f"documents   {info['count']}  ({info['deleted']} deleted rows still on disk; {info['segments']} segments)"
    )
    print(
        f"model       {info['model']['name']}  ({info['model']['dim']}-d, {info['model'].get('backend', 'torch')})"
    )
    print(
        f"index       {idx['spec']} -> {idx['resolved']} ({idx['kind']}{knob}{recall}) on {idx['device']}"
    )
    print(f"disk        {_human(info['disk_bytes'])}")
    kw = info.get("keywords")
    if kw is not None:
        print(
            f"keywords    {kw['files']} postings file{'s' * (kw['files'] != 1)}, "
            f"{_human(kw['bytes'])} (each write updates them)"
            if kw["kept"]
            else "keywords    none yet (made by `ingest`, the first bm25/hybrid `retrieve`, or "
            "prepare_keywords())"
        )
    print(f"updated     {info['updated']}  (generation {info['generation']})")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from ..collection import open as open_collection

    with open_collection(args.name, create=False) as col:
        n = col.delete(args.ids, missing_ok=args.missing_ok)
    print(f"deleted {n} document(s)")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from ..collection import open as open_collection

    with open_collection(args.name, create=False) as col:
        r = col.compact(args.min_deleted_share)
        keep_days = col.keep_days
    print(
        f"compacted: {r['rows_before']} -> {r['rows_after']} rows, "
        f"{_human(r['bytes_before'])} -> {_human(r['bytes_after'])}; "
        f"{r['rows_rewritten']} rows rewritten (the other segments keep their files)"
    )
    if r["deleted_kept"]:
        print(
            f"  {r['deleted_kept']} deleted rows stay hidden in segments that lost under "
            f"{args.min_deleted_share:g} of their rows; --min-deleted-share 0 rewrites them away"
        )
    if r["bytes_past_versions"]:
        print(
            f"  {_human(r['bytes_past_versions'])} of that are the old files, kept while past "
            f"versions name them (untagged versions are kept {keep_days:g} days); "
            f"'embedsearch retention {args.name} --keep-days 0' frees them now"
        )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ..catalog import list_collections
    from ..validation import home

    root = Path(args.home).expanduser() if args.home else home()
    found = list_collections(root, helpers=args.all)
    if args.json:
        print(json.dumps([c.to_dict() for c in found], indent=2))
        return 0
    if not found:
        hidden = len(list_collections(root, helpers=True))
        more = f" ({hidden} helper collection(s): --all shows them)" if hidden else ""
        print(f"no collections under {root.resolve()}{more}", file=sys.stderr)
        return 0
    width = max(len(c.name) for c in found)
    print(f"{'name':<{width}}  {'documents':>10}  {'size':>9}  model")
    for c in found:
        count = f"{c.count:,}" if c.count is not None else "?"
        kind = "" if c.kind == "collection" else f"  [{c.kind}]"
        print(f"{c.name:<{width}}  {count:>10}  {_human(c.bytes):>9}  {c.model or '?'}{kind}")
    print(f"({len(found)} under {root.resolve()})", file=sys.stderr)
    return 0


def cmd_drop(args: argparse.Namespace) -> int:
    from ..catalog import _summary, drop
    from ..validation import resolve_path

    for name in args.names:
        path = resolve_path(name)
        about = _summary(path) if (path / "manifest.json").is_file() else None
        if drop(name, missing_ok=args.missing_ok):
            what = (
                f" ({about.count:,} documents, {_human(about.bytes)})"
                if about and about.count is not None
                else ""
            )
            print(f"dropped {name}{what}")
        else:
            print(f"no collection {name!r}; nothing to drop", file=sys.stderr)
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

    from ..collection import open as open_collection

    rows = demo_records()
    if not args.keep:
        print(
            "demo: building a temporary collection, deleted at exit (pass --keep NAME to keep "
            "it and search it later with `embedsearch search NAME ...`)",
            file=sys.stderr,
        )
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
    if args.keep:
        print(f'\nkept as {args.keep!r}: try `embedsearch search {args.keep} "your question"`')
    else:
        print("\n(the demo collection was deleted; `embedsearch demo --keep demo` keeps it)")
    return 0
