"""The ``embedsearch`` command line.

Each ``embedsearch/cli/cmd_*.py`` module contributes sub-commands through
``register(subparsers)``, and :data:`COMMAND_MODULES` lists them: the command list is
declared here, in code (a new ``cmd_*.py`` goes into that tuple; ``tests/test_cli.py``
checks that none is forgotten). Heavy imports (torch, faiss, fastapi) stay inside the
command functions so that ``embedsearch --help`` and light commands start fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from ..errors import EmbedSearchError
from . import (
    cmd_core,
    cmd_distributed,
    cmd_encoder,
    cmd_latent,
    cmd_maintenance,
    cmd_mcp,
    cmd_rag,
    cmd_serve,
    cmd_versions,
)

#: The modules whose ``register(subparsers)`` add sub-commands, in ``--help`` order.
COMMAND_MODULES: tuple[ModuleType, ...] = (
    cmd_core,
    cmd_distributed,
    cmd_encoder,
    cmd_latent,
    cmd_maintenance,
    cmd_mcp,
    cmd_rag,
    cmd_serve,
    cmd_versions,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command of :data:`COMMAND_MODULES`."""
    parser = argparse.ArgumentParser(
        prog="embedsearch", description="Semantic search over text collections on disk."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, and turn EmbedSearchError into a one-line message + exit 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _show_model_export(args.verbose)
    try:
        return int(args.func(args) or 0)
    except EmbedSearchError as exc:
        from ..wording import reword

        print(f"error: {reword(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; committed work is kept", file=sys.stderr)
        return 130


def _show_model_export(verbose: bool) -> None:
    """Let the one-time export of a model's encoder be seen (it takes seconds, once)."""
    if verbose:
        return  # basicConfig at INFO shows it already
    log = logging.getLogger("embedsearch.onnx_backend")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("note: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
