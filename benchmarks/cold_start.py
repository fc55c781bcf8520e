"""Cold start of the CLI and warm readiness of the server (issue 15, findings 1 and 2).

Every command is run as a fresh process, the way a user runs it, over a collection built
from the bundled demo corpus (350 texts) and a folder of Markdown files ingested as passages.
For each command: the median wall time of ``--runs`` runs, and whether torch or
sentence-transformers was imported (``python -X importtime``). Then ``embedsearch serve``:
seconds until ``/readyz`` answers 200, and the first search after that against the median of
the next nine.

Targets (issue 15): every read-only or query command <= 1.5 s cold once the ONNX export is
cached, ingest of unchanged files <= 2 s, the first request after ready as fast as the tenth.

Usage:
    python benchmarks/cold_start.py [--runs 5]
Writes benchmarks/results/cold_start.json and cold_start.png. Reproduce one figure by hand:
    EMBEDSEARCH_HOME=<home> farm-bench -n 5 -- embedsearch retrieve notes "cats" --mode hybrid
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import RESULTS, table, write_result  # noqa: E402

EXE = [sys.executable, "-m", "embedsearch.cli"]
HEAVY = ("torch", "sentence_transformers")


def _env(home: Path) -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "EMBEDSEARCH_HOME": str(home), "PYTHONPATH": root}


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _run(
    args: list[str], env: dict[str, str], *, importtime: bool = False
) -> tuple[float, str, float]:
    """Run one command as a fresh process: (wall seconds, stderr, CPU seconds)."""
    prefix = [sys.executable, "-X", "importtime", "-m", "embedsearch.cli"] if importtime else EXE
    c0, t0 = _cpu(), time.perf_counter()
    proc = subprocess.run([*prefix, *args], env=env, capture_output=True, text=True, timeout=300)
    took, cpu = time.perf_counter() - t0, _cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return took, proc.stderr, cpu


def _heavy_imports(stderr: str) -> list[str]:
    found = set()
    for line in stderr.splitlines():
        if line.startswith("import time:"):
            name = line.rsplit("|", 1)[-1].strip()
            if name.split(".")[0] in HEAVY:
                found.add(name.split(".")[0])
    return sorted(found)


def _build(home: Path, docs: Path, env: dict[str, str]) -> None:
    from importlib import resources

    corpus = home.parent / "demo.jsonl"
    corpus.write_text(
        resources.files("embedsearch").joinpath("data/demo_corpus.jsonl").read_text("utf-8")
    )
    docs.mkdir()
    for i in range(12):
        (docs / f"note-{i}.md").write_text(
            f"# Note {i}\n\nCats and gardens, part {i}.\n\n## Details\n\n"
            + "Tomatoes need sun and water. " * 20
        )
    _run(["index", "demo", str(corpus)], env)
    _run(["ingest", "notes", str(docs)], env)


def _commands(docs: Path) -> list[tuple[str, list[str], float]]:
    return [
        ("search", ["search", "demo", "saving for retirement", "-k", "5"], 1.5),
        ("search --where", ["search", "demo", "space", "--where", '{"year": {"$gte": 2015}}'], 1.5),
        ("retrieve dense", ["retrieve", "notes", "cats", "--mode", "dense"], 1.5),
        ("retrieve hybrid", ["retrieve", "notes", "cats", "--mode", "hybrid"], 1.5),
        ("retrieve bm25", ["retrieve", "notes", "cats", "--mode", "bm25"], 1.5),
        ("info", ["info", "demo"], 1.5),
        ("list", ["list"], 1.5),
        ("get", ["get", "demo", "finance-001"], 1.5),
        ("peek", ["peek", "demo", "-n", "2"], 1.5),
        ("ingest (unchanged)", ["ingest", "notes", str(docs)], 2.0),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(env: dict[str, str]) -> dict[str, float]:
    port = _free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*EXE, "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.perf_counter() - t0 > 300 or proc.poll() is not None:
                raise SystemExit("the server did not become ready")
            time.sleep(0.05)
        ready = time.perf_counter() - t0
        times = []
        for i in range(10):
            body = json.dumps({"query": f"money for later {i}", "k": 5}).encode()
            req = urllib.request.Request(
                f"{base}/collections/demo/search", body, {"Content-Type": "application/json"}
            )
            t = time.perf_counter()
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()
            times.append(time.perf_counter() - t)
        adds = []
        for i in range(10):
            doc = {"documents": [{"id": f"new-{i}", "text": f"a brand new text {i}"}]}
            req = urllib.request.Request(
                f"{base}/collections/demo/documents",
                json.dumps(doc).encode(),
                {"Content-Type": "application/json"},
            )
            t = time.perf_counter()
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()
            adds.append(time.perf_counter() - t)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return {
        "ready_s": round(ready, 3),
        "first_search_ms": round(times[0] * 1000, 1),
        "next9_median_ms": round(statistics.median(times[1:]) * 1000, 1),
        "first_add_ms": round(adds[0] * 1000, 1),
        "next9_adds_median_ms": round(statistics.median(adds[1:]) * 1000, 1),
    }


def _plot(rows: list[dict[str, object]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.6))
    names = [str(r["command"]) for r in rows]
    meds = [float(r["median_s"]) for r in rows]  # type: ignore[arg-type]
    targets = [float(r["target_s"]) for r in rows]  # type: ignore[arg-type]
    colors = ["#2a9d8f" if m <= t else "#e76f51" for m, t in zip(meds, targets)]
    cpus = [float(r["cpu_s"]) for r in rows]  # type: ignore[arg-type]
    ax.barh(names, meds, color=colors, label="wall time (median)")
    ax.scatter(cpus, range(len(rows)), color="black", marker="o", s=18, zorder=3, label="CPU time")
    for i, t in enumerate(targets):
        ax.plot([t, t], [i - 0.4, i + 0.4], color="black", lw=1.5)
    ax.invert_yaxis()
    ax.set_xlabel("seconds per fresh process; black tick = target")
    load = os.getloadavg()[0]
    ax.set_title(
        f"embedsearch CLI cold start, ONNX export cached (load {load:.1f} on {os.cpu_count()} cores)"
    )
    ax.set_xlim(0, max(max(targets), max(meds), max(cpus)) * 1.1)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per command")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="es-cold-") as tmp:
        home, docs = Path(tmp) / "home", Path(tmp) / "docs"
        env = _env(home)
        _build(home, docs, env)
        rows = []
        for name, cmd, target in _commands(docs):
            _run(cmd, env)  # warm the page cache, as a second call of the day would be
            runs = [_run(cmd, env) for _ in range(args.runs)]
            times, cpus = [r[0] for r in runs], [r[2] for r in runs]
            heavy = _heavy_imports(_run(cmd, env, importtime=True)[1])
            med = statistics.median(times)
            rows.append(
                {
                    "command": name,
                    "argv": "embedsearch " + " ".join(cmd),
                    "median_s": round(med, 3),
                    "min_s": round(min(times), 3),
                    "max_s": round(max(times), 3),
                    "cpu_s": round(statistics.median(cpus), 3),
                    "target_s": target,
                    "meets": med <= target,
                    "imports_torch": bool(heavy),
                }
            )
        server = _server(env)
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} cores: wall times grow with contention;")
    print("cpu_s is each process's own user+system time\n")
    print(
        table(
            rows,
            [
                "command",
                "median_s",
                "min_s",
                "max_s",
                "cpu_s",
                "target_s",
                "meets",
                "imports_torch",
            ],
        )
    )
    print()
    print(table([server], list(server)))
    out = write_result(
        "cold_start",
        {"runs": args.runs, "load_average": os.getloadavg(), "commands": rows, "server": server},
    )
    _plot(rows, RESULTS / "cold_start.png")
    print(f"\nwrote {out} and {RESULTS / 'cold_start.png'}")


if __name__ == "__main__":
    main()
