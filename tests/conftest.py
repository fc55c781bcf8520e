"""Shared fixtures: the real model loaded once per session, a fresh home per test."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def encoder():
    """The real default encoder (all-MiniLM-L6-v2), loaded once for the whole session."""
    from embedsearch import get_encoder

    return get_encoder()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh EMBEDSEARCH_HOME for one test."""
    root = tmp_path / "home"
    root.mkdir()
    monkeypatch.setenv("EMBEDSEARCH_HOME", str(root))
    return root


@pytest.fixture
def take_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The row count of every ``Table.take`` while the test runs: a spy (plumbing only; the
    real take still answers), for tests that bound how many rows a path reads at once."""
    from embedsearch.table import Table

    sizes: list[int] = []
    take = Table.take

    def spy(self: Table, positions: Any, *a: Any, **kw: Any) -> Any:
        sizes.append(len(positions))
        return take(self, positions, *a, **kw)

    monkeypatch.setattr(Table, "take", spy)
    return sizes


@pytest.fixture(scope="session")
def demo_rows() -> list[dict[str, Any]]:
    """The bundled demo corpus (350 short texts with topic/year metadata)."""
    text = resources.files("embedsearch").joinpath("data/demo_corpus.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def demo_vectors(encoder, demo_rows) -> Any:
    """Embeddings of the demo corpus, computed once (tests that add by text reuse the model)."""
    return encoder.encode([r["text"] for r in demo_rows])


@pytest.fixture(scope="session")
def demo_col(tmp_path_factory: pytest.TempPathFactory, encoder, demo_rows):
    """A session-wide collection of the demo corpus. Read-only: tests must not change it."""
    import embedsearch

    col = embedsearch.open(tmp_path_factory.mktemp("demo") / "demo")
    col.add(
        [r["text"] for r in demo_rows],
        ids=[r["id"] for r in demo_rows],
        metadata=[{"topic": r["topic"], "year": r["year"]} for r in demo_rows],
    )
    col.close()
    col = embedsearch.open(col.path)  # a reader handle: holds no write lock
    yield col
    col.close()


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray (2 CPUs) for one test module; skips, saying why, if Ray cannot start."""
    ray = pytest.importorskip("ray", reason="ray is not installed (extra 'distributed')")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - any failure to start means: skip, saying why
        pytest.skip(f"Ray cannot start on this machine: {type(exc).__name__}: {exc}")
    yield
    ray.shutdown()


@pytest.fixture
def unit_vectors():
    """A maker of ``n`` random unit vectors (float32, ``dim`` wide) from ``seed``."""
    import numpy as np

    def make(seed: int, n: int, dim: int = 384) -> Any:
        v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    return make
