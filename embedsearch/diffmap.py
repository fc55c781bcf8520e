"""The picture of a :class:`~embedsearch.diff.VersionDiff`: two versions side by side.

Both panels share one 2-D projection (PCA of a sample of both versions, through
:func:`embedsearch.latent.maps.project`), so a point stays where it was and only what changed
moves. Every document is drawn pale, in its topic's colour when the topic moved (grey when
its share held); in the newer panel the documents it added are drawn solid with a dark edge,
in the older panel the documents that were later removed are marked with red crosses. Topics whose size moved carry their label and sizes
(``▲`` appeared/grew, ``▼`` vanished/shrank); a side panel lists them with examples.
``.html`` embeds the same picture in a self-contained page with the full tables.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidInputError
from .latent.maps import PALETTE, project

if TYPE_CHECKING:
    from .diff import VersionDiff

MAX_POINTS = 6000  # per panel
_MARK = {"appeared": "▲", "grew": "▲", "vanished": "▼", "shrank": "▼", "steady": ""}
STEADY = "#a0a0a0"  # topics whose share held
_HUES = [c for c in PALETTE if c not in ("#7f7f7f", "#c7c7c7")]  # no grey for a moved topic
MAX_LABELS = 8  # per panel: the topics that moved most
_GAINED, _LOST = ("appeared", "grew"), ("vanished", "shrank")


def _sample(n: int, keep: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row indices to draw: all of ``keep`` (the changed rows, up to half) plus a sample."""
    if n <= MAX_POINTS:
        return np.arange(n)
    must = np.flatnonzero(keep)
    if len(must) > MAX_POINTS // 2:
        must = np.sort(rng.choice(must, MAX_POINTS // 2, replace=False))
    rest = np.setdiff1d(np.arange(n), must)
    extra = rng.choice(rest, MAX_POINTS - len(must), replace=False)
    return np.sort(np.concatenate([must, extra]))


def draw_diff_map(
    path: str | os.PathLike[str],
    diff: VersionDiff,
    *,
    ids_a: list[str],
    vec_a: np.ndarray,
    lab_a: np.ndarray,
    ids_b: list[str],
    vec_b: np.ndarray,
    lab_b: np.ndarray,
    title: str,
    seed: int = 0,
) -> dict[str, Any]:
    """Draw ``diff`` to ``path`` (``.png`` or ``.html``); returns what was drawn."""
    out = Path(path)
    fmt = out.suffix.lower()
    if fmt not in (".png", ".html", ".htm"):
        raise InvalidInputError(f"map file must end in .png or .html, not {out.name!r}.")
    if not out.parent.exists():
        raise InvalidInputError(f"folder {out.parent} does not exist; create it first.")
    if len(ids_a) + len(ids_b) < 2:
        raise InvalidInputError("a diff map needs at least 2 documents across the two versions.")
    rng = np.random.default_rng(seed)
    removed, added = set(diff.removed), set(diff.added)
    gone = np.fromiter((i in removed for i in ids_a), dtype=bool, count=len(ids_a))
    new = np.fromiter((i in added for i in ids_b), dtype=bool, count=len(ids_b))
    rows_a, rows_b = _sample(len(ids_a), gone, rng), _sample(len(ids_b), new, rng)
    coords, how = project(np.concatenate([vec_a[rows_a], vec_b[rows_b]]), "pca", seed)
    xy_a, xy_b = coords[: len(rows_a)], coords[len(rows_a) :]
    png = _render(
        xy_a,
        lab_a[rows_a] if len(lab_a) else np.zeros(len(rows_a), np.int64),
        gone[rows_a],
        xy_b,
        lab_b[rows_b] if len(lab_b) else np.zeros(len(rows_b), np.int64),
        new[rows_b],
        diff,
        title,
        f"{how}; {len(rows_a)} of {len(ids_a)} and {len(rows_b)} of {len(ids_b)} documents drawn"
        + (
            " (every changed one first)"
            if len(rows_a) < len(ids_a) or len(rows_b) < len(ids_b)
            else ""
        ),
    )
    if fmt == ".png":
        out.write_bytes(png)
    else:
        out.write_text(_page(png, diff, title), encoding="utf-8")
    return {
        "path": str(out),
        "format": fmt.lstrip("."),
        "points_a": int(len(rows_a)),
        "points_b": int(len(rows_b)),
        "projection": how,
    }


def _render(
    xy_a: np.ndarray,
    lab_a: np.ndarray,
    gone: np.ndarray,
    xy_b: np.ndarray,
    lab_b: np.ndarray,
    new: np.ndarray,
    diff: VersionDiff,
    title: str,
    caption: str,
) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patheffects import withStroke

    fig = Figure(figsize=(18, 8.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = [fig.add_axes((0.02, 0.05, 0.36, 0.8)), fig.add_axes((0.39, 0.05, 0.36, 0.8))]
    every = np.concatenate([xy_a, xy_b])
    lo, hi = every.min(axis=0), every.max(axis=0)
    pad = (hi - lo) * 0.04
    moved = {t.topic: t for t in diff.topics if t.change != "steady"}
    # colour only what moved (the most moved first); steady topics stay grey
    colors = [STEADY] * max(len(diff.topics), 1)
    ranked = sorted(moved.values(), key=lambda t: -abs(t.share_b - t.share_a))
    for i, t in enumerate(ranked):
        colors[t.topic] = _HUES[i % len(_HUES)]

    def base(ax: Any, xy: np.ndarray, lab: np.ndarray) -> None:
        ax.scatter(
            xy[:, 0], xy[:, 1], s=7, c=[colors[c % len(colors)] for c in lab], alpha=0.35,
            linewidths=0,
        )  # fmt: skip

    base(axes[0], xy_a, lab_a)
    if gone.any():
        axes[0].scatter(
            xy_a[gone, 0], xy_a[gone, 1], s=18, marker="x", c="#d62728", linewidths=0.9,
            label=f"removed later ({len(diff.removed)})",
        )  # fmt: skip
    base(axes[1], xy_b, lab_b)
    if new.any():
        axes[1].scatter(
            xy_b[new, 0], xy_b[new, 1], s=16, c=[colors[c % len(colors)] for c in lab_b[new]],
            edgecolors="#222222", linewidths=0.5, alpha=0.95,
        )  # fmt: skip
        axes[1].scatter(
            [], [], s=16, c="white", edgecolors="#222222", linewidths=0.8,
            label=f"added ({len(diff.added):,}), in its topic's colour",
        )  # fmt: skip
    titles = (
        f"version {diff.a}: {diff.count_a:,} documents",
        f"version {diff.b}: {diff.count_b:,} documents (+{len(diff.added):,} new, outlined)",
    )
    for ax, xy, lab, head in ((axes[0], xy_a, lab_a, titles[0]), (axes[1], xy_b, lab_b, titles[1])):
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(head, fontsize=11, loc="left")
        # the older panel names what was lost, the newer what was gained (most moved first)
        kinds = _LOST if ax is axes[0] else _GAINED
        shown = sorted(
            (t for t in moved.values() if t.change in kinds),
            key=lambda t: -abs(t.share_b - t.share_a),
        )[:MAX_LABELS]
        spots = []
        for t in shown:
            pts = xy[lab == t.topic]
            if len(pts) >= 3:
                size = t.size_a if ax is axes[0] else t.size_b
                text = f"{_MARK[t.change]} {t.label[:24]} ({size})"
                spots.append((*np.median(pts, axis=0), text))
        for x, y, text in _spread(spots, lo, hi):
            ax.text(
                x, y, text, fontsize=8, ha="center", va="center", weight="bold", color="#111111",
                path_effects=[withStroke(linewidth=3, foreground="white")],
            )  # fmt: skip
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower left", fontsize=8, frameon=True, framealpha=0.85)
    fig.suptitle(title, x=0.02, ha="left", fontsize=15, weight="bold")
    fig.text(
        0.02,
        0.905,
        f"+{len(diff.added):,} added, -{len(diff.removed):,} removed, "
        f"~{len(diff.changed):,} changed; centroid shift {diff.centroid_shift:.4f}.  "
        f"{caption}",
        fontsize=9,
        color="#444444",
    )
    side = fig.add_axes((0.765, 0.05, 0.225, 0.8))
    side.axis("off")
    lines: list[tuple[str, str, str]] = []
    order = sorted(moved.values(), key=lambda t: -abs(t.size_b - t.size_a))
    for t in order[:9]:
        lines.append(
            (
                colors[t.topic % len(colors)],
                f"{t.change} {t.size_a}→{t.size_b} ({100 * t.share_a:.1f}%→{100 * t.share_b:.1f}%)",
                t.label[:38],
            )
        )
        if t.examples:
            lines.append(("", "", "“" + t.examples[0][:44] + "…”"))
    if not lines:
        lines.append(("", "no topic changed size", ""))
    side.text(0, 1.0, "Topics that moved", fontsize=11, weight="bold", va="top")
    y = 0.95
    for color, head, text in lines:
        if color:
            side.scatter([0.02], [y - 0.012], s=60, c=color, transform=side.transAxes)
            side.text(0.06, y, head, fontsize=9, weight="bold", va="top")
            side.text(0.06, y - 0.03, text, fontsize=8.5, va="top")
            y -= 0.065
        else:
            side.text(
                0.06, y + 0.005, text, fontsize=7.5, va="top", color="#555555", style="italic"
            )
            y -= 0.035
    side.set_xlim(0, 1)
    side.set_ylim(0, 1)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _spread(
    spots: list[tuple[float, float, str]], lo: np.ndarray, hi: np.ndarray
) -> list[tuple[float, float, str]]:
    """Move labels apart vertically so that no two overlap, inside the plot (greedy: down
    first, up when the bottom is reached)."""
    span = hi - lo
    dy, dx = 0.045 * float(span[1]), 0.3 * float(span[0])
    placed: list[tuple[float, float, str]] = []

    def clash(x: float, y: float) -> bool:
        return any(abs(x - px) < dx and abs(y - py) < dy for px, py, _ in placed)

    for x, y0, text in sorted(spots, key=lambda s: -s[1]):
        y = y0
        while clash(x, y) and y > lo[1] + dy:
            y -= dy / 2
        if clash(x, y):  # no room below: look above the natural place instead
            y = y0
            while clash(x, y) and y < hi[1] - dy:
                y += dy / 2
        placed.append((x, y, text))
    return placed


def _page(png: bytes, diff: VersionDiff, title: str) -> str:
    esc = html.escape
    topics = "".join(
        f"<tr><td>{t.topic}</td><td>{esc(t.change)}</td><td>{esc(t.label)}</td>"
        f"<td>{t.size_a}</td><td>{t.size_b}</td><td>{t.added}</td>"
        f"<td>{esc(' | '.join(t.examples[:2]))}</td></tr>"
        for t in diff.topics
    )
    probes = "".join(
        f"<tr><td>{esc(p.query)}</td><td>{p.overlap:.2f}</td><td>{'yes' if p.changed else 'no'}"
        f"</td><td>{esc(', '.join(p.entered[:5]))}</td><td>{esc(', '.join(p.left[:5]))}</td></tr>"
        for p in diff.probes
    )
    img = base64.b64encode(png).decode()
    return (
        "<!doctype html><meta charset='utf-8'><title>" + esc(title) + "</title>"
        "<style>body{font:14px system-ui,sans-serif;margin:20px;color:#222}"
        "table{border-collapse:collapse;margin:10px 0}td,th{border:1px solid #ccc;"
        "padding:3px 6px;text-align:left;vertical-align:top}img{max-width:100%}</style>"
        f"<h1>{esc(title)}</h1><pre>{esc(diff.summary())}</pre>"
        f"<img alt='two versions side by side' src='data:image/png;base64,{img}'>"
        "<h2>Topics</h2><table><tr><th>#</th><th>change</th><th>label</th><th>before</th>"
        f"<th>after</th><th>new docs</th><th>examples</th></tr>{topics}</table>"
        + (
            "<h2>Probe queries</h2><table><tr><th>query</th><th>overlap@k</th><th>changed</th>"
            f"<th>entered</th><th>left</th></tr>{probes}</table>"
            if diff.probes
            else ""
        )
    )
