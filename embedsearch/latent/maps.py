"""2-D maps of a collection (t-SNE, UMAP, PaCMAP or PCA) to PNG or interactive HTML.

* **Sampling** — at most ``max_points`` documents (default 5,000) are drawn, a seeded
  uniform random sample when the collection is larger; the caption states ``n of N``.
* **Projection** — ``method="auto"`` chooses by the number of points drawn: up to
  :data:`AUTO_NONLINEAR_MAX` points t-SNE (openTSNE, cosine, all cores) when installed
  (extra ``maps``), else UMAP, else PaCMAP (see :data:`AUTO_ORDER`: best trustworthiness
  first); above it, or when none is installed, PCA — instant but linear: neighbourhoods
  overlap. The caption names the method that ran.
* **Colour** — ``"cluster"`` uses the metadata field ``cluster`` when the sampled documents
  carry it (labels from a persisted clustering's summary), otherwise the top-level topics of the
  sample (:mod:`embedsearch.latent.topics`); any other metadata field (dotted paths
  allowed) colours by value: up to 31 categories plus "other", or 8 quantile bins for
  numbers with many distinct values.
* **Formats** — ``.png`` through matplotlib's Agg canvas (no global pyplot state);
  ``.html`` as one self-contained file (inline data and JavaScript, no network): hover shows
  the text, the legend toggles categories, wheel zooms, drag pans, a box highlights texts
  containing a word.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError

if TYPE_CHECKING:
    from ..base import CollectionBase

MAX_CATEGORIES = 32
NUMERIC_BINS = 8
HOVER_TEXT_CHARS = 300
_MISSING = "(missing)"
_OTHER = "other"
# glasbey_category10 (colorcet, CC-BY 4.0): the tab10 colours, then colours chosen one by one
# to be as distinct as possible from all before them (grey and a pale yellow left out: grey
# means "other"/"missing", the yellow vanishes on white). 32 categories stay distinguishable.
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
    "#17becf", "#3a0183", "#004301", "#0fffa9", "#5e0040", "#bcbcff", "#d8afa2", "#b80080",
    "#004e53", "#6b6500", "#7d0200", "#6126ff", "#574964", "#8cb894", "#94fcff", "#028268",
    "#91ff00", "#8300a0", "#ad8944", "#5b3400", "#ffc0f3", "#ff6f76", "#798cff", "#dd00ff",
]  # fmt: skip
VIRIDIS = ["#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725"]


@dataclass
class MapResult:
    """What :func:`save_map` drew.

    Attributes:
        path: the file written.
        method: the projection that ran: ``"pca"``, ``"tsne"``, ``"umap"`` or ``"pacmap"``
            (never ``"auto"``).
        points / total: documents drawn / documents selected (sampled when points < total).
        color_by: what colours mean (None: one colour).
        legend: category labels, in colour order.
        ids: drawn document ids; coords: their 2-D positions ``(points, 2)``;
        categories: index into ``legend`` per point.
        caption: the subtitle written on the map.
    """

    path: Path
    method: str
    points: int
    total: int
    color_by: str | None
    legend: list[str]
    ids: list[str]
    coords: np.ndarray
    categories: np.ndarray
    caption: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "method": self.method,
            "points": self.points,
            "total": self.total,
            "color_by": self.color_by,
            "legend": self.legend,
            "caption": self.caption,
        }


# ----------------------------------------------------------------------------- projection
METHODS = ("auto", "pca", "umap", "pacmap", "tsne")
# "auto" tries these in order and takes the first installed one. Measured on 10,000 headlines
# (benchmarks/latent_structure.py, trustworthiness at k=10): openTSNE 0.948, UMAP 0.886,
# PaCMAP 0.841, PCA 0.706; openTSNE is compiled ahead (no ~40 s numba compile on first use,
# which UMAP and PaCMAP pay).
AUTO_ORDER = ("tsne", "umap", "pacmap")
# "auto" draws a non-linear map only up to this many points, PCA above: a map should come back
# in seconds to tens of seconds. Measured (benchmarks/latent_structure.py --parts maps, headlines,
# shared 2-core machine): see docs/latent.md, "Maps".
AUTO_NONLINEAR_MAX = 5000
_MODULES = {"umap": "umap", "pacmap": "pacmap", "tsne": "openTSNE"}
_PIP = {"umap": "umap-learn", "pacmap": "pacmap", "tsne": "openTSNE"}


def check_method(method: Any, n: int | None = None) -> str:
    """The projection method, validated; ``auto`` resolved for ``n`` points.

    ``auto`` is the first installed of :data:`AUTO_ORDER` when ``n`` is None or at most
    :data:`AUTO_NONLINEAR_MAX`, else ``"pca"`` (a non-linear map of more points takes minutes).
    """
    import importlib.util

    if method not in METHODS:
        raise InvalidInputError(
            f"method must be one of {', '.join(METHODS)} (pca always works), not {method!r}."
        )
    if method == "auto":
        if n is not None and n > AUTO_NONLINEAR_MAX:
            return "pca"
        return next(
            (m for m in AUTO_ORDER if importlib.util.find_spec(_MODULES[m]) is not None), "pca"
        )
    if method != "pca" and importlib.util.find_spec(_MODULES[method]) is None:
        raise InvalidInputError(
            f"method={method!r} needs {_PIP[method]}: `pip install {_PIP[method]}`"
            + (" (or the extra: `pip install 'embedsearch[maps]'`)" if method == "umap" else "")
            + "; method='pca' always works."
        )
    return str(method)


def project(vectors: np.ndarray, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, str]:
    """Project unit vectors to 2-D.

    Args:
        method: ``"pca"`` (linear, instant), ``"umap"`` (cosine, 15 neighbours),
            ``"pacmap"``, ``"tsne"`` (openTSNE, cosine, all cores) or ``"auto"`` (up to
            :data:`AUTO_NONLINEAR_MAX` points the first of t-SNE, UMAP, PaCMAP that is
            installed, else PCA — openTSNE first: best trustworthiness; PCA above that size).

    Returns:
        ``(coords, description)``, e.g. ``"PCA (explained variance 6.1% + 4.3%)"``.

    Raises:
        InvalidInputError: unknown method, too few points, or a method whose package is
            missing (the message says what to install).
    """
    n = vectors.shape[0]
    asked = method
    method = check_method(method, n)
    if n < 2:
        raise InvalidInputError("a map needs at least 2 documents.")
    if method == "pca" or n < 8:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed)
        coords = pca.fit_transform(vectors.astype(np.float64))
        var = pca.explained_variance_ratio_
        why = ""
        if asked == "auto" and n > AUTO_NONLINEAR_MAX:
            why = f"; auto: PCA above {AUTO_NONLINEAR_MAX:,} points"
        elif asked == "auto" and method == "pca":  # none of AUTO_ORDER is installed
            why = "; auto: no t-SNE, UMAP or PaCMAP installed: pip install openTSNE"
        return coords, f"PCA (explained variance {100 * var[0]:.1f}% + {100 * var[1]:.1f}%{why})"
    if method == "umap":
        import umap

        neighbors = min(15, n - 1)
        reducer = umap.UMAP(
            n_components=2, metric="cosine", random_state=seed, n_neighbors=neighbors
        )
        return np.asarray(reducer.fit_transform(vectors)), f"UMAP (cosine, {neighbors} neighbours)"
    if method == "pacmap":
        import pacmap

        reducer = pacmap.PaCMAP(n_components=2, random_state=seed, n_neighbors=min(10, n - 2))
        return np.asarray(reducer.fit_transform(vectors.astype(np.float32))), "PaCMAP"
    from openTSNE import TSNE

    perplexity = float(min(30, max(2, (n - 1) // 3)))
    # all cores: 5,000 points in 17 s instead of 26 s; the result stays the same for a seed
    # (tests/test_maps.py checks two runs give the same coordinates)
    emb = TSNE(metric="cosine", perplexity=perplexity, random_state=seed, n_jobs=-1).fit(
        vectors.astype(np.float64)
    )
    return np.asarray(emb), f"t-SNE (openTSNE, cosine, perplexity {perplexity:g})"


def _umap() -> Any:
    check_method("umap")
    import umap

    return umap


# ----------------------------------------------------------------------------- colours
def _lookup(meta: dict[str, Any] | None, dotted: str) -> Any:
    cur: Any = meta or {}
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def categorize(values: list[Any]) -> tuple[list[str], np.ndarray]:
    """Map metadata values to at most MAX_CATEGORIES (32) categories.

    Numbers with more than 20 distinct values become 8 quantile bins; other values keep
    their 19 most common, the rest become ``other``; missing values ``(missing)``.

    Returns:
        ``(legend, category index per value)``.
    """
    numeric = [
        v
        for v in values
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]
    if (
        numeric
        and len(numeric) == sum(v is not None for v in values)
        and len(set(numeric)) > MAX_CATEGORIES
    ):
        edges = np.unique(
            np.quantile(np.asarray(numeric, dtype=np.float64), np.linspace(0, 1, NUMERIC_BINS + 1))
        )
        legend = [f"{_fmt(edges[i])} – {_fmt(edges[i + 1])}" for i in range(len(edges) - 1)]
        cats = np.empty(len(values), dtype=np.int64)
        for i, v in enumerate(values):
            if v is None:
                cats[i] = -1
            else:
                cats[i] = min(int(np.searchsorted(edges, v, side="right")) - 1, len(legend) - 1)
        if (cats < 0).any():
            legend.append(_MISSING)
            cats[cats < 0] = len(legend) - 1
        return legend, cats
    keys = [
        _MISSING if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else str(v))
        for v in values
    ]
    counts = Counter(keys)
    common = [k for k, _ in counts.most_common()]
    if len(common) > MAX_CATEGORIES:
        common = common[: MAX_CATEGORIES - 1]
    common = sorted(common, key=_natural_key)
    legend = list(common)
    index = {k: i for i, k in enumerate(legend)}
    if len(counts) > len(common):
        legend.append(_OTHER)
    cats = np.array([index.get(k, len(legend) - 1) for k in keys], dtype=np.int64)
    return legend, cats


def _natural_key(s: str) -> tuple[int, float, str]:
    if s == _MISSING:
        return (2, 0.0, s)
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def palette(legend: list[str], numeric: bool = False) -> list[str]:
    """One colour per legend entry (viridis for numeric bins, grey for missing/other)."""
    out = []
    for i, label in enumerate(legend):
        if label in (_MISSING, _OTHER):
            out.append("#b0b0b0")
        elif numeric:
            out.append(VIRIDIS[round(i * (len(VIRIDIS) - 1) / max(1, len(legend) - 1))])
        else:
            out.append(PALETTE[i % len(PALETTE)])
    return out


def _cluster_colors(
    col: CollectionBase, ids: list[str], vectors: np.ndarray, docs: list[Any], seed: int
) -> tuple[list[str], np.ndarray, str]:
    """Legend and categories for ``color_by="cluster"`` (stored field, else computed)."""
    from .clustering import read_summary

    stored = [_lookup(d.metadata, "cluster") for d in docs]
    if any(v is not None for v in stored):
        summary = read_summary(col, "cluster") or {}
        names = {c["id"]: c.get("label", "") for c in summary.get("clusters", [])}
        legend, cats = categorize(stored)
        legend = [
            f"{lab} · {names[int(lab)]}" if lab.isdigit() and int(lab) in names else lab
            for lab in legend
        ]
        return legend, cats, "cluster (stored in metadata)"
    n = len(ids)
    if n < 3:
        return (
            ["documents"],
            np.zeros(n, dtype=np.int64),
            "one colour (too few documents to cluster)",
        )
    from .topics import build_topics

    texts = [d.text for d in docs]
    topics = build_topics(ids, vectors, lambda rows: [texts[i] for i in rows], levels=1)
    top = topics.levels[0]
    legend = [f"{t.id} · {', '.join(t.keywords[:3]) or 'topic'}" for t in top.topics]
    how = "chosen by silhouette" if topics.criterion != "given" else "given"
    return legend, top.labels, f"top-level topics (k={top.k} {how}, computed on the drawn sample)"


# ----------------------------------------------------------------------------- main
def save_map(
    col: CollectionBase,
    path: str | os.PathLike[str],
    *,
    color_by: str | None = "cluster",
    method: str = "auto",
    max_points: int = 5000,
    seed: int = 0,
    where: dict[str, Any] | None = None,
    title: str | None = None,
) -> MapResult:
    """Draw a collection (or the documents matching ``where``) as a 2-D map.

    Args:
        col: the collection.
        path: ``*.png`` or ``*.html``.
        color_by: ``"cluster"``, a metadata field (dotted path), or None.
        method: ``"auto"`` (default: up to :data:`AUTO_NONLINEAR_MAX` drawn points t-SNE via
            openTSNE, else UMAP, else PaCMAP, whichever is installed first; PCA above that or
            when none is), ``"pca"``, ``"umap"``, ``"pacmap"`` or ``"tsne"``.
        max_points: sample cap (seeded uniform sample above it).
        seed: seed of the sample, the projection and computed clusters.
        where: metadata filter.
        title: map title (default: the collection name).

    Returns:
        A :class:`MapResult`.

    Raises:
        InvalidInputError: unknown suffix, bad parameters, an empty selection, UMAP missing.
    """
    out = Path(path)
    fmt = out.suffix.lower()
    if fmt not in (".png", ".html", ".htm"):
        raise InvalidInputError(f"map file must end in .png or .html, not {out.name!r}.")
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
        raise InvalidInputError(f"max_points must be an integer >= 2, got {max_points!r}.")
    check_method(method)  # fails before any work when a package is missing
    if color_by is not None and (not isinstance(color_by, str) or not color_by):
        raise InvalidInputError("color_by must be 'cluster', a metadata field name, or None.")
    if not out.parent.exists():
        raise InvalidInputError(f"folder {out.parent} does not exist; create it first.")
    with col.selection(where) as chosen:  # only the drawn sample's rows are read
        total = chosen.count
        if total < 2:
            raise InvalidInputError(f"a map needs at least 2 documents; {total} selected.")
        keep = np.arange(total)
        if total > max_points:
            keep = np.sort(np.random.default_rng(seed).choice(total, max_points, replace=False))
        ids = chosen.ids(keep)
        vectors = np.asarray(chosen.vectors[keep], dtype=np.float32)
    docs = col.get(ids)
    numeric = False
    if color_by is None:
        legend, cats, color_desc = ["documents"], np.zeros(len(ids), dtype=np.int64), "one colour"
    elif color_by == "cluster":
        legend, cats, color_desc = _cluster_colors(col, ids, vectors, docs, seed)
    else:
        values = [_lookup(d.metadata, color_by) for d in docs]
        if all(v is None for v in values):
            raise InvalidInputError(
                f"no drawn document has metadata field {color_by!r}; check the name "
                "(dotted paths reach nested fields) or use color_by='cluster'."
            )
        legend, cats = categorize(values)
        numeric = any(" – " in lab for lab in legend)
        color_desc = f"{color_by}" + (" (quantile bins)" if numeric else "")
    used = check_method(method, len(ids))  # what ``auto`` runs for this many points
    coords, projection = project(vectors, method, seed)
    sampled = (
        f"{len(ids):,} of {total:,} documents (random sample, seed {seed})"
        if len(ids) < total
        else f"all {total:,} documents"
    )
    caption = f"{sampled} · {projection} · colour: {color_desc}"
    heading = title or f"{col.name}"
    colors = palette(legend, numeric)
    texts = [d.text for d in docs]
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        if fmt == ".png":
            _render_png(tmp, coords, cats, legend, colors, heading, caption)
        else:
            _render_html(tmp, coords, cats, legend, colors, heading, caption, ids, texts)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return MapResult(out, used, len(ids), total, color_by, legend, ids, coords, cats, caption)


# ----------------------------------------------------------------------------- PNG
def _render_png(
    path: Path,
    coords: np.ndarray,
    cats: np.ndarray,
    legend: list[str],
    colors: list[str],
    title: str,
    caption: str,
) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.04, 0.06, 0.64, 0.84))
    n = len(coords)
    size = 14 if n <= 1000 else 6 if n <= 5000 else 3
    for c, (label, color) in enumerate(zip(legend, colors)):
        pts = coords[cats == c]
        if len(pts):
            ax.scatter(
                pts[:, 0],
                pts[:, 1],
                s=size,
                c=color,
                alpha=0.7,
                linewidths=0,
                label=f"{_short(label, 48)} ({len(pts)})",
            )
    if 1 < len(legend) <= MAX_CATEGORIES:
        labels = [
            (int((cats == c).sum()), np.median(coords[cats == c], axis=0), _short(label, 28))
            for c, label in enumerate(legend)
            if (cats == c).sum() >= max(3, n // 200) and label not in (_MISSING, _OTHER)
        ]
        place_labels(ax, [(xy, text) for _, xy, text in sorted(labels, key=lambda t: -t[0])])
    ax.set_xticks([])
    ax.set_yticks([])
    fig.suptitle(title, x=0.04, ha="left", fontsize=14, weight="bold")
    fig.text(0.04, 0.915, caption, fontsize=8.5, color="#444444")
    if len(legend) > 1:
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=8,
            frameon=False,
            markerscale=2.5 if size < 10 else 1.2,
        )
    with open(path, "wb") as fh:
        fig.savefig(fh, format="png")


# offsets (in points) tried around a cluster's median, nearest first
_LABEL_OFFSETS = [(0, 0), (0, 12), (0, -12), (30, 0), (-30, 0), (30, 12), (-30, 12), (30, -12),
                  (-30, -12), (0, 24), (0, -24), (60, 0), (-60, 0), (0, 36), (0, -36)]  # fmt: skip


def place_labels(ax: Any, items: list[tuple[np.ndarray, str]]) -> list[Any]:
    """Write labels at their anchors without overlaps: each label (most important first)
    takes the first offset around its anchor where its box clears every box already placed
    and stays inside the axes; a label with no free place is left out (the legend has it).

    Returns:
        The window extents (``Bbox``) of the labels placed, in placing order.
    """
    from matplotlib.patheffects import withStroke

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed: list[Any] = []
    for xy, text in items:
        for dx, dy in _LABEL_OFFSETS:
            t = ax.annotate(
                text,
                xy=(float(xy[0]), float(xy[1])),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=8,
                ha="center",
                va="center",
                weight="bold",
                color="#222222",
                path_effects=[withStroke(linewidth=3, foreground="white")],
                annotation_clip=False,
            )
            box = t.get_window_extent(renderer).expanded(1.06, 1.15)
            inside = (
                box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0
                and box.y1 <= frame.y1
            )  # fmt: skip
            if inside and not any(box.overlaps(b) for b in placed):
                placed.append(box)
                break
            t.remove()
    return placed


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# ----------------------------------------------------------------------------- HTML
def _render_html(
    path: Path,
    coords: np.ndarray,
    cats: np.ndarray,
    legend: list[str],
    colors: list[str],
    title: str,
    caption: str,
    ids: list[str],
    texts: list[str],
) -> None:
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    norm = (coords - lo) / span  # 0..1 in both axes
    data = {
        "x": [round(float(v), 5) for v in norm[:, 0]],
        "y": [round(float(v), 5) for v in norm[:, 1]],
        "c": [int(c) for c in cats],
        "id": ids,
        "text": [_short(" ".join(t.split()), HOVER_TEXT_CHARS) for t in texts],
        "legend": legend,
        "colors": colors,
    }
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    payload = payload.replace("<", "\\u003c")  # so no "</script>" or "<!--" ends the block
    page = (
        _HTML.replace("__TITLE__", html.escape(title))
        .replace("__CAPTION__", html.escape(caption))
        .replace("__DATA__", payload)
    )
    path.write_text(page, "utf-8")


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body{margin:0;font:13px/1.4 system-ui,sans-serif;color:#222;display:flex;flex-direction:column;height:100vh}
header{padding:8px 14px;border-bottom:1px solid #ddd}
h1{font-size:17px;margin:0}
.cap{color:#555;font-size:12px}
main{flex:1;display:flex;min-height:0}
#wrap{flex:1;position:relative}
canvas{position:absolute;inset:0;width:100%;height:100%;cursor:crosshair}
aside{width:300px;overflow:auto;border-left:1px solid #ddd;padding:8px}
.item{display:flex;align-items:center;gap:6px;cursor:pointer;padding:2px 0;user-select:none}
.item.off{opacity:.35}
.sw{width:12px;height:12px;border-radius:6px;flex:none}
#tip{position:absolute;pointer-events:none;background:#fff;border:1px solid #999;border-radius:4px;
padding:6px 8px;max-width:360px;box-shadow:0 2px 6px rgba(0,0,0,.2);display:none;font-size:12px}
#tip b{display:block;margin-bottom:2px}
input{width:100%;box-sizing:border-box;margin:4px 0 8px;padding:4px}
.hint{color:#777;font-size:11px}
</style></head><body>
<header><h1>__TITLE__</h1><div class="cap">__CAPTION__</div></header>
<main><div id="wrap"><canvas id="cv"></canvas><div id="tip"></div></div>
<aside><input id="q" placeholder="highlight texts containing…">
<div class="hint">hover: text · click legend: show/hide · wheel: zoom · drag: pan · double-click: reset</div>
<div id="legend"></div></aside></main>
<script id="data" type="application/json">__DATA__</script>
<script>
(function(){
const D=JSON.parse(document.getElementById('data').textContent);
const N=D.x.length, cv=document.getElementById('cv'), ctx=cv.getContext('2d');
const tip=document.getElementById('tip'), wrap=document.getElementById('wrap');
const on=D.legend.map(()=>true); let view={s:1,tx:0,ty:0}, hover=-1, query='', drag=null;
const counts=D.legend.map(()=>0); for(let i=0;i<N;i++)counts[D.c[i]]++;
const lg=document.getElementById('legend');
D.legend.forEach((name,k)=>{const el=document.createElement('div');el.className='item';
 const sw=document.createElement('span');sw.className='sw';sw.style.background=D.colors[k];
 const tx=document.createElement('span');tx.textContent=name+' ('+counts[k]+')';
 el.append(sw,tx);el.onclick=()=>{on[k]=!on[k];el.classList.toggle('off',!on[k]);draw();};lg.append(el);});
function size(){const r=wrap.getBoundingClientRect(),d=window.devicePixelRatio||1;
 cv.width=r.width*d;cv.height=r.height*d;ctx.setTransform(d,0,0,d,0,0);draw();}
function px(i){const r=wrap.getBoundingClientRect(),m=24,w=r.width-2*m,h=r.height-2*m;
 return [m+(D.x[i]*w)*view.s+view.tx, m+((1-D.y[i])*h)*view.s+view.ty];}
function match(i){return query && D.text[i].toLowerCase().includes(query);}
function draw(){const r=wrap.getBoundingClientRect();ctx.clearRect(0,0,r.width,r.height);
 const rad=N>5000?1.6:N>1000?2.4:3.5;
 for(let i=0;i<N;i++){if(!on[D.c[i]])continue;const p=px(i);
  ctx.globalAlpha=query&&!match(i)?0.12:0.75;ctx.fillStyle=D.colors[D.c[i]];
  ctx.beginPath();ctx.arc(p[0],p[1],match(i)?rad+2:rad,0,6.2832);ctx.fill();}
 ctx.globalAlpha=1;
 if(hover>=0){const p=px(hover);ctx.strokeStyle='#000';ctx.lineWidth=1.5;ctx.beginPath();
  ctx.arc(p[0],p[1],rad+3,0,6.2832);ctx.stroke();}}
function nearest(mx,my){let best=-1,bd=100;for(let i=0;i<N;i++){if(!on[D.c[i]])continue;
 const p=px(i),d=(p[0]-mx)**2+(p[1]-my)**2;if(d<bd){bd=d;best=i;}}return best;}
cv.addEventListener('mousemove',e=>{const r=wrap.getBoundingClientRect(),mx=e.clientX-r.left,my=e.clientY-r.top;
 if(drag){view.tx=drag.tx+mx-drag.x;view.ty=drag.ty+my-drag.y;draw();return;}
 const i=nearest(mx,my);if(i!==hover){hover=i;draw();}
 if(i<0){tip.style.display='none';return;}
 tip.innerHTML='';const b=document.createElement('b');b.textContent=D.legend[D.c[i]];
 const t=document.createElement('div');t.textContent=D.text[i];
 const id=document.createElement('div');id.className='hint';id.textContent='id: '+D.id[i];
 tip.append(b,t,id);tip.style.display='block';
 tip.style.left=Math.min(mx+14,r.width-370)+'px';tip.style.top=Math.min(my+14,r.height-90)+'px';});
cv.addEventListener('mouseleave',()=>{hover=-1;tip.style.display='none';draw();});
cv.addEventListener('mousedown',e=>{const r=wrap.getBoundingClientRect();
 drag={x:e.clientX-r.left,y:e.clientY-r.top,tx:view.tx,ty:view.ty};});
window.addEventListener('mouseup',()=>{drag=null;});
cv.addEventListener('wheel',e=>{e.preventDefault();const r=wrap.getBoundingClientRect();
 const mx=e.clientX-r.left,my=e.clientY-r.top,f=e.deltaY<0?1.2:1/1.2;
 view.tx=mx-(mx-view.tx)*f;view.ty=my-(my-view.ty)*f;view.s*=f;draw();},{passive:false});
cv.addEventListener('dblclick',()=>{view={s:1,tx:0,ty:0};draw();});
document.getElementById('q').addEventListener('input',e=>{query=e.target.value.trim().toLowerCase();draw();});
window.addEventListener('resize',size);size();
})();
</script></body></html>
"""


__all__ = ["MapResult", "categorize", "palette", "project", "save_map"]
