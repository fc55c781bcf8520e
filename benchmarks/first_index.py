"""A reader that opens a collection the moment the write crossing the exact threshold commits.

Up to ``EXACT_MAX_ROWS`` (50,000) rows an ``auto`` collection searches exactly and saves
no index; the write that takes it past them trains the first IVF index. This builds a
49,000-row collection, then adds 2,000 rows in one process while a second process polls
the manifest and, the moment its generation changes, opens the collection and answers a
query (the way a service reading a collection that a pipeline fills would). It reports
the writer's ``add`` and the reader's open + first query, per source tree, each in fresh
processes, alternating trees ``--repeat`` times::

    PYTHONPATH=. python benchmarks/first_index.py --src /tmp/wt19 .   # before / after

Reads the vectors ``benchmarks/scale.py`` cached; writes ``results/first_index.json``.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import table, write_result  # noqa: E402
from scale import WORK  # noqa: E402

BEFORE, AFTER = 49_000, 51_000

BUILD = """
import sys, numpy as np, embedsearch
v = np.load(sys.argv[2], mmap_mode="r")[:{before}]
col = embedsearch.open(sys.argv[1])
ids = [str(i) for i in range(len(v))]
col.add(ids, ids=ids, vectors=np.ascontiguousarray(v, dtype=np.float32), progress=False)
col.close()
"""

ADD = """
import sys, time, numpy as np, embedsearch
v = np.load(sys.argv[2], mmap_mode="r")[{before}:{after}]
col = embedsearch.open(sys.argv[1])
ids = [str(i) for i in range({before}, {after})]
t = time.perf_counter()
col.add(ids, ids=ids, vectors=np.ascontiguousarray(v, dtype=np.float32), progress=False)
print(time.perf_counter() - t)
col.close()
"""

WATCH = """
import json, sys, time
from pathlib import Path
manifest = Path(sys.argv[1]) / "manifest.json"
first = json.loads(manifest.read_text())["generation"]
while json.loads(manifest.read_text())["generation"] == first:
    time.sleep(0.01)
t = time.perf_counter()
import embedsearch, numpy as np
col = embedsearch.open(sys.argv[1])
col.search(np.load(sys.argv[2])[0], k=10)
print(json.dumps({"s": time.perf_counter() - t, "index": col.info()["index"]["resolved"]}))
"""


def one(src: str, path: Path) -> dict[str, Any]:
    """Build, then add while a reader watches; seconds of each (fresh processes)."""
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    base = str(WORK / "base-1000000.npy")

    def run(code: str, *args: str, **kw: Any) -> Any:
        return subprocess.run(
            [sys.executable, "-c", code, *args], env=env, cwd="/tmp", text=True, **kw
        )

    shutil.rmtree(path, ignore_errors=True)
    run(BUILD.format(before=BEFORE), str(path), base, check=True)
    watcher = subprocess.Popen(
        [sys.executable, "-c", WATCH, str(path), str(WORK / "queries.npy")],
        env=env,
        cwd="/tmp",
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # the watcher has read the manifest
    add = run(
        ADD.format(before=BEFORE, after=AFTER), str(path), base, check=True, capture_output=True
    )
    seen = json.loads(watcher.communicate(timeout=600)[0].strip().splitlines()[-1])
    shutil.rmtree(path, ignore_errors=True)
    return {
        "writer_add_s": float(add.stdout.split()[-1]),
        "reader_open_first_query_s": seen["s"],
        "reader_index": seen["index"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--src", nargs="+", default=[str(HERE.parent)], help="source trees")
    ap.add_argument("--repeat", type=int, default=2, help="runs per tree (alternating)")
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/embedsearch-first-index"))
    args = ap.parse_args()
    if not (WORK / "base-1000000.npy").is_file():
        sys.exit(f"{WORK} lacks the cached vectors: run benchmarks/scale.py first")
    runs = []
    for r in range(args.repeat):
        for src in args.src:
            label = (
                subprocess.run(
                    ["git", "-C", src, "rev-parse", "--short", "HEAD"],
                    capture_output=True,
                    text=True,
                ).stdout.strip()
                or Path(src).name
            )
            print(
                f"{label}, run {r + 1}/{args.repeat}: {BEFORE:,} rows, then {AFTER - BEFORE:,} more"
            )
            runs.append({"source": label, "run": r + 1, **one(src, args.scratch)})
    cols = ["source", "run", "writer_add_s", "reader_open_first_query_s", "reader_index"]
    markdown = table(runs, cols)
    print(markdown)
    write_result(
        "first_index",
        {"rows_before": BEFORE, "rows_after": AFTER, "runs": runs, "markdown": markdown},
    )


if __name__ == "__main__":
    main()
