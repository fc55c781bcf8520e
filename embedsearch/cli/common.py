"""Helpers shared by CLI commands: opening collections, printing hits, explaining results."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..errors import CollectionNotFoundError, InvalidInputError

#: How many documents' metadata :func:`explain_empty` samples to explain a filter.
HINT_SAMPLE = 2000


def open_existing(name: str, version: str | None = None, *, embeds: bool = False) -> Any:
    """Open a collection that must already exist ("did you mean" on a mistyped name); with
    ``version`` (a number or tag), a read-only view of that kept past version.

    ``embeds``: the command will embed a query, so the collection's encoder is loaded in a
    thread while the collection opens (ONNX session set-up beside the index load: both
    mostly outside the GIL; at 1M rows they are 0.4 s and 0.5 s of a cold search).
    """
    from ..catalog import did_you_mean
    from ..collection import open as open_collection
    from ..validation import resolve_path

    if embeds:
        _prefetch_encoder(resolve_path(name))
    try:
        return open_collection(name, create=False, version=version)
    except CollectionNotFoundError as exc:
        path = resolve_path(name)
        raise CollectionNotFoundError(
            f"No collection {path.name!r} under {path.parent}.{did_you_mean(path.name, path.parent)}"
            f" `embedsearch list` shows the collections; `embedsearch index {name} FILES...` "
            "creates one (set EMBEDSEARCH_HOME or pass a path for another folder)."
        ) from exc


def _prefetch_encoder(path: Any) -> None:
    import threading

    def load() -> None:
        from ..encoder import get_encoder
        from ..store import read_manifest

        try:
            manifest = read_manifest(path)
            get_encoder(manifest.model_name, manifest.model.get("backend"))
        except Exception:  # noqa: BLE001 - the command itself reports what is wrong
            return

    threading.Thread(target=load, name="embedsearch-encoder", daemon=True).start()


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


def long_query_note(col: Any, query: str) -> bool:
    """Say on stderr when a query is longer than the model window (its start is embedded).

    Every CLI path that embeds a query (search, retrieve) calls this and then embeds the
    query's start, so a long query is treated the same everywhere.
    """
    enc = col.encoder
    n = enc.token_count(query)
    if n <= enc.max_seq_length:
        return False
    print(
        f"note: the query is {n} tokens; the model reads only its first {enc.max_seq_length}, "
        "so the rest is ignored. Shorten it for a sharper search.",
        file=sys.stderr,
    )
    return True


def writer_of(path: Any) -> str | None:
    """Who holds the collection's writer lock (``pid=… host=… since=…``), or None."""
    import socket

    from ..durable import read_bytes
    from ..errors import EmbedSearchError

    try:  # never through a link: a LOCK pointing at a secret must not print it
        text = read_bytes(path, "LOCK")[:500].decode("utf-8", "replace").strip()
    except (OSError, EmbedSearchError):
        return None
    fields = dict(f.split("=", 1) for f in text.split() if "=" in f)
    try:
        pid = int(fields.get("pid", ""))
    except ValueError:
        return None
    if fields.get("host") == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # a crashed writer: the kernel has released its lock
        except PermissionError:
            pass
    return text


def explain_empty(col: Any, where: Any) -> None:
    """Say on stderr why a search found nothing: an empty collection (being written by
    another process?), or a filter that no document matches (and why, when we can tell)."""
    from ..filter_hints import filter_hints

    total = len(col)
    if total == 0:
        busy = writer_of(col.path)
        why = (
            f"; another process is writing to it now ({busy}): results appear as its batches "
            "are committed"
            if busy
            else f"; add documents with `embedsearch index {col.name} FILES...`"
        )
        print(f"no results: collection {col.name!r} holds 0 documents{why}.", file=sys.stderr)
        return
    if where is None:
        print(f"no results among {total:,} documents.", file=sys.stderr)
        return
    print(
        f"no results: 0 of {total:,} documents match the filter {json.dumps(where)}.",
        file=sys.stderr,
    )
    ids = col.ids()[:HINT_SAMPLE]
    for hint in filter_hints(where, [d.metadata for d in col.get(ids)]):
        print(f"hint: {hint}", file=sys.stderr)
