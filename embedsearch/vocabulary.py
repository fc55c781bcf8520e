"""``Vocabulary``: a collection of single words, for word-level analogies and similarity.

A vocabulary is an ordinary collection (ids and texts are the words, vectors their
embeddings) plus a small marker file, ``derived/vocabulary/vocabulary.json``, that tells the
latent-space methods to treat it as a *word list*: a single-word term must be one of its
entries (unknown words are an error that lists them, rather than being embedded silently),
and lookups ignore case when the vocabulary was built lower-cased.

The default word list is every whole-word entry of the model tokenizer's vocabulary:
alphabetic, lower-case, at least two characters, no ``##`` word pieces — about 21,700 words
for all-MiniLM-L6-v2, in tokenizer order (roughly by frequency). Building it embeds each
word once (about two minutes on two CPU cores); it is then reused from disk.

Example:
    >>> vocab = Vocabulary.open()          # builds "vocab-all-MiniLM-L6-v2" the first time
    >>> vocab.expr("king - man + woman", k=1)[0].text
    'queen'
    >>> small = Vocabulary.build(["king", "queen", "man", "woman"], name="tiny")
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import durable
from .errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    InvalidInputError,
    NotACollectionError,
    UnknownWordsError,
)
from .latent.marker import MARKER_DIR, MARKER_FILE, read_marker

if TYPE_CHECKING:
    from .collection import Collection

log = logging.getLogger(__name__)

FORMAT = 1
BUILD_CHUNK = 2048  # words per commit while building: an interrupted build resumes from here


# ----------------------------------------------------------------------------- marker
def _write_marker(path: Path, info: dict[str, Any]) -> None:
    data = json.dumps(info, indent=1, sort_keys=True).encode("utf-8")
    durable.write_file(path, MARKER_DIR / MARKER_FILE, data, create_dirs=True)


# ----------------------------------------------------------------------------- word lists
def default_name(model: str | None = None) -> str:
    """The collection name of a model's default vocabulary: ``vocab-<model basename>``."""
    from .encoder import default_model_name

    base = (model or default_model_name()).rstrip("/").split("/")[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip(".-") or "model"
    return f"vocab-{base}"[:128]


def tokenizer_words(tokenizer: Any, min_length: int = 2) -> list[str]:
    """Whole-word entries of a Hugging Face tokenizer's vocabulary, in token-id order.

    Kept: alphabetic, lower-case, ``len >= min_length``. Dropped: word pieces (WordPiece
    ``##`` continuations; for byte-level BPE / SentencePiece vocabularies, tokens without
    the word-start marker ``Ġ`` / ``▁``), special and ``[unused]`` tokens, digits and
    punctuation.
    """
    tokens = [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    markers = ("\u0120", "\u2581")
    if sum(t.startswith(markers) for t in tokens) > len(tokens) // 10:  # BPE / SentencePiece
        tokens = [t[1:] for t in tokens if t.startswith(markers)]
    else:  # WordPiece
        tokens = [t for t in tokens if not t.startswith("##")]
    words = [t for t in tokens if len(t) >= min_length and t.isalpha() and t.islower()]
    return list(dict.fromkeys(words))


def read_word_file(path: str | os.PathLike[str]) -> list[str]:
    """Words from a text file: one per line; only the first field of a line is used (so
    ``word count`` frequency lists work); blank lines and ``#`` comments are skipped."""
    file = Path(path).expanduser()
    try:
        lines = file.read_text("utf-8").splitlines()
    except FileNotFoundError as exc:
        raise InvalidInputError(f"word list {file} does not exist.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(
            f"cannot read word list {file} ({exc}); give a UTF-8 text file."
        ) from exc
    words = []
    for line in lines:
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            words.append(fields[0])
    if not words:
        raise InvalidInputError(f"word list {file} holds no words (one word per line).")
    return words


def normalize_words(words: Iterable[Any], lowercase: bool) -> list[str]:
    """Strip, optionally lower-case, and de-duplicate (first occurrence wins) a word list.

    Raises:
        InvalidInputError: an entry is not a string, is empty, or contains whitespace (a
            vocabulary holds single words; phrases belong in an ordinary collection).
    """
    if isinstance(words, (str, bytes)):
        raise InvalidInputError("words must be a list of strings (or a path to a word file).")
    out: list[str] = []
    bad: list[str] = []
    for i, w in enumerate(words):
        if not isinstance(w, str):
            raise InvalidInputError(f"words[{i}] is {type(w).__name__}, not str.")
        w = w.strip()
        if not w or any(c.isspace() for c in w) or "\x00" in w or len(w) > 512:
            bad.append(w)
            continue
        out.append(w.lower() if lowercase else w)
    if bad:
        shown = ", ".join(repr(b) for b in bad[:8])
        raise InvalidInputError(
            f"{len(bad)} entries are not single words ({shown}); a vocabulary holds words "
            "without spaces. Put phrases in an ordinary collection."
        )
    out = list(dict.fromkeys(out))
    if not out:
        raise InvalidInputError("the word list is empty; give at least one word.")
    return out


# ----------------------------------------------------------------------------- class
class Vocabulary:
    """A persisted collection of single words with word-level lookups.

    Every :class:`~embedsearch.Collection` method (``expr``, ``most_similar``, ``analogy``,
    ``cluster``, ``map``…) is available on a vocabulary too: attribute access falls through
    to the underlying collection (``vocab.collection``).

    Create one with :meth:`build` (from a list or a file) or :meth:`open` (opens, or builds
    the default word list of the model on first use).
    """

    def __init__(self, collection: Any) -> None:
        info = read_marker(collection.path)
        if info is None:
            raise NotACollectionError(
                f"collection {collection.name!r} is not a vocabulary; build one with "
                "Vocabulary.build(words, name=...)."
            )
        self._col = collection
        self._info = info

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        words: Sequence[str] | str | os.PathLike[str] | None = None,
        name: str | os.PathLike[str] | None = None,
        *,
        model: str | None = None,
        backend: str | None = None,
        lowercase: bool = True,
        min_length: int = 2,
        overwrite: bool = False,
        progress: bool | None = None,
    ) -> Vocabulary:
        """Embed a word list into a new vocabulary collection.

        Args:
            words: a list of words, a path to a word file (:func:`read_word_file`), or None
                for the model tokenizer's whole-word entries (:func:`tokenizer_words`).
            name: collection name or path; default :func:`default_name` of the model.
            model / backend: the encoder (default: the library default).
            lowercase: lower-case the words (and fold case on lookup). Right for uncased
                models such as all-MiniLM-L6-v2; pass False to keep ``Paris`` and ``paris``
                apart with a cased model.
            min_length: shortest word kept from the tokenizer list.
            overwrite: replace an existing vocabulary of that name.
            progress: show a progress bar (default: when more than 2,000 words).

        Raises:
            CollectionExistsError: the vocabulary exists (use :meth:`open`, or overwrite).
            NotACollectionError: the name holds a collection that is not a vocabulary.
            InvalidInputError: a bad word list.
        """
        from .collection import open as open_collection
        from .validation import resolve_path

        path = resolve_path(name if name is not None else default_name(model))
        existing = read_marker(path) if path.exists() else None
        if existing is not None and existing.get("complete") and not overwrite:
            raise CollectionExistsError(
                f"vocabulary {path.name!r} already exists ({existing.get('words')} words); open "
                "it with Vocabulary.open(), or pass overwrite=True to rebuild it."
            )
        if (path / "manifest.json").exists() and existing is None:
            raise NotACollectionError(
                f"{path} holds a collection that is not a vocabulary; choose another name."
            )
        source: dict[str, Any]
        if words is None:
            from .encoder import get_encoder

            enc = get_encoder(model, backend)
            word_list = tokenizer_words(enc.tokenizer, min_length)
            source = {"type": "tokenizer", "min_length": min_length}
        elif isinstance(words, (str, os.PathLike)):
            word_list = read_word_file(words)
            source = {"type": "file", "path": str(Path(words).expanduser().resolve())}
        else:
            word_list = list(words)
            source = {"type": "list"}
        word_list = normalize_words(word_list, lowercase)
        if overwrite and existing is not None:
            _remove_collection(path)
        col = open_collection(path, model=model, backend=backend)
        try:
            info = {
                "kind": "vocabulary",
                "format": FORMAT,
                "lowercase": lowercase,
                "source": source,
                "model": col.model,
                "words": len(word_list),
                "complete": False,
            }
            _write_marker(path, info)
            _fill(col, word_list, progress)
            info["words"] = len(col)
            info["complete"] = True
            _write_marker(path, info)
        except BaseException:
            col.close()
            raise
        return cls(col)

    @classmethod
    def open(
        cls,
        name: str | os.PathLike[str] | None = None,
        *,
        model: str | None = None,
        backend: str | None = None,
        build: bool = True,
        progress: bool | None = None,
    ) -> Vocabulary:
        """Open a vocabulary; the model's default one is built on first use.

        An interrupted build (marker says incomplete) is resumed: words already stored are
        kept, the rest are embedded.

        Args:
            name: collection name or path (default: :func:`default_name` of the model).
            build: build the default vocabulary when it does not exist yet.

        Raises:
            CollectionNotFoundError: no such vocabulary (and it is not the default one, or
                ``build=False``).
            NotACollectionError: the collection exists but is not a vocabulary.
        """
        from .collection import open as open_collection
        from .validation import resolve_path

        is_default = name is None
        path = resolve_path(name if name is not None else default_name(model))
        info = read_marker(path) if path.exists() else None
        if info is not None and info.get("complete"):
            return cls(open_collection(path, model=model, backend=backend, create=False))
        if info is None and (path / "manifest.json").exists():
            raise NotACollectionError(
                f"collection {path.name!r} is not a vocabulary; build one with "
                "Vocabulary.build(words, name=...)."
            )
        if info is not None:  # interrupted build: resume it from the recorded source
            src = info.get("source", {})
            if src.get("type") == "list":
                raise CollectionNotFoundError(
                    f"the build of vocabulary {path.name!r} was interrupted and its word list "
                    "is not on disk; rebuild it with Vocabulary.build(words, "
                    f"name={path.name!r}, overwrite=True)."
                )
            words = (
                None if src.get("type") == "tokenizer" else src.get("path")
            )  # a file path or the tokenizer
            log.warning("resuming the interrupted build of vocabulary %s", path.name)
            col = open_collection(path, model=model, backend=backend, create=False)
            if words is None:
                word_list = tokenizer_words(col.encoder.tokenizer, int(src.get("min_length", 2)))
            else:
                word_list = read_word_file(words)
            word_list = normalize_words(word_list, bool(info.get("lowercase", True)))
            _fill(col, word_list, progress)
            info.update(words=len(col), complete=True)
            _write_marker(path, info)
            return cls(col)
        if not (is_default and build):
            raise CollectionNotFoundError(
                f"no vocabulary at {path}; build it with Vocabulary.build(words, "
                f"name={str(name)!r}) or `embedsearch vocab build`."
            )
        log.warning(
            "building the default vocabulary %r (whole words of the tokenizer, embedded once; "
            "about two minutes on two CPU cores)",
            path.name,
        )
        return cls.build(None, path, model=model, backend=backend, progress=progress)

    # ------------------------------------------------------------------ words
    @property
    def collection(self) -> Any:
        """The underlying :class:`~embedsearch.Collection`."""
        return self._col

    @property
    def lowercase(self) -> bool:
        """Whether words were lower-cased at build time (lookups then fold case)."""
        return bool(self._info.get("lowercase", True))

    @property
    def words(self) -> list[str]:
        """All words, in storage (build) order."""
        return self._col.ids()

    def lookup(self, word: str) -> str | None:
        """The stored entry for ``word`` (case-folded if the vocabulary is), or None."""
        if not isinstance(word, str):
            return None
        w = word.strip()
        if w in self._col:
            return w
        if self.lowercase and w.lower() in self._col:
            return w.lower()
        return None

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and self.lookup(word) is not None

    def __len__(self) -> int:
        return len(self._col)

    def __iter__(self) -> Any:
        return iter(self.words)

    def vector(self, word: str) -> np.ndarray:
        """The unit vector of one word.

        Raises:
            InvalidInputError: the word is not in the vocabulary.
        """
        return self.vectors([word])[0]

    __getitem__ = vector

    def vectors(self, words: Sequence[str] | None = None) -> np.ndarray:
        """Unit vectors of ``words`` (all words, in :attr:`words` order, when None).

        Raises:
            InvalidInputError: some words are unknown (the message lists them).
        """
        if words is None:
            return self._col.vectors()
        if isinstance(words, str):
            words = [words]
        found = [self.lookup(w) for w in words]
        missing = [w for w, f in zip(words, found) if f is None]
        if missing:
            raise UnknownWordsError(missing, self._col.name, len(self))
        return self._col.vectors(found)

    def add(
        self, words: Sequence[str] | str | os.PathLike[str], *, progress: bool | None = None
    ) -> int:
        """Embed and add words not yet present; returns how many were added."""
        word_list = read_word_file(words) if isinstance(words, (str, os.PathLike)) else words
        word_list = normalize_words(word_list, self.lowercase)
        before = len(self._col)
        _fill(self._col, word_list, progress)
        self._info.update(words=len(self._col))
        _write_marker(self._col.path, self._info)
        return len(self._col) - before

    def info(self) -> dict[str, Any]:
        """The collection's info plus the vocabulary marker (source, case handling)."""
        return {**self._col.info(), "vocabulary": dict(self._info)}

    def close(self) -> None:
        """Release the underlying collection."""
        self._col.close()

    def __enter__(self) -> Vocabulary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Vocabulary({self._col.name!r}, words={len(self)})"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_col":
            raise AttributeError(name)
        return getattr(self._col, name)


def _fill(col: Collection, words: list[str], progress: bool | None) -> None:
    """Add the words the collection lacks, committing every BUILD_CHUNK words."""
    from tqdm.auto import tqdm

    todo = [w for w in words if w not in col]
    show = progress if progress is not None else len(todo) > 2000
    with tqdm(total=len(todo), disable=not show, desc="embedding words", unit="word") as bar:
        for lo in range(0, len(todo), BUILD_CHUNK):
            chunk = todo[lo : lo + BUILD_CHUNK]
            col.add(chunk, ids=chunk, progress=False)
            bar.update(len(chunk))
    if col.info()["segments"] > 1:
        col.compact()


def _remove_collection(path: Path) -> None:
    """Delete a vocabulary's directory (only called for one that carries the marker)."""
    import shutil

    if read_marker(path) is None:  # never delete something that is not ours
        raise NotACollectionError(f"{path} is not a vocabulary; refusing to delete it.")
    shutil.rmtree(path)


__all__ = [
    "Vocabulary",
    "default_name",
    "normalize_words",
    "read_marker",
    "read_word_file",
    "tokenizer_words",
    "UnknownWordsError",
]
