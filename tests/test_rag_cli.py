"""The ingest / retrieve / eval commands, run in-process through embedsearch.cli.main."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedsearch.cli import main


def test_ingest_then_retrieve_and_rerun(home, encoder, tmp_path: Path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ops.md").write_text(
        "# Operations\n\n## Logs\n\nLogs rotate nightly at 02:00 and are kept for 30 days.\n\n"
        "## Backups\n\nBackups run every Sunday to the offsite bucket.\n"
    )
    (docs / "broken.txt").write_bytes(b"\xff\xfe\x00\x00garbage")
    assert main(["ingest", "kb", str(docs), "--meta", '{"team": "ops"}', "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["added"] == [str(docs / "ops.md")] and report["count"] == 2
    assert report["skipped"][0]["source"].endswith("broken.txt")
    assert main(["info", "kb"]) == 0  # the ingest made the keyword index
    assert "keywords    1 postings file, " in capsys.readouterr().out

    assert main(["retrieve", "kb", "when are logs rotated", "-k", "1", "--json"]) == 0
    [hit] = json.loads(capsys.readouterr().out)
    assert hit["metadata"]["heading_path"] == ["Operations", "Logs"]
    assert hit["metadata"]["team"] == "ops"
    src = Path(hit["metadata"]["source"]).read_text()
    assert src[hit["metadata"]["char_start"] : hit["metadata"]["char_end"]] == hit["text"]

    assert main(["retrieve", "kb", "offsite backups", "--mode", "hybrid", "--mmr", "0.5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("  1. ") and "§ Operations > Backups" in out

    assert main(["ingest", "kb", str(docs), "--meta", '{"team": "ops"}']) == 0
    assert "0 added, 0 updated, 1 unchanged, 1 skipped" in capsys.readouterr().out
    assert main(["ingest", "kb", str(docs)]) == 0  # metadata dropped: chunks rewritten
    assert "0 added, 1 updated" in capsys.readouterr().out

    with pytest.raises(SystemExit):  # argparse refuses unknown choices
        main(["retrieve", "kb", "logs", "--mode", "hybrid", "--fusion", "nope"])
    assert main(["retrieve", "kb", "logs", "--mmr", "7"]) == 2
    assert "mmr must be" in capsys.readouterr().err


def test_eval_command_on_a_tiny_beir_folder(home, encoder, tmp_path: Path, capsys):
    root = tmp_path / "tiny"
    (root / "qrels").mkdir(parents=True)
    docs = {"a": "Penguins live in Antarctica.", "b": "Camels cross hot deserts.", "c": "Tea."}
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in docs.items())
    )
    (root / "queries.jsonl").write_text(
        json.dumps({"_id": "1", "text": "where do penguins live"})
        + "\n"
        + json.dumps({"_id": "2", "text": "desert animals camels"})
        + "\n"
    )
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\ta\t1\n2\tb\t1\n")
    assert main(["eval", str(root), "--mode", "bm25,hybrid", "--fusion", "rrf", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["queries"] == 2 and out["documents"] == 3
    assert [(r["mode"], r["fusion"]) for r in out["results"]] == [("bm25", None), ("hybrid", "rrf")]
    assert all(r["metrics"]["ndcg@10"] == 1.0 for r in out["results"])
    assert main(["eval", str(root), "--split", "dev"]) == 2
    assert "splits here: test" in capsys.readouterr().err
    assert main(["eval", str(root), "--mode", "sparse"]) == 2
