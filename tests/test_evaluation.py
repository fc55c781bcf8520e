"""BEIR loading, collection reuse, and metrics through ranx on a small generated data set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedsearch.errors import InvalidInputError
from embedsearch.evaluation import (
    build_collection,
    evaluate_mode,
    load_beir,
    markdown_table,
    score_run,
)

DOCS = {
    "d1": ("Volcanoes", "Lava erupts from volcanoes when magma reaches the surface."),
    "d2": ("Glaciers", "Glaciers carve valleys as the ice slowly flows downhill."),
    "d3": ("Coral", "Coral reefs are built by tiny animals in warm shallow seas."),
    "d4": ("Deserts", "Deserts get less than 250 millimetres of rain a year."),
    "d5": ("Tides", "The moon's gravity raises the ocean tides twice a day."),
    "d6": ("", "Earthquakes happen when tectonic plates slip along a fault."),
}
QUERIES = {
    "q1": "what makes lava come out of a volcano",
    "q2": "how do glaciers shape valleys",
    "q3": "why are there tides in the ocean",
    "q4": "an unjudged query",
}
QRELS = [("q1", "d1", 2), ("q1", "d6", 1), ("q2", "d2", 1), ("q3", "d5", 1), ("q3", "d4", 0)]


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    root = tmp_path / "mini"
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as fh:
        for d, (title, text) in DOCS.items():
            fh.write(json.dumps({"_id": d, "title": title, "text": text}) + "\n")
    with open(root / "queries.jsonl", "w") as fh:
        for q, text in QUERIES.items():
            fh.write(json.dumps({"_id": q, "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in QRELS]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_load_beir_keeps_judged_queries_only(beir):
    ds = load_beir(beir)
    assert set(ds.queries) == {"q1", "q2", "q3"}
    assert ds.qrels["q1"] == {"d1": 2, "d6": 1} and ds.qrels["q3"]["d4"] == 0
    assert ds.doc_text("d1").startswith("Volcanoes Lava") and ds.doc_text("d6").startswith("Earth")
    with pytest.raises(InvalidInputError, match="splits here: test"):
        load_beir(beir, split="train")
    with pytest.raises(InvalidInputError, match="corpus.jsonl"):
        load_beir(beir / "qrels")


def test_metrics_come_from_ranx_with_trec_definitions():
    qrels = {"a": {"x": 1}, "b": {"y": 2, "z": 1}}
    perfect = {"a": {"x": 2.0, "n": 1.0}, "b": {"y": 3.0, "z": 2.0}}
    assert score_run(perfect, qrels) == pytest.approx(
        {"ndcg@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0}
    )
    second = {"a": {"n": 2.0, "x": 1.0}}  # query b returns nothing: counts as zero
    got = score_run(second, qrels)
    assert got["mrr@10"] == pytest.approx(0.25)  # (1/2 + 0) / 2
    assert got["recall@100"] == pytest.approx(0.5)
    assert got["ndcg@10"] == pytest.approx((1 / 1.5849625) / 2, rel=1e-4)  # 1/log2(3), halved


def test_build_reuses_collection_and_scores_every_mode(beir, home, encoder):
    import embedsearch

    ds = load_beir(beir)
    with embedsearch.open("beir-mini") as partial:  # an interrupted build: resumed, not redone
        partial.add([ds.doc_text("d1")], ids=["d1"])
    col = build_collection(ds, "beir-mini")
    assert sorted(col.ids()) == sorted(DOCS)
    assert len(col) == len(DOCS)
    key = col.state_key
    col.close()
    col = build_collection(ds, "beir-mini")  # reused: nothing re-embedded or re-added
    assert col.state_key == key
    results = [evaluate_mode(col, ds, "dense"), evaluate_mode(col, ds, "bm25")]
    results += [evaluate_mode(col, ds, "hybrid", fusion=f) for f in ("rrf", "convex", "dbsf")]
    for r in results:
        assert r.queries == 3 and r.ms_per_query > 0
        assert r.metrics["ndcg@10"] > 0.8, r  # these queries are easy
        if r.mode != "bm25":  # q1's "earthquakes" document shares no word with the query
            assert r.metrics["recall@100"] == pytest.approx(1.0)
    table = markdown_table(results)
    assert "| mini | test | hybrid-dbsf |" in table and table.count("\n") == 6
    col.close()
    with open(beir / "corpus.jsonl", "a") as fh:  # the corpus changed since the build
        fh.write(json.dumps({"_id": "other", "title": "", "text": "Something else."}) + "\n")
    with pytest.raises(InvalidInputError, match="holds another corpus"):
        build_collection(load_beir(beir), "beir-mini")
