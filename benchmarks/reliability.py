"""Long reliability runs: crash trials, state-machine examples, concurrency, fuzzing.

The CI suite runs the same harnesses in a bounded form; this script turns the knobs up,
collects the counts the tests record (``ES_RELIABILITY_REPORT``), and adds a census of
what the known-bug fuzzers hit. It prints a table and writes
``benchmarks/results/reliability.json``.

Usage::

    .venv/bin/python benchmarks/reliability.py                 # default long settings
    .venv/bin/python benchmarks/reliability.py --quick         # CI-sized, a smoke test
    .venv/bin/python benchmarks/reliability.py --crash-trials 500 --huge-text
    .venv/bin/python benchmarks/reliability.py --only powerloss --powerloss-states 64

Each part runs in its own pytest process; a part that fails is reported, not hidden.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "reliability.json"


def run_pytest(name: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run one pytest part with a fresh report file; return counts, outcome and wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        full_env = {**os.environ, **env, "ES_RELIABILITY_REPORT": str(report)}
        full_env.setdefault("HF_HUB_OFFLINE", "1")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=0", *args]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        data = json.loads(report.read_text()) if report.exists() else {}
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {
        k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|xfailed|xpassed|error)", summary)
    }
    return {
        "part": name,
        "command": " ".join(f"{k}={v}" for k, v in env.items()) + " pytest " + " ".join(args),
        "exit_code": proc.returncode,
        "wall_s": round(wall, 1),
        "pytest": counts,
        "stats": data,
        "tail": proc.stdout[-3000:] if proc.returncode else "",
    }


def fuzz_census(n: int) -> dict[str, Any]:
    """Exception types raised when opening collections with re-signed, mutated manifests.

    The hostile-input tests mark these as known core bugs (xfail); here we count what kinds
    of non-EmbedSearchError escape, to size the fix.
    """
    sys.path.insert(0, str(ROOT / "tests"))
    import random

    import numpy as np

    import embedsearch
    from embedsearch import EmbedSearchError, store

    rng = random.Random(1)
    out: dict[str, Counter[str]] = {"signed": Counter(), "unsigned": Counter()}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "tpl"
        col = embedsearch.open(base, index="HNSW16")
        vecs = np.random.default_rng(0).standard_normal((30, 384)).astype(np.float32)
        col.add([f"t{i}" for i in range(30)], ids=[f"a{i}" for i in range(30)], vectors=vecs)
        col.delete(["a1"])
        col.close()
        real = store.read_manifest_json(base)
        values = [None, True, -1, 0, 10**12, 2.5, "x", "", [], {}, [1], {"file": 1}, "../x"]
        for i in range(n):
            for mode in ("signed", "unsigned"):
                m = json.loads(json.dumps(real))
                for _ in range(rng.randint(1, 3)):
                    key = rng.choice(sorted(m) + ["model.dim", "index.file", "segments.0"])
                    val = rng.choice(values)
                    parent = {"model.dim": "model", "index.file": "index"}.get(key)
                    if parent:
                        if isinstance(m.get(parent), dict):
                            m[parent][key.split(".")[1]] = val
                    elif key == "segments.0":
                        if isinstance(m.get("segments"), list) and m["segments"]:
                            m["segments"][0] = val
                    elif rng.random() < 0.5:
                        m.pop(key, None)
                    else:
                        m[key] = val
                if mode == "signed":
                    m["format"], m["format_version"] = store.FORMAT_NAME, store.FORMAT_VERSION
                    body = {k: v for k, v in m.items() if k != "checksum"}
                    canon = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
                    m = {**body, "checksum": __import__("hashlib").sha256(canon).hexdigest()}
                path = Path(tmp) / f"c{i}{mode}"
                import shutil

                shutil.copytree(base, path)
                (path / "manifest.json").write_text(json.dumps(m))
                try:
                    c = embedsearch.open(path)
                    if not 0 < c.dim <= 65536:
                        raise AssertionError(f"absurd dim {c.dim}")
                    c.search(np.ones(c.dim), k=3)
                    c.close()
                    out[mode]["ok"] += 1
                except EmbedSearchError:
                    out[mode]["EmbedSearchError"] += 1
                except Exception as exc:  # noqa: BLE001 - the census is the point
                    out[mode][type(exc).__name__] += 1
                shutil.rmtree(path, ignore_errors=True)
    return {"cases_per_mode": n, **{k: dict(v) for k, v in out.items()}}


def huge_text() -> dict[str, Any]:
    """Time and peak memory of adding one 50 MB text (in a subprocess)."""
    code = (
        "import resource, time, tempfile, embedsearch\n"
        "t = ('lorem ipsum dolor sit amet ' * 2_000_000)[:50_000_000]\n"
        "col = embedsearch.open(tempfile.mkdtemp() + '/c')\n"
        "t0 = time.perf_counter()\n"
        "try:\n"
        "    col.add([t], ids=['big']); out = 'ok'\n"
        "except embedsearch.EmbedSearchError as e:\n"
        "    out = 'refused: ' + str(e)[:200]\n"
        "print(out, round(time.perf_counter() - t0, 1),"
        " resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    parts = last.rsplit(" ", 2)
    if len(parts) == 3 and proc.returncode == 0:
        return {"outcome": parts[0], "seconds": float(parts[1]), "peak_rss_mb": int(parts[2])}
    return {"outcome": "crashed", "exit_code": proc.returncode, "tail": last}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized settings (a smoke run)")
    ap.add_argument("--crash-trials", type=int, default=200)
    ap.add_argument("--crash-max-delay", type=float, default=1.5)
    ap.add_argument("--stateful-examples", type=int, default=100)
    ap.add_argument("--stateful-steps", type=int, default=50)
    ap.add_argument("--concurrency-seconds", type=float, default=60)
    ap.add_argument("--fuzz-examples", type=int, default=500)
    ap.add_argument("--census", type=int, default=200, help="mutated manifests per mode")
    ap.add_argument(
        "--powerloss-states",
        type=int,
        default=48,
        help="crash states checked per crash point by the power-loss checker",
    )
    ap.add_argument(
        "--only",
        nargs="*",
        choices=["stateful", "crash", "concurrency", "fuzz", "powerloss", "census"],
        help="run only these parts",
    )
    ap.add_argument("--huge-text", action="store_true", help="also time a 50 MB text (minutes)")
    args = ap.parse_args()
    if args.quick:
        args.crash_trials, args.stateful_examples, args.stateful_steps = 20, 12, 30
        args.concurrency_seconds, args.fuzz_examples, args.census = 4, 60, 30
        args.crash_max_delay, args.powerloss_states = 1.0, 4

    specs = {
        "stateful": (
            ["tests/test_reliability_stateful.py"],
            {
                "ES_STATEFUL_EXAMPLES": str(args.stateful_examples),
                "ES_STATEFUL_STEPS": str(args.stateful_steps),
            },
        ),
        "crash": (
            ["tests/test_crash.py", "-k", "sigkill", "-s"],
            {
                "ES_CRASH_TRIALS": str(args.crash_trials),
                "ES_CRASH_MAX_DELAY": str(args.crash_max_delay),
            },
        ),
        "concurrency": (
            ["tests/test_concurrency.py", "-k", "readers", "-s"],
            {"ES_CONCURRENCY_SECONDS": str(args.concurrency_seconds)},
        ),
        "fuzz": (
            ["tests/test_hostile.py", "-k", "fuzz"],
            {"ES_FUZZ_EXAMPLES": str(args.fuzz_examples)},
        ),
        # every on-disk state a power cut could leave (tests/test_powerloss.py)
        "powerloss": (
            ["tests/test_powerloss.py", "-k", "every_power_loss", "-s"],
            {"ES_POWERLOSS_STATES": str(args.powerloss_states)},
        ),
    }
    only = set(args.only or [*specs, "census"])
    parts = [run_pytest(name, *spec) for name, spec in specs.items() if name in only]
    result: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        "load_average_at_start": os.getloadavg(),
        "parts": parts,
    }
    if "census" in only:
        result["fuzz_census"] = fuzz_census(args.census)
    if args.huge_text:
        result["huge_text_50mb"] = huge_text()
    out = (
        RESULTS
        if args.only is None
        else RESULTS.with_name(f"reliability-{'-'.join(sorted(only))}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))

    print(f"{'part':<12} {'exit':>4} {'wall s':>8}  pytest outcome / counts")
    for p in parts:
        print(f"{p['part']:<12} {p['exit_code']:>4} {p['wall_s']:>8}  {p['pytest']}")
        for key, stats in p["stats"].items():
            print(f"{'':<27}{key}: {json.dumps(stats, sort_keys=True)}")
    if "fuzz_census" in result:
        print("fuzz census (known bugs):", json.dumps(result["fuzz_census"], sort_keys=True))
    if "huge_text_50mb" in result:
        print("50 MB text:", result["huge_text_50mb"])
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
