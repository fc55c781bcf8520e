"""Helpers shared by CLI commands: opening collections, printing hits."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from ..errors import InvalidInputError


def open_existing(name: str) -> Any:
    """Open a collection that must already exist."""
    from ..collection import open as open_collection

    return open_collection(name, create=False)


def parse_json_arg(text: str | None, what: str) -> Any:
    """Parse a JSON command-line argument with an error that names the option."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(f"{what} is not valid JSON ({exc}).") from exc


def print_hits(hits: Sequence[Any], *, as_json: bool, width: int = 100) -> None:
    """Print ranked hits as a table, or as JSON lines of {id, score, text, metadata}."""
    if as_json:
        json.dump([h.to_dict() for h in hits], sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return
    for rank, hit in enumerate(hits, 1):
        text = " ".join(hit.text.split())
        if len(text) > width:
            text = text[: width - 1] + "…"
        meta = f"  {json.dumps(hit.metadata, ensure_ascii=False)}" if hit.metadata else ""
        print(f"{rank:>3}. {hit.score:.3f}  {hit.id}  {text}{meta}")
