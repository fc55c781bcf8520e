"""embedsearch.arrays: Arrow <-> numpy without pandas, checked against pyarrow's own answers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from embedsearch import arrays

CASES = [
    pa.array([1, None, 3, -4, None, 2**40], pa.int64()),
    pa.array([1, 2, None, 7], pa.uint8()),
    pa.array([0.5, None, -1e300, 3.0], pa.float64()),
    pa.array([1.5, 2.5, None], pa.float32()),
    pa.array([True, None, False, True, True, None, False, True, False, True], pa.bool_()),
    pa.array([None, None], pa.null()),
]


@pytest.mark.parametrize("arr", CASES, ids=lambda a: str(a.type))
@pytest.mark.parametrize("window", [(0, None), (1, 3), (2, 2)])
def test_validity_and_numbers_match_pyarrow_on_slices(arr: pa.Array, window: tuple) -> None:
    lo, length = window
    part = arr.slice(lo, length)
    want_valid = ~np.asarray(part.is_null().to_pylist(), dtype=bool)
    assert arrays.validity(part).tolist() == want_valid.tolist()
    if pa.types.is_null(part.type):
        return
    got = arrays.numbers(part)
    values = part.to_pylist()
    for ok, g, v in zip(want_valid, got.tolist(), values):
        if ok:
            assert g == v


def test_strings_and_indices_round_trip() -> None:
    items = ["a", "", "héllo wörld", "x" * 1000, "日本"]
    s = arrays.strings(items)
    assert s.type == pa.string() and s.to_pylist() == items
    assert arrays.strings([]).to_pylist() == []
    idx = arrays.indices(np.array([4, 0, 2]))
    assert s.take(idx).to_pylist() == ["日本", "a", "héllo wörld"]


def test_helpers_never_import_pandas() -> None:
    code = (
        "import sys, numpy as np, pyarrow as pa\n"
        "from embedsearch import arrays\n"
        "s = arrays.strings(['b', 'a']); i = arrays.indices([1, 0])\n"
        "arrays.validity(s); arrays.numbers(pa.Array.from_buffers(pa.int64(), 2, [None, pa.py_buffer(np.arange(2))]))\n"
        "s.take(i)\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


COLUMN_CASES = [
    (["x", None, "héllo", "", "日本", None], pa.string()),
    ([None, None, None], pa.string()),
    (["a"] * 9, pa.string()),
    ([1, None, 2**62, -(2**63), 2**63 - 1, 0], pa.int64()),
    ([1.5, None, 2, -0.0, float("inf"), -1e300, 2**53], pa.float64()),
    ([True, None, False, True, True, None, False, True, False, True, None], pa.bool_()),
    ([False] * 17, pa.bool_()),
    ([], pa.string()),
    ([], pa.int64()),
]


@pytest.mark.parametrize("values,kind", COLUMN_CASES, ids=lambda c: str(c)[:20])
def test_column_is_what_pa_array_builds(values: list, kind: pa.DataType) -> None:
    got = arrays.column(values, kind)
    got.validate(full=True)
    want = pa.array(values, kind)
    assert got.type == want.type and got.null_count == want.null_count
    assert got.equals(want), (got, want)
    assert got.to_pylist() == values


def test_column_keeps_nan_and_refuses_unknown_types() -> None:
    got = arrays.column([float("nan"), None], pa.float64())
    assert np.isnan(got.to_pylist()[0]) and got.to_pylist()[1] is None
    with pytest.raises(TypeError, match="no numpy-built"):
        arrays.column([1], pa.int32())


def test_a_fresh_process_writes_a_collection_without_pandas(tmp_path) -> None:
    """A first add (typed metadata columns, ids, texts) builds its Arrow arrays from numpy:
    pyarrow's pa.array imported pandas, 0.2 s of a cold add."""
    code = (
        "import sys, numpy as np, embedsearch\n"
        f"col = embedsearch.open({str(tmp_path / 'c')!r})\n"
        "meta = [{'n': i, 'f': i / 2, 'b': i % 2 == 0, 's': f's{i}'} if i % 3 else {} "
        "for i in range(30)]\n"
        "col.add([f't{i}' for i in range(30)], ids=[f'd{i}' for i in range(30)], metadata=meta,"
        " vectors=np.eye(30, 384, dtype=np.float32) + 0.1, progress=False)\n"
        "got = [h.id for h in col.search(np.eye(30, 384, dtype=np.float32)[4] + 0.1, k=3,"
        " where={'n': {'$gte': 4}, 's': {'$ne': 's7'}, 'b': True})]\n"
        "print('pandas' in sys.modules, got[0], len(col.get(['d5'])[0].metadata))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "d4", "4"]


ITEMS = ["", "plain", "café", "Straße", "二十", "emoji😀", "a\x00b", "", "x" * 1000]


def _reference(items: list[str], errors: str) -> tuple[list[int], bytes]:
    encoded = [s.encode("utf-8", errors) for s in items]
    return np.cumsum([0] + [len(b) for b in encoded]).tolist(), b"".join(encoded)


@pytest.mark.parametrize("items", [[], ["ascii", "only"], ITEMS, ITEMS[::-1] * 3])
def test_utf8_is_each_item_encoded(items):
    offsets, data = arrays.utf8(items)
    assert (offsets.tolist(), data) == _reference(items, "strict")
    assert arrays.strings(items).to_pylist() == items


def test_utf8_surrogates():
    items = ["ok", "lone \ud800 high", "\udc00", "é"]
    offsets, data = arrays.utf8(items, "surrogatepass")
    assert (offsets.tolist(), data) == _reference(items, "surrogatepass")
    with pytest.raises(UnicodeEncodeError):
        arrays.utf8(items)
    with pytest.raises(ValueError, match="errors="):
        arrays.utf8(items, "replace")
