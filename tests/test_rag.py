"""add_documents and retrieve on real files, the real encoder, real FAISS and real BM25."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import embedsearch
from embedsearch.errors import EncoderError, InvalidInputError
from embedsearch.rag.loaders import source_text
from embedsearch.rag.retrieval import bm25_store

CATS = """# Cats

Cats purr when they are content. Kittens sleep up to twenty hours a day.

## Feeding

Adult cats eat meat; fish is a treat. Fresh water must always be available.
"""

ENGINES = (
    "Jet engines compress air, burn fuel with it and push the exhaust out of a nozzle. "
    "The turbine drives the compressor. Part number XQ-7731 is the fuel pump of the test rig."
)

PAGE = (
    "<html><head><title>Gardening</title><script>var x = 'tomato';</script></head><body>"
    "<h1>Roses</h1><p>Prune roses in early spring, just above an outward-facing bud.</p>"
    "<h2>Pests</h2><p>Aphids gather on young shoots; a jet of water removes most of them.</p>"
    "</body></html>"
)


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "cats.md").write_text(CATS)
    (root / "engines.txt").write_text(ENGINES)
    (root / "sub" / "garden.html").write_text(PAGE)
    (root / "binary.txt").write_bytes(b"\x7fELF\x00\x00\x01\x02")
    (root / "latin1.txt").write_bytes("Crème brûlée recipe.".encode("latin-1"))
    (root / "empty.md").write_text("\n\n")
    (root / "photo.png").write_bytes(b"\x89PNG\r\n")
    (root / ".hidden.txt").write_text("should not be read")
    return root


@pytest.fixture
def col(home, encoder):
    c = embedsearch.open("rag")
    yield c
    c.close()


def test_ingest_folder_reports_skips_and_stores_provenance(col, docs):
    report = col.add_documents([docs])
    assert sorted(Path(s).name for s in report.added) == ["cats.md", "engines.txt", "garden.html"]
    reasons = {Path(s.source).name: s.reason for s in report.skipped}
    assert set(reasons) == {"binary.txt", "latin1.txt", "empty.md"}
    assert "binary" in reasons["binary.txt"] and "utf-8" in reasons["latin1.txt"]
    assert "empty" in reasons["empty.md"]
    assert [Path(p).name for p in report.ignored] == ["photo.png"]
    assert report.chunks_written == len(col) >= 4
    for doc in col.get(col.ids()):
        m = doc.metadata
        assert doc.id == f"{m['source']}#{m['chunk_index']}"
        assert Path(m["source"]).is_absolute()
        assert source_text(m["source"])[m["char_start"] : m["char_end"]] == doc.text
        assert m["tokens"] <= col.encoder.max_seq_length - 2
        assert len(m["content_hash"]) == 64
    feeding = col.get([f"{docs / 'cats.md'}#1"])[0]
    assert feeding.metadata["heading_path"] == ["Cats", "Feeding"]
    garden = [d for d in col.get(col.ids()) if d.metadata["format"] == "html"]
    assert garden[0].metadata["title"] == "Gardening"
    assert all("tomato" not in d.text for d in garden)


def test_reingest_skips_unchanged_and_replaces_changed_without_orphans(col, docs):
    col.add_documents([docs])
    key_before = col.state_key
    again = col.add_documents([docs])
    assert len(again.unchanged) == 3 and not again.added and not again.updated
    assert again.chunks_written == 0 and col.state_key == key_before  # nothing was written

    cats = docs / "cats.md"
    cats.write_text("# Cats\n\nCats now only nap in cardboard boxes.\n")  # 2 chunks -> 1
    report = col.add_documents([docs])
    assert report.updated == [str(cats)] and len(report.unchanged) == 2
    assert report.chunks_deleted == 1
    ids = [i for i in col.ids() if i.startswith(str(cats))]
    assert ids == [f"{cats}#0"]
    assert "cardboard" in col.get(ids)[0].text
    for mode in ("bm25", "dense", "hybrid"):
        found = col.retrieve("fish treat fresh water feeding", k=10, mode=mode)
        assert all("fish is a treat" not in p.text for p in found), mode

    # an interrupted earlier run left a stale tail chunk behind: the next ingest removes it
    col.upsert(["stale"], ids=[f"{cats}#5"], metadata=[{"source": str(cats)}])
    report = col.add_documents([cats])
    assert report.updated == [str(cats)] and f"{cats}#5" not in col

    cats.unlink()
    pruned = col.add_documents([docs], prune=True)
    assert pruned.removed == [str(cats)]
    assert not [i for i in col.ids() if i.startswith(str(cats))]


def test_chunker_or_metadata_change_rechunks_unchanged_files(col, docs):
    col.add_documents([docs / "engines.txt"])
    r = col.add_documents([docs / "engines.txt"], chunker="token", max_tokens=16, overlap=4)
    assert r.updated and col.get([f"{docs / 'engines.txt'}#0"])[0].metadata["tokens"] <= 16
    r = col.add_documents([docs / "engines.txt"], metadata={"team": "propulsion"})
    assert r.updated  # same text, new metadata: rewritten (vectors reused by upsert)
    assert r.chunks_written > 0
    hits = col.retrieve("fuel pump", k=2, where={"team": "propulsion"})
    assert hits and all(p.metadata["team"] == "propulsion" for p in hits)
    with pytest.raises(InvalidInputError, match="reserved"):
        col.add_documents([docs / "engines.txt"], metadata={"source": "x"})


def test_texts_and_bad_inputs(col, tmp_path):
    r = col.add_documents(
        [
            {"text": "Lighthouses guide ships at night.", "source": "notes/lights"},
            "Bread rises because yeast makes carbon dioxide.",
            {"text": "   "},
            str(tmp_path / "nope.txt"),
        ]
    )
    assert r.added[0] == "notes/lights" and r.added[1].startswith("text:")
    assert len(r.skipped) == 2 and any("no such file" in s.reason for s in r.skipped)
    assert col.retrieve("why does dough rise", k=1)[0].text.startswith("Bread")
    assert col.remove_documents(["notes/lights"]) == 1
    assert "notes/lights#0" not in col


def test_retrieve_modes_keywords_and_scores(col, docs):
    col.add_documents([docs])
    bm = col.retrieve("XQ-7731", k=3, mode="bm25")
    assert bm[0].source.endswith("engines.txt") and set(bm[0].scores) == {"bm25"}
    dense = col.retrieve("what do cats eat", k=3)
    assert dense[0].heading_path == ["Cats", "Feeding"]
    assert dense[0].score == pytest.approx(dense[0].scores["dense"])
    assert [p.score for p in dense] == sorted((p.score for p in dense), reverse=True)
    for fusion in ("rrf", "convex", "dbsf"):
        hy = col.retrieve("aphids on young shoots", k=2, mode="hybrid", fusion=fusion)
        assert hy[0].heading_path == ["Roses", "Pests"], fusion
        assert set(hy[0].scores) == {"dense", "bm25", "fused"}
    p = dense[0]
    text = source_text(p.source)
    assert text[p.char_start : p.char_end] == p.text
    assert "§ Cats > Feeding" in p.citation() and p.to_dict()["citation"] == p.citation()


def test_where_applies_to_both_sides(col, docs):
    col.add_documents([docs / "cats.md"], metadata={"kind": "pets"})
    col.add_documents([docs / "engines.txt"], metadata={"kind": "tech"})
    for mode in ("dense", "bm25", "hybrid"):
        hits = col.retrieve("cats engines fuel kittens", k=10, mode=mode, where={"kind": "tech"})
        assert hits and {p.metadata["kind"] for p in hits} == {"tech"}, mode


def test_bad_parameters_are_clear_errors(col, docs):
    col.add_documents([docs / "cats.md"])
    with pytest.raises(InvalidInputError, match="unknown fusion"):
        col.retrieve("cats", mode="hybrid", fusion="borda")
    with pytest.raises(InvalidInputError, match="unknown mode"):
        col.retrieve("cats", mode="sparse")
    for k in (0, -1, 10_001, 2.5):
        with pytest.raises(InvalidInputError, match="k must be"):
            col.retrieve("cats", k=k)
    with pytest.raises(InvalidInputError, match="empty"):
        col.retrieve("   ")
    with pytest.raises(InvalidInputError, match="mmr"):
        col.retrieve("cats", mmr=1.5)
    with pytest.raises(InvalidInputError, match="prf"):
        col.retrieve("cats", mode="bm25", prf=True)
    long_query = "why do cats purr " * 100
    with pytest.raises(InvalidInputError, match="tokens; the model reads at most 256"):
        col.retrieve(long_query, truncate=False)
    assert col.retrieve(long_query)  # embedded from its start by default, as search does
    assert col.retrieve(long_query, mode="bm25")  # keywords have no window


def test_keyword_side_follows_deletes_and_persists(col, home, docs):
    col.add_documents([docs])
    store = bm25_store(col)
    assert store.built_segments == len(col._table.segments)  # the ingest indexed them
    assert col.retrieve("XQ-7731", k=1, mode="bm25")
    assert store.built_segments == len(col._table.segments)  # the query built none
    folder = col.path / "derived" / "keywords" / store.config.digest()
    saved = sorted(p.name for p in folder.iterdir())
    segments = sorted(Path(s.ref.file).name.split(".")[0] + ".kw" for s in col._table.segments)
    assert saved == segments  # one postings file per segment
    assert col.remove_documents([docs / "engines.txt"]) >= 1
    assert not col.retrieve("XQ-7731", k=5, mode="bm25")
    assert not any("XQ-7731" in p.text for p in col.retrieve("XQ-7731", k=5, mode="hybrid"))
    assert store.last_build_s is not None
    # a new handle (e.g. another process) loads the persisted postings instead of rebuilding
    col.retrieve("roses", k=1, mode="bm25")
    col.close()
    other = embedsearch.open("rag")
    hits = other.retrieve("prune roses spring", k=1, mode="bm25")
    assert hits[0].heading_path == ["Roses"]
    assert bm25_store(other).last_build_s is None and bm25_store(other).built_segments == 0
    other.close()


def test_mmr_diversifies_near_duplicates(col):
    texts = [
        "The Eiffel Tower is in Paris and was finished in 1889.",
        "The Eiffel Tower, in Paris, was completed in the year 1889.",
        "The Eiffel tower in Paris was finished in 1889!",
        "Paris also has the Louvre, the world's most visited art museum.",
        "Bananas are rich in potassium.",
    ]
    col.add_documents([{"text": t, "source": f"t{i}"} for i, t in enumerate(texts)])
    plain = col.retrieve("Eiffel Tower Paris", k=3)
    assert sum("Eiffel" in p.text for p in plain) == 3
    diverse = col.retrieve("Eiffel Tower Paris", k=3, mmr=0.3)
    assert sum("Eiffel" in p.text for p in diverse) <= 2
    assert any("Louvre" in p.text for p in diverse)
    same = col.retrieve("Eiffel Tower Paris", k=3, mmr=1.0)
    assert [p.id for p in same] == [p.id for p in plain]


def test_prf_moves_the_query_and_still_returns_k(col, docs):
    col.add_documents([docs])
    base = col.retrieve("kittens", k=4)
    fb = col.retrieve("kittens", k=4, prf={"docs": 2, "beta": 1.0})
    assert len(fb) == len(base) == 4
    assert fb[0].scores["dense"] != pytest.approx(base[0].scores["dense"])
    assert col.retrieve("kittens", k=4, mode="hybrid", prf=True)


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory, encoder) -> Path:
    """A randomly initialised 1-layer BERT cross-encoder: no real weights are downloadable
    here, so this tests the plumbing only (loading by path, scoring, reordering)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-ce")
    tok = AutoTokenizer.from_pretrained(encoder.path)  # a transformers tokenizer, to save
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_rerank_with_a_cross_encoder_by_path(col, docs, tiny_cross_encoder):
    from sentence_transformers import CrossEncoder

    col.add_documents([docs])
    out = col.retrieve("what do cats eat", k=3, mode="hybrid", rerank=str(tiny_cross_encoder))
    assert len(out) == 3
    assert all("rerank" in p.scores and p.score == p.scores["rerank"] for p in out)
    assert [p.score for p in out] == sorted((p.score for p in out), reverse=True)
    ce = CrossEncoder(str(tiny_cross_encoder), device="cpu")
    expect = ce.predict([("what do cats eat", p.text) for p in out])
    assert np.allclose(np.asarray(expect).ravel(), [p.score for p in out], atol=1e-4)
    with pytest.raises(EncoderError, match="not a folder"):
        col.retrieve("cats", rerank=str(tiny_cross_encoder / "missing"))


def test_empty_collection_and_symlinked_paths(col, docs, tmp_path):
    assert col.retrieve("anything", k=3, mode="hybrid") == []
    link = tmp_path / "link"
    os.symlink(docs, link)
    r1 = col.add_documents([link / "cats.md"])
    r2 = col.add_documents([docs / "cats.md"])
    assert r1.added == [str(docs / "cats.md")] and r2.unchanged == r1.added


def test_each_side_alone_is_asked_for_what_is_returned(col, docs, monkeypatch):
    """A dense or keyword retrieve asks its side for k passages (MMR's or a reranker's depth
    where asked), not the fusion depth: the dense side had read the text and metadata of
    100 hits to hand out k. Hybrid mode, feedback and an explicit ``candidates`` fetch the
    depth; the dense passages are the search's own first k."""
    col.add_documents([docs])
    asked: list[int] = []
    real = type(col).search

    def spy(self, query, k=10, **kw):
        asked.append(k)
        return real(self, query, k=k, **kw)

    real_ranked = type(col)._rank_ids

    def spy_ranked(self, query, k=10, **kw):
        asked.append(-k)  # ids alone: negative
        return real_ranked(self, query, k, **kw)

    monkeypatch.setattr(type(col), "search", spy)
    monkeypatch.setattr(type(col), "_rank_ids", spy_ranked)
    got = col.retrieve("what do cats eat", k=3, mode="dense")
    hits = real(col, col.encoder.encode_query("what do cats eat"), k=3)
    assert [(p.id, p.text) for p in got] == [(h.id, h.text) for h in hits]
    col.retrieve("what do cats eat", k=3, mode="dense", mmr=0.5)
    col.retrieve("what do cats eat", k=3, mode="dense", candidates=40)
    col.retrieve("what do cats eat", k=3, mode="hybrid")
    col.retrieve("what do cats eat", k=3, mode="dense", prf=True)
    # the fused or fed-back pools are ranked by id alone: only the passages kept are read
    assert asked[:4] == [3, 20, 40, -100] and set(asked[4:]) == {-100}


def test_hybrid_reads_the_texts_of_the_passages_it_keeps(col, docs, monkeypatch):
    """Hybrid and feedback pools rank ids alone; each returned passage still carries its
    stored text and metadata (read for the k kept), as :meth:`get` gives them, and the
    ranking is the one a fully read pool gives."""
    col.add_documents([docs])
    for kw in ({"mode": "hybrid"}, {"mode": "hybrid", "prf": True}, {"mode": "dense", "prf": True}):
        got = col.retrieve("what do cats eat", k=4, **kw)
        assert len(got) == 4
        for p, d in zip(got, col.get([p.id for p in got])):
            assert (p.text, p.metadata) == (d.text, d.metadata) and p.text
    asked = col.search_ids("what do cats eat", k=5)
    hits = col.search("what do cats eat", k=5)
    assert asked == [(h.id, h.score) for h in hits]
    assert col.search_ids("what do cats eat", k=5, where={"source": "nowhere"}) == []


def test_the_kept_passages_are_read_by_the_positions_ranked(col, docs, monkeypatch):
    """The dense pool's reader reads the passages it ranked by their positions while the
    table is the one searched (no look-up by id), and by id once a compaction has replaced
    the table in between; both give the stored text and metadata."""
    col.add_documents([docs])
    from embedsearch.table import Table

    looked_up: list[int] = []
    real_lookup = Table.lookup

    def spy(self, ids):
        looked_up.append(len(ids))
        return real_lookup(self, ids)

    monkeypatch.setattr(Table, "lookup", spy)
    ranked, read = col._rank_ids("what do cats eat", 20)
    ids = [d for d, _ in ranked]
    got = read(ids[:5])
    assert [d.id for d in got] == ids[:5] and not looked_up
    want = {d.id: (d.text, d.metadata) for d in col.get(ids[:5])}
    assert {d.id: (d.text, d.metadata) for d in got} == want
    col.delete([ids[0]])
    col.compact(min_deleted_share=0)  # a new table: positions of the ranking are stale
    looked_up.clear()
    got = read(ids[1:5])
    assert [d.id for d in got] == ids[1:5] and looked_up  # by id now
    assert {d.id: (d.text, d.metadata) for d in got} == {k: want[k] for k in ids[1:5]}
    assert [d.id for d in read(ids[:5])] == ids[1:5]  # the deleted one left out


def test_a_passage_deleted_after_ranking_gives_its_place_to_the_next(col, docs, monkeypatch):
    """A writer may commit between the dense side's ranking (ids alone) and the read of
    the kept passages: a deleted one is not returned and the next ranked takes its place."""
    col.add_documents([docs])
    before = col.retrieve("what do cats eat", k=3, mode="hybrid")
    real_ranked = type(col)._rank_ids
    gone = before[0].id

    def ranked_then_deleted(self, query, k=10, **kw):
        out = real_ranked(self, query, k, **kw)
        if gone in self:
            self.delete([gone])
        return out

    monkeypatch.setattr(type(col), "_rank_ids", ranked_then_deleted)
    # the keyword side reads its first passages with their text: keep it from showing `gone`
    got = col.retrieve("what do cats eat", k=3, mode="hybrid")
    assert gone not in [p.id for p in got]
    assert len(got) == 3 and all(p.text for p in got)
    # MMR reads the pool's vectors: one deleted in between is left out, not an error
    col.add_documents([docs])  # `gone` is back (its file is unchanged: re-added)
    assert gone in col
    got = col.retrieve("what do cats eat", k=3, mode="hybrid", mmr=0.5)
    assert gone not in [p.id for p in got] and len(got) == 3
