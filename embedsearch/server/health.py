"""``GET /healthz`` (liveness) and ``GET /readyz`` (warm: model loaded and run once, the
collections opened; see :func:`embedsearch.server.app._warm`).

Both need no API key, answer from the event loop without touching a collection, and so stay
fast while the worker threads are busy with a large add.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .schemas import Health, Ready

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> dict[str, Any]:
    """200 while the process serves requests."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Ready,
    summary="Readiness",
    responses={503: {"model": Ready, "description": "The model is still loading (or failed)."}},
)
async def readyz(request: Request) -> Any:
    """200 once the server is warm: the default model and its query copy loaded and run once,
    the collections opened (so the first request is as fast as the tenth); 503 before, or if
    loading failed (``detail`` says why)."""
    ready = request.app.state.ready
    body = {"status": ready.status, "model": ready.model, "detail": ready.detail}
    return JSONResponse(body, status_code=200 if ready.status == "ready" else 503)
