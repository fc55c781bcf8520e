"""CLI for the latent-space layer: analogy, expr, similar, similarity, doesnt-match,
interpolate, cluster, outliers, map, vocab.

``COLLECTION`` arguments accept any collection, vocabularies included; ``analogy`` defaults
to the model's default vocabulary (built on first use).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..collection import Collection


def register(sub: argparse._SubParsersAction) -> None:
    """Add the latent-space sub-commands."""
    p = sub.add_parser(
        "analogy",
        help="word analogies: 'king - man + woman', or A B C (A is to B as C is to ?)",
        description="Solve an analogy in a vocabulary (default: the model's word vocabulary, "
        "built once on first use) or any collection. Give one expression, e.g. "
        "\"king - man + woman\", or three terms A B C meaning 'A is to B as C is to ?'.",
    )
    p.add_argument("terms", nargs="+", metavar="TERM", help="an expression, or A B C")
    p.add_argument(
        "--collection",
        "--vocab",
        dest="collection",
        default=None,
        help="collection or vocabulary to use (default: the default vocabulary)",
    )
    p.add_argument(
        "--method",
        choices=["add", "mul"],
        default="add",
        help="3CosAdd (add, default) or 3CosMul (mul; three-term form only)",
    )
    _common(p, k=10)
    p.set_defaults(func=_analogy)

    p = sub.add_parser(
        "expr", help="search with vector arithmetic: '0.5*\"royal person\" + queen - man'"
    )
    p.add_argument("collection", metavar="COLLECTION")
    p.add_argument("expression")
    p.add_argument("--where", default=None, help="JSON metadata filter on the results")
    _common(p, k=10)
    p.set_defaults(func=_expr)

    p = sub.add_parser(
        "similar", help="most similar to positive terms minus negative ones (gensim most_similar)"
    )
    p.add_argument("collection", metavar="COLLECTION")
    p.add_argument("positive", nargs="+", metavar="TERM")
    p.add_argument("--minus", "-n", nargs="+", default=[], metavar="TERM", help="negative terms")
    p.add_argument("--cosmul", action="store_true", help="3CosMul instead of 3CosAdd")
    p.add_argument("--where", default=None, help="JSON metadata filter on the results")
    _common(p, k=10)
    p.set_defaults(func=_similar)

    p = sub.add_parser("similarity", help="cosine similarity of two terms")
    p.add_argument("collection", metavar="COLLECTION")
    p.add_argument("x")
    p.add_argument("y")
    p.set_defaults(func=_similarity)

    p = sub.add_parser("doesnt-match", help="which term does not belong with the others")
    p.add_argument("collection", metavar="COLLECTION")
    p.add_argument("terms", nargs="+", metavar="TERM")
    p.set_defaults(func=_doesnt_match)

    p = sub.add_parser(
        "interpolate",
        help="walk from one meaning to another (slerp) and show the nearest documents",
    )
    p.add_argument("collection", metavar="COLLECTION")
    p.add_argument("x")
    p.add_argument("y")
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--method", choices=["slerp", "lerp"], default="slerp")
    _common(p, k=3, exclude=False)
    p.set_defaults(func=_interpolate)

    p = sub.add_parser("cluster", help="spherical k-means with keyword labels")
    p.add_argument("collection", metavar="COLLECTION")
    p.add_argument(
        "-k", type=int, default=None, help="number of clusters (default: chosen by silhouette)"
    )
    p.add_argument("--k-range", nargs=2, type=int, metavar=("MIN", "MAX"), default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--persist", action="store_true", help="write cluster numbers into metadata")
    p.add_argument(
        "--field", default="cluster", help="metadata field for --persist (default: cluster)"
    )
    p.add_argument("--where", default=None, help="JSON metadata filter: cluster only these")
    p.add_argument("--json", action="store_true", help="print JSON (with member ids)")
    p.set_defaults(func=_cluster)

    p = sub.add_parser(
        "topics", help="topic hierarchy: level 0 the top, deeper levels finer, with labels"
    )
    p.add_argument("collection", metavar="COLLECTION")
    p.add_argument("--level", type=int, default=None, help="show one level (0 = top, -1 finest)")
    p.add_argument("--top", type=int, default=None, help="topics at level 0 (default: chosen)")
    p.add_argument("--leaves", type=int, default=None, help="topics at the finest level")
    p.add_argument("--levels", type=int, default=3, help="number of levels (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--where", default=None, help="JSON metadata filter: only these documents")
    p.add_argument("--json", action="store_true", help="print JSON (with assignments)")
    p.set_defaults(func=_topics)

    p = sub.add_parser(
        "along", help="rank documents along a direction given by examples of each end"
    )
    p.add_argument("collection", metavar="COLLECTION")
    p.add_argument("--positive", "-p", action="append", required=True, metavar="TEXT_OR_ID",
                   help="an example of the positive end (repeat the flag for more)")  # fmt: skip
    p.add_argument("--negative", "-n", action="append", required=True, metavar="TEXT_OR_ID",
                   help="an example of the negative end (repeat the flag for more)")  # fmt: skip
    p.add_argument("--end", choices=["positive", "negative"], default="positive")
    p.add_argument("--refine", type=int, default=2, help="refinement rounds (0: plain)")
    p.add_argument("--where", default=None, help="JSON metadata filter on the results")
    _common(p, k=10, exclude=False)
    p.set_defaults(func=_along)

    p = sub.add_parser("outliers", help="documents that least belong in the collection")
    p.add_argument("collection", metavar="COLLECTION")
    p.add_argument("-n", "-k", dest="n", type=int, default=20, help="how many (default 20)")
    p.add_argument(
        "--method",
        choices=["auto", "atypical", "neighbors"],
        default="auto",
        help="atypical: distance to the nearest documents beyond the closest 2%% of a "
        "sample (finds off-topic groups); neighbors: distance to the --neighbors-th nearest "
        "document; auto (default): neighbors if --neighbors is given or under 1,000 "
        "documents, else atypical",
    )
    p.add_argument(
        "--neighbors",
        type=int,
        default=None,
        help="with --method neighbors: score = cosine distance to this neighbour (default 10)",
    )
    p.add_argument("--where", default=None, help="JSON metadata filter")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_outliers)

    p = sub.add_parser("map", help="2-D map of a collection to PNG or interactive HTML")
    p.add_argument("collection", metavar="COLLECTION")
    p.add_argument("output", nargs="?", help="out.png or out.html (or -o FILE)")
    p.add_argument("-o", "--output", dest="output_option", metavar="FILE", help="the same")
    p.add_argument(
        "--color-by", default="cluster", help="'cluster' (default), a metadata field, or 'none'"
    )
    p.add_argument(
        "--method",
        choices=["auto", "pca", "umap", "pacmap", "tsne"],
        default="auto",
        help="projection (default auto: up to 5,000 points t-SNE, UMAP or PaCMAP if installed; PCA above or else)",
    )
    p.add_argument("--max-points", type=int, default=5000, help="sample cap (default 5000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--where", default=None, help="JSON metadata filter")
    p.add_argument("--title", default=None)
    p.set_defaults(func=_map)

    p = sub.add_parser("vocab", help="build or inspect word vocabularies")
    vsub = p.add_subparsers(dest="vocab_command", metavar="ACTION")
    vsub.required = True
    b = vsub.add_parser("build", help="embed a word list (default: the tokenizer's whole words)")
    b.add_argument("name", nargs="?", default=None, help="collection name (default: vocab-<model>)")
    b.add_argument(
        "--words", default=None, help="word file, one word per line (default: tokenizer words)"
    )
    b.add_argument("--model", default=None)
    b.add_argument("--keep-case", action="store_true", help="do not lower-case the words")
    b.add_argument("--overwrite", action="store_true", help="replace an existing vocabulary")
    b.set_defaults(func=_vocab_build)
    a = vsub.add_parser("add", help="add words to a vocabulary")
    a.add_argument("name")
    a.add_argument("words", nargs="+", help="words, or @FILE for a word file")
    a.set_defaults(func=_vocab_add)
    i = vsub.add_parser("info", help="size, source and model of a vocabulary")
    i.add_argument("name", nargs="?", default=None)
    i.set_defaults(func=_vocab_info)


def _common(p: argparse.ArgumentParser, k: int, exclude: bool = True) -> None:
    p.add_argument("-k", type=int, default=k, help=f"results (default {k})")
    if exclude:
        p.add_argument(
            "--keep-inputs",
            action="store_true",
            help="do not exclude the input terms from the results",
        )
    else:
        p.add_argument(
            "--exclude-inputs", action="store_true", help="exclude the endpoints from the results"
        )
    p.add_argument("--json", action="store_true", help="print JSON")


# ----------------------------------------------------------------------------- helpers
def _open(name: str) -> Any:
    from .common import open_existing

    return open_existing(name)


def _is_vocabulary(col: Collection) -> bool:
    from ..vocabulary import read_marker

    return read_marker(col.path) is not None


def _print_ranked(hits: list[Any], col: Collection, as_json: bool) -> None:
    from .common import print_hits

    if as_json or not _is_vocabulary(col):
        print_hits(hits, as_json=as_json)
        return
    for rank, h in enumerate(hits, 1):
        print(f"{rank:>3}. {h.score:.3f}  {h.text}")


def _where(args: argparse.Namespace) -> Any:
    from .common import parse_json_arg

    return parse_json_arg(getattr(args, "where", None), "--where")


# ----------------------------------------------------------------------------- commands
def _analogy(args: argparse.Namespace) -> int:
    from ..errors import InvalidInputError

    if args.collection:
        col = _open(args.collection)
    else:
        from ..vocabulary import Vocabulary

        col = Vocabulary.open().collection
    with col:
        if len(args.terms) == 3 and not any(c in t for t in args.terms for c in "+-*/()"):
            a, b, c = args.terms
            hits = col.analogy(
                a, b, c, args.k, method=args.method, exclude_inputs=not args.keep_inputs
            )
        elif len(args.terms) == 1:
            if args.method == "mul":
                raise InvalidInputError("--method mul needs the three-term form: analogy A B C.")
            hits = col.expr(args.terms[0], args.k, exclude_inputs=not args.keep_inputs)
        else:
            raise InvalidInputError(
                'give one quoted expression ("king - man + woman") or three terms A B C '
                "(A is to B as C is to ?)."
            )
        _print_ranked(hits, col, args.json)
    return 0


def _expr(args: argparse.Namespace) -> int:
    with _open(args.collection) as col:
        hits = col.expr(
            args.expression, args.k, exclude_inputs=not args.keep_inputs, where=_where(args)
        )
        _print_ranked(hits, col, args.json)
    return 0


def _similar(args: argparse.Namespace) -> int:
    with _open(args.collection) as col:
        if args.cosmul:
            hits = col.most_similar_cosmul(
                args.positive,
                args.minus,
                args.k,
                exclude_inputs=not args.keep_inputs,
                where=_where(args),
            )
        else:
            hits = col.most_similar(
                args.positive,
                args.minus,
                args.k,
                exclude_inputs=not args.keep_inputs,
                where=_where(args),
            )
        _print_ranked(hits, col, args.json)
    return 0


def _similarity(args: argparse.Namespace) -> int:
    with _open(args.collection) as col:
        print(f"{col.similarity(args.x, args.y):.4f}")
    return 0


def _doesnt_match(args: argparse.Namespace) -> int:
    with _open(args.collection) as col:
        print(col.doesnt_match(args.terms))
    return 0


def _interpolate(args: argparse.Namespace) -> int:
    with _open(args.collection) as col:
        steps = col.interpolate(
            args.x,
            args.y,
            args.steps,
            method=args.method,
            k=args.k,
            exclude_inputs=args.exclude_inputs,
        )
        if args.json:
            json.dump([s.to_dict() for s in steps], sys.stdout, ensure_ascii=False)
            sys.stdout.write("\n")
            return 0
        vocab = _is_vocabulary(col)
        for s in steps:
            shown = ", ".join(h.text if vocab else _clip(h.text, 60) for h in s.hits)
            print(f"t={s.t:.2f}  {shown}")
    return 0


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _cluster(args: argparse.Namespace) -> int:
    with _open(args.collection) as col:
        result = col.cluster(
            args.k,
            seed=args.seed,
            k_range=tuple(args.k_range) if args.k_range else None,
            persist=args.persist,
            field=args.field,
            where=_where(args),
        )
        if args.json:
            json.dump(result.to_dict(include_ids=True), sys.stdout, ensure_ascii=False)
            sys.stdout.write("\n")
            return 0
        sil = "n/a" if result.silhouette is None else f"{result.silhouette:.3f}"
        print(f"k={result.k} ({result.criterion}); silhouette {sil}; {len(result.ids):,} documents")
        for c in result.clusters:
            print(f"{c.id:>3}. {c.size:>6}  {', '.join(c.keywords)}")
            print(f"       medoid {c.medoid_id}: {_clip(c.medoid_text, 90)}")
        if result.persisted_field:
            print(f"cluster numbers written to metadata field {result.persisted_field!r}")
    return 0


def _topics(args: argparse.Namespace) -> int:
    with _open(args.collection) as col:
        result = col.topics(
            level=args.level,
            top=args.top,
            leaves=args.leaves,
            levels=args.levels,
            seed=args.seed,
            where=_where(args),
        )
        if args.json:
            json.dump(result.to_dict(include_ids=True), sys.stdout, ensure_ascii=False)
            sys.stdout.write("\n")
            return 0
        print(f"{len(result.ids):,} documents; top level: {result.criterion}")
        for lv in result.levels:
            print(f"level {lv.level}: {lv.k} topics")
            for t in lv.topics:
                parent = "" if t.parent is None else f"  (in {t.parent})"
                print(f"  {t.id:>3}. {t.size:>6}  {t.label}{parent}")
                if t.medoids:
                    print(f"         e.g. {_clip(t.medoids[0][1], 90)}")
        print(f"outliers (kept in their topics): {len(result.outliers):,}")
    return 0


def _along(args: argparse.Namespace) -> int:
    with _open(args.collection) as col:
        axis = col.direction(args.positive, args.negative, refine=args.refine)
        hits = col.along(axis, args.k, end=args.end, where=_where(args))
        if not args.json:
            print(f"score = position on the axis (cosine), {args.end} end first")
        _print_ranked(hits, col, args.json)
    return 0


def _outliers(args: argparse.Namespace) -> int:
    from .common import print_hits

    with _open(args.collection) as col:
        hits = col.outliers(
            args.n, method=args.method, neighbors=args.neighbors, where=_where(args)
        )
        if not args.json:
            print(f"score: higher = less like the rest of the collection (--method {args.method})")
        print_hits(hits, as_json=args.json)
    return 0


def _map(args: argparse.Namespace) -> int:
    from ..errors import InvalidInputError

    given = {o for o in (args.output, args.output_option) if o}
    if len(given) != 1:
        raise InvalidInputError(
            "map needs one output file, out.png or out.html: "
            + ("give it after the collection or with -o" if not given else "not two")
        )
    color_by = None if args.color_by.lower() == "none" else args.color_by
    with _open(args.collection) as col:
        result = col.map(
            given.pop(),
            color_by=color_by,
            method=args.method,
            max_points=args.max_points,
            seed=args.seed,
            where=_where(args),
            title=args.title,
        )
        print(f"wrote {result.path}: {result.caption}")
    return 0


def _vocab_build(args: argparse.Namespace) -> int:
    from ..vocabulary import Vocabulary

    vocab = Vocabulary.build(
        args.words,
        args.name,
        model=args.model,
        lowercase=not args.keep_case,
        overwrite=args.overwrite,
    )
    with vocab:
        print(
            f"vocabulary {vocab.collection.name!r}: {len(vocab):,} words at {vocab.collection.path}"
        )
    return 0


def _vocab_add(args: argparse.Namespace) -> int:
    from ..vocabulary import Vocabulary, read_word_file

    words: list[str] = []
    for w in args.words:
        words.extend(read_word_file(w[1:]) if w.startswith("@") else [w])
    with Vocabulary(_open(args.name)) as vocab:
        added = vocab.add(words)
        print(f"added {added} words; {len(vocab):,} in total")
    return 0


def _vocab_info(args: argparse.Namespace) -> int:
    from ..vocabulary import Vocabulary

    with Vocabulary.open(args.name, build=False) as vocab:
        info = vocab.info()
        json.dump(
            {k: info[k] for k in ("name", "path", "count", "model", "vocabulary")},
            sys.stdout,
            indent=1,
            ensure_ascii=False,
        )
        sys.stdout.write("\n")
    return 0
