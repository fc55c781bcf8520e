"""Looking documents up by id in a fresh process: format 3's id indexes against format 2.

What a user feels: ``embedsearch get NAME id`` (or ``col.get``, ``delete``, ``upsert``, an
``add`` checking its ids) in a new process. Format 2 read and hashed every id of the
collection on a process's first look-up (O(rows)); format 3 maps each segment's id index
(``seg-*.ids``, 12 bytes a row) and binary-searches it.

For each collection given (e.g. the 1M and 5M collections ``benchmarks/scale.py`` leaves
under ``/tmp/embedsearch-scale``), two copies are made with hard links (no data copied;
each copy gets its own manifest): one as format 2 wrote it (id indexes stripped, the tests'
``to_format_2``) and one in format 3 (``Collection.upgrade()`` on the copy, timed: the
one-off cost of adding the indexes). Then ``--rounds`` rounds alternate fresh processes on
the two copies, each: import + open, ``get`` of 10 random ids (the first look-up), ``get`` of
10,000 more (a batch the size of an upsert chunk), RSS after. Compare the two gets together:
format 2 reads every segment's ids for the first, so the second then reads nothing new,
while format 3 reads only the segments holding the hits, in both.

Usage::

    python benchmarks/id_lookup.py /tmp/embedsearch-scale/embedsearch-1000000 \\
        /tmp/embedsearch-scale/embedsearch-5000000 [--rounds 5] [--work /tmp/id-lookup]

Writes ``benchmarks/results/id_lookup.json`` and ``id_lookup.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _common import write_result  # noqa: E402

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import embedsearch
col = embedsearch.open(sys.argv[1])
t_open = time.perf_counter() - t0
n = col.info()["rows"]
asked = json.loads(open(sys.argv[2]).read())  # picked by the parent: nothing read here yet
first, batch = asked[:10], asked[10:]
t = time.perf_counter(); docs = col.get(first); t_first = time.perf_counter() - t
t = time.perf_counter(); more = col.get(batch); t_batch = time.perf_counter() - t
assert [d.id for d in docs] == first and len(more) == len(batch)
rss = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmRSS:")][0]
print(json.dumps({"open_s": t_open, "first_get_10_ms": 1e3 * t_first,
                  "get_10000_ms": 1e3 * t_batch, "both_ms": 1e3 * (t_first + t_batch),
                  "rss_mb": rss, "rows": n}))
"""


def link_copy(src: Path, dst: Path) -> None:
    """``dst`` holding the files of ``src`` as hard links, its manifest a real copy (so
    that rewriting the copy's manifest never touches the source)."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, copy_function=os.link, ignore=shutil.ignore_patterns("LOCK"))
    manifest = dst / "manifest.json"
    data = manifest.read_bytes()
    manifest.unlink()
    manifest.write_bytes(data)


def probe(path: Path, ids_file: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), str(ids_file)],
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"probe failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def prepare(src: Path, work: Path, rounds: int) -> tuple[Path, Path, float]:
    """(format-2 copy, format-3 copy, seconds the upgrade to format 3 took)."""
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    from v1_format import to_format_2

    import embedsearch

    v2, v3 = work / f"{src.name}-format2", work / f"{src.name}-format3"
    link_copy(src, v2)
    to_format_2(v2)
    link_copy(v2, v3)
    col = embedsearch.open(v2)  # the ids each round asks for: 10,010 live rows at random
    every = col.ids()
    for r in range(rounds):
        picked = np.random.default_rng(r).choice(len(every), 10_010, replace=False)
        (work / f"ids-{r}.json").write_text(json.dumps([every[i] for i in picked.tolist()]))
    col.close()
    col = embedsearch.open(v3)
    t = time.perf_counter()
    col.upgrade()
    upgrade_s = time.perf_counter() - t
    col.close()
    return v2, v3, upgrade_s


def plot(result: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["collections"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key, title in (
        (axes[0], "first_get_10_ms", "first get of 10 ids, fresh process (ms)"),
        (axes[1], "both_ms", "get of 10, then of 10,000 more (ms, both)"),
        (axes[2], "rss_mb", "RSS after both (MB)"),
    ):
        x = np.arange(len(runs))
        for j, fmt in enumerate(("format 2", "format 3")):
            vals = [r["median"][fmt][key] for r in runs]
            bars = ax.bar(x + (j - 0.5) * 0.38, vals, 0.38, label=fmt, color=f"C{j}")
            for b, v in zip(bars, vals):
                ax.annotate(
                    f"{v:,.0f}",
                    (b.get_x() + b.get_width() / 2, v),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
        ax.set_xticks(x, [f"{r['rows']:,} rows" for r in runs])
        ax.set_title(title + f", median of {result['rounds']}", fontsize=9)
        ax.set_ylim(0, max(r["median"][f][key] for r in runs for f in r["median"]) * 1.2)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(
        "Id look-ups: format 2 hashes every id on first use; format 3 maps each segment's id index",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("collections", type=Path, nargs="+")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("/tmp/id-lookup"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    runs = []
    for src in args.collections:
        v2, v3, upgrade_s = prepare(src, args.work, args.rounds)
        samples: dict[str, list[dict[str, Any]]] = {"format 2": [], "format 3": []}
        for r in range(args.rounds):  # alternating, so both see the same machine
            for fmt, path in (("format 2", v2), ("format 3", v3)):
                samples[fmt].append(probe(path, args.work / f"ids-{r}.json"))
                print(
                    f"  {src.name} round {r + 1}/{args.rounds} {fmt}: {samples[fmt][-1]}",
                    file=sys.stderr,
                    flush=True,
                )
        median = {
            fmt: {k: float(np.median([s[k] for s in rows])) for k in rows[0] if k != "rows"}
            for fmt, rows in samples.items()
        }
        runs.append(
            {
                "source": str(src),
                "rows": samples["format 3"][0]["rows"],
                "upgrade_s": upgrade_s,
                "median": median,
                "samples": samples,
            }
        )
        shutil.rmtree(v2, ignore_errors=True)
        shutil.rmtree(v3, ignore_errors=True)
    print("| rows | format | open s | first get 10 ms | then get 10,000 ms | both ms | RSS MB |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for run in runs:
        for fmt, m in run["median"].items():
            print(
                f"| {run['rows']:,} | {fmt} | {m['open_s']:.2f} | {m['first_get_10_ms']:.1f} | "
                f"{m['get_10000_ms']:.0f} | {m['both_ms']:.0f} | {m['rss_mb']:.0f} |"
            )
        print(f"upgrade of {run['rows']:,} rows to format 3: {run['upgrade_s']:.1f} s")
    out = write_result("id_lookup", {"rounds": args.rounds, "collections": runs})
    plot({"collections": runs, "rounds": args.rounds}, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
