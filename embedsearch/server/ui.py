"""``GET /ui``: the web page to search and look at collections (served by ``embedsearch serve``).

One HTML page with a stylesheet and a script, shipped inside the package
(``embedsearch/server/static/``, plain HTML/CSS/JS, no build step, no CDN: it works offline).
The page and its assets hold no data and need no key; everything it shows comes from the
JSON API (``/collections/...``), which does. When the server has API keys the page asks for
one once, keeps it in ``sessionStorage`` and sends it as ``Authorization: Bearer``; it never
puts it in a URL.

State lives in the URL: ``/ui?collection=NAME&q=QUERY&mode=hybrid&fusion=rrf&k=10&where=JSON``
runs that search on load, so a result page can be bookmarked and shared.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse, Response

STATIC = {
    "ui.css": "text/css; charset=utf-8",
    "ui.js": "text/javascript; charset=utf-8",
}
# The page runs only its own script and style, talks only to this server, and is not framed.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["ui"])


def asset(name: str) -> bytes:
    """The bytes of a packaged page asset (``ui.html``, ``ui.css``, ``ui.js``)."""
    return resources.files(__package__).joinpath("static", name).read_bytes()


@router.get("/ui", response_class=HTMLResponse, summary="Web page", include_in_schema=False)
def page() -> Response:
    """The search page (no key needed: it holds no data)."""
    return HTMLResponse(asset("ui.html"), headers=HEADERS)


@router.get("/", summary="The web page's address", include_in_schema=False)
def root() -> Response:
    """``/`` sends a browser to the page: the address ``serve`` prints is where people go
    first, and a bare 404 there ("No route GET /") was the first thing a new user saw."""
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui/static/{name}", summary="Web page asset", include_in_schema=False)
def static(name: str) -> Response:
    """The page's stylesheet and script (a fixed list: no path reaches the file system)."""
    media = STATIC.get(name)
    if media is None:
        raise HTTPException(status_code=404, detail=f"no asset {name!r}")
    return Response(asset(name), media_type=media, headers=HEADERS)
