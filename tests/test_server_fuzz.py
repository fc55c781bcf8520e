"""Fuzz every operation of the OpenAPI schema with schemathesis against a real server.

Each operation gets a bounded number of generated requests (valid and invalid); every
answer must be documented in the schema (status, content type, body shape) and none may be
a 5xx. The path parameter ``name`` is pinned to a small existing collection so the
generated bodies reach real code (search filters, vectors, writes) instead of stopping at
404; deleting that collection is left out here (it is tested in test_server.py).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.config import (
    CoveragePhaseConfig,
    ExamplesPhaseConfig,
    PhasesConfig,
    PositiveDataAcceptanceConfig,
)

from embedsearch.server import Limits, create_app
from embedsearch.server.runner import ServerThread

# Snapshot uploads are raw tar bytes: fuzz them with arbitrary bytes and with the start of a
# real tar header (a hostile or damaged archive must be a 4xx, never a 5xx).
schemathesis.openapi.media_type(
    "application/x-tar",
    st.one_of(
        st.binary(max_size=2048),
        st.binary(min_size=1, max_size=600).map(lambda b: b"snapshot.json".ljust(100, b"\0") + b),
    ),
)

KEY = "fuzz-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_EXAMPLES = 4  # per operation and phase
HEAVY_EXAMPLES = 6
TIMES: dict[str, tuple[int, float]] = {}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, encoder: Any) -> Iterator[str]:
    app = create_app(
        tmp_path_factory.mktemp("fuzz-home"),
        api_keys=[KEY],
        limits=Limits(max_body_bytes=256 * 1024, max_texts=16, max_text_chars=2000, max_k=50),
        separate_query_encoder=False,
        warm=False,
        write_wait_s=0.5,
    )
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, headers=AUTH) as c:
        assert c.post("/collections", json={"name": "fuzz"}).status_code == 201
        docs = [
            {"id": f"f{i}", "text": f"fuzzing text {i} about {t}", "metadata": {"i": i, "t": t}}
            for i, t in enumerate(["cats", "markets", "rivers", "music", "code", "bread"] * 2)
        ]
        assert c.post("/collections/fuzz/documents", json={"documents": docs}).status_code == 201
        yield srv.url
        summary = summarise(c.get("/metrics").text)
    print(f"\nschemathesis summary: {json.dumps(summary, indent=1)}")
    for label, (n, secs) in sorted(TIMES.items(), key=lambda kv: -kv[1][1]):
        print(f"  {label}: {n} cases, {secs:.1f} s")


def summarise(metrics_text: str) -> dict[str, Any]:
    """Requests the fuzzer sent, by status class, read from the server's own /metrics."""
    by_status: dict[str, float] = {}
    routes: set[str] = set()
    for line in metrics_text.splitlines():
        if line.startswith("embedsearch_http_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            status = labels.split('status="')[1].split('"')[0]
            routes.add(labels.split('route="')[1].split('"')[0])
            by_status[status[0] + "xx"] = by_status.get(status[0] + "xx", 0) + float(value)
    return {
        "cases": len(TIMES) and sum(n for n, _ in TIMES.values()),
        "by_status": by_status,
        "routes_hit": len(routes),
    }


def _openapi() -> dict[str, Any]:
    """The schema the server publishes at /openapi.json (it does not depend on the home).

    Loaded at import because schemathesis' lazy ``from_fixture`` loader does not work with
    pytest 9 (it sets ``node._nodeid``, which pytest 9 removed); requests still go to the
    real server (``base_url`` in each call).
    """
    with tempfile.TemporaryDirectory() as tmp:
        return create_app(tmp, api_keys=[KEY], warm=False).openapi()


# Operations whose every case runs the model (or k-means): fuzzed with fewer, random cases
# only; the rest also get schemathesis' coverage phase (boundary values, wrong types,
# missing fields), which is where most schema violations show up.
HEAVY = r"^/collections/\{name\}/(expr|most_similar|analogy|interpolate|cluster|outliers|topics|along|retrieve|documents)$"


def load_schema(*, heavy: bool) -> Any:
    loaded = schemathesis.openapi.from_dict(SPEC)
    loaded.config.update(headers=AUTH, request_timeout=60)
    loaded.config.parameters = {"name": "fuzz"}
    # Schema-valid is not always acceptable: a FAISS factory string, a filter's grammar, a
    # vector's dimension, the server's limits and ids that exist are checked by the server,
    # not by JSON Schema. Those answers are documented 4xx; 400, 405 or 5xx still fail.
    loaded.config.checks.positive_data_acceptance = PositiveDataAcceptanceConfig(
        expected_statuses=["2xx", "404", "409", "413", "422", "423"]
    )
    if heavy:
        loaded.config.phases = PhasesConfig(
            examples=ExamplesPhaseConfig(enabled=False),
            coverage=CoveragePhaseConfig(enabled=False),
        )
        return loaded.include(path_regex=HEAVY)
    return loaded.exclude(path_regex=HEAVY).exclude(method="DELETE", path="/collections/{name}")


SPEC = _openapi()
light_schema = load_schema(heavy=False)
heavy_schema = load_schema(heavy=True)
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


def run_case(case: Any, base_url: str) -> None:
    start = time.perf_counter()
    try:
        case.call_and_validate(base_url=base_url, headers=AUTH)
    finally:
        n, secs = TIMES.get(case.operation.label, (0, 0.0))
        TIMES[case.operation.label] = (n + 1, secs + time.perf_counter() - start)


@light_schema.parametrize()
@FUZZ_SETTINGS
def test_openapi_conformance(case: Any, fuzz_server: str) -> None:
    run_case(case, fuzz_server)


@heavy_schema.parametrize()
@settings(FUZZ_SETTINGS, max_examples=HEAVY_EXAMPLES)
def test_openapi_conformance_model_routes(case: Any, fuzz_server: str) -> None:
    run_case(case, fuzz_server)
