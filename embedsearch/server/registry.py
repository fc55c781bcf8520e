"""Open collections by bare name, one shared handle per collection.

Every request for collection ``news`` gets the same :class:`~embedsearch.Collection` object:
its index lives in memory once, concurrent searches share it, and its single writer
serialises adds. Names are checked with :func:`embedsearch.collection.validate_name`, so
an HTTP client can never name a path outside the server's home directory.

With several worker processes (``serve --workers N``) each process has its own handles, and
only one process may hold a collection's write lock at a time. In that mode
(``shared_writes=True``) a write opens a short-lived handle, commits, and closes it again,
releasing the lock for the next worker; the other workers' read handles pick the commit up on
their next call. A write that finds the lock held waits up to ``write_wait_s`` and then
answers 423.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from .. import store
from ..collection import Collection, validate_name
from ..collection import open as open_collection
from ..encoder import DEFAULT_MODEL, default_model_name
from ..errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    InvalidInputError,
    LockedError,
)

log = logging.getLogger("embedsearch.server")
T = TypeVar("T")
_DEFAULT_NAMES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}


def canonical_model(name: str) -> str:
    """Fold the aliases of the default model into its one name."""
    return DEFAULT_MODEL if name in _DEFAULT_NAMES else name


class Registry:
    """The collections under one home directory, opened on first use and kept open.

    Args:
        home: the directory holding collections (created if missing).
        models: model names clients may create collections with (default: the default
            model). Collections already on disk open with whatever model built them.
        shared_writes: release the write lock after every write (several worker processes).
        write_wait_s: how long a write waits for a write lock held elsewhere before 423.
    """

    def __init__(
        self,
        home: Path,
        *,
        models: Sequence[str] | None = None,
        shared_writes: bool = False,
        write_wait_s: float = 5.0,
    ) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.models = [canonical_model(m) for m in (models or [default_model_name()])]
        self.shared_writes = shared_writes
        self.write_wait_s = write_wait_s
        self._handles: dict[str, Collection] = {}
        self._lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}

    # ------------------------------------------------------------------ naming
    def path(self, name: str) -> Path:
        """``<home>/<name>`` for a valid bare name (422 otherwise)."""
        return self.home / validate_name(name)

    def _exists(self, path: Path) -> bool:
        return (path / store.MANIFEST).is_file()

    def _not_found(self, name: str) -> CollectionNotFoundError:
        return CollectionNotFoundError(
            f"Collection {name!r} does not exist. List collections with GET /collections, or "
            "create it with POST /collections."
        )

    def _name_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._name_locks.setdefault(name, threading.Lock())

    def names(self) -> list[str]:
        """Names of the collections on disk, sorted."""
        if not self.home.is_dir():
            return []
        out = []
        for entry in self.home.iterdir():
            try:
                validate_name(entry.name)
            except InvalidInputError:
                continue
            if self._exists(entry):
                out.append(entry.name)
        return sorted(out)

    def check_model(self, model: str | None) -> str:
        """The model a new collection gets: ``model`` if allowed, else 422 naming the choices."""
        if model is None:
            return self.models[0]
        name = canonical_model(model)
        if name not in self.models:
            raise InvalidInputError(
                f"model {model!r} is not available on this server; choose one of "
                f"{self.models} (GET /v1/models)."
            )
        return name

    # ------------------------------------------------------------------ handles
    def get(self, name: str) -> Collection:
        """The shared handle of an existing collection (404 if there is none)."""
        path = self.path(name)
        col = self._handles.get(name)
        if col is not None:
            if path.is_dir():
                return col
            self._evict(name, col)  # deleted by another process or worker
        with self._name_lock(name):
            col = self._handles.get(name)
            if col is not None:
                return col
            if not self._exists(path):
                raise self._not_found(name)
            try:
                col = open_collection(path, create=False)
            except CollectionNotFoundError:
                raise self._not_found(name) from None
            self._handles[name] = col
            return col

    def _evict(self, name: str, col: Collection) -> None:
        with self._lock:
            if self._handles.get(name) is col:
                del self._handles[name]
        with contextlib.suppress(Exception):
            col.close()

    def open_handles(self) -> dict[str, Collection]:
        """A snapshot of the handles opened so far (for metrics)."""
        return dict(self._handles)

    def create(self, name: str, *, model: str | None = None, index: str = "auto") -> Collection:
        """Create a collection (409 if the name is taken)."""
        path = self.path(name)
        model_name = self.check_model(model)
        with self._name_lock(name):
            if self._exists(path) or path.exists():
                raise CollectionExistsError(
                    f"Collection {name!r} already exists; delete it first (DELETE "
                    "/collections/{name}) or choose another name."
                )
            col = open_collection(path, model=model_name, index=index, create=True)
            self._handles[name] = col
            return col

    def drop(self, name: str) -> None:
        """Delete a collection and its files (404 if it does not exist; 423 if locked elsewhere).

        The directory is first renamed to a hidden name (invalid as a collection name), so the
        name is free at once and no reader can open a half-deleted collection.
        """
        path = self.path(name)
        with self._name_lock(name):
            if not self._exists(path):
                raise self._not_found(name)
            col = self._handles.pop(name, None)
            if col is not None:
                col.close()  # waits for a running write, then releases the lock
            lock = store.WriterLock(path)
            lock.acquire()  # LockedError (423) while another process writes
            trash = self.home / f".deleted-{name}-{uuid.uuid4().hex[:8]}"
            try:
                os.replace(path, trash)
            finally:
                lock.release()
        shutil.rmtree(trash, ignore_errors=True)

    def write(self, name: str, fn: Callable[[Collection], T]) -> T:
        """Run a write (``fn(collection)``), waiting a while for a write lock held elsewhere.

        A write that fails with :class:`LockedError` has changed nothing, so it is retried
        until ``write_wait_s`` has passed.
        """
        deadline = time.monotonic() + self.write_wait_s
        delay = 0.02
        while True:
            try:
                if not self.shared_writes:
                    return fn(self.get(name))
                with self._name_lock(f"write:{name}"):
                    if not self._exists(self.path(name)):
                        raise self._not_found(name)
                    with open_collection(self.path(name), create=False) as col:
                        return fn(col)
            except LockedError:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def close_all(self) -> None:
        """Close every handle: save indexes that are behind and release write locks."""
        with self._lock:
            handles, self._handles = self._handles, {}
        for name, col in handles.items():
            try:
                col.close()
            except Exception:  # noqa: BLE001 - closing the rest matters more
                log.exception("closing collection %s failed", name)
