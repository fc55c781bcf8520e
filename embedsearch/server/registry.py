"""Open collections by bare name, one shared handle per collection.

Every request for collection ``news`` gets the same :class:`~embedsearch.Collection` object:
its index lives in memory once, concurrent searches share it, and its single writer
serialises adds. Names are checked with :func:`embedsearch.validation.validate_name`, so
an HTTP client can never name a path outside the server's home directory.

With several worker processes (``serve --workers N``) each process has its own handles, and
only one process may hold a collection's write lock at a time. In that mode
(``shared_writes=True``) a write opens a short-lived handle, commits, and closes it again,
releasing the lock for the next worker; the other workers' read handles pick the commit up on
their next call. A write that finds the lock held waits up to ``write_wait_s`` and then
answers 423.

A *sharded* collection (a directory holding ``sharded.json``, see
:mod:`embedsearch.distributed.layout`) is served under its bare name like an ordinary one: it
opens as a :class:`ServedShardedCollection` (one Ray actor per shard) on Ray, which the
registry starts or joins once (``ray_address``) and shuts down in :meth:`Registry.close_all`,
after stopping the shard actors. Without Ray installed such a collection answers 503 saying
to install ``embedsearch[distributed]``; operations a sharded collection lacks (latent space,
RAG retrieval) answer 400 :class:`NotSupportedError`.
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
from typing import Any, TypeVar

from .. import store
from ..catalog import did_you_mean
from ..collection import Collection
from ..collection import open as open_collection
from ..distributed._ray import INSTALL_HINT, ray_session
from ..distributed.layout import is_sharded, read_layout
from ..distributed.sharded import ShardedCollection
from ..encoder import DEFAULT_MODEL, default_model_name
from ..errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    EmbedSearchError,
    InvalidInputError,
    LockedError,
    NotACollectionError,
    NotSupportedError,
    ShardedUnavailableError,
)
from ..validation import validate_name

log = logging.getLogger("embedsearch.server")
T = TypeVar("T")
MAX_VIEWS = 8  # read-only views of past versions kept open (least recently used go first)
_DEFAULT_NAMES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}


def canonical_model(name: str) -> str:
    """Fold the aliases of the default model into its one name."""
    return DEFAULT_MODEL if name in _DEFAULT_NAMES else name


class ServedShardedCollection(ShardedCollection):
    """A :class:`ShardedCollection` as the server hands it out.

    It differs in two ways only: a public method that ``Collection`` has and a sharded
    collection lacks (``expr``, ``cluster``, ``retrieve``…) raises :class:`NotSupportedError`
    (a clear 400 naming the operation) instead of ``AttributeError`` (a 500), and
    :meth:`stop` also stops shard actors shared with other worker processes (detached).
    """

    def __getattr__(self, attr: str) -> Any:
        # Only reached when normal lookup fails: every real attribute is untouched.
        if attr.startswith("_") or not callable(getattr(Collection, attr, None)):
            raise AttributeError(attr)
        raise NotSupportedError(
            f"{attr} is not supported on sharded collection {self.name!r} (its documents are "
            f"spread over {self.shards} shards served by Ray). A sharded collection serves info, "
            "count, ids, documents (add, upsert, get, delete), search and batch search, compact "
            "and reindex; use an ordinary collection for this operation."
        )

    def stop(self) -> None:
        """Close every shard and stop its actor, shared (detached) ones too (idempotent)."""
        if self._closed:
            return
        try:
            if not self._owns_actors:  # close() keeps detached actors for other processes
                try:
                    self.shutdown()
                except EmbedSearchError as exc:
                    import ray

                    if not isinstance(exc.__cause__, ray.exceptions.RayActorError):
                        raise
                    # Another worker process stopped the shared actors first: nothing left.
        finally:
            self.close()


Handle = Collection | ServedShardedCollection


def _stop(col: Handle) -> None:
    """Close a handle; a sharded one also stops its shard actors."""
    if isinstance(col, ServedShardedCollection):
        col.stop()
    else:
        col.close()


class Registry:
    """The collections under one home directory, opened on first use and kept open.

    Args:
        home: the directory holding collections (created if missing).
        models: model names clients may create collections with (default: the default
            model). Collections already on disk open with whatever model built them.
        shared_writes: release the write lock after every write (several worker processes).
        write_wait_s: how long a write waits for a write lock held elsewhere before 423.
        ray_address: the Ray cluster sharded collections run on, joined on first use when
            Ray is not initialised in this process yet (``None``: ``RAY_ADDRESS``, else a
            private local Ray; ``"auto"``, ``"host:6379"``, ``"ray://host:10001"``).
        shared_actors: name the shard actors after the path and share them with other
            processes (default: ``shared_writes``, i.e. several worker processes, which
            must then all join one cluster).
    """

    def __init__(
        self,
        home: Path,
        *,
        models: Sequence[str] | None = None,
        shared_writes: bool = False,
        write_wait_s: float = 5.0,
        ray_address: str | None = None,
        shared_actors: bool | None = None,
    ) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.models = [canonical_model(m) for m in (models or [default_model_name()])]
        self.shared_writes = shared_writes
        self.write_wait_s = write_wait_s
        self.ray_address = ray_address
        self.shared_actors = shared_writes if shared_actors is None else shared_actors
        self._handles: dict[str, Handle] = {}
        self._views: dict[tuple[str, int], Handle] = {}  # read-only past versions, LRU
        self._lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}
        self._ray_session: Any = None  # the Ray this registry started or joined, if any
        self._ray_lock = threading.Lock()  # starting Ray takes seconds: not under _lock

    # ------------------------------------------------------------------ naming
    def path(self, name: str) -> Path:
        """``<home>/<name>`` for a valid bare name (422 otherwise)."""
        return self.home / validate_name(name)

    def _exists(self, path: Path) -> bool:
        return (path / store.MANIFEST).is_file() or is_sharded(path)

    def is_sharded(self, name: str) -> bool:
        """Whether ``name`` is a sharded collection on disk (``sharded.json``)."""
        return is_sharded(self.path(name))

    def _not_found(self, name: str) -> EmbedSearchError:
        """404 for a free name; for a name taken by something else (a plain directory), the
        same 409 that POST /collections gives, so GET and POST agree."""
        path = self.path(name)
        if path.exists() or path.is_symlink():
            return NotACollectionError(
                f"{name!r} exists in the collection home but is not an embedsearch collection; "
                "choose another name, or remove that directory."
            )
        return CollectionNotFoundError(
            f"Collection {name!r} does not exist.{did_you_mean(name, self.home)} List "
            "collections with GET /collections, or create it with POST /collections."
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
    def get(self, name: str, version: int | str | None = None) -> Handle:
        """The shared handle of an existing collection (404 if there is none).

        With ``version`` (a number or tag, e.g. from ``?version=``), a read-only view of that
        kept version, cached per (name, version number). A sharded collection opens on Ray
        (503 when Ray is missing or unreachable).
        """
        if version is not None:
            return self._view(name, version)
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
                col = (
                    self._open_sharded(name, path)
                    if is_sharded(path)
                    else open_collection(path, create=False)
                )
            except CollectionNotFoundError:
                raise self._not_found(name) from None
            self._handles[name] = col
            return col

    def _view(self, name: str, version: int | str) -> Handle:
        col = self.get(name)
        if not hasattr(col, "at"):
            raise NotSupportedError(
                f"Collection {name!r} is sharded; past versions are kept per shard and cannot be "
                "opened as one view. Drop ?version= for this collection."
            )
        ref: int | str = int(version) if str(version).lstrip("-").isdigit() else str(version)
        gen = col.resolve_version(ref)
        key = (name, gen)
        with self._lock:
            view = self._views.get(key)
            if view is not None:
                self._views[key] = self._views.pop(key)  # most recently used last
                return view
        view = col.at(gen)
        with self._lock:
            self._views[key] = view
            while len(self._views) > MAX_VIEWS:
                old_key = next(iter(self._views))
                self._views.pop(old_key).close()
        return view

    def _drop_views(self, name: str) -> None:
        with self._lock:
            for key in [k for k in self._views if k[0] == name]:
                self._views.pop(key).close()

    def _open_sharded(self, name: str, path: Path) -> ServedShardedCollection:
        """Open a sharded collection's actors on Ray (started or joined here if needed)."""
        try:
            import ray
        except ImportError:
            raise ShardedUnavailableError(
                f"Collection {name!r} is sharded and serving it needs Ray, which this server "
                f"does not have: {INSTALL_HINT} on the server, then restart it."
            ) from None
        self._ensure_ray(ray, name)
        return ServedShardedCollection.open(path, create=False, detached=self.shared_actors)

    def _ensure_ray(self, ray: Any, name: str) -> None:
        with self._ray_lock:
            if ray.is_initialized():
                return
            if self.shared_actors and not (self.ray_address or os.environ.get("RAY_ADDRESS")):
                raise ShardedUnavailableError(
                    f"Collection {name!r} is sharded; several worker processes can serve it only "
                    "from one Ray cluster they all join. Start the server with `--ray` (it "
                    "starts one) or `--ray ADDRESS` (e.g. auto after `ray start --head`)."
                )
            session = ray_session(self.ray_address)
            try:
                session.__enter__()
            except EmbedSearchError as exc:
                raise ShardedUnavailableError(
                    f"Collection {name!r} is sharded and needs Ray: {exc}"
                ) from exc
            self._ray_session = session

    def _evict(self, name: str, col: Handle) -> None:
        self._drop_views(name)
        with self._lock:
            if self._handles.get(name) is col:
                del self._handles[name]
        with contextlib.suppress(Exception):
            _stop(col)

    def open_handles(self) -> dict[str, Handle]:
        """A snapshot of the handles opened so far (for metrics)."""
        return dict(self._handles)

    def create(self, name: str, *, model: str | None = None, index: str = "auto") -> Collection:
        """Create a collection (409 if the name is taken)."""
        path = self.path(name)
        model_name = self.check_model(model)
        with self._name_lock(name):
            if self._exists(path):
                raise CollectionExistsError(
                    f"Collection {name!r} already exists; delete it first (DELETE "
                    f"/collections/{name}) or choose another name."
                )
            if path.exists() or path.is_symlink():
                raise self._not_found(name)
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
            self._drop_views(name)
            if col is not None:
                _stop(col)  # waits for a running write, then releases the lock(s)
            # A sharded collection's writers are its shards: lock every one of them.
            dirs = [path / d for d in read_layout(path)["dirs"]] if is_sharded(path) else [path]
            locks = [store.WriterLock(d) for d in dirs]
            trash = self.home / f".deleted-{name}-{uuid.uuid4().hex[:8]}"
            try:
                for lock in locks:
                    lock.acquire()  # LockedError (423) while another process writes
                os.replace(path, trash)
            finally:
                for lock in locks:
                    lock.release()
        shutil.rmtree(trash, ignore_errors=True)

    def write(self, name: str, fn: Callable[[Handle], T]) -> T:
        """Run a write (``fn(collection)``), waiting a while for a write lock held elsewhere.

        A write that fails with :class:`LockedError` has changed nothing, so it is retried
        until ``write_wait_s`` has passed. A sharded collection always writes through its
        shared handle: its shard actors are the writers, whichever process calls them.
        """
        deadline = time.monotonic() + self.write_wait_s
        delay = 0.02
        while True:
            try:
                if not self.shared_writes or is_sharded(self.path(name)):
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
        """Close every handle: save indexes that are behind and release write locks.

        Sharded collections stop their shard actors; then a Ray this registry started or
        joined is shut down (a Ray the caller initialised is left running).
        """
        with self._lock:
            handles, self._handles = self._handles, {}
        for name, col in handles.items():
            try:
                _stop(col)
            except Exception:  # noqa: BLE001 - closing the rest matters more
                log.exception("closing collection %s failed", name)
        with self._ray_lock:
            session, self._ray_session = self._ray_session, None
        if session is not None:
            try:
                session.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - shutting down anyway
                log.exception("shutting down Ray failed")
