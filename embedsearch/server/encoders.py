"""Query encoding that a long ``add`` cannot block.

An :class:`~embedsearch.Encoder` runs one batch at a time (torch and onnxruntime sessions
are not re-entrant), and an ``add`` embeds 2,048 texts per batch: seconds of work during
which every search would wait for the same model. The server therefore embeds queries with
its *own* copy of each model (same weights, same code, so the vectors are the ones the
collection's encoder would give), behind a small LRU cache. Adds and ``/v1/embeddings`` use
the shared process-wide encoder.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..encoder import Encoder


class QueryEncoders:
    """One private encoder per (model, backend) for queries, with an LRU cache of vectors.

    Args:
        separate: use private model copies (default); False embeds queries with the
            collection's shared encoder, which saves memory but queues searches behind adds.
        cache_size: query vectors kept per process.
    """

    def __init__(self, *, separate: bool = True, cache_size: int = 4096) -> None:
        self.separate = separate
        self.cache_size = cache_size
        self._encoders: dict[tuple[str, str], Encoder] = {}
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str, str], np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    def encoder_for(self, shared: Encoder) -> Encoder:
        """The encoder that embeds queries for collections using ``shared``."""
        if not self.separate:
            return shared
        key = (shared.name, shared.backend)
        with self._lock:
            enc = self._encoders.get(key)
            if enc is None:
                enc = self._encoders[key] = Encoder(shared.name, shared.backend)
            return enc

    def encode(self, shared: Encoder, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of ``texts`` as ``shared`` would embed them, cached by text."""
        enc = self.encoder_for(shared)
        keys = [(enc.name, enc.backend, t) for t in texts]
        out = np.empty((len(texts), enc.dim), dtype=np.float32)
        todo: list[int] = []
        with self._cache_lock:
            for i, key in enumerate(keys):
                hit = self._cache.get(key)
                if hit is None:
                    todo.append(i)
                else:
                    self._cache.move_to_end(key)
                    out[i] = hit
        if todo:
            unique = list(dict.fromkeys(texts[i] for i in todo))
            vectors = dict(zip(unique, enc.encode(unique)))
            with self._cache_lock:
                for text, vec in vectors.items():
                    self._cache[(enc.name, enc.backend, text)] = vec
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            for i in todo:
                out[i] = vectors[texts[i]]
        return out

    def loaded(self) -> list[dict[str, Any]]:
        """What is loaded (for the readiness answer)."""
        with self._lock:
            return [{"model": n, "backend": b} for n, b in self._encoders]
