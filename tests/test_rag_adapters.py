"""LangChain and LlamaIndex retrievers, tested against the real framework base classes."""

from __future__ import annotations

import pytest

import embedsearch

TEXTS = {
    "solar": "Solar panels turn sunlight into electricity with photovoltaic cells.",
    "wind": "Wind turbines convert the wind's kinetic energy into electric power.",
    "bread": "Sourdough bread rises thanks to wild yeast and lactic acid bacteria.",
}


@pytest.fixture
def col(home, encoder):
    c = embedsearch.open("adapters")
    c.add_documents([{"text": t, "source": s} for s, t in TEXTS.items()])
    yield c
    c.close()


def test_langchain_retriever(col):
    pytest.importorskip("langchain_core", reason="langchain-core is not installed (extra rag)")
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    from embedsearch.rag.adapters import langchain_retriever

    r = langchain_retriever(col, k=2, mode="hybrid")
    assert isinstance(r, BaseRetriever)
    docs = r.invoke("how do photovoltaic panels make power")
    assert len(docs) == 2 and all(isinstance(d, Document) for d in docs)
    assert docs[0].metadata["source"] == "solar" and docs[0].page_content == TEXTS["solar"]
    assert docs[0].id == "solar#0" and docs[0].metadata["char_start"] == 0
    assert set(docs[0].metadata["scores"]) == {"dense", "bm25", "fused"}
    batch = r.batch(["bread yeast", "wind energy"])
    assert [b[0].metadata["source"] for b in batch] == ["bread", "wind"]
    with pytest.raises(embedsearch.EmbedSearchError, match="unknown retrieve settings"):
        langchain_retriever(col, top_k=3)


def test_llamaindex_retriever(col):
    pytest.importorskip("llama_index.core", reason="llama-index-core is not installed (extra rag)")
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import MetadataMode, NodeWithScore

    from embedsearch.rag.adapters import llamaindex_retriever

    r = llamaindex_retriever(col, k=1, mode="bm25")
    assert isinstance(r, BaseRetriever)
    [hit] = r.retrieve("sourdough yeast")
    assert isinstance(hit, NodeWithScore)
    assert hit.node.node_id == "bread#0" and hit.node.get_content() == TEXTS["bread"]
    assert hit.node.start_char_idx == 0 and hit.node.end_char_idx == len(TEXTS["bread"])
    assert hit.score == pytest.approx(hit.node.metadata["scores"]["bm25"])
    llm_view = hit.node.get_content(metadata_mode=MetadataMode.LLM)
    assert "source: bread" in llm_view and "content_hash" not in llm_view
