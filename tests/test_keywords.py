"""The keyword side of retrieval: per-segment postings on real files, scored against bm25s.

The reference is bm25s itself (the library the previous keyword index was), built over
exactly the live documents; the collection's postings are built per segment, saved, read
back by new handles and combined at query time."""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import embedsearch
from embedsearch.rag import grouping
from embedsearch.rag.bm25 import DIRNAME, BM25Config, _bm25s, _stemmer, build_postings
from embedsearch.rag.postings import BLOCK, SegmentPostings
from embedsearch.rag.retrieval import bm25_store

CORPUS = Path(embedsearch.__file__).parent / "data" / "demo_corpus.jsonl"
QUERIES = [
    "cast iron pan steak",
    "planets orbit the sun",
    "how to train a neural network",
    "stock market fell",
    "the of and",  # stop words only: no term, no hit
    "water water water",  # a repeated term counts each time
    "zzzunknownword",
]


def _corpus() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text().splitlines()]


def _reference(col, query: str, config: BM25Config) -> list[tuple[str, float]]:
    """bm25s over the live documents, in our order (score, then stored order)."""
    bm25s = _bm25s()
    ids = col.ids()
    texts = [d.text for d in col.get(ids)]
    ret = bm25s.BM25(k1=config.k1, b=config.b, method=config.method)
    ret.index(
        bm25s.tokenize(texts, stopwords="en", stemmer=_stemmer("english"), show_progress=False),
        show_progress=False,
    )
    toks = bm25s.tokenize(
        [query], stopwords="en", stemmer=_stemmer("english"), return_ids=False, show_progress=False
    )[0]
    toks = [t for t in toks if t and t in ret.vocab_dict]
    if not toks:
        return []
    scores = np.asarray(ret.get_scores(toks), dtype=np.float32)
    hits = np.flatnonzero(scores > 0)
    return [(ids[i], float(scores[i])) for i in hits]


def _same(got: list[tuple[str, float]], ref: list[tuple[str, float]], k: int) -> None:
    """``got`` is the top ``k`` of ``ref``: the same scores, and the same ids wherever the
    scores are not tied (bm25s sums in float32, so a tie may differ in its last bit)."""
    ref = sorted(ref, key=lambda p: -p[1])
    assert len(got) == min(k, len(ref))
    np.testing.assert_allclose([s for _, s in got], [s for _, s in ref[: len(got)]], rtol=1e-5)
    if not got:
        return
    floor = got[-1][1]
    sure_ref = {d for d, s in ref if s > floor * (1 + 1e-5)}
    sure_got = {d for d, s in got if s > floor * (1 + 1e-5)}
    assert sure_got == sure_ref
    ref_scores = dict(ref)
    for d, s in got:
        assert ref_scores[d] == pytest.approx(s, rel=1e-5)


@pytest.fixture
def kwcol(home):
    col = _corpus_collection("kw", 100, seed=0)  # four segments
    yield col
    col.close()


def _corpus_collection(name: str, per_segment: int, seed: int):
    """The demo corpus added ``per_segment`` rows a commit (a segment each), random vectors."""
    rows = _corpus()
    col = embedsearch.open(name)
    rng = np.random.default_rng(seed)
    for lo in range(0, len(rows), per_segment):
        part = rows[lo : lo + per_segment]
        col.add(
            [r["text"] for r in part],
            ids=[r["id"] for r in part],
            metadata=[{"topic": r["topic"], "year": r["year"]} for r in part],
            vectors=rng.normal(size=(len(part), col.dim)).astype(np.float32),
        )
    return col


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire"])
def test_scores_equal_bm25s_over_the_live_documents(kwcol, method):
    assert len(kwcol._table.segments) == 4
    kwcol.delete([r["id"] for r in _corpus()[::9]])  # tombstones change N, df and lengths
    config = BM25Config(method=method, k1=1.5, b=0.6)
    store = type(bm25_store(kwcol))(kwcol, config)
    for q in QUERIES:
        for k in (3, 50):
            _same(store.search(q, k), _reference(kwcol, q, config), k)
    assert store.search("the of and", 5) == []
    assert store.search("zzzunknownword", 5) == []
    with pytest.raises(ValueError, match="method must be one of"):
        BM25Config(method="bm25+")


def test_the_best_k_of_many_queries_are_bm25s(kwcol):
    """150 queries cut from the documents themselves, k from 1 to 40, after deletions:
    the best k (scores, and ids wherever scores are not tied) are bm25s's over the same
    live rows."""
    kwcol.delete([r["id"] for r in _corpus()[::11]])
    store = bm25_store(kwcol)
    config = store.config
    bm25s = _bm25s()
    ids = kwcol.ids()
    ret = bm25s.BM25(k1=config.k1, b=config.b, method=config.method)
    texts = [d.text for d in kwcol.get(ids)]
    stem = _stemmer("english")
    ret.index(bm25s.tokenize(texts, stopwords="en", stemmer=stem, show_progress=False))
    for row in _corpus()[::7][:50]:
        words = row["text"].split()
        for query, k in ((" ".join(words[:4]), 1), (" ".join(words[2:9]), 5), (row["text"], 40)):
            toks = bm25s.tokenize(
                [query], stopwords="en", stemmer=stem, return_ids=False, show_progress=False
            )[0]
            toks = [t for t in toks if t in ret.vocab_dict]
            scores = np.asarray(ret.get_scores(toks), dtype=np.float32) if toks else None
            ref = (
                []
                if scores is None
                else [(ids[i], float(scores[i])) for i in np.flatnonzero(scores > 0)]
            )
            _same(store.search(query, k), ref, k)


def test_filters_use_the_metadata_columns(kwcol):
    store = bm25_store(kwcol)
    where = {"$and": [{"topic": {"$in": ["cooking", "space"]}}, {"year": {"$gte": 2015}}]}
    got = store.search("the best way to cook or to launch", 400, where=where)
    meta = {d.id: d.metadata for d in kwcol.get([d for d, _ in got])}
    assert got and all(
        m["topic"] in ("cooking", "space") and m["year"] >= 2015 for m in meta.values()
    )
    everything = store.search("the best way to cook or to launch", 400)
    passing = [
        (d, s)
        for d, s in everything
        if (m := kwcol.get([d])[0].metadata)["topic"] in ("cooking", "space") and m["year"] >= 2015
    ]
    assert got == passing  # the same scores: a filter masks rows, it changes no statistic


def test_a_commit_builds_postings_for_its_segments_only(kwcol, home):
    store = bm25_store(kwcol)
    assert store.search("cast iron pan", 3)
    assert store.built_segments == 4
    folder = kwcol.path / "derived" / DIRNAME / store.config.digest()
    assert len(list(folder.glob("seg-*.kw"))) == 4
    kwcol.add(
        ["A cast iron skillet keeps heat for a long sear."],
        ids=["new-pan"],
        metadata=[{"topic": "cooking", "year": 2030}],
        vectors=np.ones((1, kwcol.dim), dtype=np.float32),
    )
    hits = store.search("cast iron skillet sear", 3)
    assert hits[0][0] == "new-pan"
    assert store.built_segments == 5  # one more: the new segment's
    _same(
        store.search("cast iron skillet sear", 20),
        _reference(kwcol, "cast iron skillet sear", store.config),
        20,
    )
    kwcol.delete(["new-pan"])
    assert "new-pan" not in {d for d, _ in store.search("cast iron skillet sear", 20)}
    assert store.built_segments == 5  # a delete builds nothing: tombstones mask the rows
    # another handle (another process) reads the saved postings, builds none
    other = embedsearch.open("kw")
    other_store = bm25_store(other)
    assert other_store.search("cast iron pan", 3) == store.search("cast iron pan", 3)
    assert other_store.built_segments == 0 and other_store.last_build_s is None
    other.close()


def _add_one(col, doc_id: str, text: str) -> None:
    col.add(
        [text],
        ids=[doc_id],
        metadata=[{"topic": "cooking", "year": 2030}],
        vectors=np.ones((1, col.dim), dtype=np.float32),
    )


def test_a_collection_never_asked_for_keywords_builds_none_on_writes(kwcol):
    """Dense-only collections pay nothing: no write builds postings until keywords are
    asked for (a query, ``prepare_keywords`` or a document ingest)."""
    _add_one(kwcol, "new-pan", "A cast iron skillet keeps heat for a long sear.")
    kwcol.compact(min_deleted_share=0)
    assert not (kwcol.path / "derived" / DIRNAME).exists()
    assert kwcol._rag_bm25 is None  # not even the store was made
    # postings of another analysis (a store of its own) are not the collection's: still none
    other = type(bm25_store(kwcol))(kwcol, BM25Config(stemmer=None))
    assert other.search("cast iron pan", 3)
    _add_one(kwcol, "new-pot", "A cast iron pot for stews.")
    default = kwcol.path / "derived" / DIRNAME / BM25Config().digest()
    assert not default.exists() and bm25_store(kwcol).built_segments == 0


def test_prepared_keywords_are_kept_current_by_every_writer(kwcol, home):
    """After ``prepare_keywords`` no query builds postings: each later write (by any handle:
    the writer finds the saved postings) analyses its own new rows before it returns, a
    compaction its rewritten segments, and a fresh handle's first keyword query reads
    them all."""
    assert not kwcol.info()["keywords"]["kept"]
    kwcol.prepare_keywords()
    store = bm25_store(kwcol)
    folder = kwcol.path / "derived" / DIRNAME / store.config.digest()
    assert store.built_segments == 4 and len(list(folder.glob("seg-*.kw"))) == 4
    kept = kwcol.info()["keywords"]
    assert kept["kept"] and kept["files"] == 4
    assert kept["bytes"] == sum(p.stat().st_size for p in folder.glob("*.kw"))
    kwcol.close()  # one writer at a time; closing lets go of the postings it held
    assert kwcol._rag_bm25 is None and not store._postings and not store._groups
    writer = embedsearch.open("kw")  # another handle, as another process would be
    _add_one(writer, "new-pan", "A cast iron skillet keeps heat for a long sear.")
    assert bm25_store(writer).built_segments == 1  # the new segment's, in the writer
    stems = {Path(s.ref.file).name.split(".")[0] + ".kw" for s in writer._table.segments}
    assert {p.name for p in folder.glob("seg-*.kw")} == stems
    writer.delete([r["id"] for r in _corpus()[:60]])
    writer.compact()
    reader = embedsearch.open("kw")
    reader_store = bm25_store(reader)
    for query in ("cast iron skillet sear", *QUERIES):
        _same(reader_store.search(query, 10), _reference(reader, query, store.config), 10)
    assert reader_store.search("cast iron skillet sear", 1)[0][0] == "new-pan"
    assert reader_store.built_segments == 0 and reader_store.last_build_s is None
    writer.close()
    reader.close()


def test_a_failed_keyword_upkeep_leaves_the_write_committed(kwcol, home, monkeypatch, caplog):
    """The postings are derived data: a write whose upkeep fails is committed all the same
    (logged), and the next keyword query builds what is missing."""
    from embedsearch.rag.bm25 import BM25Store

    kwcol.prepare_keywords()
    real, full = BM25Store.prepare, [True]

    def failing(self):
        if full[0]:
            raise OSError(28, "No space left on device")
        real(self)

    monkeypatch.setattr(BM25Store, "prepare", failing)
    with caplog.at_level(logging.WARNING, logger="embedsearch.rag.mixin"):
        _add_one(kwcol, "new-pan", "A cast iron skillet keeps heat for a long sear.")
    assert any("not brought up to date" in r.getMessage() for r in caplog.records)
    full[0] = False
    other = embedsearch.open("kw")
    assert "new-pan" in other.ids()
    other_store = bm25_store(other)
    assert other_store.search("cast iron skillet sear", 1)[0][0] == "new-pan"
    assert other_store.built_segments == 1  # the query built what the writer could not
    other.close()


def test_postings_stay_while_their_segment_does(kwcol):
    """Compaction leaves the old segments on disk for the kept versions: their postings stay,
    a handle open at an old version reads them (builds none, removes none of the newest's),
    and they go once the old segment files are gone."""
    store = bm25_store(kwcol)
    store.search("planets", 3)
    old_version = kwcol.version
    folder = kwcol.path / "derived" / DIRNAME / store.config.digest()
    before = {p.name for p in folder.glob("seg-*.kw")}
    kwcol.delete([r["id"] for r in _corpus()[:60]])
    kwcol.compact()
    ref = _reference(kwcol, "planets orbit the sun", store.config)
    _same(store.search("planets orbit the sun", 10), ref, 10)
    newest = {Path(s.ref.file).name.split(".")[0] + ".kw" for s in kwcol._table.segments}
    after = {p.name for p in folder.glob("seg-*.kw")}
    assert after == before | newest and newest != before
    past = embedsearch.open("kw", version=old_version)
    past_store = bm25_store(past)
    assert len(past_store.search("planets orbit the sun", 400)) > len(ref)  # deleted rows too
    assert past_store.built_segments == 0
    assert {p.name for p in folder.glob("seg-*.kw")} == after
    past.close()
    for name in before - newest:  # as expiry removes a segment no version names any more
        seg = next(kwcol.path.glob(f"segments/{name[:-3]}.*"))
        for f in kwcol.path.glob(f"segments/{name[:-3]}.*"):
            f.unlink()
        assert not seg.exists()
    kwcol.add(["a new row"], ids=["fresh"], vectors=np.ones((1, kwcol.dim), dtype=np.float32))
    store.search("planets", 3)  # builds the new segment's postings, then tidies
    assert {p.name for p in folder.glob("seg-*.kw")} == {
        Path(s.ref.file).name.split(".")[0] + ".kw" for s in kwcol._table.segments
    }


def _packed_span(raw: bytes) -> tuple[dict, int, int, int]:
    """(header, its length, where ``packed`` starts, its length) of a postings file."""
    (n,) = struct.unpack("<Q", raw[8:16])
    header = json.loads(raw[16 : 16 + n])
    start = 16 + n + (-(16 + n) % 64)
    off, length, _ = header["arrays"]["packed"]
    return header, n, start + off, length


def _craft(raw: bytes) -> bytes:
    """A postings file whose every posting names the last row its bits can hold (past the
    segment's end), its checksums made to match: only the bounds check can refuse it."""
    header, n, at, length = _packed_span(raw)
    packed = np.frombuffer(raw, dtype="<u4", count=length // 4, offset=at).copy()
    packed |= np.uint32((1 << header["row_bits"]) - 1)
    body = packed.tobytes()
    header["arrays"]["packed"][2] = "".join(
        f"{zlib.crc32(body[i : i + BLOCK]):08x}" for i in range(0, len(body), BLOCK)
    )
    new_header = json.dumps(header, sort_keys=True).encode()
    assert len(new_header) == n
    out = bytearray(raw)
    out[16 : 16 + n] = new_header
    out[at : at + length] = body
    return bytes(out)


def _flip_every_block(raw: bytes) -> bytes:
    """One bit of a posting's count flipped in every block of postings."""
    _, _, at, length = _packed_span(raw)
    out = bytearray(raw)
    for b in range(at, at + length, BLOCK):
        out[b + 4] ^= 0x40
    return bytes(out)


def test_damaged_or_crafted_postings_are_rebuilt_never_read(kwcol, caplog):
    store = bm25_store(kwcol)
    want = store.search("planets orbit the sun", 10)
    want2 = store.search("cast iron pan", 10)
    folder = kwcol.path / "derived" / DIRNAME / store.config.digest()
    files = sorted(folder.glob("seg-*.kw"))
    assert len(files) == 4
    intact = [f.read_bytes() for f in files]
    # (the files are changed in place, as damage would: `store` has them open)
    files[0].write_bytes(_flip_every_block(intact[0]))  # found by the block checksums
    files[1].write_bytes(_craft(intact[1]))  # rows past the end, checksums matching
    files[2].write_bytes(intact[3])  # another segment's postings
    # a link where a file was: never followed (durable.open_fd refuses it)
    outside = kwcol.path.parent / "elsewhere.kw"
    outside.write_bytes(intact[3])
    files[3].unlink()
    files[3].symlink_to(outside)
    other = embedsearch.open("kw")
    with caplog.at_level(logging.WARNING, logger="embedsearch.rag.bm25"):
        got = bm25_store(other).search("planets orbit the sun", 10)
        assert got == want
        # every segment's postings read again: rebuilt, so nothing is refused any more
        assert bm25_store(other).search("cast iron pan", 10) == want2
    assert bm25_store(other).built_segments == 4
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4
    assert any("damaged block" in m for m in messages)
    assert any("outside its segment" in m for m in messages)
    assert any("other rows" in m for m in messages)
    assert any("symbolic link" in m for m in messages)
    assert [f.read_bytes() for f in files] == intact  # each rebuilt as it was
    # a handle that read (and checked) the blocks before they changed under it: a row out
    # of bounds is still caught (it rebuilds); it never raises IndexError or returns one
    third = embedsearch.open("kw")
    assert bm25_store(third).search("cast iron pan", 10) == want2
    for f, raw in zip(files, intact):
        f.write_bytes(_craft(raw))  # in place: the files `third` has open
    with caplog.at_level(logging.WARNING, logger="embedsearch.rag.bm25"):
        assert bm25_store(third).search("cast iron pan", 10) == want2
    assert bm25_store(third).built_segments >= 1  # those holding a query term were read
    third.close()
    assert outside.read_bytes() == intact[3]  # the rebuilt file replaced the link, not its target
    assert not files[3].is_symlink()
    other.close()


def test_the_previous_layout_and_killed_builds_are_removed(kwcol):
    old = kwcol.path / "derived" / "bm25" / "old-state-0123456789ab"
    old.mkdir(parents=True)
    (old / "ids.json").write_text("[]")
    store = bm25_store(kwcol)
    folder = kwcol.path / "derived" / DIRNAME / store.config.digest()
    folder.mkdir(parents=True)
    killed = folder / f".seg-{'a' * 32}.kw.{'b' * 32}.tmp"  # a build killed an hour ago
    killed.write_bytes(b"half a file")
    os.utime(killed, (time.time() - 7200, time.time() - 7200))
    live = folder / f".seg-{'c' * 32}.kw.{'d' * 32}.tmp"  # another process writing now
    live.write_bytes(b"being written")
    other = kwcol.path / "derived" / DIRNAME / "0123456789ab"  # other analysis settings
    other.mkdir()
    store.search("planets", 3)
    assert not (kwcol.path / "derived" / "bm25").exists()
    assert not killed.exists() and live.exists() and not other.exists()


def test_analysis_is_bm25s_tokenize():
    """Postings hold, per row, exactly the terms bm25s's tokenizer gives (counts, lengths)."""
    from collections import Counter

    from embedsearch.rag.bm25 import build_postings

    texts = [r["text"] for r in _corpus()] + [
        "",
        "the of and a",  # stop words only
        "Ünïcode naïve café CAFÉ Straße",
        "snake_case x y z 42 4242 i18n",
        "Running runs ran runner's RUNNING",
    ]
    postings = build_postings(texts, "src", BM25Config())
    ref = _bm25s().tokenize(
        texts, stopwords="en", stemmer=_stemmer("english"), return_ids=False, show_progress=False
    )
    rows: list[Counter] = [Counter() for _ in texts]
    ends = postings.term_end.tolist()
    for i in range(postings.term_hash.size):
        term = postings.term_text[(ends[i - 1] if i else 0) : ends[i]].decode()
        docs, tf = postings.postings(i)
        for d, f in zip(docs.tolist(), tf.tolist()):
            rows[d][term] += f
    assert rows == [Counter(r) for r in ref]
    assert postings.doclen.tolist() == [len(r) for r in ref]


def test_queries_are_analysed_as_bm25s_does_without_importing_it(kwcol):
    """The English stop words kept here are bm25s's; a query's terms are its tokenizer's;
    and a process that asks a keyword query over saved postings never imports bm25s."""
    import subprocess
    import sys

    from bm25s.stopwords import STOPWORDS_EN as THEIRS

    from embedsearch.rag.bm25 import STOPWORDS_EN, analyse

    assert set(THEIRS) == STOPWORDS_EN
    for text in ["Running runs RAN", "the of and", "Straße café naïve", "x y z 42 i18n"]:
        ref = _bm25s().tokenize(
            [text],
            stopwords="en",
            stemmer=_stemmer("english"),
            return_ids=False,
            show_progress=False,
        )[0]
        assert analyse(text, STOPWORDS_EN, _stemmer("english")) == ref
    want = [d for d, _ in bm25_store(kwcol).search("cast iron pan", 5)]
    kwcol.close()
    code = (
        "import sys, embedsearch\n"
        f"col = embedsearch.open({str(kwcol.path)!r})\n"
        "hits = col.retrieve('cast iron pan', k=5, mode='bm25')\n"
        "print([h.id for h in hits], 'bm25s' in sys.modules, 'scipy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("] ")[1].split() == ["False", "False"]
    assert all(d in out.stdout for d in want)


# ------------------------------------------------------------------ groups of segments
def _seg(i: int, rows: int, ends: bool) -> SimpleNamespace:
    """A stand-in for a segment as :func:`grouping.plan` reads one (its file, checksum and
    rows: pure plumbing); ``ends``: whether its checksum ends a group."""
    sha = ("00000000" if ends else "00000001") + f"{i:056x}"
    return SimpleNamespace(rows=rows, ref=SimpleNamespace(file=f"seg-{i:032x}.arrow", sha256=sha))


def _spans(groups) -> list[tuple[int, int]]:
    return [(g.first, g.end) for g in groups]


def test_groups_are_settled_runs_cut_at_content_boundaries():
    big, small = grouping.SETTLED_ROWS, grouping.SETTLED_ROWS - 1
    segs = [
        _seg(0, big, False),
        _seg(1, big, False),
        _seg(2, big, True),  # ends the first group
        _seg(3, big, False),
        _seg(4, small, False),  # not settled: the run before it stays ungrouped
        _seg(5, big, False),
        _seg(6, big, True),
        _seg(7, big, False),  # a trailing run not ended: ungrouped (more may join it)
        _seg(8, big, False),
    ]
    groups = grouping.plan(segs, lambda s: True)
    assert _spans(groups) == [(0, 3), (5, 7)]
    assert groups[0].members == tuple(s.ref.file for s in segs[:3])
    assert groups[0].rows == 3 * big
    assert _spans(grouping.plan(segs, lambda s: s is not segs[1])) == [(5, 7)]
    # at most MAX_SEGMENTS segments, and MAX_ROWS rows
    many = [_seg(i, big, False) for i in range(grouping.MAX_SEGMENTS + 4)]
    assert _spans(grouping.plan(many, lambda s: True)) == [(0, grouping.MAX_SEGMENTS)]
    wide = grouping.MAX_ROWS // 2 - 1
    heavy = [_seg(i, wide, False) for i in range(5)] + [_seg(5, big, True)]
    assert _spans(grouping.plan(heavy, lambda s: True)) == [(0, 2), (2, 4), (4, 6)]
    # a segment rewritten (another checksum) changes its own group only
    before = grouping.plan(segs, lambda s: True)
    changed = list(segs)
    changed[5] = SimpleNamespace(
        rows=big, ref=SimpleNamespace(file="seg-new.arrow", sha256="1" * 64)
    )
    after = grouping.plan(changed, lambda s: True)
    assert after[0] == before[0] and after[1].key != before[1].key
    assert _spans(after) == _spans(before)


def test_merged_postings_are_those_built_over_the_joined_rows():
    texts = [r["text"] for r in _corpus()]
    parts = [build_postings(texts[lo : lo + 130], "p", BM25Config()) for lo in (0, 130, 260)]
    merged = SegmentPostings.merge(parts, "whole", ["a", "b", "c"])
    whole = build_postings(texts[:390], "whole", BM25Config())
    for name in ("term_hash", "term_end", "indptr", "doclen", "packed", "big_at", "big_tf"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name), err_msg=name)
    assert merged.row_bits == whole.row_bits
    for got, want in zip(merged.all_postings(), whole.all_postings()):
        np.testing.assert_array_equal(got, want)
    assert merged.term_text == whole.term_text
    assert merged.members == ("a", "b", "c")


@pytest.fixture
def kwgroups(home, monkeypatch):
    """Ten segments of 35 rows, grouped three by three (settled from one row, no content
    boundaries): groups 0-2, 3-5, 6-8 and segment 9 alone."""
    monkeypatch.setattr(grouping, "SETTLED_ROWS", 1)
    monkeypatch.setattr(grouping, "MAX_SEGMENTS", 3)
    monkeypatch.setattr(grouping, "_ends_group", lambda seg: False)
    col = _corpus_collection("kwg", 35, seed=1)
    assert len(col._table.segments) == 10
    yield col
    col.close()


def _kw_files(col, store) -> tuple[set[str], set[str]]:
    folder = col.path / "derived" / DIRNAME / store.config.digest()
    return {p.name for p in folder.glob("grp-*.kw")}, {p.name for p in folder.glob("seg-*.kw")}


def _stems(segments) -> set[str]:
    return {Path(s.ref.file).name.split(".")[0] + ".kw" for s in segments}


def test_groups_of_segments_score_as_every_segment_does(kwgroups):
    store = bm25_store(kwgroups)
    kwgroups.delete([r["id"] for r in _corpus()[::7]])
    for query in QUERIES:
        _same(store.search(query, 15), _reference(kwgroups, query, store.config), 15)
    segs = kwgroups._table.segments
    plan = grouping.plan(segs, lambda s: True)
    assert _spans(plan) == [(0, 3), (3, 6), (6, 9)]
    assert store.merged_groups == 3 and store.built_segments == 10
    # one file a group, its members' own files gone; the last segment keeps its own
    assert _kw_files(kwgroups, store) == ({g.name for g in plan}, _stems(segs[9:]))
    # another handle (another process) reads the groups: builds and merges nothing
    other = embedsearch.open("kwg")
    other_store = bm25_store(other)
    for query in QUERIES:
        assert other_store.search(query, 15) == store.search(query, 15)
    assert other_store.built_segments == 0 and other_store.merged_groups == 0
    other.close()
    # two commits: the trailing run grows to three segments and becomes a group
    for i in range(2):
        kwgroups.add(
            [f"A cast iron skillet, seasoned {i} times, keeps heat for a long sear."],
            ids=[f"pan-{i}"],
            metadata=[{"topic": "cooking", "year": 2030}],
            vectors=np.ones((1, kwgroups.dim), dtype=np.float32),
        )
        got = store.search("cast iron skillet sear", 15)
        _same(got, _reference(kwgroups, "cast iron skillet sear", store.config), 15)
    segs = kwgroups._table.segments
    plan = grouping.plan(segs, lambda s: True)
    assert _spans(plan) == [(0, 3), (3, 6), (6, 9), (9, 12)]
    assert _kw_files(kwgroups, store) == ({g.name for g in plan}, set())


def test_groups_follow_compaction_and_serve_old_versions(kwgroups):
    store = bm25_store(kwgroups)
    ref_all = store.search("planets orbit the sun", 400)
    old_version = kwgroups.version
    before_groups, _ = _kw_files(kwgroups, store)
    kwgroups.delete([r["id"] for r in _corpus()[40:100]])  # most of segments 1 and 2
    kwgroups.compact()
    ref = _reference(kwgroups, "planets orbit the sun", store.config)
    _same(store.search("planets orbit the sun", 10), ref, 10)
    segs = kwgroups._table.segments
    plan = grouping.plan(segs, lambda s: True)
    groups, own = _kw_files(kwgroups, store)
    assert {g.name for g in plan} <= groups  # the new state's groups, and the old kept
    grouped = {i for g in plan for i in range(g.first, g.end)}
    assert own >= _stems(s for i, s in enumerate(segs) if i not in grouped)
    # a handle at the version before compaction: its own groups, the deleted rows too
    past = embedsearch.open("kwg", version=old_version)
    assert bm25_store(past).search("planets orbit the sun", 400) == ref_all
    past.close()
    # the old segments' files go (as expiry removes them): so do the groups naming them
    current = {Path(s.ref.file).name.split(".")[0] for s in segs}
    for f in kwgroups.path.glob("segments/seg-*"):
        if f.name.split(".")[0] not in current:
            f.unlink()
    kwgroups.add(["a new row"], ids=["fresh"], vectors=np.ones((1, kwgroups.dim), np.float32))
    _same(
        store.search("planets orbit the sun", 10),
        _reference(kwgroups, "planets orbit the sun", store.config),
        10,
    )
    segs = kwgroups._table.segments
    plan = grouping.plan(segs, lambda s: True)
    grouped = {i for g in plan for i in range(g.first, g.end)}
    groups, own = _kw_files(kwgroups, store)
    assert groups == {g.name for g in plan} and groups != before_groups
    assert own == _stems(s for i, s in enumerate(segs) if i not in grouped)


def test_a_damaged_group_is_merged_again(kwgroups, caplog):
    store = bm25_store(kwgroups)
    want = [store.search(q, 10) for q in QUERIES]
    folder = kwgroups.path / "derived" / DIRNAME / store.config.digest()
    files = sorted(folder.glob("grp-*.kw"))
    assert len(files) == 3
    intact = files[1].read_bytes()
    files[1].write_bytes(_flip_every_block(intact))
    other = embedsearch.open("kwg")
    other_store = bm25_store(other)
    with caplog.at_level(logging.WARNING, logger="embedsearch.rag.bm25"):
        assert [other_store.search(q, 10) for q in QUERIES] == want
    assert any("damaged block" in r.getMessage() for r in caplog.records)
    assert other_store.built_segments == 3  # the group's members, from their texts
    assert other_store.merged_groups == 1
    assert files[1].read_bytes() == intact  # merged again as it was
    other.close()


def test_damaged_or_crafted_members_are_rebuilt_before_a_merge(kwgroups, monkeypatch, caplog):
    """Segments saved alone, then grouped: a member whose file is damaged or names rows
    past its segment (checksums matching) is never merged as it is: the members are
    built again from their texts, and the group scores as bm25s does."""
    monkeypatch.setattr(grouping, "MAX_SEGMENTS", 100)  # no group ends yet: saved alone
    store = bm25_store(kwgroups)
    store.search("planets", 3)
    folder = kwgroups.path / "derived" / DIRNAME / store.config.digest()
    segs = kwgroups._table.segments
    own = [folder / (Path(s.ref.file).name.split(".")[0] + ".kw") for s in segs[:3]]
    assert all(f.exists() for f in own) and not list(folder.glob("grp-*.kw"))
    own[0].write_bytes(_craft(own[0].read_bytes()))
    own[2].write_bytes(_flip_every_block(own[2].read_bytes()))
    monkeypatch.setattr(grouping, "MAX_SEGMENTS", 3)
    other = embedsearch.open("kwg")
    other_store = bm25_store(other)
    with caplog.at_level(logging.WARNING, logger="embedsearch.rag.bm25"):
        for query in QUERIES:
            _same(other_store.search(query, 10), _reference(other, query, store.config), 10)
    assert any("outside its segment" in r.getMessage() for r in caplog.records)
    assert other_store.merged_groups == 3
    assert other_store.built_segments == 3  # the first group's members, from their texts
    assert len(list(folder.glob("grp-*.kw"))) == 3
    other.close()


def test_a_first_query_analyses_its_segments_on_a_few_threads(kwcol, monkeypatch):
    """The segments a first keyword query builds are analysed ahead of their turn on a
    small pool (concurrency.Ahead): each once, the scores those of bm25s."""
    import embedsearch.rag.bm25 as bm25_module

    monkeypatch.setattr(bm25_module, "cpus", lambda: 2)
    seen: list[str] = []
    real = bm25_module.build_postings

    def recording(texts, source, config):
        seen.append(threading.current_thread().name)
        return real(texts, source, config)

    monkeypatch.setattr(bm25_module, "build_postings", recording)
    config = BM25Config(k1=1.3, b=0.7)  # postings of their own: built by this store
    store = type(bm25_store(kwcol))(kwcol, config)
    for q in QUERIES[:5]:
        _same(store.search(q, 10), _reference(kwcol, q, config), 10)
    assert store.built_segments == len(kwcol._table.segments) == len(seen) == 4
    assert sum(name.startswith("embedsearch-ahead") for name in seen) >= 3
    assert not [t for t in threading.enumerate() if t.name.startswith("embedsearch-ahead")]


def test_a_keyword_retrieve_reads_its_passages_with_the_matches(kwcol, monkeypatch):
    """The keyword side reads the text and metadata of the first ``shown`` matches with
    their ids, from the same state: they equal ``get``'s, and ``retrieve(mode="bm25")``
    looks nothing up by id afterwards."""
    store = bm25_store(kwcol)
    found = store.found(QUERIES[0], 20, shown=3)
    assert found.ranked == store.search(QUERIES[0], 20)
    assert list(found.shown) == [d for d, _ in found.ranked[:3]]
    for doc in kwcol.get(list(found.shown)):
        assert found.shown[doc.id] == (doc.text, doc.metadata)

    calls: list[list[str]] = []
    real = type(kwcol)._get

    def spy(self, ids, include_vectors):
        calls.append(list(ids))
        return real(self, ids, include_vectors)

    monkeypatch.setattr(type(kwcol), "_get", spy)
    for q in [*QUERIES[:4], QUERIES[5]]:  # (not the stop words: no hit)
        passages = kwcol.retrieve(q, k=5, mode="bm25", where={"year": {"$gte": 2000}})
        assert passages and calls == []
        monkeypatch.setattr(type(kwcol), "_get", real)
        for p, doc in zip(passages, kwcol.get([p.id for p in passages])):
            assert (p.id, p.text, p.metadata) == (doc.id, doc.text, doc.metadata)
        monkeypatch.setattr(type(kwcol), "_get", spy)


def _mapped_kb(path: Path) -> int:
    """KiB of ``path``'s pages mapped into this process (``/proc/self/smaps``)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isdigit() or line[:1] in "abcdef":  # a mapping's header line
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs /proc/self/smaps")
def test_a_keyword_build_leaves_no_text_page_mapped(home):
    """Analysing a segment reads its texts through the map of its Arrow file; the pages
    are dropped from the process afterwards (they stayed: +16 MB of RSS a segment of
    50,000 abstracts, +330 MB over a million rows), and its postings are written array by
    array (a file of the same bytes as before)."""
    import pyarrow.compute as pc

    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(3000)]
    texts = [" ".join(rng.choice(words, 150)) for _ in range(2000)]  # ~1.3 MB of text
    col = embedsearch.open("pages")
    col.add(
        texts,
        ids=[str(i) for i in range(len(texts))],
        vectors=np.ones((len(texts), col.dim), np.float32),
    )
    seg = col._table.segments[0]
    arrow = col.path / seg.ref.file
    pc.string_is_ascii(seg.texts())  # as a build reads them: through the map
    assert _mapped_kb(arrow) * 1024 > arrow.stat().st_size // 2
    seg.release_columns()
    assert _mapped_kb(arrow) * 1024 < arrow.stat().st_size // 10
    assert col.retrieve(texts[5].split()[0], k=3, mode="bm25")  # builds the postings
    assert _mapped_kb(arrow) * 1024 < arrow.stat().st_size // 10
    (saved,) = (col.path / "derived").rglob("*.kw")
    built = build_postings(texts, seg.ref.sha256, BM25Config())
    import io

    out = io.BytesIO()
    built.write_to(out)
    assert saved.read_bytes() == out.getvalue()
    col.close()


def test_a_keyword_retrieve_ranks_only_as_deep_as_it_returns(kwcol, monkeypatch):
    """``retrieve(mode="bm25")`` asks the store for its k matches (the reranker's or MMR's
    depth where one is asked), not the fusion depth (100): exact ranking makes the first k
    the same, and the k-th score prunes more. Hybrid mode still fetches the depth."""
    store = bm25_store(kwcol)
    depths: list[int] = []
    real = type(store).found

    def spy(self, query, k, where=None, shown=0):
        depths.append(k)
        return real(self, query, k, where, shown)

    monkeypatch.setattr(type(store), "found", spy)
    for q in [*QUERIES[:4], QUERIES[5]]:
        for where in (None, {"year": {"$gte": 2000}}):
            got = kwcol.retrieve(q, k=4, mode="bm25", where=where)
            deep = store.search(q, 100, where)[:4]
            assert [(p.id, p.score) for p in got] == [(d, pytest.approx(s)) for d, s in deep]
            assert [p.scores["bm25"] for p in got] == [p.score for p in got]
    assert set(depths[::2]) == {4}  # each retrieve's, then the deep reference's
    depths.clear()
    kwcol.retrieve(QUERIES[0], k=4, mode="bm25", mmr=0.5)
    kwcol.retrieve(QUERIES[0], k=4, mode="hybrid")
    assert depths == [20, 100]


@pytest.mark.parametrize("bits", [1, 5, 20, 31])
def test_packed_postings_round_trip(bits):
    """A posting packs its row and count into one word; counts that do not fit beside the
    row are kept apart (``big_at``/``big_tf``) and restored in any run read back."""
    from embedsearch.rag.postings import pack, unpack

    rng = np.random.default_rng(bits)
    n = 5000
    rows = rng.integers(0, 1 << bits, n, dtype=np.uint64).astype(np.uint32)
    counts = np.where(rng.random(n) < 0.1, rng.integers(1, 70000, n), rng.integers(1, 5, n))
    packed, big_at, big_tf = pack(rows, counts, bits)
    assert packed.dtype == np.uint32 and packed.size == n
    assert big_at.size == int((counts >= (1 << (32 - bits)) - 1).sum())
    for lo, hi in [(0, n), (17, 18), (100, 2600), (n - 1, n)]:
        got_rows, got_counts = unpack(packed[lo:hi], lo, bits, big_at, big_tf)
        assert got_rows.tolist() == rows[lo:hi].tolist()
        assert got_counts.tolist() == counts[lo:hi].tolist()


def test_counts_kept_apart_score_as_bm25s(kwgroups, monkeypatch):
    """With every count too wide for its word (rows given 31 bits: counts of 1 and up are
    kept apart), segments' files and merged groups' read back the counts: scores equal
    bm25s's. The postings take 4 bytes each on disk."""
    from embedsearch.rag import postings as postings_module

    monkeypatch.setattr(postings_module, "MIN_ROW_BITS", 31)
    config = BM25Config(k1=1.4)  # postings of their own, built with the wide rows
    store = type(bm25_store(kwgroups))(kwgroups, config)
    for q in QUERIES:
        _same(store.search(q, 10), _reference(kwgroups, q, config), 10)
    groups, singles = _kw_files(kwgroups, store)
    assert len(groups) == 3 and len(singles) == 1
    folder = kwgroups.path / "derived" / DIRNAME / config.digest()
    for f in folder.glob("*.kw"):
        header, _, _, length = _packed_span(f.read_bytes())
        assert header["row_bits"] == 31 and length % 4 == 0
        assert header["arrays"]["big_at"][1] == 2 * length  # 8 bytes each, every posting


@pytest.mark.parametrize("widths", [(20, 20, 20), (16, 19, 20), (31, 20, 31)])
def test_runs_of_several_files_decode_at_once(widths):
    """A query term's runs from several files are decoded together (at once where the
    files share their row bits, run by run where not), counts kept apart restored in each,
    each run's rows moved by its file's offset: the same as decoding each run alone."""
    from embedsearch.rag.postings import pack, unpack, unpack_runs

    rng = np.random.default_rng(sum(widths))
    packs, runs, want, offsets = [], [], [], []
    for bits in widths:
        n = int(rng.integers(1, 3000))
        rows = rng.integers(0, 1 << min(bits, 20), n).astype(np.uint32)
        counts = np.where(rng.random(n) < 0.05, rng.integers(1, 9000, n), 1)
        first = int(rng.integers(0, 50))  # the run starts past the file's first postings
        packed, big_at, big_tf = pack(rows, counts, bits, first)
        f = SimpleNamespace(row_bits=bits, big_at=big_at, big_tf=big_tf)
        packs.append(packed)
        runs.append((f, first, n))
        offsets.append(int(rng.integers(0, 3)) * 5_000_000_000)  # past 32 bits, or none
        want.append(unpack(packed, first, bits, big_at, big_tf))
        assert (want[-1][1] == counts).all()
    words = np.concatenate(packs)
    got_rows, got_counts = unpack_runs(words, runs)
    assert got_rows.dtype == np.int64
    assert got_rows.tolist() == np.concatenate([w[0] for w in want]).tolist()
    assert got_counts.tolist() == np.concatenate([w[1] for w in want]).tolist()
    got_rows, got_counts = unpack_runs(words, runs, offsets)
    moved = [w[0].astype(np.int64) + off for w, off in zip(want, offsets)]
    assert got_rows.tolist() == np.concatenate(moved).tolist()
    assert got_counts.tolist() == np.concatenate([w[1] for w in want]).tolist()


@pytest.mark.parametrize(
    ("lengths", "shortest"),
    [([7, 3, 9], 3), ([0, 5, 0, 2, 8], 2), ([0, 0], 0), ([], 0), ([4_294_967_295, 1], 1)],
)
def test_a_files_shortest_row_holding_a_term(lengths, shortest):
    """``SegmentPostings.shortest``, what MaxScore bounds shares with: the smallest length
    of a row holding a term; rows of no term (length 0) do not count, and a file of none
    gives 0 (the bound then assumes a row of length 0: still above every share)."""
    postings = SegmentPostings(
        source="s",
        term_hash=np.zeros(0, np.uint64),
        term_text=b"",
        term_end=np.zeros(0, np.int64),
        indptr=np.zeros(1, np.int64),
        doclen=np.array(lengths, dtype=np.uint32),
    )
    assert postings.shortest == shortest


def test_postings_cut_short_under_an_open_store_are_rebuilt(kwcol, caplog):
    """A postings file truncated after a store opened it and checked its blocks (damage:
    files are never rewritten in place) makes the store's reads come back short, whether
    the blocks were checked before or not: the file is rebuilt, never read past, and the
    answers are those of the intact files."""
    store = bm25_store(kwcol)
    queries = ["planets orbit the sun", "cast iron pan", "the history of music"]
    want = [store.search(q, 10) for q in queries]  # every file read, blocks checked
    folder = kwcol.path / "derived" / DIRNAME / store.config.digest()
    files = sorted(folder.glob("seg-*.kw"))
    intact = [f.read_bytes() for f in files]
    for f, raw in zip(files, intact):
        _, _, at, _ = _packed_span(raw)
        os.truncate(f, at + BLOCK // 8)  # the dictionary kept (it is mapped), postings cut
    with caplog.at_level(logging.WARNING, logger="embedsearch.rag.bm25"):
        assert [store.search(q, 10) for q in queries] == want
    assert any("shorter than its header says" in r.getMessage() for r in caplog.records)
    assert [f.read_bytes() for f in files] == intact  # each rebuilt as it was
