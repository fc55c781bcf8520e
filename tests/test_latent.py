"""Latent-space queries on real embeddings: arithmetic, analogies, move, interpolate, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import embedsearch
from embedsearch.errors import DocumentNotFoundError, InvalidInputError
from embedsearch.latent.expr import ExpressionError
from embedsearch.vocabulary import UnknownWordsError, Vocabulary

WORDS = [
    "king",
    "queen",
    "man",
    "woman",
    "prince",
    "princess",
    "boy",
    "girl",
    "father",
    "mother",
    "son",
    "daughter",
    "monarch",
    "paris",
    "france",
    "berlin",
    "germany",
    "rome",
    "italy",
    "madrid",
    "spain",
    "dog",
    "cat",
    "puppy",
    "kitten",
    "car",
    "truck",
    "breakfast",
    "lunch",
    "dinner",
    "cereal",
    "apple",
    "banana",
    "guitar",
    "piano",
    "violin",
]


@pytest.fixture(scope="module")
def vocab(encoder, tmp_path_factory: pytest.TempPathFactory):
    v = Vocabulary.build(WORDS, tmp_path_factory.mktemp("latent") / "words")
    yield v
    v.close()


def ranked_by_cosine(vocab, query: np.ndarray, exclude: set[str]) -> list[str]:
    words = vocab.words
    scores = vocab.vectors() @ (query / np.linalg.norm(query))
    order = np.argsort(-scores, kind="stable")
    return [words[i] for i in order if words[i] not in exclude]


# ----------------------------------------------------------------------------- analogies
def test_king_minus_man_plus_woman_is_queen(vocab) -> None:
    hits = vocab.expr("king - man + woman", k=5)
    assert hits[0].text == "queen" and hits[0].id == "queen"
    assert vocab.most_similar(["king", "woman"], ["man"], k=1)[0].id == "queen"
    assert vocab.most_similar_cosmul(["king", "woman"], ["man"], k=1)[0].id == "queen"
    assert vocab.analogy("man", "king", "woman", k=1)[0].id == "queen"
    assert vocab.analogy("man", "king", "woman", k=1, method="mul")[0].id == "queen"
    assert vocab.analogy("france", "paris", "germany", k=1)[0].id == "berlin"


def test_most_similar_is_3cosadd_with_inputs_excluded(vocab) -> None:
    v = vocab.vectors(["king", "woman", "man"])
    expected = ranked_by_cosine(vocab, v[0] + v[1] - v[2], {"king", "woman", "man"})
    hits = vocab.most_similar(positive=["king", "woman"], negative=["man"], k=8)
    assert [h.id for h in hits] == expected[:8]
    q = (v[0] + v[1] - v[2]) / np.linalg.norm(v[0] + v[1] - v[2])
    np.testing.assert_allclose(
        [h.score for h in hits], vocab.vectors([h.id for h in hits]) @ q, atol=1e-5
    )
    # the expression gives the same ranking as the gensim-style call
    assert [h.id for h in vocab.expr("king - man + woman", k=8)] == expected[:8]


def test_most_similar_cosmul_matches_the_formula(vocab) -> None:
    words = vocab.words
    cos = vocab.vectors() @ vocab.vectors(["king", "woman", "man"]).T
    s = (1 + cos) / 2
    score = s[:, 0] * s[:, 1] / (s[:, 2] + 1e-6)
    order = [words[i] for i in np.argsort(-score) if words[i] not in {"king", "woman", "man"}]
    hits = vocab.most_similar_cosmul(positive=["king", "woman"], negative=["man"], k=6)
    assert [h.id for h in hits] == order[:6]
    assert hits[0].score == pytest.approx(float(score[words.index(hits[0].id)]), rel=1e-5)


def test_weights_tuples_and_scale_invariance(vocab) -> None:
    base = [h.id for h in vocab.most_similar(["king", "woman"], ["man"], k=5)]
    assert [
        h.id for h in vocab.most_similar(["king", "woman"], ["man"], k=5, weights=[2, 2, 2])
    ] == base
    assert [
        h.id for h in vocab.most_similar([("king", 3.0), ("woman", 3.0)], [("man", 3.0)], k=5)
    ] == base
    assert [h.id for h in vocab.expr("2*(king - man + woman)", k=5)] == base
    # a weight changes the direction: more "woman" than "king"
    v = vocab.vectors(["king", "woman", "man"])
    expected = ranked_by_cosine(vocab, 0.2 * v[0] + v[1] - v[2], {"king", "woman", "man"})
    assert [h.id for h in vocab.expr("0.2*king + woman - man", k=5)] == expected[:5]


def test_case_is_folded_in_a_lowercased_vocabulary(vocab) -> None:
    assert [h.id for h in vocab.expr("KING - Man + woman", k=3)] == [
        h.id for h in vocab.expr("king - man + woman", k=3)
    ]
    assert "Queen" in vocab and vocab.lookup("Queen") == "queen"


def test_inputs_can_be_kept(vocab) -> None:
    hits = vocab.expr("king", k=1, exclude_inputs=False)
    assert hits[0].id == "king" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert vocab.expr("king", k=1)[0].id != "king"


def test_vector_terms_and_phrases(vocab, encoder) -> None:
    qv = vocab.vector("queen")
    hits = vocab.most_similar([qv], k=1)
    assert hits[0].id == "queen"  # vectors are not inputs: nothing is excluded
    # a multi-word phrase is embedded even in a vocabulary
    phrase = vocab.expr('"a string instrument"', k=3)
    assert {h.id for h in phrase} & {"guitar", "violin", "piano"}


def test_doesnt_match_similarity_centroid(vocab) -> None:
    assert vocab.doesnt_match(["breakfast", "lunch", "dinner", "guitar"]) == "guitar"
    v = vocab.vectors(["cat", "kitten"])
    assert vocab.similarity("cat", "kitten") == pytest.approx(float(v[0] @ v[1]), abs=1e-6)
    assert vocab.similarity("cat", "kitten") > vocab.similarity("cat", "truck")
    c = vocab.centroid(["cat", "kitten"])
    np.testing.assert_allclose(c, (v[0] + v[1]) / np.linalg.norm(v[0] + v[1]), atol=1e-6)
    np.testing.assert_allclose(vocab.centroid(["cat"]), v[0], atol=1e-6)
    cw = vocab.centroid(["cat", "kitten"], weights=[1.0, 0.0])
    np.testing.assert_allclose(cw, v[0], atol=1e-6)


# ----------------------------------------------------------------------------- errors
def test_unknown_words_are_listed_and_nothing_changes(vocab) -> None:
    before = (vocab.state_key, vocab.disk_bytes())
    with pytest.raises(UnknownWordsError) as info:
        vocab.expr("kinng - man + wooman", k=3)
    assert info.value.words == ["kinng", "wooman"]
    assert "'kinng'" in str(info.value) and "'wooman'" in str(info.value)
    with pytest.raises(InvalidInputError, match="zzzz"):
        vocab.most_similar(["zzzz"])
    with pytest.raises(InvalidInputError, match="zzzz"):
        vocab.doesnt_match(["cat", "zzzz", "dog"])
    assert (vocab.state_key, vocab.disk_bytes()) == before


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        (lambda v: v.most_similar([], ["man"]), InvalidInputError, "positive is empty"),
        (lambda v: v.most_similar_cosmul(None), InvalidInputError, "positive is empty"),
        (lambda v: v.expr("king", k=1000), InvalidInputError, r"k=1000 but .* holds 36 documents"),
        (lambda v: v.expr("king", k=0), InvalidInputError, "k must be"),
        (lambda v: v.expr("king - king"), InvalidInputError, "zero vector"),
        (lambda v: v.expr("king -"), ExpressionError, "expected a term"),
        (lambda v: v.most_similar([np.zeros(384)]), InvalidInputError, "zero vector"),
        (lambda v: v.most_similar([np.ones(5)]), InvalidInputError, "dimensions"),
        (lambda v: v.most_similar(["king"], weights=[1, 2]), InvalidInputError, "weights has 2"),
        (lambda v: v.most_similar(["king"], weights=[float("nan")]), InvalidInputError, "finite"),
        (lambda v: v.analogy("a", "b", "c", method="cos"), InvalidInputError, "method"),
        (lambda v: v.doesnt_match(["king"]), InvalidInputError, "at least two"),
        (lambda v: v.centroid([]), InvalidInputError, "at least one"),
        (lambda v: v.centroid(["cat"], weights=[1, 2]), InvalidInputError, "weights"),
        (lambda v: v.expr("@nosuchid"), DocumentNotFoundError, "nosuchid"),
        (lambda v: v.move("cat", toward=["dog"], strength=1.5), InvalidInputError, "strength"),
        (lambda v: v.interpolate("cat", "dog", steps=1), InvalidInputError, "steps"),
        (lambda v: v.interpolate("cat", "dog", method="cubic"), InvalidInputError, "method"),
        (lambda v: v.expr("king", where={"x": {"$bad": 1}}), InvalidInputError, "bad"),
    ],
)
def test_bad_input_is_a_clear_error(vocab, call, error, fragment) -> None:
    before = vocab.state_key
    with pytest.raises(error, match=fragment):
        call(vocab)
    assert vocab.state_key == before


# ----------------------------------------------------------------------------- sentences
def test_expr_on_sentences_excludes_input_texts_and_ids(demo_col, demo_rows) -> None:
    text = demo_rows[0]["text"]
    doc_id = demo_rows[0]["id"]
    assert doc_id not in [h.id for h in demo_col.expr(f'"{text}"', k=5)]
    kept = demo_col.expr(f'"{text}"', k=1, exclude_inputs=False)
    assert kept[0].id == doc_id and kept[0].score == pytest.approx(1.0, abs=1e-4)
    # @id (and a bare string that is an id) use the stored vector and exclude the document
    by_ref = demo_col.expr(f"@{doc_id}", k=3)
    assert doc_id not in [h.id for h in by_ref]
    assert [h.id for h in demo_col.most_similar([doc_id], k=3)] == [h.id for h in by_ref]
    assert by_ref[0].metadata["topic"] == demo_rows[0]["topic"]


def test_expr_where_filters_results(demo_col) -> None:
    hits = demo_col.expr("fast cars - engines", k=5, where={"topic": "sports"})
    assert len(hits) == 5 and all(h.metadata["topic"] == "sports" for h in hits)


def test_move_toward_a_concept_shifts_the_results(demo_col) -> None:
    plain = demo_col.search("an evening at home", k=10)
    still = demo_col.move("an evening at home", toward=["music"], strength=0.0, k=10)
    assert [h.id for h in still] == [h.id for h in plain]
    moved = demo_col.move("an evening at home", toward=["music", "concert"], strength=0.6, k=10)
    music = sum(h.metadata["topic"] == "music" for h in moved)
    assert music > sum(h.metadata["topic"] == "music" for h in plain)
    assert music >= 5
    away = demo_col.move("a hot dish for dinner", away=["cooking"], strength=0.5, k=10)
    near = demo_col.search("a hot dish for dinner", k=10)
    assert sum(h.metadata["topic"] == "cooking" for h in away) < sum(
        h.metadata["topic"] == "cooking" for h in near
    )


def test_interpolate_walks_between_two_documents(demo_col, demo_rows) -> None:
    a = next(r for r in demo_rows if r["topic"] == "cooking")
    b = next(r for r in demo_rows if r["topic"] == "astronomy")
    steps = demo_col.interpolate(a["id"], b["id"], steps=5, k=2)
    assert [s.t for s in steps] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert steps[0].hits[0].id == a["id"] and steps[-1].hits[0].id == b["id"]
    np.testing.assert_allclose([np.linalg.norm(s.vector) for s in steps], 1.0, atol=1e-5)
    va, vb = demo_col.vectors([a["id"], b["id"]])
    from embedsearch.latent.interpolate import slerp

    np.testing.assert_allclose(steps[2].vector, slerp(va, vb, 0.5), atol=1e-5)
    excl = demo_col.interpolate(a["id"], b["id"], steps=3, k=2, exclude_inputs=True)
    assert all(h.id not in (a["id"], b["id"]) for s in excl for h in s.hits)
    lin = demo_col.interpolate("bread", "galaxies", steps=3, method="lerp", k=1)
    assert len(lin) == 3 and lin[1].to_dict()["t"] == 0.5


def test_vocabulary_delegates_to_its_collection(vocab) -> None:
    assert isinstance(vocab.collection, embedsearch.Collection)
    assert len(vocab) == len(WORDS)
    col = embedsearch.open(Path(vocab.collection.path), create=False)
    try:  # a plain handle on the same directory behaves as a vocabulary too
        with pytest.raises(UnknownWordsError):
            col.expr("kinng")
        assert col.expr("king - man + woman", k=1)[0].id == "queen"
    finally:
        col.close()
