"""The web page (``GET /ui``) in a real headless Chromium against a real server on loopback.

Chromium is Debian's (``/usr/bin/chromium``; ``.ci/run`` installs it), driven by Playwright's
Python API with ``executable_path`` (no browser download). Each state the tests reach is saved
as a screenshot under ``test-artifacts/ui/`` (desktop and 390 px wide) for people to look at.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

import embedsearch
from embedsearch.server import create_app
from embedsearch.server.runner import ServerThread

CHROMIUM = os.environ.get("EMBEDSEARCH_CHROMIUM", "/usr/bin/chromium")
# Flags that let Chromium start as root in a container with no network but loopback.
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
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "ui"
KEY = "ui-test-key-0123456789abcdef"
DESKTOP = {"width": 1280, "height": 900}
NARROW = {"width": 390, "height": 844}

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the [dev] extra")


@pytest.fixture(scope="module")
def ui_home(tmp_path_factory: pytest.TempPathFactory, encoder: Any, demo_rows: list[dict]) -> Path:
    """A home with ``demo`` (350 texts, topic/year metadata) and ``guide`` (RAG passages)."""
    home = tmp_path_factory.mktemp("ui-home")
    col = embedsearch.open(home / "demo")
    col.add(
        [r["text"] for r in demo_rows],
        ids=[r["id"] for r in demo_rows],
        metadata=[{"topic": r["topic"], "year": r["year"]} for r in demo_rows],
    )
    col.close()
    guide = embedsearch.open(home / "guide")
    sections = [
        "# Logs\n\nRotate the logs with logrotate every night; keep fourteen days of logs.\n\n"
        "Compressed logs are kept in /var/log/archive.",
        "# Backups\n\nBackups run at two in the morning and are copied to a second disk.\n\n"
        "Restore a backup with the restore command and check its checksum first.",
    ]
    guide.add_documents(
        [{"text": t, "source": f"ops/{n}.md"} for n, t in zip(["logs", "backups"], sections)]
    )
    guide.close()
    return home


def _start(app: Any) -> ServerThread:
    return ServerThread(app).start()


@pytest.fixture(scope="module")
def server(ui_home: Path) -> Iterator[ServerThread]:
    srv = _start(create_app(ui_home, api_keys=[], warm=False))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`, "
            "as .ci/run does) or set EMBEDSEARCH_CHROMIUM."
        )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _page(browser: Any, *, bypass_csp: bool) -> Iterator[Any]:
    context = browser.new_context(viewport=DESKTOP, bypass_csp=bypass_csp)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.errors = errors
    yield pg
    context.close()


@pytest.fixture
def strict_page(browser: Any) -> Iterator[Any]:
    """A tab that enforces the page's Content-Security-Policy (the page must work under it)."""
    yield from _page(browser, bypass_csp=False)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A tab where ``wait_for_function`` works: Playwright evaluates its predicates with
    ``eval``, which the page's policy forbids."""
    yield from _page(browser, bypass_csp=True)


def shoot(pg: Any, name: str) -> None:
    """Screenshot the page at desktop width, then at 390 px, then back."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}-desktop.png"), full_page=True)
    pg.set_viewport_size(NARROW)
    pg.wait_for_timeout(300)  # the map redraws for the new width
    pg.screenshot(path=str(ARTIFACTS / f"{name}-narrow.png"), full_page=True)
    pg.set_viewport_size(DESKTOP)
    pg.wait_for_timeout(300)


def results(pg: Any) -> list[dict[str, Any]]:
    return pg.eval_on_selector_all(
        "#results li.result",
        "els => els.map(e => ({id: e.dataset.id, rank: +e.dataset.rank,"
        " text: e.querySelector('.text').textContent,"
        " marks: [...e.querySelectorAll('mark')].map(m => m.textContent)}))",
    )


def wait_results(pg: Any) -> list[dict[str, Any]]:
    pg.wait_for_selector("#results li.result")
    return results(pg)


# ----------------------------------------------------------------------------- search
def test_page_and_assets_are_served_from_the_package(server: ServerThread) -> None:
    r = httpx.get(f"{server.url}/ui")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    for href in re.findall(r'(?:href|src)="(ui/static/[^"]+)"', r.text):
        a = httpx.get(f"{server.url}/{href}")
        assert a.status_code == 200 and len(a.content) > 500, href
        assert "http://" not in a.text.replace("http://www.w3.org/2000/svg", "")  # no CDN
    assert httpx.get(f"{server.url}/ui/static/..%2Fapp.py").status_code == 404
    home = httpx.get(f"{server.url}/", follow_redirects=True)  # the address serve prints
    assert home.url.path == "/ui" and home.text == r.text


def test_search_from_the_url_matches_the_api(server: ServerThread, strict_page: Any) -> None:
    page = strict_page
    q = "how do I keep tomatoes healthy"
    page.goto(f"{server.url}/ui?collection=demo&q={quote(q)}&k=5")
    got = wait_results(page)
    api = httpx.post(f"{server.url}/collections/demo/search", json={"query": q, "k": 5}).json()
    assert [r["id"] for r in got] == [h["id"] for h in api["hits"]]
    assert [r["rank"] for r in got] == [1, 2, 3, 4, 5]
    assert any("tomato" in m.lower() for r in got for m in r["marks"])  # query terms marked
    assert "350 documents" in page.inner_text("#info")
    assert page.input_value("#q") == q
    shoot(page, "1-search-from-url")
    assert not page.errors, page.errors


def test_enter_searches_and_the_url_follows(server: ServerThread, page: Any) -> None:
    page.goto(f"{server.url}/ui?collection=demo")
    page.keyboard.press("/")  # focuses the query box
    page.keyboard.type("black holes and gravity")
    page.keyboard.press("Enter")
    got = wait_results(page)
    assert got and "collection=demo" in page.url and "q=black+holes" in page.url
    page.keyboard.press("ArrowDown")  # from the box to the first result
    assert page.evaluate("document.activeElement.dataset.rank") == "1"
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.rank") == "2"
    page.go_back()  # history: back to the page without a query
    page.wait_for_function("!location.search.includes('q=')")
    assert page.input_value("#q") == ""


def test_mode_switch_runs_bm25_and_hybrid(server: ServerThread, page: Any) -> None:
    q = "restore a backup"
    page.goto(f"{server.url}/ui?collection=guide&q={quote(q)}")
    dense = wait_results(page)
    assert page.is_hidden("#fusion-label")
    for mode, fusion in (("bm25", None), ("hybrid", "convex")):
        page.select_option("#mode", mode)
        if fusion:
            page.select_option("#fusion", fusion)
        page.wait_for_function(f"location.search.includes('mode={mode}')")
        if fusion:
            page.wait_for_function(f"location.search.includes('fusion={fusion}')")
        page.wait_for_function("document.querySelector('#status').textContent.includes(' ms')")
        got = results(page)
        body: dict[str, Any] = {"query": q, "k": 10, "mode": mode}
        if fusion:
            body["fusion"] = fusion
        api = httpx.post(f"{server.url}/collections/guide/retrieve", json=body).json()
        assert [r["id"] for r in got] == [p["id"] for p in api["passages"]], mode
    assert page.is_visible("#fusion-label")
    # passages show where they came from: source, heading and character span
    src = page.inner_text("#results li.result .src")
    assert re.search(r"ops/\w+\.md .*\[\d+:\d+\]", src), src
    assert dense
    shoot(page, "2-hybrid-passages")


def test_where_filter_limits_results(server: ServerThread, page: Any) -> None:
    where = {"topic": "music"}
    page.goto(f"{server.url}/ui?collection=demo&q=songs&k=8&where={quote(json.dumps(where))}")
    got = wait_results(page)
    api = httpx.post(
        f"{server.url}/collections/demo/search", json={"query": "songs", "k": 8, "where": where}
    ).json()
    assert [r["id"] for r in got] == [h["id"] for h in api["hits"]]
    metas = page.eval_on_selector_all(
        "#results li.result .meta", "els => els.map(e => e.innerText)"
    )
    assert metas and all("topic: music" in m for m in metas)
    shoot(page, "3-filter")
    # a filter the server refuses is a message in the page, not a blank
    page.fill("#where", '{"year": {"$near": 3}}')
    page.press("#where", "Enter")
    page.wait_for_selector("#error:not([hidden])")
    assert "$near" in page.inner_text("#error")
    # and one that is not JSON is caught before it is sent
    page.fill("#where", "{topic: music")
    page.press("#where", "Enter")
    page.wait_for_function(
        "document.querySelector('#error').textContent.includes('not valid JSON')"
    )
    assert page.eval_on_selector_all("#results li", "e => e.length") == 0  # no "No results."
    shoot(page, "4-bad-filter")


def test_unknown_collection_is_a_message(server: ServerThread, page: Any) -> None:
    page.goto(f"{server.url}/ui?collection=nosuch&q=anything")
    page.wait_for_selector("#error:not([hidden])")
    msg = page.inner_text("#error")
    assert "nosuch" in msg, msg
    assert page.eval_on_selector_all("#results li.result", "e => e.length") == 0
    shoot(page, "5-unknown-collection")


# ----------------------------------------------------------------------------- map
def test_map_draws_every_sampled_point_and_marks_hits(
    server: ServerThread, strict_page: Any
) -> None:
    page = strict_page
    q = "space telescopes"
    page.goto(f"{server.url}/ui?collection=demo&q={quote(q)}&view=map")
    page.wait_for_selector("#map circle.pt")
    api = httpx.post(f"{server.url}/collections/demo/map", json={"max_points": 5000}).json()
    assert api["sampled"] == api["total"] == 350
    drawn = page.eval_on_selector_all("#map-dots circle.pt", "e => e.map(c => c.dataset.id)")
    assert sorted(drawn) == sorted(p["id"] for p in api["points"])
    colours = page.eval_on_selector_all(
        "#map-dots circle.pt", "e => e.map(c => c.getAttribute('fill'))"
    )
    assert len(set(colours)) == len(api["legend"]) > 1  # clusters coloured
    labels = page.eval_on_selector_all("#map text.label", "e => e.map(t => t.textContent)")
    assert labels and all(
        any(lab.startswith(t[:10]) for lab in [e["label"] for e in api["legend"]]) for t in labels
    )
    hits = httpx.post(f"{server.url}/collections/demo/search", json={"query": q, "k": 10}).json()
    marked = page.eval_on_selector_all("#map circle.hit", "e => e.map(c => c.dataset.id)")
    assert sorted(marked) == sorted(h["id"] for h in hits["hits"])
    assert "all 10 results outlined" in page.inner_text("#map-caption")
    # hovering a point shows its text
    first = api["points"][0]
    page.hover(f'#map-dots circle[data-id="{first["id"]}"]', force=True)
    page.wait_for_selector("#tooltip:not([hidden])")
    assert first["text"][:40] in page.inner_text("#tooltip")
    shoot(page, "6-map")
    assert not page.errors, page.errors


def test_click_on_a_point_shows_the_document_and_its_neighbours(
    server: ServerThread, page: Any
) -> None:
    page.goto(f"{server.url}/ui?collection=demo&view=map")
    page.wait_for_selector("#map circle.pt")
    target = page.eval_on_selector("#map-dots circle.pt:nth-child(17)", "c => c.dataset.id")
    page.click(f'#map-dots circle[data-id="{target}"]', force=True)
    page.wait_for_selector("#detail ol.neighbours li")
    assert target in page.inner_text("#detail h2")
    shown = page.eval_on_selector_all("#detail ol.neighbours li", "e => e.map(l => l.dataset.id)")
    doc = httpx.get(f"{server.url}/collections/demo/documents/{target}?include_vector=true").json()
    near = httpx.post(
        f"{server.url}/collections/demo/search",
        json={"vector": doc["vector"], "k": 8, "exclude": [target]},
    ).json()
    assert shown == [h["id"] for h in near["hits"]]
    assert page.eval_on_selector("#map circle.sel", "c => c.dataset.id") == target
    shoot(page, "7-map-click")


# ----------------------------------------------------------------------------- auth
def test_auth_asks_once_and_keeps_the_key_out_of_the_url(ui_home: Path, page: Any) -> None:
    srv = _start(create_app(ui_home, api_keys=[KEY], warm=False))
    try:
        seen: list[tuple[str, str | None]] = []
        page.on("request", lambda r: seen.append((r.url, r.headers.get("authorization"))))
        page.goto(f"{srv.url}/ui?collection=demo&q=music")
        page.wait_for_selector("#auth:not([hidden])")
        assert page.eval_on_selector_all("#results li.result", "e => e.length") == 0
        shoot(page, "8-auth-prompt")
        page.fill("#apikey", "wrong-key-0123456789")
        page.press("#apikey", "Enter")
        page.wait_for_function(
            "document.querySelector('#auth .hint').textContent.includes('not accepted')"
        )
        page.fill("#apikey", KEY)
        page.press("#apikey", "Enter")
        assert wait_results(page)
        assert page.is_hidden("#auth")
        api_calls = [(u, a) for u, a in seen if "/collections" in u]
        assert any(a == f"Bearer {KEY}" for _, a in api_calls)
        assert all(KEY not in u for u, _ in seen) and KEY not in page.url
        page.reload()  # asked once: the tab keeps the key
        assert wait_results(page)
        assert page.is_hidden("#auth")
    finally:
        srv.stop()


def test_results_outside_a_sampled_map_are_placed_near_their_neighbours(
    server: ServerThread, page: Any
) -> None:
    q = "space telescopes"
    page.goto(f"{server.url}/ui?collection=demo&q={quote(q)}&view=map&points=60")
    page.wait_for_selector("#map-dots circle.pt")
    page.wait_for_function("document.querySelectorAll('#map circle.hit').length === 10")
    assert page.eval_on_selector_all("#map-dots circle.pt", "e => e.length") == 60
    placed = page.eval_on_selector_all("#map circle.hit.placed", "e => e.map(c => c.dataset.id)")
    body = {"max_points": 60}
    drawn = httpx.post(f"{server.url}/collections/demo/map", json=body).json()
    hits = httpx.post(f"{server.url}/collections/demo/search", json={"query": q, "k": 10}).json()
    in_sample = {p["id"] for p in drawn["points"]}
    assert sorted(placed) == sorted(h["id"] for h in hits["hits"] if h["id"] not in in_sample)
    assert placed  # 60 of 350: most results are outside the sample
    assert "placed near their nearest sampled points" in page.inner_text("#map-caption")
    # the route: sampled documents keep their own point; others sit inside the sample's box
    ids = [drawn["points"][0]["id"], *placed[:2]]
    out = httpx.post(f"{server.url}/collections/demo/map/place", json={**body, "ids": ids}).json()
    assert [p["placed"] for p in out["points"]] == [False, True, True][: len(ids)]
    assert (out["points"][0]["x"], out["points"][0]["y"]) == (
        drawn["points"][0]["x"],
        drawn["points"][0]["y"],
    )
    xs, ys = [p["x"] for p in drawn["points"]], [p["y"] for p in drawn["points"]]
    for p in out["points"][1:]:
        assert min(xs) <= p["x"] <= max(xs) and min(ys) <= p["y"] <= max(ys)
        assert 0 <= p["c"] < len(drawn["legend"])
    unknown = httpx.post(f"{server.url}/collections/demo/map/place", json={**body, "ids": ["nope"]})
    assert unknown.status_code == 404 and "nope" in unknown.text
    shoot(page, "9-map-sampled-hits-placed")
