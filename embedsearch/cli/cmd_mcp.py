"""``embedsearch mcp``: the collections as Model Context Protocol tools over stdio (for agents)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mcp",
        help="serve the collections to AI agents over MCP (stdio)",
        description="A Model Context Protocol server over stdio: tools list_collections, "
        "search, retrieve and get (plus add, upsert and delete with --allow-writes). An MCP "
        "client starts it as a subprocess; see the README for a client configuration.",
    )
    p.add_argument(
        "--home", help="directory of collections (default EMBEDSEARCH_HOME or ./indexes)"
    )
    p.add_argument(
        "--allow-writes",
        action="store_true",
        help="also offer the add, upsert and delete tools (off: the agent can only read)",
    )
    p.set_defaults(func=cmd_mcp)


def cmd_mcp(args: argparse.Namespace) -> int:
    import torch  # noqa: F401 - before faiss: one OpenMP runtime set up first (FINDINGS.md)

    from ..server.mcp_server import run_stdio
    from .common import open_existing

    home = Path(args.home).expanduser().resolve() if args.home else None
    # open_existing: an unknown collection is the CLI's own message, word for word
    run_stdio(home, allow_writes=args.allow_writes, opener=open_existing)
    return 0
