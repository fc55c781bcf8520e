"""The on-disk layout of a sharded collection and the actor that serves one shard.

Layout::

    <root>/sharded.json     the commit point of the layout: shard count, hash, model
    <root>/shard-0000/ …    N ordinary collections (``embedsearch.open`` reads each one)

A document lives in shard ``blake2b(id) mod N`` (:func:`shard_of`): the same in every
process and on every machine (Python's ``hash()`` is salted per process, so it is not used).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .. import durable, store
from ..base import COMPACT_MIN_DELETED_SHARE
from ..errors import EmbedSearchError, InvalidInputError, NotACollectionError
from ..types import Document, Hit

SHARDED_FILE = "sharded.json"
SHARDED_FORMAT = "embedsearch-sharded"
SHARD_DIR = "shard-{:04d}"
HASH_NAME = "blake2b-64-mod"
MAX_SHARDS = 4096
_SHARD_RE = re.compile(r"^shard-\d{4}$")


def shard_of(doc_id: str, shards: int) -> int:
    """The shard holding ``doc_id``: the first 8 bytes of its BLAKE2b hash, mod ``shards``."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def is_sharded(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds a sharded collection (``sharded.json``)."""
    return (Path(path) / SHARDED_FILE).is_file()


# --------------------------------------------------------------------------- shard actor
class ShardServer:
    """Serves one shard (an ordinary collection) inside a Ray actor."""

    def __init__(self, path: str, backend: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from ..collection import open as open_collection

        self.col = open_collection(Path(path), create=False, backend=backend)

    def search(self, qvecs: np.ndarray, k: int, kwargs: dict[str, Any]) -> list[list[Hit]]:
        return self.col.batch_search(list(qvecs), k, **kwargs)

    def add(
        self,
        texts: list[str],
        ids: list[str],
        metadata: list[dict[str, Any] | None],
        vectors: np.ndarray | None,
        upsert: bool,
    ) -> list[str]:
        write = self.col.upsert if upsert else self.col.add
        return write(texts, ids=ids, metadata=metadata, vectors=vectors, progress=False)

    def delete(self, ids: list[str], missing_ok: bool) -> int:
        return self.col.delete(ids, missing_ok=missing_ok)

    def missing(self, ids: list[str]) -> list[str]:
        self.col.refresh()
        return [i for i in ids if i not in self.col]

    def get(self, ids: list[str], include_vectors: bool) -> tuple[list[Document], list[str]]:
        self.col.refresh()
        missing = [i for i in ids if i not in self.col]
        found = [i for i in ids if i in self.col]
        return self.col.get(found, include_vectors=include_vectors) if found else [], missing

    def ids(self) -> list[str]:
        return self.col.ids()

    def vectors(self, ids: list[str] | None) -> np.ndarray:
        return self.col.vectors(ids)

    def count(self) -> int:
        return len(self.col)

    def info(self) -> dict[str, Any]:
        return self.col.info()

    def state_key(self) -> str:
        return self.col.state_key

    def compact(self, min_deleted_share: float = COMPACT_MIN_DELETED_SHARE) -> dict[str, int]:
        return self.col.compact(min_deleted_share)

    def reindex(self, spec: str) -> None:
        self.col.reindex(spec)

    def close(self) -> None:
        self.col.close()

    def ping(self) -> int:
        return os.getpid()


# --------------------------------------------------------------------------- layout
def read_layout(root: Path) -> dict[str, Any]:
    """Read and check ``sharded.json``.

    Raises:
        NotACollectionError: no (or a foreign) ``sharded.json``.
    """
    try:
        obj = json.loads(durable.read_bytes(root, SHARDED_FILE))  # never through a link
    except (FileNotFoundError, NotADirectoryError):
        raise NotACollectionError(
            f"{root} has no {SHARDED_FILE}: it is not a sharded collection."
        ) from None
    except ValueError as exc:
        raise EmbedSearchError(f"{root / SHARDED_FILE} is not valid JSON ({exc}).") from exc
    if obj.get("format") != SHARDED_FORMAT or obj.get("hash") != HASH_NAME:
        raise NotACollectionError(f"{root / SHARDED_FILE} is not an embedsearch sharded layout.")
    return obj


def create_layout(
    root: Path, shards: int, model: str | None, index: str, backend: str | None
) -> dict[str, Any]:
    """Create ``shards`` empty collections under ``root``, then commit ``sharded.json``.

    ``sharded.json`` is written last (atomically), so an interrupted creation leaves no
    half-made sharded collection, only shard directories that a retry reuses.
    """
    from ..collection import open as open_collection

    if not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards <= MAX_SHARDS:
        raise InvalidInputError(
            f"shards must be an integer from 1 to {MAX_SHARDS}, got {shards!r}."
        )
    if root.exists():
        stray = [p.name for p in root.iterdir() if not _SHARD_RE.match(p.name) and p.name != "LOCK"]
        if stray:
            raise NotACollectionError(
                f"{root} exists and is not a sharded collection (it holds {stray[:3]}); choose "
                "another path."
            )
    durable.make_dirs(root)  # fsynced into its parent: survives a power cut
    described = None
    for i in range(shards):
        with open_collection(
            root / SHARD_DIR.format(i), model=model, index=index, backend=backend
        ) as col:
            described = col.info()["model"]
    layout = {
        "format": SHARDED_FORMAT,
        "version": 1,
        "hash": HASH_NAME,
        "shards": shards,
        "dirs": [SHARD_DIR.format(i) for i in range(shards)],
        "model": described,
        "index": index,
        "created": store.now_iso(),
    }
    store.atomic_write(root / SHARDED_FILE, json.dumps(layout, indent=1).encode())  # commit point
    return layout
