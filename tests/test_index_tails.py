"""Tail files of a saved index (format 6): an add saves the codes of its own rows, not the
whole index again; a reader appends them to the saved file and answers as if it held them."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import zlib

import numpy as np
import pytest

import embedsearch
from embedsearch import collection as collection_module
from embedsearch import index as index_module
from embedsearch import maintenance, store
from embedsearch.index import SearchOptions, VectorIndex

DIM = 384
SPECS = ["IVF16,PQ48x4fs", "IVF16,SQ8", "IVF16,Flat", "IVF16,PQ16"]


def _vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, DIM))
    x = centres[rng.integers(0, 40, n)] + 0.6 * rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _saved(index: VectorIndex) -> bytes:
    out = io.BytesIO()
    index.save(out)
    return out.getvalue()


def _loaded(spec: str, data: bytes, info: dict) -> VectorIndex:
    index = VectorIndex(spec, DIM)
    index.load(io.BytesIO(data), info)
    return index


@pytest.mark.parametrize("spec", SPECS)
def test_an_index_read_with_its_tail_answers_as_the_index_it_was_saved_from(spec) -> None:
    x = _vectors(6000, 1)
    built = VectorIndex(spec, DIM)
    built.build(x[:4000])
    info = built.info.to_json()
    data = _saved(built)

    writer = _loaded(spec, data, info)
    for lo in (4000, 5000):  # two adds, kept as one run of codes
        writer.add(x[lo : lo + 1000], x[: lo + 1000])
    codes = writer.codes_since(4000)
    assert codes is not None and codes.shape == (2000, writer._tail_ivf().sa_code_size())
    assert writer.codes_since(3999) is None  # rows it holds from the file, not as codes
    tail = io.BytesIO()
    writer.write_codes(tail, codes)

    reader = _loaded(spec, data, info)
    reader.append_codes(reader.read_codes(io.BytesIO(tail.getvalue()), 2000))
    assert reader.ntotal == 6000 and reader.check_against(6000) is None

    plain = _loaded(spec, data, info)  # rows appended the way FAISS adds them
    plain._add_rows(x[4000:])
    queries = x[::250] + 0.01
    opts = SearchOptions(nprobe=16)
    for other in (reader, plain):
        got = other.search(x, queries, 10, None, opts)
        want = writer.search(x, queries, 10, None, opts)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-6)


def test_a_tail_that_cannot_be_this_indexs_codes_is_refused_before_it_is_used() -> None:
    x = _vectors(3000, 2)
    built = VectorIndex("IVF16,PQ48x4fs", DIM)
    built.build(x)
    data, info = _saved(built), built.info.to_json()
    width = built._tail_ivf().sa_code_size()

    def refused(codes: np.ndarray, rows: int, match: str) -> None:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, codes, allow_pickle=False)
        index = _loaded("IVF16,PQ48x4fs", data, info)
        with pytest.raises(ValueError, match=match):
            index.read_codes(io.BytesIO(buf.getvalue()), rows)
        assert index.ntotal == 3000

    refused(np.zeros((5, width + 1), np.uint8), 5, "not 5 codes")
    refused(np.zeros((5, width), np.uint8), 6, "not 6 codes")
    refused(np.zeros((5, width), np.int16), 5, "not 5 codes")
    cells = np.zeros((5, width), np.uint8)
    cells[:, 0] = 200  # past the 16 lists
    refused(cells, 5, "cells outside")
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}] * 5, dtype=object), allow_pickle=True)
    index = _loaded("IVF16,PQ48x4fs", data, info)
    with pytest.raises(ValueError):  # pickled objects are never loaded
        index.read_codes(io.BytesIO(buf.getvalue()), 5)


def _add(col, x: np.ndarray, lo: int, hi: int) -> None:
    ids = [f"d{i}" for i in range(lo, hi)]
    col.add(ids, ids=ids, vectors=x[lo:hi], progress=False)


def _grow(path, x: np.ndarray, spec: str, steps: list[int]) -> None:
    """Create with the rows up to steps[0], then each later step in a fresh process's way:
    open, add, close."""
    col = embedsearch.open(path, index=spec)
    _add(col, x, 0, steps[0])
    col.close()
    _more(path, x, steps)


def _more(path, x: np.ndarray, steps: list[int]) -> None:
    """Each step after the first in a fresh process's way: open, add, close."""
    for lo, hi in zip(steps, steps[1:]):
        col = embedsearch.open(path)
        _add(col, x, lo, hi)
        col.close()


def _manifest(path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def test_adds_write_tails_and_readers_answer_as_with_the_index_saved_whole(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(index_module, "_ADD_CHUNK", 700)  # rows added and appended in chunks
    x = _vectors(9000, 3)
    steps = [6000, 7000, 8000, 9000]
    _grow(tmp_path / "tails", x, "IVF16,PQ48x4fs", steps)
    m = _manifest(tmp_path / "tails")
    assert m["format_version"] == store.FORMAT_VERSION >= 6
    assert m["index"]["file"]["rows"] == 6000
    assert [t["rows"] for t in m["index"]["tail"]] == [1000, 1000, 1000]
    on_disk = sorted(p.name for p in (tmp_path / "tails").glob("index-*"))
    assert len(on_disk) == 4 and sum(n.endswith(".tail") for n in on_disk) == 3

    monkeypatch.setattr(collection_module, "MAX_TAILS", 0)  # every save writes the whole index
    _grow(tmp_path / "whole", x, "IVF16,PQ48x4fs", steps)
    assert "tail" not in _manifest(tmp_path / "whole")["index"]
    assert _manifest(tmp_path / "whole")["index"]["file"]["rows"] == 9000

    queries = x[::300] + 0.01
    answers = []
    for name in ("tails", "whole"):
        col = embedsearch.open(tmp_path / name)
        answers.append(
            [[(h.id, round(h.score, 5)) for h in r] for r in col.batch_search(queries, 10)]
        )
        assert col.info()["index"]["rows"] == 9000
        col.close()
    assert answers[0] == answers[1]
    assert maintenance.verify(tmp_path / "tails").ok


def test_the_tails_are_folded_into_a_whole_index_past_their_budget(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(collection_module, "MAX_TAILS", 2)
    x = _vectors(10_000, 4)
    path = tmp_path / "c"
    _grow(path, x, "IVF16,SQ8", [6000, 7000, 8000])
    first = _manifest(path)["index"]
    assert len(first["tail"]) == 2
    _grow_more = embedsearch.open(path)
    _add(_grow_more, x, 8000, 9000)
    _grow_more.close()
    index = _manifest(path)["index"]
    assert "tail" not in index and index["file"]["rows"] == 9000
    assert index["file"]["file"] != first["file"]["file"]
    names = {p.name for p in path.glob("index-*")}
    assert names == {index["file"]["file"]}  # the old file and its tails are gone

    monkeypatch.setattr(collection_module, "MAX_TAILS", 32)
    monkeypatch.setattr(collection_module, "TAIL_MIN_ROWS", 1500)  # a share of 2 % is 180
    col = embedsearch.open(path)
    _add(col, x, 9000, 10_000)  # 1,000 rows: a tail
    col.close()
    assert [t["rows"] for t in _manifest(path)["index"]["tail"]] == [1000]


def test_a_damaged_tail_costs_speed_never_answers_and_repair_rebuilds_it(tmp_path, caplog) -> None:
    x = _vectors(8000, 5)
    path = tmp_path / "c"
    _grow(path, x, "IVF16,PQ48x4fs", [6000, 7000, 8000])
    queries = x[::250] + 0.01
    col = embedsearch.open(path)
    want = [[h.id for h in r] for r in col.batch_search(queries, 10)]
    col.close()

    tail = path / _manifest(path)["index"]["tail"][0]["file"]
    raw = bytearray(tail.read_bytes())
    raw[-7] ^= 0xFF
    tail.write_bytes(bytes(raw))

    with caplog.at_level(logging.WARNING, logger="embedsearch.collection"):
        col = embedsearch.open(path)
        got = [[h.id for h in r] for r in col.batch_search(queries, 10)]
        col.close()
    assert got == want  # its rows were indexed from the segments instead
    assert any(
        "index tail" in r.getMessage() and tail.name in r.getMessage() for r in caplog.records
    )

    report = maintenance.verify(path)
    assert not report.ok
    assert [p.file for p in report.problems] == [tail.name]
    assert report.problems[0].kind == "checksum"
    maintenance.repair(path)
    assert maintenance.verify(path).ok
    assert not tail.exists()
    col = embedsearch.open(path)
    assert [[h.id for h in r] for r in col.batch_search(queries, 10)] == want
    col.close()


def test_a_past_version_opens_with_its_own_tails(tmp_path) -> None:
    x = _vectors(8000, 6)
    path = tmp_path / "c"
    _grow(path, x, "IVF16,SQ8", [6000, 7000])
    col = embedsearch.open(path)
    past = col.info()["version"]
    _add(col, x, 7000, 8000)
    col.close()
    col = embedsearch.open(path)
    view = col.at(past)
    assert len(view) == 7000
    hits = view.search(x[6500], k=3)
    assert hits[0].id == "d6500"
    assert all(int(h.id[1:]) < 7000 for h in view.search(x[7500], k=10))
    view.close()
    col.close()


@pytest.mark.parametrize("held", [0, 31, 32, 1536, 1537])
def test_fast_scan_codes_are_packed_after_any_number_of_rows_a_list_holds(held) -> None:
    """One list, holding ``held`` rows (1,536: FAISS's own add_entries would write past the
    list), then 70 rows as codes: the list's ids and packed codes equal FAISS's ``add``."""
    from embedsearch.index import _insert_codes, faiss

    f = faiss()
    x = _vectors(held + 70 + 2000, 7)
    want = f.index_factory(DIM, "IVF1,PQ96x4fs", f.METRIC_INNER_PRODUCT)
    want.train(x[-2000:])
    got = f.deserialize_index(f.serialize_index(want))
    want.add(x[: held + 70])
    if held:
        got.add(x[:held])
    _insert_codes(got, got.sa_encode(x[held : held + 70]))
    assert got.ntotal == want.ntotal == held + 70
    lists_got, lists_want = got.invlists, want.invlists
    assert lists_got.list_size(0) == lists_want.list_size(0) == held + 70
    n_bytes = -(-(held + 70) // 32) * 32 * 48
    np.testing.assert_array_equal(
        f.rev_swig_ptr(lists_got.get_ids(0), held + 70),
        f.rev_swig_ptr(lists_want.get_ids(0), held + 70),
    )
    np.testing.assert_array_equal(
        f.rev_swig_ptr(lists_got.get_codes(0), n_bytes),
        f.rev_swig_ptr(lists_want.get_codes(0), n_bytes),
    )


def test_a_linked_tail_is_never_read_through_and_orphan_tails_are_removed(tmp_path) -> None:
    """A tail replaced by a link to a byte-identical copy passes its checksum but is never
    followed: the reader indexes those rows from the segments, ``verify`` says "unsafe",
    ``repair`` rebuilds without it and the link's target is untouched. Leftover tails embedsearch
    wrote are removed by the next write; a file only named like one is kept."""
    x = _vectors(8000, 8)
    path = tmp_path / "c"
    _grow(path, x, "IVF16,SQ8", [6000, 7000])
    queries = x[::400] + 0.01
    col = embedsearch.open(path)
    want = [[h.id for h in r] for r in col.batch_search(queries, 10)]
    col.close()

    tail = path / _manifest(path)["index"]["tail"][0]["file"]
    copy = tmp_path / "copy.tail"
    copy.write_bytes(tail.read_bytes())
    kept = copy.read_bytes()
    tail.unlink()
    tail.symlink_to(copy)
    col = embedsearch.open(path)
    assert [[h.id for h in r] for r in col.batch_search(queries, 10)] == want
    col.close()
    assert [p.kind for p in maintenance.verify(path).problems] == ["unsafe"]
    maintenance.repair(path)
    assert maintenance.verify(path).ok
    assert copy.read_bytes() == kept  # the link is left alone, never followed nor named
    assert tail.name not in json.dumps(_manifest(path)["index"])

    orphan, foreign = path / f"index-{'a' * 32}.tail", path / "index-notours.tail"
    orphan.write_bytes(b"left by a crashed save")
    foreign.write_bytes(b"someone else's")
    col = embedsearch.open(path)
    _add(col, x, 7000, 8000)
    col.close()
    assert not orphan.exists() and foreign.read_bytes() == b"someone else's"


def test_rows_appended_after_a_removal_keep_their_codes_and_the_others_theirs() -> None:
    """FAISS's ``remove_ids`` (compaction renumbers through it) moves a list's last row into
    the removed one's place and leaves its old code past the list's end: the rows appended
    after must not be or-ed with it."""
    from embedsearch.index import _insert_codes, faiss

    f = faiss()
    x = _vectors(2200, 9)
    index = f.index_factory(DIM, "IVF1,PQ96x4fs", f.METRIC_INNER_PRODUCT)
    index.train(x[:2000])
    index.add(x[2000:2100])
    assert index.remove_ids(f.IDSelectorBatch(np.array([3, 40, 77], dtype=np.int64))) == 3
    packer = index.get_CodePacker()

    def codes_in_list() -> np.ndarray:
        size = index.invlists.list_size(0)
        blocks = f.rev_swig_ptr(index.invlists.get_codes(0), -(-size // 32) * packer.block_size)
        blocks = blocks.reshape(-1, packer.block_size)
        return np.array([packer.unpack_1(blocks, i) for i in range(size)])

    before = codes_in_list()
    new = index.sa_encode(x[2100:2140])
    _insert_codes(index, new)
    after = codes_in_list()
    assert after.shape == (97 + 40, 48)
    np.testing.assert_array_equal(after[:97], before)
    np.testing.assert_array_equal(after[97:], new[:, index.coarse_code_size() :])


def test_rows_faiss_adds_after_compaction_keep_their_codes() -> None:
    """Compaction renumbers a fast-scan index through ``remove_ids``; the lists' ends are
    cleared after it, so FAISS's own ``add`` (which ors codes in) writes the next rows'
    codes intact."""
    from embedsearch.index import faiss

    f = faiss()
    x = _vectors(2400, 10)
    built = VectorIndex("IVF1,PQ96x4fs", DIM)
    built.build(x[:2300])
    compacted = built.renumbered(np.array([3, 40, 77, 1000, 2299], dtype=np.int64))
    assert compacted is not None and compacted.ntotal == 2295
    compacted._add_rows(x[2300:2340])
    index = compacted._tail_ivf()
    packer = index.get_CodePacker()
    size = index.invlists.list_size(0)
    blocks = f.rev_swig_ptr(index.invlists.get_codes(0), -(-size // 32) * packer.block_size)
    blocks = blocks.reshape(-1, packer.block_size)
    got = np.array([packer.unpack_1(blocks, i) for i in range(2295, 2335)])
    want = index.sa_encode(np.ascontiguousarray(x[2300:2340]))[:, index.coarse_code_size() :]
    np.testing.assert_array_equal(got, want)


def _loads(monkeypatch) -> list[int]:
    """Count the reads of a whole saved index file (``VectorIndex.load``)."""
    calls: list[int] = []
    load = VectorIndex.load

    def counted(self, src, info):  # noqa: ANN001, ANN202 - the wrapped method's own
        calls.append(1)
        return load(self, src, info)

    monkeypatch.setattr(VectorIndex, "load", counted)
    return calls


def _answers(path, queries: np.ndarray) -> list[list[tuple[str, float]]]:
    col = embedsearch.open(path)
    out = [[(h.id, round(h.score, 5)) for h in r] for r in col.batch_search(queries, 10)]
    col.close()
    return out


def test_a_writer_that_only_adds_never_reads_the_whole_index(tmp_path, monkeypatch) -> None:
    """The index file ends with the index's training alone; a writer that only appends rows
    encodes them with it, saves their codes as a tail and never reads the rest of the file.
    Readers then answer as when the writer had read the index; a search in the writer's own
    process reads it and appends the rows encoded before."""
    x = _vectors(8000, 9)
    path, plain = tmp_path / "c", tmp_path / "plain"
    _grow(path, x, "IVF16,PQ48x4fs", [6000])
    ref = _manifest(path)["index"]["file"]
    size, crc = ref["trained"]["bytes"], ref["trained"]["crc32"]
    raw = (path / ref["file"]).read_bytes()
    assert len(raw) == ref["bytes"] and 0 < size < len(raw)
    header = index_module.faiss().deserialize_index(np.frombuffer(raw[-size:], dtype=np.uint8))
    assert header.ntotal == 0 and header.is_trained and f"{zlib.crc32(raw[-size:]):08x}" == crc
    shutil.copytree(path, plain)

    loads = _loads(monkeypatch)
    col = embedsearch.open(path)
    _add(col, x, 6000, 7000)
    _add(col, x, 7000, 7500)  # two adds of one process: one run of codes
    col.close()
    assert loads == []
    index = _manifest(path)["index"]
    assert index["file"]["file"] == ref["file"] and [t["rows"] for t in index["tail"]] == [1500]

    col = embedsearch.open(path)  # adds, then searches in the same process
    _add(col, x, 7500, 8000)
    assert loads == []
    assert col.search(x[7700], k=1)[0].id == "d7700"
    assert len(loads) == 1 and col.info()["index"]["rows"] == 8000
    col.close()
    assert [t["rows"] for t in _manifest(path)["index"]["tail"]] == [1500, 500]

    monkeypatch.setattr(VectorIndex, "_header_ivf", lambda self: None)  # read it, as before
    _more(plain, x, [6000, 7500, 8000])
    assert len(loads) == 3
    queries = x[::200] + 0.01
    assert _answers(path, queries) == _answers(plain, queries)
    assert maintenance.verify(path).ok


def test_an_unusable_or_foreign_saved_training_is_never_used(tmp_path, monkeypatch, caplog) -> None:
    """A saved training that fails its checksum is not used (the writer reads the whole
    index, with a warning); one that passes it but is another index's training (a crafted
    file) is found by ``verify`` and ``repair`` rebuilds the index."""
    from v1_format import rewrite_manifest

    x = _vectors(7000, 10)
    path = tmp_path / "c"
    _grow(path, x, "IVF16,PQ48x4fs", [6000])
    queries = x[::200] + 0.01
    want = _answers(path, queries)

    def bad_crc(m: dict) -> None:
        m["index"]["file"]["trained"]["crc32"] = "00000000"

    rewrite_manifest(path, bad_crc)
    loads = _loads(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="embedsearch.index"):
        col = embedsearch.open(path)
        _add(col, x, 6000, 7000)
        col.close()
    assert len(loads) == 1
    assert any("saved training" in r.getMessage() for r in caplog.records)
    assert [t["rows"] for t in _manifest(path)["index"]["tail"]] == [1000]
    got = _answers(path, queries)
    assert got != want and all(len(r) == 10 for r in got)  # the new rows take part
    assert [p.kind for p in maintenance.verify(path).problems] == ["index-trained"]

    other = VectorIndex("IVF16,PQ48x4fs", DIM)  # the same kind of index, other cells
    other.build(_vectors(3000, 11))
    foreign = other.trained_blob()
    ref = _manifest(path)["index"]["file"]
    raw = (path / ref["file"]).read_bytes()
    new = raw[: -ref["trained"]["bytes"]] + foreign
    (path / ref["file"]).write_bytes(new)

    def crafted(m: dict) -> None:
        f = m["index"]["file"]
        f["sha256"], f["bytes"] = hashlib.sha256(new).hexdigest(), len(new)
        f["crc32"] = f"{zlib.crc32(new):08x}"
        f["trained"] = {"bytes": len(foreign), "crc32": f"{zlib.crc32(foreign):08x}"}

    rewrite_manifest(path, crafted)
    report = maintenance.verify(path)
    assert [(p.file, p.kind) for p in report.problems] == [(ref["file"], "index-trained")]
    assert "not the index's own" in report.problems[0].detail
    maintenance.repair(path)
    assert maintenance.verify(path).ok
    assert _answers(path, queries) == got


def test_an_index_file_saved_without_its_training_gets_it_on_its_next_whole_save(
    tmp_path, monkeypatch
) -> None:
    """Files saved before the training followed the index (no ``trained`` in their record)
    are read whole by writers, as before; the next whole save writes the training, made
    from a copy of the index, and writers then add without reading the index."""
    from v1_format import rewrite_manifest

    x = _vectors(8000, 12)
    path = tmp_path / "c"
    _grow(path, x, "IVF16,SQ8", [6000])
    ref = _manifest(path)["index"]["file"]
    raw = (path / ref["file"]).read_bytes()
    old = raw[: -ref["trained"]["bytes"]]  # the file as the code before wrote it
    (path / ref["file"]).write_bytes(old)

    def before(m: dict) -> None:
        f = m["index"]["file"]
        f["sha256"], f["bytes"] = hashlib.sha256(old).hexdigest(), len(old)
        f["crc32"] = f"{zlib.crc32(old):08x}"
        del f["trained"]

    rewrite_manifest(path, before)
    assert maintenance.verify(path).ok
    loads = _loads(monkeypatch)
    monkeypatch.setattr(collection_module, "MAX_TAILS", 0)  # this save writes the index whole
    _more(path, x, [6000, 7000])
    assert len(loads) == 1
    saved = _manifest(path)["index"]["file"]
    assert saved["rows"] == 7000 and saved["trained"]["bytes"] == ref["trained"]["bytes"]
    monkeypatch.setattr(collection_module, "MAX_TAILS", 32)
    _more(path, x, [7000, 8000])
    assert len(loads) == 1 and [t["rows"] for t in _manifest(path)["index"]["tail"]] == [1000]
    assert maintenance.verify(path).ok
