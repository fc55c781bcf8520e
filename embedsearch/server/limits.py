"""Request limits: body size, texts per request, characters per text, tokens, ``k``.

The rule for status codes: a request *larger* than the server accepts (body bytes, number of
texts, characters in a text) is 413; a request whose *values* are out of range (``k`` above
the maximum, a text longer than the model window with ``truncate=false``) is 422.

Texts longer than the model window are embedded from their first ``max_seq_length`` tokens
(what sentence-transformers does); the answer lists which inputs were truncated so a caller
never loses words silently. The stored text is always kept whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InvalidInputError, LimitExceededError, TextTooLongError
from ..validation import check_encodable

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; every field is a server option.

    Attributes:
        max_body_bytes: request body size (413 above it), checked before the body is read
            when ``Content-Length`` is sent, and while streaming otherwise.
        max_texts: texts, queries or ids in one request (413 above it).
        max_text_chars: characters in one text or query (413 above it). Tokens past the model
            window are truncated (reported) or refused, see ``truncate`` on each route.
        max_k: the largest ``k`` (and ``n``) a request may ask for (422 above it).
        max_snapshot_bytes: body size of a snapshot upload (``POST
            /collections/{name}/snapshot/restore``), streamed to disk, never held in memory.
    """

    max_body_bytes: int = 32 * MiB
    max_texts: int = 2048
    max_text_chars: int = 100_000
    max_k: int = 1000
    max_snapshot_bytes: int = 64 * 1024 * MiB

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"limit {name} must be a positive integer, got {value!r}.")

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> Limits:
        """Build from a dict (unknown keys are an error, so a typo in a config is caught)."""
        values = dict(values or {})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidInputError(
                f"unknown limit(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}."
            )
        return cls(**values)

    def check_k(self, k: int, what: str = "k") -> int:
        """422 when ``k`` is above :attr:`max_k` (the lower bound is in the schema)."""
        if k > self.max_k:
            raise InvalidInputError(
                f"{what}={k} is above this server's maximum of {self.max_k}; ask for fewer "
                "results or page with `exclude`."
            )
        return k

    def check_count(self, n: int, what: str = "texts") -> None:
        """413 when a request carries more than :attr:`max_texts` items."""
        if n > self.max_texts:
            raise LimitExceededError(
                f"{n} {what} in one request; this server accepts at most {self.max_texts}. "
                "Split the request into batches."
            )

    def check_texts(self, texts: Sequence[Any], what: str = "texts") -> None:
        """413 when there are too many texts or one is too long in characters."""
        self.check_count(len(texts), what)
        for i, text in enumerate(texts):
            if isinstance(text, str) and len(text) > self.max_text_chars:
                raise LimitExceededError(
                    f"{what}[{i}] has {len(text)} characters; this server accepts at most "
                    f"{self.max_text_chars} per text. Split it into passages first."
                )


def check_text_content(text: str, where: str) -> str:
    """Non-empty, no NUL: what the core asks of every text (checked here for raw encodes)."""
    if not text.strip():
        raise InvalidInputError(f"{where} is empty or whitespace; remove it or give it content.")
    if "\x00" in text:
        raise InvalidInputError(f"{where} contains a NUL character; strip it first.")
    check_encodable(text, where)  # a lone surrogate cannot be tokenised (was a 500)
    return text


def token_counts(encoder: Any, texts: Sequence[str]) -> list[int]:
    """Tokens each text takes in ``encoder``'s own tokenizer, special tokens included."""
    return encoder.token_counts(texts)


def over_window(
    encoder: Any, texts: Sequence[str], *, truncate: bool, what: str = "texts"
) -> tuple[list[int], list[int]]:
    """Which texts exceed the model window, and the tokens each one is embedded from.

    Returns:
        ``(truncated_indices, tokens_used)``.

    Raises:
        TextTooLongError: a text is over the window and ``truncate`` is false (422).
    """
    window = int(encoder.max_seq_length)
    counts = token_counts(encoder, texts)
    over = [i for i, n in enumerate(counts) if n > window]
    if over and not truncate:
        i = over[0]
        raise TextTooLongError(
            f"{what}[{i}] has {counts[i]} tokens; the model {encoder.name!r} reads at most "
            f"{window}. Send truncate=true to embed its first {window} tokens, or split it "
            f"({len(over)} text(s) are over the window)."
        )
    return over, [min(n, window) for n in counts]


#: Routes whose body is a snapshot archive, streamed to disk: ``max_snapshot_bytes`` applies.
SNAPSHOT_UPLOAD_SUFFIX = "/snapshot/restore"


class BodySizeLimitMiddleware:
    """Answer 413 to request bodies above ``max_bytes`` without reading them whole.

    A declared ``Content-Length`` above the limit is refused before any byte is read; a
    chunked body is counted as it streams and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, upload_max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_max_bytes = upload_max_bytes or max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope.get("path", "").endswith(SNAPSHOT_UPLOAD_SUFFIX)  # streamed to a file
        limit = self.upload_max_bytes if upload else self.max_bytes
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    await self._refuse(send, declared)
                    return
        seen = 0
        too_big = False
        refused = False

        async def limited_receive() -> Message:
            nonlocal seen, too_big
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_big = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the app answers once the body was cut off (FastAPI turns the
            # exception into a 400), the client gets the 413 that explains it.
            nonlocal refused
            if too_big:
                if not refused:
                    refused = True
                    await self._refuse(send, seen)
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_big:
                raise
            if not refused:
                refused = True
                await self._refuse(send, seen)

    async def _refuse(self, send: Send, size: int) -> None:
        import json

        body = json.dumps(
            {
                "error": {
                    "type": "PayloadTooLarge",
                    "message": (
                        f"The request body ({size} bytes or more) is larger than this server "
                        f"accepts ({self.max_bytes} bytes). Send fewer or shorter texts per "
                        "request."
                    ),
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    """Raised inside the app's receive() when a streamed body passes the limit."""
