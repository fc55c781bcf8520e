"""Helpers shared by CLI commands: opening collections, printing hits."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from ..errors import InvalidInputError


def open_existing(name: str, *, for_queries: bool = False) -> Any:
    """Open a collection that must already exist.

    ``for_queries``: the command only embeds queries, so it may use the cached ONNX export
    of a ``torch`` collection's model (same vectors, no torch import; see
    :func:`embedsearch.encoder.query_backend`).
    """
    from .. import open as open_collection

    backend = _fast_query_backend(name) if for_queries else None
    return open_collection(name, create=False, backend=backend)


def _fast_query_backend(name: str) -> str | None:
    from .. import store
    from ..collection import resolve_path
    from ..encoder import query_backend
    from ..errors import EmbedSearchError

    try:
        manifest = store.read_manifest(resolve_path(name))
    except (EmbedSearchError, OSError):
        return None  # open() reports the problem properly
    model = manifest["model"]
    return query_backend(model["name"], model.get("backend"))


def prepare_fast_queries(col: Any) -> None:
    """After a command that loaded torch anyway, cache the ONNX export that lets later
    query commands skip torch (once per model; a failure only costs the fast path)."""
    import logging

    from ..encoder import export_for_queries

    try:
        export_for_queries(col.model, col.encoder.backend)
    except Exception as exc:  # noqa: BLE001 - an optimisation must never fail the command
        logging.getLogger(__name__).info("no ONNX export for fast queries (%s)", exc)


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
