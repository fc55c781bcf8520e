"""The declared shape of a collection: what every implementation offers, logic written once.

:class:`CollectionBase` is to :class:`~embedsearch.Collection` (one directory, one process)
and :class:`~embedsearch.distributed.ShardedCollection` (shards behind Ray actors) what
qdrant-client's ``QdrantBase`` is to its local and remote clients, or LanceDB's
``Table(ABC)`` to ``RemoteTable``: code written against the base (the HTTP server, the RAG
layer, a user's script) works with either.

The base owns everything that does not depend on where the data lives — argument
normalisation and checks (:mod:`embedsearch.validation`), query embedding, ``search`` as a
batch of one, ``add``/``upsert`` row checks, ``delete``/``get`` id lists, ``select`` — so
both implementations accept and refuse the same inputs with the same errors. A subclass
supplies storage: ``_write``, ``_delete``, ``_get``, ``_search_vectors`` and the reads
(``ids``, ``vectors``, ``__len__``, ``info``...). ``tests/test_congruence.py`` runs the same
calls through every implementation and demands the same answers.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .errors import DocumentNotFoundError, DuplicateIdError, InvalidInputError
from .filters import compile_filter
from .types import Document, Hit
from .validation import (
    check_id,
    check_k,
    check_metadata,
    check_text,
    column_chunks,
    plain_ids,
    plain_metadata,
    plain_texts,
    unit_rows,
    unit_vector,
)

Query = str | Sequence[float] | np.ndarray
C = TypeVar("C", bound="CollectionBase")

#: Compaction rewrites a segment it could keep alone only when at least this share of its
#: rows is deleted; below it the segment keeps its file and its deletes stay tombstones,
#: so a few deletes spread over a large collection do not rewrite it all (Lance's
#: compaction materialises deletions from 10 % too). ``compact(min_deleted_share=0)``
#: rewrites every segment that lost a row.
COMPACT_MIN_DELETED_SHARE = 0.1


@dataclass(frozen=True)
class SearchRequest:
    """A batch search after normalisation: what an implementation's ``_search_vectors`` runs.

    Attributes:
        vectors: (n, dim) float32 unit query vectors.
        k: results per query (checked: 1..MAX_K).
        where: the metadata filter as given (already compiled once, so it is valid).
        exclude: ids never to return.
        nprobe / ef_search / rerank: per-call knobs for approximate indexes (checked).
        exact: force exact search.
        texts: hits carry their text and metadata; False: ids and scores alone (text ``""``,
            metadata ``{}``), for callers that read the few they keep (see
            :meth:`CollectionBase.search_ids`). An implementation may read them anyway.
    """

    vectors: np.ndarray
    k: int
    where: dict[str, Any] | None
    exclude: list[str]
    nprobe: int | None
    ef_search: int | None
    rerank: int | None
    exact: bool
    texts: bool = True


@dataclass(frozen=True)
class CheckedChunk:
    """Consecutive documents of a write after the shared checks, as columns (see
    :meth:`CollectionBase._checked_chunks`).

    Attributes:
        texts: the texts.
        ids: the ids (generated when the call gave no ids).
        metadata: each metadata dict as given (or None).
        metadata_json: its canonical JSON (what the store keeps), or None.
        vectors: the caller's vectors as an ``(n, dim)`` float32 array of unit rows, or None
            when the model embeds the texts.
    """

    texts: list[str]
    ids: list[str]
    metadata: list[dict[str, Any] | None]
    metadata_json: list[str | None]
    vectors: np.ndarray | None


@dataclass(frozen=True)
class Selection:
    """Documents chosen by a filter (:meth:`CollectionBase.selection`).

    Attributes:
        vectors: a ``(count, dim)`` float32 array-like: slices and index arrays give ndarrays.
        ids: the ids of the given rows (indices into ``vectors``).
        texts: the texts of the given rows, read from the same snapshot (inside a
            collection's ``with selection(...)`` block, where calling ``get`` could wait
            forever on a queued writer).
    """

    vectors: Any
    ids: Callable[[np.ndarray], list[str]]
    texts: Callable[[np.ndarray], list[str]]

    @property
    def count(self) -> int:
        return int(self.vectors.shape[0])


class CollectionBase(ABC):
    """What a collection is, whatever its storage: see the module notes.

    Attributes:
        path: the collection's directory.
        name: its name (the directory's name).
        dim: the dimension of its vectors.
    """

    path: Path
    name: str
    dim: int
    _closed: bool

    # ------------------------------------------------------------------ storage (abstract)
    @property
    @abstractmethod
    def encoder(self) -> Any:
        """The model that embeds this collection's texts and queries."""

    @property
    @abstractmethod
    def model(self) -> str:
        """The name of the collection's model."""

    @property
    @abstractmethod
    def state_key(self) -> str:
        """Changes whenever the committed contents change: a cache key for derived data."""

    @abstractmethod
    def _write(
        self,
        texts: Iterable[str],
        ids: Iterable[str] | None,
        metadata: Iterable[Any] | None,
        vectors: Iterable[Any] | None,
        *,
        upsert: bool,
        progress: bool | None,
    ) -> list[str]:
        """Store documents (rows checked with :meth:`_checked_rows`); all or nothing."""

    @abstractmethod
    def _delete(self, ids: list[str], missing_ok: bool) -> int:
        """Delete checked, de-duplicated ids; all or nothing."""

    @abstractmethod
    def _get(self, ids: list[str], include_vectors: bool) -> list[Document]:
        """Documents for ``ids`` in that order; DocumentNotFoundError listing unknown ones."""

    @abstractmethod
    def _contains(self, doc_id: str) -> bool:
        """Whether a live document has this id."""

    @abstractmethod
    def _search_vectors(self, request: SearchRequest) -> list[list[Hit]]:
        """Run a normalised batch search: one list of hits per query vector, best first."""

    @abstractmethod
    def ids(self) -> list[str]:
        """Ids of all live documents."""

    @abstractmethod
    def vectors(self, ids: Sequence[str] | None = None) -> np.ndarray:
        """Stored unit vectors of ``ids`` (in that order), or of all live documents."""

    @abstractmethod
    def __len__(self) -> int:
        """The number of live documents."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """Counts, model, index and size on disk."""

    @abstractmethod
    def compact(self, min_deleted_share: float = COMPACT_MIN_DELETED_SHARE) -> dict[str, int]:
        """Reclaim deleted rows from segments that lost at least ``min_deleted_share`` of
        theirs (0: from every segment that lost one) and merge small segments."""

    @abstractmethod
    def reindex(self, spec: str) -> None:
        """Change the index spec (no re-encoding)."""

    @abstractmethod
    def close(self) -> None:
        """Release what the handle holds (idempotent)."""

    def refresh(self) -> bool:
        """Pick up commits made elsewhere; True if the contents changed."""
        return False

    # ------------------------------------------------------------------ shared: lifecycle
    def _ensure_open(self) -> None:
        if self._closed:
            raise InvalidInputError(f"collection {self.name!r} is closed; open it again.")

    def __enter__(self: C) -> C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and self._contains(doc_id)

    # ------------------------------------------------------------------ shared: vectors
    def as_unit_vector(self, vector: Any, what: str = "vector") -> np.ndarray:
        """Validate a caller's vector (shape, finiteness, non-zero) and L2-normalise it."""
        return unit_vector(vector, self.dim, what)

    def embed(self, texts: Sequence[str] | str) -> np.ndarray:
        """Embed texts with the collection's model: an (n, dim) float32 array of unit vectors."""
        items = [texts] if isinstance(texts, str) else list(texts)
        for i, t in enumerate(items):
            check_text(t, f"texts[{i}]")
        return self.encoder.encode(items)

    def _query_vectors(self, queries: Sequence[Any]) -> np.ndarray:
        """Unit vectors for text or vector queries; texts go to the model in one cached batch."""
        out = np.empty((len(queries), self.dim), dtype=np.float32)
        texts = [(i, check_text(q, "query")) for i, q in enumerate(queries) if isinstance(q, str)]
        if texts:
            out[[i for i, _ in texts]] = self.encoder.encode_queries([t for _, t in texts])
        for i, q in enumerate(queries):
            if not isinstance(q, str):
                out[i] = self.as_unit_vector(q, "query vector")
        return out

    # ------------------------------------------------------------------ shared: search
    def search(
        self,
        query: Query,
        k: int = 10,
        *,
        where: dict[str, Any] | None = None,
        exclude: Iterable[str] | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        rerank: int | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        """The ``k`` documents most similar (cosine) to ``query``.

        Args:
            query: text, or a vector of the collection's dimension (normalised for you).
            k: how many results (1..10,000); fewer only when fewer documents match.
            where: metadata filter (see :mod:`embedsearch.filters`), applied before the top-k
                cut, so ``k`` results come back whenever ``k`` documents match.
            exclude: ids never to return (e.g. the inputs of an analogy).
            nprobe / ef_search / rerank: per-call knobs for approximate indexes.
            exact: force exact search (ground truth for recall checks).

        Example:
            >>> col.search("pets that purr", k=3, where={"year": {"$gte": 2010}})
        """
        return self.batch_search(
            [query],
            k,
            where=where,
            exclude=exclude,
            nprobe=nprobe,
            ef_search=ef_search,
            rerank=rerank,
            exact=exact,
        )[0]

    def batch_search(
        self,
        queries: Sequence[Query] | np.ndarray,
        k: int = 10,
        *,
        where: dict[str, Any] | None = None,
        exclude: Iterable[str] | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        rerank: int | None = None,
        exact: bool = False,
    ) -> list[list[Hit]]:
        """:meth:`search` for many queries at once (one encoder batch, one index call).

        Args:
            queries: a list of texts and/or vectors, or an (n, dim) array. A single string
                is refused (it is not a list of queries): call :meth:`search` for one.

        Returns:
            One list of hits per query, in the order given.
        """
        self._ensure_open()
        k = check_k(k)
        for name, val in (("nprobe", nprobe), ("ef_search", ef_search), ("rerank", rerank)):
            if val is not None and (isinstance(val, bool) or not isinstance(val, int) or val < 1):
                raise InvalidInputError(f"{name} must be a positive integer, got {val!r}.")
        if isinstance(queries, (str, bytes)):
            raise InvalidInputError(
                "queries must be a list of queries, not one string; use search() for one query "
                "or wrap it in a list."
            )
        if isinstance(queries, np.ndarray):
            if queries.ndim != 2:
                raise InvalidInputError(
                    f"queries as an array must be 2-D (n, {self.dim}), got shape {queries.shape}; "
                    "use search() for one vector."
                )
            queries = list(queries)
        try:
            queries = list(queries)
        except TypeError:
            raise InvalidInputError(
                f"queries must be a list of texts or vectors, got {type(queries).__name__}."
            ) from None
        if where is not None:
            compile_filter(where)  # a bad filter fails here, once, with the filter's own message
        if exclude is None:
            excluded: list[str] = []
        elif isinstance(exclude, str):
            excluded = [exclude]
        else:
            excluded = [e for e in exclude if isinstance(e, str)]
        if not queries:
            return []
        qvecs = self._query_vectors(queries)
        request = SearchRequest(qvecs, k, where, excluded, nprobe, ef_search, rerank, bool(exact))
        return self._search_vectors(request)

    def search_ids(
        self,
        query: Query,
        k: int = 10,
        *,
        where: dict[str, Any] | None = None,
    ) -> list[tuple[str, float]]:
        """:meth:`search`'s ranking as ``(id, score)`` pairs, without reading any text or
        metadata.

        For callers that keep a few of many results and read those with :meth:`get`:
        hybrid retrieval fuses 100 dense candidates to return 8, and not reading the
        others' text and metadata made a hybrid question at 1M rows 8.67 -> 7.28 ms (p50,
        the query's encoding aside; docs/benchmarks.md).

        Example:
            >>> col.search_ids("pets that purr", k=100)[:2]
            [('cat-1', 0.61), ('cat-7', 0.58)]
        """
        return self._rank_ids(query, k, where=where)[0]

    def _rank_ids(
        self, query: Query, k: int, *, where: dict[str, Any] | None = None
    ) -> tuple[list[tuple[str, float]], Callable[[list[str]], list[Document]]]:
        """:meth:`search_ids`'s ranking and a reader of the documents it named: ``read(ids)``
        gives those still stored, in that order (ids deleted since are left out). Here the
        reader is :meth:`get`; a collection may read by the positions it ranked instead."""
        request = self._ids_request(query, k, where)
        ranked = [(h.id, h.score) for h in self._search_vectors(request)[0]]
        return ranked, self._still_stored

    def _ids_request(self, query: Query, k: int, where: dict[str, Any] | None) -> SearchRequest:
        """The checked :class:`SearchRequest` of a ranking by id alone (``texts`` False)."""
        self._ensure_open()
        k = check_k(k)
        if where is not None:
            compile_filter(where)
        qvecs = self._query_vectors([query])
        return SearchRequest(qvecs, k, where, [], None, None, None, False, texts=False)

    def _still_stored(self, ids: list[str]) -> list[Document]:
        """:meth:`get` of ``ids``, leaving out any not stored (deleted since ranked)."""
        try:
            return self.get(ids)
        except DocumentNotFoundError:  # one by one, skipping the ones gone
            out: list[Document] = []
            for d in ids:
                try:
                    out += self.get([d])
                except DocumentNotFoundError:
                    continue
            return out

    # ------------------------------------------------------------------ shared: writes
    def add(
        self,
        texts: Iterable[str],
        *,
        ids: Iterable[str] | None = None,
        metadata: Iterable[dict[str, Any] | None] | None = None,
        vectors: Iterable[Sequence[float]] | np.ndarray | None = None,
        progress: bool | None = None,
    ) -> list[str]:
        """Embed and store new documents; all or nothing.

        Args:
            texts: strings, a list or any iterable (a generator is streamed in batches with
                bounded working memory where the implementation can).
            ids: one unique string per text; generated (uuid4 hex) when omitted.
            metadata: one JSON-serialisable dict (or None) per text.
            vectors: precomputed embeddings, one per text (normalised for you); when given,
                the model is not run. They must come from the collection's model for search
                by text to make sense.
            progress: show a progress bar; default: when more than 2,000 texts are known.

        Returns:
            The ids, in input order.

        Raises:
            InvalidInputError: a bad text, id or metadata entry, or mismatched lengths.
            DuplicateIdError: an id repeats in the call or already exists (use ``upsert``).
            LockedError: another writer holds the collection.
        """
        self._ensure_open()
        return self._write(texts, ids, metadata, vectors, upsert=False, progress=progress)

    def upsert(
        self,
        texts: Iterable[str],
        *,
        ids: Iterable[str],
        metadata: Iterable[dict[str, Any] | None] | None = None,
        vectors: Iterable[Sequence[float]] | np.ndarray | None = None,
        progress: bool | None = None,
    ) -> list[str]:
        """Insert or replace documents by id (all or nothing).

        A replaced document whose text is unchanged keeps its vector (no re-encoding), so
        updating metadata is cheap.
        """
        self._ensure_open()
        if ids is None:
            raise InvalidInputError("upsert needs ids: it replaces documents by id.")
        return self._write(texts, ids, metadata, vectors, upsert=True, progress=progress)

    def check_rows(self, texts: list[str], ids: list[str], metadata: list[Any]) -> None:
        """Raise what :meth:`add` would raise for these rows (a text, id or metadata it
        refuses, an id twice), with its words, and do nothing else: no row is embedded or
        written. For callers that embed rows themselves and write them later in one add."""
        self._checked_one_by_one(texts, ids, metadata, None, 0, set())

    def _checked_chunks(
        self,
        texts: Iterable[str],
        ids: Iterable[str] | None,
        metadata: Iterable[Any] | None,
        vectors: Iterable[Any] | None,
        size: int,
    ) -> Iterator[CheckedChunk]:
        """The documents of a write in chunks of up to ``size``, checked as they stream past
        (generators stay lazy; a chunk is checked before the next is read).

        A chunk of plain values is checked with whole-column passes (:func:`plain_texts`,
        :func:`plain_ids`, :func:`plain_metadata`; a matrix of vectors by :func:`unit_rows`):
        a Python call per row cost ~8 µs, 8 s of a 1M-row build. Any chunk those passes do
        not clear is checked row by row, so the error names the first bad row, as always.

        Raises:
            InvalidInputError: a bad text, id, metadata entry or vector, or mismatched lengths.
            DuplicateIdError: an id repeats within the call.
        """
        seen: set[str] = set()
        units = None  # a matrix of vectors is checked and normalised in one numpy pass
        if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
            units = vectors = unit_rows(vectors, self.dim)
        start = 0
        columns = column_chunks(texts, size, ids=ids, metadata=metadata, vectors=vectors)
        for c_texts, c_ids, c_meta, c_vecs in columns:
            n = len(c_texts)
            if ids is None:
                c_ids = [uuid.uuid4().hex for _ in range(n)]
            c_meta = [None] * n if c_meta is None else c_meta
            fresh = set(c_ids) if plain_ids(c_ids) else None
            c_json = plain_metadata(c_meta) if metadata is not None else [None] * n
            one_by_one = None if units is not None else c_vecs  # vectors given as rows
            if (
                fresh is not None
                and len(fresh) == n
                and seen.isdisjoint(fresh)
                and c_json is not None
                and plain_texts(c_texts)
            ):
                seen |= fresh
                unit = None if one_by_one is None else self._unit_rows_of(one_by_one, start)
            else:
                c_json, unit = self._checked_one_by_one(
                    c_texts, c_ids, c_meta, one_by_one, start, seen
                )
            yield CheckedChunk(
                c_texts, c_ids, c_meta, c_json, c_vecs if units is not None else unit
            )
            start += n

    def _unit_rows_of(self, vecs: list[Any], start: int) -> np.ndarray:
        """The caller's vectors of rows ``start...`` (given one by one), checked and stacked."""
        return np.stack(
            [self.as_unit_vector(v, f"vectors[{start + j}]") for j, v in enumerate(vecs)]
        )

    def _checked_one_by_one(
        self,
        texts: list[Any],
        ids: list[Any],
        metadata: list[Any],
        vecs: Any,
        start: int,
        seen: set[str],
    ) -> tuple[list[str | None], np.ndarray | None]:
        """The per-row checks of a chunk, in row order (the first bad row raises); adds its
        ids to ``seen``. ``vecs``: the caller's vectors of these rows, one by one, or None
        (the model embeds the texts, or they came as a matrix, checked already). Returns the
        metadata JSON and the unit vectors (None where ``vecs`` is)."""
        out_json: list[str | None] = []
        units: list[np.ndarray] = []
        for j, (text, doc_id, meta) in enumerate(zip(texts, ids, metadata)):
            i = start + j
            check_text(text, f"texts[{i}]")
            check_id(doc_id, f"ids[{i}]")
            if doc_id in seen:
                raise DuplicateIdError(
                    f"id {doc_id!r} appears twice in this call; ids must be unique."
                )
            seen.add(doc_id)
            out_json.append(check_metadata(meta, f"metadata[{i}]"))
            if vecs is not None:
                units.append(self.as_unit_vector(vecs[j], f"vectors[{i}]"))
        return out_json, np.stack(units) if vecs is not None else None

    def delete(self, ids: Iterable[str], *, missing_ok: bool = False) -> int:
        """Delete documents by id (a tombstone until :meth:`compact`); all or nothing.

        Returns:
            The number of documents deleted.

        Raises:
            DocumentNotFoundError: an id is not in the collection (nothing is deleted); pass
                ``missing_ok=True`` to ignore unknown ids.
        """
        self._ensure_open()
        items = [ids] if isinstance(ids, str) else list(ids)
        checked = [check_id(d, f"ids[{i}]") for i, d in enumerate(items)]
        return self._delete(list(dict.fromkeys(checked)), missing_ok)

    # ------------------------------------------------------------------ shared: reads
    def get(self, ids: Sequence[str] | str, *, include_vectors: bool = False) -> list[Document]:
        """Stored documents by id, in the order asked.

        Raises:
            DocumentNotFoundError: any id is unknown (the message lists them).
        """
        self._ensure_open()
        items = [ids] if isinstance(ids, str) else list(ids)
        return self._get([check_id(d, f"ids[{i}]") for i, d in enumerate(items)], include_vectors)

    @contextmanager
    def selection(self, where: dict[str, Any] | None = None) -> Iterator[Selection]:
        """The documents :meth:`select` would return, as a :class:`Selection` read on demand.

        The default reads them all (:meth:`select`); a single collection reads rows only
        when asked, holding its read lock for the ``with`` block, so call no other method of
        the collection inside it (a writer waiting would make that wait forever).
        """
        ids, vectors = self.select(where)

        def ids_of(rows: np.ndarray) -> list[str]:
            return [ids[i] for i in np.asarray(rows).tolist()]

        yield Selection(vectors, ids_of, lambda rows: [d.text for d in self.get(ids_of(rows))])

    def select(self, where: dict[str, Any] | None = None) -> tuple[list[str], np.ndarray]:
        """Ids and unit vectors of the live documents, optionally filtered by metadata.

        The input of the whole-collection views (clusters, outliers, maps, centroids).

        Args:
            where: a metadata filter (see :mod:`embedsearch.filters`); None selects everything.

        Returns:
            ``(ids, vectors)`` in ``ids()`` order.
        """
        predicate = compile_filter(where) if where is not None else None
        ids = self.ids()
        vectors = self.vectors()
        if predicate is None:
            return ids, vectors
        docs = self.get(ids)
        keep = np.fromiter((predicate(d.metadata or {}) for d in docs), dtype=bool, count=len(docs))
        return [i for i, k in zip(ids, keep) if k], vectors[keep]


__all__ = ["CheckedChunk", "CollectionBase", "Query", "SearchRequest", "Selection"]
