"""Realistic vector sets for index benchmarks: real embeddings, extended by small noise.

Why: approximate indexes behave very differently on uniformly random vectors (every one of
them looks broken) and on real sentence embeddings, which are anisotropic and clustered.
So the base of every set here is the ~49k real texts under ``../shared/data`` (news
headlines, AG News, the BEIR corpora's titles + texts), embedded once with embedsearch's
own default encoder and cached as ``.npy`` under ``benchmarks/.cache/``.

Larger sets (100k, 1M) keep every real vector and add perturbed copies of them:
``normalise(x + sigma * N(0, I))``. ``sigma`` is per coordinate; the noise vector has norm
≈ ``sigma * sqrt(dim)``. :func:`nn_cosine_profile` measures the nearest-neighbour cosine
distribution so that the extended set can be checked against the real one.

Queries are *held-out* real vectors (never in the base set, nor any copy of them),
perturbed the same way, so a query is never an exact member of the set.

Usage (builds the cache and prints the NN-cosine check)::

    python benchmarks/vectors.py [--data ../shared/data] [--check 1000000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, ROOT, read_jsonl  # noqa: E402

CACHE = ROOT / "benchmarks" / ".cache"
#: Per-coordinate noise of the extension: a copy has cosine ~0.93 to its source and ~0.87
#: to another copy of it (what that does to recall at 1M: docs/benchmarks.md).
DEFAULT_SIGMA = 0.02
#: Backend that embeds the real base. onnx-int8 is ~2.5x faster than torch here, and an
#: index only sees the geometry (int8 vs fp32 embeddings of a text: cosine ~0.99).
BASE_BACKEND = "onnx-int8"
_CHUNK = 2048


def corpus_texts(data: Path = DEFAULT_DATA) -> tuple[list[str], list[str]]:
    """All real texts of the shared corpora, and the source name of each.

    Returns:
        (texts, sources): headlines (32k), AG News title + text (7.6k), and the BEIR corpora
        (scifact, cranfield, nfcorpus-original) as ``title. text``.
    """
    texts: list[str] = []
    sources: list[str] = []
    corpora = data / "corpora"
    for row in read_jsonl(corpora / "news_headlines.jsonl.gz"):
        texts.append(row["text"])
        sources.append("news_headlines")
    for row in read_jsonl(corpora / "ag_news_test.jsonl.gz"):
        texts.append(f"{row['title']}. {row['text']}")
        sources.append("ag_news")
    for name in ("scifact", "cranfield", "nfcorpus-original"):
        for row in read_jsonl(data / "beir" / name / "corpus.jsonl"):
            title = (row.get("title") or "").strip()
            texts.append(f"{title}. {row['text']}" if title else row["text"])
            sources.append(name)
    return texts, sources


def real_embeddings(
    data: Path = DEFAULT_DATA, *, backend: str | None = None, verbose: bool = True
) -> np.ndarray:
    """The (~49k, 384) unit float32 embeddings of :func:`corpus_texts`, cached on disk.

    Embeds in chunks that are cached one by one, so an interrupted run resumes where it
    stopped. The cache key covers the texts, the model and the backend.

    Args:
        data: the shared data folder.
        backend: encoder backend (``None`` = embedsearch's default).
        verbose: print progress to stderr.
    """
    texts, _ = corpus_texts(data)
    from embedsearch.encoder import default_backend, default_model_name, get_encoder

    backend = backend or default_backend()
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
    key = f"real-{default_model_name()}-{backend}-{len(texts)}-{digest}"
    final = CACHE / f"{key}.npy"
    if final.exists():
        return np.load(final)
    parts = CACHE / f"{key}.parts"
    parts.mkdir(parents=True, exist_ok=True)
    enc = get_encoder(backend=backend)
    chunks = []
    t0 = time.perf_counter()
    done = 0
    for lo in range(0, len(texts), _CHUNK):
        part = parts / f"{lo:07d}.npy"
        if part.exists():
            vecs = np.load(part)
        else:
            vecs = enc.encode(texts[lo : lo + _CHUNK])
            tmp = part.with_suffix(".tmp.npy")
            np.save(tmp, vecs)
            os.replace(tmp, part)
            done += len(vecs)
        chunks.append(vecs)
        if verbose:
            el = time.perf_counter() - t0
            print(
                f"  embedded {lo + len(vecs)}/{len(texts)} ({done / max(el, 1e-9):.0f}/s)",
                file=sys.stderr,
                flush=True,
            )
    out = np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)
    tmp = final.with_suffix(".tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, final)
    for p in parts.iterdir():
        p.unlink()
    parts.rmdir()
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def perturb(
    x: np.ndarray, sigma: float, rng: np.random.Generator, *, chunk: int = 65_536
) -> np.ndarray:
    """``normalise(x + sigma * N(0, I))`` row by row, in float32 chunks (bounded memory)."""
    out = np.empty_like(x, dtype=np.float32)
    for lo in range(0, len(x), chunk):
        block = x[lo : lo + chunk].astype(np.float32)
        block += rng.standard_normal(block.shape, dtype=np.float32) * np.float32(sigma)
        out[lo : lo + chunk] = _unit(block)
    return out


def split_real(n_real: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the held-out query texts and of the kept (base) texts, fixed by ``seed``."""
    order = np.random.default_rng(seed).permutation(n_real)
    return order[:n_queries], order[n_queries:]


def base_sources(n: int, n_real: int, *, n_queries: int = 1000, seed: int = 7) -> np.ndarray:
    """For each row of ``vector_set(n, ...)``, the index of the real text it derives from.

    Rows past the number of kept real vectors are perturbed copies (same text, new vector).
    """
    _, kept = split_real(n_real, n_queries, seed)
    m = min(n, len(kept))
    return np.concatenate([kept[:m], kept[np.arange(n - m) % len(kept)]])


def embed_cached(texts: list[str], backend: str, tag: str) -> np.ndarray:
    """Embed ``texts`` with embedsearch's encoder (``backend``), cached under ``.cache``."""
    from embedsearch.encoder import default_model_name, get_encoder

    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
    path = CACHE / f"{tag}-{default_model_name()}-{backend}-{len(texts)}-{digest}.npy"
    if path.exists():
        return np.load(path)
    vecs = get_encoder(backend=backend).encode(texts)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vecs)
    os.replace(tmp, path)
    return vecs


def vector_set(
    n: int,
    *,
    n_queries: int = 1000,
    sigma: float = DEFAULT_SIGMA,
    seed: int = 7,
    data: Path = DEFAULT_DATA,
    backend: str = BASE_BACKEND,
    cache: bool = True,
    mmap: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """A base set of ``n`` vectors and ``n_queries`` held-out, perturbed query vectors.

    ``mmap``: return the cached base memory-mapped (read-only), as a collection holds its
    vectors, instead of read into RAM (the first call, which builds the cache, reads it back).

    The base holds every real vector except the held-out ones (in a fixed shuffled order),
    then perturbed copies of them (cycling through the real vectors) until ``n`` rows.
    Cached as ``.npy`` under ``benchmarks/.cache/`` (1M × 384 float32 = 1.5 GB).
    """
    real = real_embeddings(data, backend=backend)
    held, kept = split_real(len(real), n_queries, seed)
    name = f"set-n{n}-q{n_queries}-s{sigma:g}-seed{seed}-{backend}-{len(real)}"
    base_path, query_path = CACHE / f"{name}.base.npy", CACHE / f"{name}.queries.npy"
    if cache and base_path.exists() and query_path.exists():
        return np.load(base_path, mmap_mode="r" if mmap else None), np.load(query_path)
    queries = perturb(real[held], sigma, np.random.default_rng(seed + 1))
    base = np.empty((n, real.shape[1]), dtype=np.float32)
    m = min(n, len(kept))
    base[:m] = real[kept[:m]]
    if n > m:
        src = base_sources(n, len(real), n_queries=n_queries, seed=seed)[m:]
        gen = np.random.default_rng(seed + 2)
        for lo in range(0, n - m, 65_536):
            idx = src[lo : lo + 65_536]
            base[m + lo : m + lo + len(idx)] = perturb(real[idx], sigma, gen)
    if cache:
        CACHE.mkdir(parents=True, exist_ok=True)
        for path, arr in ((base_path, base), (query_path, queries)):
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, arr)
            os.replace(tmp, path)
    return base, queries


def nn_cosine_profile(
    base: np.ndarray, queries: np.ndarray, *, exclude_self: bool = False
) -> dict[str, float]:
    """Quantiles of the top-1 and top-10 cosine of ``queries`` against ``base`` (exact)."""
    k = 11 if exclude_self else 10
    top1, top10 = [], []
    for lo in range(0, len(queries), 256):
        sims = queries[lo : lo + 256] @ base.T
        part = -np.partition(-sims, k - 1, axis=1)[:, :k]
        part.sort(axis=1)
        part = part[:, ::-1]
        if exclude_self:
            part = part[:, 1:]
        top1.append(part[:, 0])
        top10.append(part[:, 9])
    t1, t10 = np.concatenate(top1), np.concatenate(top10)
    out: dict[str, float] = {}
    for q in (10, 50, 90):
        out[f"top1_p{q}"] = round(float(np.percentile(t1, q)), 4)
        out[f"top10_p{q}"] = round(float(np.percentile(t10, q)), 4)
    return out


def main() -> None:
    """Build the real-embedding cache and compare NN cosines of real vs extended sets."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--check", type=int, nargs="*", default=[], help="set sizes to check")
    ap.add_argument("--sigma", type=float, nargs="*", default=[DEFAULT_SIGMA])
    ap.add_argument("--backend", default=BASE_BACKEND, help="encoder backend of the base")
    args = ap.parse_args()
    t0 = time.perf_counter()
    real = real_embeddings(args.data, backend=args.backend)
    print(f"real embeddings: {real.shape} ({time.perf_counter() - t0:.0f} s incl. cache)")
    rng = np.random.default_rng(0)
    sample = rng.choice(len(real), 1000, replace=False)
    print("real, self excluded:", nn_cosine_profile(real, real[sample], exclude_self=True))
    for sigma in args.sigma:
        for n in args.check:
            base, queries = vector_set(n, sigma=sigma, data=args.data, cache=False)
            print(f"n={n} sigma={sigma}: queries vs base", nn_cosine_profile(base, queries))


if __name__ == "__main__":
    main()
