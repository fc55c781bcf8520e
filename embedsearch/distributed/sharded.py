"""A collection partitioned into N shards by id hash, each shard served by a Ray actor.

The layout on disk is described in :mod:`.layout`. A document lives in shard ``blake2b(id) mod N`` (:func:`shard_of`), a hash that is the same
in every process and on every machine. Queries are embedded once on the caller's side and
fanned out to every shard actor; each returns its own exact (or index-approximate) top-k
under the same ``where``/``exclude``, and the caller merges them by score. For exact
indexes the merged result is the unsharded result: the global top-k is contained in the
union of the shards' top-k. Writes are routed by id; a ``where`` filter and tombstones
behave as on one node because each shard applies them to its own rows.

:class:`ShardedCollection` implements the declared collection shape,
:class:`~embedsearch.base.CollectionBase`, as :class:`~embedsearch.Collection` does: the
argument checks, query embedding, ``search``/``batch_search``, ``add``/``upsert`` row checks,
``delete``/``get`` and ``select`` are the base's, written once; this module supplies the
fan-out. Code (and the HTTP server) written against a Collection can use one, and
``tests/test_congruence.py`` holds the two to the same answers and the same errors.

Atomicity: each shard commits all-or-nothing. Across shards, ``add`` checks every id first
and undoes (deletes) the documents of shards that committed when another shard fails;
``upsert`` and ``delete`` validate everything first, but a machine failing in the middle can
leave some shards updated and others not — re-run the same call: both are idempotent.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import store
from ..base import COMPACT_MIN_DELETED_SHARE, CollectionBase, SearchRequest
from ..errors import (
    DocumentNotFoundError,
    DuplicateIdError,
    EmbedSearchError,
    InvalidInputError,
    NotACollectionError,
)
from ..types import Document, Hit
from ..validation import resolve_path
from ._ray import call, require_ray
from .layout import (
    HASH_NAME,
    SHARDED_FILE,
    ShardServer,
    create_layout,
    read_layout,
    shard_of,
)

DEFAULT_ACTOR_OPTIONS: dict[str, Any] = {
    "num_cpus": 0.25,  # searches are short; leave the CPUs to the encoder actors
    "max_concurrency": 4,  # Collection reads are thread-safe: overlap queries in one shard
    "max_restarts": 3,  # a dead shard actor comes back and re-opens its shard from disk
    "scheduling_strategy": "SPREAD",
}
#: Rows checked per chunk of a write before it is split between shards.
_PREPARE_CHUNK = 65_536


# --------------------------------------------------------------------------- facade
class ShardedCollection(CollectionBase):
    """A collection split into shards by id hash, served by Ray actors (one per shard).

    Open one with :meth:`ShardedCollection.open`. Example:
        >>> col = ShardedCollection.open("big", shards=4)
        >>> col.add(["the cat sat", "stocks fell"], ids=["a", "b"])
        >>> col.search("a kitten", k=1)[0].id
        'a'
    """

    def __init__(
        self,
        path: Path,
        layout: dict[str, Any],
        handles: list[Any],
        *,
        backend: str | None,
        owns_actors: bool,
        started_ray: bool,
    ) -> None:
        self.path = path
        self.name = path.name
        self.layout = layout
        self.shards = int(layout["shards"])
        self.dim = int(layout["model"]["dim"])
        self._handles = handles
        self._backend = backend
        self._owns_actors = owns_actors
        self._started_ray = started_ray
        self._encoder: Any = None
        self._closed = False

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        shards: int | None = None,
        model: str | None = None,
        index: str = "auto",
        create: bool = True,
        backend: str | None = None,
        address: str | None = None,
        actor_options: dict[str, Any] | Callable[[int], dict[str, Any]] | None = None,
        detached: bool = False,
    ) -> ShardedCollection:
        """Open (or create) a sharded collection and start one actor per shard.

        Args:
            path: directory of the sharded collection (a bare name resolves under
                ``EMBEDSEARCH_HOME`` as for :func:`embedsearch.open`). Every Ray node that may
                host a shard actor must see it at this path (a shared file system), or pin
                the actors to one node with ``actor_options``.
            shards: shard count of a new collection; must match an existing one.
            model / index / backend: as for :func:`embedsearch.open` (new shards).
            create: create the collection when missing.
            address: Ray cluster to join when Ray is not initialised yet.
            actor_options: Ray actor options merged over :data:`DEFAULT_ACTOR_OPTIONS`
                (``num_cpus``, ``memory``, ``resources``, ``scheduling_strategy``…), or a
                function of the shard number returning them (to pin shard ``i`` to the node
                whose disk holds it, e.g. with ``NodeAffinitySchedulingStrategy``).
            detached: name the actors after the path and keep them alive after this handle
                closes, so other processes (HTTP server workers) share them; stop them with
                :meth:`shutdown`.

        Raises:
            CollectionNotFoundError, NotACollectionError, InvalidInputError (shard count),
            EmbedSearchError (Ray missing or unreachable).
        """
        from ..errors import CollectionNotFoundError

        root = resolve_path(path)
        if (root / SHARDED_FILE).is_file():
            layout = read_layout(root)
            if shards is not None and shards != layout["shards"]:
                raise InvalidInputError(
                    f"{root} has {layout['shards']} shards, not {shards}. Open it without "
                    "shards=, or build a new layout with ShardedCollection.from_collection()."
                )
        elif (root / store.MANIFEST).is_file():
            raise NotACollectionError(
                f"{root} is an ordinary collection, not a sharded one: open it with "
                "embedsearch.open() (`embedsearch search`), or partition it with "
                "ShardedCollection.from_collection()."
            )
        elif not create:
            raise CollectionNotFoundError(
                f"No sharded collection at {root}; create it with ShardedCollection.open(path, "
                "shards=N) or `embedsearch ray-index NAME FILES --shards N`."
            )
        else:
            if shards is None:
                raise InvalidInputError("A new sharded collection needs shards=N (N ≥ 1).")
            layout = create_layout(root, shards, model, index, backend)
        ray = require_ray()
        started = False
        if not ray.is_initialized():
            from ._ray import ray_session

            session = ray_session(address)
            session.__enter__()  # closed by close(); a Ray we start lives as long as the handle
            started = True
        server = ray.remote(ShardServer)
        tag = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
        handles = []
        for i, d in enumerate(layout["dirs"]):
            extra = actor_options(i) if callable(actor_options) else actor_options
            o = {**DEFAULT_ACTOR_OPTIONS, **(extra or {})}
            if detached:
                o.update(
                    name=f"embedsearch-{tag}-{i}",
                    namespace="embedsearch",
                    lifetime="detached",
                    get_if_exists=True,
                )
            handles.append(server.options(**o).remote(str((root / d).resolve()), backend))
        col = cls(
            root,
            layout,
            handles,
            backend=backend,
            owns_actors=not detached,
            started_ray=started,
        )
        if started:
            col._session = session
        col._fan("ping")  # surface a shard that cannot open now, not on the first query
        return col

    @classmethod
    def from_collection(
        cls,
        source: Any,
        path: str | os.PathLike[str],
        shards: int,
        *,
        chunk: int = 10_000,
        **open_kwargs: Any,
    ) -> ShardedCollection:
        """Partition an existing collection into a new sharded one, without re-embedding.

        Args:
            source: a :class:`~embedsearch.Collection` (or another ShardedCollection).
            path: where the sharded collection goes (must not exist).
            shards: number of shards.
            chunk: documents copied per round trip.
            open_kwargs: passed to :meth:`open` (``actor_options``, ``address``…).
        """
        model = source.info()["model"]
        col = cls.open(
            path, shards=shards, model=model["name"], backend=model.get("backend"), **open_kwargs
        )
        all_ids = source.ids()
        for lo in range(0, len(all_ids), chunk):
            docs = source.get(all_ids[lo : lo + chunk], include_vectors=True)
            col.add(
                [d.text for d in docs],
                ids=[d.id for d in docs],
                metadata=[d.metadata for d in docs],
                vectors=np.stack([d.vector for d in docs]),
            )
        return col

    # ------------------------------------------------------------------ fan-out
    def _fan(self, method: str, per_shard: dict[int, tuple] | None = None, *, read: bool = True):
        """Call ``method`` on shards (all, or those in ``per_shard`` with their args).

        Reads are retried once when a shard actor died (Ray restarts it from disk).
        """
        self._ensure_open()
        ray = require_ray()
        targets = per_shard if per_shard is not None else {i: () for i in range(self.shards)}
        for attempt in (0, 1):
            refs = {i: getattr(self._handles[i], method).remote(*a) for i, a in targets.items()}
            try:
                return dict(zip(refs, call(list(refs.values()))))
            except ray.exceptions.RayActorError as exc:
                if not read or attempt:
                    raise EmbedSearchError(
                        f"A shard actor of {self.name!r} died during {method} ({exc}). Reads are "
                        "retried once; re-run the call (adds/deletes are idempotent by id)."
                    ) from exc
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def _route(self, ids: Sequence[str]) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for j, doc_id in enumerate(ids):
            groups.setdefault(shard_of(doc_id, self.shards), []).append(j)
        return groups

    # ------------------------------------------------------------------ encoder
    @property
    def encoder(self) -> Any:
        """The collection's model, loaded in this process (embeds queries once per fan-out)."""
        if self._encoder is None:
            from ..encoder import get_encoder

            self._encoder = get_encoder(
                self.layout["model"]["name"], self._backend or self.layout["model"].get("backend")
            )
        return self._encoder

    @property
    def model(self) -> str:
        return self.layout["model"]["name"]

    # ------------------------------------------------------------------ search
    def _search_vectors(self, request: SearchRequest) -> list[list[Hit]]:
        """Each shard answers the whole batch under the same filter; the top-k are merged."""
        k = request.k
        by_shard: dict[int, list[str]] = {}
        for doc_id in request.exclude:
            by_shard.setdefault(shard_of(doc_id, self.shards), []).append(doc_id)
        base = {
            "where": request.where,
            "nprobe": request.nprobe,
            "ef_search": request.ef_search,
            "rerank": request.rerank,
            "exact": request.exact,
        }
        args = {
            i: (request.vectors, k, {**base, "exclude": by_shard.get(i) or None})
            for i in range(self.shards)
        }
        results = self._fan("search", args)
        merged: list[list[Hit]] = []
        for qi in range(len(request.vectors)):
            pool = itertools.chain.from_iterable(results[i][qi] for i in range(self.shards))
            merged.append(heapq.nlargest(k, pool, key=lambda h: h.score))
        return merged

    # ------------------------------------------------------------------ writes
    def _prepare(
        self,
        texts: Iterable[str],
        ids: Iterable[str] | None,
        metadata: Iterable[dict[str, Any] | None] | None,
        vectors: Iterable[Sequence[float]] | np.ndarray | None,
    ) -> tuple[list[str], list[str], list[Any], np.ndarray | None]:
        """The write's rows, checked by the shared rules (:meth:`CollectionBase._checked_chunks`)."""
        chunks = list(self._checked_chunks(texts, ids, metadata, vectors, _PREPARE_CHUNK))
        arr = None
        if vectors is not None and chunks:
            arr = np.concatenate([c.vectors for c in chunks if c.vectors is not None])
        return (
            [t for c in chunks for t in c.texts],
            [d for c in chunks for d in c.ids],
            [m for c in chunks for m in c.metadata],
            arr,
        )

    def _embed_for(self, texts: list[str], ids: list[str], upsert: bool) -> np.ndarray:
        """Vectors for a write, embedded here once: shard actors never load a model.

        An upserted document whose text is unchanged keeps its stored vector, as in
        :meth:`Collection.upsert`.
        """
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        todo = list(range(len(texts)))
        if upsert:
            groups = self._route(ids)
            stored = self._fan("get", {s: ([ids[j] for j in js], True) for s, js in groups.items()})
            old = {d.id: d for found, _ in stored.values() for d in found}
            todo = []
            for j, (doc_id, text) in enumerate(zip(ids, texts)):
                doc = old.get(doc_id)
                if doc is not None and doc.text == text:
                    out[j] = doc.vector
                else:
                    todo.append(j)
        if todo:
            out[todo] = self.encoder.encode([texts[j] for j in todo])
        return out

    def _write(
        self,
        texts: Iterable[str],
        ids: Iterable[str] | None,
        metadata: Iterable[Any] | None,
        vectors: Iterable[Any] | None,
        *,
        upsert: bool,
        progress: bool | None = None,
    ) -> list[str]:
        """Route checked rows to their shards; ``progress`` is accepted and ignored (texts are
        embedded here in one call; bulk loads go through :func:`embedsearch.distributed.ingest`).
        """
        texts, ids, meta, arr = self._prepare(texts, ids, metadata, vectors)
        if not texts:
            return []
        groups = self._route(ids)
        if not upsert:
            missing = set(self.missing(ids))
            taken = [d for d in ids if d not in missing]
            if taken:
                raise DuplicateIdError(
                    f"id {taken[0]!r} already exists; use upsert() to replace it or delete() it "
                    "first."
                )
        if arr is None:
            arr = self._embed_for(texts, ids, upsert)
        args = {
            s: (
                [texts[j] for j in js],
                [ids[j] for j in js],
                [meta[j] for j in js],
                arr[js],
                upsert,
            )
            for s, js in groups.items()
        }
        self._ensure_open()
        refs = {s: self._handles[s].add.remote(*a) for s, a in args.items()}
        ray = require_ray()
        done, failure = [], None
        for s, ref in refs.items():
            try:
                call(ref)
                done.append(s)
            except Exception as exc:  # noqa: BLE001 - re-raised below after undoing
                failure = failure or exc
        if failure is not None:
            if not upsert and done:  # undo: the documents this call added on other shards
                undo = {s: (args[s][1], True) for s in done}
                with contextlib.suppress(Exception):  # the original error matters more
                    self._fan("delete", undo, read=False)
            if isinstance(failure, ray.exceptions.RayActorError):
                raise EmbedSearchError(
                    f"A shard actor of {self.name!r} died during a write ({failure}); "
                    + ("nothing was added." if not upsert else "re-run the upsert.")
                ) from failure
            raise failure
        return ids

    def _delete(self, ids: list[str], missing_ok: bool) -> int:
        """Delete checked, unique ids; nothing is deleted when one is unknown (unless
        ``missing_ok``)."""
        if not ids:
            return 0
        if not missing_ok:
            missing = self.missing(ids)
            if missing:
                shown = ", ".join(repr(m) for m in missing[:5])
                raise DocumentNotFoundError(
                    f"{len(missing)} id(s) not found ({shown}{', …' if len(missing) > 5 else ''}); "
                    "nothing was deleted. Pass missing_ok=True to ignore unknown ids."
                )
        groups = self._route(ids)
        out = self._fan(
            "delete", {s: ([ids[j] for j in js], True) for s, js in groups.items()}, read=False
        )
        return int(sum(out.values()))

    # ------------------------------------------------------------------ reads
    def missing(self, ids: Sequence[str]) -> list[str]:
        """The ids in ``ids`` that no shard holds, in the order given."""
        ids = list(ids)
        groups = self._route(ids)
        out = self._fan("missing", {s: ([ids[j] for j in js],) for s, js in groups.items()})
        gone = set(itertools.chain.from_iterable(out.values()))
        return [d for d in ids if d in gone]

    def _contains(self, doc_id: str) -> bool:
        return not self.missing([doc_id])

    def _get(self, ids: list[str], include_vectors: bool) -> list[Document]:
        groups = self._route(ids)
        out = self._fan(
            "get", {s: ([ids[j] for j in js], include_vectors) for s, js in groups.items()}
        )
        docs: dict[str, Document] = {}
        gone: set[str] = set()
        for found, missing in out.values():
            docs.update((d.id, d) for d in found)
            gone.update(missing)
        if gone:
            missing = [d for d in ids if d in gone]
            raise DocumentNotFoundError(
                f"{len(missing)} id(s) not found: {', '.join(repr(m) for m in missing[:5])}."
            )
        return [docs[d] for d in ids]

    def ids(self) -> list[str]:
        """Ids of all live documents: shard by shard, storage order within a shard."""
        out = self._fan("ids")
        return list(itertools.chain.from_iterable(out[i] for i in range(self.shards)))

    def vectors(self, ids: Sequence[str] | None = None) -> np.ndarray:
        """Stored unit vectors of ``ids`` (in that order), or of all documents (``ids()`` order)."""
        if ids is None:
            out = self._fan("vectors", {i: (None,) for i in range(self.shards)})
            return np.concatenate([out[i] for i in range(self.shards)])
        return (
            np.stack([d.vector for d in self.get(list(ids), include_vectors=True)])
            if ids
            else (np.zeros((0, self.dim), dtype=np.float32))
        )

    def __len__(self) -> int:
        return int(sum(self._fan("count").values()))

    @property
    def state_key(self) -> str:
        """Changes whenever any shard's committed contents change."""
        keys = self._fan("state_key")
        return hashlib.sha1("|".join(keys[i] for i in range(self.shards)).encode()).hexdigest()

    def info(self) -> dict[str, Any]:
        """Collection-level counts (summed over shards) plus each shard's own info."""
        out = self._fan("info")
        parts = [out[i] for i in range(self.shards)]
        first = parts[0]
        return {
            "name": self.name,
            "path": str(self.path),
            "count": sum(p["count"] for p in parts),
            "rows": sum(p["rows"] for p in parts),
            "deleted": sum(p["deleted"] for p in parts),
            "segments": sum(p["segments"] for p in parts),
            "model": first["model"],
            "index": {**first["index"], "rows": sum(p["index"].get("rows") or 0 for p in parts)},
            "disk_bytes": sum(p["disk_bytes"] for p in parts),
            "created": self.layout["created"],
            "updated": max(p["updated"] for p in parts),
            "generation": sum(p["generation"] for p in parts),
            "sharding": {"shards": self.shards, "hash": HASH_NAME},
            "shards": [
                {"dir": self.layout["dirs"][i], "count": p["count"], "index": p["index"]}
                for i, p in enumerate(parts)
            ],
        }

    # ------------------------------------------------------------------ maintenance
    def compact(self, min_deleted_share: float = COMPACT_MIN_DELETED_SHARE) -> dict[str, int]:
        """Compact every shard (see :meth:`Collection.compact`); returns the summed
        before/after rows and bytes."""
        args = {i: (min_deleted_share,) for i in range(self.shards)}
        out = list(self._fan("compact", args, read=False).values())
        return {k: sum(r[k] for r in out) for k in out[0]}  # every shard reports the same keys

    def reindex(self, spec: str) -> None:
        """Change every shard's index spec (no re-encoding)."""
        self._fan("reindex", {i: (spec,) for i in range(self.shards)}, read=False)

    def close(self) -> None:
        """Close the shards (saving indexes that are behind) and stop the actors (idempotent).

        Detached actors are kept for other processes; :meth:`shutdown` stops them.
        """
        if self._closed:
            return
        try:
            if self._owns_actors:
                self.shutdown()
        finally:
            self._closed = True
            if self._started_ray:
                self._session.__exit__(None, None, None)

    def shutdown(self) -> None:
        """Close every shard and kill its actor (also detached ones); returns once the
        actors are gone (at most :data:`ACTOR_EXIT_WAIT_S`)."""
        ray = require_ray()
        try:
            self._fan("close", read=False)
        finally:
            for h in self._handles:
                with contextlib.suppress(Exception):  # already gone
                    ray.kill(h)
            _wait_gone(ray, self._handles)

    def __repr__(self) -> str:
        return f"ShardedCollection({str(self.path)!r}, shards={self.shards}, model={self.model!r})"


#: How long :meth:`ShardedCollection.shutdown` waits for killed actors to be gone.
ACTOR_EXIT_WAIT_S = 10.0


def _wait_gone(ray: Any, handles: Sequence[Any]) -> None:
    """Wait until every actor in ``handles`` no longer answers. ``ray.kill`` only sends the
    request: on a loaded machine a call made right after it was still answered (seen once
    in the test suite), and a caller that closed a collection expects its actors gone."""
    deadline = time.monotonic() + ACTOR_EXIT_WAIT_S
    for h in handles:
        while time.monotonic() < deadline:
            try:
                ray.get(h.ping.remote(), timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # RayActorError: gone (or unreachable: nothing left to wait for)
                break
            time.sleep(0.05)


def open_sharded(path: str | os.PathLike[str], **kwargs: Any) -> ShardedCollection:
    """Shorthand for :meth:`ShardedCollection.open`."""
    return ShardedCollection.open(path, **kwargs)
