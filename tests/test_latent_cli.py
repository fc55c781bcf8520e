"""The latent-space commands of the CLI, run in-process against real collections."""

from __future__ import annotations

import json

import pytest

import embedsearch
from embedsearch.cli import main

WORDS = "king queen man woman prince princess paris france berlin germany cat dog car truck guitar lunch dinner breakfast"


@pytest.fixture
def vocab_name(home, encoder, tmp_path) -> str:
    f = tmp_path / "words.txt"
    f.write_text("\n".join(WORDS.split()) + "\n", "utf-8")
    assert main(["vocab", "build", "tiny", "--words", str(f)]) == 0
    return "tiny"


@pytest.fixture
def notes(home, encoder, demo_rows) -> str:
    rows = [
        r
        for t in ("cooking", "astronomy", "music")
        for r in [x for x in demo_rows if x["topic"] == t][:15]
    ]
    with embedsearch.open("notes") as col:
        col.add(
            [r["text"] for r in rows],
            ids=[r["id"] for r in rows],
            metadata=[{"topic": r["topic"]} for r in rows],
        )
    return "notes"


def test_vocab_build_info_and_analogy(vocab_name, capsys) -> None:
    assert main(["analogy", "--vocab", vocab_name, "king - man + woman", "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].split()[-1] == "queen"
    assert main(["analogy", "--vocab", vocab_name, "france", "paris", "germany", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["id"] == "berlin" and len(hits) == 10
    assert main(["analogy", "--vocab", vocab_name, "man", "king", "woman", "--method", "mul"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[-1] == "queen"
    assert main(["vocab", "info", vocab_name]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == 18 and info["vocabulary"]["complete"] is True
    assert main(["vocab", "add", vocab_name, "lion", "tiger"]) == 0
    assert "added 2 words" in capsys.readouterr().out
    assert main(["doesnt-match", vocab_name, "breakfast", "lunch", "dinner", "truck"]) == 0
    assert capsys.readouterr().out.strip() == "truck"
    assert main(["similarity", vocab_name, "cat", "dog"]) == 0
    assert 0.3 < float(capsys.readouterr().out) < 1.0


def test_errors_are_one_line_with_exit_code_2(vocab_name, capsys) -> None:
    capsys.readouterr()
    assert main(["analogy", "--vocab", vocab_name, "kinng - man + woman"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: not in vocabulary") and "'kinng'" in err
    assert main(["analogy", "--vocab", vocab_name, "king - (man"]) == 2
    assert "expected ')'" in capsys.readouterr().err
    assert main(["analogy", "--vocab", vocab_name, "a", "b"]) == 2
    assert "three terms" in capsys.readouterr().err
    assert main(["expr", "no-such-collection", "a + b"]) == 2
    assert "error:" in capsys.readouterr().err


def test_expr_similar_interpolate(notes, capsys) -> None:
    assert main(["expr", notes, "0.5*stars + planets - music", "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    with embedsearch.open(notes) as col:  # the CLI answers what the Python API answers
        assert [h["id"] for h in hits] == [h.id for h in col.expr("0.5*stars + planets - music", 3)]
    assert hits[0]["metadata"]["topic"] == "astronomy"
    where = json.dumps({"topic": "music"})
    assert (
        main(["similar", notes, "a warm evening", "--minus", "cold", "--where", where, "--json"])
        == 0
    )
    hits = json.loads(capsys.readouterr().out)
    assert hits and all(h["metadata"]["topic"] == "music" for h in hits)
    assert (
        main(["interpolate", notes, "baking bread", "distant galaxies", "--steps", "3", "--json"])
        == 0
    )
    steps = json.loads(capsys.readouterr().out)
    assert [s["t"] for s in steps] == [0.0, 0.5, 1.0]
    assert steps[0]["hits"][0]["metadata"]["topic"] == "cooking"
    assert steps[-1]["hits"][0]["metadata"]["topic"] == "astronomy"


def test_cluster_outliers_map(notes, capsys, tmp_path) -> None:
    assert main(["cluster", notes, "-k", "3", "--persist", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["k"] == 3 and sum(c["size"] for c in result["clusters"]) == 45
    assert result["persisted_field"] == "cluster"
    with embedsearch.open(notes) as col:
        first = result["clusters"][0]
        hits = col.search("x", k=45, where={"cluster": 0})
        assert sorted(h.id for h in hits) == sorted(first["ids"])
    assert main(["cluster", notes, "--k-range", "2", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("k=") and "silhouette" in out and "medoid" in out
    assert main(["outliers", notes, "-n", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert main(["outliers", notes, "--method", "atypical", "--neighbors", "3"]) == 2
    assert "--neighbors applies to --method neighbors only" in capsys.readouterr().err
    png, page = tmp_path / "m.png", tmp_path / "m.html"
    assert main(["map", notes, str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "cluster (stored in metadata)" in capsys.readouterr().out
    assert main(["map", notes, "-o", str(tmp_path / "o.png"), "--method", "pca"]) == 0
    assert (tmp_path / "o.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["map", notes]) == 2  # no output file: said in the CLI's words
    assert "give it after the collection or with -o" in capsys.readouterr().err
    assert main(["outliers", notes, "-k", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["map", notes, str(page), "--color-by", "topic", "--max-points", "20"]) == 0
    assert "20 of 45 documents" in capsys.readouterr().out
    assert page.read_text("utf-8").count('"id":[') == 1


def test_topics_and_along(notes, capsys) -> None:
    assert main(["topics", notes, "--levels", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["documents"] == 45 and len(result["assignments"]) == 2
    assert all(len(a) == 45 for a in result["assignments"])
    assert main(["topics", notes, "--top", "3", "--level", "0"]) == 0
    out = capsys.readouterr().out
    assert "level 0: 3 topics" in out and "e.g." in out
    assert main(["topics", notes, "--top", "0"]) == 2
    assert "top must be" in capsys.readouterr().err
    args = ["along", notes, "-p", "a recipe for dinner", "-n", "stars and galaxies", "-k", "5"]
    assert main([*args, "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 5 and all(h["metadata"]["topic"] == "cooking" for h in hits)
