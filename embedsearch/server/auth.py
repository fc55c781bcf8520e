"""Bearer-key authentication for every route but the health checks.

Keys come from ``EMBEDSEARCH_API_KEY`` (one key) and/or a keys file (one key per line,
blank lines and ``#`` comments ignored; ``EMBEDSEARCH_API_KEY_FILE`` or ``--api-key-file``).
With no key configured, auth is off. A presented key is compared with every configured key
in constant time (:func:`hmac.compare_digest`, no early exit), so response timing does not
reveal how much of a key was right, nor which key matched.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import InvalidInputError, UnauthorizedError

log = logging.getLogger("embedsearch.server")

ENV_KEY = "EMBEDSEARCH_API_KEY"
ENV_KEY_FILE = "EMBEDSEARCH_API_KEY_FILE"
MIN_KEY_LENGTH = 16

_bearer = HTTPBearer(auto_error=False, description="An API key from the server's key list.")


def read_key_file(path: str | os.PathLike[str]) -> list[str]:
    """Keys from a file: one per line; blank lines and lines starting with ``#`` are skipped.

    Raises:
        InvalidInputError: the file cannot be read or holds no key (an empty key file would
            otherwise silently turn auth off).
    """
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
        mode = p.stat().st_mode
    except OSError as exc:
        raise InvalidInputError(f"cannot read API key file {p}: {exc.strerror}.") from exc
    keys = [line.strip() for line in text.splitlines()]
    keys = [k for k in keys if k and not k.startswith("#")]
    if not keys:
        raise InvalidInputError(f"API key file {p} holds no key; put one key per line.")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("API key file %s is readable by other users; chmod 600 it", p)
    return keys


def keys_from_env(key_file: str | os.PathLike[str] | None = None) -> list[str]:
    """Keys from ``EMBEDSEARCH_API_KEY``, plus the keys file (argument or environment)."""
    keys: list[str] = []
    env_key = os.environ.get(ENV_KEY, "").strip()
    if env_key:
        keys.append(env_key)
    path = key_file or os.environ.get(ENV_KEY_FILE)
    if path:
        keys.extend(read_key_file(path))
    return keys


class KeyChecker:
    """The set of accepted keys, checked in constant time."""

    def __init__(self, keys: Iterable[str]) -> None:
        cleaned = [k.strip() for k in keys if k and k.strip()]
        for k in cleaned:
            if len(k) < MIN_KEY_LENGTH:
                log.warning("an API key is shorter than %d characters; use a long random key", 16)
            if any(c.isspace() for c in k):
                raise InvalidInputError("API keys must not contain whitespace.")
        self._keys = [k.encode("utf-8") for k in dict.fromkeys(cleaned)]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    @contextlib.contextmanager
    def temporary(self, key: str) -> Iterator[None]:
        """Accept ``key`` for the duration of a ``with`` block (the server's own warm-up
        request); a disabled checker stays disabled."""
        if not self._keys:
            yield
            return
        raw = key.encode("utf-8")
        self._keys = [*self._keys, raw]  # swapped, never mutated: readers see one list or the other
        try:
            yield
        finally:
            self._keys = [k for k in self._keys if k != raw]

    def accepts(self, presented: str) -> bool:
        """Whether ``presented`` equals one of the keys; every key is compared, always."""
        given = presented.encode("utf-8", errors="surrogateescape")
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(given, key)
        return ok


async def require_key(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """FastAPI dependency: 401 unless auth is off or a valid Bearer key is presented."""
    checker: KeyChecker = request.app.state.keys
    if not checker.enabled:
        return
    if creds is None or not checker.accepts(creds.credentials):
        raise UnauthorizedError(
            "Missing or invalid API key: send `Authorization: Bearer <key>` with a key from "
            "the server's key list."
        )
