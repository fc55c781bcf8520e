"""``POST /v1/embeddings`` and ``GET /v1/models`` in the shape of the OpenAI API.

Tools that speak the OpenAI embeddings API (OpenAI SDKs, LangChain's ``OpenAIEmbeddings``,
LlamaIndex, …) can use the server's encoder unchanged: point their base URL at
``http://host:port/v1`` and name an allowed model. Both ``encoding_format`` values work
(the OpenAI Python SDK asks for ``base64`` by default). Token-id arrays are refused: they
would be ids of OpenAI's tokenizer, which means nothing to ours (LangChain: pass
``check_embedding_ctx_length=False``).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import APIRouter

from ..encoder import get_encoder
from ..errors import InvalidInputError
from .deps import ERRORS, State
from .limits import check_text_content, over_window
from .schemas import EmbeddingsRequest, EmbeddingsResponse, ModelList

router = APIRouter(prefix="/v1", tags=["embeddings"], responses=ERRORS)


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not value:
        raise InvalidInputError("input is empty; send a text or a non-empty list of texts.")
    if all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidInputError(
        "input holds token ids; this server embeds text only (ids of another tokenizer would "
        "be meaningless). Send strings (LangChain: check_embedding_ctx_length=False)."
    )


@router.post("/embeddings", response_model=EmbeddingsResponse, summary="Embed texts (OpenAI)")
def create_embeddings(body: EmbeddingsRequest, state: State) -> dict[str, Any]:
    """Unit-length embeddings of ``input`` (a text or a list of texts)."""
    texts = _texts(body.input)
    state.limits.check_texts(texts, "input")
    for i, t in enumerate(texts):
        check_text_content(t, f"input[{i}]")
    model = state.registry.check_model(body.model)
    enc = get_encoder(model)
    if body.dimensions is not None and body.dimensions != enc.dim:
        raise InvalidInputError(
            f"dimensions={body.dimensions}, but {model!r} makes {enc.dim}-d vectors and cannot "
            "shorten them; omit `dimensions` or send it equal to the model's dimension."
        )
    truncated, used = over_window(enc, texts, truncate=body.truncate, what="input")
    vectors = enc.encode(texts)
    data = []
    for i, vec in enumerate(vectors):
        if body.encoding_format == "base64":
            emb: Any = base64.b64encode(np.ascontiguousarray(vec, "<f4").tobytes()).decode()
        else:
            emb = vec.tolist()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = int(sum(used))
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "truncated": truncated,
    }


@router.get("/models", response_model=ModelList, summary="Models (OpenAI)")
def list_models(state: State) -> dict[str, Any]:
    """The models this server embeds with and creates collections with."""
    from ..encoder import model_dim

    return {
        "object": "list",
        "data": [{"id": m, "dim": model_dim(m)} for m in state.registry.models],
    }
