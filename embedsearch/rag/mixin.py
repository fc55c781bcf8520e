"""``RetrievalMixin``: RAG methods on :class:`embedsearch.Collection` (issue 5)."""

from __future__ import annotations


class RetrievalMixin:
    """add_documents / retrieve; uses only the collection's public API."""
