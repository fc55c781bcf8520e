"""Library messages in the words of each surface: the CLI's flags, HTTP's request fields.

Errors raised by the library name Python arguments (``missing_ok=True``, ``upsert()``); a
user at the shell needs the flag that exists, an HTTP client the field to send. Each
surface passes its messages through :func:`reword` with its table (:data:`CLI_WORDS`,
:data:`HTTP_WORDS`), so the library keeps one message and every surface speaks its own
language. A phrase missing from a table is shown as the library wrote it.
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
    (r"pass encoding= \(e\.g\. 'latin-1'\)", "pass --encoding (e.g. latin-1)"),
    (r"\bmodel=None\b", "no --model"),
    (r"\bmax_tokens\b", "--max-tokens"),
    (r"\bmin_deleted_share\b", "--min-deleted-share"),
    (r"\boverlap=", "--overlap "),
    (
        r"neighbors applies to method='neighbors' only; drop it or use that method",
        "--neighbors applies to --method neighbors only; drop it or pass --method neighbors",
    ),
)


#: (library phrase, HTTP phrase) pairs for the JSON error bodies of the server.
HTTP_WORDS: tuple[tuple[str, str], ...] = (
    (
        r"use upsert\(\) to replace it or delete\(\) it first",
        "send it with PUT /collections/{name}/documents (upsert) to replace it, or delete it first",
    ),
    (r"[Pp]ass missing_ok=True", 'Send "missing_ok": true'),
    (r"pass truncate=True", 'send "truncate": true'),
    (r"use mode='bm25'", 'send "mode": "bm25"'),
    (r"pass overwrite=True", 'send "overwrite": true'),
    (r"\bmodel=None\b", 'no "model"'),
    (r"\bmax_tokens=", '"max_tokens": '),
    (
        r"neighbors applies to method='neighbors' only; drop it or use that method",
        '"neighbors" applies to "method": "neighbors" only; drop it or send that method',
    ),
)


def reword(message: str, words: tuple[tuple[str, str], ...] = CLI_WORDS) -> str:
    """``message`` with library phrases replaced by the surface's own."""
    for pattern, replacement in words:
        message = re.sub(pattern, replacement, message)
    return message
