"""Cut documents into passages that fit the encoder, measured in the encoder's own tokens.

Three chunkers, all returning :class:`Chunk` (text, char offsets, heading path, tokens):

* :class:`TokenChunker` — fixed windows of ``max_tokens`` tokens, consecutive windows sharing
  ``overlap`` tokens; window edges are moved to word boundaries so no word is cut (unless one
  word alone is longer than a window).
* :class:`SentenceChunker` — packs whole sentences (and list items, table rows) greedily up
  to ``max_tokens``; a new chunk repeats the previous chunk's last sentences while they fit in
  ``overlap`` tokens. A sentence longer than a chunk is cut with token windows.
* :class:`MarkdownChunker` — splits at headings first (Markdown ATX/setext headings outside
  code fences; HTML ``h1``–``h6`` from the loader), then packs each section by sentences.
  A chunk never spans two sections, and carries its section's heading path. A heading with no
  text of its own before a sub-heading joins the sub-section's first chunk.

Token counts come from one tokenizer pass over the document with an offsets mapping, and
every chunk is re-tokenised before it is returned: a chunk is never longer than
``max_seq_length`` including the model's special tokens, so nothing is silently truncated
at embedding time. ``text == source_text[char_start:char_end]`` holds for every chunk.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError
from .loaders import Heading, SourceDoc

DEFAULT_OVERLAP = 32
CHUNKERS = ("auto", "token", "sentence", "markdown")


@dataclass(frozen=True)
class Chunk:
    """One passage cut from a document.

    Attributes:
        index: position of the chunk in its document (0-based).
        text: ``source_text[char_start:char_end]``.
        char_start / char_end: character offsets into the source text.
        heading_path: enclosing headings, outermost first (empty when none are known).
        tokens: the encoder's tokens in ``text`` (special tokens not counted).
    """

    index: int
    text: str
    char_start: int
    char_end: int
    heading_path: tuple[str, ...]
    tokens: int


# ----------------------------------------------------------------------------- tokens
class TokenMap:
    """Token offsets of one text: count tokens in character ranges, find word starts."""

    def __init__(self, tokenizer: Any, text: str) -> None:
        enc = tokenizer(
            text,
            add_special_tokens=False,
            return_offsets_mapping=True,
            truncation=False,
            verbose=False,
        )
        offsets = enc["offset_mapping"]
        words = enc.word_ids()
        self.starts = [int(s) for s, _ in offsets]
        self.ends = [int(e) for _, e in offsets]
        self.word_start = [i == 0 or words[i] != words[i - 1] for i in range(len(words))]

    def span(self, a: int, b: int) -> tuple[int, int]:
        """Token index range [lo, hi) of the tokens lying inside characters [a, b)."""
        lo = bisect.bisect_left(self.starts, a)
        hi = bisect.bisect_right(self.ends, b, lo=lo)
        return lo, max(lo, hi)

    def count(self, a: int, b: int) -> int:
        lo, hi = self.span(a, b)
        return hi - lo


def _trim(text: str, a: int, b: int) -> tuple[int, int]:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def token_windows(
    tm: TokenMap, a: int, b: int, size: int, overlap: int
) -> list[tuple[int, int, int]]:
    """Character ranges of ``size``-token windows over [a, b) sharing ``overlap`` tokens.

    Edges are snapped to word starts (a word is never cut unless it alone exceeds ``size``).
    Returns (char_start, char_end, tokens) triples.
    """
    lo, hi = tm.span(a, b)
    out: list[tuple[int, int, int]] = []
    i = lo
    while i < hi:
        j = min(i + size, hi)
        if j < hi:
            jj = j
            while jj > i and not tm.word_start[jj]:
                jj -= 1
            if jj > i:
                j = jj
        out.append((tm.starts[i], tm.ends[j - 1], j - i))
        if j >= hi:
            break
        ni = max(j - overlap, i + 1)
        while ni < j and not tm.word_start[ni]:
            ni += 1
        i = ni
    return out


# ----------------------------------------------------------------------------- sentences
_ABBREV = set(
    [
        "e.g",
        "i.e",
        "dr",
        "mr",
        "mrs",
        "ms",
        "prof",
        "fig",
        "figs",
        "al",
        "vs",
        "etc",
        "no",
        "nos",
        "vol",
        "approx",
        "cf",
        "st",
        "jr",
        "sr",
        "inc",
        "ltd",
        "co",
        "eq",
        "eqs",
        "ref",
        "refs",
        "sec",
        "ch",
        "pp",
        "ed",
        "eds",
        "est",
        "dept",
        "univ",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "mt",
        "ft",
    ]
)
_SENT_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)")
_BLOCK_BREAK = re.compile(r"\n[ \t]*\n\s*|\n(?=[ \t]*(?:[-*+•][ \t]|\d{1,3}[.)][ \t]|\||#|>|```))")


def sentence_spans(text: str, a: int = 0, b: int | None = None) -> list[tuple[int, int]]:
    """Sentence-like spans of ``text[a:b]``: paragraphs, list items and table rows, split
    into sentences at ``. ! ?`` followed by space and a non-lowercase character (common
    abbreviations and initials excepted). Spans are whitespace-trimmed and in order."""
    b = len(text) if b is None else b
    blocks: list[tuple[int, int]] = []
    pos = a
    for m in _BLOCK_BREAK.finditer(text, a, b):
        blocks.append((pos, m.start()))
        pos = m.end()
    blocks.append((pos, b))
    spans: list[tuple[int, int]] = []
    for s, e in blocks:
        start = s
        for m in _SENT_END.finditer(text, s, e):
            end = m.end()
            nxt = end
            while nxt < e and text[nxt].isspace():
                nxt += 1
            if nxt >= e or text[nxt].islower():
                continue
            word = re.search(r"([\w.]+)[.!?…]*$", text[max(start, end - 12) : m.start() + 1])
            w = word.group(1).rstrip(".").lower() if word else ""
            if text[m.start()] == "." and (w in _ABBREV or (len(w) == 1 and w.isalpha())):
                continue
            spans.append((start, end))
            start = end
        spans.append((start, e))
    out = []
    for s, e in spans:
        s, e = _trim(text, s, e)
        if s < e:
            out.append((s, e))
    return out


# ----------------------------------------------------------------------------- markdown
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t#]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_NOT_SETEXT_TITLE = re.compile(r"^(?: {4}|\t| {0,3}(?:[-*+>|]|\d{1,9}[.)])(?:[ \t]|$))")


def markdown_headings(text: str) -> list[Heading]:
    """ATX (``## Title``) and setext (``Title`` / ``===``) headings outside code fences and
    outside a leading YAML front-matter block."""
    headings: list[Heading] = []
    lines = text.splitlines(keepends=True)
    offsets = []
    pos = 0
    for line in lines:
        offsets.append(pos)
        pos += len(line)
    i = 0
    if lines and lines[0].strip() == "---":  # front matter: skip to its closing line
        for j in range(1, len(lines)):
            if lines[j].strip() in ("---", "..."):
                i = j + 1
                break
    fence: str | None = None
    prev_text: int | None = None  # index of the previous paragraph line (setext candidate)
    while i < len(lines):
        line = lines[i].rstrip("\r\n")
        m = _FENCE.match(line)
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            i += 1
            continue
        if m:
            fence, prev_text = m.group(1), None
        elif (hm := _ATX.match(line)) is not None:
            title = (hm.group(2) or "").strip()
            if title:
                headings.append(Heading(offsets[i], len(hm.group(1)), title))
            prev_text = None
        elif (sm := _SETEXT.match(line)) is not None and prev_text is not None:
            level = 1 if sm.group(1)[0] == "=" else 2
            headings.append(Heading(offsets[prev_text], level, lines[prev_text].strip()))
            prev_text = None
        elif line.strip() and not _NOT_SETEXT_TITLE.match(line):
            prev_text = i  # a setext title is taken to be the single line above the underline
        else:
            prev_text = None
        i += 1
    return headings


def sections(
    text: str, headings: Sequence[Heading]
) -> list[tuple[int, int, tuple[str, ...], int | None]]:
    """(start, end, heading path, end of heading line or None) for each section of ``text``."""
    out: list[tuple[int, int, tuple[str, ...], int | None]] = []
    hs = sorted(headings, key=lambda h: h.start)
    first = hs[0].start if hs else len(text)
    if text[:first].strip():
        out.append((0, first, (), None))
    stack: list[tuple[int, str]] = []
    for n, h in enumerate(hs):
        end = hs[n + 1].start if n + 1 < len(hs) else len(text)
        while stack and stack[-1][0] >= h.level:
            stack.pop()
        stack.append((h.level, h.title))
        line_end = text.find("\n", h.start, end)
        line_end = end if line_end < 0 else line_end
        # setext heading: the underline belongs to the heading line too
        nxt = text.find("\n", line_end + 1, end) if line_end < end else -1
        if nxt > 0 and _SETEXT.match(text[line_end + 1 : nxt]):
            line_end = nxt
        elif nxt < 0 and line_end < end and _SETEXT.match(text[line_end + 1 : end]):
            line_end = end
        out.append((h.start, end, tuple(t for _, t in stack), line_end))
    return out


# ----------------------------------------------------------------------------- chunkers
class Chunker:
    """Base class: holds the tokenizer and the token budget; subclasses implement ``_cut``.

    Args:
        encoder: an :class:`embedsearch.Encoder` (or anything with ``tokenizer`` and
            ``max_seq_length``): chunks are measured in its tokens.
        max_tokens: tokens per chunk, special tokens excluded; default and maximum: the
            model window minus its special tokens (254 for all-MiniLM-L6-v2).
        overlap: tokens shared by consecutive chunks (token windows) or the most tokens of
            whole trailing sentences repeated (sentence packing).

    Raises:
        InvalidInputError: ``max_tokens`` beyond the model window, or a bad ``overlap``.
    """

    name = "base"

    def __init__(
        self, encoder: Any, max_tokens: int | None = None, overlap: int = DEFAULT_OVERLAP
    ) -> None:
        self.tokenizer = encoder.tokenizer
        self.max_seq_length = int(encoder.max_seq_length)
        specials = int(self.tokenizer.num_special_tokens_to_add(pair=False))
        self.limit = self.max_seq_length - specials
        if max_tokens is None:
            max_tokens = self.limit
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 8:
            raise InvalidInputError(f"max_tokens must be an integer >= 8, got {max_tokens!r}.")
        if max_tokens > self.limit:
            raise InvalidInputError(
                f"max_tokens={max_tokens} exceeds the model window: {self.max_seq_length} tokens "
                f"including {specials} special tokens leaves {self.limit}; text past it would be "
                f"silently truncated. Use max_tokens <= {self.limit}."
            )
        if isinstance(overlap, bool) or not isinstance(overlap, int) or not overlap >= 0:
            raise InvalidInputError(f"overlap must be an integer >= 0, got {overlap!r}.")
        if overlap >= max_tokens:
            raise InvalidInputError(
                f"overlap ({overlap}) must be smaller than max_tokens ({max_tokens})."
            )
        self.max_tokens = max_tokens
        self.overlap = overlap

    @property
    def signature(self) -> str:
        """Identifies the chunking (stored per chunk: a change re-chunks unchanged files)."""
        return f"{self.name}/{self.max_tokens}/{self.overlap}/v1"

    def split(self, doc: SourceDoc) -> list[Chunk]:
        """Chunks of a loaded document, indexed 0..n-1, each within the token budget."""
        tm = TokenMap(self.tokenizer, doc.text)
        raw = self._cut(doc, tm)
        out: list[Chunk] = []
        for a, b, path in raw:
            a, b = _trim(doc.text, a, b)
            for s, e in self._fit(doc.text, tm, a, b):
                out.append(Chunk(len(out), doc.text[s:e], s, e, path, tm.count(s, e)))
        return out

    def split_text(self, text: str, fmt: str = "text") -> list[Chunk]:
        """Chunks of a plain string (``fmt="markdown"`` for heading-aware splitting)."""
        return self.split(SourceDoc("<text>", text, fmt, ""))

    def _cut(self, doc: SourceDoc, tm: TokenMap) -> list[tuple[int, int, tuple[str, ...]]]:
        raise NotImplementedError

    def _fit(self, text: str, tm: TokenMap, a: int, b: int) -> list[tuple[int, int]]:
        """Guard: re-tokenise the chunk alone; split again if it exceeds the window."""
        if a >= b:
            return []
        n = len(self.tokenizer(text[a:b], add_special_tokens=False, verbose=False)["input_ids"])
        if n <= self.max_tokens:
            return [(a, b)]
        have = tm.count(a, b)
        size = max(1, min(have // 2, self.max_tokens - (n - have) - 1))
        windows = [(s, e) for s, e, _ in token_windows(tm, a, b, size, 0)]
        if len(windows) < 2:  # cannot split further at token boundaries: halve by characters
            mid = (a + b) // 2
            windows = [(a, mid), (mid, b)] if b - a > 1 else []
        out: list[tuple[int, int]] = []
        for s, e in windows:
            s, e = _trim(text, s, e)
            out.extend(self._fit(text, tm, s, e))
        return out

    # shared by the sentence and markdown chunkers
    def _pack(
        self, tm: TokenMap, spans: list[tuple[int, int]], path: tuple[str, ...]
    ) -> list[tuple[int, int, tuple[str, ...]]]:
        out: list[tuple[int, int, tuple[str, ...]]] = []
        cur: list[tuple[int, int, int]] = []
        total = 0
        for s, e in spans:
            n = tm.count(s, e)
            if n > self.max_tokens:
                if cur:
                    out.append((cur[0][0], cur[-1][1], path))
                for ws, we, _ in token_windows(tm, s, e, self.max_tokens, self.overlap):
                    out.append((ws, we, path))
                cur, total = [], 0
                continue
            if cur and total + n > self.max_tokens:
                out.append((cur[0][0], cur[-1][1], path))
                tail: list[tuple[int, int, int]] = []
                budget = min(self.overlap, self.max_tokens - n)
                for item in reversed(cur):
                    if sum(t for *_, t in tail) + item[2] > budget:
                        break
                    tail.insert(0, item)
                cur = tail if len(tail) < len(cur) else []
                total = sum(t for *_, t in cur)
            cur.append((s, e, n))
            total += n
        if cur:
            out.append((cur[0][0], cur[-1][1], path))
        return out


class TokenChunker(Chunker):
    """Fixed windows of ``max_tokens`` encoder tokens overlapping by ``overlap`` tokens."""

    name = "token"

    def _cut(self, doc: SourceDoc, tm: TokenMap) -> list[tuple[int, int, tuple[str, ...]]]:
        return [
            (s, e, ())
            for s, e, _ in token_windows(tm, 0, len(doc.text), self.max_tokens, self.overlap)
        ]


class SentenceChunker(Chunker):
    """Whole sentences packed up to ``max_tokens``; overlap repeats trailing sentences."""

    name = "sentence"

    def _cut(self, doc: SourceDoc, tm: TokenMap) -> list[tuple[int, int, tuple[str, ...]]]:
        return self._pack(tm, sentence_spans(doc.text), ())


class MarkdownChunker(Chunker):
    """Heading-aware: sections first (with heading paths), then sentence packing inside."""

    name = "markdown"

    def _cut(self, doc: SourceDoc, tm: TokenMap) -> list[tuple[int, int, tuple[str, ...]]]:
        text = doc.text
        heads = list(doc.headings) if doc.headings else markdown_headings(text)
        out: list[tuple[int, int, tuple[str, ...]]] = []
        carry: int | None = None  # start of a heading-only section joining the next one
        secs = sections(text, heads)
        for n, (s, e, path, line_end) in enumerate(secs):
            body_start = line_end if line_end is not None else s
            spans = sentence_spans(text, body_start, e)
            head = [_trim(text, s, line_end)] if line_end is not None else []
            nxt = secs[n + 1] if n + 1 < len(secs) else None
            child = nxt is not None and len(nxt[2]) > len(path) and nxt[2][: len(path)] == path
            if not spans and child:
                carry = s if carry is None else carry  # heading-only parent: join the child
                continue
            if carry is not None:
                head = [_trim(text, carry, line_end if line_end is not None else s)]
                carry = None
            packed = self._pack(tm, head + spans, path)
            out.extend(packed)
        return out


class AutoChunker(Chunker):
    """Markdown chunking for Markdown/HTML (or any document with headings), else sentences."""

    name = "auto"

    def __init__(
        self, encoder: Any, max_tokens: int | None = None, overlap: int = DEFAULT_OVERLAP
    ) -> None:
        super().__init__(encoder, max_tokens, overlap)
        self._md = MarkdownChunker(encoder, self.max_tokens, overlap)
        self._sent = SentenceChunker(encoder, self.max_tokens, overlap)

    def _cut(self, doc: SourceDoc, tm: TokenMap) -> list[tuple[int, int, tuple[str, ...]]]:
        inner = self._md if doc.headings or doc.format in ("markdown", "html") else self._sent
        return inner._cut(doc, tm)


_CLASSES: dict[str, type[Chunker]] = {
    "auto": AutoChunker,
    "token": TokenChunker,
    "sentence": SentenceChunker,
    "markdown": MarkdownChunker,
}


def make_chunker(
    spec: str | Chunker = "auto",
    encoder: Any = None,
    *,
    max_tokens: int | None = None,
    overlap: int | None = None,
) -> Chunker:
    """A chunker by name (``auto``, ``token``, ``sentence``, ``markdown``) or as given.

    Raises:
        InvalidInputError: unknown name, or parameters given together with an instance.
    """
    if isinstance(spec, Chunker):
        if max_tokens is not None or overlap is not None:
            raise InvalidInputError(
                "pass max_tokens/overlap to the chunker's constructor, not with an instance."
            )
        return spec
    if spec not in _CLASSES:
        raise InvalidInputError(
            f"unknown chunker {spec!r}; use one of {', '.join(CHUNKERS)} or a Chunker instance."
        )
    return _CLASSES[spec](encoder, max_tokens, DEFAULT_OVERLAP if overlap is None else int(overlap))
