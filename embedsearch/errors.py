"""One exception family for everything embedsearch raises on purpose.

Every message says what was wrong *and* what to do about it. The HTTP layer maps
these classes to 4xx answers; anything else escaping is a real fault (5xx).
"""

from __future__ import annotations

from collections.abc import Sequence


class EmbedSearchError(Exception):
    """Base class of every error embedsearch raises deliberately."""

    http_status = 400


class InvalidInputError(EmbedSearchError, ValueError):
    """A caller passed texts, ids, metadata, vectors or parameters we cannot accept."""

    http_status = 422


class FilterError(InvalidInputError):
    """A ``where`` filter is malformed (unknown operator, wrong operand type)."""


class DuplicateIdError(InvalidInputError):
    """An id is given twice in one call, or ``add`` names an id that already exists."""

    http_status = 409


class DocumentNotFoundError(EmbedSearchError, KeyError):
    """One or more ids are not in the collection."""

    http_status = 404

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class CollectionNotFoundError(EmbedSearchError):
    """The named collection does not exist (and ``create=False`` was asked)."""

    http_status = 404


class CollectionExistsError(EmbedSearchError):
    """A collection was to be created where one already exists."""

    http_status = 409


class NotACollectionError(EmbedSearchError):
    """A directory exists but holds something other than an embedsearch collection."""

    http_status = 409


class ModelMismatchError(EmbedSearchError):
    """The collection was built with another model than the one asked for."""

    http_status = 409


class CorruptionError(EmbedSearchError):
    """A file of the collection fails its checksum or cannot be parsed."""

    http_status = 500


class UnsafeFileError(CorruptionError):
    """A path inside a collection is a symbolic link, a device, a FIFO or otherwise not the
    plain file or directory embedsearch wrote there; it is refused, never followed."""

    http_status = 409


class CommitUncertainError(EmbedSearchError):
    """A commit reached the disk but could not be made durable (an I/O error after the
    manifest was renamed into place): the write may or may not survive a crash."""

    http_status = 500


class LockedError(EmbedSearchError):
    """Another writer (process or handle) holds the collection's write lock."""

    http_status = 423


class EncoderError(EmbedSearchError):
    """The encoder model cannot be found, loaded or run."""

    http_status = 500


class IndexSpecError(InvalidInputError):
    """An index spec (``auto`` or a FAISS factory string) is not usable."""


class ReadOnlyError(EmbedSearchError):
    """A write was attempted on a collection opened read-only."""

    http_status = 409


class SnapshotError(InvalidInputError):
    """A snapshot archive is damaged, hostile or not an embedsearch snapshot; nothing was
    restored."""


class ExpressionError(InvalidInputError):
    """An expression does not parse; ``position`` is the 0-based offset of the problem."""

    def __init__(self, message: str, expression: str, position: int) -> None:
        self.expression = expression
        self.position = position
        self.reason = message
        shown = expression.replace("\n", " ").replace("\t", " ")
        super().__init__(f"{message} (at position {position}):\n  {shown}\n  {' ' * position}^")


class UnknownWordsError(InvalidInputError):
    """Words a vocabulary does not hold; ``words`` lists them."""

    def __init__(self, missing: Sequence[str], name: str, size: int) -> None:
        self.words = list(dict.fromkeys(missing))
        shown = ", ".join(repr(w) for w in self.words[:10])
        more = f" and {len(self.words) - 10} more" if len(self.words) > 10 else ""
        super().__init__(
            f"not in vocabulary {name!r} ({size:,} words): {shown}{more}. Check the spelling, "
            "add them with Vocabulary.add([...]) (CLI: `embedsearch vocab add`), or write a "
            "multi-word phrase, which is embedded as text."
        )


class LoadError(EmbedSearchError):
    """A file could not be turned into text (the message says why and what to do)."""

    http_status = 422


# ----------------------------------------------------------------------------- HTTP surface
class LimitExceededError(EmbedSearchError):
    """A request is larger than this server accepts (body bytes, texts, characters)."""

    http_status = 413


class TextTooLongError(InvalidInputError):
    """A text exceeds the model window and the caller asked for ``truncate=false``."""


class UnauthorizedError(EmbedSearchError):
    """No or a wrong ``Authorization: Bearer`` key."""

    http_status = 401


class NotReadyError(EmbedSearchError):
    """The server is still loading its model."""

    http_status = 503


class NotSupportedError(EmbedSearchError, AttributeError):
    """The operation exists for ordinary collections but not for a sharded one.

    It is also an ``AttributeError``, so ``hasattr(col, "expr")`` stays ``False`` on a
    sharded collection instead of raising.
    """

    http_status = 400


class ShardedUnavailableError(EmbedSearchError):
    """A sharded collection cannot be served: Ray is missing or cannot start/join."""

    http_status = 503
