"""``embedsearch verify|repair|upgrade NAME``: check, heal and upgrade a collection on disk."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="check every file of a collection against its manifest (changes nothing)",
        description="Check the manifest, every segment and tombstone file, the saved index and "
        "leftover temp files. Exit status: 0 intact, 1 damaged, 2 not a collection.",
    )
    p.add_argument("name", help="collection name (under EMBEDSEARCH_HOME) or path")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "repair",
        help="quarantine unreadable files, drop them from the manifest, rebuild the index",
        description="Takes the write lock, moves unreadable segment/tombstone/index files to "
        "<collection>/quarantine/, commits a manifest without them, removes leftovers and "
        "rebuilds the FAISS index. Exit status: 0 repaired/intact, 1 problems remain.",
    )
    p.add_argument("name", help="collection name (under EMBEDSEARCH_HOME) or path")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-index", action="store_true", help="do not rebuild the FAISS index")
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser(
        "upgrade",
        help="bring a collection's segments to the current on-disk format",
        description="Takes the write lock and rewrites segments written by embedsearch before "
        "on-disk format 2 as memory-mapped Arrow + float32 files, so the collection opens "
        "without reading its data, and gives later segments what they lack of their id "
        "index (format 3) and row checksums (format 4). Rows, deletes and the saved index "
        "are kept. The next write does the same by itself; this does it ahead of time.",
    )
    p.add_argument("name", help="collection name (under EMBEDSEARCH_HOME) or path")
    p.set_defaults(func=cmd_upgrade)


def _print_problems(problems: list[Any]) -> None:
    for p in problems:
        print(f"  {p.severity:<7} {p.kind:<18} {p.file}: {p.detail}")


def cmd_verify(args: argparse.Namespace) -> int:
    from ..maintenance import verify
    from ..validation import resolve_path

    report = verify(resolve_path(args.name))
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        state = "OK" if report.ok else "DAMAGED"
        print(
            f"{state}: {report.path}: {report.segments} segment(s), {report.rows} rows, "
            f"{report.live} live, {report.files_checked} file(s) checked, "
            f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)"
        )
        _print_problems(report.problems)
        if not report.ok:
            print(f"run `embedsearch repair {args.name}` to quarantine damaged files")
    return 0 if report.ok else 1


def cmd_repair(args: argparse.Namespace) -> int:
    from ..maintenance import repair
    from ..validation import resolve_path

    report = repair(resolve_path(args.name), rebuild_index=not args.no_index)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(f"repaired {report.path}")
        for name in report.quarantined:
            print(f"  quarantined {name}")
        for name in report.removed_leftovers:
            print(f"  removed leftover {name}")
        if report.lost_rows or report.lost_tombstone_files:
            print(
                f"  lost {report.lost_rows} row(s) in unreadable segments and "
                f"{report.lost_tombstone_files} tombstone file(s) (deleted documents of those "
                "operations are visible again)"
            )
        if report.versions_dropped:
            shown = ", ".join(str(v) for v in report.versions_dropped)
            print(f"  forgot past version(s) {shown}: they named a quarantined file")
        if report.index_rebuilt:
            print("  rebuilt the FAISS index")
        if report.after is not None:
            print(f"  now: {'OK' if report.after.ok else 'still damaged'}")
            _print_problems(report.after.problems)
    return 0 if report.ok else 1


def cmd_upgrade(args: argparse.Namespace) -> int:
    from ..collection import open as open_collection
    from ..validation import resolve_path

    col = open_collection(resolve_path(args.name), create=False)
    try:
        done = col.upgrade()
        info = col.info()
    finally:
        col.close()
    if done["segments"]:
        print(
            f"upgraded {info['path']}: {done['segments']} segment(s), {done['rows']:,} rows "
            f"brought to format {info['format_version']}"
        )
    else:
        print(f"{info['path']} is already in format {info['format_version']}; nothing to do")
    return 0
