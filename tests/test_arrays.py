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
