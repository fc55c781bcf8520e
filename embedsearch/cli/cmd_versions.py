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
    col = open_existing(args.name)
    try:
        n = col.tag(args.tag, None if args.version is None else _version(args.version))
    finally:
        col.close()
    print(f"tagged version {n} of {args.name} as {args.tag!r}")
    return 0


def cmd_untag(args: argparse.Namespace) -> int:
    col = open_existing(args.name)
    try:
        col.untag(args.tag)
    finally:
        col.close()
    print(f"removed tag {args.tag!r} from {args.name}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    col = open_existing(args.name)
    try:
        n = col.restore(_version(args.version))
    finally:
        col.close()
    print(f"restored {args.name} to the state of version {args.version} as version {n}")
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    col = open_existing(args.name)
    try:
        if args.keep_days is not None:
            col.set_retention(args.keep_days)
        print(f"{args.name}: untagged versions are kept {col.keep_days:g} days; tagged ones always")
    finally:
        col.close()
    return 0
