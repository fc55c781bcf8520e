"""Chunkers and loaders: token budgets in the encoder's own tokens, offsets, headings, formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedsearch.errors import InvalidInputError
from embedsearch.rag.chunking import (
    MarkdownChunker,
    SentenceChunker,
    TokenChunker,
    make_chunker,
    markdown_headings,
    sentence_spans,
)
from embedsearch.rag.loaders import LoadError, SourceDoc, html_to_text, load_file, source_text

PROSE = (
    "The committee met on Monday to review the budget. Dr. Lee presented the figures, e.g. "
    "the travel costs, which had doubled. Nobody objected! Was that wise? The chair thought "
    "so. "
)


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page."""
    n = len(pages)
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        (
            "<< /Type /Pages /Kids ["
            + " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
            + f"] /Count {n} >>"
        ).encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objs.append(
            (
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>"
            ).encode()
        )
        objs.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    out = b"%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return out


def _tokens_with_specials(encoder, text: str) -> int:
    return len(encoder.tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])


def test_token_windows_fit_model_overlap_and_cover(encoder):
    text = " ".join(f"word{i} antidisestablishmentarianism, naïve café." for i in range(300))
    ch = TokenChunker(encoder, max_tokens=64, overlap=16)
    chunks = ch.split_text(text)
    assert len(chunks) > 10
    for c in chunks:
        assert c.text == text[c.char_start : c.char_end]
        assert c.tokens <= 64
        assert _tokens_with_specials(encoder, c.text) <= 64 + 2
    for a, b in zip(chunks, chunks[1:]):
        assert b.char_start < a.char_end  # consecutive windows overlap
        assert b.char_start > a.char_start
        # windows start at word starts: the character before is a space or punctuation
        assert not text[b.char_start - 1].isalnum()
    assert chunks[0].char_start == 0 and chunks[-1].char_end == len(text)


def test_default_budget_is_model_window_and_larger_is_refused(encoder):
    ch = make_chunker("token", encoder)
    assert ch.max_tokens == encoder.max_seq_length - 2
    with pytest.raises(InvalidInputError, match="exceeds the model window"):
        make_chunker("token", encoder, max_tokens=encoder.max_seq_length)
    with pytest.raises(InvalidInputError, match="overlap"):
        make_chunker("sentence", encoder, max_tokens=50, overlap=50)
    with pytest.raises(InvalidInputError, match="unknown chunker"):
        make_chunker("paragraphs", encoder)
    long_text = "tok " * 3000
    assert all(c.tokens <= ch.max_tokens for c in ch.split_text(long_text))


def test_one_enormous_sentence_without_spaces_is_split_within_the_window(encoder):
    blob = "-".join(["Ab9x"] * 1500)  # one whitespace-free "sentence" of ~4,500 tokens
    chunks = SentenceChunker(encoder, max_tokens=100, overlap=0).split_text(f"Intro. {blob} End.")
    assert len(chunks) > 5
    assert all(_tokens_with_specials(encoder, c.text) <= 102 for c in chunks)


def test_sentence_spans_respect_abbreviations_and_initials():
    text = "Dr. Lee met J. Smith at 5 p.m. on Monday. It rained. e.g. this is lower. Next one!"
    spans = [text[a:b] for a, b in sentence_spans(text)]
    assert spans == [
        "Dr. Lee met J. Smith at 5 p.m. on Monday.",
        "It rained. e.g. this is lower.",
        "Next one!",
    ]


def test_sentence_packing_keeps_sentences_whole_and_overlaps_by_sentences(encoder):
    text = PROSE * 30
    ch = SentenceChunker(encoder, max_tokens=80, overlap=20)
    chunks = ch.split_text(text)
    assert len(chunks) > 3
    for c in chunks:
        assert c.text == text[c.char_start : c.char_end]
        assert c.tokens <= 80
        assert c.text[-1] in ".!?"  # ends at a sentence end
        assert c.text[0].isupper()  # starts at a sentence start
    overlapping = [b.char_start < a.char_end for a, b in zip(chunks, chunks[1:])]
    assert any(overlapping)
    no_overlap = SentenceChunker(encoder, max_tokens=80, overlap=0).split_text(text)
    assert all(b.char_start >= a.char_end for a, b in zip(no_overlap, no_overlap[1:]))


MD = """---
title: not a heading
---
Preface text before any heading.

# Guide

## Install

Run the installer. Then restart the service.

```bash
# this is a comment, not a heading
make install
```

## Usage
### Basics
Call start() first.

Advanced topics
---------------
Tune the cache size.
"""


def test_markdown_headings_skip_code_and_front_matter():
    titles = [(h.level, h.title) for h in markdown_headings(MD)]
    assert titles == [
        (1, "Guide"),
        (2, "Install"),
        (2, "Usage"),
        (3, "Basics"),
        (2, "Advanced topics"),
    ]


def test_markdown_chunks_carry_heading_paths(encoder):
    chunks = MarkdownChunker(encoder).split_text(MD, "markdown")
    by_path = {c.heading_path: c for c in chunks}
    assert () in by_path and "Preface" in by_path[()].text
    install = by_path[("Guide", "Install")]
    assert "make install" in install.text and install.text.startswith("# Guide")
    basics = by_path[("Guide", "Usage", "Basics")]
    assert basics.text.startswith("## Usage") and "Call start()" in basics.text
    assert "Tune the cache" in by_path[("Guide", "Advanced topics")].text
    for c in chunks:
        assert c.text == MD[c.char_start : c.char_end]
    # sections never mix: no chunk holds text of two sibling sections
    assert not any("Run the installer" in c.text and "Call start" in c.text for c in chunks)


def test_long_markdown_section_is_packed_within_budget(encoder):
    doc = "# Title\n\n## Long\n\n" + PROSE * 40 + "\n\n## Short\n\nTiny."
    chunks = MarkdownChunker(encoder, max_tokens=100, overlap=0).split_text(doc, "markdown")
    long_chunks = [c for c in chunks if c.heading_path == ("Title", "Long")]
    assert len(long_chunks) > 3 and all(c.tokens <= 100 for c in long_chunks)
    assert chunks[-1].heading_path == ("Title", "Short") and chunks[-1].text.endswith("Tiny.")
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_html_extraction_drops_scripts_and_records_headings(encoder):
    html = (
        "<html><head><title>Manual</title><style>p{color:red}</style></head><body>"
        "<script>var secret = 1;</script><h1>Setup</h1><p>Plug it <b>in</b>.<br>Then wait.</p>"
        "<!-- hidden comment --><h2>Cables</h2><table><tr><td>USB</td><td>2 m</td></tr></table>"
        "</body></html>"
    )
    text, headings, title = html_to_text(html)
    assert title == "Manual"
    assert "secret" not in text and "color" not in text and "hidden" not in text
    assert "Plug it in.\nThen wait." in text and "USB | 2 m" in text
    assert [(h.level, h.title) for h in headings] == [(1, "Setup"), (2, "Cables")]
    assert all(text[h.start :].startswith(h.title) for h in headings)
    chunks = make_chunker("auto", encoder).split(SourceDoc("x", text, "html", "", None, headings))
    assert [c.heading_path for c in chunks] == [("Setup",), ("Setup", "Cables")]


def test_load_file_formats_and_errors(tmp_path: Path):
    (tmp_path / "a.txt").write_bytes("line one\r\nline two é\n".encode())
    doc = load_file(tmp_path / "a.txt")
    assert doc.text == "line one\r\nline two é\n"  # no newline translation: exact offsets
    assert source_text(tmp_path / "a.txt") == doc.text
    (tmp_path / "bin.txt").write_bytes(b"\x89PNG\x00\x00\x01")
    with pytest.raises(LoadError, match="binary"):
        load_file(tmp_path / "bin.txt")
    (tmp_path / "latin.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(LoadError, match="not valid utf-8"):
        load_file(tmp_path / "latin.txt")
    assert load_file(tmp_path / "latin.txt", encoding="latin-1").text == "café"
    (tmp_path / "blank.md").write_text("  \n\n ")
    with pytest.raises(LoadError, match="empty"):
        load_file(tmp_path / "blank.md")
    with pytest.raises(LoadError, match="no such file"):
        load_file(tmp_path / "missing.txt")


def test_pdf_pages_are_recorded_and_broken_pdfs_refused(tmp_path: Path):
    (tmp_path / "r.pdf").write_bytes(
        make_pdf(["First page about turbines.", "Second page on blades."])
    )
    doc = load_file(tmp_path / "r.pdf")
    assert doc.format == "pdf"
    assert "turbines" in doc.text and "blades" in doc.text
    assert len(doc.page_starts) == 2
    assert doc.page_of(doc.text.index("turbines")) == 1
    assert doc.page_of(doc.text.index("blades")) == 2
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    with pytest.raises(LoadError):
        load_file(tmp_path / "broken.pdf")
    (tmp_path / "fake.pdf").write_text("plain text with a pdf suffix")
    with pytest.raises(LoadError, match="not a PDF"):
        load_file(tmp_path / "fake.pdf")
