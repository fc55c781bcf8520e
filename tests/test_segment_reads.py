"""Small reads of a memory-mapped segment go through ``pread``, not the map.

A touch of a mapped page maps the whole page-cache folio around it (up to 2 MB with large
folios), so hits' strings, re-rank shortlists and block checksums are read with ``pread``
(``MappedSegment._reader``). These tests check that those reads return exactly what the
Arrow columns and the vector matrix hold (nulls, multi-byte UTF-8, empty strings, any row
order), that a segment whose file was unlinked meanwhile (a compaction) still reads through
its map, and that damaged bytes are still refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from embedsearch.errors import CorruptionError
from embedsearch.segment import MappedSegment, write_segment
from embedsearch.table import Table

DIM = 8


def _segment(tmp_path: Path, rows: int = 700) -> tuple[MappedSegment, list, list, list, np.ndarray]:
    rng = np.random.default_rng(3)
    ids = [f"id-{i}" for i in range(rows)]
    texts = ["" if i % 11 == 0 else f"text {i} — ünïcödé ✓ {'x' * (i % 50)}" for i in range(rows)]
    metas = [None if i % 3 == 0 else f'{{"n": {i}}}' for i in range(rows)]
    vectors = rng.normal(size=(rows, DIM)).astype(np.float32)
    (tmp_path / "segments").mkdir(exist_ok=True)
    ref = write_segment(tmp_path, ids, texts, metas, vectors)
    return MappedSegment(tmp_path, ref, DIM), ids, texts, metas, vectors


def _segments(
    tmp_path: Path, sizes: list[int], seed: int, dim: int = DIM
) -> tuple[list, np.ndarray]:
    """Segments of ``sizes`` rows of random vectors written at ``tmp_path``: their refs and
    every vector, in order."""
    rng = np.random.default_rng(seed)
    (tmp_path / "segments").mkdir()
    parts = [rng.normal(size=(n, dim)).astype(np.float32) for n in sizes]
    refs = [
        write_segment(tmp_path, [f"s{s}-{i}" for i in range(n)], ["t"] * n, [None] * n, v)
        for s, (n, v) in enumerate(zip(sizes, parts))
    ]
    return refs, np.concatenate(parts)


def _table(tmp_path: Path, refs: list, dim: int = DIM) -> Table:
    """A table over the segments ``refs``, each mapped anew."""
    t = Table(dim)
    t.extend([MappedSegment(tmp_path, ref, dim) for ref in refs])
    return t


def test_small_reads_return_what_the_columns_and_matrix_hold(tmp_path: Path) -> None:
    seg, ids, texts, metas, vectors = _segment(tmp_path)
    rows = np.array([699, 0, 5, 3, 3, 300, 11, 1, 698])
    assert seg.strings(0, rows) == [ids[i] for i in rows]
    assert seg.strings(1, rows) == [texts[i] for i in rows]
    got = seg.strings(2, rows)
    assert got == [metas[i] for i in rows]
    assert got[1] is None and got[3] is None  # rows 0 and 3 hold no metadata (a null)
    # the same values the Arrow column hands out
    assert seg.strings(1, rows) == [seg.texts()[int(i)].as_py() for i in rows]
    seg.prefetch(rows)  # a read-ahead hint: changes nothing that is read
    small = seg.take(rows, release=True)  # read with pread
    assert small.dtype == np.float32 and np.array_equal(small, vectors[rows])
    assert np.array_equal(seg.take(rows), vectors[rows])  # through the map
    assert seg._reader() is not None and seg._reader(arrow=True) is not None


def test_a_segment_unlinked_meanwhile_still_reads_through_its_map(tmp_path: Path) -> None:
    seg, ids, texts, _, vectors = _segment(tmp_path)
    assert seg.ref.vectors is not None
    os.unlink(tmp_path / seg.ref.file)
    os.unlink(tmp_path / seg.ref.vectors.file)
    rows = np.array([4, 2, 600])
    assert seg.strings(1, rows) == [texts[i] for i in rows]
    seg.prefetch(rows)  # no descriptor to the unlinked file: a no-op
    assert np.array_equal(seg.take(rows, release=True), vectors[rows])
    assert seg._reader() is None and seg._reader(arrow=True) is None


def test_a_damaged_vector_block_is_refused_on_a_small_read(tmp_path: Path) -> None:
    seg, *_, vectors = _segment(tmp_path)
    assert seg.ref.vectors is not None
    path = tmp_path / seg.ref.vectors.file
    with open(path, "r+b") as fh:  # flip a byte of row 260 (the block of rows 1 and 2)
        fh.seek(260 * DIM * 4 + 1)
        byte = fh.read(1)
        fh.seek(260 * DIM * 4 + 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    fresh = MappedSegment(tmp_path, seg.ref, DIM)
    # each row read is checked by its own checksum: intact neighbours are served
    assert np.array_equal(fresh.take(np.array([1, 2]), release=True), vectors[[1, 2]])
    with pytest.raises(CorruptionError, match="fails its checksum"):
        fresh.take(np.array([260]), release=True)


def test_runs_of_rows_are_read_by_one_call_each_and_still_checked(tmp_path: Path) -> None:
    """Consecutive rows are gathered with one ``pread`` a run (:func:`_runs`), in any
    order the caller asks, repeats included, and a damaged row inside a run is refused."""
    from embedsearch.segment import _runs

    assert _runs(np.array([], dtype=np.int64)) == []
    assert _runs(np.array([5, 6, 7, 9, 3, 4, 4])) == [(0, 3, 5), (3, 1, 9), (4, 2, 3), (6, 1, 4)]
    seg, *_, vectors = _segment(tmp_path)
    rows = np.concatenate([np.arange(10, 40), [699, 698, 0, 0], np.arange(500, 520), [300]])
    assert len(_runs(rows)) == 7  # 10-39, 699, 698, 0, 0, 500-519, 300
    assert np.array_equal(seg.take(rows, release=True), vectors[rows])
    assert seg.ref.vectors is not None
    with open(tmp_path / seg.ref.vectors.file, "r+b") as fh:  # row 515: inside a run
        fh.seek(515 * DIM * 4 + 2)
        byte = fh.read(1)
        fh.seek(515 * DIM * 4 + 2)
        fh.write(bytes([byte[0] ^ 0x10]))
    fresh = MappedSegment(tmp_path, seg.ref, DIM)
    assert np.array_equal(fresh.take(np.arange(10, 40), release=True), vectors[10:40])
    with pytest.raises(CorruptionError, match="fails its checksum"):
        fresh.take(np.arange(505, 525), release=True)


@pytest.mark.parametrize("damage", ["offsets-out-of-order", "invalid-utf8"])
def test_a_crafted_arrow_file_with_a_valid_checksum_is_refused_on_a_small_read(
    tmp_path: Path, damage: str
) -> None:
    """Small reads find the strings from the file's layout without validating every offset
    and string first (that read every page): each value read is bounds-checked and decoded,
    so a file whose checksum holds but whose offsets or UTF-8 do not is still refused, by
    small reads and by the whole-column reads alike."""

    seg, _, texts, *_ = _segment(tmp_path)
    arr = seg._parsed_batch().column(1)  # texts
    _, offsets, data = arr.buffers()
    assert offsets is not None and data is not None
    base = seg._arrow_base
    path = tmp_path / seg.ref.file
    raw = bytearray(path.read_bytes())
    row = 5
    at = offsets.address - base + 4 * (arr.offset + row)
    lo = int(np.frombuffer(raw, dtype="<i4", count=2, offset=at)[0])
    if damage == "offsets-out-of-order":
        raw[at : at + 4] = np.array([lo + 10_000], dtype="<i4").tobytes()
    else:
        raw[data.address - base + lo] = 0xFF  # not a UTF-8 lead byte
    path.write_bytes(bytes(raw))
    fresh = MappedSegment(tmp_path, _resigned(seg.ref, raw), DIM)  # valid checksums
    assert fresh.strings(1, np.array([100])) == [texts[100]]  # other rows still read
    with pytest.raises(CorruptionError, match=seg.ref.file.split("/")[-1]):
        fresh.strings(1, np.array([row]))
    with pytest.raises(CorruptionError, match="cannot be read as an Arrow segment"):
        fresh.batch()


def _crafted(
    tmp_path: Path, seg: MappedSegment, array, row: int, columns: str = "kept"
) -> MappedSegment:
    """``seg`` with byte 0 of ``array``'s string ``row`` made invalid UTF-8 and the file's
    checksum recomputed to match: what only a full check of that column can refuse.
    ``columns``: the manifest's typed column layout (format 5) ``"kept"`` as written,
    ``"recomputed"`` (its checksums made to match the damage too) or ``"dropped"`` (a
    format-4 entry)."""
    import dataclasses

    from embedsearch.checksums import crc32

    _, offsets, data = array.buffers()
    base = seg._arrow_base
    path = tmp_path / seg.ref.file
    raw = bytearray(path.read_bytes())
    at = offsets.address - base + 4 * (array.offset + row)
    raw[data.address - base + int(np.frombuffer(raw, dtype="<i4", count=1, offset=at)[0])] = 0xFF
    path.write_bytes(bytes(raw))
    layout = seg.ref.columns
    if columns == "dropped":
        layout = None
    elif columns == "recomputed":
        assert layout is not None
        typed = []
        for c in layout.typed:
            lo, hi = c.span
            typed.append(dataclasses.replace(c, crc32=f"{crc32(bytes(raw[lo:hi])):08x}"))
        layout = dataclasses.replace(layout, typed=tuple(typed))
    ref = dataclasses.replace(_resigned(seg.ref, raw), columns=layout)
    return MappedSegment(tmp_path, ref, DIM)


def _resigned(ref, raw: bytearray):
    """``ref`` with the checksums of the Arrow file ``raw`` (crafted): its CRC-32 and its
    blocks' (format 7), so that only the reader's validation can refuse it."""
    import dataclasses

    from embedsearch.checksums import chunk_crcs, crc32

    assert ref.blocks is not None
    step = ref.blocks.block_bytes
    blocks = dataclasses.replace(ref.blocks, crc32=chunk_crcs(bytes(raw), step))
    return dataclasses.replace(ref, crc32=f"{crc32(bytes(raw)):08x}", blocks=blocks)


def _typed_segment(tmp_path: Path) -> tuple[MappedSegment, list[dict]]:
    import json

    rows = 400
    metas = [{"cat": i % 10, "tag": f"t{i % 7}"} for i in range(rows)]
    vectors = np.random.default_rng(5).normal(size=(rows, DIM)).astype(np.float32)
    (tmp_path / "segments").mkdir(exist_ok=True)
    ref = write_segment(
        tmp_path,
        [f"id-{i}" for i in range(rows)],
        [f"text {i}" for i in range(rows)],
        [json.dumps(m) for m in metas],
        vectors,
        metas,
    )
    return MappedSegment(tmp_path, ref, DIM), metas


def test_typed_columns_are_checked_in_full_without_checking_the_texts(tmp_path: Path) -> None:
    """A filter reads a segment's typed columns: those are validated in full (offsets and
    UTF-8), the texts and metadata JSON are not (at 10M rows that check was 0.21 s of the
    first filtered query); the texts' damage is still refused where they are read."""
    seg, metas = _typed_segment(tmp_path)
    texts = seg._parsed_batch().column(1)
    fresh = _crafted(tmp_path, seg, texts, 7)  # the texts damaged, the checksum valid
    typed, untyped = fresh.typed()
    assert untyped == []
    assert typed["cat"].to_pylist() == [m["cat"] for m in metas]
    assert typed["tag"].to_pylist() == [m["tag"] for m in metas]
    assert fresh._batch is None  # the whole batch was never checked in full
    with pytest.raises(CorruptionError, match="cannot be read as an Arrow segment"):
        fresh.batch()


@pytest.mark.parametrize(
    ("columns", "refusal"),
    [
        ("kept", "fails the checksum of its column 'tag'"),  # format 5: the column's CRC
        ("recomputed", "cannot be read as its manifest describes column 'tag'"),  # UTF-8
        ("dropped", "cannot be read as an Arrow segment"),  # format 4: the file parsed
    ],
)
def test_a_damaged_typed_string_column_is_refused_by_the_filter_read(
    tmp_path: Path, columns: str, refusal: str
) -> None:
    seg, _ = _typed_segment(tmp_path)
    batch = seg._parsed_batch()
    tag = batch.column(batch.schema.names.index("meta:tag"))
    assert pa.types.is_string(tag.type)
    fresh = _crafted(tmp_path, seg, tag, 3, columns)
    if columns != "dropped":  # with a layout, each column is checked on its own
        assert fresh.typed(["cat"])[0]["cat"].to_pylist() == [i % 10 for i in range(400)]
    with pytest.raises(CorruptionError, match=refusal):
        fresh.typed(["tag"])


def test_a_table_reads_rows_of_many_segments_one_pread_a_run_and_checks_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Table.take`` of a re-rank's shortlist reads every segment's rows in one loop over
    runs (no per-segment ``take``), each run straight into its place in the result: the rows
    come back in the order asked, repeats and runs across segment borders included, each
    first read is checked against its checksum, and a damaged row is refused however the
    positions are ordered."""
    import embedsearch.segment as segment_module

    refs, every = _segments(tmp_path, [300, 1, 700, 64, 500], 5)

    def table() -> Table:
        return _table(tmp_path, refs)

    def no_segment_take(*_: object, **__: object) -> None:
        raise AssertionError("a per-segment take")

    calls: list[int] = []
    real_preadv = os.preadv

    def counting_preadv(fd: int, buffers: list, offset: int) -> int:
        calls.append(offset)
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(segment_module.MappedSegment, "take", no_segment_take)
    monkeypatch.setattr(os, "preadv", counting_preadv)
    # runs that cross segment borders (298-302: segments 0, 1, 2), repeats, any order
    positions = np.array([1564, 5, 298, 299, 300, 301, 302, 1001, 5, 1000, 1002, 0, 1564, 1500])
    t = table()
    assert t.take(np.array([], dtype=np.int64)).shape == (0, DIM)
    assert np.array_equal(t.take(positions), every[positions])
    calls.clear()  # (the first read also read the blocks of the segments of one block)
    assert np.array_equal(t.take(positions), every[positions])
    # runs: 0 | 5 | 5 | 298-299 | 300 | 301-302 | 1000 | 1001 | 1002 | 1500 | 1564 | 1564
    # (1000-1002 were asked out of order: each row is read into its own place)
    assert len(calls) == 12
    monkeypatch.undo()

    path = tmp_path / refs[2].vectors.file  # row 400 of segment 2: position 701
    with open(path, "r+b") as fh:
        fh.seek(400 * DIM * 4 + 3)
        byte = fh.read(1)
        fh.seek(400 * DIM * 4 + 3)
        fh.write(bytes([byte[0] ^ 0x01]))
    t = table()
    assert np.array_equal(t.take(np.array([700, 2, 1500])), every[[700, 2, 1500]])
    for asked in ([701], [1500, 702, 701, 700], list(range(690, 712))):
        with pytest.raises(CorruptionError, match="fails its checksum"):
            t.take(np.array(asked))
    # a segment giving more than PREAD_MAX_ROWS rows: its own take (through the map)
    big = np.arange(every.shape[0])[::-1]
    monkeypatch.setattr(segment_module, "PREAD_MAX_ROWS", 100)
    monkeypatch.setattr("embedsearch.table.PREAD_MAX_ROWS", 100)
    with pytest.raises(CorruptionError, match="fails its checksum"):
        table().take(big)
    keep = big[(big < 301) | (big >= 1001)]  # segment 2 left out
    assert np.array_equal(table().take(keep), every[keep])


def test_a_gather_across_segments_allocates_its_result_once(tmp_path: Path) -> None:
    """``Table.take`` of rows already checked allocates the result array and nothing of its
    size beside it: a second buffer (read sorted, then scattered) cost ~734 page faults a
    1,000-row query at 1M rows whenever malloc mapped both arrays fresh (3.5 ms against
    1.7 ms)."""
    import tracemalloc

    refs, every = _segments(tmp_path, [900, 700, 800], 9, dim=384)
    t = _table(tmp_path, refs, 384)
    rng = np.random.default_rng(9)
    positions = rng.permutation(every.shape[0])[:1000]
    assert np.array_equal(t.take(positions), every[positions])  # the first read checks rows
    tracemalloc.start()
    try:
        got = t.take(positions)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.array_equal(got, every[positions])
    assert peak < 1.25 * got.nbytes, f"peak {peak:,} bytes for a {got.nbytes:,}-byte result"


def test_first_reads_are_hinted_until_gathers_keep_finding_them_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-ahead hint per first-read run stops after ``HINTS_OFF_AFTER`` gathers in a row
    read no block from disk (the hints then only cost system calls), and starts again after
    a gather that did. The disk's block counter is faked (plumbing: a test cannot evict the
    page cache portably); the rows, reads and checks are real."""
    import embedsearch.table as table_module
    from embedsearch.table import HINTS_OFF_AFTER

    refs, every = _segments(tmp_path, [400, 300, 500], 11)
    t = _table(tmp_path, refs)
    rng = np.random.default_rng(11)
    hints: list[int] = []
    real_read_ahead = MappedSegment.read_ahead

    def counting_read_ahead(self: MappedSegment, fd: int, row: int, count: int) -> None:
        hints.append(row)
        real_read_ahead(self, fd, row, count)

    on_disk = [False]  # fake ru_inblock: grows between two calls while the "disk" is read
    monkeypatch.setattr(MappedSegment, "read_ahead", counting_read_ahead)
    monkeypatch.setattr(table_module, "_blocks_read", lambda: next(blocks) if on_disk[0] else 0)
    blocks = iter(range(1, 10**6))
    monkeypatch.setattr(table_module, "SLOW_READ_S", 1.0)  # a loaded CI machine is not a disk
    # 10 unread rows a gather, no two consecutive (a run each: one hint each)
    fresh = iter(rng.permutation(np.arange(0, every.shape[0], 2)).reshape(-1, 10))

    def gather(read_from_disk: bool = False) -> int:
        hints.clear()
        on_disk[0] = read_from_disk
        positions = next(fresh)
        assert np.array_equal(t.take(positions), every[positions])
        return len(hints)

    assert [gather() for _ in range(HINTS_OFF_AFTER)] == [10] * HINTS_OFF_AFTER
    assert [gather() for _ in range(3)] == [0, 0, 0]  # every gather found its rows cached
    assert gather(read_from_disk=True) == 0  # decided before its reads went to disk
    assert gather() == 10  # hinted again
    monkeypatch.setattr(table_module, "SLOW_READ_S", 0.0)  # reads slower than the page cache's
    assert [gather() for _ in range(HINTS_OFF_AFTER + 2)] == [10] * (HINTS_OFF_AFTER + 2)


def test_a_vector_file_cut_short_after_opening_is_refused_by_a_gather(tmp_path: Path) -> None:
    """A segment's vector file truncated under an open table (damage, not a writer: segment
    files are never rewritten) makes the gather's ``pread`` come back short: the gather raises
    CorruptionError naming that segment's file, for rows read before and rows never read,
    and rows of the other segments still read as stored."""
    refs, every = _segments(tmp_path, [200, 300, 250], 13)
    t = _table(tmp_path, refs)
    seen = np.array([10, 450, 260, 600])  # 450: row 250 of segment 1
    assert np.array_equal(t.take(seen), every[seen])
    os.truncate(tmp_path / refs[1].vectors.file, 100 * DIM * 4)  # segment 1 keeps 100 rows
    for asked in ([450, 10], [600, 499, 5], [420]):  # read before; never read
        with pytest.raises(CorruptionError, match=refs[1].file.split(".")[0]):
            t.take(np.array(asked))
    intact = np.array([600, 10, 250, 199])  # segments 2 and 0; row 50 of segment 1
    assert np.array_equal(t.take(intact), every[intact])
