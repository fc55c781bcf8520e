"""Ray plumbing shared by ingest and sharded search: import, connect, unwrap errors."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from ..errors import EmbedSearchError

INSTALL_HINT = "pip install 'embedsearch[distributed]' (it brings ray[data])"


def require_ray() -> Any:
    """Import Ray, or say how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise EmbedSearchError(
            f"Scale-out needs Ray, which is not installed: {INSTALL_HINT}."
        ) from exc
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[Any]:
    """Use the Ray that is already initialised, or connect/start one for the block.

    Args:
        address: ``None`` starts a local Ray (or joins ``RAY_ADDRESS`` when set); ``"auto"``
            joins the cluster running on this machine; ``"ray://host:10001"`` or
            ``"host:6379"`` joins a remote one. Ignored when Ray is already initialised.

    Yields:
        The ``ray`` module. A Ray this block started is shut down when it ends.
    """
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                logging_level=logging.WARNING,
                ignore_reinit_error=True,
            )
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError…
            where = f"the Ray cluster at {address!r}" if address else "a local Ray"
            raise EmbedSearchError(
                f"Cannot start or join {where} ({type(exc).__name__}: {exc}). Start the cluster "
                "with `ray start --head` (and `ray start --address=HEAD:6379` on workers), or "
                "pass the right address."
            ) from exc
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def original_error(exc: BaseException) -> BaseException:
    """The exception a Ray task or actor raised, without Ray's wrappers.

    Ray wraps a remote exception in ``RayTaskError`` (whose text is a remote traceback);
    callers and the HTTP server want the original :class:`EmbedSearchError` and its message.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, EmbedSearchError) and type(cur).__module__.startswith("embedsearch"):
            return cur
        cur = getattr(cur, "cause", None) or cur.__cause__
    return exc


def call(refs: Any) -> Any:
    """``ray.get`` that re-raises the remote EmbedSearchError itself."""
    ray = require_ray()
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        orig = original_error(exc)
        if orig is not exc:
            raise orig from None
        raise
