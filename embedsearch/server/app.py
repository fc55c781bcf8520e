"""The FastAPI application: :func:`create_app` wires routers, auth, limits, metrics, CORS.

Example:
    >>> from embedsearch.server import create_app
    >>> app = create_app(home="indexes", api_keys=["a-long-random-key"])
    >>> # uvicorn.run(app, host="127.0.0.1", port=8000)

``embedsearch serve`` builds the same app (see :mod:`embedsearch.cli.cmd_serve`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from .._version import __version__
from ..encoder import get_encoder
from ..validation import home as default_home
from . import errors
from .auth import KeyChecker, keys_from_env, require_key
from .deps import ServerState
from .encoders import QueryEncoders
from .limits import BodySizeLimitMiddleware, Limits
from .metrics import Metrics, MetricsMiddleware
from .registry import Registry

log = logging.getLogger("embedsearch.server")

CONFIG_ENV = "EMBEDSEARCH_SERVER_CONFIG"

DESCRIPTION = """
Semantic search over embedsearch collections: the Python API over HTTP.

* Auth: `Authorization: Bearer <key>` on every route but `/healthz` and `/readyz` when the
  server has keys (`EMBEDSEARCH_API_KEY` or a keys file).
* Errors: `{"error": {"type", "message"}}` with a 4xx status for bad requests; 5xx only for
  real faults.
* Limits: body size and texts per request (413), `k` and over-long texts with
  `truncate=false` (422).
"""


@dataclass
class ReadyState:
    """Whether the default model is loaded (``/readyz``)."""

    status: str = "loading"
    model: str = ""
    detail: str | None = None


def _warm(app: FastAPI) -> None:
    """Make the server warm, then report ready: the first request after ``/readyz`` says 200
    must be as fast as the tenth.

    Loads the default model and its query copy, runs one encode through each and one token
    count (the window check every text request makes), then opens every plain collection in
    the home and runs one search in it (the index and its code paths loaded). A collection
    that cannot be opened does not block readiness: ``detail`` names it.
    """
    state: ServerState = app.state.server
    ready: ReadyState = app.state.ready
    try:
        enc = get_encoder(state.registry.models[0])
        probe = ["warming up the encoder"]
        enc.encode(probe)
        enc.token_counts(probe)
        state.queries.encoder_for(enc).encode(probe)
        _warm_writes(state.registry.models[0])
        problems = []
        for name in state.registry.names():
            if state.registry.is_sharded(name):
                continue  # lives on Ray, started on first use (or by --ray)
            try:
                col = state.registry.get(name)
                if len(col):
                    col.search(np.ones(col.dim, dtype=np.float32), k=1)
            except Exception as exc:  # noqa: BLE001 - reported through /readyz
                problems.append(f"{name}: {type(exc).__name__}: {exc}")
        _first_request(app, next(iter(state.registry.open_handles()), None))
        ready.status = "ready"
        ready.detail = (
            errors.scrub(
                "collections that did not open: " + "; ".join(problems), state.registry.home
            )
            if problems
            else None
        )
    except Exception as exc:  # noqa: BLE001 - reported through /readyz, not raised
        log.exception("loading the model failed")
        ready.status = "failed"
        ready.detail = errors.scrub(f"{type(exc).__name__}: {exc}", state.registry.home)


def _warm_writes(model: str) -> None:
    """Run the write path once (segment file, manifest, index add) in a throwaway collection
    outside the home, so the first add a client sends does not pay for loading the Parquet
    writer and its imports (1.3 s before this)."""
    import tempfile

    from ..collection import open as open_collection

    with tempfile.TemporaryDirectory(prefix="embedsearch-warm-") as tmp:
        col = open_collection(Path(tmp) / "warm", model=model)
        try:
            col.add(["warming up the write path"], ids=["warm"])
        finally:
            col.close()


def _first_request(app: FastAPI, name: str | None) -> None:
    """Send one search through the whole app in-process (middleware, auth, validation, the
    route, serialisation), so that the costs of a first request are paid before ready.

    With auth on, the request carries a one-time key that exists only in memory for the
    duration of this call.
    """
    import asyncio
    import secrets

    keys: KeyChecker = app.state.keys
    token = secrets.token_urlsafe(32)
    body = json.dumps({"query": "warming up", "k": 1}).encode()
    path = f"/collections/{name}/search" if name else "/collections/-/search"
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if keys.enabled:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
        "state": {},
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    with keys.temporary(token):
        try:
            asyncio.run(app(scope, receive, send))
        except Exception:  # noqa: BLE001 - a warm-up only; real requests report their own errors
            log.debug("warm-up request failed", exc_info=True)


def create_app(
    home: str | os.PathLike[str] | None = None,
    *,
    api_keys: Sequence[str] | None = None,
    cors_origins: Sequence[str] | None = None,
    limits: Limits | dict[str, Any] | None = None,
    models: Sequence[str] | None = None,
    rerankers: Sequence[str] = (),
    shared_writes: bool = False,
    write_wait_s: float = 5.0,
    separate_query_encoder: bool = True,
    warm: bool = True,
    ray_address: str | None = None,
    mcp: bool = False,
    mcp_allow_writes: bool = False,
) -> FastAPI:
    """Build the HTTP app over the collections in ``home``.

    Args:
        home: directory of collections (default ``EMBEDSEARCH_HOME`` or ``./indexes``).
        api_keys: accepted Bearer keys. ``None`` reads ``EMBEDSEARCH_API_KEY`` /
            ``EMBEDSEARCH_API_KEY_FILE``; an empty list turns auth off explicitly.
        cors_origins: origins allowed by CORS (``["*"]`` for any); off when empty.
        limits: a :class:`Limits` or a dict of its fields.
        models: models clients may create collections with and embed with (default: the
            default model).
        rerankers: cross-encoders clients may name in ``/retrieve`` (none by default: loading
            a model is the server owner's decision).
        shared_writes: several worker processes serve the same home (release the write
            lock after each write).
        write_wait_s: how long a write waits for a write lock held by another process
            before answering 423.
        separate_query_encoder: embed queries with a private model copy, so searches do not
            wait for a running add (costs one more copy of the model in memory).
        warm: load the default model in the background at startup (``/readyz``).
        ray_address: the Ray cluster that serves sharded collections, joined on first use
            when Ray is not initialised in this process (``None``: ``RAY_ADDRESS``, else a
            private local Ray). Shard actors stop, and a Ray the server started or joined
            shuts down, when the app stops.
        mcp: also serve the MCP tools (:mod:`.mcp_server`) over streamable HTTP at ``/mcp``
            (needs the extra ``mcp``; same API keys as the other routes).
        mcp_allow_writes: offer MCP's add/upsert/delete tools too.

    Returns:
        The FastAPI app; run it with uvicorn.
    """
    root = Path(home) if home is not None else default_home()
    limits = limits if isinstance(limits, Limits) else Limits.from_mapping(limits)
    keys = KeyChecker(keys_from_env() if api_keys is None else api_keys)
    registry = Registry(
        root,
        models=models,
        shared_writes=shared_writes,
        write_wait_s=write_wait_s,
        ray_address=ray_address,
    )
    state = ServerState(
        registry=registry,
        limits=limits,
        queries=QueryEncoders(separate=separate_query_encoder),
        rerankers=tuple(rerankers),
    )

    mcp_server, mcp_endpoint = None, None
    if mcp:
        from .mcp_server import http_endpoint

        mcp_server, mcp_endpoint = http_endpoint(registry, keys, allow_writes=mcp_allow_writes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm:
            threading.Thread(
                target=_warm, args=(app,), name="embedsearch-warm", daemon=True
            ).start()
        else:
            app.state.ready.status = "ready"
        try:
            if mcp_server is not None:
                async with mcp_server.session_manager.run():
                    yield
            else:
                yield
        finally:
            registry.close_all()

    app = FastAPI(
        title="embedsearch",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by _offline_docs from assets in a package: no CDN needed
    )
    app.state.server = state
    app.state.home = registry.home
    app.state.keys = keys
    app.state.ready = ReadyState(model=registry.models[0])
    app.state.metrics = Metrics(registry)

    errors.install(app)
    _include_routers(app)
    _offline_docs(app)
    if mcp_endpoint is not None:
        app.router.add_route("/mcp", mcp_endpoint, methods=["GET", "POST", "DELETE"])

    app.add_middleware(errors.CatchAllMiddleware)  # innermost: sees what handlers do not
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=limits.max_body_bytes,
        upload_max_bytes=limits.max_snapshot_bytes,
    )
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    if keys.enabled:
        log.info("API key auth on (%d key(s))", len(keys))
    return app


def _include_routers(app: FastAPI) -> None:
    from . import (
        collections,
        documents,
        embeddings,
        health,
        latent,
        maps,
        metrics,
        retrieve,
        search,
        ui,
        versions,
    )

    secured = [Depends(require_key)]
    app.include_router(health.router)
    app.include_router(ui.router)  # the page holds no data; the API calls it makes are secured
    app.include_router(collections.router, dependencies=secured)
    app.include_router(documents.router, dependencies=secured)
    app.include_router(search.router, dependencies=secured)
    app.include_router(latent.build_router(), dependencies=secured)
    app.include_router(maps.router, dependencies=secured)
    app.include_router(retrieve.build_router(), dependencies=secured)
    app.include_router(embeddings.router, dependencies=secured)
    app.include_router(metrics.router, dependencies=secured)
    app.include_router(versions.router, dependencies=secured)


def _offline_docs(app: FastAPI) -> None:
    """``/docs`` with Swagger UI's JavaScript and CSS from the ``swagger-ui-bundle`` package,
    mounted at ``/docs-assets``, so the API docs work on a machine without internet."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Any:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="embedsearch API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )


def config_to_env(config: dict[str, Any]) -> None:
    """Store a :func:`create_app` configuration for worker processes (``--workers N``)."""
    os.environ[CONFIG_ENV] = json.dumps(config)


def create_app_from_env() -> FastAPI:
    """App factory for uvicorn workers: the configuration comes from the environment.

    Keys are never put in that configuration: workers read ``EMBEDSEARCH_API_KEY`` and the
    keys file themselves.
    """
    config = json.loads(os.environ.get(CONFIG_ENV) or "{}")
    key_file = config.pop("api_key_file", None)
    keys = keys_from_env(key_file)
    return create_app(api_keys=keys, **config)
