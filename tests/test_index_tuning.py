"""Build-time tuning of approximate indexes: the recall it reports must hold for new queries.

Synthetic vectors on purpose (real FAISS, no encoder): clusters of near-identical copies,
as in corpora with duplicated articles or boilerplate chunks. A tuner that queries with
the collection's own rows finds each row and its copies in the first cell it probes, and
so reports a recall that queries from outside the collection never get.
"""

from __future__ import annotations

import numpy as np
import pytest

from embedsearch.index import NEAR_DUPLICATE, TARGET_RECALL, VectorIndex, exact_search


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, truth)]))


@pytest.mark.parametrize("spec", ["IVF64,Flat", "IVF64,SQ8", "IVF64,PQ16x4fs", "HNSW8"])
def test_tuned_recall_holds_for_queries_from_outside(spec: str) -> None:
    rng = np.random.default_rng(0)
    dim, clusters, copies, outside = 32, 1500, 6, 400
    centers = _unit(rng.normal(size=(clusters + outside, dim)))
    noise = 0.02 * rng.normal(size=(clusters * copies, dim))
    base = _unit(np.repeat(centers[:clusters], copies, axis=0) + noise)
    assert float(base[0] @ base[1]) > NEAR_DUPLICATE  # the copies are near-duplicates
    # Queries from the same distribution, of which no copy is stored (held-out documents).
    queries = _unit(centers[clusters:] + 0.02 * rng.normal(size=(outside, dim)))
    vi = VectorIndex(spec, dim)
    vi.build(base)
    assert vi._index.ntotal == len(base)  # rows held out for tuning were added afterwards
    _, truth = exact_search(base, queries, 10)
    _, got = vi.search(base, queries, 10, None)
    held_out = _recall(got, truth)
    assert vi.info.recall_at_10 is not None and vi.info.recall_at_10 >= TARGET_RECALL
    # The reported recall is a sample estimate: queries from outside get it within noise.
    assert held_out >= TARGET_RECALL - 0.03, (held_out, vi.info.to_json())


def test_hnsw_retuned_on_growth_with_the_new_rows_as_queries() -> None:
    rng = np.random.default_rng(1)
    dim = 32
    first = _unit(rng.normal(size=(3000, dim)))
    more = _unit(rng.normal(size=(3000, dim)))
    vi = VectorIndex("HNSW8", dim)
    vi.build(first)
    everything = np.concatenate([first, more])
    vi.add(more, everything)  # doubles the rows: re-tunes
    assert vi.info.extra["tuned_rows"] == len(everything) == vi._index.ntotal
    queries = _unit(rng.normal(size=(300, dim)))
    _, truth = exact_search(everything, queries, 10)
    _, got = vi.search(everything, queries, 10, None)
    assert _recall(got, truth) >= TARGET_RECALL - 0.03
