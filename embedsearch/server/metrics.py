"""Prometheus metrics through prometheus-client: requests, latency, collection sizes.

* ``embedsearch_http_requests_total{method,route,status}``: requests answered, by route
  *template* (``/collections/{name}/search``), so label cardinality stays bounded whatever
  names and ids clients send; unmatched paths count under ``<unmatched>``.
* ``embedsearch_http_request_duration_seconds{method,route}``: latency histogram.
* ``embedsearch_http_requests_in_progress``: requests being served.
* ``embedsearch_collection_documents{collection}``: live documents of each collection this
  process has open (read at scrape time), and ``embedsearch_collections_open``.

Each app gets its own :class:`CollectorRegistry` (two apps in one process do not clash).
Under several worker processes set ``PROMETHEUS_MULTIPROC_DIR`` (``serve --workers`` does) and
``/metrics`` aggregates every worker's request metrics.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def multiprocess_dir() -> str | None:
    """The prometheus-client multiprocess directory, when several workers share metrics."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class CollectionSizes(Collector):
    """Reads document counts from the registry's open handles at scrape time."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Iterator[GaugeMetricFamily]:
        docs = GaugeMetricFamily(
            "embedsearch_collection_documents",
            "Live documents per open collection.",
            labels=["collection"],
        )
        handles = self.registry.open_handles()
        for name, col in sorted(handles.items()):
            try:
                docs.add_metric([name], float(len(col)))
            except Exception:  # noqa: BLE001 - a closing handle must not break the scrape
                continue
        yield docs
        open_gauge = GaugeMetricFamily(
            "embedsearch_collections_open", "Collections this process has open."
        )
        open_gauge.add_metric([], float(len(handles)))
        yield open_gauge


class Metrics:
    """The metric objects of one app, and the text exposition of them."""

    def __init__(self, collection_registry: Any) -> None:
        self.multiproc = multiprocess_dir()
        # In multiprocess mode values live in files; the objects must not be registered in
        # a registry that also reads those files, or every sample would be counted twice.
        self.registry = CollectorRegistry(auto_describe=True)
        target = None if self.multiproc else self.registry
        self.requests = Counter(
            "embedsearch_http_requests_total",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=target,
        )
        self.latency = Histogram(
            "embedsearch_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route"],
            buckets=BUCKETS,
            registry=target,
        )
        self.in_progress = Gauge(
            "embedsearch_http_requests_in_progress",
            "HTTP requests being served.",
            registry=target,
            multiprocess_mode="livesum",
        )
        self.sizes = CollectionSizes(collection_registry)
        self.registry.register(self.sizes)

    def render(self) -> bytes:
        """The Prometheus text format of every metric."""
        if not self.multiproc:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        scrape = CollectorRegistry()
        multiprocess.MultiProcessCollector(scrape)
        scrape.register(self.sizes)
        return generate_latest(scrape)


def route_template(scope: Scope) -> str:
    """The matched route's path template, or ``<unmatched>``."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else "<unmatched>"


class MetricsMiddleware:
    """Counts and times every HTTP request by route template (outermost middleware)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_progress.dec()
            route = route_template(scope)
            method = scope.get("method", "GET")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)


router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        401: {
            "description": "Missing or invalid API key.",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
            },
        },
    },
)
def metrics_endpoint(request: Request) -> Response:
    """Request counts and latency histograms per route, collection sizes (text format).

    A plain ``def``: counting documents may reload a collection another process changed."""
    body = request.app.state.metrics.render()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
