"""Library messages in the words of the command line.

Errors raised by the library name Python arguments (``missing_ok=True``, ``upsert()``); a
user at the shell needs the flag that exists. :func:`reword` rewrites those phrases at the
surface, so the library keeps one message and each surface speaks its own language (the
HTTP twin is :data:`embedsearch.server.errors.HTTP_WORDS`).
"""

from __future__ import annotations

import re

#: (library phrase, CLI phrase) pairs, applied in order; a phrase is a regular expression.
CLI_WORDS: tuple[tuple[str, str], ...] = (
    (
        r"use upsert\(\) to replace it or delete\(\) it first",
        "pass --upsert to replace it, or `embedsearch delete` it first",
    ),
    (r"[Pp]ass missing_ok=True", "Pass --missing-ok"),
    (r"pass truncate=True to embed only its beginning", "shorten it"),
    (r"use mode='bm25'", "use --mode bm25"),
    (r"upsert=True \(--upsert\)", "--upsert"),
    (r"resume=False", "--restart"),
    (r"pass overwrite=True", "pass --overwrite"),
    (r"col\.add_documents\(\)", "`embedsearch ingest` (it chunks long files)"),
    (
        r"Create it with embedsearch\.open\((['\"])([^'\"]*)\1\) \(create=True\) or "
        r"`embedsearch index`",
        r"Create it with `embedsearch index \2 FILES...`, list collections with "
        "`embedsearch list`",
    ),
    (r"\bmodel=None\b", "no --model"),
    (r"\bmax_tokens\b", "--max-tokens"),
    (r"\boverlap=", "--overlap "),
)


def reword(message: str, words: tuple[tuple[str, str], ...] = CLI_WORDS) -> str:
    """``message`` with library phrases replaced by the surface's own."""
    for pattern, replacement in words:
        message = re.sub(pattern, replacement, message)
    return message
