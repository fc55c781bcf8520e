"""Vectorised filters (typed columns) give exactly the row-by-row semantics of filters.py.

Mixed-type keys, nested paths, lists, nulls, booleans next to numbers, huge integers
(decided from the JSON), absent keys: every filter is checked against the reference
predicate on the same rows, and through a real collection's search.
"""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import embedsearch
from embedsearch.columns import KeyColumn
from embedsearch.filters import column_mask, filter_mask
from embedsearch.segment import MemorySegment
from embedsearch.table import Table

VALUES: list[Any] = [
    0,
    1,
    2,
    1.0,
    2.5,
    -3,
    True,
    False,
    None,
    "a",
    "b",
    "B",
    "",
    "é",
    "1",
    [1, 2],
    {"x": 1},
    2**60 + 1,
    2**60,
    1e300,
]


def _meta(rng: random.Random) -> dict[str, Any] | None:
    if rng.random() < 0.05:
        return None
    out: dict[str, Any] = {}
    for key in ("a", "b", "c.d"):
        if rng.random() < 0.8:
            out[key] = rng.choice(VALUES)
    if rng.random() < 0.6:
        out["n"] = {"x": rng.choice(VALUES)} if rng.random() < 0.8 else rng.choice(VALUES)
    return out


def _operand(rng: random.Random) -> Any:
    return rng.choice([v for v in VALUES if not isinstance(v, (list, dict))])


def _leaf(rng: random.Random) -> dict[str, Any]:
    key = rng.choice(["a", "b", "n.x", "n", "zz", "c.d", "n.x.y"])
    op = rng.choice(["$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists", "="])
    if op == "=":
        return {key: _operand(rng)}
    if op in ("$in", "$nin"):
        return {key: {op: [_operand(rng) for _ in range(rng.randint(0, 4))]}}
    if op == "$exists":
        return {key: {op: rng.random() < 0.5}}
    if op.startswith(("$g", "$l")):
        arg = rng.choice([0, 1, 1.5, -3, "a", "B", "", 2**60])
        return {key: {op: arg}}
    return {key: {op: _operand(rng)}}


def _filter(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    r = rng.random()
    if depth < 3 and r < 0.15:
        return {"$and": [_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    if depth < 3 and r < 0.3:
        return {"$or": [_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    if depth < 3 and r < 0.4:
        return {"$not": _filter(rng, depth + 1)}
    if r < 0.5:
        return {**_leaf(rng), **_leaf(rng)}
    return _leaf(rng)


def _table(metas: list[dict[str, Any] | None], chunks: int) -> Table:
    import pyarrow as pa

    table = Table(4)
    bounds = np.linspace(0, len(metas), chunks + 1).astype(int)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        raw = [None if m is None else json.dumps(m) for m in metas[lo:hi]]
        ids = [f"r{i}" for i in range(lo, hi)]
        table.append(
            MemorySegment(
                pa.array(ids),
                pa.array(ids),
                pa.array(raw, pa.string()),
                np.zeros((hi - lo, 4), np.float32),
            )
        )
    return table


def test_column_masks_equal_the_row_predicate_on_mixed_metadata() -> None:
    rng = random.Random(7)
    metas = [_meta(rng) for _ in range(600)]
    table = _table(metas, chunks=3)  # string dictionaries merged across chunks
    tried = 0
    for _ in range(600):
        where = _filter(rng)
        want = filter_mask(where, metas)
        got = column_mask(where, table.rows, table.metadata_columns, table.metadata_rows)
        assert got.dtype == bool and (got == want).all(), (where, np.flatnonzero(got != want))
        tried += int(0 < want.sum() < len(metas))
    assert tried > 200  # most filters split the rows (the comparison is not vacuous)


def test_columns_follow_appends() -> None:
    rng = random.Random(8)
    metas = [_meta(rng) for _ in range(200)]
    table = _table(metas[:100], chunks=2)
    where = {"a": {"$in": ["a", 2]}}
    first = column_mask(where, table.rows, table.metadata_columns, table.metadata_rows)
    assert (first == filter_mask(where, metas[:100])).all()
    more = _table(metas[100:], chunks=1)
    table.append(
        MemorySegment(
            pa.array(["x" + str(i) for i in range(100)]),
            more.segments[0].texts(),
            more.segments[0].metadata_json(),
            np.zeros((100, 4), np.float32),
        )
    )
    got = column_mask(where, table.rows, table.metadata_columns, table.metadata_rows)
    assert (got == filter_mask(where, metas)).all()
    # one copy of each row's column: the per-segment parts are views of the whole column
    whole = table.metadata_columns([("a",)])[("a",)]
    parts = table._seg_cols[("a",)]
    assert len(parts) == 3 and sum(len(p) for p in parts) == len(whole) == 200
    for part in parts:
        for name in ("kind", "num", "codes"):
            assert np.shares_memory(getattr(part, name), getattr(whole, name)), name


def test_typed_arrow_columns_convert_without_python_rows() -> None:
    import pyarrow as pa

    col = KeyColumn.from_arrow(pa.array(["b", None, "a", "b"]))
    assert col.kind.tolist() == [4, 0, 4, 4] and col.strings.tolist() == ["a", "b"]
    assert col.codes.tolist() == [1, -1, 0, 1]
    nums = KeyColumn.from_arrow(pa.array([3, None, 2**60]))
    assert nums.kind.tolist() == [3, 0, 6] and nums.undecided.tolist() == [2]


def test_joined_string_columns_keep_one_dictionary() -> None:
    """Segments with the same strings join without re-mapping (the dictionary of the first
    is kept); different strings are merged into one sorted dictionary. Either way each row
    decodes to its own value."""
    same = [KeyColumn.from_arrow(pa.array(v)) for v in (["t1", "t0"], ["t0", None, "t1"])]
    joined = KeyColumn.concat(same)
    assert joined.strings is same[0].strings
    mixed = [
        *same,
        KeyColumn.from_arrow(pa.array(["a", "t1"])),
        KeyColumn.from_arrow(pa.array([5])),
    ]
    for parts in (same, mixed):
        joined = KeyColumn.concat(parts)
        rows = [v for p in parts for v in zip(p.codes.tolist(), [p.strings] * len(p))]
        want = [s[c] if c >= 0 else None for c, s in rows]
        got = [joined.strings[c] if c >= 0 else None for c in joined.codes.tolist()]
        assert got == want and list(joined.strings) == sorted(set(joined.strings))


def test_collection_filters_match_the_reference(home) -> None:
    rng = random.Random(9)
    metas = [_meta(rng) or {} for _ in range(300)]
    vecs = np.random.default_rng(0).normal(size=(300, 384)).astype(np.float32)
    col = embedsearch.open("mixed")
    ids = [f"d{i}" for i in range(300)]
    col.add(ids, ids=ids, metadata=metas, vectors=vecs, progress=False)
    for _ in range(40):
        where = _filter(rng)
        want = {ids[i] for i in np.flatnonzero(filter_mask(where, metas))}
        got = {h.id for h in col.search(vecs[0], k=300, where=where)}
        assert got == want, where
        plan = col.explain(where=where)
        assert plan["plan"] == "exact" and plan["matching"] == len(want) and plan["rows"] == 300
    assert col.explain()["matching"] is None and col.explain()["selectivity"] is None
    col.close()


@pytest.mark.parametrize("where", [{"a": {"$gt": True}}, {"a": {"$in": 3}}])
def test_bad_filters_still_fail_before_work(where) -> None:
    from embedsearch.errors import FilterError

    with pytest.raises(FilterError):
        column_mask(where, 0, lambda p: {}, lambda p: [])


def test_arrow_parsed_columns_equal_the_row_predicate() -> None:
    """One type per key and no JSON null: the pyarrow JSON reader path, same answers."""
    from embedsearch import columns

    rng = random.Random(10)
    metas = [
        {
            "cat": i % 13,
            "tag": rng.choice(["x", "y", "zz", "é"]),
            "score": rng.random(),
            "flag": rng.random() < 0.5,
            "tags": ["a", "b"][: i % 3],
            "n": {"x": i % 5, "s": "k" + str(i % 3)},
            **({"opt": i} if i % 4 else {}),
        }
        for i in range(500)
    ]
    table = _table(metas, chunks=4)
    raw = table.segments[0].metadata_json()
    assert columns._arrow_parse(raw, [("cat",), ("n", "x")])[("cat",)].kind.tolist()[:3] == [3] * 3
    leaves = [
        {"cat": {"$in": [1, 2, 3]}},
        {"tag": {"$gte": "y"}},
        {"score": {"$lt": 0.3}},
        {"flag": True},
        {"tags": {"$exists": True}},
        {"tags": "a"},
        {"n.x": {"$ne": 2}},
        {"n.s": {"$in": ["k1", "q"]}},
        {"opt": {"$exists": False}},
        {"n": {"$ne": 1}},
        {"n.x.y": {"$exists": True}},
        {"cat": 1.0},
        {"flag": 1},
    ]
    for i, a in enumerate(leaves):
        for b in leaves[i:]:
            for where in ({**a, **b}, {"$or": [a, b]}, {"$not": {"$and": [a, b]}}):
                got = column_mask(where, table.rows, table.metadata_columns, table.metadata_rows)
                assert (got == filter_mask(where, metas)).all(), where


def test_joining_a_keys_columns_hands_the_freed_heap_back(monkeypatch) -> None:
    """Building a key's whole column frees its per-segment arrays; past TRIM_AFTER_BYTES the
    C heap is trimmed so that RSS falls with them (glibc keeps freed blocks otherwise)."""
    import embedsearch.table as table_mod

    table_mod.trim_heap()  # the real call: a no-op where libc has no malloc_trim
    calls: list[int] = []
    monkeypatch.setattr(table_mod, "trim_heap", lambda: calls.append(1))
    rng = random.Random(4)
    metas = [_meta(rng) for _ in range(300)]
    table = _table(metas, chunks=3)

    def parts_bytes(key: str) -> int:  # kind, num and codes of each segment's part
        built = [table_mod._segment_columns(seg, [(key,)])[(key,)] for seg in table._segments]
        assert len(built) == 3
        return sum(table_mod._owned_bytes(part) for part in built)

    assert parts_bytes("a") > 300 and parts_bytes("b") > 300  # mixed keys: real arrays
    monkeypatch.setattr(table_mod, "TRIM_AFTER_BYTES", parts_bytes("a") + 1)
    table.metadata_columns([("a",)])
    assert calls == []  # fewer bytes freed than the threshold
    monkeypatch.setattr(table_mod, "TRIM_AFTER_BYTES", parts_bytes("b"))
    table.metadata_columns([("b",)])
    assert calls == [1]
    table.metadata_columns([("b",)])  # cached: nothing joined, nothing freed
    assert calls == [1]


def test_integer_columns_are_kept_narrow_and_answer_every_bound_as_float64_would() -> None:
    """A collection's columns are compact (int8/16/32 numbers, narrow string codes, one
    value repeated held once), and comparing them with any number bound (fractional,
    beyond the type's range, infinite) gives the reference answer."""
    rng = random.Random(12)
    metas: list[dict[str, Any] | None] = []
    for i in range(600):  # four segments: int8, int16, int32 and int16 ranges for "w"
        seg = i // 150
        wide = [100, 30_000, 2_000_000_000, 1000][seg]
        metas.append(
            {
                "cat": i % 100,
                "w": rng.randint(-wide, wide),
                "f": rng.randint(-10, 10) + (0.5 if i % 2 else 0),
                "tag": "t" + str(i % 7),
                "s": rng.randint(-120, 120),
            }
        )
    table = _table(metas, chunks=4)
    cols = table.metadata_columns([("cat",), ("tag",), ("w",), ("s",), ("f",)])
    cat, tag, w, s, f = (cols[(k,)] for k in ("cat", "tag", "w", "s", "f"))
    assert cat.num.dtype == np.int8 and s.num.dtype == np.int8 and w.num.dtype == np.int32
    assert f.num.dtype == np.float64
    assert tag.codes.dtype == np.int8 and tag.num.strides == (0,) and tag.kind.strides == (0,)
    assert cat.kind.strides == (0,) and cat.codes.strides == (0,)
    parts = table._seg_cols[("w",)]
    assert [p.num.dtype for p in parts] == [np.int32] * 4  # views of the joined column
    bounds = [0, 2.5, -2.5, 99.5, 127, 127.5, 128, -128.5, -129, 300, 1e300, -1e300]
    bounds += [2**31, 2**31 - 0.5, -(2**31) - 1, 32767.5, float("inf"), float("-inf")]
    for key in ("cat", "s", "w", "f"):
        for b in bounds:
            for op in ("$lt", "$lte", "$gt", "$gte", "$eq", "$ne"):
                where = {key: {op: b}}
                got = column_mask(where, table.rows, table.metadata_columns, table.metadata_rows)
                assert (got == filter_mask(where, metas)).all(), where
        for values in ([1, 2.5, 300, -129.0], [float(v) for v in range(-5, 20)], [1e300, 0.5]):
            for op in ("$in", "$nin"):
                where = {key: {op: values}}
                got = column_mask(where, table.rows, table.metadata_columns, table.metadata_rows)
                assert (got == filter_mask(where, metas)).all(), where


def _empty_string_collection(path) -> np.ndarray:
    """A collection whose typed column ``tag`` has no bytes: every value is ""."""
    vecs = np.random.default_rng(3).standard_normal((3, 384)).astype(np.float32)
    col = embedsearch.open(path)
    col.add(["a", "b", "c"], ids=["x", "y", "z"], metadata=[{"tag": ""}] * 3, vectors=vecs)
    col.close()
    return vecs


def test_a_string_column_without_bytes_keeps_the_collection_readable(tmp_path) -> None:
    """A string key whose values are all "" (or, after compaction, all absent) has a column
    of no bytes: Arrow hands a shared empty buffer lying anywhere in memory, and its address
    had been recorded as the column's place in the file. The manifest then named bytes past
    the file: the next filter failed and the collection no longer opened."""
    from embedsearch import maintenance

    vecs = _empty_string_collection(tmp_path / "c")
    seg = json.loads((tmp_path / "c" / "manifest.json").read_text())["segments"][0]
    column = seg["columns"]["typed"][0]
    assert column["buffers"][2] == [column["buffers"][1][0], 0]  # where the column starts
    col = embedsearch.open(tmp_path / "c")
    assert sorted(h.id for h in col.search(vecs[0], k=3, where={"tag": ""})) == ["x", "y", "z"]
    assert col.search(vecs[0], k=3, where={"tag": {"$ne": ""}}) == []
    col.close()
    assert maintenance.verify(tmp_path / "c").ok

    col = embedsearch.open(tmp_path / "d")  # the case the stateful test found
    col.add(["t", "u"], ids=["d1", "d0"], metadata=[{}, {"g": 0, "tag": "a"}], vectors=vecs[:2])
    col.delete(["d0"])
    col.compact()
    assert [h.id for h in col.search(vecs[0], k=1, where={"tag": {"$ne": "a"}})] == ["d1"]
    col.close()
    col = embedsearch.open(tmp_path / "d")
    assert len(col) == 1 and col.search(vecs[0], k=1, where={"g": 0}) == []
    col.close()
    assert maintenance.verify(tmp_path / "d").ok


def test_a_manifest_that_recorded_an_empty_buffer_anywhere_still_opens(tmp_path) -> None:
    """Collections written before the fix recorded the empty buffer at an address far
    outside the file (with the column's checksum taken up to the file's end): they open,
    filter and pass ``verify``; a non-empty buffer outside the file is still refused."""
    from v1_format import rewrite_manifest

    from embedsearch import maintenance
    from embedsearch.checksums import crc32
    from embedsearch.errors import CorruptionError

    vecs = _empty_string_collection(tmp_path / "c")
    seg = json.loads((tmp_path / "c" / "manifest.json").read_text())["segments"][0]
    data = (tmp_path / "c" / seg["file"]).read_bytes()

    def as_before(m: dict) -> None:
        column = m["segments"][0]["columns"]["typed"][0]
        assert column["buffers"][2][1] == 0
        column["buffers"][2] = [2**47, 0]  # as an address had made it
        column["crc32"] = f"{crc32(data[column['buffers'][1][0] :]):08x}"

    rewrite_manifest(tmp_path / "c", as_before)
    col = embedsearch.open(tmp_path / "c")
    assert sorted(h.id for h in col.search(vecs[1], k=3, where={"tag": ""})) == ["x", "y", "z"]
    col.close()
    assert maintenance.verify(tmp_path / "c").ok

    def outside(m: dict) -> None:
        m["segments"][0]["columns"]["typed"][0]["buffers"][1] = [2**47, 16]

    rewrite_manifest(tmp_path / "c", outside)
    with pytest.raises(CorruptionError, match="inside the segment's file"):
        embedsearch.open(tmp_path / "c")
