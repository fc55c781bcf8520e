"""What changed between two versions of a collection: rows, and meaning.

:func:`diff_views` compares two read-only views (see :meth:`Collection.diff`):

* **Rows** — ids added, removed, and changed (same id, different text or metadata; a changed
  text also means a changed vector).
* **Topics** — one spherical k-means (:func:`embedsearch.latent.clustering.spherical_kmeans`)
  is fitted on the documents of *both* versions (the old rows plus the new ones), so a topic
  has the same centroid in both; each version's documents are assigned to their nearest
  centroid and the sizes compared, as *shares* of each version (a topic that only kept pace
  with a growing collection is *steady*). A topic *appeared* when its share at least
  quadrupled (or it had at most 2 documents), *vanished* in the mirror case, *grew* /
  *shrank* when its share changed by at least a quarter; each needs at least
  ``max(3, 0.5 % of the collection)`` documents to have moved. Labels are class-based
  TF-IDF keywords (:func:`~embedsearch.latent.clustering.ctfidf_keywords`) over a sample of
  each topic's texts from both versions; each topic shows a few of its new documents.
* **Centroid** — the cosine between the two versions' mean directions, its complement as
  the *shift*, and the new documents most aligned with the direction it moved in.
* **Probes** — for each probe query, the top-``k`` of both versions (each answering as it
  did then), overlap@k, and the ids that entered and left.
* **Map** — optionally, both versions side by side on one shared 2-D projection, new
  documents highlighted (:mod:`embedsearch.diffmap`).

Example:
    >>> d = col.diff("before-import", probes=["election results", "oil prices"])
    >>> print(d.summary())
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .errors import InvalidInputError
from .latent.clustering import ctfidf_keywords, spherical_kmeans
from .validation import check_k

if TYPE_CHECKING:
    from .collection import Collection

Change = Literal["appeared", "vanished", "grew", "shrank", "steady"]
LABEL_SAMPLE = 300  # texts per topic used for its keywords
FIT_SAMPLE = 50_000  # rows the topic k-means is trained on (all rows are assigned)
MAX_LISTED_IDS = 1000


@dataclass(frozen=True)
class TopicChange:
    """One topic of the shared clustering and how its size moved.

    Attributes:
        topic: its number (0 = largest in the newer version).
        change: ``appeared``, ``vanished``, ``grew``, ``shrank`` or ``steady``.
        keywords: its label words (class-based TF-IDF).
        size_a / size_b: documents in it in the older / newer version.
        share_a / share_b: the same as fractions of each version.
        added: documents of the newer version in it that the older one lacked.
        examples: texts of a few of those new documents (or of its members).
    """

    topic: int
    change: Change
    keywords: list[str]
    size_a: int
    size_b: int
    share_a: float
    share_b: float
    added: int
    examples: list[str]

    @property
    def label(self) -> str:
        return ", ".join(self.keywords[:4]) or f"topic {self.topic}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "change": self.change,
            "label": self.label,
            "keywords": self.keywords,
            "size_a": self.size_a,
            "size_b": self.size_b,
            "share_a": round(self.share_a, 4),
            "share_b": round(self.share_b, 4),
            "added": self.added,
            "examples": self.examples,
        }


@dataclass(frozen=True)
class ProbeChange:
    """How one probe query's top-k moved: overlap@k, and the ids that entered / left."""

    query: str
    overlap: float
    changed: bool
    entered: list[str]
    left: list[str]
    top_a: list[str]
    top_b: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "overlap": round(self.overlap, 4),
            "changed": self.changed,
            "entered": self.entered,
            "left": self.left,
            "top_a": self.top_a,
            "top_b": self.top_b,
        }


@dataclass
class VersionDiff:
    """The result of :meth:`Collection.diff`; ``to_dict()`` for JSON, ``summary()`` for people."""

    a: int
    b: int
    count_a: int
    count_b: int
    added: list[str]
    removed: list[str]
    changed_text: list[str]
    changed_metadata: list[str]
    centroid_cosine: float
    toward: list[str]
    topics: list[TopicChange]
    probes: list[ProbeChange]
    k: int
    map: dict[str, Any] | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> list[str]:
        """Ids whose text or metadata changed."""
        return sorted(set(self.changed_text) | set(self.changed_metadata))

    @property
    def centroid_shift(self) -> float:
        """``1 - cos(centroid_a, centroid_b)``: 0 when the collection's mean meaning held."""
        return 1.0 - self.centroid_cosine

    def to_dict(self, max_ids: int = MAX_LISTED_IDS) -> dict[str, Any]:
        def ids(xs: list[str]) -> list[str]:
            return xs[:max_ids]

        return {
            "from": self.a,
            "to": self.b,
            "count_from": self.count_a,
            "count_to": self.count_b,
            "added": len(self.added),
            "removed": len(self.removed),
            "changed": len(self.changed),
            "added_ids": ids(self.added),
            "removed_ids": ids(self.removed),
            "changed_ids": ids(self.changed),
            "changed_text_ids": ids(self.changed_text),
            "changed_metadata_ids": ids(self.changed_metadata),
            "ids_truncated": max(len(self.added), len(self.removed), len(self.changed)) > max_ids,
            "centroid_cosine": round(self.centroid_cosine, 6),
            "centroid_shift": round(self.centroid_shift, 6),
            "centroid_toward": self.toward,
            "topics": [t.to_dict() for t in self.topics],
            "probes": [p.to_dict() for p in self.probes],
            "k": self.k,
            "map": self.map,
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }

    def summary(self, width: int = 100) -> str:
        """A few lines a person can read: counts, topic movement, centroid, probes."""
        lines = [
            f"version {self.a} -> {self.b}: {self.count_a} -> {self.count_b} documents; "
            f"+{len(self.added)} added, -{len(self.removed)} removed, "
            f"~{len(self.changed)} changed ({len(self.changed_text)} text, "
            f"{len(self.changed_metadata)} metadata)",
            f"centroid shift {self.centroid_shift:.4f} (cosine {self.centroid_cosine:.4f})"
            + (f"; moved toward: {_clip(self.toward[0], 70)}" if self.toward else ""),
        ]
        moved = [t for t in self.topics if t.change != "steady"]
        lines.append(
            f"topics ({len(self.topics)} in all, {len(moved)} moved):"
            if self.topics
            else "topics: too few documents to cluster"
        )
        for t in moved:
            lines.append(
                f"  {t.change:<8} {t.size_a:>6} -> {t.size_b:<6} "
                f"({100 * t.share_a:.1f}% -> {100 * t.share_b:.1f}%)  {_clip(t.label, width - 45)}"
            )
        for p in self.probes:
            mark = "changed" if p.changed else "same"
            lines.append(
                f"  probe {_clip(p.query, 40)!r}: overlap@{self.k} {p.overlap:.2f} ({mark}"
                + (f"; +{len(p.entered)} -{len(p.left)})" if p.changed else ")")
            )
        if self.map:
            lines.append(f"map: {self.map['path']}")
        return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# ----------------------------------------------------------------------------- computing
def _rows_diff(
    old: Collection, new: Collection, ids_a: list[str], ids_b: list[str]
) -> tuple[list[str], list[str], list[str], list[str]]:
    set_a, set_b = set(ids_a), set(ids_b)
    added = [i for i in ids_b if i not in set_a]
    removed = [i for i in ids_a if i not in set_b]
    common = [i for i in ids_b if i in set_a]
    changed_text: list[str] = []
    changed_meta: list[str] = []
    step = 4096
    for lo in range(0, len(common), step):
        chunk = common[lo : lo + step]
        for da, db in zip(old.get(chunk), new.get(chunk)):
            if da.text != db.text:
                changed_text.append(db.id)
            if (da.metadata or {}) != (db.metadata or {}):
                changed_meta.append(db.id)
    return added, removed, changed_text, changed_meta


def _default_k(n: int) -> int:
    return max(2, min(24, round(math.sqrt(n / 2))))


def _classify(size_a: int, size_b: int, n_a: int, n_b: int) -> Change:
    """Judged by *share* of each version, so a topic that merely kept pace with a growing
    (or shrinking) collection is steady; ``floor`` documents at least must have moved."""
    floor = max(3, int(0.005 * max(n_a, n_b)))
    share_a, share_b = size_a / max(n_a, 1), size_b / max(n_b, 1)
    if (size_a <= 2 or 4 * share_a <= share_b) and size_b >= floor:
        return "appeared"
    if (size_b <= 2 or 4 * share_b <= share_a) and size_a >= floor:
        return "vanished"
    if share_b >= 1.25 * share_a and size_b - size_a >= floor:
        return "grew"
    if share_a >= 1.25 * share_b and abs(size_a - size_b * n_a / max(n_b, 1)) >= floor:
        return "shrank"
    return "steady"


def _topics(
    old: Collection,
    new: Collection,
    ids_a: list[str],
    vec_a: np.ndarray,
    ids_b: list[str],
    vec_b: np.ndarray,
    added: list[str],
    k: int | None,
    seed: int,
) -> tuple[list[TopicChange], np.ndarray, np.ndarray, np.ndarray]:
    """(topics, centroids, labels of a's rows, labels of b's rows)."""
    added_set = set(added)
    new_rows = np.fromiter((i in added_set for i in ids_b), dtype=bool, count=len(ids_b))
    pool = np.concatenate([vec_a, vec_b[new_rows]]) if len(ids_a) else vec_b
    n_pool = len(pool)
    k = _default_k(n_pool) if k is None else k
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInputError(f"clusters must be a positive integer, got {k!r}.")
    if n_pool < max(2 * k, 4):
        empty = np.zeros(0, dtype=np.int64)
        return [], np.zeros((0, pool.shape[1] if pool.ndim == 2 else 0)), empty, empty
    rng = np.random.default_rng(seed)
    fit = pool if n_pool <= FIT_SAMPLE else pool[np.sort(rng.choice(n_pool, FIT_SAMPLE, False))]
    centroids, _ = spherical_kmeans(fit, k, seed=seed)
    lab_a = np.argmax(vec_a @ centroids.T, axis=1) if len(vec_a) else np.zeros(0, np.int64)
    lab_b = np.argmax(vec_b @ centroids.T, axis=1) if len(vec_b) else np.zeros(0, np.int64)
    size_a = np.bincount(lab_a, minlength=k)
    size_b = np.bincount(lab_b, minlength=k)
    # number topics by their size in the newer version (0 = largest)
    order = sorted(range(k), key=lambda c: (-size_b[c], -size_a[c], c))
    remap = np.empty(k, dtype=np.int64)
    remap[order] = np.arange(k)
    lab_a, lab_b = remap[lab_a], remap[lab_b]
    centroids = centroids[order]
    size_a, size_b = size_a[order], size_b[order]

    # labels: a sample of each topic's texts, from both versions
    label_ids: list[tuple[Collection, str]] = []
    label_lab: list[int] = []
    for c in range(k):
        rows_b = np.flatnonzero(lab_b == c)
        rows_a = np.flatnonzero(lab_a == c)
        take_b = rows_b if len(rows_b) <= LABEL_SAMPLE else rng.choice(rows_b, LABEL_SAMPLE, False)
        left = max(0, LABEL_SAMPLE - len(take_b))
        take_a = rows_a if len(rows_a) <= left else rng.choice(rows_a, left, False)
        label_ids += [(new, ids_b[i]) for i in take_b] + [(old, ids_a[i]) for i in take_a]
        label_lab += [c] * (len(take_b) + len(take_a))
    texts = _texts(label_ids)
    keywords = ctfidf_keywords(texts, np.asarray(label_lab, dtype=np.int64), k, 6)

    out = []
    for c in range(k):
        members_new = np.flatnonzero((lab_b == c) & new_rows)
        change = _classify(int(size_a[c]), int(size_b[c]), len(ids_a), len(ids_b))
        # what a topic is about: for one that gained, its new documents nearest the centre
        gained = change in ("appeared", "grew") and len(members_new)
        shown = members_new if gained else np.flatnonzero(lab_b == c)
        best = shown[np.argsort(-(vec_b[shown] @ centroids[c]), kind="stable")[:3]]
        examples = [_clip(t, 160) for t in _texts([(new, ids_b[i]) for i in best])]
        if not len(shown):  # vanished: show what it was
            rows_a = np.flatnonzero(lab_a == c)
            best = rows_a[np.argsort(-(vec_a[rows_a] @ centroids[c]), kind="stable")[:3]]
            examples = [_clip(t, 160) for t in _texts([(old, ids_a[i]) for i in best])]
        out.append(
            TopicChange(
                topic=c,
                change=change,
                keywords=keywords[c],
                size_a=int(size_a[c]),
                size_b=int(size_b[c]),
                share_a=float(size_a[c] / max(1, len(ids_a))),
                share_b=float(size_b[c] / max(1, len(ids_b))),
                added=len(members_new),
                examples=examples,
            )
        )
    return out, centroids, lab_a, lab_b


def _texts(refs: list[tuple[Collection, str]]) -> list[str]:
    """Texts of (view, id) pairs, fetched per view in one call each, in the order given."""
    out: list[str] = [""] * len(refs)
    by_view: dict[int, tuple[Collection, list[int]]] = {}
    for pos, (view, _) in enumerate(refs):
        by_view.setdefault(id(view), (view, []))[1].append(pos)
    for view, positions in by_view.values():
        docs = view.get([refs[p][1] for p in positions])
        for p, d in zip(positions, docs):
            out[p] = d.text
    return out


def _centroid(vectors: np.ndarray) -> np.ndarray:
    c = vectors.astype(np.float64).sum(axis=0) if len(vectors) else np.zeros(1)
    return c / max(float(np.linalg.norm(c)), 1e-12)


def _probes(old: Collection, new: Collection, probes: Sequence[str], k: int) -> list[ProbeChange]:
    queries = list(probes)
    for i, q in enumerate(queries):
        if not isinstance(q, str) or not q.strip():
            raise InvalidInputError(f"probes[{i}] must be a non-empty text, got {q!r}.")
    if not queries:
        return []
    res_a = old.batch_search(queries, k)  # each version answers as it did then
    res_b = new.batch_search(queries, k)
    out = []
    for q, ha, hb in zip(queries, res_a, res_b):
        top_a, top_b = [h.id for h in ha], [h.id for h in hb]
        inter = len(set(top_a) & set(top_b))
        out.append(
            ProbeChange(
                query=q,
                overlap=inter / k,
                changed=top_a != top_b,
                entered=[i for i in top_b if i not in top_a],
                left=[i for i in top_a if i not in top_b],
                top_a=top_a,
                top_b=top_b,
            )
        )
    return out


def diff_views(
    old: Collection,
    new: Collection,
    *,
    probes: Sequence[str] | None = None,
    k: int = 10,
    clusters: int | None = None,
    map_path: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> VersionDiff:
    """Compare two views of one collection (see the module notes for every measure)."""
    import time

    t0 = time.perf_counter()
    k = check_k(k)
    if isinstance(probes, str):
        probes = [probes]
    ids_a, vec_a = old.select()
    ids_b, vec_b = new.select()
    added, removed, changed_text, changed_meta = _rows_diff(old, new, ids_a, ids_b)
    notes = []
    c_a, c_b = _centroid(vec_a), _centroid(vec_b)
    cosine = float(c_a @ c_b) if len(vec_a) and len(vec_b) else 0.0
    toward: list[str] = []
    if len(vec_b) and len(vec_a):
        direction = c_b - c_a
        if float(np.linalg.norm(direction)) > 1e-9:
            added_set = set(added)
            pool = [i for i, x in enumerate(ids_b) if x in added_set]
            rows = np.asarray(pool if pool else range(len(ids_b)), dtype=np.int64)
            best = rows[np.argsort(-(vec_b[rows] @ direction), kind="stable")[:3]]
            toward = [_clip(t, 160) for t in _texts([(new, ids_b[i]) for i in best])]
    topics, centroids, lab_a, lab_b = _topics(
        old, new, ids_a, vec_a, ids_b, vec_b, added, clusters, seed
    )
    if not topics:
        notes.append("too few documents to cluster; no topic movement reported")
    result = VersionDiff(
        a=old.version,
        b=new.version,
        count_a=len(ids_a),
        count_b=len(ids_b),
        added=added,
        removed=removed,
        changed_text=changed_text,
        changed_metadata=changed_meta,
        centroid_cosine=cosine,
        toward=toward,
        topics=topics,
        probes=_probes(old, new, probes or [], k),
        k=k,
        notes=notes,
    )
    if map_path is not None:
        from .diffmap import draw_diff_map

        result.map = draw_diff_map(
            map_path,
            result,
            ids_a=ids_a,
            vec_a=vec_a,
            lab_a=lab_a,
            ids_b=ids_b,
            vec_b=vec_b,
            lab_b=lab_b,
            title=f"{new.name}: version {old.version} → {new.version}",
            seed=seed,
        )
    result.seconds = time.perf_counter() - t0
    return result
