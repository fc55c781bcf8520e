"""FAISS indexes over row positions: exact while small, approximate + re-ranked when large.

The index is *derived* data: row ``i`` of the index is row ``i`` of the collection's
segments in manifest order, so it can always be rebuilt from the stored vectors.

Policy for ``spec="auto"`` (numbers in ``benchmarks/`` and FINDINGS.md):

* up to :data:`EXACT_MAX_ROWS` rows, ``Flat`` inner product — exact cosine on unit vectors,
  ~7 ms a query at 50k rows on 2 cores, no training, nothing to tune;
* above it, ``IVF{nlist},SQ8`` with ``nlist`` ≈ 4·√n (a power of two): 0.375 KB per vector,
  trains in seconds; its shortlist is re-ranked with the exact stored vectors and ``nprobe``
  is tuned at build time until recall@10 against exact search reaches
  :data:`TARGET_RECALL` on a held-out sample of the collection's own vectors (see
  :meth:`VectorIndex.tune`). The measured recall is kept in the manifest and shown by
  ``info``.

``IVF<nlist>,PQ<m>x4fs,SOAR`` (opt-in) spills every row into a second list as well
(:mod:`embedsearch.spill`): fewer probes for the same recall, twice the list entries.

Search parameters (``nprobe``, ``ef_search``, ``rerank``) are per call: each call builds its
own ``SearchParameters`` object, so concurrent searches never share mutable index state.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import IndexSpecError, InvalidInputError
from .spill import add_spilled, first_distinct, spilled_entries

log = logging.getLogger(__name__)

EXACT_MAX_ROWS = 50_000
#: From this many rows ``auto`` builds IVF with 4-bit fast-scan product codes (``PQ<d/4>x4fs``)
#: instead of 8-bit scalar codes: at 1M 384-d rows the index in RAM shrinks from 356 MB
#: (IVF,SQ8) to about 60 MB, and a filtered scan with a 10 % ID selector runs several times
#: faster (SIMD lookup tables; 200k rows, one core: 3.5 ms for every list against 7.7 ms for
#: SQ8). Recall comes from re-ranking a 256-row shortlist with the exact vectors.
AUTO_FASTSCAN_ROWS = 250_000
TARGET_RECALL = 0.95
GPU_MAX_K = 2048
_RERANK_MIN = 64
#: Shortlist of indexes with product-quantised codes: their scores are coarse enough that
#: recall@10 after re-ranking 64 plateaus near 0.87 at 1M vectors; 256 reaches 0.95+.
_RERANK_MIN_PQ = 256
#: Searches of up to this many queries find their cells with numpy (``VectorIndex._coarse``).
_NUMPY_COARSE_MAX_QUERIES = 4
_TUNE_QUERIES = 200
#: An ``auto`` index is retrained when the collection reaches this multiple of the size it
#: was trained for: ``auto_nlist`` grows with √n, so 4x the rows is 2x the cells. Growth by
#: a constant factor keeps the total retraining cost a constant multiple of the rows.
RETRAIN_GROWTH = 4

#: An approximate index's knobs are re-tuned in place when the rows reach this multiple of
#: the size they were tuned at. Measured at 10M rows (``benchmarks/scale.py``, 2026-12-04):
#: with 2x, knobs tuned at 6.4M rows (nprobe 32, 512 re-ranked rows) still served 10M and
#: gave recall@10 0.930 on the benchmark's queries (held-out documents 0.897); re-tuned at
#: 10M (55 s) they became nprobe 64 with 1,024 rows: 0.964. √2 re-tunes twice per doubling;
#: growth by a constant factor keeps the tuning cost a constant multiple of the rows added.
RETUNE_GROWTH = 2**0.5
#: Coarse k-means of IVF indexes: training rows per cell and iterations. 40 rows/cell (FAISS
#: warns below 39) and 10 iterations instead of 64 rows/cell and FAISS's 25: IVF4096,SQ8
#: over 1M vectors trained on 131k rows for 10 iterations built in 89 s instead of 131 s,
#: with the same held-out recall (benchmarks/index_curves.py).
_TRAIN_PER_CELL = 40
_TRAIN_ITERATIONS = 10
#: Training sample floor (rows), for small IVF indexes and PQ codebooks.
_TRAIN_MIN_SAMPLE = 50_000
#: The coarse k-means and the cell of each added row are computed with numpy's matrix
#: product, not FAISS's: the faiss-cpu wheel's bundled OpenBLAS (0.3.15) ran an
#: 81,920 x 384 by 384 x 2,048 product about 7x slower than numpy's here (4.6-5.2 s against
#: 0.71 s), and IVF2048 training took 38 s of a 1M-row build's 82 s retrain.
_ASSIGN_BLOCK = 16_384
#: Rows handed to FAISS per ``add`` call when an index is built over a whole collection: the
#: rows are read (and made contiguous) one chunk at a time, so a build or ``reindex`` holds
#: one chunk of float32 beside the index, not a copy of every vector (7.7 GB at 5M rows).
#: A chunk and what assigning and encoding it take are the peak of a retrain: 131,072 rows
#: made a 1M-row build's peak RSS 1,641 MB, 32,768 make it 1,225, in the same time (55.1 /
#: 55.4 s against 56.2 / 54.9, alternating).
_ADD_CHUNK = 32_768
#: Rows :func:`exact_search` scores at a time (of a matrix or a segment): the 200 tuning
#: queries' scores over a 64k-row block are 50 MB, where one (256, n) matrix at 1M rows
#: had been 1 GB and its negated copy another.
_EXACT_BLOCK_ROWS = 65_536
#: Shortlist rows :func:`_rerank` reads in one gather for a batch of queries (48 MB at 384
#: dimensions): enough for the tuner's 200 queries of 64-256 rows, bounded for big batches.
_RERANK_BATCH_ROWS = 32_768
#: Rows FAISS trains an IVF index's codes on (SQ ranges, PQ codebooks) once the numpy
#: k-means has placed the centroids; at least the codes' own minimum.
_ENCODER_SAMPLE = 32_768
#: Filtered search: exact over the matching rows when gathering them costs less than the
#: rows an approximate search with raised probes would scan; gathering a row (1.5 KB of
#: float32, random access, then its dot product) counts as this many scanned SQ8 codes. At
#: 1M rows (IVF2048,SQ8, nprobe 128) a 10 % filter took 233 ms gathering 100k rows and 29 ms
#: inside FAISS with nprobe 640, while a 1 % filter took 32 ms gathered vs 35-41 ms in FAISS
#: (benchmarks/scale.py; a loaded machine, so only the order of magnitude is trusted).
FILTER_GATHER_COST = 16
#: The same for fast-scan PQ codes, which scan about 2x faster than SQ8 codes: a 10 % ID
#: selector over all 1,024 lists of 200k rows took 3.5 ms against 7.7 ms for SQ8. Gathering
#: is not the only cost weighed here: an exact plan's recall is 1.0, while the raised probes
#: only extrapolate the tuned filter power. At 5M rows (2026-12-03) 100 sent a 0.1 % filter
#: (5,000 rows) into FAISS at recall 0.942 (exact: 1.000 in 20 ms); a 1 % filter (50k rows)
#: is cheaper inside FAISS (36 ms vs 113 ms gathered with one ``pread`` a row), which 48
#: chooses once the tuned probes are as many as these vectors need.
FILTER_GATHER_COST_FASTSCAN = 48
#: What one run of consecutive rows adds to a gather from a collection's files, in scanned
#: fast-scan codes: one ``pread`` a run, ~1.7 µs with its Python step, where FAISS scans a
#: code in 4-6 ns (2026-12-05, 10M rows: 10k rows took 18.6 ms in runs of 1, 2.8 ms in runs
#: of 16). A filter's rows scattered one per run (``cat = 7`` of ``i % 1000``) made the
#: exact plan 1.8-2.2x slower than FAISS with the tuned probes at 5M and 10M rows; the
#: approximate plan's re-rank reads its shortlist the same way, so it pays this per row too.
#: (SQ8 codes scan 3x slower: a run counts a third as many of them.) Counted only where the
#: filter is like those the probe power was tuned with (see
#: :data:`_FILTER_TUNE_SHARES`: a share of at least 0.1 % and 1,000 rows): for fewer rows
#: the raised probes are extrapolated, and the exact plan's recall of 1.0 is kept.
FILTER_RUN_COST = 256
#: A filter keeping a share ``s`` of the rows raises the probes by ``s ** -FILTER_PROBE_POWER``.
#: The filtered top 10 lie among the unfiltered top ``10 / s``, which sit in more cells than
#: the top 10 but far fewer than ``1 / s`` times as many: at 1M rows (IVF2048,SQ8, tuned
#: nprobe 128) the tuned nprobe alone gave recall@10 0.976 with a 10 % filter and 0.952 with
#: 1 %, twice the probes 0.990 and 0.975, while raising by ``1 / s`` (10x, 100x) scanned 5-50x
#: more codes for 1.000. Power 1/4 raises by 1.8x at 10 %, 3.2x at 1 %, 5.6x at 0.1 %.
FILTER_PROBE_POWER = 0.25
#: Filter shares :meth:`VectorIndex.tune` measures the probe power at (see _tune_filtered),
#: each where it keeps at least :data:`_FILTER_TUNE_MIN_ROWS` rows. 0.1 % since 2026-12-04:
#: at 10M rows the power measured at 10 % and 1 % (0.15) raised a 0.1 % filter's probes
#: 2.8x, and its 10,000 rows were searched inside FAISS at recall@10 0.936.
_FILTER_TUNE_SHARES = (0.1, 0.01, 0.001)
_FILTER_TUNE_MIN_ROWS = 1_000
_FILTER_MAX_EF = 4096
#: A mask that lets through at least this share of the rows (tombstones compaction kept, a
#: broad filter) is applied to FAISS's shortlist instead of inside FAISS: the shortlist is
#: widened by 1 / share and the masked rows are dropped before the re-rank. FAISS then runs
#: with no ID selector, so no bitmap is packed per query (35 µs at 1M rows, ten times that
#: at 10M) and a GPU index can serve. A filter's starved queries still fall back to the
#: selector's wider probes (see :meth:`VectorIndex.search`).
POSTFILTER_SHARE = 0.9
#: Tuning queries are held out with their near-duplicates: rows at least this similar.
NEAR_DUPLICATE = 0.85
#: A sampled row with this many near-duplicates or more is not used as a tuning query. At 64
#: the realistic 5M set (every real vector with ~100 perturbed copies) kept 2 of 200 tuning
#: queries, and the index tuned at 3.2M rows on a handful of them answered at recall 0.915.
_TUNE_MAX_DUPLICATES = 256
#: Multiples of the default shortlist :meth:`VectorIndex.tune` tries when the probes alone
#: cannot reach the recall target: the shortlist, not the probes, limits recall where many
#: near-identical rows compete for it (5M set: 0.951 at nprobe 512 with 256 re-ranked rows,
#: 0.955 at nprobe 64 with 512).
RERANK_FACTORS = (1, 2, 4)
#: Tuning's time estimate (see :meth:`VectorIndex.tune`): microseconds to re-rank one row
#: (a ``pread`` of its float32 vector and the dot product, 2-2.5 us at 1M and 5M rows) ...
_RERANK_ROW_US = 2.4
#: ... and per step of an HNSW search (efSearch 256 over HNSW32_PQ96 at 1M: 0.68 ms).
_HNSW_STEP_US = 2.6


def _torch_expected() -> bool:
    """Whether this process will run torch: a GPU, or the torch runtime forced. Otherwise
    the encoder runs on onnxruntime and importing torch would only cost seconds."""
    if "torch" in sys.modules:
        return True
    return os.path.exists("/dev/nvidiactl") or os.environ.get("EMBEDSEARCH_FP32_RUNTIME") == "torch"


#: Rows' codes encoded ahead of an add: the FAISS index that encoded them, and the codes
#: of each :data:`_ADD_CHUNK` rows (see :meth:`VectorIndex.codes_ahead`).
Ahead = tuple[Any, list[np.ndarray]]


def faiss():  # noqa: ANN201 - the faiss module
    """Import faiss lazily; after torch when torch will run here: both bundle OpenMP, and
    that order avoids contention (FINDINGS.md). A CPU process on onnxruntime (every cold CLI
    call) never imports torch for it."""
    loaded = sys.modules.get("faiss")
    if loaded is not None:  # (the order only matters at the first import; this is per search)
        return loaded
    if _torch_expected():
        with contextlib.suppress(ImportError):  # torch is a dependency; be lenient anyway
            import torch  # noqa: F401
    core = _openblas_core()
    if core:  # read once, when faiss loads its bundled OpenBLAS; then put back
        os.environ["OPENBLAS_CORETYPE"] = core
    try:
        import faiss as _faiss
    finally:
        if core:
            os.environ.pop("OPENBLAS_CORETYPE", None)
    return _faiss


def _openblas_core() -> str | None:
    """The OpenBLAS kernel family for this CPU when faiss's bundled OpenBLAS would guess it
    wrong, else None.

    The faiss-cpu wheel bundles OpenBLAS 0.3.15, which does not know this machine class's
    Xeon and falls back to its "Prescott" (SSE3) kernels: FAISS's matrix products (batched
    flat search, k-means) ran 8x slower than with ``OPENBLAS_CORETYPE=SkylakeX`` (3.80 s
    against 0.47 s for 40,960 x 2,048 inner products). Chosen from the CPU's own flags; a
    user's explicit ``OPENBLAS_CORETYPE`` always wins.
    """
    if "OPENBLAS_CORETYPE" in os.environ or not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = next(
                (line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), []
            )
    except OSError:
        return None
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= set(flags):
        return "SkylakeX"
    if {"avx2", "fma"} <= set(flags):
        return "Haswell"
    return None


@functools.lru_cache(maxsize=1)
def gpu_count() -> int:
    """Usable GPUs for FAISS: 0 on CPU builds *and* on GPU builds without a device.

    Without an NVIDIA device node there is nothing to ask, so exact search on a CPU machine
    never pays for importing faiss (and torch) — it matters for CLI start-up time.
    """
    if not os.environ.get("EMBEDSEARCH_FORCE_GPU_CHECK") and not Path("/dev/nvidiactl").exists():
        return 0
    f = faiss()
    if not hasattr(f, "StandardGpuResources"):
        return 0
    try:
        return int(f.get_num_gpus())
    except Exception:  # pragma: no cover - broken driver
        return 0


#: Cells per √n of ``auto`` indexes: 4 with scalar codes, 2√2 with fast-scan codes. A
#: fast-scan cell is cheap to scan (SIMD lookup tables), so fewer, larger cells win: the flat
#: coarse quantizer (one inner product per cell) costs less and the same share of rows is
#: probed. 1M rows, quiet machine (``benchmarks/index_curves.py``,
#: results/index_curves_fastscan_1m): IVF2048,PQ96x4fs as tuned 0.967 recall@10 at 1.13 ms a
#: query, built in 26 s; IVF4096 0.969 at 1.83 ms, built in 61 s. So about 2√n cells for the
#: rows searched; an index serves from the rows it was trained for to
#: :data:`RETRAIN_GROWTH` (4x) as many, so it gets 2√n of the middle of that span (2x the
#: rows: 2√2·√n). A 1M collection trained at 400k rows with 2√n had IVF1024: FAISS took
#: 1.7 ms a query at the tuned nprobe 128 against 0.9 ms with IVF2048.
AUTO_CELLS_PER_ROOT = 4.0
AUTO_CELLS_PER_ROOT_FASTSCAN = 2.0 * math.sqrt(2.0)


def auto_nlist(n: int, per_root: float = AUTO_CELLS_PER_ROOT) -> int:
    """Coarse cells for ``n`` vectors: the power of two nearest ``per_root``·√n, within
    [64, 65536]."""
    cells = per_root * math.sqrt(max(n, 1))
    return int(min(65536, max(64, 2 ** round(math.log2(cells)))))


def resolve_spec(spec: str, n: int, dim: int | None = None) -> str:
    """Turn ``auto`` into a concrete FAISS factory string for ``n`` rows of dimension ``dim``.

    Up to :data:`EXACT_MAX_ROWS` rows: exact search. Then IVF with 8-bit scalar codes (388 B
    per 384-d vector). From :data:`AUTO_FASTSCAN_ROWS` rows: IVF with 4-bit product codes
    scanned by FAISS's SIMD fast-scan kernels, one sub-quantizer per 4 dimensions (48 B per
    384-d vector), every shortlist re-ranked with the stored float32 vectors (read from the
    segment files, not held in RAM). See :data:`AUTO_FASTSCAN_ROWS` for the measurements.
    When FAISS sees a GPU, SQ8 stays: it has no GPU version of fast-scan codes.
    """
    if spec != "auto":
        return spec
    if n <= EXACT_MAX_ROWS:
        return "Flat"
    # FAISS has no GPU version of fast-scan codes: with a GPU, SQ8 (it moves there)
    if n >= AUTO_FASTSCAN_ROWS and dim is not None and dim % 4 == 0 and not gpu_count():
        return f"IVF{auto_nlist(n, AUTO_CELLS_PER_ROOT_FASTSCAN)},PQ{dim // 4}x4fs"
    return f"IVF{auto_nlist(n)},SQ8"


#: Bounds of the numbers a spec may carry (see :func:`parse_spec`).
MAX_NLIST = 1 << 16
HNSW_M = (4, 256)
PQ_BITS = (4, 12)
_SPEC_HELP = (
    "Supported: 'auto', 'Flat', 'HNSW<M>' (M 4-256, optionally ',Flat|SQ8|SQ4|SQ6|SQfp16|"
    "PQ<m>'), 'IVF<nlist>,<codes>' (nlist 1-65536; codes Flat, SQ8, SQ4, SQ6, SQfp16, "
    "PQ<m>[x<bits>], PQ<m>x4fs), 'IVF<nlist>_HNSW<M>,<codes>', plain '<codes>', each "
    "optionally after 'PCA<d>,' / 'PCAR<d>,' (d up to the model's dimension); "
    "'IVF<nlist>,PQ<m>x4fs,SOAR' stores every row in a second list too (fewer probes)."
)
#: Spec suffix of spilled IVF lists (see :mod:`embedsearch.spill`): not FAISS syntax, so it
#: is stripped before the factory string reaches FAISS.
SPILL_SUFFIX = ",SOAR"
_TRANSFORM_RE = re.compile(r"(?P<kind>PCAR|PCA)(?P<d>\d+)")
_COARSE_RE = re.compile(r"IVF(?P<nlist>\d+)(?:_HNSW(?P<qm>\d+))?|HNSW(?P<m>\d+)")
_CODES_RE = re.compile(r"Flat|SQ(?:4|6|8|fp16)|PQ(?P<pq>\d+)(?:x(?P<bits>\d+))?(?P<fs>fs)?")


@dataclass(frozen=True)
class SpecShape:
    """What a validated spec asks FAISS to build: the numbers the size checks need.

    Attributes:
        dim_out: dimension after the optional PCA/OPQ transform.
        min_rows: rows needed before it can be trained (fewer: exact search meanwhile).
    """

    spec: str
    dim_out: int
    min_rows: int


def _spec_error(spec: str, why: str) -> IndexSpecError:
    return IndexSpecError(f"index {spec!r}: {why}. {_SPEC_HELP}")


def _bounded(spec: str, name: str, value: str, lo: int, hi: int) -> int:
    n = int(value)
    if not lo <= n <= hi:
        raise _spec_error(spec, f"{name} must be between {lo} and {hi}, got {n}")
    return n


def parse_spec(spec: str, dim: int) -> SpecShape:
    """Check ``spec`` against an allow-list grammar of index families with numeric bounds.

    FAISS aborts or segfaults on some factory strings it accepts (``HNSW0``, ``HNSW1``,
    ``NSG`` over few rows...), and an abort cannot be caught, so no spec reaches FAISS
    unless it is one of the families below, with numbers FAISS handles at every size:
    a transform (``PCA<d>``, ``PCAR<d>``), then ``Flat``, ``HNSW<M>[,codes]``,
    ``IVF<nlist>[_HNSW<M>],codes`` or plain ``codes`` (``Flat``, ``SQ4/6/8/fp16``; PQ codes
    ``PQ<m>[x<bits>]`` and ``PQ<m>x4fs`` only under IVF or HNSW, since FAISS's plain PQ
    indexes take no per-call search parameters). OPQ, NSG, LSQ/RQ and the rest are refused
    (some abort, some hang or train for minutes on small collections). Refinement suffixes (``RFlat``) are refused:
    embedsearch re-ranks every approximate shortlist with the exact vectors already.

    Raises:
        IndexSpecError: naming what is wrong and listing what is supported.
    """
    parts = [p.strip() for p in spec.split(",")]
    if any(not p for p in parts):
        raise _spec_error(spec, "an empty part between commas")
    if parts[-1] == SPILL_SUFFIX[1:]:
        return _parse_spilled(spec, parts[:-1], dim)
    d = dim
    min_rows = 0
    i = 0
    m = _TRANSFORM_RE.fullmatch(parts[0]) if len(parts) > 1 else None
    if m:
        d = _bounded(spec, f"{m.group('kind')} dimension", m.group("d"), 1, dim)
        min_rows = max(min_rows, d)
        i = 1
    rest = parts[i:]
    if not rest or len(rest) > 2:
        raise _spec_error(spec, "expected one index, optionally with its codes")
    coarse = _COARSE_RE.fullmatch(rest[0])
    if coarse is None and len(rest) == 2:
        raise _spec_error(spec, f"{rest[0]!r} is not an index family embedsearch supports")
    codes_part = rest[-1]
    if coarse is not None:
        if coarse.group("nlist") is not None:
            nlist = _bounded(spec, "nlist", coarse.group("nlist"), 1, MAX_NLIST)
            if coarse.group("qm") is not None:
                _bounded(spec, "HNSW M", coarse.group("qm"), *HNSW_M)
            if len(rest) != 2:
                raise _spec_error(spec, "IVF needs its codes, e.g. 'IVF1024,Flat' or 'IVF1024,SQ8'")
            min_rows = max(min_rows, nlist)
        else:
            _bounded(spec, "HNSW M", coarse.group("m"), *HNSW_M)
            if len(rest) == 1:
                return SpecShape(spec, d, min_rows)
    codes = _CODES_RE.fullmatch(codes_part)
    if codes is None:
        raise _spec_error(spec, f"{codes_part!r} is not a code type embedsearch supports")
    if codes.group("pq") is not None and coarse is None:
        raise _spec_error(
            spec,
            f"plain {codes_part} cannot take per-call search parameters; write 'IVF1,{codes_part}'",
        )
    if codes.group("pq") is not None:
        pq = _bounded(spec, "PQ sub-quantizers", codes.group("pq"), 1, d)
        if d % pq:
            raise _spec_error(spec, f"PQ{pq} needs a dimension divisible by {pq}, got {d}")
        bits = int(codes.group("bits") or 8)
        if codes.group("fs"):
            if bits != 4:
                raise _spec_error(spec, "fast-scan PQ ('fs') is 4 bits: write PQ<m>x4fs")
        else:
            bits = _bounded(spec, "PQ bits", str(bits), *PQ_BITS)
        min_rows = max(min_rows, 1 << bits)
    return SpecShape(spec, d, min_rows)


def _parse_spilled(spec: str, parts: list[str], dim: int) -> SpecShape:
    """``IVF<nlist>,PQ<m>x4fs,SOAR``: spilled lists exist for fast-scan PQ codes of the raw
    vectors under a flat coarse quantizer only (see :mod:`embedsearch.spill`)."""
    coarse = _COARSE_RE.fullmatch(parts[0]) if len(parts) == 2 else None
    codes = _CODES_RE.fullmatch(parts[1]) if len(parts) == 2 else None
    if (
        coarse is None
        or coarse.group("nlist") is None
        or coarse.group("qm") is not None
        or codes is None
        or not codes.group("fs")
    ):
        raise _spec_error(
            spec,
            "SOAR spills the lists of IVF indexes with fast-scan PQ codes only: write "
            "'IVF<nlist>,PQ<m>x4fs,SOAR' (no transform, a flat coarse quantizer)",
        )
    shape = parse_spec(",".join(parts), dim)
    _bounded(spec, "nlist", coarse.group("nlist"), 2, MAX_NLIST)  # a second list to spill to
    return SpecShape(spec, shape.dim_out, shape.min_rows)


def faiss_spec(resolved: str) -> str:
    """The FAISS factory string of a resolved spec (without :data:`SPILL_SUFFIX`)."""
    return resolved[: -len(SPILL_SUFFIX)] if resolved.endswith(SPILL_SUFFIX) else resolved


def entries_per_row(resolved: str) -> int:
    """How many list entries an index of ``resolved`` holds per row: 2 when spilled."""
    return 2 if resolved.endswith(SPILL_SUFFIX) else 1


def validate_spec(spec: str, dim: int) -> str:
    """Check that ``spec`` is ``auto`` or a supported index spec (:func:`parse_spec`) that
    FAISS builds; returns it stripped."""
    if not isinstance(spec, str) or not spec.strip():
        raise IndexSpecError("index must be 'auto' or a FAISS factory string such as 'HNSW32'.")
    spec = spec.strip()
    if spec == "auto":
        return spec
    if len(spec) > 200:
        raise IndexSpecError("index spec is longer than 200 characters; " + _SPEC_HELP)
    parse_spec(spec, dim)
    try:
        faiss().index_factory(dim, faiss_spec(spec), faiss().METRIC_INNER_PRODUCT)
    except Exception as exc:  # faiss raises RuntimeError with C++ text
        raise IndexSpecError(
            f"index {spec!r} is not a FAISS factory string FAISS accepts ({str(exc).splitlines()[0]}). "
            + _SPEC_HELP
        ) from exc
    return spec


def build_or_exact(spec: str, dim: int, vectors: np.ndarray) -> VectorIndex:
    """The index of ``spec`` over ``vectors``; when it cannot be built, exact search.

    The index is derived data: a spec stored by an older version that is no longer
    supported (or one FAISS fails to build at this size) must never make a collection
    unopenable or fail a write that has committed. The spec is checked against
    :func:`parse_spec` first (FAISS aborts on some it accepts, and an abort cannot be
    caught); the fallback answers exactly and says why in ``info["index"]["fallback"]``.
    """
    try:
        if spec != "auto":
            parse_spec(spec, dim)
        index = VectorIndex(spec, dim)
        index.build(vectors)
        return index
    except Exception as exc:  # noqa: BLE001 - FAISS raises RuntimeError with C++ text
        return exact_fallback(spec, dim, vectors, exc)


def exact_fallback(spec: str, dim: int, vectors: np.ndarray, exc: BaseException) -> VectorIndex:
    """An exact index standing in for ``spec``, which could not be built (see info)."""
    reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    log.warning("index %s cannot be built (%s); searching exactly instead", spec, reason)
    index = VectorIndex("Flat", dim)
    index.build(vectors)
    index.spec = index.info.spec = spec
    index.info.extra["fallback"] = (
        f"index {spec!r} could not be built ({reason}); searches are exact. Reindex with a "
        "supported spec (e.g. 'auto') to use an approximate index."
    )
    return index


def _min_train_rows(spec: str, dim: int | None = None) -> int:
    """Rows an index needs before it can be trained (IVF: one per cell; PQ: 2^bits; PCA:
    its output dimension; OPQ: 256). Below that, search is exact."""
    if spec in ("auto", "Flat"):
        return 0
    try:
        return parse_spec(spec, dim or 1 << 16).min_rows
    except IndexSpecError:  # a spec stored by an older version: FAISS decides at build
        m = re.search(r"IVF(\d+)", spec)
        need = int(m.group(1)) if m else 0
        m = re.search(r"PQ(\d+)(?:x(\d+))?", spec)
        if m:
            need = max(need, 2 ** int(m.group(2) or 8))
        return need


@dataclass
class SearchOptions:
    """Per-call knobs; ``None`` means the index's tuned default."""

    nprobe: int | None = None
    ef_search: int | None = None
    rerank: int | None = None  # shortlist size re-scored exactly (approximate indexes)


@dataclass
class Plan:
    """How one search runs (shown by :meth:`Collection.explain`)."""

    kind: str  # "exact" | "exact-filtered" | "approximate" | "approximate-filtered"
    rows: int
    matching: int | None  # rows the filter (and tombstones) allow; None: all
    nprobe: int | None = None
    ef_search: int | None = None
    rerank: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"plan": self.kind, "rows": self.rows, "matching": self.matching}
        out["selectivity"] = (
            None if self.matching is None else round(self.matching / max(self.rows, 1), 6)
        )
        out.update(nprobe=self.nprobe, ef_search=self.ef_search, rerank=self.rerank)
        return out


@dataclass
class IndexInfo:
    """What the manifest records about the built index."""

    spec: str
    resolved: str
    kind: str  # "exact" | "approximate"
    rows: int = 0
    trained_rows: int = 0  # rows of the training sample
    trained_for: int = 0  # collection size the index (its coarse quantizer) was built for
    nprobe: int | None = None
    ef_search: int | None = None
    recall_at_10: float | None = None
    filter_power: float | None = None  # probes under a filter: share ** -power (see tune)
    rerank_factor: int = 1  # times the default shortlist (see RERANK_FACTORS and tune)
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "resolved": self.resolved,
            "kind": self.kind,
            "rows": self.rows,
            "trained_rows": self.trained_rows,
            "trained_for": self.trained_for,
            "nprobe": self.nprobe,
            "ef_search": self.ef_search,
            "recall_at_10": self.recall_at_10,
            "filter_power": self.filter_power,
            **({"rerank_factor": self.rerank_factor} if self.rerank_factor != 1 else {}),
            "device": self.device,
            "tuned_rows": self.extra.get("tuned_rows"),
            **({"fallback": self.extra["fallback"]} if "fallback" in self.extra else {}),
            **(
                {"fallback_from": self.extra["fallback_from"]}
                if "fallback_from" in self.extra
                else {}
            ),
        }


def exact_search(
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    live: np.ndarray | None = None,
    *,
    subset: np.ndarray | None = None,
    release: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product among rows where ``live`` is true (numpy, no copy of the data).

    Returns (scores, positions), each (m, k), padded with -inf / -1 when fewer rows qualify.
    Selective masks gather their rows first; otherwise masked scores are set to -inf.
    ``release``: a writer's one-off pass (tuning): each segment's pages are unmapped once
    scanned (:meth:`Table.blocks`), and gathered rows are read in released pieces, so the
    pass does not leave the whole file mapped.
    ``subset``: ``np.flatnonzero(live)`` when the caller has it already.
    """
    m, n = queries.shape[0], vectors.shape[0]
    scores = np.full((m, k), -np.inf, dtype=np.float32)
    pos = np.full((m, k), -1, dtype=np.int64)
    if live is not None:
        count = int(np.count_nonzero(live)) if subset is None else subset.size
        if count * 4 < n:
            subset = np.flatnonzero(live) if subset is None else subset
            rows = _read_once(vectors, subset) if release else _gather(vectors, subset)
            vectors, live, n = rows, None, count
        else:
            subset = None
    if n == 0 or k <= 0:
        return scores, pos
    segments = getattr(vectors, "blocks", None)  # memory-mapped segments: scanned in place
    for lo in range(0, m, 256):
        if segments is None:
            whole: Iterable[tuple[int, np.ndarray]] = [(0, vectors)]
        else:
            whole = segments(release=True) if release else segments()
        blocks = _row_blocks(whole, _EXACT_BLOCK_ROWS)  # the score matrix stays small
        s, p = _exact_blocks(blocks, queries[lo : lo + 256], k, live)
        scores[lo : lo + 256], pos[lo : lo + 256] = s, p
    if subset is not None:
        pos = np.where(pos >= 0, subset[np.maximum(pos, 0)], -1)
    return scores, pos


def _release(vectors: Any) -> None:
    """Unmap the pages a writer's pass over a table's rows read (``VectorView.release``;
    nothing for an in-memory matrix): a build or tuning pass over every row had left the
    vector files mapped, 1.3 GB of the 2.35 GB peak RSS of a 1M-row build in 50k batches."""
    release = getattr(vectors, "release", None)
    if release is not None:
        release()


def _read_once(vectors: Any, rows: np.ndarray) -> np.ndarray:
    """``vectors[rows]`` for a writer's one-off read of many rows (a training sample, a
    tuning filter's rows): a table's are read in released pieces
    (``VectorView.take_released``), which one large take would have left mapped."""
    take = getattr(vectors, "take_released", None)
    return take(rows) if take is not None else _gather(vectors, rows)


def _row_blocks(
    blocks: Iterable[tuple[int, np.ndarray]], step: int
) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, view)`` of at most ``step`` rows each, from ``(start, matrix)`` blocks (an
    in-memory matrix, or a table's segments: a compacted segment holds 200k rows, and the
    tuner's 200 queries scored over it at once had taken 1 GB of scores and positions)."""
    for start, matrix in blocks:
        for lo in range(0, matrix.shape[0], step):
            yield start + lo, matrix[lo : lo + step]


def _exact_blocks(
    blocks: Any, queries: np.ndarray, k: int, live: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over ``(start, matrix)`` blocks (a table's segments), merged as it goes:
    no copy of the collection's vectors, memory bounded by one block's score matrix."""
    m = queries.shape[0]
    best_s = np.full((m, 0), -np.inf, dtype=np.float32)
    best_p = np.zeros((m, 0), dtype=np.int64)
    for start, block in blocks:
        sims = queries @ block.T
        if live is not None:
            sims[:, ~live[start : start + block.shape[0]]] = -np.inf
        width = sims.shape[1]
        picked = _above_floor(sims, best_s, k) if best_s.shape[1] == k else None
        if picked is not None:
            block_s, part = picked
        else:
            kk = min(k, width)
            part = (  # the kk largest, found without a negated copy of the block's scores
                np.argpartition(sims, width - kk, axis=1)[:, width - kk :]
                if kk < width
                else np.tile(np.arange(width), (m, 1))
            )
            block_s = np.take_along_axis(sims, part, axis=1)
        best_s = np.concatenate([best_s, block_s], axis=1)
        best_p = np.concatenate([best_p, np.where(part >= 0, part + start, -1)], axis=1)
        if best_s.shape[1] > k:
            keep = np.argpartition(best_s, best_s.shape[1] - k, axis=1)[:, -k:]
            best_s = np.take_along_axis(best_s, keep, axis=1)
            best_p = np.take_along_axis(best_p, keep, axis=1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    best_s = np.take_along_axis(best_s, order, axis=1)
    best_p = np.take_along_axis(best_p, order, axis=1)
    out_s = np.full((m, k), -np.inf, dtype=np.float32)
    out_p = np.full((m, k), -1, dtype=np.int64)
    out_s[:, : best_s.shape[1]], out_p[:, : best_p.shape[1]] = best_s, best_p
    out_p[~np.isfinite(out_s)] = -1
    return out_s, out_p


def _above_floor(
    sims: np.ndarray, best_s: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The scores of a block that can still enter each query's top ``k`` (those at least its
    k-th best so far, ``best_s`` holding k a query), as a (queries, widest) matrix of
    scores and block columns padded with -inf / -1; None when too many can (a selection
    over the whole block is as cheap then).

    After the first blocks few scores pass the floor, and one comparison pass finds them
    where ``argpartition`` of every score in the block had cost as much as the product
    itself (and far more among the -inf of dead rows, which its selection handles badly).
    The truth of 200 tuning queries (k = 266) over 1M rows: 1.27-1.33 s -> 0.79-0.84 s;
    with 70 % of the rows masked out: 6.4-6.6 s -> 1.4 s. The same answers.
    """
    floor = best_s.min(axis=1)
    if not np.isfinite(floor).all():  # a query short of k live rows yet: take them all
        return None
    width = sims.shape[1]
    found = _true_at(sims >= floor[:, None])  # row-major: each query's columns in order
    rows, cols = np.divmod(found, width)
    counts = np.bincount(rows, minlength=sims.shape[0])
    widest = int(counts.max()) if counts.size else 0
    if widest * 4 > width:
        return None
    slot = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    scores = np.full((sims.shape[0], widest), -np.inf, dtype=sims.dtype)
    part = np.full((sims.shape[0], widest), -1, dtype=np.int64)
    scores[rows, slot] = sims[rows, cols]
    part[rows, slot] = cols
    return scores, part


def _true_at(mask: np.ndarray) -> np.ndarray:
    """``np.flatnonzero(mask)`` for a C-contiguous boolean array where few values are true,
    found eight at a time: the bytes read as 64-bit words, only the nonzero words looked
    into (5 ms against numpy's 21 ms for 13M values holding ~50k true)."""
    flat = mask.reshape(-1)
    whole = flat.size // 8 * 8
    words = np.flatnonzero(flat[:whole].view(np.uint64))
    spots = (words[:, None] * 8 + np.arange(8)).reshape(-1)
    spots = spots[flat[spots]]
    rest = np.flatnonzero(flat[whole:]) + whole
    return np.concatenate([spots, rest]) if rest.size else spots


class VectorIndex:
    """A FAISS index whose ids are row positions, plus the policy around it."""

    def __init__(self, spec: str, dim: int) -> None:
        self.spec = spec
        self.dim = dim
        self.info = IndexInfo(spec=spec, resolved="Flat", kind="exact")
        self._index: Any = None  # CPU faiss index, or None for "exact via numpy"
        self._gpu: Any = None
        self._pending: Callable[[VectorIndex], None] | None = None  # see defer()
        self._pending_lock = threading.Lock()
        self._unwrapped_of: tuple[Any, Any, bool, Any] | None = None  # see _unwrapped()
        self._params_cache: dict[tuple[Any, Any], tuple[Any, Any]] = {}  # see _params()
        self._row_limit: int | None = None  # see limit_rows()
        # Codes of the rows appended since the index was loaded or saved (see codes_since):
        # rows _codes_from.. in order; None where they are not kept.
        self._codes_from: int | None = None
        self._codes: list[np.ndarray] = []
        # The index's training alone (see trained_blob), and where to read it: the end of
        # the file it was saved in (see defer).
        self._trained: bytes | None = None
        self._trained_source: Callable[[], bytes] | None = None
        # While the deferred load has not run: the training as a FAISS index, which encodes
        # appended rows (see _add_encoded), and the rows they were encoded from.
        self._header: Any = None
        self._header_from: int | None = None
        self._held_rows: Any = None

    # ----------------------------------------------------------------- deferred load
    def defer(
        self,
        info: dict[str, Any],
        rows: int,
        load: Callable[[VectorIndex], None],
        trained: Callable[[], bytes] | None = None,
        trained_rows: int | None = None,
    ) -> None:
        """Stand for a saved index without reading it yet: ``info`` (the manifest's record of
        it) answers ``info``, ``plan`` and ``explain``; ``load(self)`` runs on the first call
        that needs FAISS (an approximate search, a save, a re-tune).

        A cold ``embedsearch search --where ...`` whose filter makes the plan exact never
        reads the 356 MB index of a 1M-row collection (0.46 s of its 1.9 s).

        ``trained`` reads the index's training saved at the end of its file (see
        :meth:`trained_blob`), and ``trained_rows`` is the number of rows the saved file and
        its tails hold, where it is ``rows``: rows appended after them are then encoded
        with the training alone and kept as codes (see :meth:`_add_encoded`), so a writer
        that only adds never reads the whole index.
        """
        self.info = _info_from(info, rows)
        self._trained_source = trained
        self._header_from = trained_rows if trained is not None else None
        self._pending = load

    def load_deferred(self) -> None:
        """Run the deferred load (once; concurrent callers wait for it), then append the
        rows encoded meanwhile (see :meth:`_add_encoded`)."""
        if self._pending is None:
            return
        with self._pending_lock:
            load, self._pending = self._pending, None
            if load is None:
                return
            held_from, held, rows, view = (
                self._codes_from,
                self._codes,
                self.info.rows,
                self._held_rows,
            )
            self._header, self._held_rows = None, None
            load(self)
            if view is not None:
                self._append_held(held_from, held, rows, view)

    def _append_held(self, held_from: Any, held: list[np.ndarray], rows: int, view: Any) -> None:
        """After the deferred load: the rows encoded before it (positions ``held_from`` to
        ``rows``) go into the index as their codes, or, where the loaded index does not end
        where they start (its file was unusable and it was rebuilt), from ``view`` (the
        collection's vectors)."""
        ivf = self._tail_ivf()
        ends = ivf is not None and int(ivf.ntotal) == held_from == self._codes_from
        if ends and not self._codes:
            if held:
                self.append_codes(np.concatenate(held))
            self._codes_from, self._codes = held_from, list(held)  # kept for the tail
        elif self.info.rows < rows:
            self.add(view[self.info.rows : rows], view[:rows])

    def limit_rows(self, rows: int) -> None:
        """Answer from the first ``rows`` positions only, though the FAISS index holds more.

        A read-only view of a past version borrows the current version's index when that
        version's rows are a prefix of the current ones (``Collection._load_index``):
        every search then passes a selector of those positions.
        """
        self._row_limit = rows
        self.info.rows = rows

    def adopt(self, other: VectorIndex) -> None:
        """Become ``other`` (a deferred load that had to rebuild hands its result here)."""
        self._row_limit = other._row_limit
        self._codes_from, self._codes = other._codes_from, other._codes
        self._trained, self._trained_source = other._trained, other._trained_source
        self.spec, self.info, self._index, self._gpu = (
            other.spec,
            other.info,
            other._index,
            other._gpu,
        )

    # ----------------------------------------------------------------- build
    @property
    def ntotal(self) -> int:
        return self.info.rows

    @property
    def approximate(self) -> bool:
        return self.info.kind == "approximate"

    def build(self, vectors: np.ndarray, *, seed: int = 1234) -> None:
        """(Re)build from all stored vectors; trains and tunes approximate indexes.

        An ``auto`` index whose fast-scan PQ codes cannot reach the recall target at any
        probe count, even with the longest shortlist of :data:`RERANK_FACTORS`, is built
        again with SQ8 codes (``info["fallback_from"]`` says so): on
        1,000 noisy Gaussian clusters at 5M rows (``benchmarks/scale_open.py``) 4-bit PQ
        reached 0.68 at nprobe 512, where real MiniLM vectors reach 0.97 at 128.
        """
        n = vectors.shape[0]
        resolved = resolve_spec(self.spec, n, self.dim)
        self._build(vectors, resolved, seed)
        recall = self.info.recall_at_10
        if self.spec == "auto" and _fastscan(resolved) and (recall or 0) < TARGET_RECALL:
            scalar = resolved.rsplit(",", 1)[0] + ",SQ8"
            log.info("%s reached recall %.3f only; building %s instead", resolved, recall, scalar)
            self._build(vectors, scalar, seed)
            self.info.extra["fallback_from"] = resolved

    def _build(self, vectors: np.ndarray, resolved: str, seed: int) -> None:
        n = vectors.shape[0]
        waiting = n < max(1, _min_train_rows(resolved))  # nothing to train on or tune with yet
        if resolved == "Flat" or waiting:
            # Exact search runs in numpy over the stored vectors (no second copy in RAM);
            # a FAISS Flat index exists only to be put on a GPU.
            index = faiss().IndexFlatIP(self.dim) if gpu_count() else None
            kind = "exact"
            if waiting:
                log.info("index %s needs more rows to train; exact search until then", resolved)
        else:
            f = faiss()
            index = f.index_factory(self.dim, faiss_spec(resolved), f.METRIC_INNER_PRODUCT)
            kind = "exact" if resolved.strip() == "Flat" else "approximate"
        trained = 0
        if index is not None and not index.is_trained:
            rng = np.random.default_rng(seed)
            size = min(n, max(_TRAIN_MIN_SAMPLE, _TRAIN_PER_CELL * _min_train_rows(resolved)))
            sample = (
                _read_once(vectors, np.sort(rng.choice(n, size=size, replace=False)))
                if size < n
                else vectors
            )
            coarse = self._unwrap(index)
            sample = np.ascontiguousarray(sample, dtype=np.float32)
            if isinstance(coarse, faiss().IndexIVF):  # see _TRAIN_ITERATIONS
                coarse.cp.niter = _TRAIN_ITERATIONS
                # Under a pre-transform (PCA, OPQ) the cells live in the transformed space,
                # so FAISS trains the transform and the cells together.
                pre = isinstance(faiss().downcast_index(index), faiss().IndexPreTransform)
                if _numpy_coarse(coarse) and not pre:
                    # k-means in numpy (see _ASSIGN_BLOCK); FAISS then trains only the codes
                    # (it skips a quantizer that already holds nlist centroids).
                    centroids = spherical_kmeans(sample, coarse.nlist, _TRAIN_ITERATIONS, seed)
                    coarse.quantizer.add(centroids)
                    index.train(sample[: max(_ENCODER_SAMPLE, _min_train_rows(resolved))])
            if not index.is_trained:
                index.train(sample)
            trained = sample.shape[0]
        # An HNSW graph is tuned with rows it does not hold yet (see tune); they go in after.
        hold = min(_TUNE_QUERIES, n // 10) if kind == "approximate" and self._is_graph(index) else 0
        self._index, self._gpu = index, None  # placed on a GPU once built (below)
        self._codes_from, self._codes = None, []  # saved whole first (see codes_since)
        self._trained_source = None  # its training, kept before any row goes in
        self._trained = (
            faiss().serialize_index(index).tobytes()
            if index is not None and isinstance(faiss().downcast_index(index), faiss().IndexIVF)
            else None
        )
        if n and index is not None:
            self._add_rows(vectors, stop=n - hold, resolved=resolved)
        _split_single_queries(index)
        self.info = IndexInfo(
            spec=self.spec,
            resolved="Flat" if waiting else resolved,
            kind=kind,
            rows=n,
            trained_rows=trained,
            trained_for=n,
        )
        if waiting:
            self.info.extra["waiting_for"] = resolved
        if kind == "approximate":
            self.tune(vectors, seed=seed, indexed=n - hold)
        if hold:
            self._add_rows(vectors, start=n - hold)
        self._place_on_gpu()

    def add(self, vectors: np.ndarray, all_vectors: np.ndarray, ahead: Ahead | None = None) -> None:
        """Append rows to the index as it is: never retrains, never re-tunes.

        Cheap and proportional to ``len(vectors)``, so both readers (catching up with
        segments committed after the saved index) and writers (under the lock readers
        wait on) can call it. A writer then calls :meth:`maintain` outside that lock.
        ``ahead``: these rows' codes from :meth:`codes_ahead`, used if they were encoded
        by the index this add encodes with (else encoded here).
        """
        if self._pending is not None and self._add_encoded(vectors, all_vectors, ahead):
            return
        self.load_deferred()
        self.info.rows = all_vectors.shape[0]
        graph_retune = (
            self._index is not None
            and self.approximate
            and self._retune_due(all_vectors.shape[0])
            and self._is_graph(self._index)
            and len(vectors) >= _TUNE_QUERIES // 4
        )
        if graph_retune:  # an HNSW graph is tuned with the new rows as queries (see tune)
            self.tune(all_vectors, indexed=all_vectors.shape[0] - len(vectors))
        ivf = self._tail_ivf()
        if ivf is None or self._codes_end() != int(ivf.ntotal):
            self._codes_from, self._codes = None, []
            self._add_rows(vectors)
            return
        for batch, codes in self._encoded(ivf, vectors, ahead):  # encoded once, codes kept
            _insert_codes(ivf, codes)
            self._codes.append(codes)
            if self._gpu is not None:
                self._gpu.add(batch)

    def codes_ahead(self, vectors: np.ndarray) -> Ahead | None:
        """The codes the next :meth:`add` of ``vectors`` would compute, computed now, with
        the FAISS index that computed them (None where an add would not encode them so).
        A writer has this done beside its commit: at 5M rows it is 25 ms of a 1,000-row
        add. Safe beside searches (encoding only reads the trained quantizers)."""
        ivf = self._adding_ivf()
        if ivf is None:
            return None
        return ivf, [codes for _, codes in self._encoded(ivf, vectors)]

    def _adding_ivf(self) -> Any:
        """The FAISS IVF index the next :meth:`add` encodes rows with (a saved index not
        read yet: its training, read here once), or None where add does not encode so."""
        with self._pending_lock:
            if self._pending is not None:
                return self._header_ivf() if self._header_from is not None else None
        return self._tail_ivf()

    def prepare_add(self) -> None:
        """Ready what the next :meth:`add` reads first: FAISS itself and, for a saved index
        not read yet, its training (read from the end of its file). A writer has this done
        beside the model's embedding: a process's first add at 5M rows otherwise waits
        ~0.08 s for it. Safe beside searches and adds (it takes their lock); failures are
        left to the add itself, which says what went wrong."""
        with contextlib.suppress(Exception):
            self._adding_ivf()

    def _codes_end(self) -> int | None:
        """The position after the last row whose codes are kept (None: none are kept)."""
        if self._codes_from is None:
            return None
        return self._codes_from + sum(len(c) for c in self._codes)

    def _encoded(
        self, ivf: Any, vectors: np.ndarray, ahead: Ahead | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(rows, their codes)`` for each :data:`_ADD_CHUNK` rows of ``vectors``; the codes
        from ``ahead`` where ``ivf`` computed them for these rows."""
        done = None
        if ahead is not None and ahead[0] is ivf:
            done = ahead[1]
            if sum(len(c) for c in done) != len(vectors):
                done = None
        for i, lo in enumerate(range(0, len(vectors), _ADD_CHUNK)):
            batch = np.ascontiguousarray(vectors[lo : lo + _ADD_CHUNK], np.float32)
            yield batch, self._encode(ivf, batch) if done is None else done[i]

    def _add_encoded(
        self, vectors: np.ndarray, all_vectors: np.ndarray, ahead: Ahead | None = None
    ) -> bool:
        """Append rows to a saved index not read yet: encode them with its training alone
        (read from the end of its file, ~6 MB where the file of a 5M-row index is 277 MiB)
        and keep their codes, which a tail file saves (``Collection._save_index``) and the
        deferred load appends. False where that cannot be done (no training saved, or not
        the rows right after the saved ones): the caller then loads the index and adds.
        """
        with self._pending_lock:
            if self._pending is None or self._header_from is None:
                return False
            before = all_vectors.shape[0] - len(vectors)
            end = self._codes_end()
            if (self._header_from if end is None else end) != before:
                return False
            ivf = self._header_ivf()
            if ivf is None:
                return False
            if self._codes_from is None:
                self._codes_from, self._codes = before, []
            self._codes.extend(codes for _, codes in self._encoded(ivf, vectors, ahead))
            self._held_rows = all_vectors
            self.info.rows = all_vectors.shape[0]
            return True

    def _header_ivf(self) -> Any:
        """The saved training as an empty FAISS index (read once), or None where there is
        none or it cannot be this index's (a warning says why; the index is then loaded)."""
        if self._header is None and self._trained_source is not None:
            try:
                self._header = self._saved_training()
            except Exception as exc:  # noqa: BLE001 - derived data: load the index instead
                log.warning(
                    "the saved training of the index is unusable (%s); reading it whole", exc
                )
                self._trained_source, self._header_from = None, None
        return self._header

    def _saved_training(self) -> Any:
        """Read the training saved at the end of the index's file and keep its bytes; the
        empty FAISS index it holds (raises where it cannot be this index's)."""
        assert self._trained_source is not None
        blob = self._trained_source()
        header = self.check_trained(blob)
        self._trained = blob
        return header

    def check_trained(self, blob: bytes) -> Any:
        """The FAISS index that ``blob`` (see :meth:`trained_blob`) holds, once it is shown
        to be this index's kind emptied: an IVF index of the spec recorded, trained, with no
        rows, the same cells and code width (a crafted blob can pass its checksum)."""
        f = faiss()  # both come back as their own class, owning their C++ object
        header = f.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        want = f.index_factory(self.dim, faiss_spec(self.info.resolved), f.METRIC_INNER_PRODUCT)
        if (
            type(header) is not type(want)
            or not isinstance(header, f.IndexIVF)
            or header.d != self.dim
            or not header.is_trained
            or header.ntotal != 0
            or header.nlist != want.nlist
            or header.code_size != want.code_size
            or (
                isinstance(header, f.IndexIVFFastScan)
                and _block_layout(header.get_CodePacker()) is None
            )
        ):
            raise ValueError(f"it is not an empty trained {self.info.resolved} index")
        return header

    def trained_blob(self) -> bytes | None:
        """This index's training alone (FAISS's serialization of the index emptied of its
        rows: coarse cells, codebooks), which :meth:`save` writes after the index; None for
        indexes saved whole every time (see :meth:`_tail_ivf`).

        Kept from the training, or read from the end of the file the index was loaded from;
        failing both (a file saved before it was written there) it is made from a copy of
        the index, once."""
        self.load_deferred()
        if self._tail_ivf() is None:
            return None
        if self._trained is None and self._trained_source is not None:
            with contextlib.suppress(Exception):  # unusable: made from a copy below
                self._saved_training()
        if self._trained is None:
            f = faiss()
            empty = f.deserialize_index(f.serialize_index(self._index))
            empty.reset()
            self._trained = f.serialize_index(empty).tobytes()
        return self._trained

    def maintain(self, all_vectors: np.ndarray) -> VectorIndex | None:
        """Writer-side upkeep after rows were added: retrain or re-tune when due.

        Returns a *new* index when the policy calls for a rebuild (the caller swaps it in;
        readers keep searching this one meanwhile), else ``None`` after re-tuning in place
        if the rows grew by :data:`RETUNE_GROWTH` since the last tuning (only the default
        knobs change).
        Retraining follows the size the index was trained *for*: it happens when the rows
        outgrow it by :data:`RETRAIN_GROWTH`, so its cost, amortised over the rows added
        since, stays constant per row however large the collection gets.
        """
        n = all_vectors.shape[0]
        if self.needs_rebuild(n):
            fresh = VectorIndex(self.spec, self.dim)
            fresh.build(all_vectors)
            return fresh
        if self.approximate and self._retune_due(n):
            self.load_deferred()
            if self._index is not None:
                self.tune(all_vectors)  # the knob tuned at half the size may miss the target now
        return None

    def _keeps_training(self, n: int) -> bool:
        """Whether an index of ``n`` of these rows renumbered can keep this one's training
        (coarse cells, codebooks) and tuned knobs (see :meth:`refilled`)."""
        self.load_deferred()
        if (
            self._index is None
            or not self.approximate
            or self._is_graph(self._index)
            or self.info.extra.keys() & {"waiting_for", "fallback"}
        ):
            return False
        return not (
            self.spec == "auto"
            and (
                resolve_spec("auto", n, self.dim) == "Flat"
                or n * RETRAIN_GROWTH < (self.info.trained_for or n)
            )
        )

    def _copy_as(self, index: Any, rows: int, vectors: np.ndarray | None = None) -> VectorIndex:
        """A VectorIndex around ``index`` (a FAISS copy of this one's) holding ``rows``;
        ``vectors``: the rows to fill it with first (an emptied copy)."""
        fresh = VectorIndex(self.spec, self.dim)
        fresh._index = index
        fresh._trained, fresh._trained_source = self._trained, self._trained_source
        fresh.info = replace(self.info, rows=rows, extra=dict(self.info.extra))
        if vectors is not None:
            fresh._add_rows(vectors)
        _split_single_queries(fresh._index)
        fresh._place_on_gpu()
        return fresh

    def refilled(self, vectors: np.ndarray) -> VectorIndex | None:
        """A new index with this one's training (coarse cells, codebooks) and tuned knobs,
        holding ``vectors`` as positions ``0..n-1``; None when ``vectors`` call for a build
        of their own (see below).

        Compaction renumbers the rows, so the index must be filled again, but not trained
        again: the rows left are the same kind of rows. At 1M rows with 30 % deleted, the
        rebuild had been ~25 s of a 31 s compaction (k-means, tuning); filling the trained
        index is one pass of cell assignment and encoding. The knobs stay: fewer rows in
        the same cells are recalled at least as well, and growth re-tunes as before. A
        build of its own is due for an exact or waiting index, an HNSW graph (it is its
        rows), and an ``auto`` index whose rows no longer call for its kind (the exact
        threshold) or number under 1 / :data:`RETRAIN_GROWTH` of the rows it was trained for.
        """
        n = vectors.shape[0]
        if not self._keeps_training(n):
            return None
        f = faiss()
        index = f.deserialize_index(f.serialize_index(self._index))  # trained copy
        index.reset()
        return self._copy_as(index, n, vectors)

    def renumbered(self, dead: np.ndarray) -> VectorIndex | None:
        """This index without the rows at positions ``dead`` (sorted), the others numbered
        ``0..n-1`` in their order, as compaction numbers them; None where :meth:`refilled`
        must do (it does not hold every row, spills rows into a second list, or the rows
        left call for a build of their own).

        No row is encoded again: the dead entries are removed from the inverted lists and
        each list's ids are shifted down by the dead positions before them. Filling the
        trained index instead assigns every row to its cell again (a rows x cells product):
        8.9 s of a 10.3 s compaction at 1M rows that rewrote almost nothing. Same codes,
        same cells: the answers are those of the refilled index.
        """
        dead = np.asarray(dead, dtype=np.int64)
        n = self.info.rows - dead.size
        if (
            not self._keeps_training(n)
            or entries_per_row(self.info.resolved) != 1
            or int(self._index.ntotal) != self.info.rows
        ):
            return None
        f = faiss()
        index = f.deserialize_index(f.serialize_index(self._index))  # a copy to change
        if dead.size and index.remove_ids(f.IDSelectorBatch(dead)) != dead.size:
            return None
        ivf = f.extract_index_ivf(index)
        lists = ivf.invlists
        for cell in range(ivf.nlist):
            size = lists.list_size(cell)
            if size:  # the list's ids, in place
                ids = f.rev_swig_ptr(lists.get_ids(cell), size)
                ids -= np.searchsorted(dead, ids)
        if dead.size:
            _clear_past_ends(f.downcast_index(ivf))
        return self._copy_as(index, n)

    def _retune_due(self, n_after: int) -> bool:
        return n_after >= RETUNE_GROWTH * self.info.extra.get("tuned_rows", n_after)

    def _add_rows(
        self,
        vectors: np.ndarray,
        start: int = 0,
        stop: int | None = None,
        *,
        resolved: str | None = None,
    ) -> None:
        """Append ``vectors[start:stop]`` to the index, :data:`_ADD_CHUNK` rows at a time
        (``resolved``: the spec being built, when ``self.info`` is not yet its own)."""
        stop = vectors.shape[0] if stop is None else stop
        if self._index is None:
            return
        f = faiss()
        index = f.downcast_index(self._index)
        if entries_per_row(resolved or self.info.resolved) == 2:
            for lo in range(start, stop, _ADD_CHUNK):
                batch = vectors[lo : min(stop, lo + _ADD_CHUNK)]
                add_spilled(f, index, batch, int(index.ntotal) // 2)
                _release(vectors)
            return
        centroids = _plain_centroids(index)
        for lo in range(start, stop, _ADD_CHUNK):
            batch = np.ascontiguousarray(vectors[lo : min(stop, lo + _ADD_CHUNK)], np.float32)
            if centroids is None:
                index.add(batch)
            else:  # each row's cell found in numpy (see _ASSIGN_BLOCK), then FAISS encodes it
                cells = _nearest(batch, centroids)
                index.add_core(batch.shape[0], f.swig_ptr(batch), None, f.swig_ptr(cells))
            if self._gpu is not None:
                self._gpu.add(batch)
            _release(vectors)

    def first_training_due(self, n_after: int) -> bool:
        """Whether ``n_after`` rows call for this index's *first* training: it answers
        exactly now (``auto`` below the exact threshold, or a spec waiting for rows to train
        on) and ``n_after`` rows are enough. No trained index is saved yet, so a reader
        opening those rows would have to train one itself: the writer trains it before it
        commits them (see ``Collection._write``)."""
        return (
            self.needs_rebuild(n_after)
            and (not self.approximate or "waiting_for" in self.info.extra)
            and "fallback" not in self.info.extra
        )

    def needs_rebuild(self, n_after: int) -> bool:
        """Whether ``n_after`` rows call for a (re)trained index (writers act on it): from
        the saved index's record while it is not read yet (see :meth:`defer`)."""
        if self._pending is None and self._index is None and self.info.kind == "approximate":
            return True
        if "waiting_for" in self.info.extra:
            return n_after >= max(1, _min_train_rows(self.info.extra["waiting_for"]))
        if self.spec != "auto":
            return False
        if resolve_spec("auto", n_after, self.dim) == "Flat":
            return False
        # Crossing the exact threshold, or outgrowing what the index was trained for.
        trained_for = self.info.trained_for or self.info.rows
        return self.info.kind == "exact" or n_after >= RETRAIN_GROWTH * max(trained_for, 1)

    # ----------------------------------------------------------------- tuning
    def tune(
        self,
        vectors: np.ndarray,
        *,
        target: float = TARGET_RECALL,
        seed: int = 99,
        indexed: int | None = None,
    ) -> None:
        """Pick the smallest nprobe / efSearch whose recall@10 (after re-ranking) meets ``target``
        with 95% confidence (mean minus 1.645 standard errors over the tuning queries). A
        near miss (the mean meets the target, the bound does not) is measured again once on
        twice the queries, so a noisy sample does not cost twice the probes (two looks at the
        same bound: about 90-95 % confidence for such knobs instead of 95 %).

        The tuning queries are rows of the collection that are *held out*: when the index
        holds only the first ``indexed`` rows, a sample of the others (HNSW: see
        :meth:`build`); otherwise a sample of all rows, each held out together with its
        group of near-duplicates (cosine >= :data:`NEAR_DUPLICATE`, transitively: see
        :func:`_duplicate_group`), which are left out of both the exact truth and the
        index's answer. A real query is not a copy of a document; a
        query that is one finds itself and its copies in its own IVF cell, and at 1M rows
        that made nprobe=1 look like recall 0.99 when held-out queries got 0.53
        (``benchmarks/index_curves.py``). An HNSW graph links each of its rows to that row's
        own neighbours, so for HNSW only rows outside the graph make honest queries.

        The knobs chosen are the cheapest that meet the target by an estimate of a query's
        time (codes scanned and rows re-ranked, :func:`_code_ns`, :data:`_RERANK_ROW_US`),
        over the probe counts and the shortlist lengths of :data:`RERANK_FACTORS` (the
        factor is kept as ``info.rerank_factor``): among many near-identical rows the codes
        cannot order them, and re-ranking more of them beats probing more lists (5M rows,
        ~100 copies of each real vector: nprobe 256 with 256 re-ranked rows, or 64 with 512).
        """
        n = vectors.shape[0]
        indexed = n if indexed is None else indexed
        rng = np.random.default_rng(seed)
        everything, first_row = vectors, indexed if indexed < n else 0
        pool = n - first_row  # the rows queries are drawn from
        picked = rng.choice(pool, size=min(_TUNE_QUERIES, pool), replace=False)
        if indexed < n:
            vectors, n = vectors[:indexed], indexed
        wide = min(n, 10 + _TUNE_MAX_DUPLICATES)
        q = np.zeros((0, self.dim), dtype=np.float32)
        held: list[set[int]] = []
        keep: list[int] = []
        truth: list[list[int]] = []

        def add_queries(rows: np.ndarray) -> None:
            """Tuning queries at pool ``rows``: their exact truth and near-duplicates."""
            nonlocal q
            new = np.asarray(everything[first_row + rows], dtype=np.float32)
            ex_scores, ex_pos = exact_search(vectors, new, wide, release=True)
            for s, p in zip(ex_scores, ex_pos):
                h = set(_duplicate_group(vectors, s, p).tolist())
                if len(h) < _TUNE_MAX_DUPLICATES or wide == n:
                    keep.append(len(held))
                    truth.append([r for r in p.tolist() if r >= 0 and r not in h][:10])
                held.append(h)
            q = np.concatenate([q, new])

        add_queries(picked)
        # Where a value's sample mean meets the target but its 95 % bound falls short, the
        # sample is doubled once (a second draw, so the first stays what it always was):
        # at 1M rows the bound at nprobe 128 sat on the target (means 0.957-0.974, standard
        # error ~0.01 over six seeds), and a near miss cost 256 probes, 1.24x the query time.
        redrawn = False

        def second_draw() -> np.ndarray:
            """Up to 200 more pool rows, none in the first draw (drawn on a near miss only:
            the permutation of a 10M-row pool is 80 MB and ~0.1 s)."""
            more = np.random.default_rng(seed + 1).permutation(pool)[: 2 * _TUNE_QUERIES]
            return np.setdiff1d(more, picked)[:_TUNE_QUERIES]

        base = self._unwrap(self._index)
        f = faiss()
        if isinstance(base, f.IndexIVF):
            knob, values = (
                "nprobe",
                [v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if v <= base.nlist],
            )
        elif isinstance(base, f.IndexHNSW):
            knob, values = "ef_search", [16, 32, 64, 128, 256, 512]
        else:
            knob, values = None, [None]
        rows_per_list = (
            n * entries_per_row(self.info.resolved) / max(1, int(getattr(base, "nlist", 1)))
        )
        code_ns = _code_ns(self.info.resolved)

        def cost_us(value: int | None, factor: int) -> float:
            """Estimated time of one query with these knobs (what the tuner minimises)."""
            shortlist = self._base_rerank(10) * factor * _RERANK_ROW_US
            if knob == "nprobe" and value is not None:
                return value * rows_per_list * code_ns / 1000 + shortlist
            if knob == "ef_search" and value is not None:
                return value * _HNSW_STEP_US + shortlist
            return shortlist

        def recalls(value: int | None, factor: int) -> list[float]:
            """Each tuning query's recall@10 with these knobs, searched as one batch per
            count of held-out rows (they take shortlist slots; as many are added): a
            query's answer is the one it gets alone, and 200 single searches had cost
            9 of a 1M build's 22 s of tuning."""
            by_extra: dict[int, list[int]] = {}
            for j, i in enumerate(keep):
                by_extra.setdefault(len(held[i]), []).append(j)
            hits = [0.0] * len(keep)
            for extra, js in by_extra.items():
                opts = SearchOptions(
                    **({knob: value} if knob else {}),
                    rerank=self._base_rerank(10) * factor + extra,
                )
                rows = [keep[j] for j in js]
                _, got = self.search(vectors, q[rows], 10 + extra, None, opts, _tuning=True)
                for j, answer in zip(js, got.tolist()):
                    seen = [p for p in answer if p >= 0 and p not in held[keep[j]]][:10]
                    hits[j] = len(set(seen) & set(truth[j])) / max(1, len(truth[j]))
            return hits

        best: tuple[float, Any, int, float] | None = None  # (cost, value, factor, recall)
        last: tuple[Any, int, float] = (values[-1], RERANK_FACTORS[-1], 0.0)
        recall_of: dict[tuple[Any, int], float] = {}  # each setting measured, its recall

        def measure(value: Any, factor: int) -> bool:
            nonlocal last, redrawn
            hits = recalls(value, factor)
            near = bool(hits) and float(np.mean(hits)) >= target and not _met(hits, target)
            if near and not redrawn:  # a near miss: measure it again on twice the queries
                redrawn = True
                extra = second_draw()
                if extra.size:
                    add_queries(extra)
                    hits = recalls(value, factor)
            recall_of[value, factor] = recall = float(np.mean(hits)) if hits else 1.0
            last = (value, factor, recall)
            return _met(hits, target)

        previous = (getattr(self.info, knob) if knob else None, self.info.rerank_factor)
        for factor in RERANK_FACTORS if knob else RERANK_FACTORS[:1]:
            # the values that could be cheaper than a setting that meets the target
            affordable = [v for v in values if best is None or cost_us(v, factor) < best[0]]
            # a re-tune starts from the previous choice (see _first_met)
            hinted = previous[1] == factor and previous[0] in affordable
            start = affordable.index(previous[0]) if hinted else 0
            found = _first_met(
                len(affordable),
                lambda i, affordable=affordable, factor=factor: measure(affordable[i], factor),
                start,
            )
            if found is not None:
                value = affordable[found]
                best = (cost_us(value, factor), value, factor, recall_of[value, factor])
        chosen, factor, recall = best[1:] if best is not None else last
        self.info.rerank_factor = factor
        if knob == "nprobe":
            self.info.nprobe = chosen
        elif knob == "ef_search":
            self.info.ef_search = chosen
        self.info.recall_at_10 = round(recall, 4)
        self.info.extra["tuned_rows"] = self.info.rows
        log.info(
            "tuned %s: %s=%s rerank x%d recall@10=%.3f",
            self.info.resolved,
            knob,
            chosen,
            factor,
            recall,
        )
        if knob == "nprobe" and chosen is not None:
            # the first draw only: a second one sharpens the choice above, and here it would
            # double three more exact passes (1.5 s a re-tune at 1M rows)
            first = [i for i in keep if i < len(picked)]
            held_all = set().union(*(held[i] for i in keep)) if keep else set()
            self.info.filter_power = self._tune_filtered(
                vectors, q[first], sorted(held_all), int(chosen), int(base.nlist), target, rng
            )

    def _tune_filtered(
        self,
        vectors: np.ndarray,
        queries: np.ndarray,
        held: list[int],
        nprobe: int,
        nlist: int,
        target: float,
        rng: np.random.Generator,
    ) -> float:
        """The power :meth:`plan` raises the probes by under a filter (``share ** -power``),
        measured on this collection: for random filters keeping 10 %, 1 % and 0.1 % of the
        rows (:data:`_FILTER_TUNE_SHARES`, where they keep enough rows),
        the smallest power (in steps of doubled probes) whose recall@10 after re-ranking
        meets ``target`` with 95 % confidence, against exact search over the same rows.

        How many more cells the filtered top 10 occupy depends on the data: with clusters
        much larger than 10, a 10 % filter needed no more probes at 1M rows; with clusters
        of about 10 rows (a query's few neighbours, then nothing near), 1.8x the probes
        recalled 0.89. The held-out tuning queries and their near-duplicates are kept out of
        the filters.
        """
        n = vectors.shape[0]
        if queries.shape[0] < 20:
            return FILTER_PROBE_POWER
        found = []
        for share in _FILTER_TUNE_SHARES:
            if share * n < _FILTER_TUNE_MIN_ROWS:  # so few rows are gathered exactly anyway
                continue
            mask = rng.random(n) < share
            mask[held] = False
            _, truth = exact_search(vectors, queries, 10, mask, release=True)
            steps = max(0, math.ceil(math.log2(nlist / nprobe)))
            for step in range(steps + 1):  # the last step probes every list
                probes = min(nlist, nprobe << step)
                knobs = SearchOptions(probes, None, self.default_rerank(10))
                fetch = min(n, knobs.rerank or 10)
                got = self._approximate(queries, fetch, mask, knobs)
                _, got = _rerank(vectors, queries, got, 10)
                hits = [
                    len(set(g[g >= 0].tolist()) & set(t[t >= 0].tolist())) / max(1, (t >= 0).sum())
                    for g, t in zip(got, truth)
                ]
                if _met(hits, target) or probes >= nlist:
                    break
            found.append(step / math.log2(1 / share))
        return round(min(2.0, max(found)), 3) if found else FILTER_PROBE_POWER

    # ----------------------------------------------------------------- search
    def default_rerank(self, k: int) -> int:
        """Shortlist re-scored exactly when a call names none: 4k, at least 64 (256 for PQ),
        times the factor tuning found necessary (:data:`RERANK_FACTORS`)."""
        return self._base_rerank(k) * self.info.rerank_factor

    def _base_rerank(self, k: int) -> int:
        floor = _RERANK_MIN_PQ if "PQ" in self.info.resolved else _RERANK_MIN
        return max(floor, 4 * k)

    @classmethod
    def _is_graph(cls, index: Any) -> bool:
        return isinstance(cls._unwrap(index), faiss().IndexHNSW)

    def _unwrapped(self) -> tuple[Any, bool]:
        """``(the index under any pre-transform, whether there is one)`` for ``self._index``,
        cached per index object: each SWIG downcast costs microseconds, and a single query
        at 1M rows is ~0.5 ms."""
        cached = self._unwrapped_of
        if cached is None or cached[0] is not self._index:
            f = faiss()
            pre = isinstance(f.downcast_index(self._index), f.IndexPreTransform)
            base = self._unwrap(self._index)
            coarse = None if pre or not isinstance(base, f.IndexIVF) else _centroid_view(base)
            cached = self._unwrapped_of = (self._index, base, pre, coarse)
        return cached[1], cached[2]

    def _coarse(self, queries: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The ``nprobe`` cells nearest each query, best first, as FAISS's coarse quantizer
        would answer them (similarities, cell numbers), or None where FAISS must (another
        quantizer, a pre-transform, a batch of more than :data:`_NUMPY_COARSE_MAX_QUERIES`).

        One numpy matrix-vector product a query over the centroids, read in place: 47-70 us
        against 81-104 us in FAISS's flat quantizer (2,048 cells of 384 dimensions, out of a
        0.5-0.6 ms approximate query at 1M rows, ``benchmarks/query_stages.py``). Batches go
        to FAISS, which then also spreads the scan over its threads by query: finding the
        cells with numpy made batches of 100 1.2x slower in all (the lists scanned through
        ``search_preassigned``), though numpy's product alone was faster.
        """
        self._unwrapped()
        cached = self._unwrapped_of
        centroids = cached[3] if cached is not None else None
        m = queries.shape[0]
        if centroids is None or m > _NUMPY_COARSE_MAX_QUERIES:
            return None
        nlist = centroids.shape[0]
        nprobe = min(nprobe, nlist)
        sims = np.empty((m, nprobe), dtype=np.float32)
        cells = np.empty((m, nprobe), dtype=np.int64)
        for i in range(m):  # 1-D operations: 2-D ones cost ~6 us each, a small GEMM ~200 us
            row = centroids @ queries[i]
            if nprobe < nlist:  # the nprobe-th best value, then the cells at or above it:
                # 13 against 19 us for 2,048 cells with argpartition's index bookkeeping
                cut = np.partition(row, nlist - nprobe)[nlist - nprobe]
                near = np.flatnonzero(row >= cut)
            else:
                near = np.arange(nlist)
            best = row[near]
            order = np.argsort(best)[::-1][:nprobe]  # (ties at the cut: the first nprobe)
            sims[i], cells[i] = best[order], near[order]
        return sims, cells

    @staticmethod
    def _unwrap(index: Any) -> Any:
        f = faiss()
        index = f.downcast_index(index)
        while isinstance(index, f.IndexPreTransform):
            index = f.downcast_index(index.index)
        return index

    def _params(self, opts: SearchOptions, sel: Any) -> Any:
        """FAISS search parameters for ``opts`` and the selector ``sel``: ``(what the index
        is searched with, the inner index's own)``. Without a selector they are made once
        per index object and knob value (building one costs ~10 us of a 0.5 ms query)."""
        if sel is None:
            knob = (opts.nprobe or self.info.nprobe, opts.ef_search or self.info.ef_search)
            cached = self._params_cache.get(knob)
            if cached is not None and cached[0] is self._index:
                return cached[1]
            made = self._make_params(opts, None)
            if len(self._params_cache) > 64:
                self._params_cache.clear()
            self._params_cache[knob] = (self._index, made)
            return made
        return self._make_params(opts, sel)

    def _make_params(self, opts: SearchOptions, sel: Any) -> Any:
        f = faiss()
        base, pretransform = self._unwrapped()
        if isinstance(base, f.IndexIVF):
            inner = f.SearchParametersIVF()
            inner.nprobe = int(opts.nprobe or self.info.nprobe or 1)
        elif isinstance(base, f.IndexHNSW):
            inner = f.SearchParametersHNSW()
            inner.efSearch = int(opts.ef_search or self.info.ef_search or 64)
        else:
            inner = f.SearchParameters()
        if sel is not None:
            inner.sel = sel
        if pretransform:
            outer = f.SearchParametersPreTransform()
            outer.index_params = inner
            return outer, inner
        return inner, inner

    def search(
        self,
        vectors: np.ndarray,
        queries: np.ndarray,
        k: int,
        live: np.ndarray | None,
        opts: SearchOptions | None = None,
        *,
        matching: int | None = None,
        _tuning: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` positions among rows where ``live`` is true (all rows when ``None``).

        Args:
            vectors: all stored vectors (row = position), for exact re-ranking.
            queries: (m, dim) unit vectors.
            k: results per query.
            live: optional boolean mask over positions (tombstones, filters).
            opts: per-call search options.
            matching: the true count of ``live`` when the caller knows it (a table's live
                rows: counting 10M of them costs 0.4 ms a query); else it is counted.

        Returns:
            (scores, positions), each (m, k); missing results are -inf / -1.
        """
        opts = opts or SearchOptions()
        n = vectors.shape[0]
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if n == 0 or k <= 0:
            return exact_search(vectors, queries, max(k, 0))
        if live is None and self._row_limit is not None:  # a borrowed index (limit_rows)
            live = np.ones(n, dtype=bool)
        if live is None:
            matching = None
        elif matching is None:
            matching = int(np.count_nonzero(live))
        plan, subset = self.choose(vectors, live, matching, k, opts)
        if plan.kind not in ("exact", "exact-filtered") and self._pending is not None:
            self.load_deferred()  # a deferred index is read by the first search that needs it
            # chosen again: a failed read may have rebuilt it (exact)
            plan, subset = self.choose(vectors, live, matching, k, opts)
        gpu_ok = self._gpu is not None and live is None and not _tuning
        if plan.kind in ("exact", "exact-filtered"):
            if gpu_ok and k <= GPU_MAX_K:
                scores, pos = self._gpu.search(queries, min(k, n))
                return _pad(scores, pos, k)
            return exact_search(vectors, queries, k, live, subset=subset)
        fetch = min(n, plan.rerank or k)
        knobs = SearchOptions(plan.nprobe, plan.ef_search, plan.rerank)
        post = (  # a mask letting nearly every row through: applied to the shortlist
            plan.kind == "approximate-filtered"
            and matching is not None
            and matching >= POSTFILTER_SHARE * n
            and not _tuning
        )
        if post:
            fetch = min(n, math.ceil(fetch * n / matching))
        if (gpu_ok or (post and self._gpu is not None)) and fetch <= GPU_MAX_K:
            pos = self._gpu.search(queries, fetch)[1]
        else:
            pos = self._approximate(queries, fetch, None if post else live, knobs)
        if post:
            pos = np.where((pos >= 0) & live[np.maximum(pos, 0)], pos, -1)
        scores, pos = _rerank(vectors, queries, pos, k)
        if pos.shape[1] < k:  # k exceeds the rows or the shortlist: pad for the fill-in below
            scores, pos = _pad(scores, pos, k)
        # A selective filter, or a query between sparse cells, can starve the probed cells:
        # probe 8x and 64x wider first; only what is still short is answered exactly (an
        # exact pass maps every vector: at 1M rows, 1.4 GB of RSS for one such query).
        # (_rerank puts each query's hits first, then -1: short rows lack hit ``wanted``.)
        wanted = min(k, n if matching is None else matching)
        short = np.flatnonzero(pos[:, wanted - 1] < 0) if wanted else np.zeros(0, np.int64)
        for widen in (8, 64):
            if not short.size or (knobs.nprobe is None and knobs.ef_search is None):
                break
            wider = SearchOptions(
                knobs.nprobe and knobs.nprobe * widen,
                knobs.ef_search and min(_FILTER_MAX_EF, knobs.ef_search * widen),
                knobs.rerank,
            )
            p2 = self._approximate(queries[short], fetch, live, wider)
            s2, p2 = _rerank(vectors, queries[short], p2, k)
            scores[short], pos[short] = _pad(s2[:, :k], p2[:, :k], k)
            short = short[pos[short, wanted - 1] < 0]
        if short.size:
            scores[short], pos[short] = exact_search(vectors, queries[short], k, live)
        return scores, pos

    def _approximate(
        self,
        queries: np.ndarray,
        fetch: int,
        live: np.ndarray | None,
        knobs: SearchOptions,
    ) -> np.ndarray:
        """The FAISS index's shortlist: ``fetch`` distinct positions per query, best first
        (``live`` as an ID selector), -1 where the probed lists hold fewer. The caller
        re-ranks them with the exact vectors, so FAISS's scores are not kept."""
        f = faiss()
        bitmap = sel = None
        if live is not None:
            bitmap = np.packbits(live.astype(bool, copy=False), bitorder="little")
            sel = f.IDSelectorBitmap(bitmap.size, f.swig_ptr(bitmap))  # n: bytes, not rows
        base = self._unwrapped()[0]
        if knobs.nprobe and isinstance(base, f.IndexIVF):
            knobs = SearchOptions(min(int(base.nlist), knobs.nprobe), knobs.ef_search, knobs.rerank)
        params, _inner = self._params(knobs, sel)
        spilled = entries_per_row(self.info.resolved) == 2
        want = spilled_entries(fetch) if spilled else fetch
        coarse = self._coarse(queries, int(_inner.nprobe)) if isinstance(base, f.IndexIVF) else None
        if coarse is None:
            _, pos = self._index.search(queries, want, params=params)
        else:  # no pre-transform: ``base`` is ``self._index``, downcast
            _, pos = _search_preassigned(base, queries, want, coarse, params)
        del bitmap  # must outlive the search call
        return first_distinct(pos, fetch) if spilled else pos

    def choose(
        self,
        vectors: np.ndarray,
        live: np.ndarray | None,
        matching: int | None,
        k: int,
        opts: SearchOptions | None = None,
    ) -> tuple[Plan, np.ndarray | None]:
        """:meth:`plan` for a search over ``vectors`` under the mask ``live`` (``matching``
        of its rows true), and the allowed positions when they were listed to choose.

        A collection's vectors (anything but an ndarray) are gathered one ``pread`` per run
        of consecutive rows, so a filter's runs weigh in the plan (see
        :data:`FILTER_RUN_COST`). They are counted only where they can change it: when the
        plan with one run (the cheapest gather) is still exact; the positions listed to
        count them are kept for the gather."""
        rows = vectors.shape[0]
        if live is None or matching is None or isinstance(vectors, np.ndarray):
            return self.plan(rows, matching, k, opts), None
        plan = self.plan(rows, matching, k, opts, runs=1)
        if plan.kind != "exact-filtered":
            return plan, None
        subset = np.flatnonzero(live)
        runs = 1 + int(np.count_nonzero(np.diff(subset) != 1)) if subset.size else 0
        return self.plan(rows, matching, k, opts, runs=runs), subset

    def plan(
        self,
        rows: int,
        matching: int | None,
        k: int,
        opts: SearchOptions | None = None,
        *,
        runs: int | None = None,
    ) -> Plan:
        """How a search over ``rows`` positions, ``matching`` of them allowed, will run.

        ``matching`` is ``None`` without a filter (and without tombstones). Exact indexes
        search exactly. An approximate index answers a filter matching few rows by exact
        search over those rows (gather their vectors, one matmul: cost ∝ matching rows)
        and one matching many inside FAISS with the filter as an ID selector and the
        probes raised by ``selectivity ** -FILTER_PROBE_POWER`` (cost ∝ rows scanned), so
        that the matching rows nearest the query reach the shortlist and the tuned recall
        holds (see :data:`FILTER_PROBE_POWER`). The cheaper of the two, by
        :data:`FILTER_GATHER_COST` (fast-scan codes: ``FILTER_GATHER_COST_FASTSCAN``), is
        chosen per query. ``runs``: the runs of consecutive rows a gather of the matching
        rows reads, each one system call (:data:`FILTER_RUN_COST`); ``None`` where a gather
        costs by the row alone (vectors in memory).
        """
        opts = opts or SearchOptions()
        if not self.approximate or (self._index is None and self._pending is None):
            return Plan("exact", rows, matching)
        shape, nlist = self._shape()
        rerank = max(k, int(opts.rerank or self.default_rerank(k)))
        nprobe = ef = None
        if shape == "ivf":
            nprobe = int(opts.nprobe or self.info.nprobe or 1)
        elif shape == "hnsw":
            ef = int(opts.ef_search or self.info.ef_search or 64)
        if matching is None or matching >= rows:
            return Plan("approximate", rows, matching, nprobe=nprobe, ef_search=ef, rerank=rerank)
        share = max(matching, 1) / rows
        if nprobe is not None:
            power = FILTER_PROBE_POWER if self.info.filter_power is None else self.info.filter_power
            raised = min(nlist, math.ceil(nprobe * share**-power))
            entries = rows * entries_per_row(self.info.resolved)
            scanned = raised * entries / nlist
            if opts.nprobe is not None:  # the caller's own knob wins
                raised, scanned = opts.nprobe, opts.nprobe * entries / nlist
        else:
            raised = min(_FILTER_MAX_EF, math.ceil((ef or 64) / share))
            scanned = rows  # a graph walked under a selector: no good cost bound; be cautious
            if opts.ef_search is not None:
                raised = opts.ef_search
        fast = _fastscan(self.info.resolved)
        cost = FILTER_GATHER_COST_FASTSCAN if fast else FILTER_GATHER_COST
        gather = matching * cost
        tuned = matching >= _FILTER_TUNE_MIN_ROWS and share >= _FILTER_TUNE_SHARES[-1]
        if runs is not None and tuned:
            per_run = FILTER_RUN_COST * cost // FILTER_GATHER_COST_FASTSCAN
            gather += runs * per_run
            scanned += rerank * per_run  # the re-rank reads its shortlist so too
        if gather <= scanned:
            return Plan("exact-filtered", rows, matching)
        return Plan(
            "approximate-filtered",
            rows,
            matching,
            nprobe=raised if nprobe is not None else None,
            ef_search=raised if ef is not None else None,
            rerank=rerank,
        )

    def _shape(self) -> tuple[str, int]:
        """``("ivf", nlist)``, ``("hnsw", 0)`` or ``("other", 0)``: from the FAISS index when
        loaded, else from the resolved spec (a deferred index plans without being read)."""
        if self._index is not None:
            f = faiss()
            base = self._unwrapped()[0]
            if isinstance(base, f.IndexIVF):
                return "ivf", int(base.nlist)
            return ("hnsw", 0) if isinstance(base, f.IndexHNSW) else ("other", 0)
        m = _COARSE_RE.search(self.info.resolved)
        if m and m.group("nlist") is not None:
            return "ivf", int(m.group("nlist"))
        return ("hnsw", 0) if m else ("other", 0)

    # ----------------------------------------------------------------- GPU
    def _place_on_gpu(self) -> None:
        """Copy Flat/IVF indexes to GPU 0 when FAISS sees a GPU; verify; else stay on CPU."""
        self._gpu = None
        self.info.device = "cpu"
        if gpu_count() == 0 or self._index is None or self.info.rows == 0:
            return
        f = faiss()
        base = self._unwrap(self._index)
        if isinstance(base, (f.IndexHNSW, f.IndexIVFFastScan)):
            return  # FAISS has no GPU HNSW or fast-scan codes: stays on CPU by design
        try:
            res = f.StandardGpuResources()
            gpu = f.index_cpu_to_gpu(res, 0, self._index)
            probe = np.zeros((1, self.dim), dtype=np.float32)
            if gpu.ntotal != self._index.ntotal or gpu.search(probe, 1)[1][0, 0] < 0:
                raise RuntimeError("GPU index answers differently from the CPU index")
        except Exception as exc:  # an unusable "GPU" index is worse than none
            log.warning("FAISS GPU placement failed (%s); searching on the CPU", exc)
            return
        self._gpu = gpu
        self._gpu_res = res  # the resources must outlive the index
        self.info.device = "gpu"

    # ----------------------------------------------------------------- tails
    def _tail_ivf(self) -> Any:
        """The IVF index whose rows a tail file can carry as codes, or None for indexes that
        are saved whole every time: exact, HNSW (its graph is its rows), spilled lists (two
        entries a row) and indexes under a pre-transform."""
        if self._index is None or not self.approximate or entries_per_row(self.info.resolved) != 1:
            return None
        base, pre = self._unwrapped()
        if pre or not isinstance(base, faiss().IndexIVF):
            return None
        if (
            isinstance(base, faiss().IndexIVFFastScan)
            and _block_layout(base.get_CodePacker()) is None
        ):
            return None  # packed in a way _insert_codes cannot write
        return base

    def _keep_codes_from_here(self) -> None:
        """The rows held are all in saved files: keep the codes of rows appended from now."""
        ivf = self._tail_ivf()
        self._codes_from, self._codes = (int(ivf.ntotal), []) if ivf is not None else (None, [])

    @staticmethod
    def _encode(ivf: Any, batch: np.ndarray) -> np.ndarray:
        """Each row's cell number and code, as FAISS's ``sa_encode`` lays them out (the cells
        of plain IVF lists found in numpy, as :meth:`_add_rows` finds them)."""
        f = faiss()
        centroids = _plain_centroids(ivf)
        if centroids is None:
            return ivf.sa_encode(batch)
        cells = _nearest(batch, centroids)
        out = np.empty((batch.shape[0], ivf.sa_code_size()), dtype=np.uint8)
        ivf.encode_vectors(
            batch.shape[0], f.swig_ptr(batch), f.swig_ptr(cells), f.swig_ptr(out), True
        )
        return out

    def codes_since(self, start: int) -> np.ndarray | None:
        """The codes of rows ``start..ntotal-1`` as a tail file holds them (a row: its cell
        number, then its code), or None where this index did not keep them: it saves whole
        (see :meth:`_tail_ivf`), or it was not loaded or saved at ``start`` rows or fewer
        and appended to since (a rebuilt, refilled or renumbered index is saved whole).

        A writer that adds 10k rows to a 5M-row collection writes these 0.5 MB, not the
        277 MiB index (``Collection._save_index``)."""
        with self._pending_lock:  # not halfway through the deferred load (another thread)
            encoded = self._pending is not None and self._header is not None  # _add_encoded
            ivf = self._header if encoded else self._tail_ivf()
            if ivf is None or self._codes_from is None or self._codes_from > start:
                return None
            held = np.concatenate(self._codes) if self._codes else None
            if held is None:
                held = np.empty((0, ivf.sa_code_size()), dtype=np.uint8)
            end = self.info.rows if encoded else int(ivf.ntotal)
            if self._codes_from + held.shape[0] != end:
                return None
            return held[start - self._codes_from :]

    def saved_through(self, rows: int) -> None:
        """Rows below ``rows`` are in committed files now: their codes are not kept longer."""
        with self._pending_lock:
            if self._codes_from is None or rows <= self._codes_from:
                return
            held = np.concatenate(self._codes)
            self._codes = [held[rows - self._codes_from :].copy()]
            self._codes_from = rows

    @staticmethod
    def write_codes(out: IO[bytes], codes: np.ndarray) -> None:
        """Write codes (see :meth:`codes_since`) as a tail file: a ``.npy`` array of bytes,
        one row a row (no pickle)."""
        np.lib.format.write_array(out, np.ascontiguousarray(codes), allow_pickle=False)

    def read_codes(self, src: str | IO[bytes], rows: int) -> np.ndarray:
        """The ``rows`` codes of a tail file (checksummed by the caller), checked against
        this index: ValueError where they cannot be its codes (a crafted file can pass its
        checksum): another type or width, or a cell number past its lists. No pickle."""
        self.load_deferred()
        ivf = self._tail_ivf()
        if ivf is None:
            raise ValueError("this index is saved whole; it has no tails")
        if isinstance(src, str):
            codes = np.load(src, allow_pickle=False)
        else:
            codes = np.lib.format.read_array(src, allow_pickle=False)
        width = ivf.sa_code_size()
        if codes.dtype != np.uint8 or codes.shape != (rows, width):
            raise ValueError(
                f"the tail holds {codes.dtype} {codes.shape}, not {rows} codes of {width} bytes"
            )
        cells = _cells_of(ivf, codes)
        if cells.size and (int(cells.min()) < 0 or int(cells.max()) >= ivf.nlist):
            raise ValueError(f"the tail names cells outside 0..{ivf.nlist - 1}")
        return codes

    def append_codes(self, codes: np.ndarray) -> None:
        """Append rows given as :meth:`read_codes` returned them (the tails of the file this
        index was loaded from, all at once: each insertion walks the lists they touch) as
        positions ``ntotal..``."""
        ivf = self._tail_ivf()
        keep = self._codes_from == int(ivf.ntotal) and not self._codes
        for lo in range(0, codes.shape[0], _ADD_CHUNK):  # bounds _insert_codes' scratch arrays
            _insert_codes(ivf, codes[lo : lo + _ADD_CHUNK])
        self.info.rows = int(ivf.ntotal)
        self._codes_from = int(ivf.ntotal) if keep else None
        if self._gpu is not None:
            self._place_on_gpu()  # the GPU copy holds the new rows too

    # ----------------------------------------------------------------- persistence
    def save(self, out: Path | IO[bytes]) -> None:
        """Write the CPU index in FAISS's own format (no pickle) to a path or an open binary
        file (the store's durable writer hands one); approximate indexes only. The index's
        training alone follows it where it has one (:meth:`trained_blob`)."""
        self.load_deferred()
        f = faiss()
        trained = self.trained_blob()  # after the index: FAISS reads the index, not past it
        if isinstance(out, (str, os.PathLike)):
            f.write_index(self._index, str(out))
            if trained is not None:
                with open(out, "ab") as fh:
                    fh.write(trained)
        else:
            writer = f.PyCallbackIOWriter(out.write)
            f.write_index(self._index, writer)
            del writer  # flushes FAISS's buffer into ``out``
            if trained is not None:
                out.write(trained)
        self._keep_codes_from_here()

    def load(self, src: Path | IO[bytes], info: dict[str, Any]) -> None:
        """Load a saved index from a path or an open binary file (the caller has verified
        its checksum, reading the same descriptor)."""
        f = faiss()
        if isinstance(src, (str, os.PathLike)):
            index = f.read_index(str(src))
        else:
            index = f.read_index(f.PyCallbackIOReader(src.read))
        if index.d != self.dim:
            raise InvalidInputError(f"the saved index has dimension {index.d}, not {self.dim}")
        self._index = index
        self._trained = None  # this file's training: read from its end when needed
        _split_single_queries(index)
        self.info = _info_from(info, int(index.ntotal) // entries_per_row(str(info["resolved"])))
        self._keep_codes_from_here()
        self._place_on_gpu()

    def check_against(self, rows: int) -> str | None:
        """Why a loaded index cannot serve a collection whose manifest says it holds ``rows``
        rows (None when it can): a crafted file can pass its checksum (issue 14, finding 9).

        Checks ``ntotal`` and, for IVF indexes, that every stored id is a position in
        ``0..rows-1`` and the lists hold ``ntotal`` ids in all (O(ntotal), vectorised per list;
        spilled lists: two entries a row).
        """
        index = self._index
        if index is None:
            return None
        per_row = entries_per_row(self.info.resolved)
        if index.ntotal != rows * per_row:
            return f"the index holds {index.ntotal} entries, the manifest's {rows} rows need {rows * per_row}"
        f = faiss()
        base = self._unwrap(index)
        if isinstance(base, f.IndexIVF):
            inv = base.invlists
            total = 0
            for lst in range(base.nlist):
                size = inv.list_size(lst)
                if not size:
                    continue
                total += size
                ptr = inv.get_ids(lst)
                ids = f.rev_swig_ptr(ptr, size)
                bad = int(ids.min()) < 0 or int(ids.max()) >= rows
                inv.release_ids(lst, ptr)
                if bad:
                    return f"inverted list {lst} holds ids outside 0..{rows - 1}"
            if total != rows * per_row:
                return f"the inverted lists hold {total} ids, the manifest's {rows} rows need {rows * per_row}"
        return None

    @property
    def worth_saving(self) -> bool:
        """Exact indexes rebuild from the vectors in milliseconds; only trained ones are saved."""
        return self.approximate


def _info_from(info: dict[str, Any], rows: int) -> IndexInfo:
    """The :class:`IndexInfo` of a saved index from its manifest record, holding ``rows``."""
    out = IndexInfo(
        spec=info["spec"],
        resolved=info["resolved"],
        kind=info["kind"],
        rows=rows,
        trained_rows=int(info.get("trained_rows") or 0),
        # Files saved before trained_for existed: the rows they hold (never retrain on load).
        trained_for=int(info.get("trained_for") or rows),
        nprobe=info.get("nprobe"),
        ef_search=info.get("ef_search"),
        recall_at_10=info.get("recall_at_10"),
        filter_power=_power(info.get("filter_power")),
        rerank_factor=_factor(info.get("rerank_factor")),
    )
    if info.get("tuned_rows"):
        out.extra["tuned_rows"] = int(info["tuned_rows"])
    if isinstance(info.get("fallback_from"), str):
        out.extra["fallback_from"] = info["fallback_from"][:200]
    return out


def _first_met(count: int, met: Callable[[int], bool], start: int = 0) -> int | None:
    """The first of ``count`` ascending knob values that meets the target (``met(i)``
    measures value ``i``), searched from ``start`` both ways: from a re-tune's previous
    choice that takes two or three measurements where a scan from the first value took
    seven at 1M rows (each ~0.12 s: 200 queries re-ranked). Recall grows with the knob, so
    the answer is the scan's; None when none from ``start`` up meets it."""
    if not count:
        return None
    i = min(max(start, 0), count - 1)
    if met(i):
        while i > 0 and met(i - 1):
            i -= 1
        return i
    for j in range(i + 1, count):
        if met(j):
            return j
    return None


def _duplicate_group(vectors: Any, scores: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """The rows among a tuning query's exact neighbours ``pos`` (``scores`` its cosines to
    them, best first) that belong to its group of near-duplicates: those at least
    :data:`NEAR_DUPLICATE` similar to it, and then, transitively, to any row of the group.

    A threshold on the query alone splits a group of copies whose spread straddles it: the
    copies just below it stayed in the query's truth, far above every other document, and
    made the tuner's task easier than a real query's. On the scale benchmark's 10M set
    (~207 perturbed copies of each real vector, copies ~0.87 similar to each other) about a
    quarter of each group stayed, the tuner reported recall 0.962 for nprobe 64 with 512
    re-ranked rows, and queries from outside the collection got 0.938 (held-out documents
    0.903)."""
    valid = pos >= 0
    cand, near = pos[valid], scores[valid] >= NEAR_DUPLICATE
    if not near.any():
        return cand[near]
    rows = np.asarray(vectors[cand], dtype=np.float32)
    close = rows @ rows.T >= NEAR_DUPLICATE
    group, frontier = near.copy(), near.copy()
    while frontier.any():  # grow the group one hop at a time, within the neighbours
        frontier = close[frontier].any(axis=0) & ~group
        group |= frontier
    return cand[group]


def _met(hits: list[float], target: float) -> bool:
    """Whether per-query recalls ``hits`` meet ``target`` with 95 % confidence (mean minus
    1.645 standard errors), not just on average: at 1M rows the mean alone picked nprobe=32
    (0.954 on the sample, 0.943 on held-out queries)."""
    if not hits:
        return True
    spread = float(np.std(hits, ddof=1) / np.sqrt(len(hits))) if len(hits) > 1 else 0.0
    return float(np.mean(hits)) - 1.645 * spread >= target


def _factor(value: Any) -> int:
    """A stored shortlist factor, if it is one :meth:`VectorIndex.tune` picks (else 1)."""
    return value if type(value) is int and value in RERANK_FACTORS else 1


def _code_ns(resolved: str) -> float:
    """Nanoseconds to scan one code of an IVF index's lists, by code kind (one query, one
    core: fast-scan PQ 64 lists of IVF2048 at 1M, 31k codes, in 0.21 ms; SQ8 about twice
    that; float32 vectors a few times more)."""
    codes = faiss_spec(resolved).rsplit(",", 1)[-1]
    if _fastscan(resolved):
        return 7.0
    if codes.startswith("SQ"):
        return 15.0
    if codes.startswith("PQ"):
        return 20.0
    return 60.0


def _fastscan(resolved: str) -> bool:
    """Whether a resolved spec has 4-bit fast-scan PQ codes (``...x4fs``)."""
    return faiss_spec(resolved).endswith("fs")


def _power(value: Any) -> float | None:
    """A stored filter probe power, if it is a number in [0, 2] (else the default applies)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 2:
        return float(value)
    return None


def _search_preassigned(
    ivf: Any, queries: np.ndarray, k: int, coarse: tuple[np.ndarray, np.ndarray], params: Any
) -> tuple[np.ndarray, np.ndarray]:
    """FAISS's IVF search from given cells (``coarse``: similarities and cell numbers, one
    row a query, ``params.nprobe`` columns) with ``params`` (its selector): the Python
    wrapper's ``search_preassigned`` refuses ``params``, so this calls the C++ method."""
    f = faiss()
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    sims = np.ascontiguousarray(coarse[0], dtype=np.float32)
    cells = np.ascontiguousarray(coarse[1], dtype=np.int64)
    if cells.shape != (queries.shape[0], int(params.nprobe)) or sims.shape != cells.shape:
        raise ValueError(f"cells of shape {cells.shape} for nprobe {params.nprobe}")
    m = queries.shape[0]
    scores = np.empty((m, k), dtype=np.float32)
    pos = np.empty((m, k), dtype=np.int64)
    ivf.search_preassigned_c(
        m,
        f.swig_ptr(queries),
        k,
        f.swig_ptr(cells),
        f.swig_ptr(sims),
        f.swig_ptr(scores),
        f.swig_ptr(pos),
        False,
        params,
    )
    return scores, pos


def _centroid_view(ivf: Any) -> np.ndarray | None:
    """The (nlist, d) centroids of ``ivf``'s flat inner-product quantizer (what ``IVF<n>,...``
    specs build) as a read-only view of FAISS's own buffer (no copy: 3 MB of RSS at 2,048
    cells), or None for any other quantizer (HNSW, L2) or an untrained one. Valid while the
    index lives: callers keep it beside the index, and a quantizer gains no rows after
    training (a retrain builds a new index)."""
    if not _numpy_coarse(ivf) or ivf.quantizer.ntotal == 0:
        return None
    f = faiss()
    flat = f.downcast_index(ivf.quantizer)
    view = f.rev_swig_ptr(flat.get_xb(), int(flat.ntotal) * int(flat.d))
    view = view.reshape(int(flat.ntotal), int(flat.d))
    view.flags.writeable = False
    return view


def _plain_centroids(index: Any) -> np.ndarray | None:
    """The centroids of a plain IVF index (Flat, SQ or PQ lists, not fast-scan), whose rows'
    cells are found in numpy (see _ASSIGN_BLOCK); None for others (FAISS finds them)."""
    f = faiss()
    plain = (f.IndexIVFFlat, f.IndexIVFScalarQuantizer, f.IndexIVFPQ)
    return _centroid_view(index) if isinstance(index, plain) else None


def _numpy_coarse(ivf: Any) -> bool:
    """Whether the coarse quantizer of ``ivf`` is a flat inner-product index (numpy can
    train it and assign rows to its cells)."""
    f = faiss()
    quantizer = f.downcast_index(ivf.quantizer)
    return isinstance(quantizer, f.IndexFlat) and quantizer.metric_type == f.METRIC_INNER_PRODUCT


def _nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Best centroid (inner product) of each row of ``x``, as int64 (FAISS's ``idx_t``),
    one matrix product per block of :data:`_ASSIGN_BLOCK` rows."""
    cells = np.empty(x.shape[0], dtype=np.int64)
    for lo in range(0, x.shape[0], _ASSIGN_BLOCK):
        cells[lo : lo + _ASSIGN_BLOCK] = np.argmax(x[lo : lo + _ASSIGN_BLOCK] @ centroids.T, axis=1)
    return cells


def spherical_kmeans(x: np.ndarray, k: int, niter: int, seed: int = 1234) -> np.ndarray:
    """``k`` unit centroids of the unit rows ``x`` by spherical k-means, in numpy.

    What FAISS's IVF training does for inner-product indexes (random initial rows, Lloyd
    iterations, centroids re-normalised, an empty cell re-seeded by splitting the largest
    one), with the assignment as one numpy matrix product per block (see _ASSIGN_BLOCK).
    """
    from scipy import sparse  # scikit-learn's dependency; only writers train

    n, d = x.shape
    rng = np.random.default_rng(seed)
    centroids = np.ascontiguousarray(x[rng.choice(n, size=k, replace=False)], dtype=np.float32)
    ones, rows = np.ones(n, dtype=np.float32), np.arange(n)
    for _ in range(niter):
        cells = _nearest(x, centroids)
        # per-cell sums as a sparse one-hot product: 6x faster than sort + reduceat here
        sums = np.asarray(sparse.csr_matrix((ones, (cells, rows)), shape=(k, n)) @ x)
        counts = np.bincount(cells, minlength=k)
        for empty in np.flatnonzero(counts == 0):  # split the largest cell in two
            big = int(np.argmax(counts))
            noise = rng.standard_normal(d).astype(np.float32) * np.float32(1e-3)
            sums[empty] = sums[big] + noise * np.linalg.norm(sums[big])
            sums[big] -= noise * np.linalg.norm(sums[big])
            counts[empty] = counts[big] // 2
            counts[big] -= counts[empty]
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = np.where(norms > 0, sums / np.maximum(norms, 1e-30), centroids)
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    return centroids


def _cells_of(ivf: Any, codes: np.ndarray) -> np.ndarray:
    """The cell number each row of ``sa_encode`` codes starts with (little-endian bytes)."""
    cells = np.zeros(codes.shape[0], dtype=np.int64)
    for byte in range(ivf.coarse_code_size()):
        cells |= codes[:, byte].astype(np.int64) << (8 * byte)
    return cells


#: Per (rows a block, bytes a block, bytes a code): see :func:`_block_layout`.
_BLOCK_LAYOUTS: dict[tuple[int, int, int], np.ndarray | None] = {}


def _block_layout(packer: Any) -> np.ndarray | None:
    """How a fast-scan block holds its rows' codes: for each 4-bit slot of the packed block
    (low then high half of each byte), the slot of the rows' flat codes it holds (row x
    2 x code bytes + half-byte), or None where the packing is not such a permutation.

    Found with three probe blocks: a block holds each half-byte of its rows once, so
    writing each flat slot's number in base 16, a digit a probe, names them all. Packing
    many rows is then one numpy scatter instead of a FAISS call per block.
    """
    per, block, width = packer.nvec, packer.block_size, packer.code_size
    key = (per, block, width)
    if key not in _BLOCK_LAYOUTS:
        f = faiss()
        slots = per * width * 2
        number = np.arange(slots, dtype=np.int64)
        found = np.zeros(block * 2, dtype=np.int64)
        for digit in range(max(1, math.ceil(math.log(slots, 16)))):
            halves = ((number >> (4 * digit)) & 15).astype(np.uint8)
            flat = np.ascontiguousarray(halves[0::2] | (halves[1::2] << 4))
            out = np.zeros(block, dtype=np.uint8)
            packer.pack_all(f.swig_ptr(flat), f.swig_ptr(out))
            found |= np.stack([out & 15, out >> 4], axis=1).ravel().astype(np.int64) << (4 * digit)
        ok = slots == block * 2 and np.array_equal(np.sort(found), number)
        _BLOCK_LAYOUTS[key] = found if ok else None
    return _BLOCK_LAYOUTS[key]


def _clear_past_ends(ivf: Any) -> None:
    """Zero the half-bytes past each fast-scan list's last row. FAISS's ``remove_ids`` moves
    a list's last row into a removed one's place and leaves its code behind, and FAISS's
    ``add`` ors the next rows' codes into those half-bytes: 3 of 40 rows added after 3
    removals got wrong codes (``tests/test_index_tails.py``), found by fewer searches."""
    f = faiss()
    if not isinstance(ivf, f.IndexIVFFastScan):
        return
    packer = ivf.get_CodePacker()
    layout = _block_layout(packer)
    if layout is None:
        return
    per, block, width = packer.nvec, packer.block_size, packer.code_size
    row_of = (layout // (width * 2)).reshape(block, 2)  # each byte's two halves' rows
    past = np.arange(per)[:, None, None] <= row_of[None]  # rows k.. of a block, per k
    masks = (past[:, :, 0] * 15 + past[:, :, 1] * 240).astype(np.uint8)
    lists = ivf.invlists
    for cell in range(ivf.nlist):
        size = lists.list_size(cell)
        if size % per:
            last = f.rev_swig_ptr(lists.get_codes(cell), -(-size // per) * block)[-block:]
            last &= ~masks[size % per]


def _insert_codes(ivf: Any, codes: np.ndarray, cells: np.ndarray | None = None) -> None:
    """Append rows given as ``sa_encode`` codes to ``ivf`` as positions ``ntotal..``
    (at most :data:`_ADD_CHUNK` of them: the scratch arrays hold ~400 bytes a row and
    int32 offsets).

    Fast-scan lists hold their codes packed 32 rows to a block, and FAISS's ``add_sa_codes``
    copies them unpacked; its ``BlockInvertedLists.add_entries`` (1.15) copies past the
    list's buffer when the list holds a multiple of a block's *bytes* in rows (1,536 for
    PQ96x4). So the new rows are packed here, all lists' blocks in one numpy scatter
    (:func:`_block_layout`), and each list is grown and its new rows' half-bytes written
    into its blocks (cleared first: FAISS's ``remove_ids``, which compaction uses, leaves
    the moved row's old code past the list's end). The search answers and the lists' bytes
    equal those of ``add`` on the same vectors (``tests/test_index_tails.py``).
    """
    f = faiss()
    n = codes.shape[0]
    first = int(ivf.ntotal)
    ids = np.arange(first, first + n, dtype=np.int64)
    if not isinstance(ivf, f.IndexIVFFastScan):
        ivf.add_sa_codes(codes, ids)
        return
    if n == 0:
        return
    if n > _ADD_CHUNK:
        raise ValueError(f"{n} rows at once; at most {_ADD_CHUNK}")
    cells = _cells_of(ivf, codes) if cells is None else cells
    packer = ivf.get_CodePacker()
    layout = _block_layout(packer)
    if layout is None:
        raise RuntimeError("this fast-scan packing is not a permutation of half-bytes")
    per, block, width = packer.nvec, packer.block_size, packer.code_size
    lists = f.downcast_InvertedLists(ivf.invlists)
    order = np.argsort(cells, kind="stable")
    cell_of = cells[order]
    touched, first_row, count = np.unique(cell_of, return_index=True, return_counts=True)
    held = np.array([lists.list_size(c) for c in touched.tolist()], dtype=np.int64)
    # Each new row's place in its list, and the block of the lists' touched blocks it is in.
    pos = np.repeat(held, count) + (np.arange(n) - np.repeat(first_row, count))
    block_key = cell_of * (1 << 40) + pos // per
    new_block = np.r_[True, block_key[1:] != block_key[:-1]]
    starts = np.flatnonzero(new_block)  # the first new row of each touched block
    which = np.cumsum(new_block) - 1  # each new row's touched block
    # Each half-byte of a row's flat code goes to one slot of its block (see _block_layout).
    fine = codes[order, ivf.coarse_code_size() :]
    halves = np.empty((n, width * 2), dtype=np.uint8)
    halves[:, 0::2], halves[:, 1::2] = fine & 15, fine >> 4
    slot_of = np.empty(layout.size, dtype=np.int32)
    slot_of[layout] = np.arange(layout.size, dtype=np.int32)
    slot_of = slot_of.reshape(per, width * 2)
    row = pos % per
    byte = (slot_of >> 1)[row] + (which * block).astype(np.int32)[:, None]
    low = (slot_of & 1 == 0)[row]
    packed = np.zeros(starts.size * block, dtype=np.uint8)
    packed[byte[low]] |= halves[low]  # each byte's low half comes from one row ...
    packed[byte[~low]] |= halves[~low] << 4  # ... and its high half from one row
    mine = np.zeros_like(packed)  # the half-bytes the new rows take
    mine[byte[low]] |= 15
    mine[byte[~low]] |= 240
    block_of_list = np.searchsorted(starts, first_row)
    spans = zip(
        touched.tolist(),
        held.tolist(),
        count.tolist(),
        first_row.tolist(),
        (block_of_list * block).tolist(),
        (np.r_[block_of_list[1:], starts.size] * block).tolist(),
    )
    sorted_ids = ids[order]
    for cell, had, added, lo, b0, b1 in spans:
        size = had + added
        lists.resize(cell, size)  # the new bytes zeroed
        f.rev_swig_ptr(lists.get_ids(cell), size)[had:] = sorted_ids[lo : lo + added]
        buf = f.rev_swig_ptr(lists.get_codes(cell), -(-size // per) * block)
        at = had // per * block
        span = buf[at : at + b1 - b0]
        span &= ~mine[b0:b1]  # a removal (compaction) leaves old codes past a list's rows
        span |= packed[b0:b1]
    ivf.ntotal = first + n


def _split_single_queries(index: Any) -> None:
    """Let an IVF index spread *one* query's probed lists over the OpenMP threads.

    FAISS's default (``parallel_mode`` 0) splits a batch by query, so a single query (the
    common case: one user, one search) runs on one core. Mode 1 splits each query's lists
    across threads: 1.8x the single-query rate at 1M vectors on 2 cores, same batch rate
    (``benchmarks/index_curves.py``). Set once per index object, never per call.
    """
    base = None if index is None else VectorIndex._unwrap(index)
    if base is not None and isinstance(base, faiss().IndexIVF):
        base.parallel_mode = 1


def _pad(scores: np.ndarray, pos: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    m, got = pos.shape
    out_s = np.full((m, k), -np.inf, dtype=np.float32)
    out_p = np.full((m, k), -1, dtype=np.int64)
    out_s[:, :got], out_p[:, :got] = scores, pos
    out_p[out_s == -np.inf] = -1
    return out_s, out_p


def _gather(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``vectors[rows]``, the re-rank's read of its shortlist.

    An ndarray (a memory map) is read with ``np.take``: for 256 scattered rows of a mapped
    1M x 384 float32 matrix it took 0.59-0.69x the time of fancy indexing (interleaved,
    3,000 draws a round). Anything else (a collection's ``VectorView``, which reads its
    segments by ``pread``) is indexed: ``np.take`` would turn it into one array first, a
    copy of every vector.
    """
    if isinstance(vectors, np.ndarray):  # np.memmap included
        return np.take(vectors, rows, axis=0)
    return vectors[rows]


def _rerank(
    vectors: np.ndarray, queries: np.ndarray, pos: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Re-score an approximate shortlist with the exact stored vectors; its best ``k``, sorted.

    Returns (scores, positions), each (m, min(k, shortlist)); empty slots are -inf / -1.
    Row by row with 1-D operations: a single query at 1M rows takes ~0.5 ms in all, and the
    2-D ``take_along_axis`` path cost 0.06 ms of it.
    """
    m, fetch = pos.shape
    keep = min(k, fetch)
    out_s = np.full((m, keep), -np.inf, dtype=np.float32)
    out_p = np.full((m, keep), -1, dtype=np.int64)
    step = max(1, _RERANK_BATCH_ROWS // max(1, fetch))
    for lo in range(0, m, step):
        part = pos[lo : lo + step]
        # a batch's shortlists are read in one gather of their distinct rows: the tuner's
        # 200-query batches at 1M rows had made 200 small reads each
        batch = m > 1 and bool((part >= 0).any())
        if batch:
            rows, where = np.unique(part[part >= 0], return_inverse=True)
            read, at = _gather(vectors, rows), 0
        for i in range(lo, min(m, lo + step)):
            row = pos[i]
            if (row < 0).any():
                row = row[row >= 0]
            if not row.size:
                continue
            if batch:
                vecs, at = read[where[at : at + row.size]], at + row.size
            else:
                vecs = _gather(vectors, row)
            _best(out_s, out_p, i, vecs @ queries[i], row, keep)
    return out_s, out_p


def _best(
    out_s: np.ndarray, out_p: np.ndarray, i: int, scores: np.ndarray, row: np.ndarray, keep: int
) -> None:
    """Row ``i`` of :func:`_rerank`'s answer: the ``keep`` best of ``scores`` (of ``row``)."""
    top = np.argpartition(-scores, keep - 1)[:keep] if keep < row.size else None
    if top is not None:
        scores, row = scores[top], row[top]
    order = np.argsort(-scores, kind="stable")
    out_s[i, : order.size], out_p[i, : order.size] = scores[order], row[order]
