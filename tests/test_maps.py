"""2-D maps: PNG and self-contained HTML, sampling cap, colouring, bad input."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

import embedsearch
from embedsearch.errors import InvalidInputError
from embedsearch.latent.maps import MAX_CATEGORIES, categorize, palette, place_labels

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def html_data(path) -> dict:
    page = path.read_text("utf-8")
    match = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)
    assert match, "the data block is missing"
    return json.loads(match.group(1))


def test_png_map_coloured_by_topic(demo_col, tmp_path) -> None:
    out = tmp_path / "topics.png"
    result = demo_col.map(out, color_by="topic", method="pca")
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    from matplotlib.image import imread

    image = imread(out)
    assert image.shape[0] >= 600 and image.shape[1] >= 900
    assert result.points == result.total == 350
    assert result.legend == sorted({d.metadata["topic"] for d in demo_col.get(demo_col.ids())})
    assert result.coords.shape == (350, 2) and np.all(np.isfinite(result.coords))
    assert "all 350 documents" in result.caption and "PCA" in result.caption
    assert out.stat().st_size < 2_000_000
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no leftovers


def test_html_map_is_self_contained_with_every_point(demo_col, tmp_path) -> None:
    out = tmp_path / "map.html"
    result = demo_col.map(out, color_by="cluster", max_points=120, seed=3)
    page = out.read_text("utf-8")
    assert "<canvas" in page and "http://" not in page and "https://" not in page
    data = html_data(out)
    assert len(data["x"]) == len(data["y"]) == len(data["id"]) == len(data["text"]) == 120
    assert data["id"] == result.ids
    assert set(data["id"]) <= set(demo_col.ids())
    assert len(data["legend"]) == len(data["colors"]) and max(data["c"]) < len(data["legend"])
    assert all(0.0 <= v <= 1.0 for v in data["x"] + data["y"])
    docs = {d.id: d.text for d in demo_col.get(result.ids)}
    assert all(docs[i].startswith(t.rstrip("…")[:50]) for i, t in zip(data["id"], data["text"]))
    assert result.points == 120 and result.total == 350
    assert "120 of 350 documents (random sample, seed 3)" in result.caption
    assert "silhouette" in result.caption  # clusters computed on the sample


def test_sampling_and_projection_are_deterministic(demo_col, tmp_path) -> None:
    a = demo_col.map(tmp_path / "a.png", color_by=None, max_points=50, seed=1)
    b = demo_col.map(tmp_path / "b.png", color_by=None, max_points=50, seed=1)
    assert a.ids == b.ids
    np.testing.assert_allclose(a.coords, b.coords)
    c = demo_col.map(tmp_path / "c.png", color_by=None, max_points=50, seed=2)
    assert c.ids != a.ids


def test_hostile_text_cannot_break_out_of_the_html(tmp_path, encoder) -> None:
    col = embedsearch.open(tmp_path / "hostile")
    try:
        evil = '</script><script>alert("x")</script> <!-- & "quotes"'
        col.add([evil, "a plain sentence about cats", "another about dogs"], ids=["e", "c", "d"])
        out = tmp_path / "h.html"
        col.map(out, color_by=None, title="<b>title</b>")
        page = out.read_text("utf-8")
        assert page.count("</script>") == 2  # the data block's and the code's own
        assert "<b>title</b>" not in page and "&lt;b&gt;title&lt;/b&gt;" in page
        data = html_data(out)
        assert evil in data["text"]
    finally:
        col.close()


def test_numeric_field_is_binned_and_missing_values_are_grey() -> None:
    legend, cats = categorize(list(range(100)) + [None])
    assert len(legend) == 9 and legend[-1] == "(missing)"
    assert cats[0] == 0 and cats[99] == 7 and cats[100] == 8
    legend, cats = categorize(["a", "b", "a", None])
    assert legend == ["a", "b", "(missing)"] and cats.tolist() == [0, 1, 0, 2]
    legend, cats = categorize([f"v{i}" for i in range(40)] + ["v0"] * 5)
    assert len(legend) == MAX_CATEGORIES and legend[-1] == "other" and legend.index("v0") == cats[0]


def test_year_colouring_and_stored_clusters(demo_col, tmp_path) -> None:
    result = demo_col.map(tmp_path / "years.png", color_by="year")
    assert "quantile bins" in result.caption and len(result.legend) >= 4


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"path": "out.jpg"}, "must end in .png or .html"),
        ({"path": "missing-folder/out.png"}, "does not exist"),
        ({"path": "out.png", "color_by": "nosuchfield"}, "nosuchfield"),
        ({"path": "out.png", "max_points": 1}, "max_points"),
        ({"path": "out.png", "method": "isomap"}, "pca always works"),
        ({"path": "out.png", "where": {"topic": "nothing"}}, "at least 2 documents"),
    ],
)
def test_bad_map_requests(demo_col, tmp_path, monkeypatch, kwargs, fragment) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError, match=fragment):
        demo_col.map(**kwargs)
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(importlib.util.find_spec("umap") is not None, reason="umap-learn installed")
def test_umap_without_the_extra_says_what_to_install(demo_col, tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="pip install umap-learn"):
        demo_col.map(tmp_path / "u.png", method="umap")


NODE_HARNESS = r"""
const fs = require('fs');
const page = fs.readFileSync(process.argv[2], 'utf8');
const data = page.match(/<script id="data" type="application\/json">([\s\S]*?)<\/script>/)[1];
const code = page.match(/<script>([\s\S]*?)<\/script>/)[1];
const ctx = {arcs: 0, setTransform() {}, clearRect() {}, beginPath() {}, fill() {}, stroke() {},
  arc() { this.arcs++; }};
const els = {};
function el(id) {
  if (!els[id]) els[id] = {id, textContent: '', innerHTML: '', style: {}, kids: [],
    classList: {toggle() {}}, append(...k) { this.kids.push(...k); },
    addEventListener(t, f) { this['on' + t] = f; },
    getBoundingClientRect() { return {left: 0, top: 0, width: 800, height: 600}; },
    getContext() { return ctx; }};
  return els[id];
}
let made = 0;
global.document = {getElementById: id => id === 'data' ? {textContent: data} : el(id),
  createElement: () => el('new' + (made++))};
global.window = {devicePixelRatio: 1, addEventListener() {}};
eval(code);
const D = JSON.parse(data);
const drawn = ctx.arcs;
// hover the first point: its position in the same coordinates the page uses
const m = 24, w = 800 - 2 * m, h = 600 - 2 * m;
els.cv.onmousemove({clientX: m + D.x[0] * w, clientY: m + (1 - D.y[0]) * h});
const tip = els.tip.kids.map(k => k.textContent);
console.log(JSON.stringify({drawn, legend: els.legend.kids.length, tip, shown: els.tip.style.display}));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's script")
def test_html_script_draws_every_point_and_hover_shows_the_text(demo_col, tmp_path) -> None:
    out = tmp_path / "m.html"
    result = demo_col.map(out, color_by="topic", max_points=80)
    harness = tmp_path / "harness.js"
    harness.write_text(NODE_HARNESS, "utf-8")
    run = subprocess.run(
        ["node", str(harness), str(out)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["drawn"] == 80 and seen["legend"] == len(result.legend)
    data = html_data(out)
    assert seen["shown"] == "block"
    assert seen["tip"][1] == data["text"][0] and seen["tip"][2] == "id: " + data["id"][0]


def test_labels_never_overlap_and_stay_inside_the_axes() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.1, 0.1, 0.8, 0.8))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    # 30 labels crowded around 3 anchors: most must move, some cannot be placed
    items = [(np.array([5.0 + (i % 3) * 0.1, 5.0]), f"topic {i} label") for i in range(30)]
    boxes = place_labels(ax, items)
    assert 3 <= len(boxes) < 30
    assert len(ax.texts) == len(boxes)  # labels without a free place were removed
    frame = ax.get_window_extent(fig.canvas.get_renderer())
    for i, a in enumerate(boxes):
        assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1
        assert not any(a.overlaps(b) for b in boxes[i + 1 :])


def test_palette_has_distinct_colours_for_32_categories() -> None:
    from matplotlib.colors import to_rgb

    legend = [f"t{i}" for i in range(MAX_CATEGORIES)]
    colors = palette(legend)
    assert len(set(colors)) == MAX_CATEGORIES >= 30
    rgb = np.array([to_rgb(c) for c in colors])
    dist = np.sqrt(((rgb[:, None] - rgb[None]) ** 2).sum(-1)) + np.eye(len(rgb)) * 9
    assert dist.min() > 0.12  # no two colours nearly the same


def test_auto_method_resolves_to_an_installed_projection(demo_col, tmp_path) -> None:
    from embedsearch.latent.maps import check_method

    assert check_method("auto") == "tsne"  # openTSNE is a dependency: maps show neighbourhoods
    result = demo_col.map(tmp_path / "a.png", color_by="topic", max_points=60, method="pca")
    assert result.method == "pca" and "PCA" in result.caption


def test_auto_draws_pca_above_the_size_limit_and_says_so(demo_col, tmp_path, monkeypatch) -> None:
    from embedsearch.latent import maps

    assert maps.check_method("auto", maps.AUTO_NONLINEAR_MAX + 1) == "pca"
    assert maps.check_method("auto", maps.AUTO_NONLINEAR_MAX) == maps.check_method("auto")
    installed = maps.check_method("auto")  # t-SNE, UMAP or PaCMAP when one is installed
    assert maps.check_method(installed, 10**6) == installed  # explicit: never overridden
    monkeypatch.setattr(maps, "AUTO_NONLINEAR_MAX", 40)
    big = demo_col.map(tmp_path / "big.png", color_by=None, max_points=60)
    assert big.method == "pca" and big.points == 60
    assert "PCA" in big.caption and "auto: PCA above 40 points" in big.caption
    small = demo_col.map(tmp_path / "small.png", color_by=None, max_points=40)
    assert small.method == maps.check_method("auto") and small.points == 40
    if small.method == "tsne":
        assert "t-SNE" in small.caption and "PCA" not in small.caption


def test_auto_without_a_nonlinear_projection_says_what_to_install(
    demo_col, tmp_path, monkeypatch
) -> None:
    """Plumbing fake: ``find_spec`` answers "not installed" for the three projections, as on
    an install that removed openTSNE; the map is PCA and its caption says why and what to do."""
    from embedsearch.latent import maps

    real = importlib.util.find_spec
    hidden = set(maps._MODULES.values())
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a)
    )
    result = demo_col.map(tmp_path / "fallback.png", color_by=None, max_points=40)
    assert result.method == "pca"
    assert "no t-SNE, UMAP or PaCMAP installed: pip install openTSNE" in result.caption


def test_tsne_on_all_cores_gives_the_same_map_for_a_seed() -> None:
    from embedsearch.latent.maps import project

    rng = np.random.default_rng(0)
    # 1,050 points (above 1,000 openTSNE uses approximate neighbours, as for real maps)
    centres = rng.normal(size=(5, 16))
    x = centres[rng.integers(0, 5, 1050)] + rng.normal(scale=0.6, size=(1050, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    a, how = project(x, "tsne", seed=5)
    b, _ = project(x, "tsne", seed=5)
    assert "t-SNE" in how and a.shape == (1050, 2) and np.ptp(a, axis=0).min() > 10.0
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
