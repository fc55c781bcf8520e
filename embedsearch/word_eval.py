"""Word-level evaluations: Google's analogy test set and word-pair similarity (gensim protocol).

:func:`evaluate_word_analogies` follows ``gensim.models.KeyedVectors.evaluate_word_analogies``
line for line — case-insensitive by default (words upper-cased, the first of several case
variants wins), questions restricted to the first ``restrict_vocab`` words, the three input
words excluded from the answers, questions with an out-of-vocabulary word skipped and
counted (or scored wrong with ``dummy4unknown``) — and computes it in batches, for 3CosAdd
(gensim's ``most_similar``) and 3CosMul (``most_similar_cosmul``; gensim's own evaluation
only does 3CosAdd, the protocol is the same). On the same vectors the 3CosAdd result equals
gensim's (``tests/test_word_eval.py`` checks it against gensim itself).

:func:`evaluate_word_pairs` follows ``KeyedVectors.evaluate_word_pairs``: Pearson and
Spearman correlation of cosine similarities with human scores (e.g. WordSim-353).

The vectors can be a :class:`~embedsearch.Vocabulary` (default: the model's default
vocabulary), any collection (ids are the words), a ``(words, matrix)`` pair, a
``{word: vector}`` dict, or a gensim ``KeyedVectors``.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidInputError

METHODS = ("3CosAdd", "3CosMul")
_ALIASES = {"add": "3CosAdd", "3cosadd": "3CosAdd", "mul": "3CosMul", "3cosmul": "3CosMul"}
TOPN = 5  # gensim looks at the top 5 answers for the first one that is not an input
COSMUL_EPS = 1e-6
Question = tuple[str, str, str, str]


# ----------------------------------------------------------------------------- results
@dataclass
class AnalogySection:
    """Results of one section (or the total) for one method.

    Attributes:
        section: the section name (``Total accuracy`` for the total).
        correct / incorrect: the evaluated questions ``(a, b, c, expected)`` (upper-cased
            when case-insensitive), as gensim lists them.
        oov: questions of this section with an out-of-vocabulary word.
        questions: well-formed questions in the section (evaluated or not).
    """

    section: str
    correct: list[Question] = field(default_factory=list)
    incorrect: list[Question] = field(default_factory=list)
    oov: int = 0
    questions: int = 0

    @property
    def evaluated(self) -> int:
        """Questions scored (correct + incorrect)."""
        return len(self.correct) + len(self.incorrect)

    @property
    def accuracy(self) -> float:
        """correct / evaluated (0.0 when nothing was evaluated, as gensim)."""
        return len(self.correct) / self.evaluated if self.evaluated else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "accuracy": round(self.accuracy, 4),
            "correct": len(self.correct),
            "evaluated": self.evaluated,
            "questions": self.questions,
            "oov": self.oov,
        }


@dataclass
class AnalogyEvaluation:
    """Analogy accuracy per method and section.

    Attributes:
        path: the question file.
        questions: well-formed questions read.
        oov: questions with an out-of-vocabulary word (skipped unless ``dummy4unknown``).
        vocabulary: words considered (after ``restrict_vocab``).
        sections: ``{method: [AnalogySection, ..., total]}``; the last entry of each list is
            the total (``Total accuracy``), as in gensim.
    """

    path: str
    questions: int
    oov: int
    vocabulary: int
    sections: dict[str, list[AnalogySection]]

    @property
    def oov_ratio(self) -> float:
        """Share of questions with an OOV word, in percent (gensim reports it this way)."""
        return 100.0 * self.oov / self.questions if self.questions else 0.0

    def accuracy(self, method: str = "3CosAdd") -> float:
        """Total accuracy of a method."""
        return self.sections[_method(method)][-1].accuracy

    def as_gensim(self, method: str = "3CosAdd") -> tuple[float, list[dict[str, Any]]]:
        """The result in gensim's shape: ``(score, [{"section", "correct", "incorrect"}])``."""
        secs = self.sections[_method(method)]
        return secs[-1].accuracy, [
            {"section": s.section, "correct": list(s.correct), "incorrect": list(s.incorrect)}
            for s in secs
        ]

    def table(self) -> str:
        """A Markdown table: section, questions, OOV, evaluated, accuracy per method."""
        methods = list(self.sections)
        head = "| section | questions | OOV | evaluated | " + " | ".join(methods) + " |"
        rule = "|---|---:|---:|---:|" + "---:|" * len(methods)
        rows = [head, rule]
        first = self.sections[methods[0]]
        for i, sec in enumerate(first):
            accs = " | ".join(f"{self.sections[m][i].accuracy:.3f}" for m in methods)
            rows.append(
                f"| {sec.section} | {sec.questions} | {sec.oov} | {sec.evaluated} | {accs} |"
            )
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "questions": self.questions,
            "oov": self.oov,
            "oov_ratio": round(self.oov_ratio, 2),
            "vocabulary": self.vocabulary,
            "methods": {
                m: {
                    "accuracy": round(secs[-1].accuracy, 4),
                    "sections": [s.to_dict() for s in secs],
                }
                for m, secs in self.sections.items()
            },
        }


@dataclass
class WordPairsEvaluation:
    """Correlation of model similarities with human judgements (gensim's evaluate_word_pairs).

    Attributes:
        pearson / pearson_pvalue, spearman / spearman_pvalue: correlations (scipy.stats).
        pairs: pairs scored; oov: pairs with an unknown word (skipped unless dummy4unknown).
    """

    path: str
    pearson: float
    pearson_pvalue: float
    spearman: float
    spearman_pvalue: float
    pairs: int
    oov: int
    oov_ratio: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


# ----------------------------------------------------------------------------- vectors
def _method(name: str) -> str:
    m = _ALIASES.get(str(name).lower(), name)
    if m not in METHODS:
        raise InvalidInputError(
            f"method must be one of {', '.join(METHODS)} (or add / mul), not {name!r}."
        )
    return m


def word_vectors(source: Any = None) -> tuple[list[str], np.ndarray]:
    """``(words, unit vectors)`` from a vocabulary, collection, pair, dict or KeyedVectors.

    ``None`` opens (building on first use) the default :class:`~embedsearch.Vocabulary`.
    """
    if source is None:
        from .vocabulary import Vocabulary

        source = Vocabulary.open()
    if hasattr(source, "index_to_key") and hasattr(source, "vectors"):  # gensim KeyedVectors
        words, matrix = list(source.index_to_key), np.asarray(source.vectors)
    elif isinstance(source, dict):
        words, matrix = list(source), np.asarray(list(source.values()))
    elif isinstance(source, tuple) and len(source) == 2:
        words, matrix = list(source[0]), np.asarray(source[1])
    elif hasattr(source, "ids") and hasattr(source, "vectors"):  # Collection / Vocabulary
        col = getattr(source, "collection", source)
        words, matrix = col.ids(), col.vectors()
    else:
        raise InvalidInputError(
            "vectors must be a Vocabulary or collection, a (words, matrix) pair, a "
            f"{{word: vector}} dict or gensim KeyedVectors, not {type(source).__name__}."
        )
    if matrix.ndim != 2 or matrix.shape[0] != len(words) or not words:
        raise InvalidInputError(
            f"{len(words)} words but a vector matrix of shape {matrix.shape}; give one row per word."
        )
    matrix = matrix.astype(np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if np.any(norms == 0) or not np.all(np.isfinite(matrix)):
        raise InvalidInputError("the word vectors contain zero or non-finite rows.")
    return words, matrix / norms


def _ok_vocab(words: list[str], restrict: int, case_insensitive: bool) -> dict[str, int]:
    """gensim's lookup: key (upper-cased if asked) → index; the first case variant wins."""
    ok = words[:restrict]
    out: dict[str, int] = {}
    for i in range(len(ok) - 1, -1, -1):
        out[ok[i].upper() if case_insensitive else ok[i]] = i
    return out


def _read_lines(path: str | os.PathLike[str]) -> list[str]:
    file = Path(path).expanduser()
    try:
        return file.read_bytes().decode("utf-8").splitlines(keepends=True)
    except FileNotFoundError as exc:
        raise InvalidInputError(f"evaluation file {file} does not exist.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read {file} ({exc}); give a UTF-8 text file.") from exc


# ----------------------------------------------------------------------------- analogies
def read_analogies(
    path: str | os.PathLike[str], case_insensitive: bool = True
) -> list[tuple[str, list[Question]]]:
    """Sections of a questions-words file: ``[(name, [(a, b, c, expected), ...]), ...]``.

    Lines with other than four words are skipped (as gensim does).

    Raises:
        InvalidInputError: a question comes before the first ``: section`` header.
    """
    sections: list[tuple[str, list[Question]]] = []
    for line_no, line in enumerate(_read_lines(path)):
        if line.startswith(": "):
            sections.append((line.lstrip(": ").strip(), []))
            continue
        parts = line.split()
        if not parts:
            continue
        if not sections:
            raise InvalidInputError(
                f"{path}: line {line_no + 1} comes before any ': section' header; is this a "
                "questions-words file?"
            )
        if len(parts) != 4:
            continue
        q = tuple(w.upper() for w in parts) if case_insensitive else tuple(parts)
        sections[-1][1].append(q)  # type: ignore[arg-type]
    return sections


def _top_answers(scores: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """Per row: the TOPN best columns after removing the input columns, best first."""
    scores = scores.copy()
    rows = np.arange(scores.shape[0])[:, None]
    scores[rows, inputs] = -np.inf
    m = min(TOPN, scores.shape[1])
    part = np.argpartition(-scores, m - 1, axis=1)[:, :m]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(part, order, axis=1)
    valid = np.isfinite(np.take_along_axis(scores, top, axis=1))
    return np.where(valid, top, -1)


def evaluate_word_analogies(
    path: str | os.PathLike[str],
    vectors: Any = None,
    *,
    methods: tuple[str, ...] | list[str] = METHODS,
    restrict_vocab: int = 300_000,
    case_insensitive: bool = True,
    dummy4unknown: bool = False,
    batch_size: int = 256,
) -> AnalogyEvaluation:
    """Accuracy on an analogy test set (Google's questions-words format), per section.

    Each question ``a b c d`` asks for ``d`` in "a is to b as c is to ?". The answer is the
    best-scoring word other than ``a``, ``b``, ``c`` (3CosAdd: cosine to
    ``b - a + c``; 3CosMul: Levy & Goldberg's product of shifted cosines).

    Args:
        path: the question file (``: section`` headers, then ``a b c d`` lines).
        vectors: the word vectors (see :func:`word_vectors`); default: the model's default
            vocabulary.
        methods: any of ``"3CosAdd"``, ``"3CosMul"`` (or ``"add"``, ``"mul"``).
        restrict_vocab: only the first N words count (questions with others are OOV), and
            answers are searched among them.
        case_insensitive: compare words upper-cased (gensim's default).
        dummy4unknown: count OOV questions as wrong instead of skipping them.
        batch_size: questions scored per matrix product.

    Returns:
        An :class:`AnalogyEvaluation` (``.accuracy("3CosMul")``, ``.table()``,
        ``.as_gensim()``).

    Example:
        >>> ev = evaluate_word_analogies("questions-words.txt")
        >>> print(ev.table())
    """
    methods = [_method(m) for m in methods]
    if not methods:
        raise InvalidInputError("methods is empty; give 3CosAdd and/or 3CosMul.")
    if (
        isinstance(restrict_vocab, bool)
        or not isinstance(restrict_vocab, int)
        or restrict_vocab < 1
    ):
        raise InvalidInputError(
            f"restrict_vocab must be a positive integer, got {restrict_vocab!r}."
        )
    words, matrix = word_vectors(vectors)
    ok = _ok_vocab(words, restrict_vocab, case_insensitive)
    cand = matrix[: min(restrict_vocab, len(words))]
    key = (lambda w: w.upper()) if case_insensitive else (lambda w: w)
    sections = read_analogies(path, case_insensitive)
    results = {m: [AnalogySection(name) for name, _ in sections] for m in methods}
    questions = oov = 0
    todo: list[tuple[int, Question]] = []
    for s, (_, qs) in enumerate(sections):
        for q in qs:
            questions += 1
            for m in methods:
                results[m][s].questions += 1
            if any(w not in ok for w in q):
                oov += 1
                for m in methods:
                    results[m][s].oov += 1
                    if dummy4unknown:
                        results[m][s].incorrect.append(q)
                continue
            todo.append((s, q))
    for lo in range(0, len(todo), batch_size):
        chunk = todo[lo : lo + batch_size]
        idx = np.array([[ok[w] for w in q] for _, q in chunk], dtype=np.int64)
        inputs = idx[:, :3]
        for m in methods:
            if m == "3CosAdd":
                query = matrix[idx[:, 1]] + matrix[idx[:, 2]] - matrix[idx[:, 0]]
                scores = (cand @ query.T).T  # ranking by cosine: the query norm is constant per row
            else:
                # (n_cand, batch) cosines to a, b, c, shifted to [0, 1]
                shifted = {j: (1.0 + cand @ matrix[idx[:, j]].T) / 2.0 for j in range(3)}
                scores = (shifted[1] * shifted[2] / (shifted[0] + COSMUL_EPS)).T
            top = _top_answers(scores, inputs)
            for (s, q), row in zip(chunk, top):
                ignore = {q[0], q[1], q[2]}
                predicted = None
                for j in row:
                    if j < 0:
                        break
                    predicted = key(words[j])
                    if predicted in ok and predicted not in ignore:
                        break
                sec = results[m][s]
                (sec.correct if predicted == q[3] else sec.incorrect).append(q)
    for m in methods:
        results[m].append(
            AnalogySection(
                "Total accuracy",
                list(itertools.chain.from_iterable(s.correct for s in results[m])),
                list(itertools.chain.from_iterable(s.incorrect for s in results[m])),
                oov,
                questions,
            )
        )
    if questions == 0:
        raise InvalidInputError(f"{path} holds no analogy questions (lines of four words).")
    return AnalogyEvaluation(str(path), questions, oov, len(cand), results)


# ----------------------------------------------------------------------------- word pairs
def evaluate_word_pairs(
    path: str | os.PathLike[str],
    vectors: Any = None,
    *,
    delimiter: str = "\t",
    restrict_vocab: int = 300_000,
    case_insensitive: bool = True,
    dummy4unknown: bool = False,
) -> WordPairsEvaluation:
    """Correlation between cosine similarities and human scores of word pairs.

    The file has ``word1<delimiter>word2<delimiter>score`` lines; ``#`` lines are comments and
    malformed lines are skipped (gensim's protocol). Pairs with an unknown word are skipped
    and counted (or scored 0.0 with ``dummy4unknown``).

    Args:
        path: e.g. ``wordsim353.tsv``.
        vectors: the word vectors (see :func:`word_vectors`); default: the model's default
            vocabulary.

    Returns:
        A :class:`WordPairsEvaluation` with Pearson and Spearman correlations.

    Raises:
        InvalidInputError: no usable pair in the file.
    """
    from scipy import stats

    words, matrix = word_vectors(vectors)
    ok = _ok_vocab(words, restrict_vocab, case_insensitive)
    gold: list[float] = []
    model: list[float] = []
    oov = 0
    for line in _read_lines(path):
        if not line or line.startswith("#"):
            continue
        try:
            parts = line.split(delimiter)
            a, b, sim_text = (w.upper() if case_insensitive else w for w in parts)
            sim = float(sim_text)
        except (ValueError, TypeError):
            continue
        if a not in ok or b not in ok:
            oov += 1
            if dummy4unknown:
                gold.append(sim)
                model.append(0.0)
            continue
        gold.append(sim)
        model.append(float(matrix[ok[a]] @ matrix[ok[b]]))
    if len(gold) < 2:
        raise InvalidInputError(
            f"{path}: fewer than two usable word pairs (format: word1{delimiter!r}word2"
            f"{delimiter!r}score), or all are out of vocabulary."
        )
    spearman = stats.spearmanr(gold, model)
    pearson = stats.pearsonr(gold, model)
    evaluated = len(gold)
    ratio = 100.0 * oov / (evaluated if dummy4unknown else evaluated + oov)
    return WordPairsEvaluation(
        str(path),
        float(pearson[0]),
        float(pearson[1]),
        float(spearman[0]),
        float(spearman[1]),
        evaluated,
        oov,
        ratio,
    )


__all__ = [
    "AnalogyEvaluation",
    "AnalogySection",
    "WordPairsEvaluation",
    "evaluate_word_analogies",
    "evaluate_word_pairs",
    "read_analogies",
    "word_vectors",
]
