"""The latent-space query layer: the embedding space itself as the interface.

``LatentMixin`` adds to :class:`embedsearch.Collection` (and so to a
:class:`~embedsearch.Vocabulary`): vector arithmetic (:meth:`~LatentMixin.expr`), analogies
(3CosAdd :meth:`~LatentMixin.most_similar`, 3CosMul :meth:`~LatentMixin.most_similar_cosmul`,
:meth:`~LatentMixin.analogy`), :meth:`~LatentMixin.doesnt_match`,
:meth:`~LatentMixin.similarity`, :meth:`~LatentMixin.centroid`, :meth:`~LatentMixin.move`,
:meth:`~LatentMixin.interpolate`, :meth:`~LatentMixin.cluster`,
:meth:`~LatentMixin.outliers` and :meth:`~LatentMixin.map`. It uses only the collection's
public API.

**What a term stands for.** Every method takes *terms*: texts, document ids or vectors.

* a vector (numpy array or list of numbers) is used as given (normalised);
* ``@id`` in an expression names a stored document (its stored vector; unknown ids fail);
* a string that is the id of a live document stands for that document's stored vector;
* in a :class:`~embedsearch.Vocabulary`, a single word must be one of its entries (case is
  folded when the vocabulary is lower-cased); unknown words fail with an error listing them;
* any other string is embedded with the collection's model.

Each term contributes its *unit* vector times its weight; the sum is normalised and
searched by cosine. **Inputs are excluded** from results by default, as in the standard
analogy protocol: documents named by id, and documents whose text equals an input text
(ignoring case and extra whitespace). Pass ``exclude_inputs=False`` to keep them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import DocumentNotFoundError, InvalidInputError, UnknownWordsError
from ..types import Hit
from ..validation import check_k
from .marker import read_marker

if TYPE_CHECKING:
    from .clustering import Clustering
    from .maps import MapResult
    from .topics import Topics

COSMUL_EPS = 1e-6  # Levy & Goldberg's epsilon, as gensim uses it
MAX_STEPS = 1000

TermLike = Any  # str (text / id / word), np.ndarray or a sequence of floats


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class InterpolationStep:
    """One point of a walk between two meanings.

    Attributes:
        t: position along the path, 0 (start) to 1 (end).
        vector: the unit vector at ``t``.
        hits: the documents nearest to it.
    """

    t: float
    vector: np.ndarray
    hits: list[Hit] = field(default_factory=list)

    def to_dict(self, include_vector: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"t": self.t, "hits": [h.to_dict() for h in self.hits]}
        if include_vector:
            out["vector"] = self.vector.tolist()
        return out


@dataclass
class _Resolved:
    """Terms turned into unit vectors, plus what to exclude from results."""

    vectors: np.ndarray
    weights: np.ndarray
    exclude_ids: set[str] = field(default_factory=set)
    exclude_texts: set[str] = field(default_factory=set)


def _norm_text(text: str) -> str:
    return " ".join(text.split()).casefold()


def _is_vector(x: Any) -> bool:
    if isinstance(x, np.ndarray):
        return True
    return (
        isinstance(x, (list, tuple))
        and len(x) > 1
        and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in x)
    )


def _as_list(x: Any) -> list[Any]:
    """gensim's convention: None → [], one term or a 1-D vector → [it], 2-D array → rows."""
    if x is None:
        return []
    if isinstance(x, str):
        return [x]
    if isinstance(x, np.ndarray):
        return [x] if x.ndim == 1 else list(x)
    return list(x)


def check_weight(w: Any, what: str = "weight") -> float:
    """A finite number (bools are refused)."""
    if isinstance(w, bool) or not isinstance(w, (int, float, np.number)) or not math.isfinite(w):
        raise InvalidInputError(f"{what} must be a finite number, got {w!r}.")
    return float(w)


# ----------------------------------------------------------------------------- mixin
class LatentMixin:
    """Vector arithmetic, analogies, interpolation, clustering, outliers and maps."""

    # ------------------------------------------------------------------ resolution
    def _vocabulary_marker(self) -> dict[str, Any] | None:
        return read_marker(self.path)  # type: ignore[attr-defined]

    def _word_id(self, word: str, lowercase: bool) -> str | None:
        w = word.strip()
        if w in self:  # type: ignore[operator]
            return w
        if lowercase and w.lower() in self:  # type: ignore[operator]
            return w.lower()
        return None

    def _resolve(self, items: Sequence[tuple[Any, float, str]]) -> _Resolved:
        """Turn ``(term, weight, kind)`` triples into unit vectors.

        ``kind`` is ``"text"`` (a string: vocabulary word, stored id or text to embed),
        ``"id"`` (must be a stored id) or ``"auto"`` (vector or string).
        """
        if not items:
            raise InvalidInputError("no terms given: name at least one text, id or vector.")
        marker = self._vocabulary_marker()
        lowercase = bool(marker.get("lowercase", True)) if marker else False
        n = len(items)
        vectors = np.zeros((n, self.dim), dtype=np.float32)  # type: ignore[attr-defined]
        weights = np.empty(n, dtype=np.float64)
        stored: dict[int, str] = {}
        to_embed: dict[int, str] = {}
        unknown_words: list[str] = []
        unknown_ids: list[str] = []
        out = _Resolved(vectors, weights)
        for i, (term, weight, kind) in enumerate(items):
            weights[i] = check_weight(weight, f"the weight of term {i + 1}")
            if kind != "id" and _is_vector(term):
                vectors[i] = self.as_unit_vector(term, f"vector term {i + 1}")  # type: ignore[attr-defined]
                continue
            if not isinstance(term, str):
                raise InvalidInputError(
                    f"term {i + 1} is {type(term).__name__}; give a text, an id or a vector."
                )
            if not term.strip():
                raise InvalidInputError(f"term {i + 1} is empty; give it some text.")
            if kind == "id":
                if term in self:  # type: ignore[operator]
                    stored[i] = term
                else:
                    unknown_ids.append(term)
                continue
            if marker is not None and len(term.split()) == 1:
                word = self._word_id(term, lowercase)
                if word is None:
                    unknown_words.append(term.strip())
                else:
                    stored[i] = word
                continue
            if term in self:  # type: ignore[operator]
                stored[i] = term
            else:
                to_embed[i] = term
        if unknown_ids:
            shown = ", ".join(repr(x) for x in unknown_ids[:10])
            raise DocumentNotFoundError(
                f"no document with id {shown} in collection {self.name!r}; "  # type: ignore[attr-defined]
                "check the id, or drop the '@' to use the text itself."
            )
        if unknown_words:
            raise UnknownWordsError(unknown_words, self.name, len(self))  # type: ignore[attr-defined,arg-type]
        if stored:
            idx = list(stored)
            vectors[idx] = self.vectors([stored[i] for i in idx])  # type: ignore[attr-defined]
            out.exclude_ids.update(stored.values())
        if to_embed:
            idx = list(to_embed)
            vectors[idx] = self.embed([to_embed[i] for i in idx])  # type: ignore[attr-defined]
            out.exclude_texts.update(_norm_text(to_embed[i]) for i in idx)
        return out

    @staticmethod
    def _combine(res: _Resolved, what: str) -> np.ndarray:
        v = (res.weights[:, None] * res.vectors.astype(np.float64)).sum(axis=0)
        norm = float(np.linalg.norm(v))
        if norm < 1e-9 or not math.isfinite(norm):
            raise InvalidInputError(
                f"{what} sums to the zero vector (the terms cancel out, e.g. 'a - a'), which "
                "has no direction to search; change the terms or weights."
            )
        return (v / norm).astype(np.float32)

    def _check_k(self, k: Any, what: str = "k") -> int:
        k = check_k(k)
        n = len(self)  # type: ignore[arg-type]
        if n == 0:
            raise InvalidInputError(
                f"collection {self.name!r} is empty; add documents first."  # type: ignore[attr-defined]
            )
        if k > n:
            raise InvalidInputError(
                f"{what}={k} but collection {self.name!r} holds {n} documents; ask for at most "  # type: ignore[attr-defined]
                f"{n}."
            )
        return k

    def _ranked(
        self,
        vector: np.ndarray,
        k: int,
        res: _Resolved | None,
        where: dict[str, Any] | None,
    ) -> list[Hit]:
        """Top-``k`` hits for ``vector`` without the excluded ids and texts of ``res``."""
        ex_ids = sorted(res.exclude_ids) if res else []
        ex_texts = res.exclude_texts if res else set()
        n = len(self)  # type: ignore[arg-type]
        want = k + (len(ex_texts) + 4 if ex_texts else 0)
        while True:
            fetch = min(want, n, 10_000)
            hits = self.search(vector, fetch, where=where, exclude=ex_ids)  # type: ignore[attr-defined]
            kept = [h for h in hits if _norm_text(h.text) not in ex_texts] if ex_texts else hits
            if len(kept) >= k or len(hits) < fetch or fetch >= min(n, 10_000):
                return kept[:k]
            want *= 4

    def _terms(
        self,
        positive: Any,
        negative: Any,
        weights: Sequence[float] | None,
    ) -> tuple[list[tuple[Any, float, str]], int]:
        """gensim-style positive/negative lists (items or ``(item, weight)``) → triples.

        Returns:
            The ``(term, signed weight, "auto")`` triples and how many are positive.
        """
        pos, neg = _as_list(positive), _as_list(negative)
        if not pos:
            raise InvalidInputError(
                "positive is empty: give at least one text, word, id or vector to search toward."
            )
        if weights is not None:
            weights = list(weights)
            if len(weights) != len(pos) + len(neg):
                raise InvalidInputError(
                    f"weights has {len(weights)} entries for {len(pos) + len(neg)} terms; give one "
                    "per positive term, then one per negative term."
                )
        out: list[tuple[Any, float, str]] = []
        for j, (item, sign) in enumerate([(p, 1.0) for p in pos] + [(q, -1.0) for q in neg]):
            w = 1.0
            if isinstance(item, tuple) and len(item) == 2 and not _is_vector(item):
                item, w = item[0], check_weight(item[1])
            if weights is not None:
                w = check_weight(weights[j], f"weights[{j}]")
            out.append((item, sign * w, "auto"))
        return out, len(pos)

    # ------------------------------------------------------------------ arithmetic
    def expr_vector(self, expression: str) -> np.ndarray:
        """The unit vector an expression denotes (see :mod:`embedsearch.latent.expr`).

        Raises:
            ExpressionError: the expression does not parse (the message points at where).
            InvalidInputError: unknown vocabulary words, zero result.
        """
        from .expr import parse

        parsed = parse(expression)
        res = self._resolve([(t.text, t.weight, t.kind) for t in parsed.terms])
        return self._combine(res, f"expression {expression!r}")

    def expr(
        self,
        expression: str,
        k: int = 10,
        *,
        exclude_inputs: bool = True,
        where: dict[str, Any] | None = None,
    ) -> list[Hit]:
        """Search with an arithmetic expression over texts: ``king - man + woman``.

        The language: ``+``, ``-``, scalar weights (``0.5*"royal person"``, ``x / 2``),
        quoted multi-word phrases, parentheses, ``@id`` for a stored document; adjacent bare
        words form one phrase. Each term's unit vector is weighted and summed; the sum's
        direction is searched by cosine (3CosAdd when the expression is ``b - a + c``).

        Args:
            expression: the expression (see :mod:`embedsearch.latent.expr` for the grammar).
            k: number of results.
            exclude_inputs: leave out documents that are terms of the expression (the
                standard analogy protocol); False keeps them.
            where: metadata filter on the results.

        Returns:
            Hits ranked by cosine to the expression's vector.

        Raises:
            ExpressionError, InvalidInputError (unknown vocabulary words, zero result, k
            larger than the collection), DocumentNotFoundError (unknown ``@id``).

        Example:
            >>> vocab.expr("king - man + woman", k=3)[0].text
            'queen'
        """
        from .expr import parse

        k = self._check_k(k)
        parsed = parse(expression)
        res = self._resolve([(t.text, t.weight, t.kind) for t in parsed.terms])
        vector = self._combine(res, f"expression {expression!r}")
        return self._ranked(vector, k, res if exclude_inputs else None, where)

    def most_similar(
        self,
        positive: Any = None,
        negative: Any = None,
        k: int = 10,
        *,
        weights: Sequence[float] | None = None,
        exclude_inputs: bool = True,
        where: dict[str, Any] | None = None,
    ) -> list[Hit]:
        """3CosAdd: documents closest to ``sum(positive) - sum(negative)`` (gensim-compatible).

        As gensim's ``KeyedVectors.most_similar``: each term's unit vector is weighted (+1 for
        positive, -1 for negative by default), summed and normalised; results are ranked by
        cosine and the input terms are left out.

        Args:
            positive: terms to move toward (a single term or a list). An item may be a
                ``(term, weight)`` tuple.
            negative: terms to move away from.
            k: number of results.
            weights: one weight per positive term, then one per negative term (magnitudes:
                a negative term is subtracted with its weight). Unlike gensim, a tuple weight
                in ``negative`` is a magnitude too, so the term is still subtracted.
            exclude_inputs: leave the input terms out of the results.
            where: metadata filter on the results.

        Raises:
            InvalidInputError: empty ``positive``, unknown vocabulary words, zero sum, bad
                weights, ``k`` larger than the collection.

        Example:
            >>> vocab.most_similar(positive=["king", "woman"], negative=["man"], k=1)[0].id
            'queen'
        """
        k = self._check_k(k)
        res = self._resolve(self._terms(positive, negative, weights)[0])
        vector = self._combine(res, "the weighted sum of the terms")
        return self._ranked(vector, k, res if exclude_inputs else None, where)

    def most_similar_cosmul(
        self,
        positive: Any = None,
        negative: Any = None,
        k: int = 10,
        *,
        exclude_inputs: bool = True,
        where: dict[str, Any] | None = None,
    ) -> list[Hit]:
        """3CosMul (Levy & Goldberg 2014): multiplicative analogy objective (gensim-compatible).

        Score of a document ``d``: ``prod_p s(d, p) / (prod_n s(d, n) + 1e-6)`` with
        ``s = (1 + cos) / 2`` (cosines shifted to [0, 1]), as gensim's
        ``most_similar_cosmul``. Less dominated by one large similarity than 3CosAdd. The
        objective is not a single direction, so it is computed exactly over every document
        (or every one matching ``where``): O(documents) per call. Scores are that ratio, not
        cosines.

        Raises:
            InvalidInputError: empty ``positive``, unknown vocabulary words, ``k`` too large.
        """
        k = self._check_k(k)
        triples, n_pos = self._terms(positive, negative, None)
        res = self._resolve(triples)
        ids, matrix = self.select(where)  # type: ignore[attr-defined]
        if not ids:
            return []
        sims = (1.0 + matrix @ res.vectors.T) / 2.0  # (n_docs, n_terms)
        pos = np.arange(len(triples)) < n_pos
        scores = np.prod(sims[:, pos], axis=1) / (np.prod(sims[:, ~pos], axis=1) + COSMUL_EPS)
        return self._top_scored(ids, scores, k, res if exclude_inputs else None)

    def _top_scored(
        self, ids: list[str], scores: np.ndarray, k: int, res: _Resolved | None
    ) -> list[Hit]:
        """Hits for the ``k`` best ``scores`` (higher is better), minus excluded inputs."""
        scores = np.asarray(scores, dtype=np.float64).copy()
        if res and res.exclude_ids:
            pos_of = {d: i for i, d in enumerate(ids)}
            for d in res.exclude_ids:
                if d in pos_of:
                    scores[pos_of[d]] = -np.inf
        ex_texts = res.exclude_texts if res else set()
        want = k + (len(ex_texts) + 4 if ex_texts else 0)
        while True:
            m = min(want, len(ids))
            top = np.argpartition(-scores, m - 1)[:m] if m < len(ids) else np.arange(len(ids))
            top = top[np.argsort(-scores[top], kind="stable")]
            top = top[np.isfinite(scores[top])]
            docs = self.get([ids[i] for i in top])  # type: ignore[attr-defined]
            hits = [
                Hit(d.id, float(scores[i]), d.text, d.metadata)
                for i, d in zip(top, docs)
                if _norm_text(d.text) not in ex_texts
            ]
            if len(hits) >= k or m >= len(ids):
                return hits[:k]
            want *= 4

    def analogy(
        self,
        a: TermLike,
        b: TermLike,
        c: TermLike,
        k: int = 10,
        *,
        method: Literal["add", "mul", "3CosAdd", "3CosMul"] = "add",
        exclude_inputs: bool = True,
        where: dict[str, Any] | None = None,
    ) -> list[Hit]:
        """``a`` is to ``b`` as ``c`` is to ? — e.g. ``analogy("man", "king", "woman")`` → queen.

        Args:
            a, b, c: terms (texts, words, ids or vectors).
            method: ``"add"`` (3CosAdd, ``b - a + c``) or ``"mul"`` (3CosMul).

        Returns:
            Hits, best answer first; the three inputs are excluded.
        """
        m = {"add": "add", "3cosadd": "add", "mul": "mul", "3cosmul": "mul"}.get(
            str(method).lower()
        )
        if m is None:
            raise InvalidInputError(
                f"method must be 'add' (3CosAdd) or 'mul' (3CosMul), not {method!r}."
            )
        if m == "add":
            return self.most_similar([b, c], [a], k, exclude_inputs=exclude_inputs, where=where)
        return self.most_similar_cosmul([b, c], [a], k, exclude_inputs=exclude_inputs, where=where)

    def doesnt_match(self, terms: Sequence[TermLike]) -> TermLike:
        """The term that does not belong: the one least similar to the mean of all (gensim).

        Args:
            terms: two or more texts, words, ids or vectors.

        Returns:
            The odd one out, as given.

        Example:
            >>> vocab.doesnt_match(["breakfast", "cereal", "dinner", "lunch"])
            'cereal'
        """
        if isinstance(terms, str) or len(terms) < 2:
            raise InvalidInputError("doesnt_match needs a list of at least two terms.")
        res = self._resolve([(t, 1.0, "auto") for t in terms])
        mean = self._combine(res, "the mean of the terms")
        sims = res.vectors @ mean
        return terms[int(np.argmin(sims))]

    def similarity(self, x: TermLike, y: TermLike) -> float:
        """Cosine similarity of two terms (texts, words, ids or vectors), in [-1, 1]."""
        res = self._resolve([(x, 1.0, "auto"), (y, 1.0, "auto")])
        return float(np.clip(res.vectors[0].astype(np.float64) @ res.vectors[1], -1.0, 1.0))

    def centroid(
        self, terms: Sequence[TermLike], *, weights: Sequence[float] | None = None
    ) -> np.ndarray:
        """The normalised (weighted) mean direction of several terms: a unit vector.

        Args:
            terms: texts, ids (stored vectors are used) or vectors.
            weights: one per term (default 1).

        Raises:
            InvalidInputError: no terms, mismatched weights, or the terms cancel out.
        """
        if isinstance(terms, str) or _is_vector(terms) and isinstance(terms, np.ndarray):
            terms = [terms]
        terms = list(terms)
        if not terms:
            raise InvalidInputError("centroid needs at least one term.")
        if weights is not None and len(weights) != len(terms):
            raise InvalidInputError(
                f"{len(weights)} weights for {len(terms)} terms; give one each."
            )
        ws = [1.0] * len(terms) if weights is None else list(weights)
        res = self._resolve([(t, w, "auto") for t, w in zip(terms, ws)])
        return self._combine(res, "the centroid")

    def move(
        self,
        query: TermLike,
        *,
        toward: Sequence[TermLike] = (),
        away: Sequence[TermLike] = (),
        direction: Any = None,
        strength: float = 0.5,
        k: int = 10,
        exclude_inputs: bool = False,
        where: dict[str, Any] | None = None,
    ) -> list[Hit]:
        """Search from ``query`` shifted toward some concepts and away from others.

        With ``q`` the query's unit vector, ``t`` the centroid of ``toward`` and ``a`` that
        of ``away`` (unit vectors), the search vector is the direction of
        ``q + s*(t - q) - s*(a - q)`` (terms without concepts drop out): ``toward`` alone is
        a straight step a fraction ``s`` of the way to ``t``; ``away`` alone steps the same
        distance beyond ``q`` opposite ``a``; both at ``s = 1`` give ``q + t - a``, the
        analogy offset.

        Args:
            query: a text, id or vector.
            toward / away: terms (texts, ids, vectors); either may be empty.
            direction: an axis from :meth:`direction` (any vector; it is normalised): the
                search vector gains ``s * direction``, a step along the concept (e.g.
                news -> clickbait) that works for any query.
            strength: ``s`` in [0, 1]; 0 is the plain query.
            exclude_inputs: leave the query and concepts out of the results (default: keep).

        Returns:
            Hits ranked by cosine to the moved vector.
        """
        k = self._check_k(k)
        s = check_weight(strength, "strength")
        if not 0.0 <= s <= 1.0:
            raise InvalidInputError(f"strength must be in [0, 1], got {strength!r}.")
        toward = [toward] if isinstance(toward, str) else list(toward)
        away = [away] if isinstance(away, str) else list(away)
        items = [(query, 1.0, "auto")]
        items += [(t, 1.0 / len(toward), "auto") for t in toward]
        items += [(a, 1.0 / len(away), "auto") for a in away]
        res = self._resolve(items)
        q = res.vectors[0].astype(np.float64)
        v = q.copy()
        if toward:
            t = _unit(res.vectors[1 : 1 + len(toward)].astype(np.float64).sum(0), "toward")
            v += s * (t - q)
        if away:
            a = _unit(res.vectors[1 + len(toward) :].astype(np.float64).sum(0), "away")
            v -= s * (a - q)
        if direction is not None:
            v += s * _unit(
                self.as_unit_vector(direction, "direction").astype(np.float64),  # type: ignore[attr-defined]
                "direction",
            )
        vector = _unit(v, "the moved query").astype(np.float32)
        return self._ranked(vector, k, res if exclude_inputs else None, where)

    # ------------------------------------------------------------------ interpolation
    def interpolate(
        self,
        x: TermLike,
        y: TermLike,
        steps: int = 7,
        *,
        method: Literal["slerp", "lerp"] = "slerp",
        k: int = 3,
        exclude_inputs: bool = False,
        where: dict[str, Any] | None = None,
    ) -> list[InterpolationStep]:
        """Walk from one meaning to another: evenly spaced points and their nearest documents.

        Args:
            x, y: the endpoints (texts, ids or vectors).
            steps: number of points, endpoints included (2..1000).
            method: ``"slerp"`` (great-circle arc, constant angular speed; default) or
                ``"lerp"`` (straight chord, normalised for search).
            k: documents per point.
            exclude_inputs: leave documents equal to ``x`` or ``y`` out.

        Returns:
            One :class:`InterpolationStep` per point, from ``t = 0`` to ``t = 1``.

        Example:
            >>> [s.hits[0].text for s in col.interpolate("cats", "stock markets", steps=5)]
        """
        from .interpolate import lerp, slerp

        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
            raise InvalidInputError(f"steps must be an integer, got {steps!r}.")
        if not 2 <= steps <= MAX_STEPS:
            raise InvalidInputError(f"steps must be between 2 and {MAX_STEPS}, got {steps}.")
        if method not in ("slerp", "lerp"):
            raise InvalidInputError(f"method must be 'slerp' or 'lerp', not {method!r}.")
        k = self._check_k(k)
        res = self._resolve([(x, 1.0, "auto"), (y, 1.0, "auto")])
        ts = np.linspace(0.0, 1.0, int(steps))
        fn = slerp if method == "slerp" else lerp
        points = np.asarray(fn(res.vectors[0], res.vectors[1], ts), dtype=np.float64)
        out = []
        for t, p in zip(ts, points):
            norm = np.linalg.norm(p)
            if norm < 1e-9:
                raise InvalidInputError(
                    f"the straight path passes through the origin at t={t:.3f} (x and y are "
                    "opposite); use method='slerp'."
                )
            unit = (p / norm).astype(np.float32)
            hits = self._ranked(unit, k, res if exclude_inputs else None, where)
            out.append(InterpolationStep(float(t), unit, hits))
        return out

    # ------------------------------------------------------------------ structure
    def cluster(
        self,
        k: int | None = None,
        *,
        seed: int = 0,
        k_range: tuple[int, int] | None = None,
        persist: bool = False,
        field: str = "cluster",
        where: dict[str, Any] | None = None,
        n_keywords: int = 6,
    ) -> Clustering:
        """Spherical k-means over the documents, with labels and medoids.

        See :func:`embedsearch.latent.clustering.cluster_collection` (criterion for automatic
        ``k``: the best cosine silhouette over ``k_range`` on a fixed sample).

        Args:
            k: number of clusters; None chooses it automatically.
            seed: k-means and sampling seed (same seed, same collection → same clusters).
            k_range: ``(k_min, k_max)`` tried when ``k`` is None.
            persist: write each document's cluster number into its metadata under ``field``
                (an upsert: texts and vectors are unchanged), so ``where={"cluster": 3}``
                works.
            where: cluster only the matching documents.
            n_keywords: keywords per cluster label.
        """
        from .clustering import cluster_collection

        return cluster_collection(
            self,
            k,
            seed=seed,
            k_range=k_range,
            persist=persist,
            field=field,
            where=where,
            n_keywords=n_keywords,
        )

    def topics(
        self,
        *,
        level: int | None = None,
        top: int | None = None,
        leaves: int | None = None,
        levels: int = 3,
        where: dict[str, Any] | None = None,
        seed: int = 0,
        n_keywords: int = 10,
        n_medoids: int = 3,
    ) -> Topics:
        """A topic hierarchy: level 0 the top (topic count chosen from the data), deeper
        levels finer; every document is assigned at every level, outliers listed apart.

        See :mod:`embedsearch.latent.topics` for every step and why.

        Args:
            level: None returns every level; a number returns a result holding that level
                only (0 the top, -1 the finest).
            top: topics at level 0 (None: best document silhouette over the tree's cuts).
            leaves: topics at the finest level (None: ``round(sqrt(n))``, 2..256).
            levels: number of levels.
            where: only the documents matching this metadata filter.
            seed: k-means and sampling seed (same collection and seed, same topics).
            n_keywords / n_medoids: keywords and representative documents per topic.

        Example:
            >>> t = col.topics()
            >>> [tp.label for tp in t.levels[0].topics]
            ['oil prices, stocks, company', 'game, season, win', ...]
        """
        from .topics import topics_collection

        result = topics_collection(
            self,
            top=top,
            leaves=leaves,
            levels=levels,
            where=where,
            seed=seed,
            n_keywords=n_keywords,
            n_medoids=n_medoids,
        )
        if level is not None:
            result.levels = [result.level(level)]
        return result

    def direction(
        self,
        positive: Any,
        negative: Any,
        *,
        refine: int = 2,
        where: dict[str, Any] | None = None,
    ) -> np.ndarray:
        """A unit axis from examples of each end of a concept (texts, ids or vectors).

        The difference of the two examples' mean directions, refined on the collection's own
        documents (see :mod:`embedsearch.latent.directions`); ``refine=0`` keeps the plain
        difference. Use it with :meth:`along` (rank by position) or :meth:`move`.

        Args:
            positive / negative: one or more examples of each end.
            refine: refinement rounds on the collection (0: none).
            where: refine on the matching documents only.

        Example:
            >>> axis = col.direction(["Stocks fall as rates rise"], ["You won't believe this"])
            >>> col.along(axis, k=5)
        """
        from .directions import direction_vector, refine_sample

        pos, neg = _as_list(positive), _as_list(negative)
        if not pos or not neg:
            raise InvalidInputError(
                "direction needs at least one positive and one negative example "
                "(texts, ids or vectors)."
            )
        res = self._resolve([(t, 1.0, "auto") for t in pos + neg])
        background = None
        if refine and len(self):  # type: ignore[arg-type]
            with self.selection(where) as chosen:  # type: ignore[attr-defined]
                background = refine_sample(chosen.vectors)  # the rows refined on, read alone
        return direction_vector(
            res.vectors[: len(pos)], res.vectors[len(pos) :], background, refine=refine
        )

    def along(
        self,
        direction: Any,
        k: int = 10,
        *,
        end: Literal["positive", "negative"] = "positive",
        where: dict[str, Any] | None = None,
    ) -> list[Hit]:
        """Documents ranked by their position on an axis (from :meth:`direction`).

        ``Hit.score`` is the position: the cosine of the document with the unit axis.

        Args:
            direction: the axis (a vector; normalised).
            k: number of documents.
            end: ``"positive"`` (furthest toward the positive examples first) or
                ``"negative"``.
            where: only documents matching this metadata filter.
        """
        if end not in ("positive", "negative"):
            raise InvalidInputError(f"end must be 'positive' or 'negative', not {end!r}.")
        k = self._check_k(k)
        axis = self.as_unit_vector(direction, "direction")  # type: ignore[attr-defined]
        if end == "negative":
            axis = -axis
        hits = self._ranked(axis.astype(np.float32), k, None, where)
        if end == "negative":
            hits = [Hit(h.id, -h.score, h.text, h.metadata) for h in hits]
        return hits

    def outliers(
        self,
        n: int = 20,
        *,
        method: Literal["auto", "atypical", "neighbors"] = "auto",
        neighbors: int | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[Hit]:
        """The documents that least belong, most atypical first.

        ``Hit.score`` is the outlier score (higher = more of an outlier), not a similarity.

        Args:
            n: how many documents.
            method: ``"atypical"``: the cosine distance to the document's nearest
                documents beyond the closest 2 % of a random sample of the collection (finds
                off-topic *groups*; see
                :func:`embedsearch.latent.clustering.atypical_scores`). ``"neighbors"``: the
                cosine distance (1 - cosine) to the ``neighbors``-th nearest other document
                (local isolation; see :func:`embedsearch.latent.clustering.outlier_scores`).
                ``"auto"`` (default): ``"neighbors"`` when ``neighbors`` is given or fewer
                than 1,000 documents are considered, else ``"atypical"``.
            neighbors: which neighbour the ``"neighbors"`` score measures (default 10).
            where: only documents matching this metadata filter.
        """
        from .clustering import find_outliers

        return find_outliers(self, n, method=method, neighbors=neighbors, where=where)

    def map(
        self,
        path: str | os.PathLike[str],
        *,
        color_by: str | None = "cluster",
        method: Literal["auto", "pca", "umap", "pacmap", "tsne"] = "auto",
        max_points: int = 5000,
        seed: int = 0,
        where: dict[str, Any] | None = None,
        title: str | None = None,
    ) -> MapResult:
        """Save a 2-D map of the collection: ``.png`` (matplotlib) or ``.html`` (interactive).

        See :func:`embedsearch.latent.maps.save_map`. Collections larger than ``max_points`` are
        randomly sampled (seeded); the map's caption says so.

        Args:
            path: output file; its suffix picks the format (``.png`` / ``.html``).
            color_by: ``"cluster"`` (the metadata field when present, else clusters computed
                on the sample), any metadata field (dotted paths allowed), or None.
            method: ``"auto"`` (default: up to 5,000 drawn points t-SNE when openTSNE is
                installed, else UMAP, else PaCMAP, else PCA; PCA above 5,000 points), or one
                of ``"pca"`` (always available, instant, but linear: neighbourhoods overlap),
                ``"umap"``, ``"pacmap"``, ``"tsne"``. Chosen by trustworthiness and time (see
                docs/latent.md).
        """
        from .maps import save_map

        return save_map(
            self,
            path,
            color_by=color_by,
            method=method,
            max_points=max_points,
            seed=seed,
            where=where,
            title=title,
        )


def _unit(v: np.ndarray, what: str) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    if norm < 1e-9 or not math.isfinite(norm):
        raise InvalidInputError(f"{what} is the zero vector (its terms cancel out).")
    return v / norm


__all__ = ["InterpolationStep", "LatentMixin", "check_weight"]
