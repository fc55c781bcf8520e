"""Retrieval for RAG (issue 5): chunking, hybrid BM25 + dense, fusion, MMR, reranking."""
