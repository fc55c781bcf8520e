"""Threads within one process: a small readers–writer lock, and work done beside the model.

Writers are preferred (a waiting writer blocks new readers), so a steady stream of searches
cannot starve an ``add``. The lock guards only the in-memory apply step of a write, which is
short; encoding and file writes happen outside it.

:func:`beside` runs a call on a thread of its own and hands back its future: a write looks
its ids up and readies the index while the model embeds its texts (the model's runtime
releases the GIL), instead of before or after.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
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
