"""Concepts cluster: spherical k-means with FAISS, automatic k, c-TF-IDF labels, outliers.

* **k-means** — ``faiss.Kmeans(spherical=True)`` on the unit vectors (centroids re-normalised
  each iteration, so assignment is by cosine), seeded, on the GPU when FAISS sees one.
  Trained on up to ~100,000 documents (a seeded sample beyond that), then every document is
  assigned.
* **Automatic k** (``k=None``) — each ``k`` in ``k_range`` (default 2 to
  ``min(20, ceil(sqrt(n)))``) is clustered and scored by the mean cosine **silhouette** on a
  fixed random sample of at most 2,000 documents; the best-scoring ``k`` wins (ties: the
  smaller ``k``). The scores are returned, so the choice can be inspected.
* **Labels** — class-based TF-IDF (c-TF-IDF, as in BERTopic): scikit-learn's
  ``CountVectorizer`` (English stop words removed) counts words per cluster;
  ``weight(t, c) = tf(t, c) * log(1 + A / f(t))`` with ``tf`` the term's share of the
  cluster's words, ``A`` the mean number of words per cluster and ``f(t)`` the term's count
  over all clusters. At most 1,000 members per cluster are read for labels.
  For a word list (every text a single word, e.g. a Vocabulary), and for clusters without
  any distinctive word, the keywords are the members closest to the cluster centroid.
* **Medoid** — the member with the highest cosine to the cluster's vector sum, which is
  exactly the member minimising the summed cosine distance to the others.
* **Outliers** — two scores. ``atypical`` (the default from 1,000 documents): a document's
  cosine distance to its ``m``-th nearest document in a random sample of 2,000, ``m`` being
  2 % of the sample. It finds off-topic *groups*, which hide from a near-neighbour score
  because their members are each other's neighbours. ``neighbors``: a document's cosine
  distance to its ``neighbors``-th nearest other document (exact search up to 20,000
  documents, an IVF index above): local isolation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import durable
from ..errors import EmbedSearchError, InvalidInputError
from ..types import Hit

if TYPE_CHECKING:
    from ..base import CollectionBase, Selection

log = logging.getLogger(__name__)

SILHOUETTE_SAMPLE = 2000
K_MAX_DEFAULT = 20
TRAIN_CAP = 100_000
LABEL_DOCS_PER_CLUSTER = 1000
#: Rows read and scored at a time by the passes over every document (24 MB at 384 dims).
CHUNK_ROWS = 16_384
#: Passes over at least this many rows show a progress bar (on a terminal).
PROGRESS_MIN_ROWS = 100_000
EXACT_OUTLIER_LIMIT = 20_000
#: ``atypical`` outlier score: the random sample it measures against, and the share of it
#: whose nearest members are passed over. 1 % SciFact abstracts planted among headlines:
#: precision@planted 0.67 at 10k and 0.72 at 100k, against 0.20 and 0.08 for the 10th
#: neighbour's distance (docs/latent.md). Shares of 0.5-1 % missed more of the planted
#: groups; a principal-subspace residual scored 0.49-0.62.
ATYPICAL_SAMPLE = 2000
ATYPICAL_SHARE = 0.02
#: Below this many documents ``auto`` scores by neighbours: 2 % of a small sample is a rank
#: of a few documents, no wider than a neighbour score (3 planted among the demo corpus's
#: topics: the sampled score missed them in 3 of 4 mixes).
ATYPICAL_MIN_DOCS = 1000
OUTLIER_METHODS = ("auto", "atypical", "neighbors")
SUMMARY_DIR = Path("derived") / "clusters"


# ----------------------------------------------------------------------------- results
@dataclass
class Cluster:
    """One cluster of a :class:`Clustering`.

    Attributes:
        id: the cluster number (0 is the largest cluster).
        size: number of members.
        ids: member document ids, in storage order.
        medoid_id / medoid_text: the most central member (see module notes).
        keywords: top c-TF-IDF words, best first.
        cohesion: mean cosine of the members to the cluster's centroid direction.
    """

    id: int
    size: int
    ids: list[str]
    medoid_id: str
    medoid_text: str
    keywords: list[str]
    cohesion: float

    @property
    def label(self) -> str:
        """A short human label: the top three keywords (or ``cluster N``)."""
        return ", ".join(self.keywords[:3]) if self.keywords else f"cluster {self.id}"

    def to_dict(self, include_ids: bool = True) -> dict[str, Any]:
        out = {
            "id": self.id,
            "size": self.size,
            "label": self.label,
            "keywords": self.keywords,
            "medoid_id": self.medoid_id,
            "medoid_text": self.medoid_text,
            "cohesion": round(self.cohesion, 4),
        }
        if include_ids:
            out["ids"] = self.ids
        return out


@dataclass
class Clustering:
    """The result of :meth:`Collection.cluster <embedsearch.latent.LatentMixin.cluster>`.

    Attributes:
        k: number of clusters.
        clusters: the clusters, largest first.
        ids: the clustered documents (storage order); ``labels[i]`` is the cluster of
            ``ids[i]``.
        labels: cluster number per document (int array).
        centroids: unit centroid vectors, shape ``(k, dim)``.
        seed: the seed used.
        criterion: how ``k`` was chosen, in words.
        silhouette: mean cosine silhouette of the result on the sample (None if undefined).
        scores: silhouette per ``k`` tried (automatic ``k`` only).
        persisted_field: metadata field the cluster numbers were written to, if any.
    """

    k: int
    clusters: list[Cluster]
    ids: list[str]
    labels: np.ndarray
    centroids: np.ndarray
    seed: int
    criterion: str
    silhouette: float | None = None
    scores: dict[int, float] = field(default_factory=dict)
    persisted_field: str | None = None

    def assignments(self) -> dict[str, int]:
        """Document id → cluster number."""
        return dict(zip(self.ids, (int(x) for x in self.labels)))

    def to_dict(self, include_ids: bool = False) -> dict[str, Any]:
        return {
            "k": self.k,
            "seed": self.seed,
            "criterion": self.criterion,
            "silhouette": None if self.silhouette is None else round(self.silhouette, 4),
            "scores": {str(k): round(v, 4) for k, v in self.scores.items()},
            "documents": len(self.ids),
            "persisted_field": self.persisted_field,
            "clusters": [c.to_dict(include_ids) for c in self.clusters],
        }


# ----------------------------------------------------------------------------- k-means
def _use_gpu() -> bool:
    try:
        import faiss

        return faiss.get_num_gpus() > 0
    except Exception:  # pragma: no cover - faiss builds without GPU support
        return False


def spherical_kmeans(
    vectors: np.ndarray, k: int, *, seed: int = 0, niter: int = 25, nredo: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means with FAISS: unit centroids, assignment by cosine.

    Args:
        vectors: ``(n, dim)`` unit vectors, ``n >= k``.
        k: number of clusters.
        seed: FAISS's seed (initialisation and training sample): same input, same output.
        niter / nredo: iterations, and restarts (the best objective is kept).

    Returns:
        ``(centroids, labels)``: ``(k, dim)`` float32 unit vectors and an int64 label per row.

    Raises:
        InvalidInputError: fewer vectors than clusters, or k < 1.
    """
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}.")
    if n < k:
        raise InvalidInputError(f"cannot make {k} clusters from {n} documents; use k <= {n}.")
    if k == 1:
        c = x.sum(0, keepdims=True)
        c /= max(float(np.linalg.norm(c)), 1e-12)
        return c.astype(np.float32), np.zeros(n, dtype=np.int64)
    kwargs = dict(
        niter=niter,
        nredo=nredo,
        spherical=True,
        seed=int(seed) % (2**31),
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=max(256, math.ceil(TRAIN_CAP / k)),
    )
    gpu = _use_gpu()
    try:
        km = faiss.Kmeans(x.shape[1], int(k), gpu=gpu, **kwargs)
        km.train(x)
    except Exception as exc:  # a GPU that cannot be used: fall back to the CPU
        if not gpu:
            raise
        log.warning("GPU k-means failed (%s); using the CPU", exc)
        km = faiss.Kmeans(x.shape[1], int(k), gpu=False, **kwargs)
        km.train(x)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    labels = np.argmax(x @ centroids.T, axis=1).astype(np.int64)
    return centroids, labels


def by_size(labels: np.ndarray, k: int) -> tuple[np.ndarray, list[int]]:
    """``labels`` (0..k-1) renumbered so 0 is the largest cluster (ties: the one whose first
    member comes first), and the order: new number ``i`` is old cluster ``order[i]``."""
    sizes = np.bincount(labels, minlength=k)
    first = np.full(k, len(labels))
    np.minimum.at(first, labels, np.arange(len(labels)))
    order = sorted(range(k), key=lambda c: (-sizes[c], first[c]))
    mapping = np.empty(k, dtype=np.int64)
    mapping[order] = np.arange(k)
    return mapping[labels], order


def silhouette(vectors: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean cosine silhouette (scikit-learn), or None when undefined (one cluster, or n=k)."""
    from sklearn.metrics import silhouette_score

    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(labels):
        return None
    return float(silhouette_score(vectors, labels, metric="cosine"))


def choose_k(
    vectors: Any, k_range: tuple[int, int], *, seed: int = 0
) -> tuple[int, dict[int, float]]:
    """The ``k`` in ``k_range`` with the best cosine silhouette on a fixed sample.

    ``vectors``: an array or a collection's row view; k-means trains on
    :func:`training_rows` and only the silhouette sample is assigned, so a million rows are
    never copied or scored whole.

    Returns:
        ``(best_k, {k: silhouette})``.
    """
    n = len(vectors)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, SILHOUETTE_SAMPLE), replace=False))
    train = training_rows(vectors, seed)
    xs = np.asarray(vectors[sample], dtype=np.float32)
    scores: dict[int, float] = {}
    ks = range(k_range[0], k_range[1] + 1)
    with _progress(len(ks), "choosing k", "k", rows=n) as bar:
        for k in ks:
            centroids, _ = spherical_kmeans(train, k, seed=seed)
            score = silhouette(xs, np.argmax(xs @ centroids.T, axis=1))
            if score is not None:
                scores[k] = score
            bar.update(1)
    if not scores:
        raise InvalidInputError(
            f"no k in {k_range[0]}..{k_range[1]} gave a usable clustering of {n} documents; "
            "pass k explicitly."
        )
    best = max(scores, key=lambda kk: (round(scores[kk], 6), -kk))
    return best, scores


def training_rows(vectors: Any, seed: int = 0, cap: int | None = None) -> np.ndarray:
    """The rows k-means trains on, as one float32 array: all of ``vectors`` up to ``cap``
    (default :data:`TRAIN_CAP`), else ``cap`` seeded rows (FAISS would subsample as much
    itself, after a full copy)."""
    n = len(vectors)
    cap = TRAIN_CAP if cap is None else cap
    if n <= cap:
        return np.ascontiguousarray(vectors[:n], dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def chunks(n: int, rows: int | None = None, desc: str | None = None) -> Iterator[tuple[int, int]]:
    """``(lo, hi)`` bounds of consecutive blocks of at most ``rows`` (default
    :data:`CHUNK_ROWS`) of ``n`` rows; with ``desc``, a progress bar of the rows on a
    terminal's stderr for passes of :data:`PROGRESS_MIN_ROWS` or more (a pass over 1M rows
    takes 5-20 s)."""
    step = CHUNK_ROWS if rows is None else rows
    with _progress(n, desc, "doc") as bar:
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            yield lo, hi
            bar.update(hi - lo)


@contextlib.contextmanager
def _progress(total: int, desc: str | None, unit: str, rows: int | None = None) -> Iterator[Any]:
    """A tqdm bar for long whole-collection work (``rows``: the size that makes it long,
    default ``total``), shown only on a terminal: servers and logs get no bar lines."""
    from tqdm.auto import tqdm

    show = (
        desc is not None
        and (total if rows is None else rows) >= PROGRESS_MIN_ROWS
        and sys.stderr.isatty()
    )
    bar = tqdm(total=total, desc=desc, unit=unit, disable=not show, mininterval=1.0)
    try:
        yield bar
    finally:
        bar.close()


def assign(vectors: Any, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest centroid by cosine, and the float64 sum of each centroid's rows,
    one block of rows at a time (``vectors``: an array or a collection's row view).

    Returns:
        ``(labels, sums)``: an int64 label per row and a ``(k, dim)`` float64 array.
    """
    n, k = len(vectors), len(centroids)
    labels = np.empty(n, dtype=np.int64)
    sums = np.zeros((k, centroids.shape[1]), dtype=np.float64)
    for lo, hi in chunks(n, desc="assigning documents"):
        x = np.asarray(vectors[lo:hi], dtype=np.float32)
        lab = np.argmax(x @ centroids.T, axis=1)
        labels[lo:hi] = lab
        sums += leaf_sums_of(x, lab, k)
    return labels, sums


def leaf_sums_of(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The float64 sum of the rows of ``x`` per label (``(k, dim)``), by sorting the rows
    and one ``np.add.reduceat`` (``np.add.at`` took 7 s of a 1M-row pass)."""
    out = np.zeros((k, x.shape[1]))
    if not len(labels):
        return out
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    out[sorted_labels[starts]] = np.add.reduceat(x[order].astype(np.float64), starts)
    return out


def default_k_range(n: int) -> tuple[int, int]:
    """``(2, min(20, ceil(sqrt(n)), n - 1))``: the ks tried when none is given."""
    return 2, max(2, min(K_MAX_DEFAULT, math.ceil(math.sqrt(n)), n - 1))


# ----------------------------------------------------------------------------- labels
def ctfidf_keywords(
    texts: list[str], labels: np.ndarray, k: int, n_keywords: int = 6
) -> list[list[str]]:
    """Top words per cluster by class-based TF-IDF (see module notes).

    Args:
        texts: document texts.
        labels: cluster number of each text (0..k-1).
        k: number of clusters.
        n_keywords: words per cluster.

    Returns:
        One keyword list per cluster (empty where a cluster has no countable words).
    """
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer

    if not texts or n_keywords < 1:
        return [[] for _ in range(k)]
    counts = None
    for min_df in (2, 1) if len(texts) >= 100 else (1,):  # words seen twice, if there are any
        vectorizer = CountVectorizer(
            stop_words="english",
            lowercase=True,
            token_pattern=r"(?u)\b[^\W\d_][^\W\d_]+\b",  # words of 2+ letters, no digits
            min_df=min_df,
        )
        try:
            counts = vectorizer.fit_transform(texts)
            break
        except ValueError:  # no term left: only stop words / numbers, or all too rare
            continue
    if counts is None:
        return [[] for _ in range(k)]
    onehot = sparse.csr_matrix(
        (np.ones(len(labels)), (np.asarray(labels), np.arange(len(labels)))), shape=(k, len(texts))
    )
    per_class = np.asarray((onehot @ counts).todense(), dtype=np.float64)  # (k, terms)
    words_per_class = per_class.sum(axis=1, keepdims=True)
    tf = per_class / np.maximum(words_per_class, 1.0)
    avg_words = float(words_per_class.mean())
    idf = np.log(1.0 + avg_words / np.maximum(per_class.sum(axis=0), 1.0))
    weights = tf * idf
    vocab = vectorizer.get_feature_names_out()
    out = []
    for c in range(k):
        order = np.argsort(-weights[c], kind="stable")[:n_keywords]
        out.append([str(vocab[j]) for j in order if weights[c, j] > 0])
    return out


# ----------------------------------------------------------------------------- collection
def cluster_collection(
    col: CollectionBase,
    k: int | None = None,
    *,
    seed: int = 0,
    k_range: tuple[int, int] | None = None,
    persist: bool = False,
    field: str = "cluster",
    where: dict[str, Any] | None = None,
    n_keywords: int = 6,
) -> Clustering:
    """Cluster a collection's documents (see the module notes for every choice).

    Args:
        col: the collection.
        k: number of clusters, or None to choose it by silhouette over ``k_range``.
        seed: seed for k-means and every sample: same collection and seed, same clusters.
        k_range: ``(k_min, k_max)``, inclusive, for automatic ``k``.
        persist: write ``{field: cluster number}`` into each clustered document's metadata
            (one upsert; texts and vectors unchanged) and a summary (labels, medoids) under
            ``<collection>/derived/clusters/<field>.json``.
        field: the metadata field for ``persist``.
        where: cluster only the documents matching this filter.
        n_keywords: keywords per cluster.

    Returns:
        A :class:`Clustering`.

    Raises:
        InvalidInputError: fewer documents than clusters, a bad k or k_range, a bad field.
            Nothing is written unless the clustering succeeded.
    """
    if persist:
        _check_field(field)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InvalidInputError(f"seed must be an integer, got {seed!r}.")
    if isinstance(n_keywords, bool) or not isinstance(n_keywords, int) or n_keywords < 0:
        raise InvalidInputError(f"n_keywords must be a non-negative integer, got {n_keywords!r}.")
    state = col.state_key
    with col.selection(where) as chosen:  # rows read on demand (no other call inside)
        result = _cluster(col.name, chosen, k, seed, k_range, where, n_keywords)
    if persist:
        if col.state_key != state:
            raise EmbedSearchError(
                f"collection {col.name!r} changed while it was being clustered; nothing was "
                "written. Run the clustering again."
            )
        _persist(col, result, field)
        result.persisted_field = field
    return result


def _cluster(
    name: str,
    chosen: Selection,
    k: int | None,
    seed: int,
    k_range: tuple[int, int] | None,
    where: dict[str, Any] | None,
    n_keywords: int,
) -> Clustering:
    """:func:`cluster_collection` over one snapshot's chosen rows. Memory stays near the
    training sample whatever the size: k-means trains on at most :data:`TRAIN_CAP` rows,
    and every row is assigned and summed a block at a time (at 1M rows the whole-array
    version held 6.3 GB)."""
    vectors = chosen.vectors
    n = chosen.count
    if n == 0:
        raise InvalidInputError(
            f"collection {name!r} has no documents"
            + (" matching the filter" if where is not None else "")
            + " to cluster."
        )
    scores: dict[int, float] = {}
    if k is None:
        if n < 3:
            raise InvalidInputError(
                f"choosing k needs at least 3 documents ({n} here); pass k explicitly."
            )
        lo, hi = k_range if k_range is not None else default_k_range(n)
        if not (isinstance(lo, int) and isinstance(hi, int) and 2 <= lo <= hi):
            raise InvalidInputError(
                f"k_range must be (k_min, k_max) with 2 <= k_min <= k_max, got {k_range!r}."
            )
        if hi >= n:
            raise InvalidInputError(
                f"k_range goes up to {hi} but there are only {n} documents; use k_max < {n}."
            )
        k, scores = choose_k(vectors, (lo, hi), seed=seed)
        sample = min(n, SILHOUETTE_SAMPLE)
        criterion = f"best mean cosine silhouette on {sample:,} sampled documents over k={lo}..{hi}"
    else:
        criterion = "given"
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}.")
        if n < k:
            raise InvalidInputError(f"cannot make {k} clusters from {n} documents; use k <= {n}.")
    k = int(k)
    centroids, _ = spherical_kmeans(training_rows(vectors, seed), k, seed=seed)
    labels, sums = assign(vectors, centroids)
    labels, order = by_size(labels, k)  # cluster 0 the largest
    sums = sums[order]
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    centroids = np.where(norms > 1e-12, sums / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
    if scores:
        sil = scores.get(k)
    else:  # on the sample choose_k would have scored
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, size=min(n, SILHOUETTE_SAMPLE), replace=False))
        sil = silhouette(np.asarray(vectors[sample], dtype=np.float32), labels[sample])
    ids = chosen.ids(np.arange(n))
    clusters = _describe(chosen, ids, labels, k, centroids, sums, n_keywords, seed)
    return Clustering(
        k=k,
        clusters=clusters,
        ids=ids,
        labels=labels,
        centroids=centroids,
        seed=int(seed),
        criterion=criterion,
        silhouette=sil,
        scores=scores,
    )


def _describe(
    chosen: Selection,
    ids: list[str],
    labels: np.ndarray,
    k: int,
    centroids: np.ndarray,
    sums: np.ndarray,
    n_keywords: int,
    seed: int,
) -> list[Cluster]:
    """Each cluster's medoid (the member with the highest cosine to the cluster's vector
    sum), cohesion, keywords and members; every row scored in one blocked pass."""
    n = len(labels)
    to_sum = np.empty(n, dtype=np.float64)  # each row's dot product with its cluster's sum
    for lo, hi in chunks(n, desc="scoring medoids"):
        x = np.asarray(chosen.vectors[lo:hi], dtype=np.float32)
        to_sum[lo:hi] = np.einsum("ij,ij->i", x.astype(np.float64), sums[labels[lo:hi]])
    norms = np.linalg.norm(sums, axis=1)
    cos = to_sum / np.maximum(norms[labels], 1e-12)  # cosine to the cluster's centroid
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels == c) for c in range(k)]
    medoids = []
    label_rows: list[int] = []
    for m in members:
        medoids.append(int(m[np.argmax(to_sum[m])]))
        take = (
            m
            if len(m) <= LABEL_DOCS_PER_CLUSTER
            else np.sort(rng.choice(m, LABEL_DOCS_PER_CLUSTER, replace=False))
        )
        label_rows.extend(take.tolist())
    text_of = dict(zip(label_rows, chosen.texts(np.asarray(label_rows, dtype=np.int64))))
    text_of.update(zip(medoids, chosen.texts(np.asarray(medoids, dtype=np.int64))))
    texts = [text_of[i] for i in label_rows]
    wordlist = all(len(t.split()) == 1 for t in texts)  # e.g. a Vocabulary: no word counts
    keywords = (
        [[] for _ in range(k)]
        if wordlist
        else ctfidf_keywords(texts, labels[label_rows], k, n_keywords)
    )
    out = []
    for c, m in enumerate(members):
        cohesion = float(np.mean(cos[m])) if len(m) else 0.0
        if not keywords[c] and n_keywords:  # no distinctive words: the most central members
            central = m[np.argsort(-cos[m], kind="stable")[:n_keywords]]
            keywords[c] = [t[:40] for t in chosen.texts(central)]
        out.append(
            Cluster(
                id=c,
                size=len(m),
                ids=[ids[i] for i in m],
                medoid_id=ids[medoids[c]],
                medoid_text=text_of[medoids[c]],
                keywords=keywords[c],
                cohesion=cohesion,
            )
        )
    return out


def _check_field(name: Any) -> None:
    if not isinstance(name, str) or not name or name.startswith("$") or "." in name:
        raise InvalidInputError(
            f"field must be a plain metadata key (no '.', not starting with '$'), got {name!r}."
        )


def _persist(col: CollectionBase, result: Clustering, field: str) -> None:
    """Write cluster numbers into metadata (upsert: vectors kept) and a JSON summary."""
    docs = col.get(result.ids)
    col.upsert(
        [d.text for d in docs],
        ids=result.ids,
        metadata=[{**(d.metadata or {}), field: int(c)} for d, c in zip(docs, result.labels)],
    )
    summary = {
        "field": field,
        "state_key": col.state_key,
        **result.to_dict(include_ids=False),
    }
    data = json.dumps(summary, ensure_ascii=False, indent=1).encode("utf-8")
    durable.write_file(Path(col.path), SUMMARY_DIR / f"{field}.json", data, create_dirs=True)


def read_summary(col: CollectionBase, field: str = "cluster") -> dict[str, Any] | None:
    """The summary a persisted clustering left for ``field`` (labels per cluster), if any."""
    try:
        raw = durable.read_bytes(Path(col.path), SUMMARY_DIR / f"{field}.json")
        return json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, EmbedSearchError):
        return None


# ----------------------------------------------------------------------------- outliers
def outlier_scores(vectors: np.ndarray, neighbors: int = 10) -> np.ndarray:
    """Cosine distance of each vector to its ``neighbors``-th nearest *other* vector.

    Exact (``IndexFlatIP``) up to 20,000 vectors; above, an ``IVF{4 sqrt n},Flat`` index
    searched with ``nprobe=32`` (approximate: a few neighbours may be missed, which can only
    overstate a distance).

    Raises:
        InvalidInputError: ``neighbors`` is not in [1, n - 1].
    """
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = x.shape[0]
    if isinstance(neighbors, bool) or not isinstance(neighbors, (int, np.integer)):
        raise InvalidInputError(f"neighbors must be an integer, got {neighbors!r}.")
    if not 1 <= neighbors <= n - 1:
        raise InvalidInputError(
            f"neighbors={neighbors} needs at least {neighbors + 1} documents ({n} here); use "
            f"neighbors between 1 and {max(n - 1, 1)}."
        )
    if n <= EXACT_OUTLIER_LIMIT:
        index = faiss.IndexFlatIP(x.shape[1])
    else:
        nlist = int(4 * math.sqrt(n))
        index = faiss.index_factory(x.shape[1], f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        index.train(x[np.random.default_rng(0).choice(n, min(n, 64 * nlist), replace=False)])
        index.nprobe = 32
    index.add(x)
    sims, pos = index.search(x, neighbors + 1)
    is_self = pos == np.arange(n)[:, None]
    has_self = is_self.any(axis=1)
    # drop the row's own entry (usually first; later among exact duplicates); rows where self
    # was not returned drop their last entry instead
    keep = ~is_self
    keep[~has_self, -1] = False
    # every row keeps exactly `neighbors` entries, best first: the k-th is the last one
    kth_sim = sims[keep].reshape(n, neighbors)[:, -1].astype(np.float64)
    found = pos[keep].reshape(n, neighbors)[:, -1] >= 0
    kth_sim = np.where(found & np.isfinite(kth_sim), kth_sim, -1.0)
    return (1.0 - np.clip(kth_sim, -1.0, 1.0)).astype(np.float64)


def atypical_scores(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """Cosine distance of each vector to its ``m``-th nearest document in a seeded random
    sample of :data:`ATYPICAL_SAMPLE` (itself excluded), ``m`` being
    :data:`ATYPICAL_SHARE` of the sample: a neighbour distance at the scale of 2 % of the
    collection (higher = more atypical).

    A group of off-topic documents hides from a near-neighbour score (its members are each
    other's neighbours) but is too small to fill 2 % of the sample, so its members are
    measured against the documents beyond it. Cost: one (n x sample) product, read one
    block of 8,192 rows at a time (``vectors`` may be any array-like that slices).

    Raises:
        InvalidInputError: fewer than 2 vectors.
    """
    n = vectors.shape[0]
    if n < 2:
        raise InvalidInputError(f"outliers need at least 2 documents ({n} here).")
    picked = np.sort(
        np.random.default_rng(seed).choice(n, size=min(n, ATYPICAL_SAMPLE), replace=False)
    )
    rank = min(len(picked) - 1, max(1, round(ATYPICAL_SHARE * len(picked))))
    sample = np.asarray(vectors[picked], dtype=np.float32)
    out = np.empty(n, dtype=np.float64)
    for lo in range(0, n, 8192):  # (block x sample) similarities, each row's own excluded
        # one block read at a time: ``vectors`` may be rows read on demand (RowsView)
        sims = np.asarray(vectors[lo : lo + 8192], dtype=np.float32) @ sample.T
        own = np.flatnonzero((picked >= lo) & (picked < lo + 8192))
        sims[picked[own] - lo, own] = -np.inf
        # the rank-th largest, selected in place from the top (selecting the rank-th
        # smallest of the negated copy took 2.6x as long: 0.11 s of a 0.29 s block at 1M)
        sims.partition(len(picked) - rank, axis=1)
        kth = sims[:, len(picked) - rank]
        out[lo : lo + 8192] = 1.0 - np.clip(kth, -1.0, 1.0)
    return out


def find_outliers(
    col: CollectionBase,
    n: int = 20,
    *,
    method: str = "auto",
    neighbors: int | None = None,
    where: dict[str, Any] | None = None,
) -> list[Hit]:
    """The ``n`` most atypical (or most isolated) documents, as Hits whose score is the
    outlier score of ``method`` (``auto``: ``neighbors`` when ``neighbors`` is given or
    fewer than :data:`ATYPICAL_MIN_DOCS` documents are considered, else ``atypical``; see
    :func:`atypical_scores` and :func:`outlier_scores`).

    Raises:
        InvalidInputError: ``n`` larger than the documents considered, bad ``neighbors`` or
            ``method``.
    """
    if method not in OUTLIER_METHODS:
        raise InvalidInputError(
            f"method must be one of {', '.join(OUTLIER_METHODS)}, not {method!r}."
        )
    if method == "atypical" and neighbors is not None:
        raise InvalidInputError(
            "neighbors applies to method='neighbors' only; drop it or use that method."
        )
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidInputError(f"n must be a positive integer, got {n!r}.")
    with col.selection(where) as chosen:  # rows read on demand (no other call inside)
        count = chosen.count
        if n > count:
            raise InvalidInputError(
                f"n={n} but only {count} documents "
                + ("match the filter" if where is not None else f"are in {col.name!r}")
                + f"; ask for at most {count}."
            )
        by_neighbors = method == "neighbors" or (
            method == "auto" and (neighbors is not None or count < ATYPICAL_MIN_DOCS)
        )
        if by_neighbors:  # an index over every chosen vector: they are read whole
            vectors = np.asarray(chosen.vectors, dtype=np.float32)
            scores = outlier_scores(vectors, 10 if neighbors is None else neighbors)
        else:
            scores = atypical_scores(chosen.vectors)
        order = np.argsort(-scores, kind="stable")[:n]
        top_ids = chosen.ids(order)
    docs = col.get(top_ids)
    return [Hit(d.id, float(scores[i]), d.text, d.metadata) for i, d in zip(order, docs)]


__all__ = [
    "Cluster",
    "Clustering",
    "atypical_scores",
    "choose_k",
    "cluster_collection",
    "ctfidf_keywords",
    "default_k_range",
    "find_outliers",
    "outlier_scores",
    "read_summary",
    "silhouette",
    "spherical_kmeans",
]
