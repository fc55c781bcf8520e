"""The collections in a home directory: list them (with counts, sizes, models), drop one, and
suggest the name a user probably meant.

Listing reads each collection's ``manifest.json`` only (no data, no model), so it stays fast
however large the collections are. Collections that embedsearch builds for itself are
marked with a ``kind``: ``vocabulary`` (word lists for analogies), ``evaluation`` (BEIR
builds); ``collection`` is an ordinary one and ``sharded`` a Ray-sharded one.

Example:
    >>> embedsearch.list_collections()
    [CollectionSummary(name='notes', count=2, bytes=4211, model='all-MiniLM-L6-v2', ...)]
    >>> embedsearch.drop("notes")
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import durable, store
from .errors import CollectionNotFoundError, InvalidInputError
from .validation import home as default_home
from .validation import resolve_path, validate_name

SHARDED_FILE = "sharded.json"  # the layout file of a sharded collection (distributed/layout.py)
HELPER_KINDS = ("vocabulary", "evaluation")
#: ``.deleted-<name>-<pid>-<random>``: a collection being removed by :func:`drop`.
ABANDONED_TRASH = re.compile(r"\.deleted-[A-Za-z0-9_.-]+-(?P<pid>\d+)-[0-9a-f]{12}")


@dataclass(frozen=True)
class CollectionSummary:
    """One collection as :func:`list_collections` sees it (from its manifest)."""

    name: str
    path: str
    kind: str
    count: int | None
    bytes: int
    model: str | None
    dim: int | None
    updated: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_collection(path: Path) -> bool:
    return (path / store.MANIFEST).is_file() or (path / SHARDED_FILE).is_file()


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def _kind(path: Path) -> str:
    if (path / SHARDED_FILE).is_file():
        return "sharded"
    if (path / "derived" / "vocabulary" / "vocabulary.json").is_file():
        return "vocabulary"
    if (path / "derived" / "beir" / "source.json").is_file():
        return "evaluation"
    return "collection"


def _summary(path: Path) -> CollectionSummary:
    kind = _kind(path)
    count: int | None = None
    model = dim = updated = None
    try:
        raw = json.loads(
            (path / (SHARDED_FILE if kind == "sharded" else store.MANIFEST)).read_text()
        )
        m = raw.get("model") or {}
        model = m.get("name") if isinstance(m, dict) else m
        dim = m.get("dim") if isinstance(m, dict) else raw.get("dim")
        updated = raw.get("updated")
        if kind == "sharded":  # the sum over its shards, each a collection of its own
            shards = [_summary(p) for p in sorted(path.glob("shard-*")) if _is_collection(p)]
            if shards and all(sh.count is not None for sh in shards):
                count = sum(sh.count for sh in shards)  # type: ignore[misc]
            updated = max((sh.updated for sh in shards if sh.updated), default=updated)
        segs, dels = raw.get("segments"), raw.get("tombstones")
        if isinstance(segs, list) and isinstance(dels, list):
            count = sum(int(s.get("rows", 0)) for s in segs) - sum(
                int(t.get("rows", 0)) for t in dels
            )
    except (OSError, ValueError, TypeError, AttributeError):
        pass  # listed with what is known; `embedsearch info NAME` says what is wrong
    return CollectionSummary(
        path.name, str(path), kind, count, _dir_bytes(path), model, dim, updated
    )


def list_collections(
    home: str | os.PathLike[str] | None = None, *, helpers: bool = False
) -> list[CollectionSummary]:
    """The collections under ``home`` (default ``EMBEDSEARCH_HOME`` or ``./indexes``), sorted.

    Args:
        home: the directory of collections.
        helpers: also list the collections embedsearch builds for itself (vocabularies,
            evaluation builds); they are left out by default.
    """
    root = Path(home).expanduser() if home is not None else default_home()
    if not root.is_dir():
        return []
    out = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir() or not _is_collection(entry):
            continue
        s = _summary(entry)
        if helpers or s.kind not in HELPER_KINDS:
            out.append(s)
    return out


def names(home: str | os.PathLike[str] | None = None) -> list[str]:
    """Every collection name under ``home``, helpers included."""
    return [s.name for s in list_collections(home, helpers=True)]


def did_you_mean(name: str, home: str | os.PathLike[str] | None = None) -> str:
    """`` Did you mean 'notes'?`` for a mistyped name (empty when nothing is close)."""
    close = difflib.get_close_matches(str(name), names(home), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def drop(name_or_path: str | os.PathLike[str], *, missing_ok: bool = False) -> bool:
    """Delete a collection and all its files. There is no undo.

    The directory is first renamed to a hidden name (never a valid collection name) while the
    writer lock is held, so the name is free at once and no reader can open a half-deleted
    collection; then the files are removed.

    Args:
        name_or_path: a bare name under ``EMBEDSEARCH_HOME`` or a path.
        missing_ok: return False instead of raising when there is no such collection.

    Returns:
        True when a collection was deleted.

    Raises:
        CollectionNotFoundError: no collection there (with a "did you mean").
        LockedError: another process is writing to it.
        InvalidInputError: the path holds something that is not a collection.
    """
    path = resolve_path(name_or_path)
    if not _is_collection(path):
        if missing_ok and not path.exists():
            return False
        if path.exists():
            raise InvalidInputError(
                f"{path} is not an embedsearch collection (no manifest.json); not deleting it."
            )
        hint = did_you_mean(path.name, path.parent)
        raise CollectionNotFoundError(f"No collection {path.name!r} under {path.parent}.{hint}")
    validate_name(path.name)
    dirs = [path]
    if (path / SHARDED_FILE).is_file():
        dirs = sorted(p for p in path.iterdir() if p.is_dir() and p.name.startswith("shard-"))
    locks = [store.WriterLock(d) for d in dirs]
    durable.sweep_abandoned(path.parent, ABANDONED_TRASH)  # a killed drop's leftovers
    trash = path.parent / f".deleted-{path.name}-{durable.owner_tag()}"
    taken = []
    try:
        for lock in locks:
            lock.acquire()  # LockedError while another process writes
            taken.append(lock)
        os.replace(path, trash)
    finally:
        for lock in taken:
            lock.release()
    shutil.rmtree(trash, ignore_errors=True)
    return True
