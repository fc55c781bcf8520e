"""Load files into plain text whose character offsets chunk metadata can point into.

Supported formats (by suffix; ``sniff`` decides for other explicitly named files):

* ``.txt`` / ``.text`` and other UTF-8 text: the text is ``path.read_bytes().decode(encoding)``
  — no newline translation, so offsets index the file's characters exactly;
* ``.md`` / ``.markdown``: as text; the Markdown chunker finds the headings itself;
* ``.html`` / ``.htm``: visible text extracted with BeautifulSoup (``html.parser``; scripts,
  styles and other non-content elements dropped, block elements separated by blank lines),
  with the ``h1``–``h6`` headings recorded for heading-aware chunking;
* ``.pdf`` (extra ``rag``, pypdf): page texts joined by blank lines, page starts recorded so
  chunks can cite page numbers.

For HTML and PDF the offsets index the *extracted* text; :func:`source_text` returns exactly
that text for every format, so ``source_text(p)[start:end] == passage.text`` always holds.

A file that cannot be used (missing, binary, not decodable, a broken PDF, no text) raises
:class:`LoadError` with a reason; :func:`iter_sources` turns those into :class:`Skipped`
entries so that one bad file never stops an ingest.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..durable import sha256_file
from ..errors import LoadError
from ..readers import ReadReport, walk

FORMATS: dict[str, str] = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class Heading:
    """A heading in a loaded text: where its line starts, its level (1 = top) and title."""

    start: int
    level: int
    title: str


@dataclass(frozen=True)
class SourceDoc:
    """A loaded document.

    Attributes:
        source: absolute file path, or the caller's name for a text given directly.
        text: the text chunk offsets refer to (see module docs).
        format: ``text``, ``markdown``, ``html`` or ``pdf``.
        content_hash: sha256 of the raw bytes (files) or of the UTF-8 text (direct texts):
            an unchanged hash means an unchanged source, so re-ingesting can skip it.
        title: ``<title>`` of HTML, the PDF's title, else None.
        headings: headings found by the loader (HTML); Markdown headings are parsed by the
            chunker.
        page_starts: for PDFs, the offset in ``text`` where each page begins.
    """

    source: str
    text: str
    format: str
    content_hash: str
    title: str | None = None
    headings: tuple[Heading, ...] = ()
    page_starts: tuple[int, ...] = ()

    def page_of(self, offset: int) -> int | None:
        """1-based page number holding character ``offset`` (PDFs only)."""
        if not self.page_starts:
            return None
        import bisect

        return bisect.bisect_right(self.page_starts, offset)


@dataclass(frozen=True)
class Skipped:
    """A source that was not indexed, and why."""

    source: str
    reason: str


@dataclass(frozen=True)
class Unchanged:
    """A file whose bytes hash to what is already indexed (reported by ``precheck``)."""

    source: str
    content_hash: str


Precheck = Callable[[str, str], bool]


@dataclass
class TextInput:
    """A text given directly (not a file), with an optional source name and metadata."""

    text: str
    source: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def file_hash(path: Path) -> str:
    """Hex sha256 of a file's bytes, streamed (the change detector for re-ingesting)."""
    return sha256_file(path)


def format_of(path: Path) -> str | None:
    """The format named by the file's suffix, or None when the suffix is not known."""
    return FORMATS.get(path.suffix.lower())


def _decode(data: bytes, path: Path, encoding: str) -> str:
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise LoadError(f"{path}: binary file (NUL bytes); only text, Markdown, HTML, PDF load.")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise LoadError(
            f"{path}: not valid {encoding} ({exc.reason} at byte {exc.start}); convert it to "
            "UTF-8 or pass encoding= (e.g. 'latin-1') for this file."
        ) from exc
    except LookupError as exc:
        raise LoadError(f"unknown encoding {encoding!r}; use a Python codec name.") from exc
    if "\x00" in text:
        raise LoadError(f"{path}: contains NUL characters; it looks binary.")
    return text


# ----------------------------------------------------------------------------- HTML
_DROP_TAGS = ("script", "style", "noscript", "template", "head", "svg", "canvas", "iframe")
_BLOCK_TAGS = [
    "address",
    "article",
    "aside",
    "blockquote",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tbody",
    "thead",
    "tfoot",
    "tr",
    "ul",
    "caption",
]
_HEADING_RE = re.compile(r"^h([1-6])$")


def html_to_text(markup: str | bytes) -> tuple[str, tuple[Heading, ...], str | None]:
    """Visible text of an HTML page, its headings (offsets into that text) and its title.

    Block elements become paragraphs separated by a blank line, ``<br>`` a line break,
    table cells are separated by `` | ``; runs of spaces collapse. Headings become their own
    paragraphs and are recorded so the chunker can split at them and cite them.
    """
    from bs4 import BeautifulSoup, Comment, NavigableString

    soup = BeautifulSoup(markup, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    for node in soup.find_all(string=lambda s: isinstance(s, Comment)):
        node.extract()
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()
    body = soup.body or soup
    marks: list[tuple[str, Any]] = []  # ("heading", (level, title)) markers in document order
    for br in body.find_all("br"):
        br.replace_with(NavigableString("\n"))
    for cell in body.find_all(["td", "th"]):
        cell.insert_after(NavigableString(" | "))
    for tag in body.find_all(_BLOCK_TAGS):
        m = _HEADING_RE.match(tag.name)
        if m:
            key = f"\x02{len(marks)}\x03"
            marks.append(("heading", (int(m.group(1)), tag.get_text(" ", strip=True))))
            tag.insert_before(NavigableString(key))
        tag.insert_before(NavigableString("\n\n"))
        tag.insert_after(NavigableString("\n\n"))
    raw = body.get_text("")
    # Normalise whitespace line by line, keep paragraph breaks, then place heading markers.
    lines = [re.sub(r"[ \t\r\f\v\u00a0]+", " ", line).strip() for line in raw.split("\n")]
    paragraphs: list[str] = []
    cur: list[str] = []
    for line in lines:
        if line:
            cur.append(line)
        elif cur:
            paragraphs.append("\n".join(cur))
            cur = []
    if cur:
        paragraphs.append("\n".join(cur))
    out: list[str] = []
    headings: list[Heading] = []
    pos = 0
    pending: list[tuple[int, str]] = []
    for para in paragraphs:
        for key in re.findall(r"\x02(\d+)\x03", para):
            pending.append(marks[int(key)][1])
        para = re.sub(r"\x02\d+\x03", "", para).strip(" |")
        para = re.sub(r"(?: \| )+$", "", para)
        if not para:
            continue
        if out:
            pos += 2
        headings.extend(Heading(pos, level, htitle) for level, htitle in pending if htitle)
        pending = []
        out.append(para)
        pos += len(para)
    return "\n\n".join(out), tuple(headings), title or None


# ----------------------------------------------------------------------------- PDF
def pdf_to_text(path: Path) -> tuple[str, tuple[int, ...], str | None]:
    """Text of a PDF (pages joined by blank lines), each page's start offset, and its title."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError as exc:  # pragma: no cover - pypdf is in the rag extra
        raise LoadError(
            f"{path}: reading PDFs needs pypdf: pip install 'embedsearch[rag]' (or pypdf)."
        ) from exc
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise LoadError(f"{path}: encrypted PDF; decrypt it first (qpdf --decrypt).")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        meta = reader.metadata
        title = (meta.title if meta else None) or None
    except LoadError:
        raise
    except (PdfReadError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LoadError(f"{path}: unreadable PDF ({type(exc).__name__}: {exc}).") from exc
    starts: list[int] = []
    pos = 0
    for i, page in enumerate(pages):
        if i:
            pos += 2
        starts.append(pos)
        pos += len(page)
    return "\n\n".join(pages), tuple(starts), str(title) if title else None


# ----------------------------------------------------------------------------- entry points
def load_file(
    path: str | os.PathLike[str], *, encoding: str = "utf-8", precheck: Precheck | None = None
) -> SourceDoc | Unchanged:
    """Load one file into a :class:`SourceDoc`.

    Args:
        path: the file. Unknown suffixes are read as text when they decode (a README, .rst).
        encoding: text encoding of text/Markdown/HTML files (default UTF-8, strict).
        precheck: called with (absolute path, sha256 of the bytes) before parsing; when it
            returns True the file is not parsed and :class:`Unchanged` is returned.

    Raises:
        LoadError: missing, unreadable, binary, undecodable, a broken PDF, or no text in it.
    """
    p = Path(path).expanduser().resolve()
    try:
        if not p.is_file():
            raise LoadError(f"{path}: no such file.")
        data = p.read_bytes()
    except OSError as exc:
        raise LoadError(f"{path}: cannot read ({exc.strerror or exc}).") from exc
    fmt = format_of(p) or "text"
    digest = sha256_bytes(data)
    if precheck is not None and precheck(str(p), digest):
        return Unchanged(str(p), digest)
    headings: tuple[Heading, ...] = ()
    pages: tuple[int, ...] = ()
    title = None
    if fmt == "pdf":
        if not data.startswith(b"%PDF"):
            raise LoadError(f"{p}: not a PDF (no %PDF header).")
        text, pages, title = pdf_to_text(p)
    elif fmt == "html":
        text, headings, title = html_to_text(_decode(data, p, encoding))
    else:
        text = _decode(data, p, encoding)
    if not text.strip():
        what = "no extractable text (a scanned PDF needs OCR first)" if fmt == "pdf" else "empty"
        raise LoadError(f"{p}: {what}; nothing to index.")
    return SourceDoc(str(p), text, fmt, digest, title, headings, pages)


def source_text(path: str | os.PathLike[str], *, encoding: str = "utf-8") -> str:
    """The exact text a file's chunk offsets refer to (``text[char_start:char_end]``)."""
    doc = load_file(path, encoding=encoding)
    assert isinstance(doc, SourceDoc)
    return doc.text


def load_text(item: TextInput) -> SourceDoc:
    """A :class:`SourceDoc` for a text given directly (source name: given, else its hash)."""
    if not isinstance(item.text, str):
        raise LoadError(f"text input is {type(item.text).__name__}, not str.")
    if not item.text.strip():
        raise LoadError(f"{item.source or 'text input'}: empty; nothing to index.")
    if "\x00" in item.text:
        raise LoadError(f"{item.source or 'text input'}: contains NUL characters.")
    digest = sha256_bytes(item.text.encode("utf-8", "surrogatepass"))
    fmt = "markdown" if item.source and format_of(Path(item.source)) == "markdown" else "text"
    return SourceDoc(item.source or f"text:{digest[:16]}", item.text, fmt, digest)


def expand_paths(
    paths: Iterable[str | os.PathLike[str]], ignored: list[str] | None = None
) -> Iterator[Path]:
    """Files named by ``paths``: files as given, folders walked by the shared rules of
    :func:`embedsearch.readers.walk` (sorted; hidden, VCS, ``__pycache__`` and
    ``node_modules`` entries skipped; unsupported suffixes appended to ``ignored``)."""
    for raw in paths:
        if not Path(raw).expanduser().exists():
            yield Path(raw).expanduser()  # load_file reports it as a missing file
            continue
        report = ReadReport()
        for path, _named in walk([raw], FORMATS, report):
            yield path
        if ignored is not None:
            ignored.extend(report.ignored_files)


def iter_sources(
    items: Iterable[Any],
    *,
    encoding: str = "utf-8",
    ignored: list[str] | None = None,
    precheck: Precheck | None = None,
) -> Iterator[tuple[SourceDoc | Skipped | Unchanged, dict[str, Any]]]:
    """Load every item, yielding ``(SourceDoc, Skipped or Unchanged, per-item metadata)``.

    Items: ``os.PathLike`` (a file or folder), :class:`TextInput`, a dict ``{"text": ...,
    "source": ..., "metadata": {...}}``, or a str — a path when it names an existing file or
    folder, otherwise a text when it contains whitespace, otherwise reported as a missing file.
    """
    for item in items:
        if isinstance(item, dict):
            if "text" not in item:
                yield Skipped(str(item.get("source", "<dict>")), "dict input without 'text'"), {}
                continue
            item = TextInput(item["text"], item.get("source"), dict(item.get("metadata") or {}))
        if isinstance(item, TextInput):
            try:
                yield load_text(item), item.metadata
            except LoadError as exc:
                yield Skipped(item.source or "text input", str(exc)), {}
            continue
        if isinstance(item, str) and not os.path.exists(item) and re.search(r"\s", item):
            try:
                yield load_text(TextInput(item)), {}
            except LoadError as exc:
                yield Skipped("text input", str(exc)), {}
            continue
        if not isinstance(item, (str, os.PathLike)):
            yield Skipped(repr(item)[:80], f"unsupported input type {type(item).__name__}"), {}
            continue
        for path in expand_paths([item], ignored):
            try:
                yield load_file(path, encoding=encoding, precheck=precheck), {}
            except LoadError as exc:
                yield Skipped(str(path), str(exc)), {}
