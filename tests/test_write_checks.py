"""The checks of a write's rows, done a chunk at a time (``CollectionBase._checked_chunks``).

Large writes check each chunk of plain values with whole-column passes
(``plain_texts``, ``plain_ids``, ``plain_metadata``) and fall back to the per-row checks
for any chunk those do not clear. These tests hold the column passes to the per-row rules
(whatever they clear, the per-row checks accept, with the same canonical JSON) and the
chunked write to the behaviour of a row-by-row one: the first bad row is the one named,
duplicates are found across chunks, and any input shape gives the same rows.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import embedsearch
from embedsearch import DuplicateIdError, InvalidInputError
from embedsearch import collection as collection_mod
from embedsearch.maintenance import verify
from embedsearch.validation import (
    MAX_ID_LENGTH,
    check_id,
    check_metadata,
    check_text,
    plain_ids,
    plain_metadata,
    plain_texts,
)

SETTINGS = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


class Text(str):
    """A str subclass: the per-row check accepts it, the column pass leaves it to that."""


STRINGS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["", " ", "\t\n", "\u3000", "a\x00b", "\ud800", "ok \udfff", "x" * (MAX_ID_LENGTH + 1)]
    ),
    st.builds(Text, st.text(min_size=1, max_size=5)),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    STRINGS,
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=2), st.dictionaries(STRINGS, SCALARS))
KEYS = st.one_of(STRINGS, st.integers(0, 3), st.builds(Text, st.text(min_size=1, max_size=3)))
METADATA = st.one_of(
    st.none(),
    st.dictionaries(KEYS, VALUES, max_size=4),
    st.sampled_from([[], "cat", 3, {"deep": {"er": {"than": {"allowed": {"x": 1}}}}}]),
)


def _passes(check: Any, value: Any) -> bool:
    try:
        check(value, "x")
    except InvalidInputError:
        return False
    return True


@SETTINGS
@given(st.lists(STRINGS, max_size=6))
def test_a_column_of_texts_or_ids_is_cleared_only_when_every_row_check_passes(
    items: list[Any],
) -> None:
    if plain_texts(items):
        assert all(_passes(check_text, t) for t in items)
    if plain_ids(items):
        assert all(_passes(check_id, d) for d in items)
    plain = [t for t in items if type(t) is str and t.strip() and _passes(check_text, t)]
    assert plain_texts(plain)  # plain values are cleared: the fast path is taken


@SETTINGS
@given(st.lists(METADATA, max_size=5))
def test_a_column_of_metadata_is_encoded_exactly_as_row_by_row(metadata: list[Any]) -> None:
    out = plain_metadata(metadata)
    if out is not None:
        assert out == [check_metadata(m, "x") for m in metadata]


def test_plain_metadata_is_cleared_and_refusals_fall_back() -> None:
    rows = [{"cat": 1, "tag": "t", "x": 0.5, "ok": True, "none": None}, None, {}]
    assert plain_metadata(rows) == [check_metadata(m, "x") for m in rows]
    for bad in ({"x": math.nan}, {1: "a"}, {"x": [1]}, {"x": "\ud800"}, "cat"):
        assert plain_metadata([rows[0], bad]) is None


# ----------------------------------------------------------------------------- chunked writes
@pytest.fixture
def col(tmp_path: Path):
    c = embedsearch.open(tmp_path / "c")
    yield c
    c.close()


def _rows(n: int) -> tuple[list[str], list[str], list[dict[str, Any]], np.ndarray]:
    rng = np.random.default_rng(0)
    texts = [f"document {i}" for i in range(n)]
    ids = [f"d{i}" for i in range(n)]
    meta = [{"cat": i % 3, "tag": f"t{i}"} for i in range(n)]
    return texts, ids, meta, rng.standard_normal((n, 384)).astype(np.float32)


def _chunks(col: Any, *args: Any, size: int = 4) -> list[Any]:
    return list(col._checked_chunks(*args, size))


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"metadata": (5, {"x": math.nan}), "texts": (9, "")}, "metadata[5]"),
        ({"texts": (3, " "), "metadata": (5, {"x": math.nan})}, "texts[3]"),
        ({"ids": (6, ""), "vectors": (2, None)}, "vectors[2]"),
        ({"vectors": (10, None), "ids": (7, "a\x00")}, "ids[7]"),
    ],
)
def test_the_first_bad_row_is_named_whichever_column_it_is_in(
    col: Any, where: dict[str, tuple[int, Any]], expected: str
) -> None:
    texts, ids, meta, vecs = _rows(12)
    columns = {"texts": texts, "ids": ids, "metadata": meta, "vectors": [list(v) for v in vecs]}
    for name, (row, value) in where.items():
        columns[name][row] = [0.0] * 384 if name == "vectors" else value
    with pytest.raises(InvalidInputError, match=re.escape(expected)):
        _chunks(col, columns["texts"], columns["ids"], columns["metadata"], columns["vectors"])


def test_an_id_repeated_in_a_later_chunk_is_a_duplicate(col: Any) -> None:
    texts, ids, meta, vecs = _rows(12)
    ids[10] = ids[1]
    with pytest.raises(DuplicateIdError, match="'d1' appears twice"):
        _chunks(col, texts, ids, meta, vecs)
    with pytest.raises(DuplicateIdError, match="'d1' appears twice"):
        _chunks(col, iter(texts), iter(ids), iter(meta), iter(vecs))


def test_lists_generators_and_row_checked_values_give_the_same_chunks(col: Any) -> None:
    texts, ids, meta, vecs = _rows(10)
    texts[2], ids[7] = Text("a str subclass"), "   "  # accepted, but only row by row
    meta[4] = {"nested": {"a": [1, 2]}}
    shapes = [
        (texts, ids, meta, vecs),
        (tuple(texts), tuple(ids), tuple(meta), [v.tolist() for v in vecs]),
        (iter(texts), iter(ids), iter(meta), iter(vecs)),
    ]
    results = [_chunks(col, *shape) for shape in shapes]
    first = results[0]
    assert [len(c.ids) for c in first] == [4, 4, 2]
    assert [i for c in first for i in c.ids] == ids
    assert [t for c in first for t in c.texts] == texts
    assert [j for c in first for j in c.metadata_json] == [check_metadata(m, "x") for m in meta]
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    np.testing.assert_allclose(np.concatenate([c.vectors for c in first]), unit, atol=1e-6)
    for other in results[1:]:
        assert [(c.texts, c.ids, c.metadata_json) for c in other] == [
            (c.texts, c.ids, c.metadata_json) for c in first
        ]
        np.testing.assert_allclose(
            np.concatenate([c.vectors for c in other]),
            np.concatenate([c.vectors for c in first]),
            atol=1e-6,
        )


def test_no_ids_are_generated_unique_and_no_metadata_stays_none(col: Any) -> None:
    texts, _, _, vecs = _rows(9)
    chunks = _chunks(col, texts, None, None, vecs)
    ids = [i for c in chunks for i in c.ids]
    assert len(set(ids)) == 9 and all(len(i) == 32 for i in ids)
    assert all(m is None for c in chunks for m in c.metadata + c.metadata_json)


def test_a_bad_row_in_a_later_chunk_fails_the_write_and_changes_nothing(
    col: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collection_mod, "VECTOR_CHUNK", 8)
    texts, ids, meta, vecs = _rows(20)
    col.add(texts[:3], ids=ids[:3], metadata=meta[:3], vectors=vecs[:3])
    meta[13] = {"when": math.inf}
    with pytest.raises(InvalidInputError, match=re.escape("metadata[10]")):
        col.add(texts[3:], ids=ids[3:], metadata=meta[3:], vectors=vecs[3:])
    assert len(col) == 3
    assert verify(col.path).ok
    col.add(texts[3:13], ids=ids[3:13], metadata=meta[3:13], vectors=vecs[3:13])
    assert len(col) == 13
    assert col.get(["d12"])[0].metadata == {"cat": 0, "tag": "t12"}


def test_numpy_arrays_of_texts_and_ids_are_written_as_lists_would_be(col: Any) -> None:
    texts, ids, meta, vecs = _rows(6)
    col.add(np.array(texts), ids=np.array(ids), metadata=meta, vectors=vecs)
    assert [d.text for d in col.get(ids)] == texts
    assert col.get(["d4"])[0].metadata == meta[4]
