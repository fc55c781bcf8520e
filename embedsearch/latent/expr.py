"""A small expression language for vector arithmetic over texts: ``king - man + woman``.

Grammar (``*`` and ``/`` bind tighter than ``+`` and ``-``)::

    expr    := ["+" | "-"] term (("+" | "-") term)*
    term    := factor (("*" | "/") NUMBER)*
    factor  := NUMBER "*" factor          # a weight: 0.5*"royal person"
             | ("+" | "-") factor          # unary sign
             | "(" expr ")"
             | "@" (WORD | STRING)        # a stored document, by id
             | STRING                      # "quoted phrase" or 'quoted phrase'
             | WORD WORD*                  # adjacent bare words form one phrase

A ``WORD`` is a run of characters other than whitespace, ``+ - * / ( ) @ "``; an apostrophe
inside a word (``don't``) is part of it, one that starts a token opens a quoted string. An
``@id`` runs to the next whitespace, parenthesis, ``+``, ``*``, ``/`` or quote, so ids with
hyphens work (``@cooking-001``); quote ids holding those characters (``@"my id"``). A
number is a weight only next to ``*`` or ``/``; elsewhere ``1984`` is just text. Parentheses
distribute weights: ``0.5*(a + b) - c`` is ``0.5 a + 0.5 b - c``.

Parsing yields an :class:`Expression`, a flat weighted sum of :class:`Term`; what a term's
vector is (an embedded text, a stored document, a vocabulary word) is decided by the
collection that evaluates it (see :mod:`embedsearch.latent`). Errors are
:class:`ExpressionError`, whose message quotes the expression with a caret under the
offending position.

Example:
    >>> parse('king - man + 0.5*"royal woman"').terms
    (Term(weight=1.0, text='king', ...), Term(weight=-1.0, text='man', ...), ...)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from ..errors import ExpressionError, InvalidInputError

MAX_EXPRESSION_LENGTH = 10_000
MAX_TERMS = 256
MAX_DEPTH = 64
_OPERATORS = set("+-*/()@")
_REF_STOP = set("()+*/\"'")
_NUMBER_RE = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


@dataclass(frozen=True)
class Term:
    """One weighted operand of an expression.

    Attributes:
        weight: the coefficient of the term's unit vector in the sum.
        text: the phrase (or the document id when ``kind == "id"``).
        kind: ``"text"`` for words and quoted phrases, ``"id"`` for ``@id`` references.
        position: offset of the term in the expression (for error messages).
    """

    weight: float
    text: str
    kind: Literal["text", "id"] = "text"
    position: int = 0


@dataclass(frozen=True)
class Expression:
    """A parsed expression: the source and its flat list of weighted terms."""

    source: str
    terms: tuple[Term, ...]

    @property
    def positive(self) -> list[Term]:
        """Terms with a positive weight."""
        return [t for t in self.terms if t.weight > 0]

    @property
    def negative(self) -> list[Term]:
        """Terms with a negative weight."""
        return [t for t in self.terms if t.weight < 0]

    def __str__(self) -> str:
        parts = []
        for i, t in enumerate(self.terms):
            sign = "-" if t.weight < 0 else ("+" if i else "")
            w = abs(t.weight)
            coef = "" if w == 1 else f"{w:g}*"
            ref = ("@" if t.kind == "id" else "") + (
                f'"{t.text}"' if not _is_plain_word(t.text) else t.text
            )
            parts.append(f"{sign} {coef}{ref}".strip() if i else f"{sign}{coef}{ref}")
        return " ".join(parts)


@dataclass(frozen=True)
class _Token:
    kind: Literal["op", "word", "string", "number", "ref", "end"]
    value: str
    pos: int


def _is_plain_word(text: str) -> bool:
    return bool(text) and not any(c.isspace() or c in _OPERATORS or c in "\"'" for c in text)


def tokenize(source: str) -> list[_Token]:
    """Split an expression into tokens (operators, words, quoted strings, numbers)."""
    tokens: list[_Token] = []
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c.isspace():
            i += 1
        elif c == "@":
            i = _read_ref(source, i, tokens)
        elif c in _OPERATORS:
            tokens.append(_Token("op", c, i))
            i += 1
        elif c in "\"'":
            end = source.find(c, i + 1)
            if end < 0:
                raise ExpressionError(f"unterminated quoted phrase: add the closing {c}", source, i)
            value = " ".join(source[i + 1 : end].split())
            if not value:
                raise ExpressionError("empty quoted phrase: put text between the quotes", source, i)
            tokens.append(_Token("string", value, i))
            i = end + 1
        else:
            j = i
            while (
                j < n
                and not source[j].isspace()
                and source[j] not in _OPERATORS
                and source[j] != '"'
            ):
                j += 1
            word = source[i:j]
            kind: Literal["word", "number"] = "number" if _NUMBER_RE.match(word) else "word"
            tokens.append(_Token(kind, word, i))
            i = j
    tokens.append(_Token("end", "", n))
    return tokens


def _read_ref(source: str, at: int, tokens: list[_Token]) -> int:
    """Read ``@id`` or ``@"quoted id"`` starting at ``at``; return the next offset."""
    i = at + 1
    if i < len(source) and source[i] in "\"'":
        end = source.find(source[i], i + 1)
        if end < 0:
            raise ExpressionError(f"unterminated quoted id: add the closing {source[i]}", source, i)
        value = source[i + 1 : end]
        i = end + 1
    else:
        j = i
        while j < len(source) and not source[j].isspace() and source[j] not in _REF_STOP:
            j += 1
        value, i = source[i:j], j
    if not value:
        raise ExpressionError(
            "expected a document id after '@' (write @doc-1 or @\"my id\")", source, at
        )
    tokens.append(_Token("ref", value, at))
    return i


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = tokenize(source)
        self.i = 0
        self.depth = 0

    # ------------------------------------------------------------------ helpers
    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def peek(self, offset: int = 1) -> _Token:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def is_op(self, value: str, tok: _Token | None = None) -> bool:
        t = tok or self.tok
        return t.kind == "op" and t.value == value

    def error(self, message: str, tok: _Token | None = None) -> ExpressionError:
        return ExpressionError(message, self.source, (tok or self.tok).pos)

    def describe(self, tok: _Token) -> str:
        return "the end of the expression" if tok.kind == "end" else repr(tok.value)

    def number(self, tok: _Token) -> float:
        value = float(tok.value)
        if not math.isfinite(value):
            raise self.error("weight is not a finite number", tok)
        return value

    # ------------------------------------------------------------------ grammar
    def parse(self) -> Expression:
        if self.tok.kind == "end":
            raise self.error("empty expression: write terms such as  king - man + woman")
        terms = self.expr()
        if self.tok.kind != "end":
            if self.is_op(")"):
                raise self.error("unmatched ')': remove it or add a '(' before")
            raise self.error(
                f"expected '+', '-', '*' or the end, found {self.describe(self.tok)}: join "
                "terms with operators"
            )
        if not terms:
            raise self.error("the expression has no terms")
        if len(terms) > MAX_TERMS:
            raise ExpressionError(
                f"too many terms ({len(terms)} > {MAX_TERMS}); simplify the expression",
                self.source,
                0,
            )
        return Expression(self.source, tuple(terms))

    def expr(self) -> list[Term]:
        sign = 1.0
        if self.is_op("+") or self.is_op("-"):
            sign = -1.0 if self.tok.value == "-" else 1.0
            self.i += 1
        terms = _scale(self.term(), sign)
        while self.is_op("+") or self.is_op("-"):
            sign = -1.0 if self.tok.value == "-" else 1.0
            self.i += 1
            terms += _scale(self.term(), sign)
        return terms

    def term(self) -> list[Term]:
        terms = self.factor()
        while self.is_op("*") or self.is_op("/"):
            op = self.tok
            self.i += 1
            sign = 1.0
            if self.is_op("-") or self.is_op("+"):
                sign = -1.0 if self.tok.value == "-" else 1.0
                self.i += 1
            if self.tok.kind != "number":
                raise self.error(
                    f"expected a number after '{op.value}', found {self.describe(self.tok)}: "
                    "weights are numbers (write 0.5*king, not king*queen)"
                )
            value = sign * self.number(self.tok)
            if op.value == "/":
                if value == 0:
                    raise self.error("division by zero", self.tok)
                value = 1.0 / value
            self.i += 1
            terms = _scale(terms, value)
        return terms

    def factor(self) -> list[Term]:
        tok = self.tok
        if tok.kind == "number" and self.is_op("*", self.peek()):
            self.i += 2
            return _scale(self.factor(), self.number(tok))
        if self.is_op("-") or self.is_op("+"):
            self.i += 1
            return _scale(self.factor(), -1.0 if tok.value == "-" else 1.0)
        if self.is_op("("):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.error(f"parentheses nested deeper than {MAX_DEPTH}")
            self.i += 1
            if self.is_op(")"):
                raise self.error("empty parentheses: put terms inside")
            inner = self.expr()
            if not self.is_op(")"):
                raise self.error(
                    f"expected ')' to close the '(' at position {tok.pos}, found "
                    f"{self.describe(self.tok)}"
                )
            self.i += 1
            self.depth -= 1
            return inner
        if tok.kind == "ref":
            self.i += 1
            return [Term(1.0, tok.value, "id", tok.pos)]
        if tok.kind == "string":
            self.i += 1
            return [Term(1.0, tok.value, "text", tok.pos)]
        if tok.kind in ("word", "number"):
            words = [tok.value]
            self.i += 1
            while self.tok.kind in ("word", "number") and not self.is_op("*", self.peek()):
                words.append(self.tok.value)
                self.i += 1
            return [Term(1.0, " ".join(words), "text", tok.pos)]
        if tok.kind == "end":
            raise self.error("expected a term at the end of the expression: remove the operator")
        raise self.error(f"expected a term, found {self.describe(tok)}")


def _scale(terms: list[Term], factor: float) -> list[Term]:
    if factor == 1.0:
        return terms
    return [Term(t.weight * factor, t.text, t.kind, t.position) for t in terms]


def parse(source: str) -> Expression:
    """Parse an expression into a flat weighted sum of terms.

    Args:
        source: e.g. ``king - man + woman`` or ``0.7*"jazz concert" + 0.3*(rain - sun)``.

    Returns:
        The :class:`Expression`; terms keep their order of appearance.

    Raises:
        ExpressionError: the text does not parse; the message points at the position.
    """
    if not isinstance(source, str):
        raise InvalidInputError(f"an expression is a string, not {type(source).__name__}")
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(
            f"expression longer than {MAX_EXPRESSION_LENGTH} characters", source[:80], 0
        )
    if "\x00" in source:
        raise ExpressionError("NUL character in expression", source, source.index("\x00"))
    return _Parser(source).parse()


__all__ = ["Expression", "ExpressionError", "Term", "parse", "tokenize"]
