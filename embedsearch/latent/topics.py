"""Topic hierarchy: over-cluster, merge the clusters into a tree, cut it at levels a user picks.

How :func:`build_topics` (``col.topics()``) works, and why:

1. **Leaves** — each vector is first smoothed toward its 15 nearest neighbours (six rounds
   of neighbour means, a diffusion over the k-NN graph), then spherical k-means (FAISS,
   :func:`embedsearch.clustering.spherical_kmeans`) into ``m = round(sqrt(n))`` clusters (at
   least 2, at most 256): fine enough to hold the subtopics a person would name, coarse
   enough that every leaf has enough documents for a label. Every document belongs to
   exactly one leaf, so every document is assigned at every level. Above
   :data:`LEAF_SAMPLE` (20,000) documents the leaves are made from a seeded sample of that
   many, and every other document is smoothed once onto the sample (its 15 nearest sampled
   neighbours' smoothed vectors, from an IVF index over the sample's 64 principal
   components) and joins the nearest leaf (:func:`_nearest_leaves`); rows are read a block
   at a time, never copied whole. At 1M documents: 33 s and 0.53 GB peak, against 58 s and
   7.9 GB before; on the 32,000 headlines, top-level V 0.673 (seeds 0-5) with the sample,
   0.637 joining leaves by raw vectors (``docs/latent.md``, "At a million documents").
2. **Tree** — the leaves are merged by exact **Ward** linkage on the means of their
   *smoothed document* vectors (the space the leaves were cut in), weighted by their sizes:
   merging leaves ``a`` and ``b`` costs ``n_a n_b / (n_a + n_b) * |mean_a - mean_b|^2``, the
   increase in the within-topic sum of squares of the documents (a size-blind linkage on
   centroids lets small leaves decide the top of the tree). Beside each mean, the tree that
   chooses the top level also sees the leaf's **word profile** (:func:`leaf_profiles`,
   scaled by :func:`with_words` to the same spread as the means). Measured on three
   labelled corpora of 3,000 documents (``docs/latent.md``): two rounds and a tree on the
   raw means gave a top-level V-measure of 0.51 / 0.64 / 0.69 (AG News / headlines / four
   sources, seeds 0-2), six rounds and the tree on smoothed means 0.59 / 0.66 / 0.70; the
   word profiles 0.583 / 0.675 / 0.807 over seeds 0-4 (before: 0.581 / 0.651 / 0.758).
3. **Top level without k** — each cut of that tree into ``2..min(20, m - 1)`` topics is
   scored by the mean cosine **silhouette of the documents** (a fixed seeded sample of at
   most 3,000); level 0 is the cut with the *fewest* topics whose score is within 5 %
   (:data:`TOP_TOLERANCE`) of the best (on the four-source mix the best silhouette is 6
   topics, 0.129, against 0.125 for 3: nearly a tie, and the 3-topic cut matches the sources
   better, V-measure 0.80 against 0.70). The benchmark (``benchmarks/latent_structure.py``)
   measures the choice on three labelled corpora; the numbers are in ``docs/latent.md``.
4. **Levels** — level 0 is that top cut; the last level is the leaves; levels in between
   are cuts, with topic counts growing geometrically, of a second Ward tree on the means
   alone that merges the leaves within each top topic first (:func:`ward_tree` ``groups``):
   the words made the middle levels' labels less coherent (four sources at 21 topics: NPMI
   0.109 with this, -0.093 with one tree for all levels). All levels are cuts of that tree,
   so they nest: each topic has one parent at the level above.
5. **Labels** — class-based TF-IDF (c-TF-IDF, as BERTopic) over unigrams and *adjacent*
   bigrams (a bigram is two neighbouring words of the text, neither a stop word, so phrases
   are real phrases such as "oil prices"), read from each topic's **core** (the half of its
   members nearest its centroid, :data:`LABEL_CORE`), counting each term once per document.
   A term keeps its weight only in the topic of its level where it weighs most, and must be
   in at least 2 core documents (:func:`label_weights`). On the three benchmark corpora this
   raised NPMI coherence and topic diversity at BERTopic's granularity above BERTopic's
   (``docs/latent.md``). English stop words, HTML entity fragments ("lt", "gt", "quot",
   "amp", "39"...), URL pieces, anything with a digit, and common terms spread evenly over
   the leaves (normalised entropy > 0.8: corpus boilerplate such as the wire tags "ap" and
   "reuters" or weekdays in AG News) never become keywords. A unigram that mostly occurs
   inside one of the topic's top bigrams is shown as that bigram. Beside each label: the
   documents closest to the topic's centroid (medoids).
6. **Outliers** — a document whose cosine to its leaf's centroid is more than 3 robust
   standard deviations (median absolute deviation) below the leaf's median is flagged as an
   outlier. It keeps its topic at every level; the flags are a separate list.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidInputError

LEAVES_MAX = 256
TOP_MAX = 20
SILHOUETTE_SAMPLE = 3000
# the top level takes the fewest topics whose silhouette is within this share of the best
TOP_TOLERANCE = 0.05
LABEL_DOCS_PER_LEAF = 400
# labels read the share of each topic's members nearest its centroid (its core): the fringe
# stays assigned but does not lend the label stray words (measured in docs/latent.md)
LABEL_CORE = 0.5
# a keyword is in at least this many core documents of its topic (when the topic has any such)
KEYWORD_MIN_DOCS = 2
OUTLIER_MADS = 3.0
SMOOTH_NEIGHBORS = 15
SMOOTH_ROUNDS = 6
# a term spread evenly over the leaves (normalised entropy above SPREAD_MAX) and common
# (in more than SPREAD_MIN_SHARE of the documents) is the corpus's boilerplate (news-wire
# tags "ap"/"reuters", weekdays in AG News), not the name of a topic
SPREAD_MAX = 0.8
SPREAD_MIN_SHARE = 0.02
# the leaves' word profiles weigh this much beside their vector means in the tree (equal
# spread at 1.0; 0.5 and 2.0 were measured lower, docs/latent.md)
WORDS_WEIGHT = 1.0
SMOOTH_MAX = 50_000
#: Leaves are made from at most this many documents (a seeded sample of larger sets), then
#: every other document is smoothed onto the sample and joins its nearest leaf
#: (:func:`_nearest_leaves`): at 1M documents the whole-set version held 7.9 GB and took
#: 58 s; smoothing a 50,000 sample took 18 s of its own (an exact 15-NN search), 20,000
#: about 3 s (docs/latent.md, "At a million documents").
LEAF_SAMPLE = 20_000
#: Lists of the sample's IVF index searched for each other document's neighbours, and the
#: principal components that index works in (neighbours for a mean need not be exact).
NEAREST_LEAF_PROBES = 2
NEAREST_LEAF_DIMS = 64
# HTML entity fragments and URL pieces that leak into scraped text (AG News: "#39;s", "&lt;b&gt;")
NOISE_WORDS = frozenset(
    [
        "lt",
        "gt",
        "quot",
        "amp",
        "nbsp",
        "apos",
        "href",
        "http",
        "https",
        "www",
        "com",
        "html",
        "htm",
        "net",
        "org",
        "img",
        "src",
        "br",
        "said",
        "says",
        "say",
        "just",
        "like",
        "ve",
        "ll",
        "re",
        "don",
        "didn",
        "doesn",
        "isn",
        "wasn",
        "aren",
    ]
)
_TOKEN = re.compile(r"[^\W\d_][^\W\d_]+(?:'[^\W\d_]+)?|\S", re.UNICODE)
_WORD = re.compile(r"^[^\W\d_]{2,}$", re.UNICODE)


def stop_words() -> frozenset[str]:
    """Words that never become keywords: English stop words plus :data:`NOISE_WORDS`."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) | NOISE_WORDS


def analyzer(stop: frozenset[str]) -> Any:
    """A CountVectorizer analyzer: kept unigrams and adjacent kept-word bigrams."""

    def analyze(text: str) -> list[str]:
        tokens = [t.lower() for t in _TOKEN.findall(text)]
        tokens = [t.split("'")[0] for t in tokens]  # "obama's" -> "obama"
        keep = [bool(_WORD.match(t)) and t not in stop for t in tokens]
        out = [t for t, k in zip(tokens, keep) if k]
        out += [
            f"{a} {b}"
            for a, b, ka, kb in zip(tokens, tokens[1:], keep, keep[1:])
            if ka and kb and a != b
        ]
        return out

    return analyze


# ----------------------------------------------------------------------------- results
@dataclass
class Topic:
    """One topic at one level.

    Attributes:
        id: topic number within its level (0 is the largest).
        level: the level (0 is the top).
        parent: the topic number at ``level - 1`` that contains it (None at level 0).
        children: topic numbers at ``level + 1`` inside it.
        size: number of documents.
        label: a short name: the top keywords or phrases, joined by ", ".
        keywords: c-TF-IDF keywords and phrases, best first.
        medoids: ``(id, text)`` of the documents closest to the topic's centroid.
        cohesion: mean cosine of the members to the topic's centroid.
    """

    id: int
    level: int
    parent: int | None
    children: list[int]
    size: int
    label: str
    keywords: list[str]
    medoids: list[tuple[str, str]]
    cohesion: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "level": self.level,
            "parent": self.parent,
            "children": self.children,
            "size": self.size,
            "label": self.label,
            "keywords": self.keywords,
            "medoids": [{"id": i, "text": t} for i, t in self.medoids],
            "cohesion": round(self.cohesion, 4),
        }


@dataclass
class TopicLevel:
    """One cut of the topic tree: ``labels[i]`` is the topic of document ``ids[i]``."""

    level: int
    k: int
    labels: np.ndarray
    topics: list[Topic]

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "k": self.k, "topics": [t.to_dict() for t in self.topics]}


@dataclass
class Topics:
    """The result of ``col.topics()``: nested levels over the same documents.

    Attributes:
        ids: the documents (storage order).
        levels: level 0 (the top, fewest topics) to the leaves (most topics).
        outliers: ids of documents far from their leaf's centroid (still assigned).
        criterion: how the top level's topic count was chosen, in words.
        scores: the top-level criterion's score for each topic count tried.
        seed: the seed used.
    """

    ids: list[str]
    levels: list[TopicLevel]
    outliers: list[str]
    criterion: str
    scores: dict[int, float] = field(default_factory=dict)
    seed: int = 0

    def level(self, level: int) -> TopicLevel:
        """One level (``0`` is the top; negative numbers count from the leaves)."""
        n = len(self.levels)
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
            raise InvalidInputError(f"level must be an integer, got {level!r}.")
        if not -n <= level < n:
            raise InvalidInputError(f"level must be between 0 and {n - 1} (or -{n}..-1).")
        return self.levels[int(level)]

    def assignments(self, level: int = 0) -> dict[str, int]:
        """Document id → topic number at ``level``."""
        lv = self.level(level)
        return dict(zip(self.ids, (int(x) for x in lv.labels)))

    def to_dict(self, include_ids: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "documents": len(self.ids),
            "criterion": self.criterion,
            "scores": {str(k): round(v, 4) for k, v in self.scores.items()},
            "seed": self.seed,
            "levels": [lv.to_dict() for lv in self.levels],
            "outliers": self.outliers,
        }
        if include_ids:
            out["ids"] = self.ids
            out["assignments"] = [lv.labels.tolist() for lv in self.levels]
        return out


# ----------------------------------------------------------------------------- tree
def ward_tree(means: np.ndarray, sizes: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Ward linkage of clusters given their document means and sizes (scipy linkage format).

    The merge height is ``sqrt(2 * n_a n_b / (n_a + n_b)) * |mean_a - mean_b|``, which for
    single documents is scipy's Ward; here each leaf enters with its own size.

    ``groups`` (a group number per leaf): leaves of one group are all merged before any two
    groups are, so the cut into as many topics as there are groups is exactly the groups and
    every finer cut splits within them (the top level chosen on one tree, the levels below
    from another).
    """
    m = means.shape[0]
    grp = np.zeros(m, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    mu = means.astype(np.float64).copy()
    sz = sizes.astype(np.float64).copy()
    cluster_id = np.arange(m)
    leaves_in = np.ones(m)
    active = np.ones(m, dtype=bool)
    sq = (mu**2).sum(1)
    d = sq[:, None] + sq[None, :] - 2.0 * mu @ mu.T
    d = np.maximum(d, 0.0) * (2.0 * sz[:, None] * sz[None, :] / (sz[:, None] + sz[None, :]))
    np.fill_diagonal(d, np.inf)
    # a merge across groups waits until every group is one cluster (a merged cluster keeps
    # its group, so which pairs share one never changes)
    within = m - len(np.unique(grp))
    same = grp[:, None] == grp[None, :] if groups is not None else None
    out = np.zeros((m - 1, 4))
    for step in range(m - 1):
        if same is not None and step < within:
            flat = int(np.argmin(np.where(same, d, np.inf)))
        else:
            flat = int(np.argmin(d))
        a, b = divmod(flat, m)
        a, b = min(a, b), max(a, b)
        out[step] = [
            cluster_id[a],
            cluster_id[b],
            math.sqrt(max(d[a, b], 0.0)),
            leaves_in[a] + leaves_in[b],
        ]
        leaves_in[a] += leaves_in[b]
        mu[a] = (sz[a] * mu[a] + sz[b] * mu[b]) / (sz[a] + sz[b])
        sz[a] += sz[b]
        active[b] = False
        cluster_id[a] = m + step
        d[b, :] = np.inf
        d[:, b] = np.inf
        diff = ((mu - mu[a]) ** 2).sum(1)
        row = 2.0 * sz * sz[a] / (sz + sz[a]) * diff
        row[~active] = np.inf
        row[a] = np.inf
        d[a, :] = row
        d[:, a] = row
    # heights of a reducible linkage are monotone; guard rounding so scipy accepts it
    out[:, 2] = np.maximum.accumulate(out[:, 2])
    return out


def smooth(
    x: np.ndarray, neighbors: int = SMOOTH_NEIGHBORS, rounds: int = SMOOTH_ROUNDS
) -> np.ndarray:
    """Each vector replaced by the unit mean of its ``neighbors`` nearest (itself included),
    ``rounds`` times: pulls documents toward their neighbourhood, so leaves and the tree follow
    dense regions rather than single words. Exact FAISS search; each round is one sparse
    product (no ``(n, neighbors, dim)`` copy); skipped above :data:`SMOOTH_MAX` documents (the
    leaves are then built on the vectors themselves)."""
    import faiss
    from scipy import sparse

    n = x.shape[0]
    if n > SMOOTH_MAX or n <= neighbors:
        return x
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, pos = index.search(x, neighbors)
    pos = np.where(pos < 0, np.arange(n)[:, None], pos)
    mean = sparse.csr_matrix(
        (np.full(n * neighbors, 1.0 / neighbors, dtype=np.float32),
         (np.repeat(np.arange(n), neighbors), pos.ravel())),
        shape=(n, n),
    )  # fmt: skip
    u = np.asarray(x, dtype=np.float32)
    for _ in range(rounds):
        u = np.asarray(mean @ u, dtype=np.float32)
        u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(u, dtype=np.float32)


def cut(tree: np.ndarray, k: int) -> np.ndarray:
    """Leaf → topic (0..k-1) for the cut of ``tree`` into ``k`` topics: the state after its
    first ``m - k`` merges, in their order (topics numbered by their first leaf).

    Replayed here rather than by ``scipy.cluster.hierarchy.cut_tree``, which returned wrong
    clusters for a tree merged group by group (:func:`ward_tree` with ``groups``: equal
    heights after the monotone guard).
    """
    m = len(tree) + 1
    k = max(1, min(int(k), m))
    owner = np.arange(m)  # cluster id of each leaf
    members: dict[int, list[int]] = {i: [i] for i in range(m)}
    for step in range(m - k):
        a, b = int(tree[step, 0]), int(tree[step, 1])
        joined = members.pop(a) + members.pop(b)
        members[m + step] = joined
        owner[joined] = m + step
    first = {c: min(leaves) for c, leaves in members.items()}
    order = {c: i for i, c in enumerate(sorted(first, key=first.__getitem__))}
    return np.array([order[int(c)] for c in owner], dtype=np.int64)


def choose_top(
    vectors: Any,
    leaf_of: np.ndarray,
    tree: np.ndarray,
    *,
    k_max: int,
    seed: int = 0,
) -> tuple[int, dict[int, float]]:
    """The top-level topic count: the fewest topics whose cut's cosine silhouette (of the
    documents) is within :data:`TOP_TOLERANCE` of the best cut's.

    Silhouettes of neighbouring cuts often differ by less than a sample's noise (four sources:
    0.125 / 0.123 / 0.125 / 0.129 for 3 / 4 / 5 / 6 topics); then the coarser cut is the one a
    person names first.

    Returns:
        ``(k, {k: silhouette})``.
    """
    from sklearn.metrics import silhouette_score

    n = vectors.shape[0]
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, SILHOUETTE_SAMPLE), replace=False))
    x = vectors[sample]
    scores: dict[int, float] = {}
    for k in range(2, k_max + 1):
        lab = cut(tree, k)[leaf_of[sample]]
        if len(np.unique(lab)) < 2:
            continue
        scores[k] = float(silhouette_score(x, lab, metric="cosine"))
    if not scores:
        return 1, {}
    best = max(scores.values())
    floor = best - TOP_TOLERANCE * abs(best)
    return min(kk for kk, sc in scores.items() if sc >= floor), scores


def level_sizes(top: int, leaves: int, levels: int) -> list[int]:
    """Topic counts from the top to the leaves, growing geometrically, strictly increasing."""
    if levels <= 1 or top >= leaves:
        return [top] if levels <= 1 else sorted({top, leaves})
    out = [top]
    for i in range(1, levels):
        k = round(top * (leaves / top) ** (i / (levels - 1)))
        k = min(max(k, out[-1] + 1), leaves)
        if k > out[-1]:
            out.append(k)
    return out


# ----------------------------------------------------------------------------- labels
def term_counts(
    texts: list[str], stop: frozenset[str] | None = None, *, binary: bool = False
) -> Any:
    """``(vocabulary, sparse (texts, terms) counts)`` of unigrams and adjacent bigrams, or
    ``None`` when no term is left (terms in fewer than 2 texts are dropped from 100 texts on).

    ``binary`` counts each term once per text.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    stop = stop_words() if stop is None else stop
    for min_df in (2, 1) if len(texts) >= 100 else (1,):
        try:
            vec = CountVectorizer(analyzer=analyzer(stop), min_df=min_df, binary=binary)
            counts = vec.fit_transform(texts)
            return vec.get_feature_names_out(), counts
        except ValueError:  # no term left at this min_df
            continue
    return None


def ctfidf(
    texts: list[str],
    groups: list[np.ndarray],
    stop: frozenset[str] | None = None,
    *,
    binary: bool = False,
    counted: Any = None,
) -> Any:
    """Counts and c-TF-IDF weights of unigrams and adjacent bigrams per group of texts.

    Args:
        texts: the texts.
        groups: for each grouping, the group number (0..g-1) of every text; ``-1`` leaves a
            text out of that grouping (the labels read only each topic's core).
        binary: count each term once per text, so ``counts`` is the number of the group's
            texts that contain it (a word repeated in one article does not outweigh a word
            many articles share).
        counted: the :func:`term_counts` of ``texts`` when already made (not recounted).

    Returns:
        ``(vocabulary, [(counts, weights) per grouping])``, dense ``(g, terms)`` arrays;
        ``weight = tf * log(1 + A / f)`` (tf: the term's share of the group's terms, A: mean
        terms per group, f: the term's count over all groups), BERTopic's c-TF-IDF.
    """
    from scipy import sparse

    if counted is None:
        counted = term_counts(texts, stop, binary=binary)
    if counted is None:
        return np.array([], dtype=object), [
            (np.zeros((int(g.max()) + 1, 0)), np.zeros((int(g.max()) + 1, 0))) for g in groups
        ]
    vocab, counts = counted
    out = []
    for g in groups:
        g = np.asarray(g)
        k = int(g.max()) + 1
        kept = np.flatnonzero(g >= 0)
        onehot = sparse.csr_matrix((np.ones(len(kept)), (g[kept], kept)), shape=(k, len(texts)))
        per = np.asarray((onehot @ counts).todense(), dtype=np.float64)
        words = per.sum(1, keepdims=True)
        tf = per / np.maximum(words, 1.0)
        idf = np.log(1.0 + float(words.mean()) / np.maximum(per.sum(0), 1.0))
        out.append((per, tf * idf))
    return vocab, out


def boilerplate(leaf_counts: np.ndarray, texts: int) -> np.ndarray:
    """Terms spread evenly over the leaves (normalised entropy above :data:`SPREAD_MAX`) and
    common (in more than :data:`SPREAD_MIN_SHARE` of ``texts``): the corpus's boilerplate.

    Args:
        leaf_counts: ``(leaves, terms)`` documents of each leaf containing each term.
        texts: the number of documents counted.
    """
    m = leaf_counts.shape[0]
    total = leaf_counts.sum(0)
    p = leaf_counts / np.maximum(total, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log(p), 0.0).sum(0) / math.log(max(m, 2))
    return (ent > SPREAD_MAX) & (total / max(texts, 1) > SPREAD_MIN_SHARE)


def leaf_profiles(leaf_counts: np.ndarray, texts: int) -> np.ndarray:
    """Each leaf's words as a unit vector: the square root of each term's share of the
    leaf's (binary) term counts, boilerplate removed (:func:`boilerplate`).

    The square root keeps a leaf's many moderately frequent words in play next to its few
    most frequent ones (a Hellinger-style profile); c-TF-IDF weights in the same place were
    measured worse (``docs/latent.md``).
    """
    per = np.array(leaf_counts, dtype=np.float64, copy=True)
    per[:, boilerplate(per, texts)] = 0.0
    prof = np.sqrt(per / np.maximum(per.sum(1, keepdims=True), 1.0))
    return prof / np.maximum(np.linalg.norm(prof, axis=1, keepdims=True), 1e-12)


def _mean_sq_distance(a: np.ndarray) -> float:
    """Mean squared Euclidean distance over the pairs of rows of ``a``."""
    sq = (a * a).sum(1)
    d = sq[:, None] + sq[None, :] - 2.0 * (a @ a.T)
    return float(d[np.triu_indices(len(a), 1)].mean()) if len(a) > 1 else 0.0


def with_words(means: np.ndarray, profiles: np.ndarray | None) -> np.ndarray:
    """The leaves' points for the tree: their smoothed vector means, and beside them their
    word profiles scaled so that both parts spread alike (equal mean squared distance
    between leaves, :data:`WORDS_WEIGHT` times for the words).

    Measured (top-level V-measure, seeds 0-4, ``docs/latent.md``): never lower than the
    means alone on the three benchmark corpora; headlines mean 0.651 -> 0.675, four sources
    0.758 -> 0.807 (seeds 3 and 4 no longer split them into 6 topics), AG News 0.581 -> 0.583.
    """
    if profiles is None or not profiles.size or len(means) < 3:
        return means
    # the same points in m dimensions instead of one per term (an exact isometry: the
    # Gram matrix's eigenvectors), so the tree's work does not grow with the vocabulary
    vals, vecs = np.linalg.eigh(profiles @ profiles.T)
    coords = vecs * np.sqrt(np.clip(vals, 0.0, None))
    spread = _mean_sq_distance(coords)
    if spread <= 0.0:
        return means
    scale = math.sqrt(WORDS_WEIGHT * _mean_sq_distance(means) / spread)
    return np.hstack([means, scale * coords])


def label_weights(
    counts: np.ndarray, weights: np.ndarray, min_docs: int = KEYWORD_MIN_DOCS
) -> np.ndarray:
    """The c-TF-IDF weights of one level made into label scores (a copy).

    * **Distinct**: a term keeps its weight only in the topic where it weighs most, so the
      labels of one level do not repeat a term and sibling topics are told apart ("game" names
      one sports topic, not ten).
    * **Shared**: a term in fewer than ``min_docs`` of the topic's (core) documents is one
      document's word, not the topic's; dropped, unless the topic has no term in that many.

    Measured at the level closest to BERTopic's topic count (``docs/latent.md``): together
    with binary counts over each topic's core they raise NPMI and diversity on all three
    benchmark corpora.

    Args:
        counts: ``(topics, terms)`` documents containing each term (binary counts).
        weights: ``(topics, terms)`` c-TF-IDF weights.
        min_docs: documents a keyword must be in.
    """
    w = np.array(weights, dtype=np.float64, copy=True)
    if w.shape[0] > 1 and w.shape[1]:
        w[w < w.max(0, keepdims=True)] = 0.0
    shared = counts >= min_docs
    has_shared = (w * shared).max(1, initial=0.0) > 0
    w[has_shared[:, None] & ~shared] = 0.0
    return w


def pick_keywords(vocab: np.ndarray, counts: np.ndarray, weights: np.ndarray, n: int) -> list[str]:
    """Top terms of one group, without repeats: a word mostly seen inside one of the group's
    strong bigrams is shown as that bigram, and a term whose words are all shown is skipped."""
    if n < 1 or weights.size == 0:
        return []
    order = np.argsort(-weights, kind="stable")[: max(8 * n, 40)]
    order = [j for j in order if weights[j] > 0]
    count_of = {str(vocab[j]): counts[j] for j in order}
    bigrams = [str(vocab[j]) for j in order if " " in str(vocab[j])]
    chosen: list[str] = []
    covered: set[str] = set()
    for j in order:
        term = str(vocab[j])
        if " " not in term:  # a word: its strongest phrase when the word mostly lives there
            for b in bigrams:
                if term in b.split() and count_of[b] >= 0.4 * counts[j]:
                    term = b
                    break
        words = set(term.split())
        if words <= covered or term in chosen:
            continue
        chosen.append(term)
        covered |= words
        if len(chosen) >= n:
            break
    return chosen


def countable_words(
    keyword_lists: list[list[str]],
    texts: list[str],
    stop: frozenset[str] | None = None,
    top: int = 10,
) -> list[list[str]]:
    """The first ``top`` distinct words of each keyword list that the shared tokenizer
    counts in ``texts`` (phrases count by their words).

    The words both :func:`npmi_coherence` and :func:`topic_diversity` score, so the two
    measures see the same words and every system is measured on ``top`` words of its own
    ranking: a stop word ("the"), a number or a token our tokenizer splits differently
    ("thirdquarter") is passed over for the list's next word rather than leaving the list
    shorter (a list scored on its 7 best words would look more coherent than one scored on
    10). Pass longer lists than ``top`` to leave room for that.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    stop = stop_words() if stop is None else stop
    tok = analyzer(stop)
    vec = CountVectorizer(analyzer=lambda t: [w for w in tok(t) if " " not in w], binary=True)
    vec.fit(texts)
    known = set(vec.get_feature_names_out())
    out = []
    for kw in keyword_lists:
        words: list[str] = []
        for term in kw:
            for w in term.split():
                if w in known and w not in words:
                    words.append(w)
        out.append(words[:top])
    return out


def npmi_coherence(
    keyword_lists: list[list[str]], texts: list[str], stop: frozenset[str] | None = None
) -> float:
    """Mean NPMI of the keyword pairs of each topic, over documents as windows.

    Scored on :func:`countable_words` (the top 10 distinct words the tokenizer counts;
    phrases count by their words). A pair never seen together scores -1 (as gensim's
    ``c_npmi``); the mean is over topics with 2+ words.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    stop = stop_words() if stop is None else stop
    tok = analyzer(stop)
    vec = CountVectorizer(analyzer=lambda t: [w for w in tok(t) if " " not in w], binary=True)
    x = vec.fit_transform(texts).tocsc()
    index = {w: i for i, w in enumerate(vec.get_feature_names_out())}
    n = x.shape[0]
    eps = 1e-12
    per_topic = []
    for words in countable_words(keyword_lists, texts, stop):
        if len(words) < 2:
            continue
        cols = x[:, [index[w] for w in words]]
        p = np.asarray(cols.sum(0)).ravel() / n
        joint = (cols.T @ cols).toarray() / n
        vals = []
        for i in range(len(words)):
            for j in range(i + 1, len(words)):
                pij = joint[i, j]
                if pij <= 0:
                    vals.append(-1.0)
                else:
                    vals.append(math.log(pij / (p[i] * p[j])) / -math.log(pij + eps))
        per_topic.append(float(np.mean(vals)))
    return float(np.mean(per_topic)) if per_topic else float("nan")


def topic_diversity(
    keyword_lists: list[list[str]],
    top: int = 10,
    texts: list[str] | None = None,
    stop: frozenset[str] | None = None,
) -> float:
    """Share of distinct words among the top ``top`` words of all topics (1 = no overlap).

    With ``texts``, the words are :func:`countable_words` (the same words
    :func:`npmi_coherence` scores); without, the first ``top`` distinct words of each list.
    """
    if texts is not None:
        lists = countable_words(keyword_lists, texts, stop, top)
    else:
        lists = []
        for kw in keyword_lists:
            words: list[str] = []
            for term in kw:
                for w in term.split():
                    if w not in words:
                        words.append(w)
            lists.append(words[:top])
    total = sum(len(w) for w in lists)
    return len({w for ws in lists for w in ws}) / total if total else float("nan")


# ----------------------------------------------------------------------------- build
def build_topics(
    ids: list[str],
    vectors: Any,
    texts_for: Any,
    *,
    top: int | None = None,
    leaves: int | None = None,
    levels: int = 3,
    seed: int = 0,
    n_keywords: int = 10,
    n_medoids: int = 3,
) -> Topics:
    """The topic hierarchy of a set of documents (see the module notes for every step).

    Args:
        ids: document ids.
        vectors: their unit vectors, ``(n, dim)``: an array or a collection's row view (rows
            are read a block at a time; above :data:`LEAF_SAMPLE` documents the leaves are
            made from a seeded sample of that many, then every document joins its nearest).
        texts_for: a callable ``list of row positions -> list of texts`` (texts are read
            only for the documents used for labels and medoids).
        top: topics at level 0; None chooses by silhouette over the tree's cuts.
        leaves: topics at the finest level; None is ``round(sqrt(n))`` in ``[2, 256]``.
        levels: number of levels, 1 or more.
        seed: seed of k-means and every sample.
        n_keywords / n_medoids: per topic.

    Raises:
        InvalidInputError: fewer than 2 documents, or a bad ``top``/``leaves``/``levels``.
    """
    from .clustering import chunks, leaf_sums_of, spherical_kmeans

    n = len(ids)
    for name, val, lo in (("levels", levels, 1), ("n_keywords", n_keywords, 0)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo:
            raise InvalidInputError(f"{name} must be an integer >= {lo}, got {val!r}.")
    if isinstance(n_medoids, bool) or not isinstance(n_medoids, (int, np.integer)) or n_medoids < 0:
        raise InvalidInputError(f"n_medoids must be an integer >= 0, got {n_medoids!r}.")
    if n < 2:
        raise InvalidInputError(f"topics need at least 2 documents ({n} here).")
    m = leaves if leaves is not None else min(LEAVES_MAX, max(2, round(math.sqrt(n))))
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 2 <= m <= n:
        raise InvalidInputError(f"leaves must be an integer between 2 and {n}, got {leaves!r}.")
    if top is not None and (
        isinstance(top, bool) or not isinstance(top, (int, np.integer)) or not 1 <= top <= m
    ):
        raise InvalidInputError(
            f"top must be an integer between 1 and leaves={m}, got {top!r}; or None to choose."
        )
    dim = int(vectors.shape[1])
    # the leaves are made from at most LEAF_SAMPLE documents (a seeded sample of larger sets,
    # read alone); every document is then given the leaf whose members it is nearest
    sampled = n > LEAF_SAMPLE
    picked = (
        np.sort(np.random.default_rng(seed).choice(n, LEAF_SAMPLE, replace=False))
        if sampled
        else np.arange(n)
    )
    xs = np.ascontiguousarray(vectors[picked] if sampled else vectors[:n], dtype=np.float32)
    u = smooth(xs)
    _, leaf_of_s = spherical_kmeans(u, int(m), seed=seed, nredo=2)
    # drop empty leaves (k-means can leave one empty on duplicates) and renumber
    used = np.unique(leaf_of_s)
    remap = np.full(int(m), -1)
    remap[used] = np.arange(len(used))
    leaf_of_s = remap[leaf_of_s]
    m = len(used)
    # of the smoothed vectors: the leaves' own space
    means = leaf_sums_of(u, leaf_of_s, m) / np.bincount(leaf_of_s, minlength=m)[:, None]
    # each leaf's sum of its documents' vectors (float64): every level's centroids
    if sampled:
        leaf_of, leaf_sums = _nearest_leaves(vectors, xs, u, means, picked, leaf_of_s)
    else:
        leaf_of, leaf_sums = leaf_of_s, leaf_sums_of(xs, leaf_of_s, m)
    del xs, u
    sizes = np.bincount(leaf_of, minlength=m).astype(np.float64)

    # texts for the tree's word profiles and the labels: up to LABEL_DOCS_PER_LEAF per leaf
    # (seeded), so every topic is read
    rng = np.random.default_rng(seed)
    rows: list[int] = []
    for leaf in range(m):
        members = np.flatnonzero(leaf_of == leaf)
        if len(members) > LABEL_DOCS_PER_LEAF:
            members = np.sort(rng.choice(members, LABEL_DOCS_PER_LEAF, replace=False))
        rows.extend(members.tolist())
    rows_arr = np.asarray(sorted(rows))
    texts = list(texts_for(rows_arr.tolist()))
    wordlist = all(len(t.split()) == 1 for t in texts)
    counted = None if wordlist else term_counts(texts, binary=True)
    # documents of each leaf containing each term: for the tree's profiles and the labels'
    # boilerplate test
    leaf_counts = None
    if counted is not None:
        _, [(leaf_counts, _)] = ctfidf(texts, [leaf_of[rows_arr]], counted=counted)
    profiles = (
        leaf_profiles(leaf_counts, len(texts)) if leaf_counts is not None and m >= 3 else None
    )
    # the top level is cut from a tree of the leaves' vectors *and* words; the levels below
    # from their vectors alone, within each top topic (words made the middle levels less
    # coherent, docs/latent.md)
    top_tree = ward_tree(with_words(means, profiles), sizes) if m >= 2 else np.zeros((0, 4))

    scores: dict[int, float] = {}
    if top is None:
        if m <= 2:
            k0 = m
            criterion = f"all {m} leaves (too few to choose among)"
        else:
            k0, scores = choose_top(
                vectors, leaf_of, top_tree, k_max=min(TOP_MAX, m - 1), seed=seed
            )
            criterion = (
                f"fewest topics within {TOP_TOLERANCE:.0%} of the best mean cosine silhouette of "
                f"{min(n, SILHOUETTE_SAMPLE):,} sampled documents over cuts into 2..{min(TOP_MAX, m - 1)} topics"
            )
    else:
        k0 = min(int(top), m)
        criterion = "given"
    tree = top_tree
    if profiles is not None and 1 < k0 < m:
        tree = ward_tree(means, sizes, groups=cut(top_tree, k0))
    counts = level_sizes(k0, m, int(levels))
    leaf_topic = [cut(tree, k) if k < m else np.arange(m) for k in counts]
    doc_labels = [_relabel(lt[leaf_of]) for lt in leaf_topic]

    # centroids, each document's cosine to its topic's centroid, medoids, per level
    medoid_rows: dict[int, None] = {}
    per_level_tops: list[list[list[int]]] = []
    cents: list[np.ndarray] = []
    core = []  # per level: the member is in the half of its topic nearest the centroid
    for lab in doc_labels:
        k = int(lab.max()) + 1
        leaf_label = np.empty(m, dtype=np.int64)
        leaf_label[leaf_of] = lab  # a level's topic is a function of the leaf
        c = np.zeros((k, dim))
        np.add.at(c, leaf_label, leaf_sums)
        c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
        cents.append(c.astype(np.float32))
    # each document's cosine to its topic's centroid at every level: one pass over the rows
    level_sims = [np.empty(n, dtype=np.float32) for _ in doc_labels]
    for lo, hi in chunks(n, desc="topic centroids"):
        block = np.asarray(vectors[lo:hi], dtype=np.float32)
        for out_sims, c, lab in zip(level_sims, cents, doc_labels):
            out_sims[lo:hi] = np.einsum("ij,ij->i", block, c[lab[lo:hi]])
    for lab, sims in zip(doc_labels, level_sims):
        k = int(lab.max()) + 1
        tops = []
        in_core = np.zeros(n, dtype=bool)
        for t in range(k):
            mem = np.flatnonzero(lab == t)
            ranked = mem[np.argsort(-sims[mem], kind="stable")]
            in_core[ranked[: max(1, math.ceil(LABEL_CORE * len(mem)))]] = True
            best = ranked[: max(n_medoids, 1)]
            tops.append(best.tolist())
            medoid_rows.update(dict.fromkeys(best.tolist()))
        per_level_tops.append(tops)
        core.append(in_core)

    # each level's labels read its topics' cores (the rest are left out, -1)
    groupings = [np.where(cr[rows_arr], lab[rows_arr], -1) for lab, cr in zip(doc_labels, core)]
    vocab, weighted = (
        ctfidf(texts, groupings, binary=True, counted=counted) if not wordlist else ([], [])
    )

    if not wordlist and len(vocab) and m >= 4 and leaf_counts is not None:
        boiler = boilerplate(leaf_counts, len(texts))
        for _, w in weighted:
            w[:, boiler] = 0.0
    weighted = [(cnt, label_weights(cnt, w)) for cnt, w in weighted]

    out_levels: list[TopicLevel] = []
    med_list = list(medoid_rows)
    med_text = dict(zip(med_list, texts_for(med_list)))

    for li, lab in enumerate(doc_labels):
        k = int(lab.max()) + 1
        sims = level_sims[li]
        parent_lab = doc_labels[li - 1] if li > 0 else None
        child_lab = doc_labels[li + 1] if li + 1 < len(doc_labels) else None
        topics = []
        for t in range(k):
            mem = lab == t
            if wordlist or n_keywords == 0:
                kws = (
                    [med_text[r][:40] for r in per_level_tops[li][t][:n_keywords]]
                    if n_keywords
                    else []
                )
            else:
                cnt, w = weighted[li]
                kws = pick_keywords(vocab, cnt[t], w[t], n_keywords)
                if not kws:
                    kws = [med_text[r][:40] for r in per_level_tops[li][t][:3]]
            parent = int(np.bincount(parent_lab[mem]).argmax()) if parent_lab is not None else None
            children = sorted({int(v) for v in child_lab[mem]}) if child_lab is not None else []
            topics.append(
                Topic(
                    id=t,
                    level=li,
                    parent=parent,
                    children=children,
                    size=int(mem.sum()),
                    label=", ".join(kws[:3]) if kws else f"topic {t}",
                    keywords=kws,
                    medoids=[(ids[r], med_text[r]) for r in per_level_tops[li][t][:n_medoids]],
                    cohesion=float(sims[mem].mean()),
                )
            )
        out_levels.append(TopicLevel(li, k, lab, topics))

    # outliers: far below their leaf's typical cosine to its centroid (robust z-score)
    leaf_lab = doc_labels[-1]
    sims = level_sims[-1].astype(np.float64)
    flagged = np.zeros(n, dtype=bool)
    for t in range(int(leaf_lab.max()) + 1):
        mem = np.flatnonzero(leaf_lab == t)
        if len(mem) < 5:
            continue
        med = np.median(sims[mem])
        mad = 1.4826 * np.median(np.abs(sims[mem] - med))
        flagged[mem] = sims[mem] < med - OUTLIER_MADS * max(mad, 1e-6)
    return Topics(
        ids=list(ids),
        levels=out_levels,
        outliers=[ids[i] for i in np.flatnonzero(flagged)],
        criterion=criterion,
        scores=scores,
        seed=int(seed),
    )


def _nearest_leaves(
    vectors: Any,
    sample: np.ndarray,
    smoothed: np.ndarray,
    means: np.ndarray,
    picked: np.ndarray,
    sample_leaves: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The leaf of every document when the leaves were made from ``sample`` (rows
    ``picked``, which keep their ``sample_leaves``): each other document is smoothed once
    onto the sample (the mean of its :data:`SMOOTH_NEIGHBORS` nearest sampled documents'
    ``smoothed`` vectors) and joins the leaf whose smoothed ``means`` it is nearest, as the
    sample's own documents were made; rows are read a block at a time.

    Measured on the 32,000 headlines, leaves from a 20,000 sample (top-level V, seeds 0-5):
    0.673 this way, 0.637 joining the nearest leaf by the raw vectors; every document in
    the leaves: 0.690 (docs/latent.md). The neighbours come from an IVF index over the
    sample's :data:`NEAREST_LEAF_DIMS` principal components (2 of ~141 lists probed): 33 s
    for all of ``topics`` at 1M documents, 46 s over all 384 dimensions; exact search
    would take ~150 s.

    Returns:
        ``(leaf per document, (leaves, dim) float64 sum of each leaf's raw vectors)``.
    """
    import faiss
    from scipy import sparse

    from .clustering import chunks, leaf_sums_of

    n, dim, m = len(vectors), sample.shape[1], len(means)
    lists = max(1, round(math.sqrt(len(sample))))
    reduced = min(dim, NEAREST_LEAF_DIMS)
    pca = faiss.PCAMatrix(dim, reduced)
    pca.train(sample)
    quantizer = faiss.IndexFlatIP(reduced)
    ivf = faiss.IndexIVFFlat(quantizer, reduced, lists, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = 0
    index = faiss.IndexPreTransform(pca, ivf)
    index.train(sample)
    index.add(sample)
    ivf.nprobe = min(lists, NEAREST_LEAF_PROBES)
    unit = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    # a neighbour's cosine to each leaf: the neighbours' sum's is the sum of theirs
    to_leaf = (smoothed @ unit.T.astype(np.float32)).astype(np.float32)
    known = np.full(n, -1, dtype=np.int64)
    known[picked] = sample_leaves
    labels = np.empty(n, dtype=np.int64)
    sums = np.zeros((m, dim))
    for lo, hi in chunks(n, desc="joining leaves"):
        x = np.asarray(vectors[lo:hi], dtype=np.float32)
        _, nn = index.search(x, SMOOTH_NEIGHBORS)
        rows, cols = np.nonzero(nn >= 0)  # (-1: fewer neighbours found in the probed lists)
        near = sparse.csr_matrix(
            (np.ones(rows.size, dtype=np.float32), (rows, nn[rows, cols])),
            shape=(hi - lo, len(sample)),
        )
        lab = np.argmax(np.asarray(near @ to_leaf), axis=1)
        lab = np.where(known[lo:hi] >= 0, known[lo:hi], lab)
        labels[lo:hi] = lab
        sums += leaf_sums_of(x, lab, m)
    return labels, sums


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber topics 0.. so 0 is the largest (ties: first member first)."""
    from .clustering import by_size

    uniq, inv = np.unique(labels, return_inverse=True)
    return by_size(inv, len(uniq))[0]


def topics_collection(
    col: Any,
    *,
    top: int | None = None,
    leaves: int | None = None,
    levels: int = 3,
    where: dict[str, Any] | None = None,
    seed: int = 0,
    n_keywords: int = 10,
    n_medoids: int = 3,
) -> Topics:
    """:func:`build_topics` over a collection's documents (those matching ``where``)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InvalidInputError(f"seed must be an integer, got {seed!r}.")
    with col.selection(where) as chosen:  # rows read on demand (no other call inside)
        if chosen.count < 2:
            raise InvalidInputError(
                f"collection {col.name!r} has {chosen.count} document(s)"
                + (" matching the filter" if where is not None else "")
                + "; topics need at least 2."
            )
        return build_topics(
            chosen.ids(np.arange(chosen.count)),
            chosen.vectors,
            chosen.texts,
            top=top,
            leaves=leaves,
            levels=levels,
            seed=seed,
            n_keywords=n_keywords,
            n_medoids=n_medoids,
        )


__all__ = [
    "Topic",
    "TopicLevel",
    "Topics",
    "build_topics",
    "choose_top",
    "countable_words",
    "ctfidf",
    "label_weights",
    "npmi_coherence",
    "stop_words",
    "topic_diversity",
    "topics_collection",
    "ward_tree",
]
