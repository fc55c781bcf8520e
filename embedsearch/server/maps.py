"""``POST /collections/{name}/map``: a collection's 2-D map as points (JSON), for the web page.

The points come from :meth:`Collection.map` itself (the same sampling, projection and
cluster colours as ``embedsearch map``), so the page draws exactly what the CLI would. The
method renders a file too; the route writes it into a temporary folder and keeps only the
:class:`~embedsearch.maps.MapResult` (ids, 2-D coordinates, colour categories, legend).

Maps are computed on demand and cached per collection state (name, generation, count and
the request's parameters): a map costs a clustering of the sample, a page asks for it again
on every reload, and a write changes the generation and so invalidates it.
"""

from __future__ import annotations

import tempfile
import threading
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter
from pydantic import Field

from ..errors import InvalidInputError
from ..latent.maps import palette
from .deps import ERRORS, State, Stopwatch
from .schemas import CollectionName, DocId, Metadata, Request, Response, VersionQuery

SNIPPET_CHARS = 240
MAX_POINTS = 20_000
CACHE_SIZE = 8


class MapRequest(Request):
    max_points: int = Field(
        5000, ge=2, le=MAX_POINTS, description="Sample cap: a seeded random sample above it."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)
    method: str | None = Field(
        None,
        min_length=1,
        max_length=32,
        description="Projection: 'auto', 'pca', 'umap', 'pacmap' or 'tsne' (umap/pacmap/tsne "
        "need umap-learn / pacmap / openTSNE); default: the one Collection.map uses.",
    )
    color_by: str | None = Field(
        "cluster",
        min_length=1,
        max_length=256,
        description="'cluster' (stored field, else computed on the sample), a metadata field "
        "(dotted paths allowed), or null for one colour.",
    )
    where: Metadata | None = None


class MapPoint(Response):
    id: str
    x: float
    y: float
    c: int = Field(description="Index into `legend`.")
    text: str = Field(description=f"The first {SNIPPET_CHARS} characters of the text.")


class LegendEntry(Response):
    label: str
    color: str
    size: int = Field(description="Drawn points in this category.")


class MapOut(Response):
    method: str
    sampled: int = Field(description="Points drawn.")
    total: int = Field(description="Documents selected (sampled when larger than `sampled`).")
    color_by: str | None
    caption: str
    legend: list[LegendEntry]
    points: list[MapPoint]
    took_ms: float


router = APIRouter(prefix="/collections", tags=["latent"], responses=ERRORS)
_cache: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
_cache_lock = threading.Lock()


def compute_map(col: Any, body: MapRequest) -> dict[str, Any]:
    """The map of ``col`` as JSON-ready points (no caching)."""
    if not callable(getattr(col, "map", None)):
        raise InvalidInputError(
            f"collection {col.name!r} cannot draw a map (sharded collections have none); "
            "map a plain collection."
        )
    # Options left out (None) take Collection.map's own defaults; color_by=None is a choice.
    opts = {"method": body.method, "where": body.where}
    opts = {k: v for k, v in opts.items() if v is not None}
    with tempfile.TemporaryDirectory(prefix="embedsearch-map-") as tmp:
        result = col.map(
            Path(tmp) / "map.html",
            color_by=body.color_by,
            max_points=body.max_points,
            seed=body.seed,
            **opts,
        )
    docs = col.get(list(result.ids))
    cats = [int(c) for c in result.categories]
    sizes = Counter(cats)
    labels = [str(label) for label in result.legend]
    colours = palette(labels, numeric=any(" – " in label for label in labels))
    legend = [
        {"label": label, "color": colour, "size": sizes.get(i, 0)}
        for i, (label, colour) in enumerate(zip(labels, colours))
    ]
    points = [
        {
            "id": doc.id,
            "x": round(float(xy[0]), 5),
            "y": round(float(xy[1]), 5),
            "c": c,
            "text": doc.text[:SNIPPET_CHARS],
        }
        for doc, xy, c in zip(docs, result.coords, cats)
    ]
    return {
        "method": result.method,
        "sampled": result.points,
        "total": result.total,
        "color_by": result.color_by,
        "caption": result.caption,
        "legend": legend,
        "points": points,
    }


def cached_map(name: str, col: Any, body: MapRequest) -> dict[str, Any]:
    """:func:`compute_map`, cached per collection state and request."""
    info = col.info()
    key = (
        name,
        info.get("generation"),
        info.get("updated"),
        info.get("count"),
        body.model_dump_json(),
    )
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
    if hit is None:
        hit = compute_map(col, body)
        with _cache_lock:
            _cache[key] = hit
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return hit


@router.post("/{name}/map", response_model=MapOut, summary="2-D map (points)")
def map_points(
    name: CollectionName, body: MapRequest, state: State, version: VersionQuery = None
) -> dict[str, Any]:
    """The collection's 2-D map as points: ``x``, ``y``, id, a text snippet and a colour
    category (cluster, or a metadata value) with its legend label; sampled (seeded) above
    ``max_points``. The same map as ``embedsearch map``; cached until the collection changes.
    """
    watch = Stopwatch()
    hit = cached_map(name, state.registry.get(name, version), body)
    return {**hit, "took_ms": watch.ms}


class PlaceRequest(MapRequest):
    ids: list[DocId] = Field(min_length=1, max_length=1000, description="Documents to place.")


class PlacedPoint(MapPoint):
    placed: bool = Field(
        description="False: the document is in the drawn sample (its own position); true: it "
        "is not, and sits at the similarity-weighted mean of its 3 nearest sampled points."
    )


class PlaceOut(Response):
    points: list[PlacedPoint]
    took_ms: float


@router.post("/{name}/map/place", response_model=PlaceOut, summary="Place documents on the map")
def place(
    name: CollectionName, body: PlaceRequest, state: State, version: VersionQuery = None
) -> dict[str, Any]:
    """Positions of given documents on the map that ``POST /map`` with the same parameters
    draws: their own point when sampled, else near their nearest sampled neighbours (so a
    search's results can all be shown on a sampled map). Unknown ids are a 404."""
    watch = Stopwatch()
    col = state.registry.get(name, version)
    data = cached_map(name, col, MapRequest(**body.model_dump(exclude={"ids"})))
    drawn = {p["id"]: i for i, p in enumerate(data["points"])}
    ids = list(dict.fromkeys(body.ids))
    missing = [i for i in ids if i not in drawn]
    out = {i: {**data["points"][drawn[i]], "placed": False} for i in ids if i in drawn}
    if missing:
        docs = col.get(missing)  # DocumentNotFoundError (404) names unknown ids
        sample = col.vectors([p["id"] for p in data["points"]])
        sims = np.asarray(col.vectors(missing), dtype=np.float32) @ sample.T
        near = np.argsort(-sims, axis=1)[:, :3]
        for doc, row, nbrs in zip(docs, sims, near):
            w = np.clip(row[nbrs], 1e-3, None)
            pts = [data["points"][j] for j in nbrs]
            x = float(np.dot(w, [p["x"] for p in pts]) / w.sum())
            y = float(np.dot(w, [p["y"] for p in pts]) / w.sum())
            out[doc.id] = {
                "id": doc.id,
                "x": round(x, 5),
                "y": round(y, 5),
                "c": pts[0]["c"],
                "text": doc.text[:SNIPPET_CHARS],
                "placed": True,
            }
    return {"points": [out[i] for i in ids], "took_ms": watch.ms}
