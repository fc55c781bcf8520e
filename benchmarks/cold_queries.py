"""The first queries of a fresh process: format 4's row checksums against format 3's blocks.

What a user feels: the first searches after ``embedsearch.open`` (a CLI call, a new server
worker, the first queries after a reboot). Every vector a query reads is checked once per
process before it is used. Format 3 checked the whole 64-row block (96 KiB at 384 dims)
around each re-ranked row, so a query re-ranking 512 rows spread over a 5M collection read
~48 MiB the first time; format 4 checks each row by its own CRC-32 (``seg-*.crc``, 4 bytes a
row, read per 4 KiB chunk) and reads only the rows.

For each collection given (e.g. the ones ``benchmarks/scale.py`` leaves under
``/tmp/embedsearch-scale``), two copies are made with hard links (no data copied; each has
its own manifest): one in format 4 (``Collection.upgrade()`` on the copy, timed: the one-off
cost of writing the row checksums) and one as format 3 wrote it (row checksums stripped, the
tests' ``to_format_3``). Both copies share the vector files' inodes, hence the page cache.
Then ``--rounds`` rounds alternate fresh processes on the two copies, in two states of the
page cache:

* ``cached``: every file of the collection in the page cache (a process that is new, on a
  machine that has read the collection before);
* ``evicted``: the collection's files dropped from the page cache first
  (``posix_fadvise(DONTNEED)``: as after a reboot, or when other work pushed them out).

Each process: import + open, ``--queries`` searches (k = 10, the scale benchmark's queries:
held-out documents and AG News titles) timed one by one, then the same queries again (every
row they need already checked and cached: the warm reference), RSS. Both formats must
return the same hits.

Usage::

    python benchmarks/cold_queries.py /tmp/embedsearch-scale/embedsearch-5000000 \\
        [--rounds 3] [--queries 200] [--work /tmp/cold-queries]

Writes ``benchmarks/results/cold_queries.json`` and ``cold_queries.png``.
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
from id_lookup import link_copy  # noqa: E402

QUERIES = HERE / ".cache" / "scale" / "queries.npy"
FORMATS = ("format 3", "format 4")
STATES = ("cached", "evicted")
STATE_TITLES = {
    "cached": "files in the page cache",
    "evicted": "files evicted from the page cache",
}

PROBE = r"""
import hashlib, json, sys, time
t0 = time.perf_counter()
import numpy as np
import embedsearch
col = embedsearch.open(sys.argv[1])
t_open = time.perf_counter() - t0
q = np.load(sys.argv[2])[: int(sys.argv[3])]
passes, digest = [], hashlib.sha256()
for p in range(2):
    ts = []
    for v in q:
        t = time.perf_counter()
        hits = col.search(v, k=10)
        ts.append(1e3 * (time.perf_counter() - t))
        if p == 0:
            digest.update(" ".join(h.id for h in hits).encode() + b"\n")
    passes.append(ts)
rss = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmRSS:")][0]
print(json.dumps({"open_s": t_open, "first_ms": passes[0], "again_ms": passes[1],
                  "rss_mb": rss, "rows": col.info()["rows"], "hits": digest.hexdigest()}))
"""


def probe(path: Path, queries: Path, n: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), str(queries), str(n)],
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"probe failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def set_cache(roots: list[Path], state: str) -> None:
    """Put every file of ``roots`` in the page cache, or drop them from it."""
    for path in (p for root in roots for p in _files(root)):
        fd = os.open(path, os.O_RDONLY)
        try:
            if state == "evicted":
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            else:
                while os.read(fd, 1 << 24):
                    pass
        finally:
            os.close(fd)


def prepare(src: Path, work: Path) -> tuple[Path, Path, float]:
    """(format-3 copy, format-4 copy, seconds the upgrade to format 4 took)."""
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    from v1_format import to_format_3

    import embedsearch

    v3, v4 = work / f"{src.name}-format3", work / f"{src.name}-format4"
    link_copy(src, v4)
    col = embedsearch.open(v4)
    t = time.perf_counter()
    col.upgrade()
    upgrade_s = time.perf_counter() - t
    col.close()
    link_copy(v4, v3)
    to_format_3(v3)
    return v3, v4, upgrade_s


def summarise(samples: list[dict[str, Any]]) -> dict[str, float]:
    first = np.array([s["first_ms"] for s in samples])  # rounds × queries
    again = np.array([s["again_ms"] for s in samples])
    return {
        "open_s": float(np.median([s["open_s"] for s in samples])),
        "query_1_ms": float(np.median(first[:, 0])),
        "queries_1_10_ms": float(np.median(first[:, :10].sum(axis=1))),
        "first_pass_p50_ms": float(np.median(np.median(first, axis=1))),
        "first_pass_mean_ms": float(np.median(first.mean(axis=1))),
        "again_p50_ms": float(np.median(np.median(again, axis=1))),
        "rss_mb": float(np.median([s["rss_mb"] for s in samples])),
    }


def plot(result: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["collections"]
    fig, axes = plt.subplots(len(runs), 2, figsize=(13, 4.2 * len(runs)), squeeze=False)
    for row, run in zip(axes, runs):
        for ax, state in zip(row, STATES):
            top = 0.0
            for j, fmt in enumerate(FORMATS):
                samples = run["samples"][state][fmt]
                first = np.median(np.array([s["first_ms"] for s in samples]), axis=0)
                again = np.median(np.array([s["again_ms"] for s in samples]), axis=0)
                x = np.arange(1, len(first) + 1)
                p50 = run["median"][state][fmt]["first_pass_p50_ms"]
                ax.plot(
                    x, first, color=f"C{j}", lw=1.2, label=f"{fmt}, first pass (p50 {p50:.1f} ms)"
                )
                ax.plot(x, again, color=f"C{j}", lw=0.8, ls=":", label=f"{fmt}, same queries again")
                top = max(top, float(np.percentile(first, 99)))
            ax.set_yscale("log")
            ax.set_xlabel("query number in a fresh process")
            ax.set_ylabel("ms per query (median of rounds)")
            ax.set_title(
                f"{run['rows']:,} rows, {STATE_TITLES[state]}: median of "
                f"{result['rounds']} processes",
                fontsize=10,
            )
            ax.legend(fontsize=8, loc="upper right")
            ax.grid(alpha=0.3, which="both")
    fig.suptitle(
        "First queries of a fresh process: format 3 checks each re-ranked row's 96 KiB block, "
        "format 4 the row itself",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("collections", type=Path, nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--query-file", type=Path, default=QUERIES)
    ap.add_argument("--work", type=Path, default=Path("/tmp/cold-queries"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    runs = []
    for src in args.collections:
        v3, v4, upgrade_s = prepare(src, args.work)
        paths = dict(zip(FORMATS, (v3, v4)))
        samples: dict[str, dict[str, list[dict[str, Any]]]] = {
            state: {fmt: [] for fmt in FORMATS} for state in STATES
        }
        for state in STATES:
            for r in range(args.rounds):  # alternating, so both see the same machine
                for fmt in FORMATS:
                    set_cache([v3, v4], state)
                    got = probe(paths[fmt], args.query_file, args.queries)
                    samples[state][fmt].append(got)
                    print(
                        f"  {src.name} {state} round {r + 1}/{args.rounds} {fmt}: open "
                        f"{got['open_s']:.2f} s, first pass p50 "
                        f"{np.median(got['first_ms']):.1f} ms, again "
                        f"{np.median(got['again_ms']):.1f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
        hits = {s["hits"] for st in samples.values() for rows in st.values() for s in rows}
        if len(hits) != 1:
            raise SystemExit("the two formats returned different hits")
        runs.append(
            {
                "source": str(src),
                "rows": samples["cached"]["format 4"][0]["rows"],
                "upgrade_s": upgrade_s,
                "hits_sha256": hits.pop(),
                "median": {
                    state: {fmt: summarise(rows) for fmt, rows in st.items()}
                    for state, st in samples.items()
                },
                "samples": samples,
            }
        )
        shutil.rmtree(v3, ignore_errors=True)
        shutil.rmtree(v4, ignore_errors=True)
    print(
        "| rows | page cache | format | open s | query 1 ms | queries 1-10 ms | "
        "first pass p50 / mean ms | same queries again p50 ms | RSS MB |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        for state, st in run["median"].items():
            for fmt, m in st.items():
                print(
                    f"| {run['rows']:,} | {state} | {fmt} | {m['open_s']:.2f} | "
                    f"{m['query_1_ms']:.1f} | {m['queries_1_10_ms']:.0f} | "
                    f"{m['first_pass_p50_ms']:.1f} / {m['first_pass_mean_ms']:.1f} | "
                    f"{m['again_p50_ms']:.1f} | {m['rss_mb']:.0f} |"
                )
        print(f"upgrade of {run['rows']:,} rows to format 4: {run['upgrade_s']:.1f} s")
    result = {"rounds": args.rounds, "queries": args.queries, "collections": runs}
    out = write_result("cold_queries", result)
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
