"""Latent-space layer on real data: word analogies, word similarity, topic clustering, maps.

What it measures (default model all-MiniLM-L6-v2, torch backend):

1. The default :class:`~embedsearch.Vocabulary` (whole words of the tokenizer), built once
   under ``EMBEDSEARCH_HOME`` (or ``--home``) and reused — the same one
   ``embedsearch analogy`` uses. Rank of ``queen`` for ``king - man + woman`` (3CosAdd and
   3CosMul).
2. Google's questions-words: accuracy per section for 3CosAdd and 3CosMul, with the number
   of questions skipped for out-of-vocabulary words (gensim protocol).
3. WordSim-353: Spearman (and Pearson) of cosine vs human scores.
4. AG News test (7,600 items, 4 topics; ``title. text``): spherical k-means agreement with
   the topics (adjusted Rand index, V-measure; scikit-learn) for k=4 and automatic k.
5. Maps of the news headlines: the collection holds a seeded sample of ``--headlines``
   headlines (8,000 by default, all 32,000 with ``--full``); each map draws at most 5,000
   of them (seeded). A PNG coloured by ``kind`` (news vs clickbait), an HTML map coloured by
   computed clusters, and a PNG by cluster, under ``benchmarks/results/``.

Topics against BERTopic, map quality (trustworthiness), direction AUCs and outlier
precision are measured by ``benchmarks/latent_structure.py`` (its own requirements:
``benchmarks/requirements-latent.txt``).

Usage::

    python benchmarks/latent_eval.py [--data ../shared/data] [--home DIR] [--full]

Prints Markdown tables and writes ``benchmarks/results/latent_eval.json``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, RESULTS, read_jsonl, table, write_result  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _rank(hits: list[Any], word: str) -> int | None:
    return next((i + 1 for i, h in enumerate(hits) if h.id == word), None)


def vocabulary_part(out: dict[str, Any]) -> Any:
    from embedsearch.validation import resolve_path
    from embedsearch.vocabulary import Vocabulary, default_name, read_marker

    existed = (
        read_marker(resolve_path(default_name())) if resolve_path(default_name()).exists() else None
    )
    t = time.perf_counter()
    vocab = Vocabulary.open(progress=True)
    out["vocabulary"] = {
        "name": vocab.collection.name,
        "words": len(vocab),
        "built_now": not (existed and existed.get("complete")),
        "open_or_build_s": round(time.perf_counter() - t, 1),
    }
    add = vocab.expr("king - man + woman", k=50)
    mul = vocab.most_similar_cosmul(["king", "woman"], ["man"], k=50)
    out["king_man_woman"] = {
        "queen_rank_3cosadd": _rank(add, "queen"),
        "queen_rank_3cosmul": _rank(mul, "queen"),
        "top5_3cosadd": [(h.id, round(h.score, 4)) for h in add[:5]],
        "top5_3cosmul": [(h.id, round(h.score, 4)) for h in mul[:5]],
    }
    return vocab


def words_part(vocab: Any, data: Path, out: dict[str, Any]) -> str:
    from embedsearch.word_eval import evaluate_word_analogies, evaluate_word_pairs

    t = time.perf_counter()
    ev = evaluate_word_analogies(data / "words" / "questions-words.txt", vocab)
    took = time.perf_counter() - t
    pairs = evaluate_word_pairs(data / "words" / "wordsim353.tsv", vocab)
    out["analogies"] = {**ev.to_dict(), "seconds": round(took, 1)}
    out["wordsim353"] = pairs.to_dict()
    md = ev.table()
    md += (
        f"\n\nQuestions: {ev.questions:,}; with an OOV word: {ev.oov:,} ({ev.oov_ratio:.1f}%, "
        f"skipped); vocabulary {ev.vocabulary:,} words; {took:.1f} s for both methods.\n\n"
        f"WordSim-353: Spearman {pairs.spearman:.4f}, Pearson {pairs.pearson:.4f} on "
        f"{pairs.pairs} pairs ({pairs.oov} with an OOV word skipped)."
    )
    return md


def _collection(name: str, texts: list[str], ids: list[str], meta: list[dict[str, Any]]) -> Any:
    import embedsearch

    col = embedsearch.open(name)
    if len(col) != len(texts) or set(col.ids()) != set(ids):
        col.close()
        import shutil

        shutil.rmtree(col.path)
        col = embedsearch.open(name)
        col.add(texts, ids=ids, metadata=meta, progress=True)
    return col


def ag_news_part(data: Path, out: dict[str, Any]) -> str:
    from sklearn.metrics import adjusted_rand_score, v_measure_score

    rows = read_jsonl(data / "corpora" / "ag_news_test.jsonl.gz")
    t = time.perf_counter()
    col = _collection(
        "bench-ag-news",
        [f"{r['title']}. {r['text']}" for r in rows],
        [f"ag-{i}" for i in range(len(rows))],
        [{"topic": r["topic"]} for r in rows],
    )
    build_s = time.perf_counter() - t
    topic = {d.id: d.metadata["topic"] for d in col.get(col.ids())}
    results = []
    for k in (4, None):
        t = time.perf_counter()
        c = col.cluster(k, seed=0)
        secs = time.perf_counter() - t
        truth = [topic[i] for i in c.ids]
        results.append(
            {
                "k_asked": "auto" if k is None else k,
                "k": c.k,
                "ARI": round(adjusted_rand_score(truth, c.labels), 4),
                "V-measure": round(v_measure_score(truth, c.labels), 4),
                "silhouette": None if c.silhouette is None else round(c.silhouette, 4),
                "seconds": round(secs, 1),
                "criterion": c.criterion,
                "labels": [f"{cl.size}: {cl.label}" for cl in c.clusters],
                "silhouette_by_k": {str(kk): round(v, 4) for kk, v in c.scores.items()},
            }
        )
    col.close()
    out["ag_news"] = {"documents": len(rows), "build_or_open_s": round(build_s, 1), "runs": results}
    md = table(results, ["k_asked", "k", "ARI", "V-measure", "silhouette", "seconds"])
    md += "\n\n" + "\n".join(f"- k={r['k']} clusters: " + "; ".join(r["labels"]) for r in results)
    return md


def maps_part(data: Path, cap: int | None, out: dict[str, Any]) -> str:
    rows = read_jsonl(data / "corpora" / "news_headlines.jsonl.gz")
    total = len(rows)
    index = list(range(total))
    if cap is not None and cap < total:
        index = sorted(random.Random(0).sample(index, cap))
    name = "bench-news-headlines" if cap is None else f"bench-news-headlines-{cap}"
    t = time.perf_counter()
    col = _collection(
        name,
        [rows[i]["text"] for i in index],
        [f"h-{i}" for i in index],
        [{"kind": rows[i]["kind"]} for i in index],
    )
    build_s = time.perf_counter() - t
    RESULTS.mkdir(parents=True, exist_ok=True)
    maps = []
    for file, color in (
        ("news_headlines_map.png", "kind"),
        ("news_headlines_map.html", "cluster"),
        ("news_headlines_clusters.png", "cluster"),
    ):
        t = time.perf_counter()
        r = col.map(
            RESULTS / file,
            color_by=color,
            max_points=5000,
            seed=0,
            title=f"News headlines ({total:,} in the corpus)",
        )
        maps.append(
            {
                "file": f"benchmarks/results/{file}",
                "color_by": color,
                "points": r.points,
                "collection": r.total,
                "bytes": (RESULTS / file).stat().st_size,
                "seconds": round(time.perf_counter() - t, 1),
                "caption": r.caption,
                "legend": r.legend,
            }
        )
    col.close()
    out["maps"] = {
        "corpus": total,
        "collection": len(index),
        "collection_sample": "all" if cap is None else f"seeded random sample of {cap:,} (seed 0)",
        "build_or_open_s": round(build_s, 1),
        "files": maps,
    }
    return table(maps, ["file", "color_by", "points", "collection", "bytes", "seconds"])


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder")
    p.add_argument("--home", default=None, help="EMBEDSEARCH_HOME for the collections built")
    p.add_argument("--headlines", type=int, default=8000, help="headlines indexed for the maps")
    p.add_argument("--full", action="store_true", help="index all 32,000 headlines")
    args = p.parse_args()
    if args.home:
        os.environ["EMBEDSEARCH_HOME"] = args.home
    import torch  # noqa: F401 - torch before faiss: their OpenMP runtimes contend otherwise

    out: dict[str, Any] = {"load_average_at_start": os.getloadavg()}
    t0 = time.perf_counter()
    vocab = vocabulary_part(out)
    km = out["king_man_woman"]
    md = [
        "## Latent space (all-MiniLM-L6-v2)",
        f"Default vocabulary {out['vocabulary']['name']!r}: {out['vocabulary']['words']:,} words. "
        f"`king - man + woman`: queen ranks {km['queen_rank_3cosadd']} (3CosAdd), "
        f"{km['queen_rank_3cosmul']} (3CosMul); top 3 (3CosAdd): "
        + ", ".join(f"{w} {s:.3f}" for w, s in km["top5_3cosadd"][:3]),
        "### questions-words (accuracy; OOV questions skipped)",
        words_part(vocab, args.data, out),
    ]
    vocab.close()
    md += ["### AG News: clusters vs the 4 topics", ag_news_part(args.data, out)]
    md += [
        "### Maps of the news headlines",
        maps_part(args.data, None if args.full else args.headlines, out),
    ]
    out["total_seconds"] = round(time.perf_counter() - t0, 1)
    out["load_average_at_end"] = os.getloadavg()
    text = "\n\n".join(md)
    print(text)
    path = write_result("latent_eval", {**out, "markdown": text})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
