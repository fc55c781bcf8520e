"""The Arrow helpers that avoid pandas: string columns built from numpy buffers."""

from __future__ import annotations

import numpy as np
import pytest

from embedsearch.arrays import strings, utf8

ITEMS = ["", "plain", "café", "Straße", "二十", "emoji😀", "a\x00b", "", "x" * 1000]


def _reference(items: list[str], errors: str) -> tuple[list[int], bytes]:
    encoded = [s.encode("utf-8", errors) for s in items]
    return np.cumsum([0] + [len(b) for b in encoded]).tolist(), b"".join(encoded)


@pytest.mark.parametrize("items", [[], ["ascii", "only"], ITEMS, ITEMS[::-1] * 3])
def test_utf8_is_each_item_encoded(items):
    offsets, data = utf8(items)
    assert (offsets.tolist(), data) == _reference(items, "strict")
    assert strings(items).to_pylist() == items


def test_utf8_surrogates():
    items = ["ok", "lone \ud800 high", "\udc00", "é"]
    offsets, data = utf8(items, "surrogatepass")
    assert (offsets.tolist(), data) == _reference(items, "surrogatepass")
    with pytest.raises(UnicodeEncodeError):
        utf8(items)
    with pytest.raises(ValueError, match="errors="):
        utf8(items, "replace")
