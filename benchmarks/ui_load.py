"""The web page over a 20k-document collection: page weight and time to first result.

What it does:
  1. builds (once, cached in ``benchmarks/.cache/ui_load/``) a collection of ``--docs``
     real news texts: AG News test items (title + text, ``topic``) then news headlines
     (``kind``), embedded with the real default encoder;
  2. starts ``embedsearch serve`` (the real command) on a free loopback port and waits for
     ``/readyz``;
  3. page weight: the bytes of ``/ui`` and every asset it loads, as sent and gzipped;
  4. time to first result: for each of ``--queries`` held-out headlines, a fresh browser
     context (empty cache) opens ``/ui?collection=...&q=...`` and the time from navigation
     start to the first rendered result (``li.result``) is read from the page's clock;
  5. the map: a fresh context opens ``/ui?...&view=map`` and times the drawn map (5,000
     sampled points), first (computed by the server) and again (cached).
Headless Chromium is Debian's ``/usr/bin/chromium`` driven by Playwright (no download).
Prints a table, writes ``benchmarks/results/ui_load.json`` and two PNGs: the timings and a
screenshot of the page with the map of the 20k collection.

Example:
    .venv/bin/python benchmarks/ui_load.py --docs 20000 --queries 20
"""

from __future__ import annotations

import argparse
import gzip
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, RESULTS, read_jsonl, table, write_result  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache" / "ui_load"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NAME = "news20k"


def corpus(data: Path, n: int) -> tuple[list[str], list[str], list[dict[str, Any]], list[str]]:
    """``n`` texts (AG News first, then headlines), and held-out headlines for queries."""
    ag = read_jsonl(data / "corpora" / "ag_news_test.jsonl.gz")
    heads = read_jsonl(data / "corpora" / "news_headlines.jsonl.gz")
    texts, ids, metas = [], [], []
    for i, r in enumerate(ag[:n]):
        texts.append(f"{r['title']}. {r['text']}")
        ids.append(f"ag-{i}")
        metas.append({"topic": r["topic"], "source": "ag_news"})
    for i, r in enumerate(heads[: n - len(texts)]):
        texts.append(r["text"])
        ids.append(f"hl-{i}")
        metas.append({"kind": r["kind"], "source": "headlines"})
    held_out = [r["text"] for r in heads[len(texts) :]]
    return texts, ids, metas, held_out


def build(home: Path, data: Path, n: int) -> list[str]:
    """The collection (built once; reused while its size matches). Returns query texts."""
    import embedsearch

    texts, ids, metas, held_out = corpus(data, n)
    path = home / NAME
    if path.exists():
        col = embedsearch.open(path, create=False)
        if len(col) == len(texts):
            col.close()
            return held_out
        col.close()
        import shutil

        shutil.rmtree(path)
    t0 = time.perf_counter()
    col = embedsearch.open(path)
    col.add(texts, ids=ids, metadata=metas, progress=True)
    col.close()
    print(f"built {NAME}: {len(texts):,} documents in {time.perf_counter() - t0:.0f} s")
    return held_out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(home: Path, port: int) -> subprocess.Popen[bytes]:
    code = "import sys; from embedsearch.cli import main; sys.exit(main())"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("EMBEDSEARCH_API_KEY", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--home", str(home), "--port", str(port)]
        + ["--log-level", "warning"],
        env=env,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit("embedsearch serve exited before it was ready")
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("embedsearch serve was not ready within 300 s")


def page_weight(url: str, browser: Any) -> dict[str, Any]:
    """Bytes of every response the page loads (document, CSS, JS), raw and gzipped."""
    sizes: dict[str, int] = {}
    context = browser.new_context()
    pg = context.new_page()
    pg.on(
        "response",
        lambda r: (
            sizes.__setitem__(r.url.replace(url, ""), len(r.body()))
            if r.request.resource_type in ("document", "stylesheet", "script")
            else None
        ),
    )
    pg.goto(f"{url}/ui")
    pg.wait_for_load_state("load")
    context.close()
    bodies = {p: httpx.get(f"{url}{p}").content for p in sizes}
    return {
        "files": {
            p: {"bytes": len(b), "gzip": len(gzip.compress(b, 9))} for p, b in bodies.items()
        },
        "bytes": sum(len(b) for b in bodies.values()),
        "gzip_bytes": sum(len(gzip.compress(b, 9)) for b in bodies.values()),
    }


def first_result_ms(url: str, browser: Any, query: str) -> dict[str, float]:
    """Navigation start → first result on screen, in a fresh context (empty cache)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.goto(f"{url}/ui?collection={NAME}&q={quote(query)}&k=10", wait_until="commit")
    pg.wait_for_selector("#results li.result", timeout=120_000)
    total = pg.evaluate("performance.now()")
    timing = pg.evaluate(
        "(() => { const n = performance.getEntriesByType('navigation')[0];"
        " return {dom: n.domContentLoadedEventEnd, load: n.loadEventEnd}; })()"
    )
    context.close()
    return {"first_result_ms": total, "dom_ready_ms": timing["dom"]}


def map_ms(url: str, browser: Any, shot: Path | None) -> dict[str, Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.goto(f"{url}/ui?collection={NAME}&q={quote('oil prices')}&view=map", wait_until="commit")
    pg.wait_for_selector("#map-dots circle.pt", timeout=600_000)
    total = pg.evaluate("performance.now()")
    points = pg.eval_on_selector_all("#map-dots circle.pt", "e => e.length")
    if shot is not None:
        pg.wait_for_selector("#map circle.hit", timeout=60_000)
        pg.screenshot(path=str(shot), full_page=True)
    context.close()
    return {"map_drawn_ms": total, "points": points}


def plot(path: Path, rows: list[dict[str, Any]]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.36, 0.16, 0.56, 0.7))
    labels = [r["what"] for r in rows]
    values = [r["ms"] for r in rows]
    ax.barh(labels, values, color=["#2456c7"] * (len(rows) - 2) + ["#ff7f0e", "#2ca02c"])
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:,.0f} ms", va="center", fontsize=9)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds from navigation start, log scale (fresh browser context)")
    ax.set_xlim(min(values) / 2, max(values) * 4)
    fig.suptitle("embedsearch /ui on a 20k-document collection", x=0.02, ha="left", weight="bold")
    with open(path, "wb") as fh:
        fig.savefig(fh, format="png")


def chart_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    first, m = summary["first_result_ms"], summary["map"]
    return [
        {"what": "page ready (DOMContentLoaded, median)", "ms": summary["dom_ready_ms_median"]},
        {"what": "first result (median)", "ms": first["median"]},
        {"what": "first result (p90)", "ms": first["p90"]},
        {"what": f"map of {m['points']:,} points (computed)", "ms": m["first_ms"]},
        {"what": "map again (cached)", "ms": m["cached_ms"]},
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="../shared/data")
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--replot", action="store_true", help="redraw the PNG from the JSON only")
    args = ap.parse_args()
    if args.replot:
        import json

        plot(
            RESULTS / "ui_load.png", chart_rows(json.loads((RESULTS / "ui_load.json").read_text()))
        )
        return

    from playwright.sync_api import sync_playwright

    CACHE.mkdir(parents=True, exist_ok=True)
    queries = build(CACHE, args.data, args.docs)[: args.queries]
    port = free_port()
    t0 = time.perf_counter()
    proc = serve(CACHE, port)
    ready_s = time.perf_counter() - t0
    url = f"http://127.0.0.1:{port}"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            weight = page_weight(url, browser)
            runs = [first_result_ms(url, browser, q) for q in queries]
            shot = RESULTS / "ui_load_map.png"
            map_first = map_ms(url, browser, None)
            map_again = map_ms(url, browser, shot)
            browser.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    firsts = sorted(r["first_result_ms"] for r in runs)
    doms = sorted(r["dom_ready_ms"] for r in runs)
    q = statistics.quantiles(firsts, n=10) if len(firsts) > 1 else firsts * 9
    summary = {
        "docs": args.docs,
        "queries": len(runs),
        "server_ready_s": round(ready_s, 2),
        "page_weight": weight,
        "first_result_ms": {
            "first": round(runs[0]["first_result_ms"], 1),
            "median": round(statistics.median(firsts), 1),
            "p90": round(q[8], 1),
            "max": round(firsts[-1], 1),
        },
        "dom_ready_ms_median": round(statistics.median(doms), 1),
        "map": {
            "points": map_first["points"],
            "first_ms": round(map_first["map_drawn_ms"], 1),
            "cached_ms": round(map_again["map_drawn_ms"], 1),
        },
        "runs": runs,
    }
    rows = chart_rows(summary)
    plot(RESULTS / "ui_load.png", rows)
    write_result("ui_load", summary)
    files = [
        {"file": p, "bytes": f["bytes"], "gzip": f["gzip"]} for p, f in weight["files"].items()
    ]
    files.append({"file": "total", "bytes": weight["bytes"], "gzip": weight["gzip_bytes"]})
    print(table(files, ["file", "bytes", "gzip"]))
    print()
    print(table(rows, ["what", "ms"]))
    print(f"\nserver ready in {ready_s:.1f} s; results in {RESULTS}/ui_load.json, ui_load.png")


if __name__ == "__main__":
    main()
