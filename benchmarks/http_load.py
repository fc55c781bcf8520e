"""Bounded HTTP load run on loopback: search throughput and latency, alone and during adds.

What it does:
  1. starts ``embedsearch serve`` (the real command, one worker) on a free loopback port;
  2. builds a collection of ``--docs`` news headlines through ``POST /documents``;
  3. phase "search": ``--clients`` concurrent httpx clients send text searches (k=10, each
     query a held-out headline, so the query cache rarely helps) for ``--duration`` seconds;
  4. phase "search+add": the same, while one more client adds batches of ``--add-batch``
     headlines back to back; ``/healthz`` is polled twice a second throughout.
It prints a table and writes JSON to ``benchmarks/results/http_load.json``.

The load generator runs on the same machine as the server (one asyncio process), so on a
small machine both compete for the cores; the JSON records the CPU count and load average.

Example:
    .venv/bin/python benchmarks/http_load.py --docs 20000 --duration 30 --clients 8
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

DATA = Path("/work/shared/data/corpora/news_headlines.jsonl.gz")
OUT = Path(__file__).parent / "results" / "http_load.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_headlines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()]


def start_server(home: Path, port: int) -> subprocess.Popen[bytes]:
    code = "import sys; from embedsearch.cli import main; sys.exit(main())"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("EMBEDSEARCH_API_KEY", None)
    return subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--home", str(home), "--port", str(port)]
        + ["--log-level", "warning", "--max-texts", "4096"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError("server not ready in time")


def build(url: str, texts: list[str], batch: int) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=600) as c:
        r = c.post("/collections", json={"name": "news"})
        r.raise_for_status()
        t0 = time.perf_counter()
        for lo in range(0, len(texts), batch):
            docs = [{"id": f"n{lo + i}", "text": t} for i, t in enumerate(texts[lo : lo + batch])]
            c.post("/collections/news/documents", json={"documents": docs}).raise_for_status()
        took = time.perf_counter() - t0
        info = c.get("/collections/news").json()
    return {
        "docs": info["count"],
        "seconds": round(took, 1),
        "docs_per_s": round(len(texts) / took, 1),
        "index": info["index"]["resolved"],
    }


def stats(latencies: list[float], errors: int, seconds: float) -> dict[str, Any]:
    lat = np.array(latencies) * 1000.0
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(seconds, 1),
        "requests_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "max_ms": round(float(lat.max()), 1) if len(lat) else None,
    }


async def phase(
    url: str,
    queries: list[str],
    *,
    clients: int,
    duration: float,
    adds: list[str] | None,
    add_batch: int,
) -> dict[str, Any]:
    stop = time.monotonic() + duration
    lat: list[float] = []
    errors = 0
    health: list[float] = []
    health_errors = 0
    add_lat: list[float] = []
    add_errors = 0
    added = 0
    next_q = 0

    async def searcher() -> None:
        nonlocal errors, next_q
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            while time.monotonic() < stop:
                q = queries[next_q % len(queries)]
                next_q += 1
                t0 = time.perf_counter()
                try:
                    r = await c.post("/collections/news/search", json={"query": q, "k": 10})
                    ok = r.status_code == 200 and len(r.json()["hits"]) == 10
                except httpx.HTTPError:
                    ok = False
                if ok:
                    lat.append(time.perf_counter() - t0)
                else:
                    errors += 1

    async def adder() -> None:
        nonlocal add_errors, added
        assert adds is not None
        async with httpx.AsyncClient(base_url=url, timeout=600) as c:
            lo = 0
            while time.monotonic() < stop:
                chunk = [adds[(lo + i) % len(adds)] for i in range(add_batch)]
                docs = [{"id": f"a{lo + i}", "text": t} for i, t in enumerate(chunk)]
                lo += add_batch
                t0 = time.perf_counter()
                try:
                    r = await c.post("/collections/news/documents", json={"documents": docs})
                    ok = r.status_code == 201
                except httpx.HTTPError:
                    ok = False
                if ok:
                    add_lat.append(time.perf_counter() - t0)
                    added += add_batch
                else:
                    add_errors += 1

    async def health_poller() -> None:
        nonlocal health_errors
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    ok = (await c.get("/healthz")).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    health.append(time.perf_counter() - t0)
                else:
                    health_errors += 1
                await asyncio.sleep(0.5)

    t0 = time.monotonic()
    tasks = [searcher() for _ in range(clients)] + [health_poller()]
    if adds is not None:
        tasks.append(adder())
    await asyncio.gather(*tasks)
    seconds = time.monotonic() - t0
    out: dict[str, Any] = {
        "search": stats(lat, errors, seconds),
        "healthz": stats(health, health_errors, seconds),
    }
    if adds is not None:
        out["add"] = {
            **stats(add_lat, add_errors, seconds),
            "batch": add_batch,
            "docs_added": added,
            "docs_per_s": round(added / seconds, 1),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--add-batch", type=int, default=256)
    ap.add_argument("--build-batch", type=int, default=2048)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    texts = read_headlines(args.data)
    if len(texts) < args.docs + 2000:
        raise SystemExit(f"{args.data} has {len(texts)} headlines; need docs + 2000")
    docs = texts[: args.docs]
    rest = texts[args.docs :]
    queries, adds = rest[: len(rest) // 2], rest[len(rest) // 2 :]

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="http-load-") as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(Path(tmp), port)
        try:
            t0 = time.perf_counter()
            wait_ready(url, proc)
            startup = time.perf_counter() - t0
            print(
                f"server ready in {startup:.1f} s; building {len(docs)} documents ...", flush=True
            )
            built = build(url, docs, args.build_batch)
            print(f"built: {built}", flush=True)
            common = {
                "clients": args.clients,
                "duration": args.duration,
                "add_batch": args.add_batch,
            }
            asyncio.run(phase(url, queries[-200:], adds=None, **{**common, "duration": 3.0}))
            alone = asyncio.run(phase(url, queries, adds=None, **common))
            print(f"search alone: {alone['search']}", flush=True)
            with_add = asyncio.run(phase(url, queries[::-1], adds=adds, **common))
            print(f"search during adds: {with_add['search']}", flush=True)
            final_count = httpx.get(f"{url}/collections/news/count").json()["count"]
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    load_after = os.getloadavg()

    result = {
        "what": "POST /collections/news/search (text query, k=10) over loopback",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in load_after],
        },
        "config": {
            "docs": args.docs,
            "clients": args.clients,
            "duration_s": args.duration,
            "add_batch": args.add_batch,
            "server": "embedsearch serve, 1 worker, separate query encoder",
            "data": str(args.data),
        },
        "startup_s": round(startup, 1),
        "build": built,
        "search_alone": alone,
        "search_during_adds": with_add,
        "final_count": final_count,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    rows = [
        ("search alone", alone["search"]),
        ("search during adds", with_add["search"]),
        ("add batches (during)", with_add["add"]),
        ("healthz (during adds)", with_add["healthz"]),
    ]
    print(f"\n{'phase':<24}{'req':>7}{'err':>5}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for name, s in rows:
        print(
            f"{name:<24}{s['requests']:>7}{s['errors']:>5}{s['requests_per_s']:>8}"
            f"{s['p50_ms']!s:>9}{s['p95_ms']!s:>9}{s['p99_ms']!s:>9}"
        )
    print(
        f"\nadds during the run: {with_add['add']['docs_added']} docs "
        f"({with_add['add']['docs_per_s']} docs/s); final count {final_count}; "
        f"load average before/after {load_before[0]:.1f}/{load_after[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
