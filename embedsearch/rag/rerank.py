"""Second-stage reranking with a cross-encoder (sentence-transformers ``CrossEncoder``).

A cross-encoder reads query and passage together and scores their relevance; it is far more
accurate than comparing two independent embeddings and far slower, so it only sees the top
candidates of the first stage. ``rerank=`` accepts a local model folder (loaded once per
process and cached), a loaded ``CrossEncoder``, or any object with
``predict(list[(query, passage)]) -> scores``.

No cross-encoder weights ship in a package reachable here; the plumbing is tested with a
tiny randomly initialised model built in the test. Quality claims for reranking therefore
need a real model (e.g. a local copy of cross-encoder/ms-marco-MiniLM-L-6-v2).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EncoderError, InvalidInputError

_CACHE: dict[str, Any] = {}
_LOCK = threading.Lock()


def load_cross_encoder(path: str | os.PathLike[str]) -> Any:
    """Load (once per process) the ``CrossEncoder`` stored in the folder ``path``.

    Raises:
        EncoderError: the folder is missing or does not hold a loadable cross-encoder.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise EncoderError(
            f"cross-encoder {str(path)!r} is not a folder; pass the path of a saved "
            "sentence-transformers CrossEncoder (no downloads happen here)."
        )
    key = str(folder.resolve())
    with _LOCK:
        model = _CACHE.get(key)
        if model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                from sentence_transformers import CrossEncoder

                model = CrossEncoder(key, device="cpu" if not _cuda() else None)
            except Exception as exc:
                raise EncoderError(
                    f"cannot load a CrossEncoder from {key} ({type(exc).__name__}: {exc})."
                ) from exc
            _CACHE[key] = model
        return model


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve(spec: Any) -> Any:
    """A model with ``predict`` from a path, a CrossEncoder, or a predict-capable object."""
    if isinstance(spec, (str, os.PathLike)):
        return load_cross_encoder(spec)
    if hasattr(spec, "predict"):
        return spec
    raise InvalidInputError(
        f"rerank must be a CrossEncoder folder path or an object with predict(pairs), got "
        f"{type(spec).__name__}."
    )


def rerank_scores(model: Any, query: str, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """Cross-encoder relevance of each text to ``query`` (higher is better)."""
    if not texts:
        return np.zeros(0, dtype=np.float32)
    pairs = [(query, t) for t in texts]
    try:
        scores = model.predict(pairs, batch_size=batch_size, show_progress_bar=False)
    except TypeError:  # a custom object with a plain predict(pairs)
        scores = model.predict(pairs)
    arr = np.asarray(scores, dtype=np.float32)
    if arr.ndim == 2:  # multi-label heads: take the last column (the "relevant" class)
        arr = arr[:, -1]
    if arr.shape != (len(texts),) or not np.all(np.isfinite(arr)):
        raise EncoderError(
            f"the reranker returned {arr.shape} scores for {len(texts)} passages (or NaN); "
            "it must return one finite score per (query, passage) pair."
        )
    return arr
