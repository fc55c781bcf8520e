"""The ``embedsearch`` command line.

Each ``embedsearch/cli/cmd_*.py`` module contributes sub-commands through
``register(subparsers)``, and :data:`COMMAND_MODULES` lists them: the command list is
declared here, in code (a new ``cmd_*.py`` goes into that tuple; ``tests/test_cli.py``
checks that none is forgotten). Heavy imports (torch, faiss, fastapi) stay inside the
command functions so that ``embedsearch --help`` and light commands start fast.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

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


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    """``parser``'s sub-commands (argparse has no public accessor for them)."""
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``parse_args``, with errors in the words of the command the user typed.

    argparse reports an unknown flag of a sub-command with the top-level usage
    (``usage: embedsearch [-h] [-v] COMMAND ...``) and a mistyped command with the list of
    all 40; here the first names the sub-command, its usage and the nearest flag, and the
    second the nearest command."""
    sub = _subparsers(parser)
    commands = dict(sub.choices) if sub is not None else {}
    words = [a for a in argv if not a.startswith("-")]
    if words and words[0] not in commands and not any(a in ("-h", "--help") for a in argv):
        near = difflib.get_close_matches(words[0], list(commands), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        parser.error(f"unknown command '{words[0]}'{hint}; 'embedsearch --help' lists them")
    args, extras = parser.parse_known_args(argv)
    if extras:
        _unrecognized(_innermost(parser, args), extras)
    return args


def _innermost(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The parser of the (sub-)sub-command ``args`` chose: ``embedsearch vocab build``'s."""
    while (sub := _subparsers(parser)) is not None:
        chosen = sub.choices.get(getattr(args, sub.dest, None) or "")
        if chosen is None:
            break
        parser = chosen
    return parser


def _unrecognized(parser: argparse.ArgumentParser, extras: list[str]) -> NoReturn:
    """Exit 2 naming what ``parser`` (a sub-command's) did not take, with a hint for each."""
    flags = [s for action in parser._actions for s in action.option_strings]
    hints, loose = [], False
    for i, extra in enumerate(extras):
        if extra.startswith("-"):
            near = difflib.get_close_matches(extra.split("=", 1)[0], flags, n=1, cutoff=0.6)
            if near:
                hints.append(f"did you mean {near[0]}?")
        elif i == 0 or not extras[i - 1].startswith("-"):  # not an unknown flag's value
            loose = True
    if loose:
        hints.append('quote a text that has spaces: "like this"')
    hint = f" ({'; '.join(hints)})" if hints else ""
    parser.error(
        f"unrecognized arguments: {' '.join(extras)}{hint}; "
        f"'{parser.prog} --help' lists its options"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, and turn EmbedSearchError into a one-line message + exit 2."""
    args = _parse(build_parser(), sys.argv[1:] if argv is None else list(argv))
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
