"""Collection behaviour with the real encoder and real FAISS: add, search, filters, writes."""

from __future__ import annotations

import numpy as np
import pytest

import embedsearch
from embedsearch import DocumentNotFoundError, DuplicateIdError, FilterError, InvalidInputError

TEXTS = [
    "The cat sat on the warm windowsill all afternoon.",
    "Stock markets fell sharply after the interest rate decision.",
    "A recipe for fresh tomato soup with basil.",
    "The football team won the championship in extra time.",
    "Astronomers found a new exoplanet orbiting a red dwarf.",
]


def test_search_ranks_by_cosine_of_real_embeddings(demo_col, encoder):
    hits = demo_col.search("a dog that learns tricks", k=5)
    assert len(hits) == 5
    assert hits[0].metadata["topic"] == "animals"
    q = encoder.encode(["a dog that learns tricks"])[0]
    docs = demo_col.vectors([h.id for h in hits])
    assert np.allclose([h.score for h in hits], docs @ q, atol=1e-5)
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    # exhaustive check: nothing outside the hits scores higher than the 5th
    all_scores = demo_col.vectors() @ q
    assert np.isclose(hits[-1].score, np.sort(all_scores)[-5], atol=1e-5)


def test_search_by_vector_equals_search_by_text(demo_col, encoder):
    q = encoder.encode(["storm clouds and hail"])[0]
    by_text = demo_col.search("storm clouds and hail", k=7)
    by_vec = demo_col.search(q * 3.0, k=7)  # any scale: normalised for the caller
    assert [h.id for h in by_text] == [h.id for h in by_vec]
    assert np.allclose([h.score for h in by_text], [h.score for h in by_vec], atol=1e-5)


def test_batch_search_matches_single_searches(demo_col):
    queries = ["black holes", "retirement savings", "tomato plants", "electric cars"]
    batch = demo_col.batch_search(queries, k=4)
    for q, hits in zip(queries, batch):
        single = demo_col.search(q, k=4)
        assert [h.id for h in hits] == [h.id for h in single]


def test_where_filter_is_applied_before_the_top_k_cut(demo_col, demo_rows):
    where = {"topic": "music", "year": {"$gte": 2005}}
    expected = {r["id"] for r in demo_rows if r["topic"] == "music" and r["year"] >= 2005}
    assert len(expected) >= 3
    # a query about something else entirely still gets k music documents back
    hits = demo_col.search("black holes and gravity", k=len(expected), where=where)
    assert {h.id for h in hits} == expected
    assert all(h.metadata["topic"] == "music" and h.metadata["year"] >= 2005 for h in hits)


@pytest.mark.parametrize(
    "where, check",
    [
        ({"topic": {"$in": ["cars", "films"]}}, lambda m: m["topic"] in ("cars", "films")),
        (
            {"$or": [{"year": {"$lt": 1995}}, {"year": {"$gt": 2022}}]},
            lambda m: m["year"] < 1995 or m["year"] > 2022,
        ),
        (
            {"$and": [{"topic": "health"}, {"year": {"$lte": 2010}}]},
            lambda m: m["topic"] == "health" and m["year"] <= 2010,
        ),
        (
            {"topic": {"$ne": "cooking"}, "year": {"$gte": 2000}},
            lambda m: m["topic"] != "cooking" and m["year"] >= 2000,
        ),
        ({"$not": {"topic": "travel"}}, lambda m: m["topic"] != "travel"),
    ],
)
def test_where_operators(demo_col, demo_rows, where, check):
    n_match = sum(check(r) for r in demo_rows)
    hits = demo_col.search("food", k=400, where=where)
    assert len(hits) == n_match
    assert all(check(h.metadata) for h in hits)


@pytest.mark.parametrize(
    "where",
    [
        {"year": {"$gtx": 1}},
        {"$xor": []},
        {"topic": {"$in": "music"}},
        {},
        {"year": {"$gt": [1]}},
        "not json",
    ],
)
def test_malformed_filters_are_rejected(demo_col, where):
    with pytest.raises(FilterError):
        demo_col.search("x", where=where)


def test_exclude_and_k_larger_than_collection(demo_col):
    top = demo_col.search("black holes", k=3)
    again = demo_col.search("black holes", k=3, exclude=[top[0].id])
    assert top[0].id not in {h.id for h in again}
    assert again[0].id == top[1].id
    assert len(demo_col.search("anything", k=10_000)) == len(demo_col)


def test_add_get_upsert_delete(home, encoder):
    col = embedsearch.open("docs")
    ids = col.add(TEXTS[:3], metadata=[{"n": 1}, None, {"n": 3}])
    assert len(ids) == 3 and len(set(ids)) == 3 and len(col) == 3
    assert [d.text for d in col.get(ids)] == TEXTS[:3]
    assert col.get(ids[1])[0].metadata == {}
    col.add(TEXTS[3:], ids=["d4", "d5"])
    assert len(col) == 5
    before = col.get("d4", include_vectors=True)[0].vector
    col.upsert([TEXTS[3]], ids=["d4"], metadata=[{"tag": "sport"}])  # same text: vector reused
    after = col.get("d4", include_vectors=True)[0]
    assert after.metadata == {"tag": "sport"} and np.array_equal(after.vector, before)
    col.upsert(["A brand new text about volcanoes."], ids=["d5"])
    assert col.get("d5")[0].text.startswith("A brand new")
    assert len(col) == 5
    assert col.search("volcanoes erupting", k=1)[0].id == "d5"
    assert col.delete(["d4"]) == 1
    assert "d4" not in col and len(col) == 4
    assert "d\ud800" not in col and "" not in col  # ids that can never be stored: just absent
    assert "d4" not in {h.id for h in col.search("football championship", k=10)}
    with pytest.raises(DocumentNotFoundError):
        col.get(["d4"])
    with pytest.raises(DocumentNotFoundError):
        col.delete(["d4", ids[0]])  # all or nothing
    assert ids[0] in col
    assert col.delete(["d4", ids[0]], missing_ok=True) == 1
    col.close()


def test_generator_input_is_streamed_in_batches(home, encoder, monkeypatch):
    import embedsearch.collection as collection_mod

    monkeypatch.setattr(collection_mod, "WRITE_CHUNK", 7)
    monkeypatch.setattr(collection_mod, "VECTOR_CHUNK", 14)
    col = embedsearch.open("stream")
    sizes: list[int] = []
    encode = col.encoder.encode
    monkeypatch.setattr(
        col.encoder, "encode", lambda t, **k: sizes.append(len(t)) or encode(t, **k)
    )
    texts = (f"Sentence number {i} about topic {i % 5}." for i in range(30))
    ids = col.add(texts, ids=(f"g{i}" for i in range(30)), progress=True)
    assert ids == [f"g{i}" for i in range(30)]
    assert sizes == [7, 7, 7, 7, 2]  # embedded as the generator yields
    assert len(col) == 30 and col.info()["segments"] == 3  # written 14 + 14 + 2
    col.close()
    assert len(embedsearch.open("stream")) == 30


def test_embed_returns_unit_vectors(demo_col):
    vecs = demo_col.embed(["hello world", "another text"])
    assert vecs.shape == (2, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    cat, kitten, stocks = demo_col.embed(["cat", "kitten", "stocks"])
    assert cat @ kitten > cat @ stocks + 0.3


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"texts": ["ok", ""]}, InvalidInputError),
        ({"texts": ["ok", "   "]}, InvalidInputError),
        ({"texts": ["ok", 3]}, InvalidInputError),
        ({"texts": "a single string"}, InvalidInputError),
        ({"texts": ["a", "b"], "ids": ["x"]}, InvalidInputError),
        ({"texts": ["a", "b"], "metadata": [{}]}, InvalidInputError),
        (
            {"texts": (t for t in ["a", "b", "c"]), "ids": (i for i in ["x", "y"])},
            InvalidInputError,
        ),
        ({"texts": ["a", "b"], "ids": ["x", "x"]}, DuplicateIdError),
        ({"texts": ["a"], "ids": ["existing"]}, DuplicateIdError),
        ({"texts": ["a"], "ids": [""]}, InvalidInputError),
        ({"texts": ["a"], "ids": [7]}, InvalidInputError),
        ({"texts": ["a"], "metadata": [{"x": object()}]}, InvalidInputError),
        ({"texts": ["a"], "metadata": [{"x": float("nan")}]}, InvalidInputError),
        ({"texts": ["a"], "metadata": ["not a dict"]}, InvalidInputError),
    ],
)
def test_bad_writes_raise_and_leave_disk_unchanged(home, encoder, kwargs, error):
    col = embedsearch.open("guarded")
    col.add(["an existing document"], ids=["existing"])
    snapshot = _disk_snapshot(col.path)
    texts = kwargs.pop("texts")
    with pytest.raises(error) as info:
        col.add(texts, **kwargs)
    assert len(str(info.value)) > 20  # says what to do, not just "bad"
    assert _disk_snapshot(col.path) == snapshot
    assert len(col) == 1 and col.ids() == ["existing"]
    col.close()


@pytest.mark.parametrize(
    "query, k",
    [
        (np.full(384, np.nan), 5),
        (np.ones(383), 5),
        (np.zeros(384), 5),
        ("", 5),
        ("fine", 0),
        ("fine", -3),
        ("fine", 10_001),
        ("fine", 2.5),
    ],
)
def test_bad_queries_raise(demo_col, query, k):
    with pytest.raises(InvalidInputError):
        demo_col.search(query, k=k)


def test_per_call_params_are_validated(demo_col):
    with pytest.raises(InvalidInputError):
        demo_col.search("x", nprobe=0)


def _disk_snapshot(path):
    return {
        p.relative_to(path).as_posix(): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "LOCK"
    }


def test_add_precomputed_vectors_skips_the_model(home, encoder):
    texts = ["north star navigation", "baking sourdough bread", "quarterly earnings report"]
    vecs = encoder.encode(texts)
    col = embedsearch.open("byo")
    col.add(texts, ids=["n", "b", "q"], vectors=vecs * 2.0)  # normalised on the way in
    stored = col.vectors(["n", "b", "q"])
    assert np.allclose(stored, vecs, atol=1e-6)
    assert col.search("bread baking at home", k=1)[0].id == "b"
    with pytest.raises(InvalidInputError, match=r"vectors\[0\]"):
        col.add(["x"], ids=["x"], vectors=[np.ones(5)])
    with pytest.raises(InvalidInputError, match="vectors"):
        col.add(["x", "y"], ids=["x", "y"], vectors=vecs[:1])
    assert len(col) == 3
    col.close()


def test_no_class_of_a_collection_shadows_a_mixins_method() -> None:
    """`Collection` is `CollectionBase` plus the wings' mixins; a method one of them
    defines under a name another already uses silently replaces it (a `_ranked` of the
    retrieval path once replaced the latent layer's, and vector arithmetic broke). Each
    name outside the dunders belongs to one class; only `Collection` overrides
    `CollectionBase` (its storage and its defaults, by design)."""
    import itertools

    from embedsearch.base import CollectionBase
    from embedsearch.collection import Collection
    from embedsearch.history import HistoryMixin
    from embedsearch.latent.mixin import LatentMixin
    from embedsearch.rag.mixin import RetrievalMixin

    def own(cls: type) -> set[str]:
        return {n for n in vars(cls) if not n.startswith("__")}

    classes = [Collection, CollectionBase, LatentMixin, RetrievalMixin, HistoryMixin]
    for a, b in itertools.combinations(classes, 2):
        if {a, b} == {Collection, CollectionBase}:
            continue
        shared = own(a) & own(b)
        assert not shared, f"{a.__name__} and {b.__name__} both define {sorted(shared)}"
