"""Topics vs BERTopic, map quality, direction AUCs and outlier precision on real corpora.

Parts (``--parts``, default all):

* ``topics`` — ``build_topics`` (what ``col.topics()`` runs) against BERTopic (defaults:
  UMAP -> HDBSCAN -> c-TF-IDF, and again with English stop words removed) on the *same*
  MiniLM vectors, on three labelled corpora of 3,000 documents each:
  AG News (4 topics, ``title. text``), the news/clickbait headlines (2 kinds), and a mix
  labelled by source (750 each of AG News, headlines, SciFact abstracts, Cranfield
  abstracts: four genres a person would separate at a glance, each label given by where the
  text came from, not by an annotator's reading). Top level: V-measure, ARI, topic count.
  At our level closest to BERTopic's topic count: NPMI coherence and topic diversity, both
  on the same words: each system's first 10 words that the shared tokenizer counts (BERTopic
  is asked for 30 words per topic, ``top_n_words=30``, which changes nothing but the list's
  length, so a stop word or a number in its top 10 is passed over rather than leaving a
  shorter list), documents as windows. Share of documents unassigned
  (BERTopic's outlier topic -1), seconds.
* ``directions`` — 10 random examples per side (10 draws) of news vs clickbait; ROC AUC over
  all 32,000 headlines for the centroid difference, the refined axis (``col.direction``) and
  a logistic regression trained on the same 20 examples.
* ``outliers`` — 1 % SciFact abstracts planted among headlines at 10k and 100k documents
  (the 100k set repeats headlines with a seeded shuffle; repeats are exact duplicates, which
  only makes isolation harder to see), precision@k (k = the planted count) of each
  ``col.outliers`` method (``atypical_scores``, the default, and ``outlier_scores`` with 10
  neighbours) and the seconds.
* ``maps`` — trustworthiness (scikit-learn, k = 10, cosine) and seconds of each projection
  in ``--map-methods`` (default ``pca,tsne``: what ``col.map``'s ``auto`` chooses between;
  ``umap`` and ``pacmap`` may be added) at each headline count in ``--map-sizes`` (default
  2,000, 5,000, 10,000), through :func:`embedsearch.latent.maps.project` (the code a map
  runs: openTSNE on all cores); ``--big-maps`` adds seconds alone at 100,000
  (trustworthiness needs all pairwise distances: 80 GB at 100k).

Usage::

    pip install -r benchmarks/requirements-latent.txt
    python benchmarks/latent_structure.py [--data ../shared/data] [--parts topics,maps]
        [--cache DIR]

``--cache`` keeps the corpus vectors (``.npy``) between runs. Prints Markdown tables and
writes ``benchmarks/results/latent_structure.json`` and ``latent_topics.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import DEFAULT_DATA, RESULTS, read_jsonl, table, write_result  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
PER_CORPUS = 3000


# ----------------------------------------------------------------------------- data
def corpora(data: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Texts and labels of every corpus the parts read (seeded samples)."""
    rng = np.random.default_rng(0)
    ag = read_jsonl(data / "corpora" / "ag_news_test.jsonl.gz")
    hl = read_jsonl(data / "corpora" / "news_headlines.jsonl.gz")
    sf = read_jsonl(data / "beir" / "scifact" / "corpus.jsonl")
    cr = read_jsonl(data / "beir" / "cranfield" / "corpus.jsonl")

    def joined(r: dict[str, Any]) -> str:
        return ". ".join(x for x in (r.get("title", ""), r.get("text", "")) if x).strip()

    return {
        "ag": ([joined(r) for r in ag], [r["topic"] for r in ag]),
        "hl": ([r["text"] for r in hl], [r["kind"] for r in hl]),
        "sf": ([joined(r) for r in sf], ["scifact"] * len(sf)),
        "cr": ([joined(r) for r in cr], ["cranfield"] * len(cr)),
        "_rng": rng,  # type: ignore[dict-item]
    }


def vectors(name: str, texts: list[str], cache: Path | None) -> np.ndarray:
    """The unit MiniLM vectors of ``texts`` (the package's encoder), cached by name and size."""
    if cache is not None:
        f = cache / f"{name}-{len(texts)}.npy"
        if f.exists():
            return np.load(f)
    from embedsearch.encoder import get_encoder

    v = get_encoder().encode(texts, progress=True)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / f"{name}-{len(texts)}.npy", v)
    return v


def labelled_sets(data: Path, cache: Path | None) -> dict[str, tuple[np.ndarray, list[str], list]]:
    c = corpora(data)
    vec = {k: vectors(k, c[k][0], cache) for k in ("ag", "hl", "sf", "cr")}
    rng = np.random.default_rng(0)
    out = {}
    for key, name in (("ag", "AG News (4 topics)"), ("hl", "headlines (news/clickbait)")):
        idx = np.sort(rng.choice(len(c[key][0]), PER_CORPUS, replace=False))
        out[name] = (vec[key][idx], [c[key][0][i] for i in idx], [c[key][1][i] for i in idx])
    parts_v, parts_t, parts_l = [], [], []
    for key, src in (("ag", "agnews"), ("hl", "headlines"), ("sf", "scifact"), ("cr", "cranfield")):
        idx = np.sort(rng.choice(len(c[key][0]), PER_CORPUS // 4, replace=False))
        parts_v.append(vec[key][idx])
        parts_t += [c[key][0][i] for i in idx]
        parts_l += [src] * len(idx)
    out["4 sources (AG/headlines/SciFact/Cranfield)"] = (np.vstack(parts_v), parts_t, parts_l)
    return out


# ----------------------------------------------------------------------------- topics
def topics_part(
    sets: dict[str, Any], out: dict[str, Any], reuse: dict[str, Any] | None = None
) -> str:
    from sklearn.metrics import adjusted_rand_score as ari
    from sklearn.metrics import v_measure_score as vm

    from embedsearch.latent.topics import build_topics, npmi_coherence, topic_diversity

    rows = []
    for name, (v, texts, labels) in sets.items():
        ids = [str(i) for i in range(len(texts))]
        t = time.perf_counter()
        res = build_topics(ids, v, lambda r, texts=texts: [texts[i] for i in r], levels=4)
        ours_s = time.perf_counter() - t
        top = res.levels[0].labels
        ours = {
            "corpus": name,
            "system": "embedsearch topics",
            "top_k": res.levels[0].k,
            "V": round(vm(labels, top), 4),
            "ARI": round(ari(labels, top), 4),
            "levels": [lv.k for lv in res.levels],
            "unassigned": 0.0,
            "outliers_flagged": round(len(res.outliers) / len(ids), 4),
            "seconds": round(ours_s, 1),
            "top_labels": [f"{tp.size}: {tp.label}" for tp in res.levels[0].topics],
        }
        # the top level again with seeds 1 and 2: k-means leaves vary, and so does the V
        again = [
            build_topics(ids, v, lambda r, texts=texts: [texts[i] for i in r], levels=1, seed=s)
            for s in (1, 2)
        ]
        ours["k_seeds_0_1_2"] = [res.levels[0].k] + [a.levels[0].k for a in again]
        ours["V_seeds_0_1_2"] = [ours["V"]] + [
            round(vm(labels, a.levels[0].labels), 4) for a in again
        ]
        ours["V_mean_3_seeds"] = round(float(np.mean(ours["V_seeds_0_1_2"])), 4)
        for variant in ("defaults", "stop words"):
            key = f"{name} / BERTopic {variant}"
            if reuse and key in reuse and "keywords" in reuse[key]:
                # an earlier run's BERTopic row (same data, same vectors): its metrics again
                b_row = {
                    **reuse[key],
                    "NPMI": round(npmi_coherence(reuse[key]["keywords"], texts), 4),
                    "diversity": round(topic_diversity(reuse[key]["keywords"], texts=texts), 4),
                    "reused_from_earlier_run": True,
                }
            else:
                b = bertopic_run(v, texts, stop=variant == "stop words")
                b_lab = np.asarray(b["labels"])
                b_row = {
                    "corpus": name,
                    "system": f"BERTopic {variant}",
                    "top_k": b["topics"],
                    "V": round(vm(labels, b_lab), 4),
                    "ARI": round(ari(labels, b_lab), 4),
                    "V_assigned_only": round(
                        vm(np.asarray(labels)[b_lab >= 0], b_lab[b_lab >= 0]), 4
                    ),
                    "unassigned": round(float((b_lab < 0).mean()), 4),
                    "NPMI": round(npmi_coherence(b["keywords"], texts), 4),
                    "diversity": round(topic_diversity(b["keywords"], texts=texts), 4),
                    "seconds": round(b["seconds"], 1),
                    "top_labels": b["top_labels"],
                    "keywords": b["keywords"],
                }
            # our level whose topic count is closest to BERTopic's (outlier topic excluded)
            lv = min(res.levels, key=lambda lv: abs(lv.k - b_row["top_k"]))
            kw = [tp.keywords for tp in lv.topics]
            rows.append(
                {
                    **ours,
                    "vs": f"BERTopic {variant}",
                    "compared_level_k": lv.k,
                    "NPMI": round(npmi_coherence(kw, texts), 4),
                    "diversity": round(topic_diversity(kw, texts=texts), 4),
                }
            )
            rows.append(b_row)
            print(
                table(
                    rows[-2:],
                    [
                        "corpus",
                        "system",
                        "top_k",
                        "V",
                        "ARI",
                        "NPMI",
                        "diversity",
                        "unassigned",
                        "seconds",
                    ],
                ),
                flush=True,
            )
    out["topics"] = rows
    cols = ["corpus", "system", "top_k", "V", "ARI", "V_mean_3_seeds", "compared_level_k", "NPMI",
            "diversity", "unassigned", "seconds"]  # fmt: skip
    # our row once per corpus (the JSON keeps one per BERTopic variant: the same topics, and
    # the compared level follows BERTopic's count, which the variants share)
    shown = [
        r for r in rows if r["system"] != "embedsearch topics" or r["vs"] == "BERTopic defaults"
    ]
    md = table(shown, cols)
    md += "\n\n" + "\n".join(
        f"- {r['corpus']} / {r['system']}: " + "; ".join(r["top_labels"][:8]) for r in shown
    )
    plot_topics(rows)
    return md


def bertopic_run(v: np.ndarray, texts: list[str], *, stop: bool) -> dict[str, Any]:
    """BERTopic with its defaults (seeded UMAP), on the given vectors; 30 words per topic
    (``top_n_words`` sets only the representation's length) so that 10 countable ones remain
    after the shared tokenizer passes over stop words and numbers."""
    from bertopic import BERTopic
    from sklearn.feature_extraction.text import CountVectorizer
    from umap import UMAP

    umap = UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=0)
    kwargs: dict[str, Any] = {"umap_model": umap, "top_n_words": 30}
    if stop:
        kwargs["vectorizer_model"] = CountVectorizer(stop_words="english")
    t = time.perf_counter()
    model = BERTopic(**kwargs)
    labels, _ = model.fit_transform(texts, embeddings=v)
    secs = time.perf_counter() - t
    info = model.get_topic_info()
    keywords, top_labels = [], []
    for tid in info["Topic"]:
        if tid < 0:
            continue
        words = [w for w, _ in model.get_topic(tid)][:30]
        keywords.append(words)
        top_labels.append(f"{int((np.asarray(labels) == tid).sum())}: {', '.join(words[:3])}")
    return {
        "labels": list(labels),
        "topics": len(keywords),
        "keywords": keywords,
        "top_labels": top_labels,
        "seconds": secs,
    }


def plot_topics(rows: list[dict[str, Any]]) -> None:
    from matplotlib.figure import Figure

    corp = list(dict.fromkeys(r["corpus"] for r in rows))
    systems = ["embedsearch topics", "BERTopic defaults", "BERTopic stop words"]
    fig = Figure(figsize=(15, 4.2), dpi=110)
    metrics = (("V", "V-measure of the top level (ours: mean of 3 seeds)"),
               ("NPMI", "NPMI coherence (at BERTopic's topic count)"),
               ("diversity", "topic diversity (same words)"),
               ("unassigned", "share unassigned"))  # fmt: skip
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c"]
    for j, (m, title) in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), j + 1)
        for s, sys_name in enumerate(systems):
            vals = []
            for c in corp:
                r = next((r for r in rows if r["corpus"] == c and r["system"] == sys_name), None)
                if r and m == "V" and "V_mean_3_seeds" in r:  # not one seed's best draw
                    vals.append(r["V_mean_3_seeds"])
                else:
                    vals.append(r.get(m, np.nan) if r else np.nan)
            ax.bar(
                np.arange(len(corp)) + (s - 1) * 0.27, vals, 0.27, label=sys_name, color=colors[s]
            )
        ax.set_xticks(np.arange(len(corp)))
        ax.set_xticklabels([c.split(" (")[0] for c in corp], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.axhline(0, color="#444", lw=0.6)
        for bar in ax.patches:
            h = bar.get_height()
            if np.isfinite(h):
                ax.annotate(f"{h:.2f}", (bar.get_x() + bar.get_width() / 2, h), ha="center",
                            va="bottom" if h >= 0 else "top", fontsize=6.5,
                            xytext=(0, 2 if h >= 0 else -2), textcoords="offset points")  # fmt: skip
    fig.suptitle("Topics on the same MiniLM vectors, 3,000 documents per corpus", fontsize=11)
    handles, names = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "latent_topics.png")


# ----------------------------------------------------------------------------- directions
def directions_part(data: Path, cache: Path | None, out: dict[str, Any]) -> str:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from embedsearch.latent.directions import direction_vector

    texts, kinds = corpora(data)["hl"]
    v = vectors("hl", texts, cache)
    y = np.array([k == "clickbait" for k in kinds])
    rng = np.random.default_rng(0)
    res: dict[str, list[float]] = {"centroid difference": [], "col.direction (refined)": [],
                                   "logistic regression (same 20)": []}  # fmt: skip
    secs = []
    for _ in range(10):
        p = rng.choice(np.flatnonzero(y), 10, replace=False)
        q = rng.choice(np.flatnonzero(~y), 10, replace=False)
        res["centroid difference"].append(
            roc_auc_score(y, v @ direction_vector(v[p], v[q], None, refine=0))
        )
        t = time.perf_counter()
        axis = direction_vector(v[p], v[q], v)
        secs.append(time.perf_counter() - t)
        res["col.direction (refined)"].append(roc_auc_score(y, v @ axis))
        lr = LogisticRegression(max_iter=1000).fit(np.vstack([v[p], v[q]]), [1] * 10 + [0] * 10)
        res["logistic regression (same 20)"].append(roc_auc_score(y, lr.decision_function(v)))
    rows = [
        {
            "method": k,
            "AUC mean": round(float(np.mean(x)), 4),
            "AUC min": round(float(np.min(x)), 4),
            "AUC max": round(float(np.max(x)), 4),
        }  # fmt: skip
        for k, x in res.items()
    ]
    out["directions"] = {"documents": len(texts), "draws": 10, "rows": rows,
                         "refined_seconds_mean": round(float(np.mean(secs)), 3)}  # fmt: skip
    return table(rows, ["method", "AUC mean", "AUC min", "AUC max"])


# ----------------------------------------------------------------------------- outliers
def outliers_part(data: Path, cache: Path | None, out: dict[str, Any]) -> str:
    from embedsearch.latent.clustering import atypical_scores, outlier_scores

    c = corpora(data)
    hl = vectors("hl", c["hl"][0], cache)
    sf = vectors("sf", c["sf"][0], cache)
    rng = np.random.default_rng(0)
    rows = []
    for n in (10_000, 100_000):
        planted = n // 100
        base = hl[rng.choice(len(hl), n - planted, replace=n - planted > len(hl))]
        x = np.vstack([base, sf[rng.choice(len(sf), planted, replace=False)]])
        is_planted = np.r_[np.zeros(n - planted, bool), np.ones(planted, bool)]
        scorers = {
            "atypical (default)": atypical_scores,
            "neighbors=10": lambda v: outlier_scores(v, 10),
        }
        for method, score in scorers.items():
            t = time.perf_counter()
            s = score(x)
            secs = time.perf_counter() - t
            top = np.argsort(-s, kind="stable")
            rows.append(
                {
                    "documents": n,
                    "planted": planted,
                    "method": method,
                    "precision@planted": round(float(is_planted[top[:planted]].mean()), 4),
                    "precision@20": round(float(is_planted[top[:20]].mean()), 4),
                    "seconds": round(secs, 1),
                }
            )
            print(rows[-1], flush=True)
    out["outliers"] = rows
    return table(
        rows, ["documents", "planted", "method", "precision@planted", "precision@20", "seconds"]
    )


# ----------------------------------------------------------------------------- maps
def maps_part(
    data: Path,
    cache: Path | None,
    out: dict[str, Any],
    big: bool,
    sizes: tuple[int, ...] = (2000, 5000, 10_000),
    methods: tuple[str, ...] = ("pca", "tsne"),
) -> str:
    """Trustworthiness@10 and seconds per projection and size, on seeded headline samples."""
    from sklearn.manifold import trustworthiness

    from embedsearch.latent.maps import AUTO_NONLINEAR_MAX, check_method, project

    texts, _ = corpora(data)["hl"]
    hl = vectors("hl", texts, cache)
    rng = np.random.default_rng(0)
    rows = []
    for n in (*sizes, 100_000) if big else sizes:
        x = hl[rng.choice(len(hl), n, replace=n > len(hl))]
        if n > len(hl):  # repeats would be exact duplicates: jitter them a little
            x = x + rng.normal(scale=0.01, size=x.shape).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        for method in methods:
            if n > 10_000 and method in ("umap", "tsne"):
                continue
            t = time.perf_counter()
            y, _ = project(x, method, seed=0)
            secs = time.perf_counter() - t
            tw = (
                float(trustworthiness(x, y, n_neighbors=10, metric="cosine"))
                if n <= 10_000
                else None
            )
            rows.append({"points": n, "method": method,
                         "auto_chooses": check_method("auto", n) == method,
                         "trustworthiness@10": None if tw is None else round(tw, 4),
                         "seconds": round(secs, 1), "load_average": round(os.getloadavg()[0], 1)})  # fmt: skip
            print(rows[-1], flush=True)
    out["maps"] = rows
    out["auto_nonlinear_max"] = AUTO_NONLINEAR_MAX
    return table(rows, ["points", "method", "auto_chooses", "trustworthiness@10", "seconds"])


# ----------------------------------------------------------------------------- pictures
def pictures_part(data: Path, cache: Path | None, out: dict[str, Any]) -> str:
    """Maps as a user draws them (``col.map``, default method) of AG News and the headlines."""
    import tempfile

    import embedsearch

    c = corpora(data)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for key, field, title in (("ag", "topic", "AG News"), ("hl", "kind", "News headlines")):
            texts, labels = c[key]
            v = vectors(key, texts, cache)
            col = embedsearch.open(Path(tmp) / key)
            col.add(texts, ids=[f"{key}-{i}" for i in range(len(texts))],
                    metadata=[{field: lab} for lab in labels], vectors=v)  # fmt: skip
            for color in (field, "cluster"):
                file = RESULTS / f"map_{key}_{color}.png"
                t = time.perf_counter()
                r = col.map(file, color_by=color, max_points=5000, seed=0, title=title)
                rows.append({"file": f"benchmarks/results/{file.name}", "method": r.method,
                             "points": r.points, "collection": r.total,
                             "seconds": round(time.perf_counter() - t, 1), "caption": r.caption})  # fmt: skip
                print(rows[-1], flush=True)
            col.close()
    out["pictures"] = rows
    return table(rows, ["file", "method", "points", "collection", "seconds"])


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder")
    p.add_argument("--parts", default="topics,directions,outliers,maps")
    p.add_argument("--cache", type=Path, default=None, help="folder keeping corpus vectors")
    p.add_argument("--bertopic-from", type=Path, default=None,
                   help="reuse the BERTopic runs stored in an earlier result JSON (same data)")  # fmt: skip
    p.add_argument("--big-maps", action="store_true", help="also time maps at 100,000 points")
    p.add_argument("--map-sizes", default="2000,5000,10000", help="points per map measured")
    p.add_argument("--map-methods", default="pca,tsne", help="of pca, tsne, umap, pacmap")
    args = p.parse_args()
    import torch  # noqa: F401 - torch before faiss: their OpenMP runtimes contend otherwise

    parts = args.parts.split(",")
    out: dict[str, Any] = {"load_average_at_start": os.getloadavg()}
    md = []
    if "directions" in parts:
        md += [
            "### Directions: news vs clickbait, 10 examples a side",
            directions_part(args.data, args.cache, out),
        ]
        print(md[-1], flush=True)
    if "outliers" in parts:
        md += [
            "### Outliers: 1 % SciFact planted among headlines",
            outliers_part(args.data, args.cache, out),
        ]
        print(md[-1], flush=True)
    if "topics" in parts:
        md += [
            "### Topics vs BERTopic (same vectors)",
            topics_part(
                labelled_sets(args.data, args.cache),
                out,
                {
                    f"{r['corpus']} / {r['system']}": r
                    for r in json.loads(args.bertopic_from.read_text())["topics"]
                    if r["system"].startswith("BERTopic")
                }
                if args.bertopic_from
                else None,
            ),
        ]
        print(md[-1], flush=True)
    if "pictures" in parts:
        md += ["### Maps drawn by col.map", pictures_part(args.data, args.cache, out)]
        print(md[-1], flush=True)
    if "maps" in parts:
        sizes = tuple(int(v) for v in args.map_sizes.split(","))
        methods = tuple(args.map_methods.split(","))
        md += [
            "### Map projections",
            maps_part(args.data, args.cache, out, args.big_maps, sizes, methods),
        ]
        print(md[-1], flush=True)
    out["load_average_at_end"] = os.getloadavg()
    text = "\n\n".join(md)
    name = (
        "latent_structure"
        if set(parts) >= {"topics", "directions", "outliers", "maps"}
        else "latent_structure_" + "_".join(parts)
    )
    path = write_result(name, {**out, "markdown": text})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
