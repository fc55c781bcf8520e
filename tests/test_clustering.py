"""Clustering (spherical k-means, auto k, c-TF-IDF labels, medoids, persistence) and outliers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import embedsearch
from embedsearch.errors import InvalidInputError
from embedsearch.latent.clustering import (
    ATYPICAL_MIN_DOCS,
    ATYPICAL_SAMPLE,
    ATYPICAL_SHARE,
    atypical_scores,
    ctfidf_keywords,
    outlier_scores,
    read_summary,
    spherical_kmeans,
)

TOPICS = ("cooking", "astronomy", "finance", "music")


def _small(path, demo_rows):
    rows = [r for t in TOPICS for r in [x for x in demo_rows if x["topic"] == t][:15]]
    col = embedsearch.open(path)
    col.add(
        [r["text"] for r in rows],
        ids=[r["id"] for r in rows],
        metadata=[{"topic": r["topic"], "year": r["year"]} for r in rows],
    )
    return col


@pytest.fixture
def small_col(tmp_path, encoder, demo_rows):
    """A writable collection: 15 documents from each of four demo topics."""
    col = _small(tmp_path / "small", demo_rows)
    yield col
    col.close()


@pytest.fixture(scope="module")
def shared_small(tmp_path_factory, encoder, demo_rows):
    """The same, shared by tests that must leave it unchanged (they check they do)."""
    col = _small(tmp_path_factory.mktemp("clusters") / "small", demo_rows)
    yield col
    col.close()


def test_k_given_partitions_the_collection(demo_col, demo_rows) -> None:
    result = demo_col.cluster(14, seed=0)
    assert result.k == 14 and result.criterion == "given"
    members = [i for c in result.clusters for i in c.ids]
    assert sorted(members) == sorted(demo_col.ids())
    sizes = [c.size for c in result.clusters]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) == 350
    assert [c.id for c in result.clusters] == list(range(14))
    assign = result.assignments()
    assert all(assign[i] == c.id for c in result.clusters for i in c.ids)
    np.testing.assert_allclose(np.linalg.norm(result.centroids, axis=1), 1.0, atol=1e-5)
    topic = {r["id"]: r["topic"] for r in demo_rows}
    ari = adjusted_rand_score([topic[i] for i in result.ids], result.labels)
    assert ari > 0.4  # the 14 topics are found to a good part


def test_medoid_is_the_member_minimising_total_cosine_distance(demo_col) -> None:
    result = demo_col.cluster(6, seed=1)
    for c in result.clusters:
        v = demo_col.vectors(c.ids)
        total_distance = (1 - v @ v.T).sum(axis=1)
        assert c.medoid_id == c.ids[int(np.argmin(total_distance))]
        assert c.medoid_text == demo_col.get([c.medoid_id])[0].text
        assert 0 < c.cohesion <= 1


def test_labels_are_distinctive_keywords(demo_col) -> None:
    result = demo_col.cluster(14, seed=0)
    topic_words = {"telescope", "planet", "stars", "galaxy", "orbit", "moon", "sun", "light"}
    assert any(set(c.keywords) & topic_words for c in result.clusters)
    for c in result.clusters:
        assert 1 <= len(c.keywords) <= 6
        assert all(w.isalpha() and w == w.lower() for w in c.keywords)
        assert c.label == ", ".join(c.keywords[:3])
    d = result.to_dict()
    assert d["k"] == 14 and "ids" not in d["clusters"][0]
    assert len(result.to_dict(include_ids=True)["clusters"][0]["ids"]) == result.clusters[0].size


def test_same_seed_same_clusters(demo_col) -> None:
    a = demo_col.cluster(8, seed=7)
    b = demo_col.cluster(8, seed=7)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert [c.keywords for c in a.clusters] == [c.keywords for c in b.clusters]


def test_automatic_k_by_silhouette(demo_col) -> None:
    result = demo_col.cluster(k_range=(3, 8), seed=0)
    assert set(result.scores) == set(range(3, 9))
    assert result.k == max(result.scores, key=result.scores.get)
    assert result.silhouette == pytest.approx(result.scores[result.k])
    assert "silhouette" in result.criterion and "3..8" in result.criterion


def test_where_restricts_the_documents(demo_col) -> None:
    result = demo_col.cluster(2, where={"topic": {"$in": ["music", "astronomy"]}}, seed=0)
    assert len(result.ids) == 50
    by_topic = {
        c.id: {demo_col.get([i])[0].metadata["topic"] for i in c.ids} for c in result.clusters
    }
    assert sorted(map(sorted, by_topic.values())) == [["astronomy"], ["music"]]


def test_persist_writes_cluster_ids_and_keeps_vectors(small_col) -> None:
    before = small_col.vectors()
    ids = small_col.ids()
    result = small_col.cluster(4, seed=0, persist=True)
    assert result.persisted_field == "cluster"
    for c in result.clusters:
        hits = small_col.search("anything", k=60, where={"cluster": c.id})
        assert sorted(h.id for h in hits) == sorted(c.ids)
    after = small_col.vectors(ids)
    np.testing.assert_array_equal(before, after)  # unchanged texts kept their vectors
    docs = small_col.get(ids)
    assert all("topic" in d.metadata and "year" in d.metadata for d in docs)  # kept
    summary = read_summary(small_col, "cluster")
    assert summary["k"] == 4 and [c["id"] for c in summary["clusters"]] == [0, 1, 2, 3]
    # the persisted field survives reopening
    path = small_col.path
    small_col.close()
    again = embedsearch.open(path)
    try:
        assert {d.metadata["cluster"] for d in again.get(ids)} == {0, 1, 2, 3}
    finally:
        again.close()


def test_custom_field_and_topics_recovered(small_col) -> None:
    result = small_col.cluster(4, seed=0, persist=True, field="topic_cluster")
    docs = small_col.get(result.ids)
    ari = adjusted_rand_score(
        [d.metadata["topic"] for d in docs], [d.metadata["topic_cluster"] for d in docs]
    )
    assert ari > 0.8


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"k": 61}, "cannot make 61 clusters from 60"),
        ({"k": 0}, "positive integer"),
        ({"k": 3, "where": {"topic": "music"}, "k_range": None, "seed": "x"}, "seed"),
        ({"k": None, "k_range": (1, 5)}, "k_range"),
        ({"k": None, "k_range": (2, 60)}, "only 60 documents"),
        ({"k": 3, "persist": True, "field": "a.b"}, "plain metadata key"),
        ({"k": 3, "where": {"topic": "nothing"}}, "no documents matching"),
    ],
)
def test_bad_cluster_requests_change_nothing(shared_small, kwargs, fragment) -> None:
    state = shared_small.state_key
    with pytest.raises(InvalidInputError, match=fragment):
        shared_small.cluster(**kwargs)
    assert shared_small.state_key == state
    assert all("cluster" not in d.metadata for d in shared_small.get(shared_small.ids()))


def test_kmeans_edge_cases() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    centroids, labels = spherical_kmeans(x, 5, seed=0)
    assert sorted(labels.tolist()) == [0, 1, 2, 3, 4]  # every point its own cluster
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    _, one = spherical_kmeans(x, 1)
    assert set(one.tolist()) == {0}
    with pytest.raises(InvalidInputError, match="cannot make 6 clusters from 5"):
        spherical_kmeans(x, 6)


def test_ctfidf_prefers_words_specific_to_a_cluster() -> None:
    texts = [
        "the apple and banana smoothie",
        "banana bread with apple",
        "fresh apple pie and banana",
        "the engine and the wheel of the truck",
        "truck engine repair",
        "a wheel for the truck engine",
    ]
    kw = ctfidf_keywords(texts, np.array([0, 0, 0, 1, 1, 1]), 2, n_keywords=3)
    assert set(kw[0]) <= {"apple", "banana", "smoothie", "bread", "pie", "fresh"}
    assert {"apple", "banana"} <= set(kw[0])
    assert {"engine", "truck", "wheel"} == set(kw[1])
    assert ctfidf_keywords(["the and of", "a the"], np.array([0, 1]), 2) == [[], []]


# ----------------------------------------------------------------------------- outliers
def test_outlier_scores_match_brute_force_with_duplicates() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 16)).astype(np.float32)
    x[5] = x[4]  # exact duplicates: the row itself may not come first
    x[6] = x[4]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for neighbors in (1, 3, 10):
        got = outlier_scores(x, neighbors)
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        kth = -np.sort(-sims, axis=1)[:, neighbors - 1]
        np.testing.assert_allclose(got, 1 - kth, atol=1e-5)
    assert outlier_scores(x, 2)[4] == pytest.approx(0.0, abs=1e-6)  # two identical neighbours


def _topics_with_a_planted_group(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic unit vectors (pure plumbing for the score's arithmetic): 2,980 documents in
    20 broad topics and a tight group of 20 (0.7 %) off every topic's direction."""
    rng = np.random.default_rng(seed)
    d = 384  # the default model's dimension, so a collection can store them
    centres = rng.normal(size=(20, d))
    x = np.vstack([c + 0.9 * rng.normal(size=(149, d)) for c in centres])
    group = rng.normal(size=d) * 1.5 + 0.15 * rng.normal(size=(20, d))
    x = np.vstack([x, group]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, np.r_[np.zeros(len(x) - 20, bool), np.ones(20, bool)]


def test_atypical_scores_match_brute_force_over_the_sample() -> None:
    x, _ = _topics_with_a_planted_group()
    got = atypical_scores(x, seed=5)
    picked = np.sort(np.random.default_rng(5).choice(len(x), ATYPICAL_SAMPLE, replace=False))
    rank = round(ATYPICAL_SHARE * ATYPICAL_SAMPLE)
    sims = x @ x[picked].T
    sims[picked, np.arange(len(picked))] = -np.inf  # a document is not its own neighbour
    want = 1 - np.sort(sims, axis=1)[:, ::-1][:, rank - 1]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_atypical_finds_a_planted_group_that_hides_from_its_neighbours() -> None:
    x, planted = _topics_with_a_planted_group()
    top = np.argsort(-atypical_scores(x))[: planted.sum()]
    near = np.argsort(-outlier_scores(x, 10))[: planted.sum()]
    assert planted[top].mean() >= 0.9  # the group's members are each other's neighbours:
    assert planted[near].mean() <= 0.2  # the 10th-neighbour score ranks them typical


def test_outliers_method_auto_by_size_and_bad_arguments(tmp_path, encoder) -> None:
    x, planted = _topics_with_a_planted_group()
    ids = [f"d{i}" for i in range(len(x))]
    col = embedsearch.open(tmp_path / "planted")
    try:
        col.add(
            ["t"] * len(x), ids=ids, vectors=x, metadata=[{"part": i % 4} for i in range(len(x))]
        )
        want = {ids[i] for i in np.flatnonzero(planted)}
        assert len(x) >= ATYPICAL_MIN_DOCS
        auto = col.outliers(20)
        assert [h.id for h in auto] == [h.id for h in col.outliers(20, method="atypical")]
        assert len({h.id for h in auto} & want) >= 18
        by_neighbors = col.outliers(20, neighbors=10)  # neighbors given: that score
        assert len({h.id for h in by_neighbors} & want) <= 4
        assert [h.id for h in by_neighbors] == [
            h.id for h in col.outliers(20, method="neighbors", neighbors=10)
        ]
        # under ATYPICAL_MIN_DOCS documents (a quarter here) auto scores by the 10th neighbour
        part = {"part": 1}
        assert [h.id for h in col.outliers(5, where=part)] == [
            h.id for h in col.outliers(5, method="neighbors", where=part)
        ]
        with pytest.raises(InvalidInputError, match="neighbors applies to method='neighbors'"):
            col.outliers(5, method="atypical", neighbors=3)
        with pytest.raises(InvalidInputError, match="method must be one of"):
            col.outliers(5, method="isolation")  # type: ignore[arg-type]
    finally:
        col.close()


def test_the_off_topic_document_is_the_top_outlier(tmp_path, encoder, demo_rows) -> None:
    cooking = [r for r in demo_rows if r["topic"] == "cooking"]
    col = embedsearch.open(tmp_path / "odd")
    try:
        col.add([r["text"] for r in cooking], ids=[r["id"] for r in cooking])
        col.add(["The quarterly tax filing deadline for corporations moved to April."], ids=["odd"])
        hits = col.outliers(3, neighbors=5)
        assert hits[0].id == "odd"
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        v = col.vectors()
        ids = col.ids()
        sims = v @ v[ids.index("odd")]
        sims[ids.index("odd")] = -np.inf
        assert hits[0].score == pytest.approx(1 - np.sort(sims)[::-1][4], abs=1e-5)
        with pytest.raises(InvalidInputError, match="neighbors=26"):
            col.outliers(3, neighbors=26)
        with pytest.raises(InvalidInputError, match="n=27 but only 26"):
            col.outliers(27)
        scoped = col.outliers(2, neighbors=3, where={"$not": {"x": {"$exists": True}}})
        assert len(scoped) == 2
    finally:
        col.close()


def test_cluster_result_is_json_ready(demo_col) -> None:
    text = json.dumps(demo_col.cluster(3, seed=0).to_dict(include_ids=True))
    assert '"medoid_id"' in text and '"keywords"' in text


def test_word_clusters_are_labelled_by_their_most_central_words(tmp_path, encoder) -> None:
    from embedsearch.vocabulary import Vocabulary

    groups = [
        ["cat", "dog", "horse", "cow", "sheep", "goat"],
        ["car", "truck", "bus", "train", "bicycle", "motorcycle"],
        ["apple", "banana", "cherry", "grape", "mango", "peach"],
    ]
    with Vocabulary.build([w for g in groups for w in g], tmp_path / "words") as vocab:
        result = vocab.cluster(3, seed=0, n_keywords=3)
        for c in result.clusters:
            assert len(c.keywords) == min(3, c.size) and set(c.keywords) <= set(c.ids)
            center = result.centroids[c.id]
            cos = vocab.vectors(c.ids) @ center
            assert c.keywords[0] == c.ids[int(np.argmax(cos))]
        assert sum(c.size for c in result.clusters) == 18


def test_outliers_and_maps_read_only_the_rows_they_need(tmp_path, monkeypatch, take_sizes) -> None:
    """``outliers()`` and ``map()`` read a collection's rows on demand (``selection``), not
    through ``select()``'s copy of every vector and id (1.5 GB at 1M rows): the outlier scan
    reads blocks, a map only its sample, and the answers are those of the whole arrays."""
    from embedsearch.collection import Collection
    from embedsearch.latent.clustering import atypical_scores

    rng = np.random.default_rng(3)
    centers = rng.normal(size=(8, 384))
    x = centers[rng.integers(0, 8, 4500)] + 0.6 * rng.normal(size=(4500, 384))
    x[::300] = rng.normal(size=(15, 384)) * 3  # 15 off-topic rows
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    col = embedsearch.open(tmp_path / "c")
    ids = [f"d{i}" for i in range(4500)]
    for lo in range(0, 4500, 1500):  # three segments
        col.add(ids[lo : lo + 1500], ids=ids[lo : lo + 1500], vectors=x[lo : lo + 1500])
    col.delete(["d1"])  # a tombstone: the live rows are chosen
    live = np.array([i != 1 for i in range(4500)])
    want = atypical_scores(x[live])
    want_ids = [ids[i] for i in np.flatnonzero(live)[np.argsort(-want, kind="stable")[:15]]]

    takes = take_sizes

    def no_select(self, where=None):
        raise AssertionError("select() copied every vector")

    monkeypatch.setattr(Collection, "select", no_select)
    takes.clear()  # the adds above read rows too: count from here
    hits = col.outliers(15)
    assert [h.id for h in hits] == want_ids
    assert len({h.id for h in hits} & {f"d{i}" for i in range(0, 4500, 300)}) >= 12
    assert max(takes) <= 2000 + 8192 and sum(takes) < 2 * 4500, takes
    takes.clear()
    col.map(tmp_path / "m.png", max_points=100, method="pca", color_by=None)
    assert takes and max(takes) <= 100, takes  # the drawn sample only
    col.close()
