"""Vocabulary: word lists, persistence, resume, and what happens with bad lists."""

from __future__ import annotations

import json

import numpy as np
import pytest

import embedsearch
from embedsearch.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    InvalidInputError,
    NotACollectionError,
)
from embedsearch.vocabulary import (
    MARKER_DIR,
    MARKER_FILE,
    Vocabulary,
    default_name,
    normalize_words,
    read_word_file,
    tokenizer_words,
)


def test_tokenizer_words_are_whole_lowercase_words(encoder) -> None:
    words = tokenizer_words(encoder.tokenizer)
    assert 15_000 < len(words) < 30_000
    assert {"king", "queen", "man", "woman", "paris"} <= set(words)
    assert all(w.isalpha() and w.islower() and len(w) >= 2 for w in words)
    assert not any(w.startswith("##") or w.startswith("[") for w in words)
    assert len(set(words)) == len(words)
    assert words.index("the") < words.index("queen")  # token-id (frequency-like) order kept
    assert len(tokenizer_words(encoder.tokenizer, min_length=4)) < len(words)


def test_default_name() -> None:
    assert default_name("all-MiniLM-L6-v2") == "vocab-all-MiniLM-L6-v2"
    assert default_name("sentence-transformers/all-mpnet-base-v2") == "vocab-all-mpnet-base-v2"
    assert default_name("/models/my model/") == "vocab-my-model"


def test_word_files_and_normalisation(tmp_path) -> None:
    f = tmp_path / "words.txt"
    f.write_text("# comment\nKing 123\n\nqueen\nking\n  Paris\t9\n", "utf-8")
    assert read_word_file(f) == ["King", "queen", "king", "Paris"]
    assert normalize_words(read_word_file(f), lowercase=True) == ["king", "queen", "paris"]
    assert normalize_words(read_word_file(f), lowercase=False) == ["King", "queen", "king", "Paris"]
    with pytest.raises(InvalidInputError, match="not single words"):
        normalize_words(["fine", "new york", ""], lowercase=True)
    with pytest.raises(InvalidInputError, match="not str"):
        normalize_words(["fine", 3], lowercase=True)
    with pytest.raises(InvalidInputError, match="list of strings"):
        normalize_words("king queen", lowercase=True)
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_word_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n", "utf-8")
    with pytest.raises(InvalidInputError, match="no words"):
        read_word_file(tmp_path / "empty.txt")


def test_build_persist_reopen_and_lookup(home, encoder) -> None:
    with Vocabulary.build(["Cat", "dog", "cat", "Kitten"], name="pets") as vocab:
        assert vocab.words == ["cat", "dog", "kitten"]
        assert vocab.lowercase and "CAT" in vocab and "lion" not in vocab
        np.testing.assert_allclose(vocab["Cat"], encoder.encode(["cat"])[0], atol=1e-5)
        with pytest.raises(InvalidInputError, match="'lion'"):
            vocab.vectors(["cat", "lion"])
        assert vocab.add(["lion", "cat", "Dog"]) == 1
        assert len(vocab) == 4
        assert vocab.info()["vocabulary"]["words"] == 4
    with Vocabulary.open("pets") as again:
        assert again.words == ["cat", "dog", "kitten", "lion"]
        assert again.info()["count"] == 4
    with pytest.raises(CollectionExistsError, match="overwrite=True"):
        Vocabulary.build(["x"], name="pets")
    with Vocabulary.build(["Owl"], name="pets", overwrite=True, lowercase=False) as fresh:
        assert fresh.words == ["Owl"] and "owl" not in fresh


def test_build_from_a_file(home, tmp_path) -> None:
    f = tmp_path / "list.txt"
    f.write_text("alpha\nbeta 2\n", "utf-8")
    with Vocabulary.build(f, name="greek") as vocab:
        assert vocab.words == ["alpha", "beta"]
        assert vocab.info()["vocabulary"]["source"] == {"type": "file", "path": str(f.resolve())}


def test_interrupted_build_resumes(home, tmp_path) -> None:
    f = tmp_path / "list.txt"
    f.write_text("red\ngreen\nblue\n", "utf-8")
    with Vocabulary.build(f, name="colours") as vocab:
        path = vocab.collection.path
        vocab.collection.delete(["blue"])
    marker = path / MARKER_DIR / MARKER_FILE
    info = json.loads(marker.read_text("utf-8"))
    info["complete"] = False  # as if the process died while embedding
    marker.write_text(json.dumps(info), "utf-8")
    with Vocabulary.open("colours") as resumed:
        assert sorted(resumed.words) == ["blue", "green", "red"]
        assert resumed.info()["vocabulary"]["complete"] is True


def test_not_a_vocabulary_and_missing(home, encoder) -> None:
    col = embedsearch.open("plain")
    col.add(["some text"], ids=["a"])
    try:
        with pytest.raises(NotACollectionError, match="not a vocabulary"):
            Vocabulary(col)
        with pytest.raises(NotACollectionError):
            Vocabulary.open("plain")
        with pytest.raises(NotACollectionError):
            Vocabulary.build(["x"], name="plain")
    finally:
        col.close()
    with pytest.raises(CollectionNotFoundError, match="vocab build"):
        Vocabulary.open("nope")
    with pytest.raises(CollectionNotFoundError):
        Vocabulary.open(build=False)  # the default one is not built in a fresh home
    assert not (home / default_name()).exists()


def test_plain_collections_embed_unknown_words(demo_col) -> None:
    # outside a vocabulary, a single word that is no document id is simply embedded
    hits = demo_col.expr("telescope", k=3)
    assert all(h.metadata["topic"] == "astronomy" for h in hits)
