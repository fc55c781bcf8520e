"""Spilled IVF lists (SOAR): every row in its nearest cell and in a second, chosen cell.

Why: with fast-scan PQ codes at 1M rows, the coarse partition sets the recall per probe (a
true neighbour sitting in a cell next to the ones probed is missed; finer codes, OPQ and
other cell counts did not help: docs/benchmarks.md). SOAR (Sun et al., NeurIPS 2023, the
idea behind ScaNN's spilling) also stores each row in the cell ``c'`` that minimises::

    ||x - c'||^2 + lambda * <r, x - c'>^2 / ||r||^2,   r = x - c  (c: the row's own cell)

among its :data:`CANDIDATES` nearest other cells: a second cell whose residual is nearly
orthogonal to the first, so that the queries the first cell misjudges find the row through
the second. At 1M rows the same recall needs a quarter to a third of the probes: tuned to
0.95 (95 % confidence), nprobe 32 instead of 128, and a whole query 1.3x faster on two threads
(docs/benchmarks.md), for twice the list entries (61 -> 117 bytes a row with 96 4-bit codes).

FAISS's fast-scan IVF has no way to add a row to a list of the caller's choosing: its
``add_core`` corrupts the packed block lists at once, ``merge_from`` once they grow (a 300k-row
build aborted with "corrupted double-linked list"), and ``add_entries`` scrambles the codes. So rows go in
through its own ``add_with_ids``, one list at a time, with the coarse quantizer swapped for
one that sends every row to that list (see :func:`add_spilled`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The SOAR weight on the part of the second residual parallel to the first (the paper's
#: lambda). 2 gave slightly more recall per probe than 1 at 1M (benchmarks/soar_spill.py).
LAMBDA = 2.0
#: Nearest cells (the row's own included) among which the second cell is chosen.
CANDIDATES = 16
#: Rows per block of the secondary-cell computation: (block, CANDIDATES, dim) floats.
_BLOCK = 8192


def secondary_cells(
    x: np.ndarray,
    centroids: np.ndarray,
    sims: np.ndarray,
    cells: np.ndarray,
    lam: float = LAMBDA,
) -> np.ndarray:
    """The SOAR second cell of each row of ``x``.

    Args:
        x: (n, d) unit rows.
        centroids: (nlist, d) cell centroids.
        sims / cells: (n, c) inner products with, and ids of, each row's ``c`` nearest
            cells, best first (``cells[:, 0]`` is the row's own cell); ``c >= 2``.
        lam: SOAR's weight on the parallel part (see :data:`LAMBDA`).

    Returns:
        (n,) int64 cell ids, each different from the row's own cell.
    """
    out = np.empty(x.shape[0], dtype=np.int64)
    norms = np.einsum("kd,kd->k", centroids, centroids)
    for lo in range(0, x.shape[0], _BLOCK):
        rows = np.asarray(x[lo : lo + _BLOCK], dtype=np.float32)
        near = cells[lo : lo + _BLOCK]
        own = rows - centroids[near[:, 0]]
        own_sq = np.maximum(np.einsum("bd,bd->b", own, own), 1e-12)
        others = centroids[near[:, 1:]]  # (b, c - 1, d)
        dist = (
            np.einsum("bd,bd->b", rows, rows)[:, None]
            - 2.0 * sims[lo : lo + _BLOCK, 1:]
            + norms[near[:, 1:]]
        )
        parallel = np.einsum("bd,bd->b", own, rows)[:, None] - np.einsum("bd,bkd->bk", own, others)
        loss = dist + lam * parallel**2 / own_sq[:, None]
        out[lo : lo + _BLOCK] = near[np.arange(near.shape[0]), 1 + np.argmin(loss, axis=1)]
    return out


def add_spilled(f: Any, index: Any, x: np.ndarray, first: int) -> None:
    """Add rows ``x`` (positions ``first``, ``first + 1``, ...) to the fast-scan IVF-PQ
    ``index`` twice: in their nearest cell and in their SOAR second cell.

    ``f`` is the FAISS module. ``index`` must be an ``IndexIVFPQFastScan`` over a flat
    inner-product quantizer, with raw (not residual) codes. Rows go in one list at a time
    through FAISS's own ``add_with_ids``, with the coarse quantizer swapped for the length
    of the call for one that sends every row to that list (a one-vector index whose only
    id is the list number); the real quantizer is put back however the call ends.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    if not n:
        return
    nlist, dim = int(index.nlist), int(index.d)
    real = index.quantizer
    flat = f.downcast_index(real)
    centroids = flat.reconstruct_n(0, nlist)
    sims, cells = flat.search(x, min(CANDIDATES, nlist))
    second = secondary_cells(x, centroids, sims, cells)
    lists = np.concatenate([cells[:, 0], second])
    rows = np.concatenate([np.arange(n), np.arange(n)])
    order = np.argsort(lists, kind="stable")
    lists, rows = lists[order], rows[order]
    starts = np.flatnonzero(np.r_[True, lists[1:] != lists[:-1]])
    ends = np.r_[starts[1:], lists.size]
    zero = np.zeros((1, dim), dtype=np.float32)
    try:
        for lo, hi in zip(starts.tolist(), ends.tolist()):
            to_list = f.IndexIDMap(f.IndexFlatIP(dim))
            to_list.add_with_ids(zero, np.array([lists[lo]], dtype=np.int64))
            index.quantizer = to_list
            picked = rows[lo:hi]
            index.add_with_ids(x[picked], (first + picked).astype(np.int64))
    finally:
        index.quantizer = real


def spilled_entries(fetch: int) -> int:
    """How many entries to ask a spilled index for so that its shortlist holds ``fetch``
    distinct rows: twice as many, as a row found through both of its lists (the rule for
    the nearest rows, both of whose cells are probed) takes two.

    Asking for fewer was measured and not kept (2026-12-03): the distinct rows of
    ``1.25 * fetch`` entries (232 of 320 at 1M rows, 16 probes) made a query 0.1 ms faster
    at the same probes, but tuning then needed twice the shortlist on the scale benchmark's
    1M collection (nprobe 32 with 512 rows instead of 64 with 256), which a collection pays
    in reads of the vector files: 3.2 against 2.6 ms a query as tuned.
    """
    return 2 * fetch


def first_distinct(pos: np.ndarray, fetch: int) -> np.ndarray:
    """Per row, the first ``fetch`` distinct positions of a best-first shortlist, in that
    order, padded with -1.

    One sort finds the repeats: each entry's key is its position shifted left with its
    slot in the low bits, so a position's entries sort together, first slot first, and
    every key after the first of its position is a repeat. The keys are distinct, so the
    sort needs no stability (numpy's SIMD sort): 18 against 25 us for 512 entries here,
    where a stable ``argsort`` with a gather took 25 and ``np.unique`` with
    ``return_index`` more."""
    m, width = pos.shape
    out = np.full((m, fetch), -1, dtype=np.int64)
    shift = max(1, (width - 1).bit_length())
    slot = np.arange(width, dtype=np.int64)
    low = (1 << shift) - 1
    for i in range(m):
        row = pos[i]
        key = np.sort((row << shift) | slot)  # -1 (nothing found) sorts first, dropped below
        later = key[1:][(key[1:] >> shift) == (key[:-1] >> shift)] & low
        keep = row >= 0
        keep[later] = False
        first = np.flatnonzero(keep)[:fetch]
        out[i, : first.size] = row[first]
    return out
