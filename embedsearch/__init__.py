"""embedsearch: text-embedding semantic search over persistent collections.

Quick start:
    >>> import embedsearch
    >>> col = embedsearch.open("notes")
    >>> col.add(["The cat sat on the mat.", "Stocks fell sharply today."])
    >>> col.search("a kitten", k=1)[0].text
    'The cat sat on the mat.'
"""

from __future__ import annotations

from .collection import Collection, open
from .encoder import Encoder, get_encoder
from .errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    CommitUncertainError,
    CorruptionError,
    DocumentNotFoundError,
    DuplicateIdError,
    EmbedSearchError,
    EncoderError,
    FilterError,
    IndexSpecError,
    InvalidInputError,
    LockedError,
    ModelMismatchError,
    NotACollectionError,
)
from .interpolate import lerp, slerp
from .types import Document, Hit
from .vocabulary import Vocabulary
from .word_eval import evaluate_word_analogies, evaluate_word_pairs

__version__ = "0.1.0"

__all__ = [
    "Collection",
    "CollectionExistsError",
    "CollectionNotFoundError",
    "CommitUncertainError",
    "CorruptionError",
    "Document",
    "DocumentNotFoundError",
    "DuplicateIdError",
    "EmbedSearchError",
    "Encoder",
    "EncoderError",
    "FilterError",
    "Hit",
    "IndexSpecError",
    "InvalidInputError",
    "LockedError",
    "ModelMismatchError",
    "NotACollectionError",
    "get_encoder",
    "open",
    "Vocabulary",
    "evaluate_word_analogies",
    "evaluate_word_pairs",
    "lerp",
    "slerp",
]
