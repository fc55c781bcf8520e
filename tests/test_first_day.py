"""A new user's first day (issue 15): the real CLI in subprocesses and a real server.

One test per finding of the issue, each doing what a new user did: index their own folders
and files, search them, interrupt a long run, mistype a name, serve and query over HTTP.
Every command runs as a fresh ``python -m embedsearch.cli`` process with its own
``EMBEDSEARCH_HOME``, so what is checked is what a shell user sees (exit codes, stdout,
stderr). Timings are not asserted here except as loose bounds on behaviour (a first request
that is not 10x slower than the next); the measured numbers live in
``benchmarks/cold_start.py``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import embedsearch
from embedsearch.store import WriterLock

ROOT = Path(__file__).resolve().parents[1]
TORCH_PROBE = (
    "import sys, runpy; sys.argv = ['embedsearch'] + sys.argv[1:]; code = 0\n"
    "try:\n    runpy.run_module('embedsearch.cli', run_name='__main__')\n"
    "except SystemExit as e:\n    code = e.code or 0\n"
    "print('HEAVY=' + ','.join(m for m in ('torch', 'sentence_transformers', 'pandas', 'numba') "
    "if m in sys.modules), file=sys.stderr)\n"
    "sys.exit(code)\n"
)


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run ``embedsearch ARGS`` as a fresh process in a fresh home; returns the result."""
    home = tmp_path / "home"
    env = {
        **os.environ,
        "EMBEDSEARCH_HOME": str(home),
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    env.pop("EMBEDSEARCH_API_KEY", None)
    monkeypatch.setenv("EMBEDSEARCH_HOME", str(home))

    def run(*args: str, check: int | None = 0, probe: bool = False, **extra: str):
        cmd = (
            [sys.executable, "-c", TORCH_PROBE]
            if probe
            else [sys.executable, "-m", "embedsearch.cli"]
        )
        proc = subprocess.run(
            [*cmd, *args],
            capture_output=True,
            text=True,
            env={**env, **extra},
            cwd=tmp_path,
            timeout=600,
        )
        if check is not None:
            assert proc.returncode == check, (args, proc.returncode, proc.stdout, proc.stderr)
        return proc

    run.home = home  # type: ignore[attr-defined]
    run.env = env  # type: ignore[attr-defined]
    run.dir = tmp_path  # type: ignore[attr-defined]
    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _corpus(path: Path, n: int) -> Path:
    topics = ["cats and kittens", "stock markets", "garden tomatoes", "black holes", "violins"]
    with path.open("w") as fh:
        for i in range(n):
            row = {"id": f"d{i}", "text": f"note {i} about {topics[i % 5]}", "n": "ab"[i % 2]}
            fh.write(json.dumps(row) + "\n")
    return path


# ----------------------------------------------------------------------------- finding 1
def test_1_cold_query_and_unchanged_ingest_never_import_torch(user):
    docs = user.dir / "docs"
    docs.mkdir()
    (docs / "cats.md").write_text("# Cats\n\nCats purr and chase mice.\n\n## Food\n\nFish.\n")
    (docs / "money.md").write_text("# Money\n\nSave for retirement early.\n")
    first = user("ingest", "notes", str(docs), EMBEDSEARCH_PROGRESS_SECONDS="0")
    assert "ingest: 2/2 files (100%)" in first.stderr  # 11: progress over files, with total
    user("index", "rows", str(_corpus(user.dir / "c.jsonl", 20)))
    user("index", "graph", str(user.dir / "c.jsonl"), "--index", "HNSW32")  # faiss is used
    user("delete", "rows", "d3")  # a tombstone file, read on every open
    for args in (
        ("retrieve", "notes", "what do cats eat", "--mode", "hybrid"),
        ("retrieve", "notes", "what do cats eat", "--mode", "dense"),
        ("search", "rows", "kittens"),
        ("search", "rows", "kittens", "--where", '{"n": {"$in": ["a", "b"]}}'),
        ("search", "graph", "kittens"),
        ("ingest", "notes", str(docs)),  # unchanged: chunking needs the tokenizer only
        ("info", "rows"),
        ("list",),
        ("peek", "rows", "-n", "1"),
        ("delete", "rows", "d4"),
    ):
        proc = user(*args, probe=True)
        assert re.search(r"^HEAVY=$", proc.stderr, re.M), (args, proc.stderr[-2000:])
        if args[0] == "ingest":
            assert "2 unchanged" in proc.stdout


# ----------------------------------------------------------------------------- finding 2, 12, 13
def test_2_12_13_server_ready_means_warm_docs_offline_and_honest_startup(user):
    user("index", "news", str(_corpus(user.dir / "c.jsonl", 50)))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "embedsearch.cli", "serve", "--port", str(port)],
        env=user.env,
        cwd=user.dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        took = []
        for i in range(10):
            t0 = time.perf_counter()
            r = httpx.post(f"{base}/collections/news/search", json={"query": f"kittens {i}"})
            took.append(time.perf_counter() - t0)
            assert r.status_code == 200 and r.json()["hits"]
        rest = sorted(took[1:])[len(took[1:]) // 2]
        # warm: the first request is not the one that loads the model (it took 6 s before)
        assert took[0] < max(10 * rest, 0.5), took
        r = httpx.post(
            f"{base}/collections/news/documents", json={"documents": [{"id": "n", "text": "new"}]}
        )
        assert r.status_code == 201

        # 5: a long query is embedded from its start on both paths, and said so
        long_query = "kittens and cats " * 200
        for route in ("search", "retrieve"):
            r = httpx.post(f"{base}/collections/news/{route}", json={"query": long_query})
            assert r.status_code == 200 and r.json()["query_truncated"] is True, r.text

        # 12: /docs is served from packaged assets, no CDN
        page = httpx.get(f"{base}/docs").text
        assert "/docs-assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
        assert httpx.get(f"{base}/docs-assets/swagger-ui-bundle.js").status_code == 200
        # 13: /v1/models knows the dimension; a mistyped collection gets a suggestion
        assert httpx.get(f"{base}/v1/models").json()["data"][0]["dim"] == 384
        miss = httpx.post(f"{base}/collections/nwes/search", json={"query": "x"}).json()
        assert "Did you mean 'news'?" in miss["error"]["message"]
        # 10: HTTP errors name request fields, not Python arguments
        r = httpx.post(f"{base}/collections/news/delete", json={"ids": ["nope"]})
        msg = r.json()["error"]["message"]
        assert r.status_code == 404 and '"missing_ok": true' in msg and "missing_ok=True" not in msg

        # 13: a second server on the busy port fails cleanly, before claiming to serve
        busy = user("serve", "--port", str(port), check=2)
        assert "already in use" in busy.stderr and "serving" not in busy.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert f"serving {user.home.resolve()} on http://127.0.0.1:{port}" in err
    assert "EMBEDSEARCH_HOME" not in err.split("serving", 1)[1].splitlines()[0]


# ----------------------------------------------------------------------------- finding 3, 11
def test_3_11_ctrl_c_keeps_committed_batches_and_a_rerun_resumes(user):
    corpus = _corpus(user.dir / "big.jsonl", 1500)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "embedsearch.cli",
            "index",
            "big",
            str(corpus),
            "--batch-size",
            "100",
        ],
        env={**user.env, "EMBEDSEARCH_PROGRESS_SECONDS": "0.2"},
        cwd=user.dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as in a user's terminal: a runner started in the background (``cmd &``
        # without job control) ignores SIGINT, and its children would inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines = []
    assert proc.stderr is not None
    for line in proc.stderr:  # progress lines, since stderr is not a terminal
        lines.append(line)
        m = re.match(r"index: ([\d,]+)/1,500 documents \(\d+%\), [\d,]+ documents/s, ETA", line)
        if m and int(m.group(1).replace(",", "")) >= 300:
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    err = "".join(lines) + err
    assert proc.returncode == 130, err
    m = re.search(r"interrupted: ([\d,]+) documents of this run were committed and are kept", err)
    assert m, err
    kept = int(m.group(1).replace(",", ""))
    assert 300 <= kept < 1500 and kept % 100 == 0
    info = json.loads(user("info", "big", "--json").stdout)
    assert info["count"] == kept  # exactly what the message said

    again = user("index", "big", str(corpus))
    assert f"{kept:,} already stored with the same text: skipped" in again.stdout
    assert f"indexed {1500 - kept:,} documents" in again.stdout
    assert json.loads(user("info", "big", "--json").stdout)["count"] == 1500


def test_11_first_use_of_a_model_says_it_exports_once(user, tmp_path):
    user("index", "tiny", str(_corpus(user.dir / "c.jsonl", 3)))
    cache = tmp_path / "fresh-cache"
    first = user("search", "tiny", "cats", EMBEDSEARCH_CACHE=str(cache))
    assert "exporting its encoder to ONNX once" in first.stderr
    second = user("search", "tiny", "cats", EMBEDSEARCH_CACHE=str(cache))
    assert "exporting" not in second.stderr


# ----------------------------------------------------------------------------- finding 4
def test_4_folders_skip_hidden_report_ignored_and_ids_never_collide(user):
    a, b = user.dir / "proj-a", user.dir / "proj-b"
    for d, topic in ((a, "cats"), (b, "stock markets")):
        (d / ".git").mkdir(parents=True)
        (d / ".git" / "HEAD.md").write_text("ref: refs/heads/main")
        (d / "node_modules").mkdir()
        (d / "node_modules" / "lib.md").write_text("vendored")
        (d / "README.md").write_text(f"# About {topic}\n\nAll about {topic}.")
        (d / "logo.png").write_bytes(b"\x89PNG")
    (b / "notes.pdf").write_bytes(b"%PDF-1.4")
    out = user("index", "projects", str(a), str(b)).stdout
    assert "indexed 2 documents" in out
    assert "ignored 3 files of other types (.png ×2, .pdf ×1)" in out
    ids = {h["id"] for h in json.loads(user("search", "projects", "x", "--json").stdout)}
    assert ids == {"proj-a/README.md", "proj-b/README.md"}
    helptext = user("index", "--help").stdout
    assert "one document per non-empty line" in helptext and "hidden entries" in helptext


# ----------------------------------------------------------------------------- finding 5
def test_5_long_documents_counted_and_long_queries_alike_on_every_path(user):
    long_md = user.dir / "long.md"
    long_md.write_text("# Long\n\n" + "The garden needs water and sun every single day. " * 60)
    (user.dir / "short.md").write_text("# Short\n\nCats purr.")
    out = user("index", "pages", str(long_md), str(user.dir / "short.md")).stdout
    assert "1 document(s) are longer than the model window (256 tokens)" in out
    assert "embedsearch ingest" in out
    query = "tell me about gardens " * 150
    s = user("search", "pages", query)
    r = user("retrieve", "pages", query, "--mode", "dense")
    for proc in (s, r):  # the same on both paths: a note, then the start is embedded
        assert re.search(
            r"note: the query is \d+ tokens; the model reads only its first 256", proc.stderr
        )
        assert "long.md" in proc.stdout


# ----------------------------------------------------------------------------- finding 6
def test_6_csv_columns_are_typed_and_mismatched_filters_explained(user):
    csv = user.dir / "films.csv"
    csv.write_text(
        "id,text,year,rating,seen,released\n"
        "f1,A heist film in Rome,1999,4.5,true,1999-05-01\n"
        "f2,A space opera,2021,3,false,2021-01-02\n"
    )
    user("index", "films", str(csv))
    hits = json.loads(
        user("search", "films", "movie", "--where", '{"year": {"$lt": 2022}}', "--json").stdout
    )
    assert {h["id"] for h in hits} == {"f1", "f2"}
    meta = {h["id"]: h["metadata"] for h in hits}
    assert meta["f1"] == {"year": 1999, "rating": 4.5, "seen": True, "released": "1999-05-01"}
    assert meta["f2"]["rating"] == 3.0  # a float column stays float
    user("index", "films-raw", str(csv), "--no-types")
    p = user("search", "films-raw", "movie", "--where", '{"year": {"$lt": 2022}}')
    assert "0 of 2 documents match the filter" in p.stderr
    assert "field 'year' holds text" in p.stderr and "compares a number with text" in p.stderr


# ----------------------------------------------------------------------------- finding 7
def test_7_non_utf8_input_is_an_error_with_the_option_to_pass(user):
    latin = user.dir / "menu.txt"
    latin.write_bytes("Café crème brûlée\n".encode("latin-1"))
    p = user("index", "menu", str(latin), check=2)
    assert (
        p.stderr.startswith("error: ") and "--encoding" in p.stderr and "Traceback" not in p.stderr
    )
    assert not (user.home / "menu").exists()  # a failed first run leaves no empty collection
    user("index", "menu", str(latin), "--encoding", "latin-1")
    doc = json.loads(user("get", "menu", "menu:1", "--json").stdout)[0]
    assert doc["text"] == "Café crème brûlée"


# ----------------------------------------------------------------------------- finding 8
def test_8_drop_list_with_counts_helpers_hidden_did_you_mean(user):
    user("index", "notes", str(_corpus(user.dir / "c.jsonl", 7)))
    beir = user.dir / "tinybeir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(
        "\n".join(
            json.dumps({"_id": f"c{i}", "title": "", "text": t})
            for i, t in enumerate(["cats", "dogs", "stocks"])
        )
    )
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "kittens"}))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tc0\t1\n")
    user("eval", str(beir), "--mode", "dense")  # builds a helper collection beir-tinybeir
    listing = user("list").stdout
    assert re.search(r"^notes\s+7\s+[\d.]+ KB\s+all-MiniLM-L6-v2$", listing, re.M), listing
    assert "beir-tinybeir" not in listing
    assert re.search(r"beir-tinybeir\s+3 .*\[evaluation\]", user("list", "--all").stdout)

    typo = user("search", "ntoes", "x", check=2)
    assert "Did you mean 'notes'?" in typo.stderr
    user("drop", "beir-tinybeir")
    assert not (user.home / "beir-tinybeir").exists()
    assert "Did you mean 'notes'?" in user("drop", "note", check=2).stderr

    # the same in Python
    summaries = embedsearch.list_collections()
    assert [(s.name, s.count, s.model, s.kind) for s in summaries] == [
        ("notes", 7, "all-MiniLM-L6-v2", "collection")
    ]
    assert summaries[0].bytes > 0
    assert embedsearch.drop("notes") is True
    assert embedsearch.list_collections() == [] and not (user.home / "notes").exists()
    with pytest.raises(embedsearch.CollectionNotFoundError):
        embedsearch.drop("notes")

    # a failed index (no text field) leaves no empty collection behind
    bad = user.dir / "bad.csv"
    bad.write_text("id,body\n1,hello\n")
    assert "--text-field" in user("index", "oops", str(bad), check=2).stderr
    assert not (user.home / "oops").exists()


# ----------------------------------------------------------------------------- finding 9
def test_9_empty_results_are_explained(user):
    with embedsearch.open("empty"):
        pass
    p = user("search", "empty", "anything")
    assert p.stdout == "" and "collection 'empty' holds 0 documents" in p.stderr
    lock = WriterLock(user.home / "empty")  # as another process's `index` would hold it
    lock.acquire()
    try:
        p = user("search", "empty", "anything")
        assert f"another process is writing to it now (pid={os.getpid()}" in p.stderr
    finally:
        lock.release()
    user("index", "news", str(_corpus(user.dir / "c.jsonl", 12)))
    p = user("search", "news", "cats", "--where", '{"lang": "fr"}')
    assert "0 of 12 documents match the filter" in p.stderr
    assert "no document has a field 'lang'" in p.stderr
    p = user("retrieve", "news", "cats", "--where", '{"lang": "fr"}')
    assert "0 of 12 documents match the filter" in p.stderr


# ----------------------------------------------------------------------------- finding 10
def test_10_cli_errors_name_cli_flags(user):
    corpus = _corpus(user.dir / "c.jsonl", 3)
    user("index", "news", str(corpus))
    p = user("delete", "news", "nope", check=2)
    assert "--missing-ok" in p.stderr and "missing_ok=True" not in p.stderr
    corpus.write_text(corpus.read_text().replace("note 0", "changed note 0"))
    p = user("index", "news", str(corpus), check=2)
    assert "--upsert" in p.stderr and "upsert()" not in p.stderr
    p = user("ingest", "news2", str(corpus.parent / "missing.md"), check=1)
    assert "=True" not in p.stdout + p.stderr
    assert not (user.home / "news2").exists()  # nothing indexed: no empty collection kept


# ----------------------------------------------------------------------------- finding 13
def test_13_demo_get_peek_and_readme(user):
    demo = user("demo", "saving for old age")
    assert "temporary collection, deleted at exit" in demo.stderr and "--keep" in demo.stdout
    user("index", "news", str(_corpus(user.dir / "c.jsonl", 4)))
    got = user("get", "news", "d1").stdout
    assert "id        d1" in got and "note 1 about stock markets" in got
    assert "(2 of 4 documents)" in user("peek", "news", "-n", "2").stderr
    assert "not found" in user("get", "news", "zzz", check=2).stderr

    readme = (ROOT / "README.md").read_text()
    assert "EMBEDSEARCH_API_KEY" in readme.split("## Configuration", 1)[1]
    cli = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    assert "../shared" not in cli
    for path in re.findall(r"\b(examples/[\w./-]+)", cli):
        assert (ROOT / path).exists(), path
