"""Model-based tests: random add/upsert/delete/compact/reopen/search vs an exact reference.

A Hypothesis ``RuleBasedStateMachine`` drives a real collection (real encoder, real FAISS,
real files) and, in parallel, a plain dict of ``id -> (text, metadata, vector)`` searched
by brute-force numpy. After every step the two must agree:

* exact collections (``auto`` = Flat here): the same ids (up to ties) and scores within
  :data:`SCORE_TOL`, with and without ``where`` filters and ``exclude``;
* approximate collections (``IVF16,Flat`` / ``HNSW16`` over 300+ real embeddings): every hit
  is live, passes the filter and carries its exact score, results are sorted, exactly
  ``min(k, matches)`` come back, searching with ``nprobe`` = all cells (IVF) or
  ``exact=True`` equals the reference, and the mean recall@k of default searches over all
  runs of the test (and over each run of at least :data:`MIN_SEARCHES_PER_RUN` searches)
  is at least :data:`RECALL_BOUND`.

Texts come from the bundled demo corpus (350 real sentences); the collection embeds them
with the real model, the reference uses the session's batch embeddings of the same texts
(they agree to ~1e-7). Query vectors are either corpus embeddings or seeded random unit
vectors, so the reference knows them exactly.

Scale with ``ES_STATEFUL_EXAMPLES`` (default 12 for the exact machine, a quarter of that
for each approximate one) and ``ES_STATEFUL_STEPS`` (default 30). Reproduce::

    .venv/bin/pytest tests/test_reliability_stateful.py -q
    ES_STATEFUL_EXAMPLES=300 ES_STATEFUL_STEPS=60 .venv/bin/pytest tests/test_reliability_stateful.py
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import embedsearch
from embedsearch import DocumentNotFoundError, DuplicateIdError

SCORE_TOL = 1e-5
RECALL_BOUND = 0.90  # mean recall@k of default-parameter searches, over all runs of a test
#: A single run's mean is checked against the bound only when it holds this many searches:
#: a 2-search run that meets one hard query (recall 0.7 at IVF16/nprobe 8) is noise.
MIN_SEARCHES_PER_RUN = 20
EXAMPLES = int(os.environ.get("ES_STATEFUL_EXAMPLES", "12"))
STEPS = int(os.environ.get("ES_STATEFUL_STEPS", "30"))
ID_POOL = [f"d{i}" for i in range(40)]  # small, so upserts and deletes hit existing ids
STATS: dict[str, dict[str, float]] = {}

# ----------------------------------------------------------------------------- reference
_MISSING = object()


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _eq(a: Any, b: Any) -> bool:
    if a is _MISSING:
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if _is_num(a) and _is_num(b):
        return float(a) == float(b)
    return type(a) is type(b) and a == b


def ref_match(meta: dict[str, Any] | None, flt: dict[str, Any]) -> bool:
    """An independent reading of the documented filter semantics (MongoDB-like)."""
    meta = meta or {}
    for key, cond in flt.items():
        if key == "$and":
            ok = all(ref_match(meta, f) for f in cond)
        elif key == "$or":
            ok = any(ref_match(meta, f) for f in cond)
        elif key == "$not":
            ok = not ref_match(meta, cond)
        else:
            val = meta.get(key, _MISSING)
            ops = cond if isinstance(cond, dict) else {"$eq": cond}
            ok = all(_ref_op(val, op, arg) for op, arg in ops.items())
        if not ok:
            return False
    return True


def _ref_op(val: Any, op: str, arg: Any) -> bool:
    if op == "$eq":
        return _eq(val, arg)
    if op == "$ne":
        return not _eq(val, arg)
    if op == "$in":
        return any(_eq(val, a) for a in arg)
    if op == "$nin":
        return not any(_eq(val, a) for a in arg)
    if op == "$exists":
        return (val is not _MISSING) == arg
    comparable = (_is_num(val) and _is_num(arg)) or (isinstance(val, str) and isinstance(arg, str))
    if not comparable:
        return False
    return {"$gt": val > arg, "$gte": val >= arg, "$lt": val < arg, "$lte": val <= arg}[op]


def ref_scores(
    model: dict[str, tuple[str, Any, np.ndarray]],
    q: np.ndarray,
    where: dict[str, Any] | None,
    exclude: list[str],
) -> dict[str, float]:
    """Exact cosine score of every live document that passes ``where`` and ``exclude``."""
    out = {}
    for doc_id, (_text, meta, vec) in model.items():
        if doc_id in exclude or (where is not None and not ref_match(meta, where)):
            continue
        out[doc_id] = float(vec @ q)
    return out


def check_exact(hits: list[Any], scores: dict[str, float], k: int) -> None:
    """The hits are a correct exact top-k: same scores rank by rank, ids correct up to ties."""
    want = sorted(scores.values(), reverse=True)[: min(k, len(scores))]
    assert len(hits) == len(want), (len(hits), len(want))
    assert len({h.id for h in hits}) == len(hits), "duplicate ids in one result list"
    for h, w in zip(hits, want):
        assert h.id in scores, f"{h.id} is deleted, filtered out or excluded"
        assert abs(h.score - scores[h.id]) < SCORE_TOL, (h.id, h.score, scores[h.id])
        assert abs(h.score - w) < SCORE_TOL, (h.id, h.score, w)


def check_approximate(hits: list[Any], scores: dict[str, float], k: int) -> float:
    """Every hit valid and exactly scored, sorted, k of them; returns recall@k (tie-aware)."""
    want = sorted(scores.values(), reverse=True)[: min(k, len(scores))]
    assert len(hits) == len(want), (len(hits), len(want))
    assert len({h.id for h in hits}) == len(hits), "duplicate ids in one result list"
    for h in hits:
        assert h.id in scores, f"{h.id} is deleted, filtered out or excluded"
        assert abs(h.score - scores[h.id]) < SCORE_TOL, (h.id, h.score, scores[h.id])
    assert all(a.score >= b.score - 1e-7 for a, b in zip(hits, hits[1:]))
    if not want:
        return 1.0
    kth = want[-1]
    return sum(scores[h.id] >= kth - SCORE_TOL for h in hits) / len(want)


# ----------------------------------------------------------------------------- strategies
metadata_st = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "g": st.integers(0, 3),
            "x": st.sampled_from([0.5, 1.0, 1.5, 2.25, 3.0]),
            "tag": st.sampled_from(["a", "b", "c"]),
            "flag": st.booleans(),
        },
    ),
)
leaf_filter_st = st.one_of(
    st.builds(lambda v: {"g": v}, st.integers(0, 3)),
    st.builds(lambda vs: {"g": {"$in": vs}}, st.lists(st.integers(0, 3), min_size=1, max_size=3)),
    st.builds(lambda vs: {"g": {"$nin": vs}}, st.lists(st.integers(0, 3), min_size=1, max_size=2)),
    st.builds(
        lambda op, v: {"x": {op: v}},
        st.sampled_from(["$gt", "$gte", "$lt", "$lte"]),
        st.sampled_from([0.5, 1.5, 2, 3.0]),
    ),
    st.builds(
        lambda op, v: {"g": {op: v}},
        st.sampled_from(["$gt", "$gte", "$lt", "$lte"]),
        st.integers(0, 3),
    ),
    st.builds(lambda v: {"tag": {"$ne": v}}, st.sampled_from(["a", "b"])),
    st.builds(lambda v: {"tag": {"$gte": v}}, st.sampled_from(["a", "b", "c"])),
    st.builds(lambda b: {"flag": {"$exists": b}}, st.booleans()),
    st.builds(lambda b: {"flag": b}, st.booleans()),
)
filter_st = st.one_of(
    st.none(),
    leaf_filter_st,
    st.builds(lambda fs: {"$or": fs}, st.lists(leaf_filter_st, min_size=1, max_size=3)),
    st.builds(lambda fs: {"$and": fs}, st.lists(leaf_filter_st, min_size=1, max_size=2)),
    st.builds(lambda f: {"$not": f}, leaf_filter_st),
    st.builds(lambda a, b: {**a, **b}, leaf_filter_st, leaf_filter_st),
)


# ----------------------------------------------------------------------------- machine
class CollectionMachine(RuleBasedStateMachine):
    """One real collection against a dict; subclassed per index kind by :func:`machine_for`."""

    texts: list[str] = []
    vecs: np.ndarray = np.zeros((0, 384), dtype=np.float32)
    spec: str = "auto"
    template: Path | None = None
    template_model: dict[str, tuple[str, Any, np.ndarray]] = {}
    base: Path = Path(tempfile.gettempdir())
    stats_key: str = "exact"

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(dir=self.base))
        self.path = self.dir / "col"
        self.model: dict[str, tuple[str, Any, np.ndarray]] = {}
        self.recalls: list[float] = []
        self.col: Any = None
        stats = STATS.setdefault(
            self.stats_key, {"examples": 0, "steps": 0, "searches": 0, "recall_sum": 0.0}
        )
        stats["examples"] += 1
        self.stats = stats

    @initialize()
    def start(self) -> None:
        if self.template is not None:
            shutil.copytree(self.template, self.path)
            self.model = dict(self.template_model)
            self.col = embedsearch.open(self.path)
        else:
            self.col = embedsearch.open(self.path, index=self.spec)

    def teardown(self) -> None:
        if self.col is not None:
            self.col.close()
        if self.recalls:
            mean = float(np.mean(self.recalls))
            self.stats["recall_sum"] += mean
            self.stats["min_recall"] = min(self.stats.get("min_recall", 1.0), mean)
            self.stats.setdefault("recalls", []).extend(self.recalls)
            if len(self.recalls) >= MIN_SEARCHES_PER_RUN:
                assert mean >= RECALL_BOUND, f"mean recall@k {mean:.3f} < {RECALL_BOUND}"
        shutil.rmtree(self.dir, ignore_errors=True)

    # ----------------------------------------------------------------- writes
    def _docs(self, ids: list[str], text_idx: list[int], metas: list[Any]) -> list[tuple]:
        n = len(ids)
        return [(ids[i], text_idx[i % len(text_idx)], metas[i % len(metas)]) for i in range(n)]

    @rule(
        ids=st.lists(st.sampled_from(ID_POOL), min_size=1, max_size=6, unique=True),
        text_idx=st.lists(st.integers(0, 349), min_size=1, max_size=6),
        metas=st.lists(metadata_st, min_size=1, max_size=6),
    )
    def add(self, ids: list[str], text_idx: list[int], metas: list[Any]) -> None:
        docs = self._docs(ids, text_idx, metas)
        texts = [self.texts[t] for _, t, _ in docs]
        if any(d in self.model for d in ids):
            with pytest.raises(DuplicateIdError):
                self.col.add(texts, ids=ids, metadata=[m for _, _, m in docs])
            return
        assert self.col.add(texts, ids=ids, metadata=[m for _, _, m in docs]) == ids
        for doc_id, t, m in docs:
            self.model[doc_id] = (self.texts[t], m, self.vecs[t])

    @rule(
        ids=st.lists(st.sampled_from(ID_POOL), min_size=1, max_size=6, unique=True),
        text_idx=st.lists(st.integers(-1, 349), min_size=1, max_size=6),
        metas=st.lists(metadata_st, min_size=1, max_size=6),
    )
    def upsert(self, ids: list[str], text_idx: list[int], metas: list[Any]) -> None:
        """-1 as text index keeps the current text (a metadata-only update)."""
        docs = []
        for doc_id, t, m in self._docs(ids, text_idx, metas):
            if t == -1:
                t = self.texts.index(self.model[doc_id][0]) if doc_id in self.model else 0
            docs.append((doc_id, t, m))
        self.col.upsert(
            [self.texts[t] for _, t, _ in docs], ids=ids, metadata=[m for _, _, m in docs]
        )
        for doc_id, t, m in docs:
            self.model[doc_id] = (self.texts[t], m, self.vecs[t])

    @rule(
        ids=st.lists(st.sampled_from(ID_POOL), min_size=1, max_size=8, unique=True),
        missing_ok=st.booleans(),
    )
    def delete(self, ids: list[str], missing_ok: bool) -> None:
        present = [d for d in ids if d in self.model]
        if len(present) < len(ids) and not missing_ok:
            with pytest.raises(DocumentNotFoundError):
                self.col.delete(ids)
            return
        assert self.col.delete(ids, missing_ok=missing_ok) == len(present)
        for d in present:
            del self.model[d]

    @rule()
    def compact(self) -> None:
        stats = self.col.compact()
        assert stats["rows_after"] == len(self.model)

    @rule()
    def reopen(self) -> None:
        self.col.close()
        self.col = embedsearch.open(self.path)

    # ----------------------------------------------------------------- reads
    def _query(self, qsrc: int) -> np.ndarray:
        if qsrc < len(self.texts):
            return self.vecs[qsrc]
        v = np.random.default_rng(qsrc).standard_normal(self.vecs.shape[1]).astype(np.float32)
        return v / np.linalg.norm(v)

    @rule(
        qsrc=st.integers(0, 449),
        k=st.integers(1, 15),
        where=filter_st,
        n_exclude=st.integers(0, 2),
    )
    def search(self, qsrc: int, k: int, where: dict | None, n_exclude: int) -> None:
        self._check_search(self._query(qsrc), k, where, sorted(self.model)[:n_exclude])

    def _check_search(self, q: np.ndarray, k: int, where: dict | None, exclude: list[str]) -> None:
        scores = ref_scores(self.model, q, where, exclude)
        hits = self.col.search(q, k=k, where=where, exclude=exclude or None)
        self.stats["searches"] += 1
        for h in hits:
            text, meta, _ = self.model[h.id]
            assert h.text == text and h.metadata == (meta or {})
        if self.spec == "auto":
            check_exact(hits, scores, k)
        else:
            self.recalls.append(check_approximate(hits, scores, k))
            excl = exclude or None
            check_exact(self.col.search(q, k=k, where=where, exclude=excl, exact=True), scores, k)
            if self.spec.startswith("IVF"):  # every cell probed: exact again
                check_exact(
                    self.col.search(q, k=k, where=where, exclude=excl, nprobe=16), scores, k
                )

    @rule(t=st.integers(0, 349), k=st.integers(1, 8))
    def search_text(self, t: int, k: int) -> None:
        """A text query goes through the real encoder; the reference knows its vector."""
        hits = self.col.search(self.texts[t], k=k, exact=True)
        check_exact(hits, ref_scores(self.model, self.vecs[t], None, []), k)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.model)), min_size=1, max_size=5))
        docs = self.col.get(ids, include_vectors=True)
        for d in docs:
            text, meta, vec = self.model[d.id]
            assert (d.text, d.metadata) == (text, meta or {})
            assert float(d.vector @ vec) > 1 - 1e-5

    @invariant()
    def same_documents(self) -> None:
        if self.col is None:
            return
        self.stats["steps"] += 1
        assert len(self.col) == len(self.model)
        assert sorted(self.col.ids()) == sorted(self.model)
        # one unfiltered top-10 search per step, query cycling through the corpus
        self._check_search(self.vecs[int(self.stats["steps"]) % len(self.vecs)], 10, None, [])


def machine_for(spec: str, texts: list[str], vecs: np.ndarray, base: Path, **extra: Any) -> type:
    return type(
        f"Machine_{spec.replace(',', '_')}",
        (CollectionMachine,),
        {"texts": texts, "vecs": vecs, "spec": spec, "base": base, **extra},
    )


def _settings(examples: int) -> settings:
    return settings(
        max_examples=max(1, examples),
        stateful_step_count=STEPS,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture(scope="module")
def corpus(demo_rows: list[dict[str, Any]], demo_vectors: np.ndarray) -> tuple[list[str], Any]:
    return [r["text"] for r in demo_rows], np.asarray(demo_vectors, dtype=np.float32)


def test_exact_collection_matches_reference(tmp_path: Path, corpus: tuple) -> None:
    texts, vecs = corpus
    machine = machine_for("auto", texts, vecs, tmp_path, stats_key="exact")
    run_state_machine_as_test(machine, settings=_settings(EXAMPLES))
    _dump_stats()


@pytest.mark.parametrize("spec", ["IVF16,Flat", "HNSW16"])
def test_approximate_collection_matches_reference(
    tmp_path: Path, corpus: tuple, demo_rows: list[dict[str, Any]], spec: str
) -> None:
    """300 real embeddings preloaded (copied from a template per example), then random ops."""
    texts, vecs = corpus
    template = tmp_path / "template"
    col = embedsearch.open(template, index=spec)
    pre = 300
    metas = [
        {"g": i % 4, "x": [0.5, 1.0, 1.5, 2.25, 3.0][i % 5], "tag": "abc"[i % 3]}
        for i in range(pre)
    ]
    ids = [f"s{i}" for i in range(pre)]
    col.add(texts[:pre], ids=ids, metadata=metas)
    assert col.info()["index"]["kind"] == "approximate"
    col.close()
    model = {ids[i]: (texts[i], metas[i], vecs[i]) for i in range(pre)}
    machine = machine_for(
        spec, texts, vecs, tmp_path, template=template, template_model=model, stats_key=spec
    )
    STATS.get(spec, {}).pop("recalls", None)
    run_state_machine_as_test(machine, settings=_settings(max(2, EXAMPLES // 4)))
    recalls = STATS.get(spec, {}).pop("recalls", [])
    _dump_stats()
    if recalls:
        assert float(np.mean(recalls)) >= RECALL_BOUND, (spec, float(np.mean(recalls)))


def _dump_stats() -> None:
    out = os.environ.get("ES_RELIABILITY_REPORT")
    if out:
        Path(out).write_text(json.dumps({"stateful": STATS}, indent=1))


# ----------------------------------------------------------------------------- filter semantics
# Regression tests for two fixed filter bugs: an int field against a float bound, and
# booleans in $in (True == 1 in Python, not in a filter).
@pytest.mark.parametrize("op", ["$gt", "$gte", "$lt", "$lte"])
def test_int_field_against_float_bound(op: str) -> None:
    from embedsearch.filters import compile_filter

    value = {"$gt": 2009.5, "$gte": 2009.5, "$lt": 2010.5, "$lte": 2010.5}[op]
    assert ref_match({"year": 2010}, {"year": {op: value}})
    assert compile_filter({"year": {op: value}})({"year": 2010})


def test_in_is_as_strict_about_booleans_as_eq() -> None:
    from embedsearch.filters import compile_filter

    assert not compile_filter({"flag": 1})({"flag": True})
    assert not compile_filter({"flag": {"$in": [1]}})({"flag": True})
    assert compile_filter({"flag": {"$nin": [0]}})({"flag": False})
