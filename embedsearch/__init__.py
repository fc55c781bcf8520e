"""embedsearch: text-embedding semantic search over persistent collections.

Quick start:
    >>> import embedsearch
    >>> col = embedsearch.open("notes")
    >>> col.add(["The cat sat on the mat.", "Stocks fell sharply today."])
    >>> col.search("a kitten", k=1)[0].text
    'The cat sat on the mat.'
"""

from __future__ import annotations

import os as _os

# OpenMP threads (FAISS's and torch's) sleep instead of spinning while they wait for work.
# Read once, when the OpenMP runtime loads, so it is set before faiss or torch is imported.
# On a busy machine (more runnable threads than cores) spinning threads steal the cores the
# working ones need: one IVF query at 100k rows took 75 ms p50 spinning vs 1.3 ms passive,
# with load 17 on 2 cores (benchmarks/scale.py). Not yet measured on a quiet machine.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._version import __version__ as __version__
from .catalog import CollectionSummary, drop, list_collections
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
    ExpressionError,
    FilterError,
    IndexSpecError,
    InvalidInputError,
    LimitExceededError,
    LoadError,
    LockedError,
    ModelMismatchError,
    NotACollectionError,
    NotReadyError,
    NotSupportedError,
    ReadOnlyError,
    ShardedUnavailableError,
    SnapshotError,
    TextTooLongError,
    UnauthorizedError,
    UnknownWordsError,
    UnsafeFileError,
)
from .latent import Clustering, InterpolationStep, MapResult, Topics, lerp, slerp
from .latent.clustering import Cluster
from .rag.documents import IngestReport
from .rag.passage import Passage
from .snapshot import SnapshotInfo, restore_snapshot
from .types import Document, Hit
from .versions import VersionInfo
from .vocabulary import Vocabulary
from .word_eval import evaluate_word_analogies, evaluate_word_pairs

__all__ = [
    "Cluster",
    "Clustering",
    "Collection",
    "CollectionSummary",
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
    "ExpressionError",
    "FilterError",
    "Hit",
    "IndexSpecError",
    "IngestReport",
    "InterpolationStep",
    "InvalidInputError",
    "LoadError",
    "LockedError",
    "MapResult",
    "ModelMismatchError",
    "NotACollectionError",
    "Passage",
    "ReadOnlyError",
    "SnapshotError",
    "SnapshotInfo",
    "VersionInfo",
    "restore_snapshot",
    "UnknownWordsError",
    "drop",
    "UnsafeFileError",
    "get_encoder",
    "list_collections",
    "open",
    "Vocabulary",
    "evaluate_word_analogies",
    "evaluate_word_pairs",
    "lerp",
    "slerp",
    "LimitExceededError",
    "NotReadyError",
    "NotSupportedError",
    "ShardedUnavailableError",
    "TextTooLongError",
    "UnauthorizedError",
    "Topics",
]
