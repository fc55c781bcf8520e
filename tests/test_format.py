"""On-disk formats 2 and 3: memory-mapped segments, typed metadata columns, the typed
manifest, segments' id indexes, the upgrades from formats 1 and 2, and crafted manifests and index files (issue 14, findings 9-10).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from v1_format import (
    downgrade,
    rewrite_manifest,
    to_format_2,
    to_format_3,
    to_format_4,
    to_format_6,
)

import embedsearch
from embedsearch import manifest as manifest_mod
from embedsearch import store
from embedsearch.cli import main as cli_main
from embedsearch.errors import CorruptionError, DuplicateIdError
from embedsearch.idhash import IdMap, decode_run, encode_run, hash_strings
from embedsearch.maintenance import repair, verify


def _sign(obj: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in obj.items() if k != "checksum"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return {**body, "checksum": hashlib.sha256(canonical).hexdigest()}


def _write_signed(path: Path, obj: dict[str, Any]) -> None:
    (path / store.MANIFEST).write_text(json.dumps(_sign(obj)))


@pytest.fixture(scope="module")
def ivf_template(tmp_path_factory: pytest.TempPathFactory, demo_vectors: Any, demo_rows) -> Path:
    """IVF16,Flat collection over the demo vectors: 3 adds, an upsert, a delete, a saved index."""
    path = tmp_path_factory.mktemp("fmt") / "tpl"
    col = embedsearch.open(path, index="IVF16,Flat")
    vecs = np.asarray(demo_vectors)
    for lo in (0, 120, 240):
        rows = demo_rows[lo : lo + 120]
        col.add(
            [r["text"] for r in rows],
            ids=[r["id"] for r in rows],
            metadata=[{"topic": r["topic"], "year": r["year"]} for r in rows],
            vectors=vecs[lo : lo + len(rows)],
        )
    first = demo_rows[0]
    col.upsert([first["text"]], ids=[first["id"]], metadata=[{"topic": "edited"}], vectors=vecs[:1])
    col.delete([demo_rows[5]["id"], demo_rows[200]["id"]])
    col.close()
    assert store.read_manifest(path).index.file is not None
    return path


def _copy(template: Path, tmp_path: Path, name: str = "c") -> Path:
    dst = tmp_path / name
    shutil.copytree(template, dst)
    return dst


def _answers(path: Path, queries: np.ndarray) -> dict[str, Any]:
    col = embedsearch.open(path)
    try:
        return {
            "ids": col.ids(),
            "docs": [(d.id, d.text, d.metadata) for d in col.get(col.ids())],
            "approx": [
                [(h.id, round(h.score, 5)) for h in r] for r in col.batch_search(queries, 10)
            ],
            "exact": [
                [(h.id, round(h.score, 5)) for h in r]
                for r in col.batch_search(queries, 10, exact=True)
            ],
            "filtered": [h.id for h in col.search(queries[0], 10, where={"year": {"$gte": 2015}})],
        }
    finally:
        col.close()


# ----------------------------------------------------------------------------- upgrade
def _older(
    template: Path, tmp_path: Path, demo_vectors: Any, rewrite: Any
) -> tuple[Path, np.ndarray, dict[str, Any], Any]:
    """A copy of ``template`` rewritten in an older format by ``rewrite``, with the queries,
    the answers of the current format and the saved index file to compare against."""
    queries = np.asarray(demo_vectors[::37])
    want = _answers(template, queries)
    path = _copy(template, tmp_path)
    index_file = store.read_manifest(path).index.file
    rewrite(path)
    return path, queries, want, index_file


def test_format_1_collection_opens_searches_and_upgrades_with_equal_results(
    ivf_template: Path, tmp_path: Path, demo_vectors: Any, capsys: pytest.CaptureFixture
) -> None:
    path, queries, want, index_file = _older(ivf_template, tmp_path, demo_vectors, downgrade)
    raw = store.read_manifest_json(path)
    assert raw["format_version"] == 1 and all(
        s["file"].endswith(".parquet") for s in raw["segments"]
    )
    assert not list((path / "segments").glob("*.arrow"))

    col = embedsearch.open(path)  # format 1 opens as it is (read whole)
    info = col.info()
    n = len(raw["segments"])  # 3 adds and an upsert
    assert info["format_version"] == 1 and info["legacy_segments"] == n == 4
    col.close()
    assert _answers(path, queries) == want
    report = verify(path)
    assert report.ok and [p.kind for p in report.warnings] == ["format"]

    assert cli_main(["upgrade", str(path)]) == 0
    assert f"{n} segment(s)" in capsys.readouterr().out
    manifest = store.read_manifest(path)
    assert manifest.format_version == store.FORMAT_VERSION and not manifest.needs_upgrade
    assert manifest.index.file == index_file, "positions kept: the saved index stays valid"
    assert not list((path / "segments").glob("seg-*.parquet")), "old segments removed"
    assert _answers(path, queries) == want
    assert verify(path).problems == []
    assert cli_main(["upgrade", str(path)]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_first_write_upgrades_a_format_1_collection(
    ivf_template: Path, tmp_path: Path, demo_vectors: Any
) -> None:
    queries = np.asarray(demo_vectors[::50])
    path = _copy(ivf_template, tmp_path)
    want = _answers(path, queries)
    downgrade(path)
    col = embedsearch.open(path)
    col.add(["a new document"], ids=["new"], vectors=np.asarray(demo_vectors[7:8]) * -1)
    assert col.info()["format_version"] == store.FORMAT_VERSION
    assert col.info()["legacy_segments"] == 0
    assert not store.read_manifest(path).needs_upgrade
    col.close()
    got = _answers(path, queries)
    assert got["ids"] == want["ids"] + ["new"]
    assert got["exact"] == want["exact"] and got["docs"][:-1] == want["docs"]
    assert verify(path).problems == []


def test_newer_format_is_refused_with_advice(ivf_template: Path, tmp_path: Path) -> None:
    path = _copy(ivf_template, tmp_path)
    raw = store.read_manifest_json(path)
    raw["format_version"] = store.FORMAT_VERSION + 1
    _write_signed(path, raw)
    with pytest.raises(embedsearch.EmbedSearchError, match="newer embedsearch"):
        embedsearch.open(path)


# ----------------------------------------------------------------------------- segments
def test_segments_are_memory_mapped_and_checked_only_where_touched(
    tmp_path: Path, demo_vectors: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedsearch import segment as segment_mod

    BLOCK_ROWS = 64  # the demo's 350 rows in several blocks (as segments were written before)
    monkeypatch.setattr(segment_mod, "BLOCK_ROWS", BLOCK_ROWS)
    path = tmp_path / "c"
    col = embedsearch.open(path)
    vecs = np.asarray(demo_vectors)  # 350 rows: several checksum blocks
    col.add([f"t{i}" for i in range(len(vecs))], ids=[f"d{i}" for i in range(len(vecs))],
            vectors=vecs)  # fmt: skip
    col.close()
    ref = store.read_manifest(path).segments[0]
    blocks = -(-len(vecs) // BLOCK_ROWS)
    assert blocks >= 2 and ref.vectors is not None and ref.vectors.block_rows == BLOCK_ROWS
    assert len(ref.vectors.crc32) == 8 * blocks
    damaged = 300  # a row outside the first block
    assert damaged // BLOCK_ROWS > 0
    vec_file = path / ref.vectors.file
    data = bytearray(vec_file.read_bytes())
    data[damaged * col.dim * 4 + 3] ^= 0x40  # one float of that row
    vec_file.write_bytes(bytes(data))
    col = embedsearch.open(path)  # maps; reads nothing
    seg = col._table.segments[0]
    assert not seg._block_ok.any()
    got = col._table.take(np.array([1, 7]))  # intact rows are served...
    from embedsearch.validation import unit_rows

    assert np.array_equal(got, unit_rows(vecs, col.dim)[[1, 7]])  # as stored: normalised
    # a few rows (a re-rank's reads) are checked by their own checksums, not their block
    assert not seg._block_ok.any() and np.flatnonzero(seg._row_ok).tolist() == [1, 7]
    with pytest.raises(CorruptionError, match=vec_file.name):  # ...the damaged one never is
        col._table.take(np.array([damaged]))
    assert not seg._row_ok[damaged]
    col._table.take(np.arange(BLOCK_ROWS, 2 * BLOCK_ROWS + 1, 2))  # several rows of two blocks
    assert not seg._block_ok.any()
    with pytest.raises(CorruptionError, match=vec_file.name):
        col.search(np.ones(col.dim), k=3)
    assert col.get([f"d{damaged}"])[0].text == f"t{damaged}"  # texts: the intact Arrow file
    col.close()


def test_new_segments_keep_the_manifest_small_and_every_row_checked(
    tmp_path: Path, demo_vectors: Any
) -> None:
    """Segments are written with 1,024-row blocks (the manifest holds 8 hex digits a block,
    and every commit writes it twice), and a segment of more than ``ROW_CRCS_MIN_ROWS`` rows
    but one block still gets row checksums: a damaged row is refused by its own checksum,
    its neighbours served without checking the block."""
    from embedsearch.segment import BLOCK_ROWS, ROW_CRCS_MIN_ROWS

    assert BLOCK_ROWS == 1024 and ROW_CRCS_MIN_ROWS == 64
    path = tmp_path / "c"
    col = embedsearch.open(path)
    vecs = np.asarray(demo_vectors)  # 350 rows: one block, more than ROW_CRCS_MIN_ROWS
    col.add([f"t{i}" for i in range(len(vecs))], ids=[f"d{i}" for i in range(len(vecs))],
            vectors=vecs)  # fmt: skip
    col.add(["one"], ids=["one"], vectors=vecs[:1])  # a one-row add: no checksum file
    col.close()
    big, small = store.read_manifest(path).segments
    assert big.vectors is not None and big.vectors.block_rows == BLOCK_ROWS
    assert len(big.vectors.crc32) == 8 and big.crcs is not None and not big.lacks_row_crcs
    assert small.crcs is None and not small.lacks_row_crcs
    vec_file = path / big.vectors.file
    data = bytearray(vec_file.read_bytes())
    data[300 * col.dim * 4 + 3] ^= 0x40
    vec_file.write_bytes(bytes(data))
    col = embedsearch.open(path)
    seg = col._table.segments[0]
    from embedsearch.validation import unit_rows

    assert np.array_equal(col._table.take(np.array([3, 299])), unit_rows(vecs, col.dim)[[3, 299]])
    assert not seg._block_ok.any() and np.flatnonzero(seg._row_ok).tolist() == [3, 299]
    with pytest.raises(CorruptionError, match=vec_file.name):
        col._table.take(np.array([300]))
    assert not verify(path).ok
    col.close()


def test_manifest_and_version_records_are_json_a_segment_a_line(
    tmp_path: Path, demo_vectors: Any
) -> None:
    """The manifest (and each version record, which holds one) is written a member a line
    down to its segments, each segment on one line: readable, and written by json's C
    encoder (``indent=`` takes the pure-Python one). ``readable_json`` round-trips."""
    obj = {"b": [], "a": {"x": [1, {"y": "é\n"}], "z": {}}, "c": [{"k": None}, 2.5]}
    for levels in range(4):
        assert json.loads(store.readable_json(obj, levels)) == obj
    assert store.readable_json(obj, 0).count(b"\n") == 0
    path = tmp_path / "c"
    col = embedsearch.open(path)
    vecs = np.asarray(demo_vectors)
    for lo in (0, 100, 200):
        col.add([f"t{i}" for i in range(lo, lo + 100)], ids=[f"d{i}" for i in range(lo, lo + 100)],
                vectors=vecs[lo : lo + 100])  # fmt: skip
    col.close()
    raw = (path / store.MANIFEST).read_bytes()
    body = json.loads(raw)
    assert store.read_manifest(path).checksum == body["checksum"]
    lines = raw.decode().splitlines()
    seg_lines = [line for line in lines if line.startswith('  {"blocks"')]
    assert len(seg_lines) == len(body["segments"]) == 3
    assert [json.loads(line.rstrip(",")) for line in seg_lines] == body["segments"]
    from embedsearch import versions

    record = versions.record_path(path, body["generation"])
    rec_lines = record.read_text().splitlines()
    assert json.loads(record.read_text())["manifest"] == body
    assert sum(line.startswith('   {"blocks"') for line in rec_lines) == 3


def test_segments_keep_the_checksum_blocks_they_were_written_with(
    tmp_path: Path, demo_vectors: Any
) -> None:
    """A segment written with 256-row blocks (before 64, then 1,024, became the default) is
    read and checked by its own block size; a damaged row in it is still refused."""
    from embedsearch.segment import block_crcs

    path = tmp_path / "c"
    col = embedsearch.open(path)
    vecs = np.asarray(demo_vectors)
    col.add([f"t{i}" for i in range(len(vecs))], ids=[f"d{i}" for i in range(len(vecs))],
            vectors=vecs)  # fmt: skip
    col.close()
    raw = store.read_manifest_json(path)
    vref = raw["segments"][0]["vectors"]
    stored = np.fromfile(path / vref["file"], dtype="<f4").reshape(len(vecs), -1)
    vref["block_rows"], vref["crc32"] = 256, block_crcs(stored, 256)  # as older versions wrote
    store.write_manifest(path, raw)
    col = embedsearch.open(path)
    assert col._table.segments[0]._block_ok.shape == (2,)
    assert col.search(vecs[5], k=1)[0].id == "d5"
    assert verify(path).ok
    col.close()
    vec_file = path / vref["file"]
    data = bytearray(vec_file.read_bytes())
    data[300 * stored.shape[1] * 4 + 3] ^= 0x40
    vec_file.write_bytes(bytes(data))
    col = embedsearch.open(path)
    assert np.array_equal(col._table.take(np.array([3])), stored[[3]])  # block 0: intact
    with pytest.raises(CorruptionError, match=vec_file.name):
        col._table.take(np.array([300]))  # block 1 (rows 256-349) fails as a whole
    col.close()


def test_typed_metadata_columns_follow_the_json(
    tmp_path: Path, demo_vectors: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedsearch import table as table_module
    from embedsearch.columns import columns_from_json

    col = embedsearch.open(tmp_path / "c")
    vecs = np.asarray(demo_vectors[:8])
    meta = [
        {"cat": 1, "tag": "a", "score": 0.5, "ok": True, "mixed": 1, "nested": {"x": 1}},
        {"cat": 2, "tag": "b", "score": 1, "ok": False, "mixed": "one"},
        {"cat": 3, "nul": None},
        None,
    ]
    more = [{"cat": 2.5, "ok": 1}, {"tag": "c", "big": 2**60}]
    col.add([f"t{i}" for i in range(4)], ids=[f"a{i}" for i in range(4)], metadata=meta,
            vectors=vecs[:4])  # fmt: skip
    col.add(["t4", "t5"], ids=["a4", "a5"], metadata=more, vectors=vecs[4:6])
    col.close()
    col = embedsearch.open(tmp_path / "c")  # read back from disk
    first, second = (seg.typed() for seg in col._table.segments)
    assert {k: str(v.type) for k, v in first[0].items()} == {
        "cat": "int64", "tag": "string", "score": "double", "ok": "bool"
    }  # fmt: skip
    assert first[1] == ["mixed", "nested", "nul"]
    assert {k: str(v.type) for k, v in second[0].items()} == {
        "cat": "double", "ok": "int64", "tag": "string", "big": "int64"
    }  # fmt: skip
    parsed: list[Any] = []
    real = table_module.columns_from_json_array
    monkeypatch.setattr(
        table_module,
        "columns_from_json_array",
        lambda raw, paths: parsed.append(paths) or real(raw, paths),
    )
    paths = [("cat",), ("tag",), ("ok",), ("big",), ("cat", "x"), ("mixed",), ("nested", "x")]
    got = col._table.metadata_columns(paths)
    want = columns_from_json([None if m is None else json.dumps(m) for m in meta + more], paths)
    for p in paths:
        assert got[p].kind.tolist() == want[p].kind.tolist(), p
        valued = np.isin(want[p].kind, [2, 3])  # BOOL, NUMBER: where num means something
        assert got[p].num[valued].tolist() == want[p].num[valued].tolist(), p
        assert [got[p].strings[c] if c >= 0 else None for c in got[p].codes] == [
            want[p].strings[c] if c >= 0 else None for c in want[p].codes
        ], p
    # Only keys the first segment marks as mixed/nested were parsed from JSON, only there.
    assert parsed == [[("mixed",), ("nested", "x")]]
    hits = col.search(vecs[0], k=6, where={"cat": {"$gte": 2}, "ok": {"$ne": 1}})
    assert sorted(h.id for h in hits) == ["a1", "a2"]
    col.close()


def test_id_lookup_is_vectorised_and_confirms_the_id(tmp_path: Path, demo_vectors: Any) -> None:
    ids = [f"doc-{i}" for i in range(300)] + ["", "é", "a" * 600]
    hashes = hash_strings(pa.array(ids))
    assert len(set(hashes.tolist())) == len(ids)
    idmap = IdMap()
    for lo in range(0, len(ids), 40):  # many runs, merged as they grow
        idmap.add(hashes[lo : lo + 40], lo)
    qi, pos = idmap.candidates(hash_strings(pa.array(["doc-7", "doc-299", "missing"])))
    assert sorted(zip(qi.tolist(), pos.tolist())) == [(0, 7), (1, 299)]

    col = embedsearch.open(tmp_path / "c")
    vecs = np.asarray(demo_vectors[:10])
    col.add([f"t{i}" for i in range(5)], ids=[f"x{i}" for i in range(5)], vectors=vecs[:5])
    col.upsert(["T2"], ids=["x2"], vectors=vecs[5:6])
    with pytest.raises(DuplicateIdError, match="x3"):
        col.add(["again"], ids=["x3"], vectors=vecs[6:7])
    assert col.get(["x2"])[0].text == "T2" and "x2" in col and "x9" not in col
    assert col.ids() == ["x0", "x1", "x3", "x4", "x2"]
    col.delete(["x2"])
    assert "x2" not in col and len(col) == 4
    col.close()


def test_format_2_collection_opens_and_gets_its_id_indexes_on_upgrade(
    ivf_template: Path, tmp_path: Path, demo_vectors: Any, capsys: pytest.CaptureFixture
) -> None:
    path, queries, want, index_file = _older(ivf_template, tmp_path, demo_vectors, to_format_2)
    assert not list((path / "segments").glob("*.ids"))
    assert _answers(path, queries) == want  # ids hashed on first look-up, as format 2 did
    report = verify(path)
    assert (
        report.ok and [p.kind for p in report.warnings] == ["format"] * 4
    )  # ids, rows, layout, blocks
    assert "without an id index" in report.warnings[0].detail
    assert "without row checksums" in report.warnings[1].detail

    assert cli_main(["upgrade", str(path)]) == 0
    n = len(store.read_manifest(path).segments)
    assert f"{n} segment(s)" in capsys.readouterr().out
    manifest = store.read_manifest(path)
    assert manifest.format_version == store.FORMAT_VERSION and not manifest.needs_upgrade
    assert all(s.ids is not None for s in manifest.segments)
    # row checksums for the segments of more than one block (the upsert's has one row)
    assert [s.crcs is not None for s in manifest.segments] == [
        s.rows > 64 for s in manifest.segments
    ]
    assert manifest.index.file == index_file, "rows untouched: the saved index stays valid"
    assert len(list((path / "segments").glob("*.ids"))) == n
    assert _answers(path, queries) == want
    assert verify(path).problems == []

    # the first write upgrades too, and its own segment comes with an index
    path2 = _copy(ivf_template, tmp_path, "w")
    to_format_2(path2)
    col = embedsearch.open(path2)
    col.add(["a new document"], ids=["new"], vectors=np.asarray(demo_vectors[7:8]) * -1)
    assert col.get(["new", want["ids"][3]])[1].id == want["ids"][3]
    col.close()
    manifest = store.read_manifest(path2)
    assert manifest.format_version == store.FORMAT_VERSION and not manifest.needs_upgrade
    assert verify(path2).problems == []


def test_id_index_files_are_checked_and_repair_keeps_the_rows(
    ivf_template: Path, tmp_path: Path
) -> None:
    path = _copy(ivf_template, tmp_path)
    some = embedsearch.open(path).ids()
    ids_file = sorted((path / "segments").glob("*.ids"))[0]
    data = bytearray(ids_file.read_bytes())
    data[5] ^= 0xFF
    ids_file.write_bytes(bytes(data))
    col = embedsearch.open(path)
    with pytest.raises(CorruptionError, match=ids_file.name):
        col.get(some[:3])  # a look-up touches every segment's index: damage never hides ids
    col.close()
    report = verify(path)
    assert [(p.file.split("/")[-1], p.kind) for p in report.errors] == [(ids_file.name, "checksum")]
    _repair_keeps_the_rows_and_a_write_rebuilds(path, some)


def test_crafted_id_index_with_a_valid_checksum_is_refused(
    ivf_template: Path, tmp_path: Path
) -> None:
    """A crafted index whose checksums match: rows past the segment or hashes out of order
    are refused, never followed; an index of other ids is caught by ``verify``."""
    path = _copy(ivf_template, tmp_path)
    some = embedsearch.open(path).ids()[:3]
    raw0 = store.read_manifest_json(path)
    rows = raw0["segments"][0]["rows"]
    name = raw0["segments"][0]["ids"]["file"]
    hashes = np.sort(np.arange(rows, dtype=np.uint64))
    for body in (
        hashes.astype("<u8").tobytes() + np.full(rows, rows, dtype="<u4").tobytes(),
        hashes[::-1].astype("<u8").tobytes() + np.arange(rows, dtype="<u4").tobytes(),
        encode_run(hashes),  # well formed, but not this segment's ids
    ):
        (path / name).write_bytes(body)

        def edit(raw: dict[str, Any], body: bytes = body) -> None:
            raw["segments"][0]["ids"]["sha256"] = hashlib.sha256(body).hexdigest()
            raw["segments"][0]["ids"]["crc32"] = f"{zlib.crc32(body):08x}"

        _crafted(path, edit)
        col = embedsearch.open(path)
        if body == encode_run(hashes):
            assert ids_file_errors(path) == [name]
        else:
            with pytest.raises(CorruptionError, match="not the id index"):
                col.get(some)
        col.close()


def ids_file_errors(path: Path) -> list[str]:
    return [p.file for p in verify(path).errors]


def test_decode_run_round_trips_and_refuses_bad_sizes() -> None:
    ids = [f"id{i}" for i in range(100)]
    h = hash_strings(ids)
    sorted_h, local = decode_run(encode_run(h), 100)
    assert sorted_h.tolist() == sorted(h.tolist())
    assert [ids[i] for i in local] == [ids[i] for i in np.argsort(h, kind="stable")]
    with pytest.raises(ValueError, match="bytes"):
        decode_run(encode_run(h)[:-1], 100)
    idmap = IdMap()  # on-disk runs and hashed runs side by side
    idmap.add_sorted(sorted_h, local, 1000)
    idmap.add(hash_strings(["x", "y"]), 5000)
    qi, pos = idmap.candidates(hash_strings(["id42", "y", "nope"]))
    assert sorted(zip(qi.tolist(), pos.tolist())) == [(0, 1042), (1, 5001)]


# ----------------------------------------------------------------------------- crafted manifests
def _crafted(path: Path, edit: Any) -> None:
    raw = store.read_manifest_json(path)
    edit(raw)
    _write_signed(path, raw)


@pytest.mark.parametrize(
    "case",
    [
        "segment-twice",
        "segment-20000-times",
        "rows-mismatch",
        "bad-crc",
        "index-rows",
    ],
)
def test_crafted_manifests_are_corruption_errors_in_bounded_time(
    ivf_template: Path, tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _copy(ivf_template, tmp_path)

    def edit(m: dict[str, Any]) -> None:
        if case == "segment-twice":
            m["segments"].append(m["segments"][0])
        elif case == "segment-20000-times":
            m["segments"] = m["segments"][:1] * 20_000
        elif case == "rows-mismatch":
            m["rows"] += 1
        elif case == "bad-crc":
            m["segments"][0]["vectors"]["crc32"] = "xyz"
        elif case == "index-rows":
            m["index"]["file"]["rows"] = m["rows"] + 5

    _crafted(path, edit)
    # bounded work, counted rather than timed: a repeated file is refused before any entry
    # is parsed, so 20,000 copies of one segment cost no per-entry parsing at all
    parsed: list[str] = []
    real_parse = manifest_mod.SegmentRef.parse
    monkeypatch.setattr(
        manifest_mod.SegmentRef,
        "parse",
        classmethod(lambda cls, *a, **kw: parsed.append("seg") or real_parse(*a, **kw)),
    )
    with pytest.raises(CorruptionError) as info:
        embedsearch.open(path)
    assert len(parsed) < 100, f"{len(parsed)} segment entries parsed for {case}"
    expected = {
        "segment-twice": "listed more than once",
        "segment-20000-times": "listed more than once",
        "rows-mismatch": "rows",
        "bad-crc": "crc32",
        "index-rows": "index.file",
    }[case]
    assert expected in str(info.value)


def test_unknown_spec_in_a_manifest_is_exact_search_said_in_info(
    ivf_template: Path, tmp_path: Path
) -> None:
    """A spec FAISS does not know (crafted, or stored by another version) never reaches a
    FAISS call that raises: the collection answers exactly and ``info`` says why."""
    path = _copy(ivf_template, tmp_path)
    _crafted(path, lambda m: m["index"].update(spec="Bogus99", file=None, tail=[]))
    col = embedsearch.open(path)
    info = col.info()["index"]
    assert info["kind"] == "exact" and "Bogus99" in info["fallback"]
    assert len(col.search(np.ones(col.dim), k=3)) == 3
    col.close()


def test_deeply_nested_manifest_is_a_corruption_error(tmp_path: Path, ivf_template: Path) -> None:
    path = _copy(ivf_template, tmp_path)
    (path / store.MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CorruptionError):
        embedsearch.open(path)
    deep: Any = 1
    for _ in range(5000):
        deep = {"a": deep}
    raw = store.read_manifest_json(ivf_template)
    raw["model"]["extra"] = "x"
    text = json.dumps(_sign(raw))
    (path / store.MANIFEST).write_text(text[:-1] + ', "deep": ' + "[" * 50_000 + "]" * 50_000 + "}")
    with pytest.raises(CorruptionError):
        embedsearch.open(path)


# ----------------------------------------------------------------------------- crafted index files
def _resign_index(path: Path, data: bytes, rows: int | None = None) -> None:
    raw = store.read_manifest_json(path)
    ref = raw["index"]["file"]
    (path / ref["file"]).write_bytes(data)
    ref["sha256"], ref["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    ref["crc32"] = f"{zlib.crc32(data):08x}"
    if rows is not None:
        ref["rows"] = rows
    _write_signed(path, raw)


@pytest.mark.parametrize("case", ["fewer-rows", "ids-out-of-range", "other-vectors"])
def test_crafted_index_with_valid_checksum_is_detected(
    ivf_template: Path, tmp_path: Path, demo_vectors: Any, case: str
) -> None:
    from embedsearch.index import faiss

    f = faiss()
    path = _copy(ivf_template, tmp_path)
    manifest = store.read_manifest(path)
    index = f.read_index(str(path / manifest.index.file.file))
    ivf = f.extract_index_ivf(index)
    if case == "fewer-rows":
        index.remove_ids(f.IDSelectorRange(0, 100))
    elif case == "ids-out-of-range":
        ivf.make_direct_map(False)
        lst = next(i for i in range(ivf.nlist) if ivf.invlists.list_size(i))
        ids = f.rev_swig_ptr(ivf.invlists.get_ids(lst), ivf.invlists.list_size(lst))
        ids[0] = 10_000_000
    else:
        rng = np.random.default_rng(0)
        other = rng.standard_normal((index.ntotal, manifest.dim)).astype(np.float32)
        other /= np.linalg.norm(other, axis=1, keepdims=True)
        index.reset()
        index.add(other)
    data = f.serialize_index(index).tobytes()
    _resign_index(path, data)
    report = verify(path)
    assert not report.ok
    kinds = {p.kind for p in report.errors if p.file == manifest.index.file.file}
    assert kinds & {"index-shape", "index-ids", "index-content"}, report.to_dict()
    if case != "other-vectors":  # open refuses the file and rebuilds from the segments
        col = embedsearch.open(path)
        q = np.asarray(demo_vectors[3])
        assert [h.id for h in col.search(q, k=5, nprobe=16)] == [
            h.id for h in col.search(q, k=5, exact=True)
        ]
        col.close()


def test_missing_id_index_is_named_and_repair_keeps_the_rows(
    ivf_template: Path, tmp_path: Path
) -> None:
    path = _copy(ivf_template, tmp_path)
    want = embedsearch.open(path).ids()
    gone = sorted((path / "segments").glob("*.ids"))[-1]
    gone.unlink()
    with pytest.raises(CorruptionError, match=gone.name):
        embedsearch.open(path)
    assert [(p.file.split("/")[-1], p.kind) for p in verify(path).errors] == [
        (gone.name, "missing")
    ]
    assert repair(path).lost_rows == 0
    col = embedsearch.open(path)
    assert col.ids() == want and [d.id for d in col.get(want[-3:])] == want[-3:]
    col.close()


# ----------------------------------------------------------------------------- row checksums
def test_format_3_collection_gets_its_row_checksums_on_upgrade(
    ivf_template: Path, tmp_path: Path, demo_vectors: Any, capsys: pytest.CaptureFixture
) -> None:
    path, queries, want, index_file = _older(ivf_template, tmp_path, demo_vectors, to_format_3)
    assert not list((path / "segments").glob("*.crc"))
    assert _answers(path, queries) == want  # read through the block checksums, as format 3
    report = verify(path)
    assert report.ok and any("without row checksums" in p.detail for p in report.warnings)
    col = embedsearch.open(path)
    col._table.take(np.array([1, 2]))
    assert col._table.segments[0]._block_ok[0]  # no row checksums: the whole block is checked
    col.close()

    lacking = store.read_manifest(path).segments_to_upgrade  # all: none has its layout
    no_crcs = [s for s in lacking if s.lacks_row_crcs]
    assert [s.rows for s in no_crcs] == [s.rows for s in store.read_manifest(path).segments
                                         if s.rows > 64]  # fmt: skip
    assert cli_main(["upgrade", str(path)]) == 0
    n = len(lacking)
    assert f"{n} segment(s)" in capsys.readouterr().out
    manifest = store.read_manifest(path)
    assert manifest.format_version == store.FORMAT_VERSION and not manifest.needs_upgrade
    assert manifest.index.file == index_file, "rows untouched: the saved index stays valid"
    assert len(list((path / "segments").glob("*.crc"))) == len(no_crcs)
    assert all((path / s.crcs.file).stat().st_size == 4 * s.rows
               for s in manifest.segments if s.crcs)  # fmt: skip
    assert _answers(path, queries) == want
    assert verify(path).problems == []


def test_format_4_collection_gets_its_column_layouts_on_upgrade(
    ivf_template: Path, tmp_path: Path, demo_vectors: Any, capsys: pytest.CaptureFixture
) -> None:
    """Format 5 records where each typed metadata column lies in its segment's Arrow file:
    a format-4 collection reads as before (filters parse and checksum whole files), the
    upgrade adds the layouts without writing a file or touching a row, and then a filter
    maps and checks only the columns it reads."""
    path, queries, want, index_file = _older(ivf_template, tmp_path, demo_vectors, to_format_4)
    assert _answers(path, queries) == want
    report = verify(path)
    assert report.ok and any("typed column layout" in p.detail for p in report.warnings)
    files = sorted(p.name for p in (path / "segments").iterdir())

    assert cli_main(["upgrade", str(path)]) == 0
    n = len(store.read_manifest(path).segments)
    assert f"{n} segment(s)" in capsys.readouterr().out
    manifest = store.read_manifest(path)
    assert manifest.format_version == store.FORMAT_VERSION and not manifest.needs_upgrade
    assert manifest.index.file == index_file, "rows untouched: the saved index stays valid"
    assert sorted(p.name for p in (path / "segments").iterdir()) == files  # no file written
    assert all(s.columns is not None and s.columns.typed for s in manifest.segments)

    col = embedsearch.open(path)
    years = col._table.metadata_columns([("year",)])[("year",)]  # what a filter reads
    assert len(years) == sum(seg.rows for seg in col._table.segments)
    for seg in col._table.segments:  # mapped from the layout: the file neither parsed nor
        assert seg._parsed is None and not seg._verified_arrow  # checksummed whole
        held = {c.key for c in seg.ref.columns.typed}
        assert set(seg._layout_columns) == {"year"} & held  # and only the column read
    hits = col.search(queries[0], 10, where={"year": {"$gte": 2015}})
    assert [h.id for h in hits] == want["filtered"]
    col.close()
    assert _answers(path, queries) == want
    assert verify(path).problems == []


def test_a_column_layout_that_disagrees_with_its_file_is_refused_and_repaired(
    ivf_template: Path, tmp_path: Path, demo_vectors: Any
) -> None:
    """A layout whose checksum does not match its column (a damaged manifest entry, or a
    damaged column) stops the filter that reads it with an error naming the column;
    ``verify`` reports it, ``repair`` drops the layout without losing a row (filters then
    parse the checked file), and the next write records it again."""
    path = _copy(ivf_template, tmp_path)
    want = embedsearch.open(path).ids()
    query = np.asarray(demo_vectors[0])
    where = {"year": {"$gte": 2015}}
    col = embedsearch.open(path)
    expected = [h.id for h in col.search(query, 10, where=where)]
    col.close()

    def damage(obj: dict) -> None:
        column = next(c for c in obj["segments"][0]["columns"]["typed"] if c["key"] == "year")
        column["crc32"] = f"{int(column['crc32'], 16) ^ 1:08x}"

    rewrite_manifest(path, damage)
    col = embedsearch.open(path)
    with pytest.raises(embedsearch.CorruptionError, match="its column 'year'"):
        col.search(query, 10, where=where)
    assert [h.id for h in col.search(query, 10)]  # reads that use no column still work
    col.close()

    def reads(col: Any) -> None:
        assert col.ids() == want
        assert [h.id for h in col.search(query, 10, where=where)] == expected

    _reported_dropped_and_recorded_again(path, "columns", "typed columns", reads)


def _reported_dropped_and_recorded_again(path: Path, key: str, words: str, reads: Any) -> None:
    """``verify`` reports the first segment's manifest part ``key`` (a problem naming
    ``words``), ``repair`` drops it without losing a row, the collection then ``reads`` as
    before without it, and the next write records it again."""
    report = verify(path)
    assert [(p.kind, words in p.detail) for p in report.problems] == [("layout", True)]
    fixed = repair(path)
    assert fixed.lost_rows == 0 and fixed.after is not None and fixed.after.ok
    assert getattr(store.read_manifest(path).segments[0], key) is None
    col = embedsearch.open(path)
    reads(col)
    col.add(["one more"], ids=["more"], vectors=np.ones((1, col.dim), dtype=np.float32))
    col.close()
    assert not store.read_manifest(path).needs_upgrade  # the next write recorded it again
    assert verify(path).problems == []


def _row_crc_case(ivf_template: Path, tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A copy of the template, the ``.crc`` file of its first segment and the ids."""
    path = _copy(ivf_template, tmp_path)
    crc_file = path / store.read_manifest(path).segments[0].crcs.file  # type: ignore[union-attr]
    return path, crc_file, embedsearch.open(path).ids()


def _repair_keeps_the_rows_and_a_write_rebuilds(path: Path, want: list[str]) -> None:
    """``repair`` drops a damaged derived file (id index, row checksums) without losing a
    row, reads work meanwhile, and the next write rebuilds the file."""
    fixed = repair(path)
    assert fixed.lost_rows == 0 and fixed.after is not None and fixed.after.ok
    col = embedsearch.open(path)
    assert col.ids() == want and [d.id for d in col.get(want)] == want
    col._table.take(np.array([1, 2]))  # served (row checksums dropped: checked by blocks)
    col.add(["one more"], ids=["more"], vectors=np.ones((1, col.dim), dtype=np.float32))
    col.close()
    assert not store.read_manifest(path).needs_upgrade  # the next write rebuilt it
    assert verify(path).problems == []


def test_damaged_row_checksums_are_named_and_repair_keeps_the_rows(
    ivf_template: Path, tmp_path: Path
) -> None:
    path, crc_file, want = _row_crc_case(ivf_template, tmp_path)
    data = bytearray(crc_file.read_bytes())
    data[9] ^= 0x01
    crc_file.write_bytes(bytes(data))
    col = embedsearch.open(path)
    with pytest.raises(CorruptionError, match=crc_file.name):
        col._table.take(np.array([2]))
    col.close()
    assert [(p.file.split("/")[-1], p.kind) for p in verify(path).errors] == [
        (crc_file.name, "checksum")
    ]
    _repair_keeps_the_rows_and_a_write_rebuilds(path, want)


def test_crafted_row_checksums_with_valid_checksums_are_refused(
    ivf_template: Path, tmp_path: Path
) -> None:
    """Row checksums that do not match intact vectors, signed so every file checksum holds:
    the read is refused naming the ``.crc`` file (not the vectors), and ``verify`` says so."""
    from embedsearch.segment import CRC_CHUNK_ROWS

    path, crc_file, want = _row_crc_case(ivf_template, tmp_path)
    body = (np.frombuffer(crc_file.read_bytes(), dtype="<u4") ^ 1).astype("<u4").tobytes()
    crc_file.write_bytes(body)

    def edit(raw: dict[str, Any]) -> None:
        ref = raw["segments"][0]["crcs"]
        ref["sha256"] = hashlib.sha256(body).hexdigest()
        step = CRC_CHUNK_ROWS * 4
        ref["crc32"] = "".join(
            f"{zlib.crc32(body[i : i + step]):08x}" for i in range(0, len(body), step)
        )

    _crafted(path, edit)
    col = embedsearch.open(path)
    with pytest.raises(CorruptionError, match=f"{crc_file.name}.*vectors are intact"):
        col._table.take(np.array([2]))
    col.close()
    assert [p.file.split("/")[-1] for p in verify(path).errors] == [crc_file.name]
    _repair_keeps_the_rows_and_a_write_rebuilds(path, want)


def test_missing_row_checksums_are_named_and_repair_keeps_the_rows(
    ivf_template: Path, tmp_path: Path
) -> None:
    path, crc_file, want = _row_crc_case(ivf_template, tmp_path)
    crc_file.unlink()
    with pytest.raises(CorruptionError, match=crc_file.name):
        embedsearch.open(path)
    assert [(p.file.split("/")[-1], p.kind) for p in verify(path).errors] == [
        (crc_file.name, "missing")
    ]
    _repair_keeps_the_rows_and_a_write_rebuilds(path, want)


def test_verify_judges_a_fast_scan_index_without_reconstructing_it(
    tmp_path: Path, demo_vectors: Any
) -> None:
    """FAISS 1.15 crashes the process reconstructing a row of a fast-scan index read back
    from a file (``verify`` died with a segmentation fault at 1M rows). ``verify`` instead
    searches sampled rows' own vectors: the real index passes, one of other vectors (its
    checksums re-signed) is named."""
    from embedsearch.index import faiss

    f = faiss()
    path = tmp_path / "c"
    col = embedsearch.open(path, index="IVF4,PQ16x4fs")
    vecs = np.asarray(demo_vectors)
    col.add([f"t{i}" for i in range(len(vecs))], ids=[f"d{i}" for i in range(len(vecs))],
            vectors=vecs)  # fmt: skip
    col.close()
    manifest = store.read_manifest(path)
    assert manifest.index.file is not None
    index = f.read_index(str(path / manifest.index.file.file))
    assert isinstance(f.downcast_index(index), f.IndexIVFFastScan)
    assert verify(path).problems == []
    other = np.random.default_rng(0).standard_normal((index.ntotal, manifest.dim))
    other = (other / np.linalg.norm(other, axis=1, keepdims=True)).astype(np.float32)
    index.reset()
    index.add(other)
    _resign_index(path, f.serialize_index(index).tobytes())
    report = verify(path)
    assert [p.kind for p in report.errors] == ["index-content"], report.to_dict()
    assert "sampled rows come back" in report.errors[0].detail


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        (lambda c: c.update(type="int32"), "type"),
        (lambda c: c.update(nulls=10**6), "nulls"),
        (lambda c: c["buffers"].pop(), "buffers is not a list"),
        (lambda c: c["buffers"].__setitem__(-1, None), r"buffers\[1\]"),
        (lambda c: c["buffers"].__setitem__(-1, [10**9, 8]), "inside the segment's file"),
        (lambda c: c["buffers"].__setitem__(-1, [0, 7]), "at least"),  # 8 B a row
        (lambda c: c["buffers"].__setitem__(-1, [-8, 80]), "inside the segment's file"),
        (lambda c: c.update(crc32="xyz"), "crc32"),
    ],
)
def test_a_hostile_column_layout_is_refused_when_the_manifest_is_read(
    ivf_template: Path, tmp_path: Path, change: Any, refusal: str
) -> None:
    """A layout that would point a filter outside its file, or at fewer bytes than its rows
    need, never reaches a read: the collection does not open, with the field named."""
    path = _copy(ivf_template, tmp_path)

    def damage(obj: dict) -> None:
        column = next(c for c in obj["segments"][0]["columns"]["typed"] if c["key"] == "year")
        change(column)

    rewrite_manifest(path, damage)
    with pytest.raises(CorruptionError, match=refusal):
        embedsearch.open(path)


# ----------------------------------------------------------------------------- block checksums
def test_format_6_collection_gets_its_block_checksums_on_upgrade(
    ivf_template: Path, tmp_path: Path, demo_vectors: Any, capsys: pytest.CaptureFixture
) -> None:
    """Format 7 records the CRC-32 of each block of a segment's Arrow file: a format-6
    collection reads as before (a segment's first read checksums its whole file), and the
    upgrade adds the block checksums without writing a file or touching a row."""
    path, queries, want, index_file = _older(ivf_template, tmp_path, demo_vectors, to_format_6)
    assert _answers(path, queries) == want
    report = verify(path)
    assert report.ok and [p.kind for p in report.warnings] == ["format"]
    assert "without block checksums" in report.warnings[0].detail
    col = embedsearch.open(path)
    col.get([want["ids"][0]])
    assert col._table.segments[0]._verified_arrow  # no blocks: the whole file was checked
    col.close()
    files = sorted(p.name for p in (path / "segments").iterdir())

    assert cli_main(["upgrade", str(path)]) == 0
    n = len(store.read_manifest(path).segments)
    assert f"{n} segment(s)" in capsys.readouterr().out
    manifest = store.read_manifest(path)
    assert manifest.format_version == store.FORMAT_VERSION == 7 and not manifest.needs_upgrade
    assert manifest.index.file == index_file, "rows untouched: the saved index stays valid"
    assert sorted(p.name for p in (path / "segments").iterdir()) == files  # no file written
    assert all(s.blocks is not None for s in manifest.segments)
    assert _answers(path, queries) == want
    assert verify(path).problems == []


def _long_text_collection(path: Path, rows: int = 600) -> tuple[list[str], list[str]]:
    """One segment of ``rows`` rows of ~300-character texts (ids, texts)."""
    rng = np.random.default_rng(7)
    words = ["latent", "vector", "river", "quartz", "meadow", "signal", "harbor", "ember"]
    ids = [f"d{i}" for i in range(rows)]
    texts = [f"row {i}: " + " ".join(rng.choice(words, 45)) for i in range(rows)]
    col = embedsearch.open(path)
    vecs = rng.standard_normal((rows, col.dim)).astype(np.float32)
    col.add(texts, ids=ids, metadata=[{"n": i} for i in range(rows)], vectors=vecs)
    col.close()
    return ids, texts


def test_a_read_checks_only_the_blocks_it_reads_and_finds_damage_where_it_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh process reading one hit checks the blocks of the Arrow file's header, footer
    and that row's id, text and metadata, not the whole file; a damaged byte in another
    row's text stops the read of that row (naming the file and bytes), not the others, and
    ``verify`` reports it."""
    from embedsearch import segment as segment_mod

    monkeypatch.setattr(segment_mod, "ARROW_BLOCK_BYTES", 4096)
    path = tmp_path / "c"
    ids, texts = _long_text_collection(path)
    ref = store.read_manifest(path).segments[0]
    assert ref.blocks is not None and ref.blocks.block_bytes == 4096
    blocks = -(-ref.bytes // 4096)
    assert blocks > 40

    col = embedsearch.open(path)
    [doc] = col.get(["d5"])
    assert (doc.text, doc.metadata) == (texts[5], {"n": 5})
    seg = col._table.segments[0]
    assert not seg._verified_arrow and 3 <= sum(seg._arrow_ok) <= 12  # header, footer, row 5
    col.close()

    raw = bytearray((path / ref.file).read_bytes())
    at = raw.find(texts[500].encode())
    assert at > 0
    raw[at + 20] ^= 0x20  # a letter's case flipped inside row 500's text
    (path / ref.file).write_bytes(bytes(raw))
    col = embedsearch.open(path)
    assert [d.text for d in col.get(["d5", "d7"])] == [texts[5], texts[7]]
    block = (at + 20) // 4096
    with pytest.raises(CorruptionError, match=rf"fails its checksum at bytes {block * 4096}–"):
        col.get(["d500"])
    assert [d.text for d in col.get(["d6"])] == [texts[6]]  # other rows still read
    col.close()
    report = verify(path)
    assert not report.ok and [p.file for p in report.problems] == [ref.file]


def test_block_checksums_that_disagree_with_the_file_are_refused_and_repaired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest whose block checksum does not match its (intact) block stops the reads
    of that block; ``verify`` reports the block checksums, ``repair`` drops them without
    losing a row (reads then check the whole file), and the next write records them."""
    from embedsearch import segment as segment_mod

    monkeypatch.setattr(segment_mod, "ARROW_BLOCK_BYTES", 4096)
    path = tmp_path / "c"
    ids, texts = _long_text_collection(path)
    ref = store.read_manifest(path).segments[0]
    text_block = (path / ref.file).read_bytes().find(texts[300].encode()) // 4096

    def damage(obj: dict) -> None:
        blocks = obj["segments"][0]["blocks"]
        crc = blocks["crc32"]
        i = 8 * text_block
        blocks["crc32"] = crc[:i] + f"{int(crc[i : i + 8], 16) ^ 1:08x}" + crc[i + 8 :]

    rewrite_manifest(path, damage)
    col = embedsearch.open(path)
    assert col.get(["d0"])[0].text == texts[0]
    with pytest.raises(CorruptionError, match="fails its checksum at bytes"):
        [d.text for d in col.get(ids)]
    col.close()

    def reads(col: Any) -> None:
        assert [d.text for d in col.get(ids)] == texts

    _reported_dropped_and_recorded_again(path, "blocks", "block checksums", reads)
