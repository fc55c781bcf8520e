"""What routes share: the app's state, common error responses, a stopwatch.

Route handlers are plain ``def`` functions: FastAPI runs them in its worker thread pool, so
encoding, FAISS searches and file writes never block the event loop (``/healthz`` answers
while a large add runs). The :class:`~embedsearch.Collection` is thread-safe: many readers,
one writer, and readers see committed states only.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from ..errors import InvalidInputError
from .encoders import QueryEncoders
from .limits import Limits
from .registry import Registry
from .schemas import ErrorResponse


@dataclass
class ServerState:
    """Everything a route needs, built once by :func:`embedsearch.server.create_app`."""

    registry: Registry
    limits: Limits
    queries: QueryEncoders
    rerankers: tuple[str, ...] = ()


async def _state(request: Request) -> ServerState:  # async: no thread hop for a lookup
    return request.app.state.server


State = Annotated[ServerState, Depends(_state)]


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("The body is not UTF-8 JSON."),
    401: _error("Missing or invalid API key."),
    404: _error("Unknown collection or document."),
    405: _error("Method not allowed on this path (the Allow header lists those that are)."),
    409: _error("Conflict: the id or collection exists, or the model does not match."),
    413: _error("Too large: body bytes, texts per request or characters per text."),
    422: _error("Invalid input: validation, filter syntax, k out of range, text over window."),
    423: _error("Another writer holds the collection's write lock."),
    500: _error("A real fault: corruption, or a bug (see the server log by error id)."),
}


class Stopwatch:
    """Milliseconds since creation: ``took_ms`` in answers."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def ms(self) -> float:
        return round((time.perf_counter() - self.start) * 1000.0, 3)


def call_with_options(fn: Callable[..., Any], /, *args: Any, **optional: Any) -> Any:
    """Call ``fn(*args, **optional)``, leaving out options the client did not set (None).

    The method's own defaults then apply, as in Python. An option the method does not take
    is a 422 naming it, rather than a TypeError (500).
    """
    given = {k: v for k, v in optional.items() if v is not None}
    params = inspect.signature(fn).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in given if k not in params and not takes_kwargs]
    if unknown:
        raise InvalidInputError(
            f"{getattr(fn, '__name__', 'this operation')} does not take "
            f"{', '.join(unknown)} on this server; remove it."
        )
    return fn(*args, **given)
