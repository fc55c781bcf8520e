"""History commands: versions, tag, untag, restore, retention, snapshot, restore-snapshot, diff."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .common import open_existing


def _version(text: str) -> int | str:
    """A version argument: a number (negative counts back from the newest) or a tag."""
    return int(text) if text.lstrip("-").isdigit() else text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("versions", help="list the kept versions of a collection")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_versions)

    p = sub.add_parser("tag", help="name a version so retention keeps it")
    p.add_argument("name")
    p.add_argument("tag", help="tag name, e.g. before-cleanup")
    p.add_argument("--version", help="version number or tag to name (default: the newest)")
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser("untag", help="remove a tag")
    p.add_argument("name")
    p.add_argument("tag")
    p.set_defaults(func=cmd_untag)

    p = sub.add_parser("restore", help="make a kept version the newest again (a new commit)")
    p.add_argument("name")
    p.add_argument("version", help="version number (negative: back from the newest) or tag")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("retention", help="show or set how long untagged versions are kept")
    p.add_argument("name")
    p.add_argument("--keep-days", type=float, help="days to keep untagged versions (0: none)")
    p.set_defaults(func=cmd_retention)

    p = sub.add_parser(
        "snapshot",
        help="write a consistent, checksummed tar of a collection (safe while it is in use)",
    )
    p.add_argument("name")
    p.add_argument("file", help="the archive to write, e.g. news.tar")
    p.add_argument("--version", help="a kept version (number or tag); default the newest")
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser(
        "restore-snapshot",
        help="verify a snapshot archive and restore it as a new collection",
        description="Every member and checksum is verified before the collection appears; a "
        "damaged or hostile archive (links, devices, path traversal, oversize or duplicate "
        "members) is refused and nothing is left behind.",
    )
    p.add_argument("file", help="the archive written by `embedsearch snapshot`")
    p.add_argument("name", help="the new collection's name (must not exist)")
    p.set_defaults(func=cmd_restore_snapshot)

    p = sub.add_parser(
        "diff",
        help="what changed between two versions: ids, topics, centroid, probe queries, a map",
    )
    p.add_argument("name")
    p.add_argument("a", help="the older version (number, negative offset or tag)")
    p.add_argument("b", nargs="?", help="the newer version (default: the newest)")
    p.add_argument(
        "--probe", action="append", default=[], help="a query whose top-k is compared (repeat)"
    )
    p.add_argument("-k", type=int, default=10, help="depth of the probe comparison (default 10)")
    p.add_argument("--clusters", type=int, help="number of topics (default: by size)")
    p.add_argument("--map", help="also draw both versions side by side (.png or .html)")
    p.add_argument("--json", action="store_true", help="print the whole diff as JSON")
    p.set_defaults(func=cmd_diff)


def _print_versions(rows: list[Any]) -> None:
    print(f"{'version':>8}  {'time':<25} {'op':<8} {'added':>8} {'deleted':>8} {'rows':>9}  tags")
    for v in rows:
        mark = " *" if v.current else ""
        print(
            f"{v.version:>8}  {v.time:<25} {v.op:<8} {v.added:>8} {v.deleted:>8} {v.rows:>9}  "
            f"{','.join(v.tags)}{mark}"
        )


def cmd_versions(args: argparse.Namespace) -> int:
    col = open_existing(args.name)
    rows = col.versions()
    if args.json:
        json.dump([v.to_dict() for v in rows], sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        _print_versions(rows)
        print(f"({len(rows)} kept; untagged versions are kept {col.keep_days:g} days; * = newest)")
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    with open_existing(args.name) as col:
        n = col.tag(args.tag, None if args.version is None else _version(args.version))
    print(f"tagged version {n} of {args.name} as {args.tag!r}")
    return 0


def cmd_untag(args: argparse.Namespace) -> int:
    with open_existing(args.name) as col:
        col.untag(args.tag)
    print(f"removed tag {args.tag!r} from {args.name}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    with open_existing(args.name) as col:
        n = col.restore(_version(args.version))
    print(f"restored {args.name} to the state of version {args.version} as version {n}")
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    with open_existing(args.name) as col:
        if args.keep_days is not None:
            col.set_retention(args.keep_days)
        print(f"{args.name}: untagged versions are kept {col.keep_days:g} days; tagged ones always")
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    col = open_existing(args.name)
    info = col.snapshot(args.file, None if args.version is None else _version(args.version))
    print(
        f"wrote {info.path}: version {info.version} of {args.name}, {info.files} files, "
        f"{info.bytes / 1e6:.1f} MB in {info.seconds:.2f} s ({info.mb_per_s:.0f} MB/s)"
    )
    return 0


def cmd_restore_snapshot(args: argparse.Namespace) -> int:
    from ..snapshot import restore_snapshot

    info = restore_snapshot(args.file, args.name)
    print(
        f"restored {args.name} (version {info.version}, {info.files} files, all checksums "
        f"verified) from {info.path} in {info.seconds:.2f} s ({info.mb_per_s:.0f} MB/s)"
    )
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    col = open_existing(args.name)
    d = col.diff(
        _version(args.a),
        None if args.b is None else _version(args.b),
        probes=args.probe,
        k=args.k,
        clusters=args.clusters,
        map_path=args.map,
    )
    if args.json:
        json.dump(d.to_dict(), sys.stdout, indent=1, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print(d.summary())
    return 0
