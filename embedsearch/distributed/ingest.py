"""Distributed ingest on Ray: many input shards → encoder actors → one ordinary collection.

Pipeline (Ray Data)::

    shard list ──from_items──▶ map_batches(_ShardEncoder, ActorPoolStrategy(num_actors))
                                 │ each actor loads the model once, reads whole shards
                                 │ (pyarrow: local files or any URI) and yields batches of
                                 │ (row number, id, text, metadata JSON, unit vector)
                                 ▼
    driver ── in shard order ──▶ target.add(texts, ids=, metadata=, vectors=)

The driver is the only writer: it commits through the collection's own commit protocol
(``Collection.add(..., vectors=...)``: the same validation, segments, manifest, write
lock and index maintenance as any add), so the result is an ordinary collection that
``embedsearch.open`` reads. A :class:`~embedsearch.distributed.sharded.ShardedCollection`
target is written through its shard actors the same way.

**Resume.** ``<collection>/derived/ray-ingest/progress.json`` records, per input shard
(keyed by its location, checked against size and mtime), how many rows are committed.
Before each commit the driver writes the row range it is about to commit (an intent
record), after it the new committed position. A restarted job therefore

* skips shards marked done and the committed prefix of a partly done shard (no re-embedding);
* resolves a commit that was interrupted between the collection's commit and the progress
  update by looking the ids of that range up in the collection (reading, not embedding);
* ends with exactly one copy of each document.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import durable, store
from ..errors import EmbedSearchError, InvalidInputError
from ..readers import ReadOptions
from . import sources
from ._ray import original_error, ray_session

log = logging.getLogger(__name__)

PROGRESS_DIR = Path("derived") / "ray-ingest"
PROGRESS_FILE = "progress.json"
PROGRESS_FORMAT = "embedsearch-ray-ingest"
DEFAULT_BATCH_SIZE = 256
DEFAULT_COMMIT_ROWS = 50_000


# --------------------------------------------------------------------------- report
@dataclass
class IngestReport:
    """What one :func:`ingest` run did.

    Attributes:
        collection: path of the target collection.
        shards_total: input shards the source resolved to.
        shards_skipped: shards already done by an earlier run (not read, not embedded).
        shards_verified: shards whose last commit was interrupted before it was recorded,
            found complete in the collection (read, not embedded).
        shards_ingested: shards embedded (fully or their unfinished rest) by this run.
        documents_added: documents committed by this run.
        rows_embedded: rows that went through an encoder actor in this run.
        encode_calls: encoder calls made by the actors in this run.
        encode_s: seconds the actors spent in the model (summed over actors).
        encode_span_s: from the first encoder call's start to the last one's end: the
            pipeline's running time without actor start-up and model loading.
        embedded_shards: locations of the shards that rows were embedded from.
        actors: encoder actors used; seconds: wall time of the run.
    """

    collection: str
    shards_total: int = 0
    shards_skipped: int = 0
    shards_verified: int = 0
    shards_ingested: int = 0
    documents_added: int = 0
    rows_embedded: int = 0
    encode_calls: int = 0
    encode_s: float = 0.0
    encode_span_s: float = 0.0
    embedded_shards: list[str] = field(default_factory=list)
    actors: int = 0
    seconds: float = 0.0

    @property
    def docs_per_s(self) -> float:
        """Documents committed per second of the whole run (start-up included)."""
        return self.documents_added / self.seconds if self.seconds else 0.0

    @property
    def steady_docs_per_s(self) -> float:
        """Rows embedded per second while the encoders ran (start-up excluded)."""
        return self.rows_embedded / self.encode_span_s if self.encode_span_s else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "docs_per_s": round(self.docs_per_s, 1),
            "steady_docs_per_s": round(self.steady_docs_per_s, 1),
        }


# --------------------------------------------------------------------------- progress
def progress_path(root: Path) -> Path:
    """Where a collection keeps the progress of Ray ingest jobs."""
    return root / PROGRESS_DIR / PROGRESS_FILE


def _fresh_progress() -> dict[str, Any]:
    return {"format": PROGRESS_FORMAT, "version": 1, "shards": {}}


def load_progress(root: Path) -> dict[str, Any]:
    """The recorded progress of Ray ingest jobs into the collection at ``root``."""
    path = progress_path(root)
    try:
        obj = json.loads(path.read_bytes())
    except FileNotFoundError:
        return _fresh_progress()
    except ValueError:
        log.warning("%s is unreadable; starting without recorded progress", path)
        return _fresh_progress()
    if obj.get("format") != PROGRESS_FORMAT or not isinstance(obj.get("shards"), dict):
        return _fresh_progress()
    return obj


def _save_progress(root: Path, progress: dict[str, Any]) -> None:
    """Write the progress file atomically (old or new, never torn)."""
    path = progress_path(root)
    durable.make_dirs(path.parent)
    progress["updated"] = store.now_iso()
    store.atomic_write(path, json.dumps(progress, indent=1, sort_keys=True).encode())


# --------------------------------------------------------------------------- actors
class _ShardEncoder:
    """Ray Data callable class: one model load per actor; reads and embeds whole shards."""

    def __init__(self, model: str, backend: str, read_opts: dict[str, Any], batch_size: int):
        import ray

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        try:
            import torch

            torch.set_num_threads(max(1, int(cpus)))
        except ImportError:  # onnx backends need no torch
            pass
        from ..encoder import get_encoder

        self.encoder = get_encoder(model, backend)
        self.opts = ReadOptions(**read_opts)
        self.batch_size = batch_size
        self.tag = uuid.uuid4().hex[:12]
        self.calls = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        for raw in batch["task"]:
            task = json.loads(str(raw))
            skip = set(task["skip_ids"])
            pending: list[sources.Row] = []
            for row in sources.read_rows(task["uri"], self.opts, task.get("prefix")):
                if row.n < task["start"] or row.id in skip:
                    continue
                pending.append(row)
                if len(pending) >= self.batch_size:
                    yield self._encode(task["index"], pending)
                    pending = []
            if pending:
                yield self._encode(task["index"], pending)

    def _encode(self, index: int, rows: list[sources.Row]) -> dict[str, np.ndarray]:
        t0 = time.time()  # wall clock: comparable across the actors of one machine
        vectors = self.encoder.encode([r.text for r in rows])
        t1 = time.time()
        self.calls += 1
        n = len(rows)
        return {
            "task": np.full(n, index, dtype=np.int64),
            "n": np.array([r.n for r in rows], dtype=np.int64),
            "id": np.array([r.id for r in rows], dtype=object),
            "text": np.array([r.text for r in rows], dtype=object),
            "metadata": np.array([r.metadata_json or "" for r in rows], dtype=object),
            "vector": vectors,
            "call": np.array([f"{self.tag}:{self.calls}"] * n, dtype=object),
            "t0": np.full(n, t0),
            "t1": np.full(n, t1),
        }


# --------------------------------------------------------------------------- targets
def _is_sharded(path: Path) -> bool:
    from .layout import SHARDED_FILE

    return (path / SHARDED_FILE).is_file()


class _Target:
    """The collection being written: one Collection, or a ShardedCollection."""

    def __init__(
        self,
        collection_path: str | os.PathLike[str],
        *,
        model: str | None,
        index: str,
        shards: int | None,
        address: str | None,
    ) -> None:
        from ..collection import open as open_collection
        from ..validation import resolve_path
        from .sharded import ShardedCollection

        path = resolve_path(collection_path)
        self.sharded = _is_sharded(path) or shards is not None
        if self.sharded:
            self.col: Any = ShardedCollection.open(
                path, shards=shards, model=model, index=index, address=address
            )
            self.lock = store.WriterLock(path)
            self.lock.acquire()  # one ingest job per sharded collection
        else:
            self.col = open_collection(path, model=model, index=index)
            self.col.add([])  # takes the write lock now: a second writer fails before any work
            self.lock = None
        self.path = Path(self.col.path)
        model_info = self.col.info()["model"]
        self.model = model_info["name"]
        self.backend = model_info.get("backend") or "torch"

    def present(self, ids: list[str]) -> set[str]:
        if self.sharded:
            return set(ids) - set(self.col.missing(ids))
        return {i for i in ids if i in self.col}

    def write(self, batch: dict[str, Any], upsert: bool) -> int:
        meta = [json.loads(m) if m else None for m in batch["metadata"]]
        kwargs = {
            "ids": list(batch["id"]),
            "metadata": meta,
            "vectors": batch["vector"],
            "progress": False,
        }
        write = self.col.upsert if upsert else self.col.add
        return len(write(list(batch["text"]), **kwargs))

    def finish(self) -> None:
        """Train an explicit approximate index once on a sample of the whole collection.

        While rows stream in, an explicit spec (``IVF16384,PQ48``) trains as soon as it has
        enough rows for its cells, i.e. on the first rows only; this retrains it on a proper
        sample (64 per IVF cell, at least 50k) once all rows are in, and re-fills it.
        ``auto`` indexes retrain themselves as the collection grows.
        """
        info = self.col.info()
        parts = info.get("shards") or [{"count": info["count"], "index": info["index"]}]
        under = []
        for part in parts:
            idx = part["index"]
            if idx.get("kind") != "approximate" or idx.get("spec", "auto") == "auto":
                continue
            m = re.search(r"IVF(\d+)", idx.get("resolved") or "")
            want = min(int(part["count"]), max(50_000, 64 * int(m.group(1)) if m else 0))
            if int(idx.get("trained_rows") or 0) < want:
                under.append(idx["spec"])
        if under:
            log.info("retraining %s on a sample of the whole collection", under[0])
            self.col.reindex(under[0])

    def close(self) -> None:
        try:
            self.col.close()
        finally:
            if self.lock is not None:
                self.lock.release()


# --------------------------------------------------------------------------- planning
@dataclass
class _Task:
    index: int
    shard: sources.Shard
    start: int
    skip_ids: list[str]


def _plan(
    shards: list[sources.Shard],
    progress: dict[str, Any],
    target: _Target,
    opts: ReadOptions,
    upsert: bool,
    report: IngestReport,
) -> list[_Task]:
    """Decide per shard: skip (done), verify an interrupted commit, or embed from a row."""
    tasks: list[_Task] = []
    for shard in shards:
        rec = progress["shards"].get(shard.uri)
        if rec is not None and (rec["size"], rec["mtime_ns"]) != (shard.size, shard.mtime_ns):
            if not upsert:
                raise InvalidInputError(
                    f"{shard.uri} changed (size or mtime) since an earlier run ingested "
                    f"{rec['committed_rows']} of its rows. Re-run with upsert=True (--upsert) to "
                    "replace its documents, or resume=False to start over in a new collection."
                )
            rec = None
        if rec is None:
            rec = {**shard.to_json(), "committed_rows": 0, "pending_rows": 0, "done": False}
            rec["documents"] = 0
            progress["shards"][shard.uri] = rec
        if rec["done"]:
            report.shards_skipped += 1
            continue
        start, skip_ids = rec["committed_rows"], []
        if rec["pending_rows"] > start:  # a commit was under way when the last run stopped
            window, more = [], False
            for r in sources.read_rows(shard.uri, opts, shard.stem):  # reading only
                if r.n >= rec["pending_rows"]:
                    more = True
                    break
                if r.n >= start:
                    window.append(r.id)
            found = target.present(window) if not upsert else set()
            if len(found) == len(window):  # the interrupted commit did complete
                start = rec["committed_rows"] = rec["pending_rows"]
                rec["documents"] += len(window)
            else:  # it did not (or, sharded, only on some shards): embed what is missing
                skip_ids, more = sorted(found), True
            if not more:
                rec["done"] = True
                rec["pending_rows"] = rec["committed_rows"]
                report.shards_verified += 1
                continue
        tasks.append(_Task(len(tasks), shard, start, skip_ids))
    return tasks


# --------------------------------------------------------------------------- driver
def _resources(ray: Any, num_actors: int, cpus: float | None, gpus: float | None) -> dict:
    total = ray.cluster_resources()
    if gpus is None:
        gpus = 1.0 if total.get("GPU", 0) >= 1 else 0.0
    if cpus is None:
        if gpus:
            cpus = 1.0
        else:
            share = ray.available_resources().get("CPU", total.get("CPU", 1.0)) / num_actors
            cpus = float(math.floor(share)) if share >= 1 else max(share, 0.1)
    out: dict[str, Any] = {"num_cpus": cpus}
    if gpus:
        out["num_gpus"] = gpus
    return out


def ingest(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    collection_path: str | os.PathLike[str],
    *,
    model: str | None = None,
    index: str = "auto",
    num_actors: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    resume: bool = True,
    upsert: bool = False,
    address: str | None = None,
    shards: int | None = None,
    text_field: str | None = None,
    id_field: str | None = None,
    meta_fields: Sequence[str] | None = None,
    commit_rows: int = DEFAULT_COMMIT_ROWS,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float | None = None,
    on_shard: Callable[[str, dict[str, Any]], None] | None = None,
    progress: bool = False,
) -> IngestReport:
    """Embed Parquet / JSONL / CSV shards on a Ray cluster into an ordinary collection.

    Args:
        source: a file, directory, glob or URI (``s3://bucket/part-*.parquet``), or a list.
        collection_path: collection name or path; created when missing. A sharded
            collection (see :class:`ShardedCollection`) is written through its shard actors.
        model: model of a new collection (default: the default model); an existing
            collection's own model is always used.
        index: index spec of a new collection (``auto`` or a FAISS factory string).
        num_actors: encoder actors (each loads the model once).
        batch_size: texts per encoder call (and per block handed to the driver).
        resume: continue where an earlier run on this collection stopped; ``False`` ignores
            (and overwrites) the recorded progress.
        upsert: replace documents whose id exists instead of failing.
        address: Ray cluster to join (``None``: the initialised Ray, ``RAY_ADDRESS`` or a new
            local one; ``"auto"``; ``"ray://head:10001"``).
        shards: create the target as a sharded collection with this many shards.
        text_field / id_field / meta_fields: how rows map to documents (as ``embedsearch index``).
        commit_rows: the driver commits at most this many rows at once (and at each shard end).
        cpus_per_actor / gpus_per_actor: actor resources; default one GPU each when the
            cluster has GPUs, else an even share of the free CPUs.
        on_shard: called as ``on_shard(uri, record)`` when a shard is complete.
        progress: show Ray Data's progress bars.

    Returns:
        An :class:`IngestReport`.

    Raises:
        InvalidInputError: bad source, rows, or a shard that changed since it was ingested.
        DuplicateIdError: an id exists already (use ``upsert=True``).
        LockedError: another writer holds the collection.
    """
    if num_actors < 1 or batch_size < 1 or commit_rows < 1:
        raise InvalidInputError("num_actors, batch_size and commit_rows must be positive.")
    t0 = time.perf_counter()
    opts = ReadOptions(text_field=text_field, id_field=id_field, meta_fields=meta_fields)
    shard_list = sources.expand(source)
    with ray_session(address) as ray:
        target = _Target(collection_path, model=model, index=index, shards=shards, address=address)
        report = IngestReport(str(target.path), shards_total=len(shard_list), actors=num_actors)
        try:
            state = load_progress(target.path) if resume else _fresh_progress()
            tasks = _plan(shard_list, state, target, opts, upsert, report)
            _save_progress(target.path, state)
            if tasks:
                _run(
                    ray,
                    tasks,
                    state,
                    target,
                    opts,
                    upsert,
                    report,
                    on_shard,
                    progress,
                    num_actors=num_actors,
                    batch_size=batch_size,
                    commit_rows=commit_rows,
                    resources=_resources(ray, num_actors, cpus_per_actor, gpus_per_actor),
                )
                target.finish()
        finally:
            target.close()
    report.seconds = time.perf_counter() - t0
    return report


def _run(
    ray: Any,
    tasks: list[_Task],
    state: dict[str, Any],
    target: _Target,
    opts: ReadOptions,
    upsert: bool,
    report: IngestReport,
    on_shard: Callable[[str, dict[str, Any]], None] | None,
    progress: bool,
    *,
    num_actors: int,
    batch_size: int,
    commit_rows: int,
    resources: dict[str, Any],
) -> None:
    """Stream embedded rows in shard order and commit them, recording progress."""
    import ray.data

    items = [
        {
            "task": json.dumps(
                {
                    "index": t.index,
                    "uri": t.shard.uri,
                    "prefix": t.shard.stem,
                    "start": t.start,
                    "skip_ids": t.skip_ids,
                }
            )
        }
        for t in tasks
    ]
    read_opts = {
        "text_field": opts.text_field,
        "id_field": opts.id_field,
        "meta_fields": list(opts.meta_fields) if opts.meta_fields is not None else None,
    }
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _ShardEncoder,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        fn_constructor_kwargs={
            "model": target.model,
            "backend": target.backend,
            "read_opts": read_opts,
            "batch_size": batch_size,
        },
        **resources,
    )
    ds.context.execution_options.preserve_order = True  # rows of shard i before shard i+1's
    ds.context.enable_progress_bars = progress

    span = [math.inf, 0.0]
    busy: dict[str, float] = {}
    last_n: dict[int, int] = {}  # last row number received per task (rows come in order)
    buffer: list[dict[str, Any]] = []
    current = 0  # index of the task whose rows are arriving

    def commit() -> None:
        if not buffer:
            return
        task = tasks[current]
        rec = state["shards"][task.shard.uri]
        merged = {k: np.concatenate([b[k] for b in buffer]) for k in buffer[0]}
        buffer.clear()
        rec["pending_rows"] = int(merged["n"][-1]) + 1  # intent: these rows may be committed
        _save_progress(target.path, state)
        added = target.write(merged, upsert)
        rec["committed_rows"] = rec["pending_rows"]
        rec["documents"] += added
        report.documents_added += added
        _save_progress(target.path, state)

    def finish_upto(stop: int) -> None:
        for task in tasks[:stop]:
            rec = state["shards"][task.shard.uri]
            if not rec["done"]:
                rec["done"] = True
                rec["pending_rows"] = rec["committed_rows"]
                _save_progress(target.path, state)
                if on_shard is not None:
                    on_shard(task.shard.uri, dict(rec))

    it = iter(ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2))

    def batches() -> Any:
        """The pipeline's output; when it fails, first commit the rows already received."""
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except BaseException:
                with contextlib.suppress(Exception):
                    commit()  # their rows are embedded and in order: keep them
                raise
            yield batch

    try:
        for batch in batches():
            for idx in np.unique(batch["task"]):
                part = {k: v[batch["task"] == idx] for k, v in batch.items()}
                idx = int(idx)
                if idx < current:  # a retried task may resend rows of a finished shard
                    if (part["n"] > last_n.get(idx, -1)).any():  # new rows: order was broken
                        rec = state["shards"][tasks[idx].shard.uri]
                        rec["done"] = False  # resume it from its committed rows next time
                        _save_progress(target.path, state)
                        raise EmbedSearchError(
                            f"Ray Data delivered rows of {tasks[idx].shard.uri} after those of "
                            "a later shard (shard order is required). What was committed is "
                            "recorded; re-run the same command to resume."
                        )
                    continue
                if idx != current:
                    commit()
                    finish_upto(idx)
                    current = idx
                uri = tasks[idx].shard.uri
                if uri not in report.embedded_shards:
                    report.embedded_shards.append(uri)
                    report.shards_ingested += 1
                report.rows_embedded += len(part["n"])
                for c, t0, t1 in zip(part["call"], part["t0"], part["t1"]):
                    busy[str(c)] = float(t1 - t0)
                span[0], span[1] = (
                    min(span[0], float(part["t0"].min())),
                    max(span[1], float(part["t1"].max())),
                )
                fresh = part["n"] > last_n.get(idx, -1)  # a retried task restarts its shard
                if not fresh.all():
                    part = {k: v[fresh] for k, v in part.items()}
                    if not len(part["n"]):
                        continue
                last_n[idx] = int(part["n"][-1])
                buffer.append(part)
                if sum(len(b["n"]) for b in buffer) >= commit_rows:
                    commit()
        commit()
        finish_upto(len(tasks))
    except Exception as exc:
        orig = original_error(exc)
        if orig is not exc:
            raise orig from None
        raise
    finally:
        report.encode_calls = len(busy)
        report.encode_s = round(sum(busy.values()), 3)
        report.encode_span_s = round(span[1] - span[0], 3) if busy else 0.0
        close = getattr(it, "close", None)
        if close is not None:
            close()
