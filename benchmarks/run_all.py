"""Run every benchmark in ``benchmarks/`` and write ``benchmarks/results/summary.md``.

Usage:
    python benchmarks/run_all.py                 # quick, bounded settings (default)
    python benchmarks/run_all.py --full          # the real sizes (hours on 2 shared cores)
    python benchmarks/run_all.py --only peers index_curves
    python benchmarks/run_all.py --summary-only  # just rebuild summary.md from results/*.json

Each script that exists is run in its own process, in a fixed order, with its quick
arguments (below) or ``--full`` when it accepts that flag (read from its ``--help``).
``peers.py`` runs in ``.venv-peers`` (the peers' own venv, see
``benchmarks/requirements-peers.txt``) when that venv exists. A script that fails or runs
past its time limit is reported, and the suite goes on.

Convention for benchmark scripts: quick and bounded by default, ``--full`` for the real
sizes; print a Markdown table; write ``benchmarks/results/<name>.json`` through
``_common.write_result`` with a ``"markdown"`` key holding the table(s) for this summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PEERS_PY = ROOT / ".venv-peers" / "bin" / "python"

#: Run order: cheapest and most basic first.
SCRIPTS = [
    "encoder_backends",
    "core_ingest",
    "index_curves",
    "peers",
    "latent_eval",
    "rag_eval",
    "http_load",
    "reliability",
    "ray_scale",
]
#: Extra arguments in quick mode, for scripts whose own default is not bounded.
QUICK_ARGS: dict[str, list[str]] = {"core_ingest": ["--limit", "4000"]}
QUICK_TIMEOUT_S = 30 * 60
FULL_TIMEOUT_S = 3 * 60 * 60


def _help_text(python: str, script: Path) -> str:
    try:
        proc = subprocess.run(
            [python, str(script), "--help"], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        return ""
    return proc.stdout + proc.stderr


def _python_for(name: str) -> str:
    if name == "peers" and PEERS_PY.exists():
        return str(PEERS_PY)
    return sys.executable


def run_script(name: str, full: bool, log_dir: Path) -> dict[str, Any]:
    """Run one benchmark script; return what happened (never raises)."""
    script = HERE / f"{name}.py"
    python = _python_for(name)
    args: list[str] = []
    note = ""
    if full:
        if "--full" in _help_text(python, script):
            args = ["--full"]
        else:
            note = "no --full flag: ran with its defaults"
    else:
        args = QUICK_ARGS.get(name, [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log = log_dir / f"{name}.log"
    t0 = time.perf_counter()
    try:
        with log.open("w") as fh:
            proc = subprocess.run(
                [python, str(script), *args],
                cwd=ROOT,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=FULL_TIMEOUT_S if full else QUICK_TIMEOUT_S,
            )
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        status = "timed out"
    return {
        "script": f"{name}.py",
        "python": python,
        "args": " ".join(args),
        "status": status,
        "seconds": round(time.perf_counter() - t0, 1),
        "log": str(log.relative_to(ROOT)),
        "note": note,
    }


def _first_table(payload: dict[str, Any]) -> str | None:
    """A Markdown table for a result file that has no ``markdown`` key: its first row list."""
    for value in payload.values():
        if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            cols = list(dict.fromkeys(k for r in value for k in r))
            cols = [c for c in cols if not isinstance(value[0].get(c), (list, dict))][:12]
            fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
            lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in value]
            return "\n".join(lines)
    return None


def write_summary(runs: list[dict[str, Any]], started: float | None) -> Path:
    """``results/summary.md``: the run log, then each result file's tables and plots."""
    lines = ["# Benchmark results", ""]
    if runs:
        lines += [
            "## This run",
            "",
            "| script | status | seconds | args | note |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['script']} | {r['status']} | {r['seconds']} | {r['args']} | {r['note']} |"
            for r in runs
        ]
        lines.append("")
    order = {name: i for i, name in enumerate(SCRIPTS)}
    files = sorted(
        (p for p in RESULTS.glob("*.json") if p.name != "run_all.json"),
        key=lambda p: (order.get(p.stem.split("_quick")[0], 99), p.name),
    )
    for path in files:
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        stale = started is not None and path.stat().st_mtime < started
        when = payload.get("when", "?")
        lines += [f"## {path.stem}", ""]
        lines.append(
            f"`results/{path.name}`, measured {when}" + (" (not re-run now)" if stale else "")
        )
        lines.append("")
        body = payload.get("markdown") or _first_table(payload)
        lines += [body if body else "(no table in this result file)", ""]
        for png in sorted(RESULTS.glob(f"{path.stem}*.png")):
            if path.stem.endswith("_quick") or "_quick" not in png.stem:
                lines += [f"![{png.stem}]({png.name})", ""]
    out = RESULTS / "summary.md"
    out.write_text("\n".join(lines))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--full", action="store_true", help="real sizes instead of quick ones")
    ap.add_argument("--only", nargs="*", help="run only these scripts (names without .py)")
    ap.add_argument("--summary-only", action="store_true", help="only rebuild summary.md")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.time()
    runs: list[dict[str, Any]] = []
    if not args.summary_only:
        log_dir = RESULTS / "logs"
        log_dir.mkdir(exist_ok=True)
        for name in SCRIPTS:
            if args.only and name not in args.only:
                continue
            if not (HERE / f"{name}.py").exists():
                runs.append(
                    {
                        "script": f"{name}.py",
                        "python": "",
                        "args": "",
                        "status": "absent",
                        "seconds": 0,
                        "log": "",
                        "note": "script not written yet",
                    }
                )
                continue
            print(f"== {name} ...", flush=True)
            runs.append(run_script(name, args.full, log_dir))
            print(
                f"   {runs[-1]['status']} in {runs[-1]['seconds']} s ({runs[-1]['log']})",
                flush=True,
            )
        (RESULTS / "run_all.json").write_text(
            json.dumps({"full": args.full, "started": started, "runs": runs}, indent=2)
        )
    out = write_summary(runs, None if args.summary_only else started)
    print(f"wrote {out}")
    if any(r["status"] not in ("ok", "absent") for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
