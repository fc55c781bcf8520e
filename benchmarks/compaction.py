"""Deletes and compaction at 1M rows: time, memory, disk, and recall before and after.

A user with a million documents deletes a share of them and compacts. This measures, in a
fresh process per source tree (so two commits can be compared side by side in one run):
the delete; recall@10 against exact search over the live rows with the tombstones in
place, unfiltered and at two filters; ``compact()``'s time, its peak anonymous RSS
(sampled every 20 ms; mapped file pages are not the process's memory) and the disk before
and after (with the bytes kept for past versions); recall after; a reader's open and first
query in another process started the moment compaction commits; and a fresh process's open
and first query afterwards.

It works on a copy of the collection ``benchmarks/scale.py`` built (1,010,000 rows: the 1M
base and the 10k added), and reads that benchmark's cached vectors and queries::

    PYTHONPATH=. python benchmarks/compaction.py                      # this checkout
    PYTHONPATH=. python benchmarks/compaction.py --src /tmp/wt16 .    # before / after
    PYTHONPATH=. python benchmarks/compaction.py --deleted oldest --share 0.1

``--deleted random`` (the default) deletes a random share, so every segment loses rows;
``--deleted oldest`` deletes the first rows added, as a user expiring old documents does
(results then go to ``compaction-oldest.json`` / ``.png``). A thin spread of deletes, which
compaction leaves as tombstones in the segments that lost under 10 % of their rows::

    PYTHONPATH=. python benchmarks/compaction.py --share 0.01 --out compaction-random-1pct \
        --src /tmp/wt60 .

Writes ``results/compaction.json`` and ``results/compaction.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import table, write_result  # noqa: E402
from scale import WORK, exact_top, meta_arrays  # noqa: E402

FILTERS: list[tuple[str, dict[str, Any] | None]] = [
    ("unfiltered", None),
    ("10%", {"cat": {"$lt": 100}}),
    ("0.1%", {"cat": 7}),
]


def _anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


#: Which rows are deleted: a random share of them (every segment loses some), or the
#: oldest (the first rows added, as a user expiring old documents deletes them).
DELETED = ("random", "oldest")


def _dead(rows: int, share: float, which: str = "random") -> np.ndarray:
    if which == "oldest":
        return np.arange(int(share * rows))
    return np.sort(np.random.default_rng(5).choice(rows, int(share * rows), replace=False))


def _filter_mask(name: str, rows: int) -> np.ndarray:
    cat = meta_arrays(0, rows)["cat"]
    return {"unfiltered": np.ones(rows, bool), "10%": cat < 100, "0.1%": cat == 7}[name]


def child(path: Path, share: float, which: str, truth_file: Path) -> dict[str, Any]:
    """One source tree's run over the copy at ``path`` (imports ``embedsearch`` from
    PYTHONPATH)."""
    import embedsearch

    queries = np.load(WORK / "queries.npy").astype(np.float32)
    truth = np.load(truth_file)
    out: dict[str, Any] = {}
    col = embedsearch.open(path)
    rows = len(col)
    dead = _dead(rows, share, which)
    t = time.perf_counter()
    col.delete([str(i) for i in dead])
    out["delete_s"] = time.perf_counter() - t

    def recalls(when: str) -> dict[str, float]:
        got, p50 = {}, {}
        for j, (name, where) in enumerate(FILTERS):
            hits, took = [], []
            for qi, q in enumerate(queries):
                t = time.perf_counter()
                found = col.search(q, k=10, where=where)
                took.append(time.perf_counter() - t)
                ids = {int(h.id) for h in found}
                want = {int(p) for p in truth[j, qi] if p >= 0}
                hits.append(len(ids & want) / max(1, len(want)))
            got[name], p50[name] = float(np.mean(hits)), float(np.median(took) * 1e3)
        out[f"p50_ms_{when}"] = p50  # the pass that also checks recall: one search a query
        return got

    out["recall_before"] = recalls("before")
    peak, stop = [_anon_mb()], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _anon_mb())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    stats = col.compact()
    out["compact_s"] = time.perf_counter() - t
    (path.parent / "compacted").touch()  # for the watcher: a compaction may commit nothing
    stop.set()
    sampler.join()
    out["compact_anon_peak_mb"] = peak[0]
    out.update({k: v for k, v in stats.items()})
    out["index_after"] = {
        k: col.info()["index"].get(k) for k in ("resolved", "nprobe", "trained_for")
    }
    out["recall_after"] = recalls("after")
    col.close()
    return out


def reopen(path: Path) -> float:
    """Seconds a fresh process takes to open the compacted collection and answer a query."""
    code = (
        "import time; t = time.perf_counter(); import embedsearch, numpy as np; "
        f"c = embedsearch.open({str(path)!r}); "
        f"c.search(np.load({str(WORK / 'queries.npy')!r})[0], k=10); "
        "print(time.perf_counter() - t)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/tmp"
    )
    return float(done.stdout.strip().splitlines()[-1])


WATCHER = """
import json, sys, time
from pathlib import Path
manifest = Path(sys.argv[1]) / "manifest.json"
done = Path(sys.argv[1]).parent / "compacted"
first = json.loads(manifest.read_text())["epoch"]
while True:  # until compaction commits (a new epoch) or returns, then open and ask
    try:
        if json.loads(manifest.read_text())["epoch"] != first or done.exists():
            break
    except (OSError, ValueError):
        pass
    time.sleep(0.05)
t = time.perf_counter()
import embedsearch, numpy as np
col = embedsearch.open(sys.argv[1])
col.search(np.load(sys.argv[2])[0], k=10)
print(json.dumps({"s": time.perf_counter() - t, "index": col.info()["index"]["resolved"]}))
"""


def truth_for(rows: int, share: float, which: str, out: Path) -> Path:
    """Exact top 10 of each query among the live rows, per filter: (filters, queries, 10)."""
    base = np.load(WORK / "base-1000000.npy", mmap_mode="r")
    extra = np.load(WORK / "extra-1000000.npy", mmap_mode="r")
    vectors = np.concatenate([base, extra])[:rows]
    queries = np.load(WORK / "queries.npy").astype(np.float32)
    live = np.ones(rows, bool)
    live[_dead(rows, share, which)] = False
    truth = np.stack(
        [exact_top(vectors, queries, live & _filter_mask(name, rows), 10) for name, _ in FILTERS]
    )
    np.save(out, truth)
    return out


def plot(runs: list[dict[str, Any]], share: float, which: str, rows: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, d, b) = plt.subplots(1, 3, figsize=(15, 4.8))
    labels = [r["source"] for r in runs]
    x0 = np.arange(len(runs))
    for shift, key, name, color in (
        (-0.2, "compact_s", "compact() (the writer)", "#4c72b0"),
        (0.2, "reader_at_commit_s", "a reader's open + first query at the commit", "#dd8452"),
    ):
        vals = [r.get(key, np.nan) for r in runs]
        a.bar(x0 + shift, vals, 0.4, label=name, color=color)
        for i, v in enumerate(vals):
            a.text(i + shift, v, f"{v:.1f} s", ha="center", va="bottom", fontsize=9)
    a.set_xticks(x0, labels)
    a.set_ylabel("seconds")
    a.set_ylim(0, 1.3 * max(max(r["compact_s"], r.get("reader_at_commit_s", 0)) for r in runs))
    a.legend(fontsize=8, loc="upper right")
    what = f"the oldest {share:.0%}" if which == "oldest" else f"a random {share:.0%}"
    a.set_title(f"after deleting {what} of {rows:,} rows")
    gb = 2**30
    before = [r["bytes_before"] / gb for r in runs]
    past = [r.get("bytes_past_versions", 0) / gb for r in runs]
    current = [r["bytes_after"] / gb - p for r, p in zip(runs, past)]
    d.bar(x0 - 0.2, before, 0.4, label="before compaction", color="#8c8c8c")
    d.bar(x0 + 0.2, current, 0.4, label="after: the current version", color="#55a868")
    d.bar(
        x0 + 0.2,
        past,
        0.4,
        bottom=current,
        label="after: files kept for past versions",
        color="#c8e6c9",
        hatch="//",
        edgecolor="#55a868",
    )
    for i in range(len(runs)):
        d.text(i - 0.2, before[i], f"{before[i]:.2f}", ha="center", va="bottom", fontsize=9)
        top = current[i] + past[i]
        d.text(i + 0.2, top, f"{top:.2f}", ha="center", va="bottom", fontsize=9)
    d.set_xticks(x0, labels)
    d.set_ylabel("GB on disk")
    d.set_ylim(0, 1.35 * max(max(before), max(c + p for c, p in zip(current, past))))
    d.legend(fontsize=8, loc="upper right")
    d.set_title("disk (past versions are kept 7 days)")
    width = 0.8 / (2 * len(runs))
    x = np.arange(len(FILTERS))
    for i, r in enumerate(runs):
        for j, when in enumerate(("before", "after")):
            vals = [r[f"recall_{when}"][name] for name, _ in FILTERS]
            b.bar(
                x + (2 * i + j - len(runs) + 0.5) * width,
                vals,
                width,
                label=f"{r['source']}, {when} compaction",
            )
    b.axhline(0.95, color="grey", linestyle="--", linewidth=1)
    b.set_xticks(x, [name for name, _ in FILTERS])
    b.set_ylim(0.9, 1.005)
    b.set_ylabel("recall@10 vs exact over the live rows")
    b.set_title("recall before and after compaction")
    b.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.suptitle("Deletes and compaction at 1M rows (benchmarks/compaction.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--collection",
        type=Path,
        default=Path("/tmp/embedsearch-scale/embedsearch-1000000"),
        help="the 1M collection benchmarks/scale.py built (copied, never changed)",
    )
    ap.add_argument("--share", type=float, default=0.3, help="share of the rows deleted")
    ap.add_argument("--deleted", choices=DELETED, default="random", help="which rows are deleted")
    ap.add_argument("--src", nargs="+", default=[str(HERE.parent)], help="source trees")
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/embedsearch-compaction"))
    ap.add_argument(
        "--out", help="results name (default compaction, or compaction-oldest with --deleted)"
    )
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--truth", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.share, args.deleted, args.truth)))
        return
    if not args.collection.is_dir():
        sys.exit(f"{args.collection} not found: build it first with benchmarks/scale.py")
    args.scratch.mkdir(parents=True, exist_ok=True)
    rows = int(json.loads((args.collection / "manifest.json").read_text())["rows"])
    print(
        f"exact truth over the live rows ({rows:,} rows, {args.deleted} {args.share:.0%} deleted)"
    )
    truth = truth_for(rows, args.share, args.deleted, args.scratch / "truth.npy")
    runs = []
    for src in args.src:
        copy = args.scratch / "collection"
        shutil.rmtree(copy, ignore_errors=True)
        (args.scratch / "compacted").unlink(missing_ok=True)
        shutil.copytree(args.collection, copy)
        label = (
            subprocess.run(
                ["git", "-C", src, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
            ).stdout.strip()
            or Path(src).name
        )
        print(f"{label}: delete, compact, search ...", flush=True)
        env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
        watcher = subprocess.Popen(  # a reader that opens the collection once it is compacted
            [sys.executable, "-c", WATCHER, str(copy), str(WORK / "queries.npy")],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd="/tmp",
        )
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(copy), "--share", str(args.share)]
            + ["--deleted", args.deleted, "--truth", str(truth)],
            capture_output=True,
            text=True,
            env=env,
            cwd="/tmp",
        )
        if done.returncode:
            sys.exit(done.stderr[-3000:])
        run = {"source": label, **json.loads(done.stdout.strip().splitlines()[-1])}
        seen = json.loads(watcher.communicate(timeout=600)[0].strip().splitlines()[-1])
        run["reader_at_commit_s"], run["reader_at_commit_index"] = seen["s"], seen["index"]
        run["reopen_first_query_s"] = reopen(copy)
        runs.append(run)
        shutil.rmtree(copy, ignore_errors=True)
    cols = ["source", "delete_s", "compact_s", "compact_anon_peak_mb", "reader_at_commit_s"]
    cols += ["reopen_first_query_s", "rows_rewritten", "deleted_kept"]
    markdown = table([{c: r.get(c, 0) for c in cols} for r in runs], cols)
    print(markdown)
    for r in runs:
        print(
            f"{r['source']}: recall before {r['recall_before']}, after {r['recall_after']}; "
            f"index after {r['index_after']}; disk {r['bytes_before'] / 2**30:.2f} -> "
            f"{r['bytes_after'] / 2**30:.2f} GB, of which past versions "
            f"{r.get('bytes_past_versions', 0) / 2**30:.2f} GB; p50 ms before "
            f"{r['p50_ms_before']}, after {r['p50_ms_after']}"
        )
    name = args.out or ("compaction" if args.deleted == "random" else f"compaction-{args.deleted}")
    write_result(
        name,
        {
            "collection": str(args.collection),
            "rows": rows,
            "share_deleted": args.share,
            "deleted": args.deleted,
            "runs": runs,
            "markdown": markdown,
        },
    )
    plot(runs, args.share, args.deleted, rows, HERE / "results" / f"{name}.png")


if __name__ == "__main__":
    main()
