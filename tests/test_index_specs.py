"""Hostile index specs: no spec a user can pass may crash the process or break a collection.

FAISS aborts (``HNSW0``) or segfaults (``HNSW1``) on some factory strings it accepts, and
others fail only at some sizes (``NSG32`` under 100 rows, ``IVF4,Flat`` at 5 rows,
``PCA1000,Flat`` on reindex...). Specs are now checked against an allow-list grammar with
numeric bounds (:func:`embedsearch.index.parse_spec`); an index that cannot be built is
derived data and falls back to exact search (said in ``info``), and k above the row count
works on every index.

The risky specs run in a SUBPROCESS (an abort there fails this test instead of killing
pytest), each through the real Collection at 1, 5, 60 and 600 rows, with a search for
more results than there are rows, then a reopen.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from embedsearch import IndexSpecError
from embedsearch.index import parse_spec, validate_spec

RISKY = [
    "HNSW0",
    "HNSW1",
    "HNSW2",
    "HNSW0,Flat",
    "IVF4_HNSW0,Flat",
    "NSG32",
    "NSG2",
    "PCA1000,Flat",
    "PCA0,Flat",
    "PCA64,Flat",
    "IVF0,Flat",
    "IVF4,Flat",
    "IVF1,Flat",
    "LSQ4x8",
    "RQ4x8",
    "Flat,RFlat",
    "IVF16,SQ8,RFlat",
    "IVF16,PQ7",
    "PQ8",
    "PQ8x4fs",
    "IVF16,PQ16x4fs",
    "IVF16,PQ8x12",
    "IVF16_HNSW8,Flat",
    "HNSW32,SQ8",
    "HNSW32,PQ8",
    "HNSW16",
    "PCAR64,IVF4,Flat",
    "OPQ16,IVF16,PQ16",
    "IDMap,Flat",
    "SQ4",
    "IVF65536,Flat",
    "HNSW100000",
    "IVF16,PQ16x4fs,SOAR",
    "IVF2,PQ96x4fs,SOAR",
    "IVF1,PQ16x4fs,SOAR",
    "IVF16,SQ8,SOAR",
    "HNSW32,SOAR",
    "SOAR",
]
SIZES = [1, 5, 60, 600]

_CHILD = r"""
import json, sys, numpy as np
import embedsearch
from embedsearch import EmbedSearchError, store
specs, root, sizes = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
rng = np.random.default_rng(0)
vecs = rng.standard_normal((max(sizes), 384)).astype(np.float32)
for i, spec in enumerate(specs):
    print(json.dumps({"spec": spec, "event": "start"}), flush=True)
    path = f"{root}/c{i}"
    out = {"spec": spec, "event": "done", "sizes": {}}
    try:
        col = embedsearch.open(path, index=spec)
    except EmbedSearchError as exc:
        out["refused"] = type(exc).__name__
        print(json.dumps(out), flush=True)
        continue
    have = 0
    for n in sizes:
        try:
            col.add([f"t{j}" for j in range(have, n)], ids=[f"d{j}" for j in range(have, n)],
                    vectors=vecs[have:n])
            have = n
            hits = col.search(vecs[0], k=n + 5)
            out["sizes"][n] = {"hits": len(hits), "kind": col.info()["index"]["kind"],
                               "fallback": "fallback" in col.info()["index"]}
        except EmbedSearchError as exc:
            out["sizes"][n] = {"error": type(exc).__name__ + ": " + str(exc)[:200]}
        except Exception as exc:
            out["sizes"][n] = {"raw": type(exc).__name__ + ": " + str(exc)[:200]}
    col.close()
    try:
        col = embedsearch.open(path)
        out["reopen_hits"] = len(col.search(vecs[0], k=3))
        col.close()
    except Exception as exc:
        out["reopen"] = type(exc).__name__ + ": " + str(exc)[:200]
    print(json.dumps(out), flush=True)
"""


def _run_child(specs: list[str], root: Path, sizes: list[int]) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(Path.cwd()), "EMBEDSEARCH_FORCE_GPU_CHECK": ""}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(specs), str(root), json.dumps(sizes)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    started = [e["spec"] for e in events if e["event"] == "start"]
    assert proc.returncode == 0, (
        f"the process died (exit {proc.returncode}) while trying {started[-1:]!r}: "
        f"{proc.stderr[-2000:]}"
    )
    return [e for e in events if e["event"] == "done"]


def test_risky_specs_never_crash_and_never_break_a_collection(tmp_path: Path) -> None:
    results = _run_child(RISKY, tmp_path, SIZES)
    assert [r["spec"] for r in results] == RISKY
    for r in results:
        if "refused" in r:
            assert r["refused"] == "IndexSpecError", r
            continue
        for n in SIZES:
            got = r["sizes"][str(n)]
            assert "raw" not in got and "error" not in got, (r["spec"], n, got)
            assert got["hits"] == n, (r["spec"], n, got)  # k = n + 5 returns every row
        assert r.get("reopen_hits") == 3, r
    accepted = {r["spec"] for r in results if "refused" not in r}
    # the families the grammar supports stay usable
    assert {"HNSW16", "IVF4,Flat", "IVF16,PQ16x4fs", "PCA64,Flat", "HNSW32,SQ8"} <= accepted
    assert {"IVF16,PQ16x4fs,SOAR", "IVF2,PQ96x4fs,SOAR"} <= accepted
    for bad in (
        "HNSW0",
        "HNSW1",
        "NSG32",
        "PCA1000,Flat",
        "IVF0,Flat",
        "LSQ4x8",
        "Flat,RFlat",
        "IVF1,PQ16x4fs,SOAR",
        "IVF16,SQ8,SOAR",
        "HNSW32,SOAR",
        "SOAR",
    ):
        assert bad not in accepted


_STORED = r"""
import json, sys, numpy as np
import embedsearch
from embedsearch import store
import pathlib
root, spec = pathlib.Path(sys.argv[1]), sys.argv[2]
vecs = np.random.default_rng(1).standard_normal((80, 384)).astype(np.float32)
col = embedsearch.open(root, index="HNSW16")
col.add([f"t{i}" for i in range(80)], ids=[f"d{i}" for i in range(80)], vectors=vecs)
col.close()
m = store.read_manifest_json(root)   # an older version stored a spec that is refused today
m["index"] = {"spec": spec, "file": None}
store.write_manifest(root, m)
col = embedsearch.open(root)
info = col.info()["index"]
col.add(["one more"], ids=["x"], vectors=vecs[:1])
print(json.dumps({"hits": len(col.search(vecs[3], k=100)), "top": col.search(vecs[3], k=1)[0].id,
                  "kind": info["kind"], "fallback": info.get("fallback", "")}))
"""


@pytest.mark.parametrize("spec", ["HNSW1", "NSG32", "LSQ4x8"])
def test_a_stored_spec_that_cannot_be_built_falls_back_to_exact(tmp_path: Path, spec: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    proc = subprocess.run(
        [sys.executable, "-c", _STORED, str(tmp_path / "c"), spec],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["hits"] == 81 and out["top"] == "d3"
    assert out["kind"] == "exact" and spec in out["fallback"] and "exact" in out["fallback"]


@pytest.mark.parametrize(
    "spec",
    [
        "HNSW0",
        "HNSW1",
        "HNSW3",
        "NSG32",
        "PCA1000,Flat",
        "LSQ4x8",
        "IVF0,Flat",
        "Flat,RFlat",
        "IVF16,PQ7",
        "IVF16,PQ8x2",
        "IDMap,Flat",
        "PQ8",
        "OPQ8,IVF4,PQ8",
        "IVF70000,Flat",
        "IVF4,Flat,",
        "HNSW32,HNSW32",
        "x" * 300,
    ],
)
def test_refused_specs_name_the_problem(spec: str) -> None:
    with pytest.raises(IndexSpecError, match="Supported"):
        validate_spec(spec, 384)


@pytest.mark.parametrize(
    ("spec", "min_rows"),
    [
        ("Flat", 0),
        ("HNSW32", 0),
        ("IVF1024,SQ8", 1024),
        ("IVF16,PQ48", 256),
        ("IVF16,PQ8x12", 4096),
        ("PCA64,Flat", 64),
        ("PCAR128,IVF4096,Flat", 4096),
        ("IVF16,PQ16x4fs", 16),
        ("SQ8", 0),
    ],
)
def test_supported_specs_parse_with_their_training_needs(spec: str, min_rows: int) -> None:
    assert validate_spec(spec, 384) == spec
    assert parse_spec(spec, 384).min_rows == min_rows
