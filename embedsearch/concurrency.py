"""Threads within one process: a small readers–writer lock, and work done beside the model.

Writers are preferred (a waiting writer blocks new readers), so a steady stream of searches
cannot starve an ``add``. The lock guards only the in-memory apply step of a write, which is
short; encoding and file writes happen outside it.

:func:`beside` runs a call on a thread of its own and hands back its future: a write looks
its ids up and readies the index while the model embeds its texts (the model's runtime
releases the GIL), instead of before or after.

:class:`Ahead` runs a known sequence of calls on a few threads, a few ahead of the caller
that takes their results in turn: building keyword postings segment after segment spends
most of its time in numpy and Arrow, which release the GIL, so two cores build 1.3-1.6x as
fast, with at most a few results held at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


def beside(fn: Callable[..., T], *args: Any) -> Future[T]:
    """``fn(*args)`` on a daemon thread of its own; its result (or exception) in the future.
    For short work done beside a long call in the caller's thread, not for pools of work."""
    future: Future[T] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever asks the future
            future.set_exception(exc)

    threading.Thread(
        target=run, name=f"embedsearch-{getattr(fn, '__name__', 'work')}", daemon=True
    ).start()
    return future


def cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class Ahead:
    """``fn(item)`` for each of ``items``, run on up to ``workers`` threads and at most
    ``workers`` ahead of the caller, who takes each result by the item's ``key`` with
    :meth:`take`, in about the order given. A key not planned (or taken twice) is computed
    in the caller's thread. Use as a context manager: leaving cancels what was not started
    and waits for what was. One worker, or one item: nothing runs ahead."""

    def __init__(
        self,
        fn: Callable[[Any], T],
        items: Sequence[Any],
        key: Callable[[Any], Hashable],
        workers: int,
    ) -> None:
        self._fn, self._items, self._key = fn, list(items), key
        self._workers = max(1, workers)
        self._next = 0
        self._pending: dict[Hashable, Future[T]] = {}
        self._pool = None
        if self._workers > 1 and len(self._items) > 1:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="embedsearch-ahead")
        self._fill()

    def _fill(self) -> None:
        while (
            self._pool is not None
            and self._next < len(self._items)
            and len(self._pending) < self._workers
        ):
            item = self._items[self._next]
            self._next += 1
            self._pending[self._key(item)] = self._pool.submit(self._fn, item)

    def take(self, item: Any) -> T:
        """``fn(item)``: computed ahead if it was planned, else now."""
        future = self._pending.pop(self._key(item), None)
        if future is None:
            return self._fn(item)
        try:
            return future.result()
        finally:
            self._fill()

    def __enter__(self) -> Ahead:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()


class RWLock:
    """Shared (read) / exclusive (write) lock for threads of one process."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
