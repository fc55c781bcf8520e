"""The whole-collection views at scale: clustering, topics and directions read a
collection's rows a block at a time and train on samples, so a million documents are never
copied whole (at 1M rows ``cluster`` held 6.3 GB, ``topics`` 7.9 GB, ``direction`` 3.2 GB).

The sizes that switch to the sampled paths are lowered here so the real demo collection
(350 documents, real encoder) takes them; a guard makes any whole copy of the rows fail.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, v_measure_score

from embedsearch import table as table_module
from embedsearch.latent import clustering, directions, topics
from embedsearch.table import RowsView


@pytest.fixture
def no_whole_copy(monkeypatch):
    """Fail any ``np.asarray(view)`` of a collection's whole selection (a full copy)."""

    def refuse(self, dtype=None, copy=None):
        raise AssertionError("the whole selection was copied")

    monkeypatch.setattr(RowsView, "__array__", refuse)


def _vectors_by_id(col) -> dict[str, np.ndarray]:
    ids = col.ids()
    return dict(zip(ids, col.vectors()))


def test_row_view_reads_large_takes_in_released_pieces(demo_col, monkeypatch) -> None:
    with demo_col.selection() as chosen:
        want = np.asarray(chosen.vectors)
        monkeypatch.setattr(table_module, "RELEASE_AFTER_TAKE", 7)
        rows = np.array([349, 0, 5, 17, 17, 200, 3, 99, 42, 300, 1, 2, 8], dtype=np.int64)
        assert np.array_equal(chosen.vectors[rows], want[rows])
        assert np.array_equal(np.asarray(chosen.vectors), want)
        assert chosen.texts(rows[:3]) == [d.text for d in demo_col.get(chosen.ids(rows[:3]))]


def test_cluster_trains_on_a_sample_and_scores_rows_in_blocks(
    demo_col, demo_rows, monkeypatch, no_whole_copy
) -> None:
    full = demo_col.cluster(14, seed=0)  # every row trains (350 < TRAIN_CAP)
    monkeypatch.setattr(clustering, "TRAIN_CAP", 150)
    monkeypatch.setattr(clustering, "CHUNK_ROWS", 64)
    result = demo_col.cluster(14, seed=0)
    assert sorted(i for c in result.clusters for i in c.ids) == sorted(demo_col.ids())
    sizes = [c.size for c in result.clusters]
    assert sizes == sorted(sizes, reverse=True)
    vec = _vectors_by_id(demo_col)
    for c, centroid in zip(result.clusters, result.centroids):
        x = np.stack([vec[i] for i in c.ids]).astype(np.float64)
        mean = x.sum(0)
        assert np.allclose(centroid, mean / np.linalg.norm(mean), atol=1e-5)
        assert c.medoid_id == c.ids[int(np.argmax(x @ mean))]
        assert c.cohesion == pytest.approx(float(np.mean(x @ centroid)), abs=1e-5)
        assert c.medoid_text == demo_col.get([c.medoid_id])[0].text
    topic = {r["id"]: r["topic"] for r in demo_rows}
    truth = [topic[i] for i in result.ids]
    # trained on 150 of 350 documents (11 a cluster): still topical, if less than trained
    # on all (seeds 0-3: 0.47-0.59 against 0.60-0.66; random labels score ~0.2)
    assert v_measure_score(truth, result.labels) > 0.4
    assert adjusted_rand_score(full.labels, result.labels) < 1.0  # the sample was used


def test_cluster_choosing_k_assigns_only_the_silhouette_sample(
    demo_col, monkeypatch, no_whole_copy
) -> None:
    monkeypatch.setattr(clustering, "TRAIN_CAP", 150)
    result = demo_col.cluster(k_range=(8, 16), seed=1)
    assert 8 <= result.k <= 16 and set(result.scores) == set(range(8, 17))
    assert result.silhouette == result.scores[result.k]
    assert len(result.labels) == len(demo_col)


def test_topics_make_leaves_from_a_sample_and_assign_every_document(
    demo_col, demo_rows, monkeypatch, no_whole_copy
) -> None:
    monkeypatch.setattr(topics, "LEAF_SAMPLE", 150)
    monkeypatch.setattr(clustering, "CHUNK_ROWS", 64)
    t = demo_col.topics(levels=3, seed=0)
    n = len(demo_col)
    assert [len(level.labels) for level in t.levels] == [n] * 3
    for upper, lower in zip(t.levels, t.levels[1:]):  # each finer topic has one parent
        for child in range(lower.k):
            parents = set(upper.labels[lower.labels == child].tolist())
            assert len(parents) == 1
    assert sum(tp.size for tp in t.levels[-1].topics) == n
    assert t.levels[-1].k == round(np.sqrt(n))  # leaves follow the collection, not the sample
    topic = {r["id"]: r["topic"] for r in demo_rows}
    truth = [topic[i] for i in t.ids]
    # leaves from 150 of 350 documents: seeds 0-3 0.57-0.66 (all documents: 0.74-0.77)
    assert v_measure_score(truth, t.levels[-1].labels) > 0.45
    vec = _vectors_by_id(demo_col)
    for level in t.levels:
        for tp in level.topics:
            members = [t.ids[i] for i in np.flatnonzero(level.labels == tp.id)]
            assert {m for m, _ in tp.medoids} <= set(members)
            x = np.stack([vec[i] for i in members]).astype(np.float64)
            c = x.sum(0) / np.linalg.norm(x.sum(0))
            assert tp.cohesion == pytest.approx(float(np.mean(x @ c)), abs=1e-4)
    assert set(t.outliers) <= set(t.ids)


def test_direction_refines_on_rows_read_alone(
    demo_col, demo_rows, monkeypatch, no_whole_copy
) -> None:
    monkeypatch.setattr(directions, "REFINE_SAMPLE", 120)
    pos = [r["text"] for r in demo_rows if r["topic"] == "cooking"][:3]
    neg = [r["text"] for r in demo_rows if r["topic"] == "finance"][:3]
    axis = demo_col.direction(pos, neg)
    enc = demo_col.encoder
    p, q = enc.encode(pos), enc.encode(neg)
    all_rows = demo_col.vectors()  # the old input: every row, sampled inside
    assert np.allclose(axis, directions.direction_vector(p, q, all_rows), atol=1e-6)


def test_long_passes_show_progress_with_totals_on_a_terminal(demo_col, monkeypatch, capsys) -> None:
    monkeypatch.setattr(clustering, "PROGRESS_MIN_ROWS", 100)
    monkeypatch.setattr(clustering, "CHUNK_ROWS", 64)
    monkeypatch.setattr(topics, "LEAF_SAMPLE", 150)
    capsys.readouterr()
    monkeypatch.setattr(type(sys.stderr), "isatty", lambda self: True, raising=False)
    demo_col.cluster(k_range=(2, 4), seed=0)
    demo_col.topics(levels=2, seed=0)
    err = capsys.readouterr().err
    n = len(demo_col)
    for desc in (
        "choosing k",
        "assigning documents",
        "scoring medoids",
        "joining leaves",
        "topic centroids",
    ):
        assert desc in err
    assert f"{n}/{n}" in err and "3/3" in err  # totals: the rows, and the ks tried
    monkeypatch.setattr(type(sys.stderr), "isatty", lambda self: False, raising=False)
    demo_col.cluster(k_range=(2, 4), seed=0)
    assert "assigning documents" not in capsys.readouterr().err  # no bar lines in logs
