"""The core CLI, in-process (fast) and once through the installed entry point."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from embedsearch.cli import main


def _write_inputs(root: Path) -> list[Path]:
    jsonl = root / "corpus.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "_id": "b1",
                    "title": "Volcanoes",
                    "text": "Lava flows from an erupting volcano.",
                    "lang": "en",
                },
                {
                    "_id": "b2",
                    "title": "Banking",
                    "text": "Interest rates were raised by the central bank.",
                    "lang": "en",
                },
                {"_id": "b3", "title": "", "text": "   ", "lang": "en"},
            ]
        )
    )
    with open(root / "rows.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "body", "year"])
        w.writeheader()
        w.writerow({"id": "c1", "body": "A violin concerto in D major.", "year": "1878"})
    pq.write_table(
        pa.table(
            {"id": ["p1"], "text": ["Penguins huddle together in the Antarctic winter."], "n": [3]}
        ),
        root / "t.parquet",
    )
    (root / "lines.txt").write_text("Bread rises because of yeast.\n\nSourdough needs a starter.\n")
    notes = root / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "a.md").write_text("# Gardening\nPrune roses in late winter.")
    (notes / "sub" / "b.txt").write_text("Chess openings: the Sicilian defence.")
    (notes / "skip.bin").write_bytes(b"\x00\x01")
    return [jsonl, root / "rows.csv", root / "t.parquet", root / "lines.txt", notes]


def test_index_search_info_delete_compact(home, encoder, tmp_path, capsys):
    files = _write_inputs(tmp_path)
    assert main(["index", "mixed", str(files[0]), str(files[2]), str(files[3]), str(files[4])]) == 0
    out = capsys.readouterr().out
    assert "indexed 7 documents" in out and "skipped 2 empty" in out
    assert (
        main(["index", "mixed", str(files[1]), "--text-field", "body", "--meta-fields", "year"])
        == 0
    )
    capsys.readouterr()

    assert main(["search", "mixed", "volcanic eruption", "-k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["id"] == "b1" and hits[0]["text"].startswith("Volcanoes Lava")
    assert hits[0]["metadata"] == {"lang": "en"}

    assert main(["search", "mixed", "music", "-k", "1", "--where", '{"year": 1878}']) == 0
    assert "c1" in capsys.readouterr().out  # CSV columns are typed: 1878 is a number
    assert main(["search", "mixed", "music", "-k", "1", "--where", '{"year": "1878"}']) == 0
    err = capsys.readouterr().err
    assert "0 of 8 documents match" in err and "holds numbers" in err
    assert main(["search", "mixed", "baking bread", "-k", "3"]) == 0
    assert "lines:1" in capsys.readouterr().out
    assert main(["search", "mixed", "roses", "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == "notes/a.md"  # from the common root

    assert main(["info", "mixed", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == 8 and info["model"]["name"] == "all-MiniLM-L6-v2"
    assert info["index"]["kind"] == "exact" and info["disk_bytes"] > 0
    assert info["keywords"] == {"kept": False, "files": 0, "bytes": 0}  # never asked for
    assert main(["info", "mixed"]) == 0
    assert "keywords    none yet (made by `ingest`" in capsys.readouterr().out

    assert main(["delete", "mixed", "b1"]) == 0
    assert "deleted 1" in capsys.readouterr().out
    assert main(["search", "mixed", "volcanic eruption", "-k", "8", "--json"]) == 0
    assert "b1" not in {h["id"] for h in json.loads(capsys.readouterr().out)}
    capsys.readouterr()
    from embedsearch.base import COMPACT_MIN_DELETED_SHARE
    from embedsearch.cli import build_parser

    flags = build_parser().parse_args(["compact", "mixed"])  # the library's default, not a copy
    assert flags.min_deleted_share == COMPACT_MIN_DELETED_SHARE
    assert main(["compact", "mixed", "--min-deleted-share", "2"]) == 2  # the flag's words
    assert "--min-deleted-share must be a number from 0 to 1" in capsys.readouterr().err
    assert main(["compact", "mixed"]) == 0
    out = capsys.readouterr().out  # the old files stay for the past versions, and it says so
    assert "compacted: 8 -> 7 rows" in out and "old files, kept while past versions" in out
    assert "'embedsearch retention mixed --keep-days 0' frees them now" in out
    assert main(["retention", "mixed", "--keep-days", "0"]) == 0
    assert main(["compact", "mixed"]) == 0
    assert "old files" not in capsys.readouterr().out  # nothing past is kept any more
    assert main(["list"]) == 0
    assert "mixed" in capsys.readouterr().out


def test_errors_are_one_line_with_exit_code_2(home, encoder, tmp_path, capsys):
    files = _write_inputs(tmp_path)
    assert main(["search", "missing", "x"]) == 2
    assert "error: No collection" in capsys.readouterr().err
    assert main(["index", "dup", str(files[0])]) == 0
    before = json.loads((home / "dup" / "manifest.json").read_text())["generation"]
    assert main(["index", "dup", str(files[0])]) == 0  # same ids, same texts: resumed, no write
    assert "2 already stored with the same text" in capsys.readouterr().out
    files[0].write_text(files[0].read_text().replace("Lava flows", "Magma rises"))
    assert main(["index", "dup", str(files[0])]) == 2  # an id with another text: refused
    err = capsys.readouterr().err
    assert "already exists with a different text" in err and "--upsert" in err
    assert json.loads((home / "dup" / "manifest.json").read_text())["generation"] == before
    assert main(["index", "dup", str(files[0]), "--upsert"]) == 0
    assert main(["search", "dup", "x", "--where", "{bad json"]) == 2
    assert "--where is not valid JSON" in capsys.readouterr().err
    assert main(["search", "dup", "x", "-k", "0"]) == 2
    assert main(["index", "dup", str(tmp_path / "nope.jsonl")]) == 2
    assert main(["index", "dup", str(files[1])]) == 2  # csv without a text field
    assert "(here likely --text-field body)" in capsys.readouterr().err  # not id or year


def test_usage_errors_speak_of_the_command_typed(home, encoder, tmp_path, capsys):
    """A wrong flag is reported by the sub-command (its usage, the nearest flag), a wrong
    command with the nearest one, loose words with a hint to quote them; exit 2 each."""
    import pytest

    files = _write_inputs(tmp_path)
    assert main(["index", "kb", str(files[0])]) == 0
    capsys.readouterr()
    cases = [
        (
            ["search", "kb", "x", "--were", "{}"],
            ["usage: embedsearch search", "did you mean --where?"],
        ),
        (["search", "kb", "lava", "flows"], ["unrecognized arguments: flows", "quote a text"]),
        (["serch", "kb", "x"], ["unknown command 'serch' (did you mean 'search'?)"]),
        (["vocab", "build", "--bogus"], ["usage: embedsearch vocab build", "--bogus"]),
        (["peek", "kb", "--jsn"], ["usage: embedsearch peek", "did you mean --json?"]),
    ]
    for argv, fragments in cases:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2, argv
        for fragment in fragments:
            assert fragment in err, (argv, err)
        assert "usage: embedsearch [-h] [-v] COMMAND" not in err or argv[0] == "serch", err
    assert "quote" not in err  # a flag's value is not taken for loose words
    assert main(["peek", "kb", "-k", "1", "--json"]) == 0  # -k counts wherever a count is asked
    assert len(json.loads(capsys.readouterr().out)) == 1


def test_entry_point_demo_runs(tmp_path):
    env = {**os.environ, "EMBEDSEARCH_HOME": str(tmp_path)}
    exe = Path(sys.executable).with_name("embedsearch")
    proc = subprocess.run(
        [str(exe), "demo", "saving for old age"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "built 'demo': 350 documents" in proc.stdout
    first = proc.stdout.split('search: "saving for old age"')[1].splitlines()[1]
    assert "finance-" in first
    assert not any(tmp_path.iterdir())  # the demo cleans up unless --keep


_SEARCH_AND_REPORT = """
import json, sys
from embedsearch.cli import main
code = main(["search", "fast", "a kitten playing", "-k", "5", "--json"])
print()
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


def test_search_command_uses_the_cached_onnx_export_instead_of_torch(
    home, demo_rows, demo_vectors, tmp_path
):
    """`embedsearch export` caches the fp32 ONNX graph; `embedsearch search` on a torch
    collection then answers without importing torch, with the hits torch's query vector gets."""
    from sentence_transformers import SentenceTransformer

    import embedsearch
    from embedsearch.encoder import DEFAULT_MODEL, resolve_model_path

    col = embedsearch.open("fast")
    col.add([r["text"] for r in demo_rows], ids=[r["id"] for r in demo_rows], vectors=demo_vectors)
    assert col.info()["model"].get("backend", "torch") == "torch"
    reference = SentenceTransformer(resolve_model_path(DEFAULT_MODEL), device="cpu")
    query = reference.encode(["a kitten playing"], normalize_embeddings=True)[0]
    want = col.search(query, k=5)  # the query embedded by sentence-transformers on torch
    col.close()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("EMBEDSEARCH_BACKEND", "EMBEDSEARCH_FP32_RUNTIME")
    }
    env.update(EMBEDSEARCH_HOME=str(home), EMBEDSEARCH_CACHE=str(tmp_path / "cache"))
    exe = Path(sys.executable).with_name("embedsearch")
    proc = subprocess.run(
        [str(exe), "export"], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0 and "fp32:" in proc.stdout, proc.stderr[-2000:]
    proc = subprocess.run(
        [sys.executable, "-c", _SEARCH_AND_REPORT],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    hits, report = json.loads(lines[-2]), json.loads(lines[-1])
    assert report == {"code": 0, "torch": False}
    assert [h["id"] for h in hits] == [h.id for h in want]
    assert max(abs(h["score"] - w.score) for h, w in zip(hits, want)) < 1e-4


def test_every_command_module_is_declared_in_the_registry():
    """The command list lives in code (cli.COMMAND_MODULES); a cmd_*.py left out of it
    would silently drop its commands from `embedsearch --help`."""
    import embedsearch.cli as cli

    files = {p.stem for p in Path(cli.__file__).parent.glob("cmd_*.py")}
    declared = [m.__name__.rsplit(".", 1)[1] for m in cli.COMMAND_MODULES]
    assert sorted(declared) == sorted(files)
    assert len(set(declared)) == len(declared)
    commands = set(cli.build_parser()._subparsers._group_actions[0].choices)
    assert {"index", "search", "serve", "info"} <= commands


def test_index_embeds_in_batches_and_commits_in_large_ones(home, encoder, tmp_path, capsys):
    """`index` embeds --batch-size documents at a time and commits --commit-every at a time,
    one segment each (a bulk ingest leaves no small segments to merge and keep): 700
    documents in batches of 100, committed every 300, are 3 segments and 3 add versions. An
    id seen earlier in the run with another text stops it, after what came before is
    committed; the same text is skipped, as for a stored one."""
    from embedsearch import store

    rows = [{"id": f"d{i}", "text": f"note {i} about topic {i % 7}"} for i in range(700)]
    src = tmp_path / "notes.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["index", "bulk", str(src), "--batch-size", "100", "--commit-every", "300"]
    assert main(args) == 0
    assert "indexed 700 documents" in capsys.readouterr().out
    manifest = store.read_manifest(home / "bulk")
    assert [s.rows for s in manifest.segments] == [300, 300, 100]
    ops = [
        json.loads(p.read_text())["op"] for p in sorted((home / "bulk" / "versions").glob("v-*"))
    ]
    assert ops.count("add") == 3 and "merge" not in ops

    again = rows[:250] + [{"id": "d120", "text": "note 120 again"}]  # d120: batch 2
    src.write_text("".join(json.dumps(r) + "\n" for r in again))
    assert main(["index", "other", str(src), "--batch-size", "100"]) == 2
    assert "id 'd120' already exists with a different text" in capsys.readouterr().err
    assert main(["info", "other", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 200  # the batches before it, kept
    within = rows[300:350] + [{"id": "d310", "text": "twice in one batch"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in within))
    assert main(["index", "other", str(src)]) == 2  # refused by the write, as before
    assert "'d310' appears twice" in capsys.readouterr().err
    bad = rows[400:650] + [{"id": "nul", "text": "a NUL \u0000 inside"}]  # batch 3
    src.write_text("".join(json.dumps(r) + "\n" for r in bad))
    assert main(["index", "third", str(src), "--batch-size", "100"]) == 2
    assert "texts[50] contains a NUL character" in capsys.readouterr().err
    assert main(["info", "third", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 200  # the batches before it, kept
    assert main(["index", "bulk", str(src), "--commit-every", "0"]) == 2
    assert "--commit-every must be at least 1" in capsys.readouterr().err


def test_index_interrupted_after_a_commit_counts_it_once(
    home, encoder, tmp_path, capsys, monkeypatch
):
    """Ctrl-C inside what the writer does after an add has committed (its merge of small
    segments): the documents are counted as committed and not written a second time."""
    from embedsearch.collection import Collection

    src = tmp_path / "notes.jsonl"
    src.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": f"note {i}"}) + "\n" for i in range(700))
    )
    calls: list[int] = []

    def interrupted(self):
        calls.append(len(self))
        raise KeyboardInterrupt

    merge = Collection._merge_small_segments
    monkeypatch.setattr(Collection, "_merge_small_segments", interrupted)
    args = ["index", "once", str(src), "--batch-size", "100", "--commit-every", "300"]
    assert main(args) == 130
    err = capsys.readouterr().err
    assert calls == [300] and "interrupted: 300 documents of this run were committed" in err
    assert "not kept" not in err
    monkeypatch.setattr(Collection, "_merge_small_segments", merge)
    assert main(["info", "once", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 300
