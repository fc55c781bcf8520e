"""The model's own tokenizer, read from its ``tokenizer.json`` with the ``tokenizers`` library.

Chunking, window checks ("this text is longer than the model reads") and token counts need
the encoder's tokens, but not the encoder: loading sentence-transformers for them imports
torch (4-5 s on a cold CLI call). The fast tokenizer file that every recent model folder
ships is what the Hugging Face "fast" tokenizer runs anyway, so the ids and offsets are the
same; only the file's *fixed* padding and truncation (128 tokens for all-MiniLM-L6-v2) are
switched off, because sentence-transformers pads per batch and truncates at the model's
``max_seq_length`` (FINDINGS.md: using the file's defaults silently changes embeddings).

:class:`ModelTokenizer` answers the small part of the Hugging Face tokenizer interface that
embedsearch uses (``tok(text, ...)["input_ids"]``, ``offset_mapping``, ``word_ids()``,
``num_special_tokens_to_add``, ``get_vocab``), so callers do not care which one they hold.

Example:
    >>> tok = load_tokenizer(model_dir)
    >>> tok.count(["a cat"])  # [CLS] a cat [SEP]
    [4]
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import EncoderError


class Encoded(dict):  # type: ignore[type-arg]
    """``input_ids`` (and ``offset_mapping``) of one text or a batch, HF-style."""

    def __init__(self, encodings: list[Any], single: bool, offsets: bool) -> None:
        ids = [e.ids for e in encodings]
        super().__init__(input_ids=ids[0] if single else ids)
        if offsets:
            offs = [e.offsets for e in encodings]
            self["offset_mapping"] = offs[0] if single else offs
        self._encodings = encodings

    def word_ids(self, index: int = 0) -> list[int | None]:
        """The word each token belongs to (None for special tokens), as in transformers."""
        return list(self._encodings[index].word_ids)


class ModelTokenizer:
    """A model's fast tokenizer without torch: no fixed padding, no truncation.

    Args:
        path: the model's ``tokenizer.json``.
        max_seq_length: the model window in tokens (special tokens included); texts are
            never truncated here, callers compare counts with it.
    """

    def __init__(self, path: str | Path, max_seq_length: int) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - tokenizers is a core dependency
            raise EncoderError("token counts need the `tokenizers` package.") from exc
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exception on a bad file
            raise EncoderError(f"cannot read the tokenizer file {path}: {exc}") from exc
        self._tok.no_padding()
        self._tok.no_truncation()
        self._lock = threading.Lock()  # the Rust tokenizer is fine, the config calls are not
        self.path = Path(path)
        self.max_seq_length = int(max_seq_length)

    @property
    def raw(self) -> Any:
        """The underlying ``tokenizers.Tokenizer`` (no padding, no truncation): do not
        reconfigure it, it is shared."""
        return self._tok

    def __call__(
        self,
        text: str | Sequence[str],
        *,
        add_special_tokens: bool = True,
        return_offsets_mapping: bool = False,
        **_ignored: Any,
    ) -> Encoded:
        """Tokenise one text or a list (never truncated, never padded)."""
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        encodings = self._tok.encode_batch(texts, add_special_tokens=add_special_tokens)
        return Encoded(encodings, single, return_offsets_mapping)

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text uses, special tokens included (compare with the window)."""
        if not texts:
            return []
        return [len(e.ids) for e in self._tok.encode_batch(list(texts))]

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """Special tokens the model adds around one text ([CLS] and [SEP]: 2)."""
        return int(self._tok.num_special_tokens_to_add(pair))

    def get_vocab(self) -> dict[str, int]:
        """Token → id, the whole vocabulary."""
        return dict(self._tok.get_vocab(with_added_tokens=True))


_CACHE: dict[tuple[str, int], ModelTokenizer] = {}
_CACHE_LOCK = threading.Lock()


def load_tokenizer(model_dir: str | Path, max_seq_length: int | None = None) -> ModelTokenizer:
    """The tokenizer of a sentence-transformers model folder (cached per folder).

    Raises:
        EncoderError: the folder has no ``tokenizer.json`` (an old slow-tokenizer model).
    """
    from .onnx_backend import read_model_spec

    spec = read_model_spec(model_dir)
    window = int(max_seq_length or spec.max_seq_length)
    key = (str(spec.transformer_dir), window)
    with _CACHE_LOCK:
        tok = _CACHE.get(key)
        if tok is None:
            path = spec.transformer_dir / "tokenizer.json"
            if not path.is_file():
                raise EncoderError(f"{path} is missing (the model has no fast tokenizer file).")
            tok = _CACHE[key] = ModelTokenizer(path, window)
        return tok
