"""Keyword tokens in whole arrays (:mod:`embedsearch.rag.tokens`) against bm25s's rule,
``re.findall(r"(?u)\\b\\w\\w+\\b", text.lower())`` text by text."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pytest

import embedsearch
from embedsearch.rag.bm25 import BM25Config, build_postings
from embedsearch.rag.tokens import token_rows

RULE = re.compile(r"(?u)\b\w\w+\b")
#: ASCII letters of both cases, digits, the underscore, punctuation and spaces; then
#: characters where ``\w`` and ``lower`` follow the Unicode database (accented and dotted
#: capitals, sharp s, Greek, CJK, a combining accent, a non-breaking space, an emoji).
ASCII = list("aZb_9 .,-'\n\tQxY0")
OTHER = list("éÉİßΣσ語ǅ\u0301\u00a0😀ﬁ")


def _texts(rng: np.random.Generator, n: int, other: float) -> list[str]:
    out = []
    for _ in range(n):
        pool = ASCII + OTHER if rng.random() < other else ASCII
        out.append("".join(rng.choice(pool, int(rng.integers(0, 40)))))
    return out


def _by_row(tokens: pa.Array, rows: np.ndarray, n: int) -> list[list[str]]:
    got: list[list[str]] = [[] for _ in range(n)]
    for t, r in zip(tokens.to_pylist(), rows.tolist()):
        got[r].append(t)
    return got


@pytest.mark.parametrize("other", [0.0, 0.3, 1.0])
def test_tokens_are_bm25s_tokens_row_by_row(other: float) -> None:
    rng = np.random.default_rng(int(other * 10))
    for _ in range(60):
        texts = _texts(rng, int(rng.integers(0, 40)), other)
        tokens, rows = token_rows(texts)
        assert _by_row(tokens, rows, len(texts)) == [RULE.findall(t.lower()) for t in texts]


def test_tokens_of_a_slice_and_of_texts_without_any() -> None:
    """An Arrow array that is a slice of another (its offsets start past zero); texts with
    no token at all (empty, one letter, punctuation) give none."""
    texts = ["skip me", "Alpha beta_2 x", "", "a", "?!", "gamma,delta", "Ünïcode wörds ok"]
    arr = pa.array(texts).slice(1)
    tokens, rows = token_rows(arr)
    want = [RULE.findall(t.lower()) for t in texts[1:]]
    assert _by_row(tokens, rows, len(texts) - 1) == want
    none, where = token_rows(["", "a", "?!", "b c"])
    assert len(none) == 0 and where.size == 0


def test_postings_of_texts_without_tokens_and_a_collection_of_them(tmp_path) -> None:
    """A segment whose texts hold no token builds empty postings (it raised IndexError),
    and a keyword query over a collection of such texts (single letters, punctuation)
    answers nothing instead of failing."""
    empty = build_postings(["", "a", "?!"], "source", BM25Config())
    assert empty.rows == 3 and empty.term_hash.size == 0 and not empty.doclen.any()
    col = embedsearch.open(tmp_path / "c")
    vecs = np.eye(3, col.dim, dtype=np.float32)
    col.add(["I", "a b", "?!"], ids=["i", "a", "q"], vectors=vecs)  # no two-letter run
    assert col.retrieve("anything at all", k=3, mode="bm25") == []
    col.add(["a real sentence"], ids=["r"], vectors=np.ones((1, col.dim), dtype=np.float32))
    assert [h.id for h in col.retrieve("sentence", k=3, mode="bm25")] == ["r"]
    col.close()


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_texts_split_a_few_bytes_at_a_time_give_the_same_tokens(monkeypatch, chunk) -> None:
    """ASCII texts are split :data:`~embedsearch.rag.tokens.CHUNK_BYTES` at a time (rows
    longer than a pass alone, passes cut between rows): the tokens and rows are those of
    one pass, and of the rule, row by row."""
    import embedsearch.rag.tokens as tokens_module

    rng = np.random.default_rng(chunk)
    texts = _texts(rng, 300, 0.1) + ["x" * 100 + " tail"] + _texts(rng, 50, 0.0)
    whole, whole_rows = token_rows(texts)
    monkeypatch.setattr(tokens_module, "CHUNK_BYTES", chunk)
    split, rows = token_rows(texts)
    assert split.num_chunks > 3
    assert split.to_pylist() == whole.to_pylist() and rows.tolist() == whole_rows.tolist()
    assert _by_row(split, rows, len(texts)) == [RULE.findall(t.lower()) for t in texts]
    a = build_postings(texts, "s", BM25Config())
    monkeypatch.setattr(tokens_module, "CHUNK_BYTES", 1 << 22)
    b = build_postings(texts, "s", BM25Config())
    assert a.term_hash.tolist() == b.term_hash.tolist() and (a.packed == b.packed).all()
