"""The expression language: grammar, weights, phrases, ids, and errors that point at the spot."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedsearch.errors import InvalidInputError
from embedsearch.latent.expr import ExpressionError, parse


def terms(source: str) -> list[tuple[float, str, str]]:
    return [(round(t.weight, 9), t.text, t.kind) for t in parse(source).terms]


def test_analogy_expression() -> None:
    assert terms("king - man + woman") == [
        (1.0, "king", "text"),
        (-1.0, "man", "text"),
        (1.0, "woman", "text"),
    ]


def test_weights_on_either_side_and_division() -> None:
    assert terms('0.5*"royal person" + queen*2 - x/4') == [
        (0.5, "royal person", "text"),
        (2.0, "queen", "text"),
        (-0.25, "x", "text"),
    ]


def test_parentheses_distribute_weights_and_signs() -> None:
    assert terms("-(a + 2*b)*0.5 - (c - d)") == [
        (-0.5, "a", "text"),
        (-1.0, "b", "text"),
        (-1.0, "c", "text"),
        (1.0, "d", "text"),
    ]


def test_unary_signs_and_signed_weights() -> None:
    assert terms("- man + woman") == [(-1.0, "man", "text"), (1.0, "woman", "text")]
    assert terms("a * -2") == [(-2.0, "a", "text")]
    assert terms("--a") == [(1.0, "a", "text")]


def test_adjacent_words_form_one_phrase_and_quotes_keep_operators() -> None:
    assert terms("pets that purr - cats") == [
        (1.0, "pets that purr", "text"),
        (-1.0, "cats", "text"),
    ]
    assert terms("'e-mail  spam' + \"a+b\"") == [(1.0, "e-mail spam", "text"), (1.0, "a+b", "text")]
    assert terms("don't stop") == [(1.0, "don't stop", "text")]


def test_numbers_are_weights_only_next_to_star_or_slash() -> None:
    assert terms("1984 + 2*orwell") == [(1.0, "1984", "text"), (2.0, "orwell", "text")]


def test_id_references() -> None:
    assert terms('@cooking-001 - @"my id" + x') == [
        (1.0, "cooking-001", "id"),
        (-1.0, "my id", "id"),
        (1.0, "x", "text"),
    ]


def test_positions_are_recorded() -> None:
    parsed = parse("king - man + woman")
    assert [t.position for t in parsed.terms] == [0, 7, 13]
    assert [t.text for t in parsed.positive] == ["king", "woman"]
    assert [t.text for t in parsed.negative] == ["man"]


@pytest.mark.parametrize(
    ("source", "position", "fragment"),
    [
        ("", 0, "empty expression"),
        ("   ", 3, "empty expression"),
        ("king -", 6, "expected a term"),
        ("(a + b", 6, "expected ')'"),
        ("a + b)", 5, "unmatched ')'"),
        ("a * b", 4, "expected a number after '*'"),
        ('a + "abc', 4, "unterminated"),
        ('a + ""', 4, "empty quoted phrase"),
        ("a / 0", 4, "division by zero"),
        ("()", 1, "empty parentheses"),
        ("@ x", 0, "document id after '@'"),
        ("a b 2*c", 4, "join terms with operators"),
        ("1e999*a", 0, "finite"),
        ("king + (man", 11, "expected ')'"),
    ],
)
def test_errors_point_at_the_offending_position(source: str, position: int, fragment: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(source)
    err = info.value
    assert err.position == position
    assert fragment in str(err)
    # the message shows the expression with a caret under the position
    lines = str(err).splitlines()
    assert lines[-1].index("^") - 2 == position
    assert isinstance(err, InvalidInputError)


def test_non_string_and_oversized_input() -> None:
    with pytest.raises(InvalidInputError):
        parse(42)  # type: ignore[arg-type]
    with pytest.raises(ExpressionError):
        parse("a + " * 5000)
    with pytest.raises(ExpressionError, match="too many terms"):
        parse(" + ".join(f"w{i}" for i in range(300)))


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(ExpressionError, match="nested deeper"):
        parse("(" * 100 + "a" + ")" * 100)


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
_phrase = st.lists(_word, min_size=1, max_size=3).map(" ".join)
_weight = st.sampled_from([1.0, -1.0, 0.5, -0.25, 2.0, 3.0, -1.5])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_weight, _phrase), min_size=1, max_size=6))
def test_str_round_trips(items: list[tuple[float, str]]) -> None:
    src = " + ".join(f'{w}*"{p}"' for w, p in items)
    parsed = parse(src)
    again = parse(str(parsed))
    assert [(t.weight, t.text) for t in again.terms] == [(t.weight, t.text) for t in parsed.terms]
    assert [(t.weight, t.text) for t in parsed.terms] == [(w, p) for w, p in items]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab +-*/()@\"'0.5 x")), max_size=30))
def test_any_input_parses_or_raises_expression_error(source: str) -> None:
    try:
        parsed = parse(source)
    except ExpressionError as err:
        assert 0 <= err.position <= len(source)
    else:
        assert parsed.terms
        assert all(t.text.strip() for t in parsed.terms)
