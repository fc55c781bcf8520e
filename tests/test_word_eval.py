"""Word analogies and word-pair similarity: same numbers as gensim on the same vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedsearch.errors import InvalidInputError
from embedsearch.word_eval import evaluate_word_analogies, evaluate_word_pairs, word_vectors

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

gensim_kv = pytest.importorskip("gensim.models.keyedvectors", reason="gensim is the reference")

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
    "brother",
    "sister",
    "husband",
    "wife",
    "uncle",
    "aunt",
    "paris",
    "france",
    "berlin",
    "germany",
    "rome",
    "italy",
    "madrid",
    "spain",
    "london",
    "england",
    "tokyo",
    "japan",
    "dog",
    "dogs",
    "cat",
    "cats",
    "car",
    "cars",
    "apple",
    "apples",
    "house",
    "houses",
]

QUESTIONS = """\
: capital-common-countries
paris france berlin germany
paris france rome italy
berlin germany madrid spain
rome italy london england
madrid spain tokyo japan
london england paris france
tokyo japan berlin germany
athens greece paris france
: family
man woman king queen
man woman boy girl
father mother brother sister
king queen prince princess
son daughter husband wife
uncle aunt father mother
boy girl son daughter
this line has five words
brother sister uncle aunt
: gram8-plural
dog dogs cat cats
cat cats car cars
car cars apple apples
apple apples house houses
house houses dog dogs
Dog Dogs Car Cars
"""

PAIRS = """\
# a comment line
# Word 1\tWord 2\tHuman (mean)
king\tqueen\t8.5
man\twoman\t8.3
dog\tcat\t7.4
car\tapple\t1.2
paris\tfrance\t7.0
cat\tunicorn\t3.0
house\tdog\t2.1
malformed line without tabs
king\tcars\t1.5
"""


@pytest.fixture(scope="module")
def real_vectors(encoder) -> tuple[list[str], np.ndarray]:
    return WORDS, encoder.encode(WORDS)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    q = tmp_path / "questions.txt"
    q.write_text(QUESTIONS, "utf-8")
    p = tmp_path / "pairs.tsv"
    p.write_text(PAIRS, "utf-8")
    return q, p


def keyed(words: list[str], vectors: np.ndarray):
    kv = gensim_kv.KeyedVectors(vectors.shape[1])
    kv.add_vectors(words, vectors)
    return kv


def gensim_cosmul(kv, path: Path, restrict: int = 300_000, case_insensitive: bool = True):
    """gensim's evaluate_word_analogies protocol with most_similar_cosmul as the scorer.

    (gensim's own evaluate_word_analogies always calls most_similar; this is its loop with
    the one call swapped, to check our 3CosMul numbers.)
    """
    ok_keys = kv.index_to_key[:restrict]
    up = (lambda w: w.upper()) if case_insensitive else (lambda w: w)
    ok_vocab = {up(k): kv.get_index(k) for k in reversed(ok_keys)}
    sections, section = [], None
    for line in path.read_text("utf-8").splitlines():
        if line.startswith(": "):
            if section:
                sections.append(section)
            section = {"section": line.lstrip(": ").strip(), "correct": [], "incorrect": []}
            continue
        try:
            a, b, c, expected = [up(w) for w in line.split()]
        except ValueError:
            continue
        if any(w not in ok_vocab for w in (a, b, c, expected)):
            continue
        original, kv.key_to_index = kv.key_to_index, ok_vocab
        try:
            sims = kv.most_similar_cosmul(positive=[b, c], negative=[a], topn=5)
        finally:
            kv.key_to_index = original
        predicted = None
        for word, _ in sims:
            predicted = up(word)
            if predicted in ok_vocab and predicted not in {a, b, c}:
                break
        section["correct" if predicted == expected else "incorrect"].append((a, b, c, expected))
    if section:
        sections.append(section)
    return sections


def test_3cosadd_equals_gensim_on_real_vectors(real_vectors, files) -> None:
    words, vectors = real_vectors
    ours = evaluate_word_analogies(files[0], (words, vectors))
    score, sections = keyed(words, vectors).evaluate_word_analogies(str(files[0]))
    assert ours.as_gensim("3CosAdd") == (score, sections)
    assert ours.accuracy() == score
    # 8 + 9 + 6 well-formed questions; 'athens greece' is OOV, the five-word line is skipped
    assert ours.questions == 22
    assert ours.oov == 1
    assert [s.oov for s in ours.sections["3CosAdd"]] == [1, 0, 0, 1]
    assert ours.accuracy() > 0.5  # the model does solve most of these


def test_3cosmul_equals_gensim_cosmul_protocol(real_vectors, files) -> None:
    words, vectors = real_vectors
    ours = evaluate_word_analogies(files[0], (words, vectors))
    ref = gensim_cosmul(keyed(words, vectors), files[0])
    got = ours.as_gensim("3CosMul")[1][:-1]
    assert got == ref


def test_equality_on_many_random_questions(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    # clustered vectors so that analogies have structure and near-ties are rare
    centers = rng.normal(size=(12, 24))
    vectors = (centers[rng.integers(0, 12, 300)] + 0.6 * rng.normal(size=(300, 24))).astype(
        np.float32
    )
    lines = []
    for s in range(3):
        lines.append(f": section-{s}")
        for _ in range(400):
            lines.append(" ".join(f"w{i}" for i in rng.integers(0, 320, 4)))  # w300+ are OOV
    path = tmp_path / "random.txt"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    kv = keyed(words, vectors)
    for restrict in (300_000, 250):
        ours = evaluate_word_analogies(path, (words, vectors), restrict_vocab=restrict)
        assert ours.as_gensim("3CosAdd") == kv.evaluate_word_analogies(
            str(path), restrict_vocab=restrict
        )
        assert ours.as_gensim("3CosMul")[1][:-1] == gensim_cosmul(kv, path, restrict)
        assert 0 < ours.oov < ours.questions


def test_case_sensitive_and_dummy4unknown_match_gensim(real_vectors, files) -> None:
    words, vectors = real_vectors
    kv = keyed(words, vectors)
    for kwargs in ({"case_insensitive": False}, {"dummy4unknown": True}):
        ours = evaluate_word_analogies(files[0], (words, vectors), methods=["add"], **kwargs)
        assert ours.as_gensim("add") == kv.evaluate_word_analogies(str(files[0]), **kwargs)
    # case-sensitively, the capitalised plural question is OOV
    sensitive = evaluate_word_analogies(files[0], (words, vectors), case_insensitive=False)
    assert sensitive.oov == 2


def test_word_pairs_equal_gensim(real_vectors, files) -> None:
    words, vectors = real_vectors
    ours = evaluate_word_pairs(files[1], (words, vectors))
    pearson, spearman, oov_ratio = keyed(words, vectors).evaluate_word_pairs(str(files[1]))
    assert ours.pearson == pytest.approx(pearson[0], abs=1e-6)
    assert ours.spearman == pytest.approx(spearman[0], abs=1e-9)
    assert ours.spearman_pvalue == pytest.approx(spearman[1], rel=1e-4)
    assert ours.oov_ratio == pytest.approx(oov_ratio)
    assert (ours.pairs, ours.oov) == (7, 1)  # 'unicorn' is unknown; two lines malformed


def test_collections_and_vocabularies_are_accepted(encoder, tmp_path: Path, files) -> None:
    from embedsearch import Collection  # noqa: F401 - the public type the function accepts
    from embedsearch.vocabulary import Vocabulary

    vocab = Vocabulary.build(WORDS, tmp_path / "vocab")
    try:
        a = evaluate_word_analogies(files[0], vocab)
        b = evaluate_word_analogies(files[0], vocab.collection)
        c = evaluate_word_analogies(files[0], (vocab.words, vocab.vectors()))
        assert a.to_dict() == b.to_dict() == c.to_dict()
        assert "| family |" in a.table()
        w, m = word_vectors({"x": [1.0, 0.0], "y": [0.0, 2.0]})
        assert w == ["x", "y"] and np.allclose(np.linalg.norm(m, axis=1), 1.0)
    finally:
        vocab.close()


def test_bad_inputs(tmp_path: Path, real_vectors) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("a b c d\n: section\n", "utf-8")
    with pytest.raises(InvalidInputError, match="before any ': section' header"):
        evaluate_word_analogies(bad, real_vectors)
    empty = tmp_path / "empty.txt"
    empty.write_text(": only-a-header\n", "utf-8")
    with pytest.raises(InvalidInputError, match="no analogy questions"):
        evaluate_word_analogies(empty, real_vectors)
    with pytest.raises(InvalidInputError, match="does not exist"):
        evaluate_word_analogies(tmp_path / "missing.txt", real_vectors)
    with pytest.raises(InvalidInputError, match="method"):
        evaluate_word_analogies(bad, real_vectors, methods=["3CosFoo"])
    with pytest.raises(InvalidInputError, match="one row per word"):
        word_vectors((["a", "b"], np.ones((3, 4))))
    with pytest.raises(InvalidInputError, match="zero"):
        word_vectors((["a"], np.zeros((1, 4))))
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("nope\tnada\t1.0\n", "utf-8")
    with pytest.raises(InvalidInputError, match="usable word pairs"):
        evaluate_word_pairs(pairs, real_vectors)
