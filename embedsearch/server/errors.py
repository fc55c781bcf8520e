"""Errors over HTTP: every failure answers ``{"error": {"type", "message"}}``.

``EmbedSearchError`` subclasses keep the status their class declares (``http_status``), so a
bad filter is 422, an unknown collection 404, a held write lock 423. Anything else that
escapes a route is a real fault: 500 with an opaque message and an error id that points at
the traceback in the server log. Messages never carry stack traces, and filesystem paths are
scrubbed from them (a client should not learn where the server keeps its data).
"""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import EmbedSearchError, UnauthorizedError
from ..wording import HTTP_WORDS, reword
from .schemas import SEARCH_TAGS

log = logging.getLogger("embedsearch.server")

_ABS_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"`]+/)+[^\s/'\"`,;)]*")
_STATUS_TYPES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "ValidationError",
    429: "TooManyRequests",
    503: "ServiceUnavailable",
}


def scrub(message: str, home: Path | None = None) -> str:
    """Remove filesystem paths from a message meant for a client.

    The collection home is replaced by ``<home>``; any other absolute path by ``<path>``.
    """
    if home is not None:
        for root in {str(home), str(Path(home).resolve())}:
            if root not in ("", "/", "."):
                message = message.replace(root + "/", "").replace(root, "<home>")
    return _ABS_PATH.sub(_scrub_one, message)


#: First segments of the server's own routes: ``POST /collections/{name}/documents`` in a
#: message is advice about the API, not a filesystem path, and is left as it is.
_ROUTE_RE = re.compile(
    r"/(?:collections|v1|healthz|readyz|livez|metrics|docs|openapi\.json|ui|encoders|mcp)(?:/|$)"
)


def _scrub_one(match: re.Match[str]) -> str:
    return match.group(0) if _ROUTE_RE.match(match.group(0)) else "<path>"


def error_body(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    """The one error shape every non-2xx answer uses."""
    return {"error": {"type": kind, "message": message, **extra}}


def _home(request: Request) -> Path | None:
    return getattr(request.app.state, "home", None)


async def _embedsearch_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EmbedSearchError)
    status = int(getattr(exc, "http_status", 400))
    message = scrub(reword(str(exc), HTTP_WORDS), _home(request))
    if status >= 500:
        err_id = uuid.uuid4().hex[:12]
        log.error("error %s on %s %s: %s", err_id, request.method, request.url.path, exc)
        message = f"{message} (error id {err_id})"
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(type(exc).__name__, message), status, headers=headers)


def _field(loc: Any) -> str:
    """An error's location as the client's field path: ``k``, ``where.year``, ``queries.0``.

    Drops ``body`` and the tags pydantic inserts for the search union (``TextSearch``); a
    metadata key is kept whatever its case."""
    shown = [str(p) for p in loc if p != "body" and p not in SEARCH_TAGS]
    return ".".join(shown) or "body"


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:5]:
        parts.append(f"{_field(err.get('loc', ()))}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def _unauthenticated(request: Request) -> bool:
    """True when keys are required and the request carries none that is valid.

    FastAPI parses (and validates) the body before it runs the auth dependency, so a body
    error would otherwise answer 422 to a client that is not allowed to ask at all.
    """
    checker = getattr(request.app.state, "keys", None)
    if checker is None or not checker.enabled:
        return False
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() != "bearer" or not checker.accepts(key.strip())


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if _unauthenticated(request):
        return await _embedsearch_error(
            request,
            UnauthorizedError(
                "Missing or invalid API key: send `Authorization: Bearer <key>` with a key "
                "from the server's key list."
            ),
        )
    errors = list(exc.errors())
    details = [
        {
            "loc": [str(p) for p in err.get("loc", ())],
            "msg": scrub(str(err.get("msg", "")), _home(request)),
            "type": str(err.get("type", "")),
        }
        for err in errors[:50]
    ]
    return JSONResponse(
        error_body(
            "ValidationError",
            scrub(_validation_message(errors), _home(request)) or "invalid request",
            details=details,
        ),
        422,
    )


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = _STATUS_TYPES.get(exc.status_code, "HTTPError")
    message = exc.detail if isinstance(exc.detail, str) else kind
    if exc.status_code == 404 and message == "Not Found":
        message = f"No route {request.method} {request.url.path}; see /docs for the API."
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
            message = f"{request.method} is not allowed on this path; use {headers['Allow']}."
    return JSONResponse(error_body(kind, message), exc.status_code, headers=headers or None)


def _leaf_routes(routes: Any) -> Any:
    for route in routes:
        inner = getattr(getattr(route, "original_router", None), "routes", None)
        if inner is not None:  # FastAPI's included router (routers here have no prefix)
            yield from _leaf_routes(inner)
        else:
            yield route


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    path = request.url.path
    methods: set[str] = set()
    for route in _leaf_routes(request.app.router.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    methods.discard("HEAD")  # implied by GET, and not part of the documented API
    return sorted(methods)


def _internal_error(request_method: str, path: str) -> JSONResponse:
    err_id = uuid.uuid4().hex[:12]
    log.exception("unhandled error %s on %s %s", err_id, request_method, path)
    return JSONResponse(
        error_body(
            "InternalError",
            f"The server failed on this request (error id {err_id}); the server log has details.",
        ),
        500,
    )


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    return _internal_error(request.method, request.url.path)


class CatchAllMiddleware:
    """Turn an unexpected exception into the JSON 500 *without* re-raising it.

    Starlette's own last-resort handler answers and then re-raises, and uvicorn then drops
    the connection, so a client's next request on that keep-alive connection fails with
    "connection reset". Answering here keeps the connection usable.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:
                raise  # too late to answer; let uvicorn close the connection
            response = _internal_error(scope.get("method", "?"), scope.get("path", "?"))
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the JSON shape above."""
    app.add_exception_handler(EmbedSearchError, _embedsearch_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unhandled)
