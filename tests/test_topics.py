"""Topic hierarchy, directions and the label rules, on the packaged demo corpus (14 topics)."""

from __future__ import annotations

import numpy as np
import pytest

from embedsearch.errors import InvalidInputError
from embedsearch.latent.topics import (
    build_topics,
    countable_words,
    ctfidf,
    label_weights,
    npmi_coherence,
    pick_keywords,
    stop_words,
    topic_diversity,
    ward_tree,
)


@pytest.fixture(scope="module")
def topics(demo_col):
    return demo_col.topics()


def test_every_document_assigned_at_every_level_and_levels_nest(topics, demo_col) -> None:
    assert len(topics.levels) >= 2
    n = len(demo_col)
    ks = [lv.k for lv in topics.levels]
    assert ks == sorted(ks) and len(set(ks)) == len(ks)  # finer and finer
    for lv in topics.levels:
        assert len(lv.labels) == n and lv.labels.min() >= 0 and lv.labels.max() == lv.k - 1
        assert sum(t.size for t in lv.topics) == n
    for upper, lower in zip(topics.levels, topics.levels[1:]):
        # nested: each finer topic lies inside exactly one coarser topic
        for t in range(lower.k):
            parents = set(upper.labels[lower.labels == t].tolist())
            assert len(parents) == 1
            assert lower.topics[t].parent == parents.pop()
            assert t in upper.topics[lower.topics[t].parent].children


def test_levels_follow_the_labelled_topics(topics, demo_rows) -> None:
    from sklearn.metrics import v_measure_score

    truth = {r["id"]: r["topic"] for r in demo_rows}
    finest = topics.levels[-1]
    v = v_measure_score([truth[i] for i in topics.ids], finest.labels)
    assert v > 0.75, v  # 14 clean topics: the finest cut must find most of them


def test_labels_are_words_of_the_topic_and_medoids_are_members(topics, demo_col) -> None:
    stop = stop_words()
    for lv in topics.levels:
        for t in lv.topics:
            assert t.keywords, t
            members = {topics.ids[i] for i in np.flatnonzero(lv.labels == t.id)}
            assert t.medoids and all(mid in members for mid, _ in t.medoids)
            for kw in t.keywords:
                assert not any(ch.isdigit() for ch in kw)
                assert not any(w in stop for w in kw.split()), kw
    # the finest level of the demo names its subjects: some label has a cooking word
    labels = " ".join(t.label for t in topics.levels[-1].topics)
    assert any(w in labels for w in ("cooking", "pan", "oven", "dough", "bread", "sauce"))


def test_outliers_are_a_subset_and_stay_assigned(topics) -> None:
    ids = set(topics.ids)
    assert set(topics.outliers) <= ids
    assert len(topics.outliers) < 0.1 * len(ids)


def test_given_top_level_and_level_selection(demo_col) -> None:
    t = demo_col.topics(top=3, levels=2, level=0)
    assert len(t.levels) == 1 and t.levels[0].k == 3
    assert t.criterion == "given"
    d = t.to_dict(include_ids=True)
    assert len(d["assignments"][0]) == len(demo_col)


def test_bad_arguments_name_the_argument(demo_col) -> None:
    with pytest.raises(InvalidInputError, match="top"):
        demo_col.topics(top=0)
    with pytest.raises(InvalidInputError, match="leaves"):
        demo_col.topics(leaves=10**6)
    with pytest.raises(InvalidInputError, match="levels"):
        demo_col.topics(levels=0)
    with pytest.raises(InvalidInputError, match="level must be between"):
        demo_col.topics(level=7)


def test_html_fragments_and_numbers_never_become_keywords() -> None:
    texts = [
        "Oil prices rise &lt;b&gt;again&lt;/b&gt; as crude oil prices climb 39 percent #39;s",
        "Crude oil prices jump; oil prices at record quot high quot 2004",
        "Oil prices and crude supply worry traders &amp; markets",
        "The team won the game in overtime, the game was close",
        "Game day: the team wins the final game of the season",
        "Season opener: team loses first game",
    ]
    groups = np.array([0, 0, 0, 1, 1, 1])
    vocab, [(counts, weights)] = ctfidf(texts, [groups], stop_words())
    kw0 = pick_keywords(vocab, counts[0], weights[0], 5)
    assert kw0[0] == "oil prices"  # the phrase, not the bare word
    joined = " ".join(pick_keywords(vocab, counts[1], weights[1], 10) + kw0)
    for bad in ("lt", "gt", "quot", "amp", "39", "2004", "the"):
        assert bad not in joined.split(), (bad, joined)


def test_ward_tree_matches_scipy_on_single_documents() -> None:
    from scipy.cluster.hierarchy import linkage

    x = np.random.default_rng(0).normal(size=(30, 5))
    ours = ward_tree(x, np.ones(30))
    ref = linkage(x, "ward")
    assert np.allclose(np.sort(ours[:, 2]), np.sort(ref[:, 2]))


def test_coherence_and_diversity_measures() -> None:
    texts = ["apple banana", "apple banana", "car engine", "car engine", "apple car"]
    good = npmi_coherence([["apple", "banana"], ["car", "engine"]], texts)
    bad = npmi_coherence([["apple", "engine"], ["car", "banana"]], texts)
    assert good > 0.5 > bad
    assert topic_diversity([["a", "b"], ["a", "c"]]) == 0.75


def test_build_topics_needs_two_documents() -> None:
    with pytest.raises(InvalidInputError, match="at least 2"):
        build_topics(["a"], np.ones((1, 4), np.float32) / 2, lambda rows: ["x"])


# ----------------------------------------------------------------------------- directions
def test_direction_separates_two_topics_and_along_ranks_by_it(demo_col, demo_rows) -> None:
    from sklearn.metrics import roc_auc_score

    cooking = [r["id"] for r in demo_rows if r["topic"] == "cooking"]
    finance = [r["id"] for r in demo_rows if r["topic"] == "finance"]
    axis = demo_col.direction(positive=cooking[:3], negative=finance[:3])
    assert axis.shape == (demo_col.dim,) and abs(float(np.linalg.norm(axis)) - 1) < 1e-5
    rest = cooking[3:] + finance[3:]
    pos = demo_col.vectors(rest) @ axis
    assert roc_auc_score([1] * len(cooking[3:]) + [0] * len(finance[3:]), pos) > 0.95
    top = demo_col.along(axis, k=5, where={"topic": {"$in": ["cooking", "finance"]}})
    assert all(h.metadata["topic"] == "cooking" for h in top)
    assert [h.score for h in top] == sorted((h.score for h in top), reverse=True)
    low = demo_col.along(
        axis, k=5, end="negative", where={"topic": {"$in": ["cooking", "finance"]}}
    )
    assert all(h.metadata["topic"] == "finance" for h in low)
    assert low[0].score < top[-1].score


def test_move_along_a_direction_reaches_the_positive_side(demo_col, demo_rows) -> None:
    music = [r["id"] for r in demo_rows if r["topic"] == "music"]
    sports = [r["id"] for r in demo_rows if r["topic"] == "sports"]
    axis = demo_col.direction(music[:3], sports[:3], refine=0)
    moved = demo_col.move("the team scored in the final minute", direction=axis, strength=1.0, k=5)
    plain = demo_col.move("the team scored in the final minute", strength=0.0, k=5)
    topic = {r["id"]: r["topic"] for r in demo_rows}
    assert sum(topic[h.id] == "music" for h in moved) > sum(topic[h.id] == "music" for h in plain)


def test_direction_errors(demo_col) -> None:
    with pytest.raises(InvalidInputError, match="positive and one negative"):
        demo_col.direction(["cats"], [])
    with pytest.raises(InvalidInputError, match="same"):
        demo_col.direction(["cats"], ["cats"], refine=0)
    with pytest.raises(InvalidInputError, match="end"):
        demo_col.along(np.ones(demo_col.dim), end="up")


def test_smoothing_is_repeated_neighbour_means_and_pulls_groups_together() -> None:
    import faiss

    from embedsearch.latent.topics import SMOOTH_ROUNDS, smooth

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 24))
    group = rng.integers(0, 3, 400)
    x = centres[group] + rng.normal(scale=1.5, size=(400, 24))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    u = smooth(x, neighbors=7, rounds=3)
    # the same as three rounds of "unit mean of the 7 nearest (itself included)", done by hand
    index = faiss.IndexFlatIP(24)
    index.add(x)
    _, pos = index.search(x, 7)
    ref = x.astype(np.float64)
    for _ in range(3):
        ref = ref[pos].mean(axis=1)
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(u, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, atol=1e-5)

    def within(v: np.ndarray) -> float:  # mean cosine of a document to its group's other members
        sims = v @ v.T
        same = (group[:, None] == group[None, :]) & ~np.eye(len(v), dtype=bool)
        return float(sims[same].mean())

    assert within(smooth(x)) > within(u) > within(x) + 0.1  # more rounds, tighter groups
    assert SMOOTH_ROUNDS > 3  # the default (used above) is more rounds than ``u``'s three
    small = x[:5]
    assert smooth(small, neighbors=7) is small  # no more documents than neighbours: unchanged


def _two_by_two(sep: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """400 vectors: 2 groups of 2 sub-groups (``sep`` apart), 8 given leaves, their tree."""
    rng = np.random.default_rng(0)
    sup = rng.normal(size=(2, 32))
    sub = sup[[0, 0, 1, 1]] + rng.normal(size=(4, 32)) * sep
    group = np.repeat(np.arange(4), 100)
    x = sub[group] + rng.normal(size=(400, 32))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    leaf = group * 2 + np.arange(400) % 2
    means = np.zeros((8, 32))
    np.add.at(means, leaf, x)
    sizes = np.bincount(leaf).astype(np.float64)
    return x, leaf, ward_tree(means / sizes[:, None], sizes)


def test_top_level_takes_the_fewest_topics_within_the_tolerance_of_the_best() -> None:
    from embedsearch.latent.topics import TOP_TOLERANCE, choose_top

    # sub-groups barely apart: 3 topics score a hair above 2, a tie within the tolerance
    k, scores = choose_top(*_two_by_two(1.0), k_max=6)
    best = max(scores, key=scores.get)
    assert best == 3 and scores[2] >= (1 - TOP_TOLERANCE) * scores[3]
    assert k == 2
    # sub-groups clearly apart: 4 topics win by far more than the tolerance and are taken
    k, scores = choose_top(*_two_by_two(2.0), k_max=6)
    assert k == 4 == max(scores, key=scores.get)
    assert scores[3] < (1 - TOP_TOLERANCE) * scores[4]


def test_ctfidf_binary_counts_documents_and_minus_one_leaves_a_text_out() -> None:
    texts = ["oil oil oil prices", "oil supply", "team game", "team wins game", "oil team"]
    groups = np.array([0, 0, 1, 1, -1])  # the last text is in no group
    vocab, [(counts, _)] = ctfidf(texts, [groups], frozenset(), binary=True)
    col = {str(w): j for j, w in enumerate(vocab)}
    assert counts[0, col["oil"]] == 2  # two documents, not four occurrences
    assert counts[1, col["team"]] == 2  # "oil team" is left out
    _, [(raw, _)] = ctfidf(texts, [groups], frozenset())
    assert raw[0, col["oil"]] == 4


def test_label_weights_keep_a_term_in_its_strongest_topic_and_need_shared_words() -> None:
    counts = np.array([[5.0, 3.0, 1.0, 0.0], [2.0, 4.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    weights = np.array([[0.5, 0.2, 0.9, 0.0], [0.3, 0.4, 0.0, 0.0], [0.0, 0.0, 0.1, 0.3]])
    w = label_weights(counts, weights, min_docs=2)
    # term 0 names topic 0 only, term 1 topic 1 only
    assert w[0, 0] == 0.5 and w[1, 0] == 0.0 and w[1, 1] == 0.4 and w[0, 1] == 0.0
    # term 2 weighs most in topic 0 but is in one of its documents: dropped there
    assert w[0, 2] == 0.0 and w[2, 2] == 0.0
    # topic 2 has no term in 2 documents: it keeps what it has rather than no label at all
    assert w[2, 3] == 0.3
    assert weights[0, 2] == 0.9  # a copy


def test_countable_words_pass_over_what_the_tokenizer_does_not_count() -> None:
    texts = ["the oil prices rose", "oil prices fell", "crude oil 2004", "team wins the game"]
    # BERTopic's default lists can hold stop words and numbers: the next words stand in
    words = countable_words([["the", "oil", "2004", "prices", "crude"]], texts, top=3)
    assert words == [["oil", "prices", "crude"]]
    assert countable_words([["oil prices", "crude oil"]], texts) == [["oil", "prices", "crude"]]
    # diversity on the same words as NPMI: "the" does not count against a list
    assert topic_diversity([["the", "oil"], ["the", "game"]], texts=texts) == 1.0
    assert topic_diversity([["the", "oil"], ["the", "game"]]) == 0.75


def test_labels_of_one_level_do_not_repeat_a_term(topics) -> None:
    for lv in topics.levels:
        terms = [kw for t in lv.topics for kw in t.keywords]
        assert len(terms) == len(set(terms)), lv.k


def test_labels_read_from_topic_cores_beat_whole_topic_ctfidf(topics, demo_col) -> None:
    """The label rules (core half, document counts, a term in one topic per level, in 2+
    documents) against plain c-TF-IDF over every member, on the demo corpus: more coherent
    and more diverse at every level (as on the benchmark's three corpora)."""
    texts = [d.text for d in demo_col.get(topics.ids)]
    for lv in topics.levels:
        ours = [t.keywords for t in lv.topics]
        vocab, [(counts, weights)] = ctfidf(texts, [lv.labels])
        plain = [pick_keywords(vocab, counts[t], weights[t], 10) for t in range(lv.k)]
        assert npmi_coherence(ours, texts) > npmi_coherence(plain, texts) + 0.05, lv.k
        assert topic_diversity(ours, texts=texts) >= topic_diversity(plain, texts=texts), lv.k


def test_ward_tree_with_groups_merges_within_each_group_first() -> None:
    from embedsearch.latent.topics import cut, ward_tree

    rng = np.random.default_rng(0)
    means = rng.normal(size=(12, 5))
    sizes = rng.integers(1, 20, 12).astype(np.float64)
    groups = np.array([0, 1, 2] * 4)  # interleaved: plain Ward has no reason to follow them
    plain = cut(ward_tree(means, sizes), 3)
    assert len({(int(g), int(p)) for g, p in zip(groups, plain)}) > 3  # it does not
    tree = ward_tree(means, sizes, groups=groups)
    assert np.all(np.diff(tree[:, 2]) >= 0)  # a valid linkage (scipy cuts it)
    top = cut(tree, 3)
    assert len({(int(g), int(t)) for g, t in zip(groups, top)}) == 3  # the cut is the groups
    for k in range(4, 12):  # every finer cut splits within a group
        lab = cut(tree, k)
        assert all(len(set(groups[lab == c].tolist())) == 1 for c in np.unique(lab))


def test_leaf_word_profiles_drop_boilerplate_and_scale_beside_the_means() -> None:
    from embedsearch.latent.topics import leaf_profiles, with_words

    counts = np.array(
        [[9, 0, 3, 5], [0, 8, 3, 5], [1, 1, 3, 5], [2, 4, 3, 5]], dtype=np.float64
    )  # terms 2 and 3 in every leaf alike: boilerplate once common enough
    prof = leaf_profiles(counts, texts=40)
    assert np.allclose(prof[:, 2:], 0.0) and np.allclose(np.linalg.norm(prof, axis=1), 1.0)
    assert prof[0, 0] > prof[0, 1] and prof[1, 1] > prof[1, 0]
    means = np.random.default_rng(1).normal(size=(4, 3))
    both = with_words(means, prof)
    assert both.shape == (4, 7) and np.array_equal(both[:, :3], means)  # 4 leaves: 4 dims

    def dists(a: np.ndarray) -> np.ndarray:
        return ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)

    ratio = dists(both[:, 3:])[np.triu_indices(4, 1)] / dists(prof)[np.triu_indices(4, 1)]
    assert np.allclose(ratio, ratio[0])  # the profiles' geometry, scaled: no term dimension

    def spread(a: np.ndarray) -> float:
        d = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
        return float(d[np.triu_indices(len(a), 1)].mean())

    assert spread(both[:, 3:]) == pytest.approx(spread(means))  # WORDS_WEIGHT = 1: equal
    assert with_words(means, None) is means
