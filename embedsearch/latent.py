"""Latent-space query layer (issue 3): filled in by the latent-layer work.

``LatentMixin`` adds methods to :class:`embedsearch.Collection`; it may use only the
collection's public API (search, batch_search, vectors, ids, get, embed, upsert,
as_unit_vector, encoder).
"""

from __future__ import annotations


class LatentMixin:
    """Vector arithmetic, analogies, interpolation, clustering, outliers and maps."""
