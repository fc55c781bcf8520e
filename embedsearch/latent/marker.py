"""The vocabulary marker: the small file that says a collection is a word list.

A :class:`~embedsearch.Vocabulary` writes ``derived/vocabulary/vocabulary.json`` into its
collection; the latent layer reads it to resolve a single-word term as a vocabulary entry
(see :mod:`embedsearch.latent.mixin`). Reading lives here, below both, so the query layer
never imports :mod:`embedsearch.vocabulary` (which is built on top of collections).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .. import durable
from ..errors import EmbedSearchError, NotACollectionError

MARKER_DIR = Path("derived") / "vocabulary"
MARKER_FILE = "vocabulary.json"


def read_marker(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The vocabulary marker of the collection at ``path``, or None if it is not one."""
    file = Path(path) / MARKER_DIR / MARKER_FILE
    try:
        data = json.loads(durable.read_bytes(Path(path), MARKER_DIR / MARKER_FILE).decode("utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError, EmbedSearchError) as exc:
        raise NotACollectionError(
            f"{file} is unreadable ({exc}); delete it and rebuild the vocabulary."
        ) from exc
    return data if isinstance(data, dict) and data.get("kind") == "vocabulary" else None


__all__ = ["MARKER_DIR", "MARKER_FILE", "read_marker"]
