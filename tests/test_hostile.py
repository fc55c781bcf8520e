"""Hostile input: names and ids that try to escape, code-executing loaders, huge inputs, fuzzing.

* Collection names: path traversal, absolute paths, NUL bytes, very long names, control
  characters never resolve outside ``EMBEDSEARCH_HOME`` and fail with InvalidInputError.
* Document ids are data, never paths: hostile ids round-trip and create no files.
* No pickle (or other code-executing loader) anywhere in the package source.
* Very large inputs fail with clear limits (10k-dim vectors, k, deep filters, 50 MB text).
* Fuzzing (Hypothesis) of the file loaders: random bytes and structured-but-wrong JSON as
  ``manifest.json``; mutated segment and tombstone files *with matching checksums* (so
  the Parquet reader itself is exercised); hostile file names inside a manifest. Anything
  but an :class:`EmbedSearchError` is a crash.

``ES_FUZZ_EXAMPLES`` (default 60 per fuzz test) scales the fuzzing. Reproduce::

    .venv/bin/pytest tests/test_hostile.py -q
    ES_FUZZ_EXAMPLES=2000 .venv/bin/pytest tests/test_hostile.py -q -k fuzz
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import embedsearch
from embedsearch import EmbedSearchError, FilterError, InvalidInputError, store
from embedsearch.validation import resolve_path, validate_name

FUZZ = int(os.environ.get("ES_FUZZ_EXAMPLES", "60"))
FUZZ_SETTINGS = settings(
    max_examples=FUZZ, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
PACKAGE = Path(embedsearch.__file__).parent
FUZZ_COUNTS: dict[str, int] = {}


def _count(name: str) -> None:
    FUZZ_COUNTS[name] = FUZZ_COUNTS.get(name, 0) + 1
    out = os.environ.get("ES_RELIABILITY_REPORT")
    if out and FUZZ_COUNTS[name] % 10 == 0:
        data = json.loads(Path(out).read_text()) if Path(out).exists() else {}
        data["fuzz"] = FUZZ_COUNTS
        Path(out).write_text(json.dumps(data, indent=1, sort_keys=True))


# ----------------------------------------------------------------------------- names
HOSTILE_NAMES = [
    "../x",
    "../../etc/passwd",
    "/etc/passwd",
    "a/../../b",
    "x\x00y",
    "a" * 129,
    "a" * 5000,
    ".hidden",
    "-rf",
    "a..b",
    "..",
    ".",
    "",
    " ",
    "a b",
    "a/b",
    "a\\b",
    "ä",
    "~root",
    "a\tb",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_collection_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInputError):
        validate_name(name)


@given(st.text(min_size=1, max_size=300))
@FUZZ_SETTINGS
def test_fuzz_bare_names_never_escape_home(name: str) -> None:
    _count("names")
    base = Path("/srv/embedsearch-home")
    try:
        validate_name(name)
    except InvalidInputError:
        return
    resolved = resolve_path(name, base)
    assert resolved.parent == base and resolved.name == name
    assert "/" not in name and "\x00" not in name and name not in (".", "..")


def test_name_with_trailing_newline_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        validate_name("abc\n")


def test_bare_names_resolve_inside_home_and_nul_is_refused(home: Path) -> None:
    assert resolve_path("notes") == home / "notes"
    with pytest.raises(InvalidInputError):
        embedsearch.open("no\x00pe")
    assert list(home.iterdir()) == []


@pytest.mark.parametrize("create", [False, True])
def test_very_long_path_is_a_clean_error(tmp_path: Path, encoder: Any, create: bool) -> None:
    with pytest.raises(EmbedSearchError):
        embedsearch.open(tmp_path / ("x" * 300), create=create)


# ----------------------------------------------------------------------------- ids
HOSTILE_IDS = [
    "../../etc/passwd",
    "/etc/shadow",
    "segments/seg-x.parquet",
    "manifest.json",
    "a\nb\rc",
    "💥" * 10,
    "x" * 512,
    " ",
    "$where",
    "id with 'quotes' and \"doubles\"",
]


def test_hostile_ids_are_data_not_paths(tmp_path: Path, demo_vectors: Any) -> None:
    vecs = np.asarray(demo_vectors[: len(HOSTILE_IDS)])
    col = embedsearch.open(tmp_path / "c")
    col.add([f"text {i}" for i in range(len(HOSTILE_IDS))], ids=HOSTILE_IDS, vectors=vecs)
    col.close()
    col = embedsearch.open(tmp_path / "c")
    assert [d.id for d in col.get(HOSTILE_IDS)] == HOSTILE_IDS
    assert col.search(vecs[0], k=1)[0].id == HOSTILE_IDS[0]
    col.delete(HOSTILE_IDS[:3])
    col.close()
    names = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")}
    assert all(n.startswith("c") for n in names), names  # nothing outside the collection
    assert all(
        re.fullmatch(
            rf"c(/(LOCK|manifest\.json|segments|{store.FILE_NAME_RE.pattern}"
            r"|versions(/(v-\d{12}|tags|settings|summaries)\.json)?))?",
            n,
        )
        for n in names
    ), names


@pytest.mark.parametrize("bad", ["", "x\x00y", "x" * 513, 17, None, b"bytes"])
def test_bad_ids_are_refused(tmp_path: Path, bad: Any, demo_vectors: Any) -> None:
    col = embedsearch.open(tmp_path / "c")
    with pytest.raises(InvalidInputError):
        col.add(["some text"], ids=[bad], vectors=demo_vectors[:1])
    assert len(col) == 0
    col.close()


@pytest.mark.parametrize("where", ["id", "text", "metadata"])
def test_lone_surrogates_are_refused_cleanly(tmp_path: Path, where: str, demo_vectors: Any) -> None:
    col = embedsearch.open(tmp_path / "c")
    kw: dict[str, Any] = {
        "ids": ["\ud800" if where == "id" else "ok"],
        "metadata": [{"k": "\udc00"} if where == "metadata" else {}],
        "vectors": demo_vectors[:1],
    }
    with pytest.raises(InvalidInputError):
        col.add(["text \ud800" if where == "text" else "fine text"], **kw)
    assert len(col) == 0
    col.close()


# ----------------------------------------------------------------------------- loaders
_CODE_EXEC = re.compile(
    r"\b(pickle|cPickle|dill|cloudpickle|joblib|marshal|shelve)\b"
    r"|allow_pickle\s*=\s*True|torch\.load\(|yaml\.load\(|yaml\.unsafe_load|(?<![.\w])(eval|exec)\("
    r"|trust_remote_code\s*=\s*True"
)


def test_no_code_executing_loader_in_the_package() -> None:
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if _CODE_EXEC.search(code) and "no pickle" not in line.lower():
                hits.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
    assert hits == [], "code-executing loaders:\n" + "\n".join(hits)
    assert len(list(PACKAGE.rglob("*.py"))) > 10  # the scan really looked at the package


def test_np_load_calls_never_allow_pickle() -> None:
    for path in PACKAGE.rglob("*.py"):
        for m in re.finditer(r"np\.load\(([^)]*)\)", path.read_text("utf-8")):
            assert "allow_pickle=True" not in m.group(1), path


# ----------------------------------------------------------------------------- large inputs
@pytest.fixture
def small_col(tmp_path: Path, demo_vectors: Any) -> Any:
    col = embedsearch.open(tmp_path / "c")
    col.add([f"text {i}" for i in range(20)], ids=[str(i) for i in range(20)],
            metadata=[{"g": i % 3} for i in range(20)], vectors=demo_vectors[:20])  # fmt: skip
    yield col
    col.close()


def test_10k_dimensional_vectors_are_refused(small_col: Any) -> None:
    big = np.ones(10_000, dtype=np.float32)
    with pytest.raises(InvalidInputError, match="384"):
        small_col.search(big, k=3)
    with pytest.raises(InvalidInputError, match="384"):
        small_col.add(["x"], ids=["big"], vectors=[big])
    with pytest.raises(InvalidInputError):
        small_col.search(np.ones((2, 384)), k=3)  # a matrix is not one vector
    assert len(small_col) == 20


@pytest.mark.parametrize("k", [0, -1, 10_001, 10**12, 2.5, True, "5"])
def test_k_out_of_range_is_refused(small_col: Any, k: Any) -> None:
    with pytest.raises(InvalidInputError):
        small_col.search(np.ones(384), k=k)


_STREAM_SCRIPT = """
import resource, sys
from embedsearch.readers import read_paths
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n = 0
for rec in read_paths(sys.argv[1:]):
    n += 1
    last = rec.text
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(n, (after - before) * 1024, last)
"""


def test_million_line_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    """A 1,000,000-line .jsonl input is read one record at a time: the reader's peak memory
    grows by a few MB however long the file (add() then embeds in WRITE_CHUNK batches)."""
    path = tmp_path / "big.jsonl"
    with path.open("w") as fh:
        fh.writelines(
            f'{{"id": "j{i}", "text": "line {i} about topic {i % 97}"}}\n' for i in range(1_000_000)
        )
    size = path.stat().st_size
    proc = subprocess.run(
        [sys.executable, "-c", _STREAM_SCRIPT, str(path)],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    n, grew, last = proc.stdout.split(maxsplit=2)
    assert int(n) == 1_000_000 and last.strip() == f"line 999999 about topic {999_999 % 97}"
    assert int(grew) < min(size / 4, 32e6), f"grew {int(grew) / 1e6:.0f} MB for {size / 1e6:.0f} MB"


def test_many_ids_in_one_delete_and_a_huge_in_filter(small_col: Any) -> None:
    assert small_col.delete([f"nope-{i}" for i in range(100_000)], missing_ok=True) == 0
    hits = small_col.search(np.ones(384), k=5, where={"g": {"$in": list(range(200_000))}})
    assert len(hits) == 5


def test_deeply_nested_filter_is_a_filter_error(small_col: Any) -> None:
    where: dict[str, Any] = {"g": 1}
    for _ in range(5000):
        where = {"$not": where}
    with pytest.raises(FilterError):
        small_col.search(np.ones(384), k=3, where=where)


def test_scaled_vectors_keep_their_direction(small_col: Any) -> None:
    ref = small_col.as_unit_vector(np.arange(1, 385, dtype=np.float32))
    for scale in (1e20, 1e-30):
        got = small_col.as_unit_vector(np.arange(1, 385, dtype=np.float64) * scale)
        assert np.allclose(got, ref, atol=1e-6)


def test_50mb_text_never_reaches_the_encoder_whole(
    small_col: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    enc = small_col.encoder

    def spy(texts: Any, **kw: Any) -> np.ndarray:
        texts = list(texts)
        seen.extend(len(t) for t in texts)
        return np.tile(np.eye(1, enc.dim, dtype=np.float32), (len(texts), 1))

    monkeypatch.setattr(enc, "encode", spy)
    huge = "lorem ipsum dolor sit amet " * 2_000_000  # 54 MB
    try:
        small_col.add([huge], ids=["huge"])
    except InvalidInputError as exc:
        assert "limit" in str(exc) or "long" in str(exc)
        return
    assert max(seen) <= 1_000_000, f"the encoder was handed a {max(seen):,}-character text"


def test_query_cache_stays_bounded_under_distinct_batch_queries(
    small_col: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedsearch import encoder as encoder_module

    enc = small_col.encoder
    limit = encoder_module._QUERY_CACHE_SIZE
    rng = np.random.default_rng(0)

    def fast_encode(texts: Any, **kw: Any) -> np.ndarray:  # the model is not the subject here
        v = rng.standard_normal((len(list(texts)), enc.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    monkeypatch.setattr(enc, "encode", fast_encode)
    monkeypatch.setattr(enc, "_query_cache", type(enc._query_cache)())
    for b in range(limit // 50 + 10):
        small_col.batch_search([f"query {b}-{i}" for i in range(50)], k=1)
    assert len(enc._query_cache) <= limit, f"{len(enc._query_cache)} cached queries"


# ----------------------------------------------------------------------------- fuzz: manifest
@pytest.fixture(scope="module")
def fuzz_template(tmp_path_factory: pytest.TempPathFactory, demo_vectors: Any) -> Path:
    """A small collection with 2 segments, a tombstone file and an HNSW index file."""
    path = tmp_path_factory.mktemp("fuzz") / "tpl"
    col = embedsearch.open(path, index="HNSW16")
    vecs = np.asarray(demo_vectors[:40])
    col.add([f"t{i}" for i in range(20)], ids=[f"a{i}" for i in range(20)], vectors=vecs[:20],
            metadata=[{"i": i} for i in range(20)])  # fmt: skip
    col.add([f"u{i}" for i in range(20)], ids=[f"b{i}" for i in range(20)], vectors=vecs[20:])
    col.delete(["a3", "b7"])
    col.close()
    m = store.read_manifest_json(path)
    assert m["index"]["file"] and len(m["tombstones"]) == 1
    return path


def _fresh(template: Path, tmp_root: Path) -> Path:
    dst = tmp_root / f"c{len(list(tmp_root.iterdir()))}"
    shutil.copytree(template, dst)
    return dst


def _open_and_use(path: Path) -> None:
    """Open and exercise a collection; only EmbedSearchError may come out."""
    col = embedsearch.open(path)
    try:
        len(col)
        col.ids()
        assert 0 < col.dim <= 65_536, f"absurd dimension {col.dim} accepted from a manifest"
        col.search(np.ones(col.dim), k=3)
        col.search(np.ones(col.dim), k=3, where={"i": {"$gte": 3}})
    finally:
        col.close()


def _expect_clean(path: Path) -> None:
    with contextlib.suppress(EmbedSearchError):
        _open_and_use(path)


@given(data=st.binary(max_size=3000))
@FUZZ_SETTINGS
def test_fuzz_random_bytes_as_manifest(
    fuzz_template: Path, tmp_path_factory: Any, data: bytes
) -> None:
    _count("manifest_bytes")
    path = _fresh(fuzz_template, tmp_path_factory.mktemp("m"))
    (path / store.MANIFEST).write_bytes(data)
    with pytest.raises(EmbedSearchError):
        _open_and_use(path)


def _sign(manifest: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return {**body, "checksum": hashlib.sha256(canonical).hexdigest()}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=8,
)


def _mutated_manifest(real: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    m = json.loads(json.dumps(real))
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(m) + ["model.dim", "index.spec", "segments.0"]))
        value = data.draw(json_values)
        # nested keys only while their parent is still the real object (an earlier draw may
        # have removed or replaced it: that case is covered by the plain keys)
        if key == "model.dim" and isinstance(m.get("model"), dict):
            m["model"]["dim"] = value
        elif key == "index.spec" and isinstance(m.get("index"), dict):
            m["index"]["spec"] = value
        elif key == "segments.0" and isinstance(m.get("segments"), list) and m["segments"]:
            m["segments"][0] = value
        elif "." in key:
            continue
        elif data.draw(st.booleans()):
            m[key] = value
        else:
            m.pop(key, None)
    return m


@given(data=st.data())
@FUZZ_SETTINGS
def test_fuzz_structured_manifest_unsigned(
    fuzz_template: Path, tmp_path_factory: Any, data: Any
) -> None:
    _count("manifest_unsigned")
    path = _fresh(fuzz_template, tmp_path_factory.mktemp("m"))
    m = _mutated_manifest(store.read_manifest_json(path), data)
    if data.draw(st.booleans()):
        m["format_version"] = data.draw(json_values)
    (path / store.MANIFEST).write_text(json.dumps(m))
    _expect_clean(path)


@given(data=st.data())
@FUZZ_SETTINGS
def test_fuzz_structured_manifest_signed(
    fuzz_template: Path, tmp_path_factory: Any, data: Any
) -> None:
    _count("manifest_signed")
    path = _fresh(fuzz_template, tmp_path_factory.mktemp("m"))
    m = _mutated_manifest(store.read_manifest_json(path), data)
    m["format"], m["format_version"] = store.FORMAT_NAME, store.FORMAT_VERSION
    (path / store.MANIFEST).write_text(json.dumps(_sign(m)))
    _expect_clean(path)


# ----------------------------------------------------------------------------- fuzz: data files
def _mutate(data: bytes, draw: Any) -> bytes:
    b = bytearray(data)
    how = draw(st.sampled_from(["flip", "truncate", "insert", "zero-run", "footer"]))
    if how == "flip":
        for pos in draw(st.lists(st.integers(0, len(b) - 1), min_size=1, max_size=8)):
            b[pos] ^= 1 << draw(st.integers(0, 7))
    elif how == "truncate":
        b = b[: draw(st.integers(0, len(b) - 1))]
    elif how == "insert":
        pos = draw(st.integers(0, len(b)))
        b[pos:pos] = draw(st.binary(min_size=1, max_size=64))
    elif how == "zero-run":
        pos = draw(st.integers(0, len(b) - 1))
        b[pos : pos + draw(st.integers(1, 256))] = bytes(min(256, len(b) - pos))
    else:  # the Parquet footer: metadata length and schema
        for _ in range(draw(st.integers(1, 4))):
            pos = len(b) - 1 - draw(st.integers(0, min(300, len(b) - 1)))
            b[pos] = draw(st.integers(0, 255))
    return bytes(b)


def _rewrite_with_matching_checksum(path: Path, rel: str, new: bytes) -> None:
    """Replace a file and re-sign the manifest so the *parser*, not the checksum, is tested."""
    (path / rel).write_bytes(new)
    m = store.read_manifest_json(path)
    for key in ("segments", "tombstones"):
        for ref in m[key]:
            if ref["file"] == rel:
                ref["sha256"] = hashlib.sha256(new).hexdigest()
                ref["bytes"] = len(new)
                if "crc32" in ref:  # format 2: the read path's checksum too
                    ref["crc32"] = f"{zlib.crc32(new):08x}"
                if "blocks" in ref:  # format 7: and its blocks'
                    step = ref["blocks"]["block_bytes"]
                    ref["blocks"]["crc32"] = "".join(
                        f"{zlib.crc32(new[i : i + step]):08x}" for i in range(0, len(new), step)
                    )
    idx = m["index"].get("file")
    if idx and idx["file"] == rel:
        idx["sha256"], idx["bytes"] = hashlib.sha256(new).hexdigest(), len(new)
    store.write_manifest(path, m)


@pytest.mark.parametrize("which", ["segment", "tombstone"])
@given(data=st.data())
@FUZZ_SETTINGS
def test_fuzz_data_files_with_matching_checksums(
    fuzz_template: Path, tmp_path_factory: Any, which: str, data: Any
) -> None:
    _count(f"{which}_resigned")
    path = _fresh(fuzz_template, tmp_path_factory.mktemp("f"))
    m = store.read_manifest_json(path)
    rel = m["segments"][1]["file"] if which == "segment" else m["tombstones"][0]["file"]
    _rewrite_with_matching_checksum(path, rel, _mutate((path / rel).read_bytes(), data.draw))
    _expect_clean(path)


@given(data=st.data())
@FUZZ_SETTINGS
def test_fuzz_data_files_with_stale_checksums_are_refused(
    fuzz_template: Path, tmp_path_factory: Any, data: Any
) -> None:
    _count("any_file_damaged")
    path = _fresh(fuzz_template, tmp_path_factory.mktemp("f"))
    m = store.read_manifest_json(path)
    rel = data.draw(st.sampled_from([m["segments"][0]["file"], m["tombstones"][0]["file"]]))
    original = (path / rel).read_bytes()
    damaged = _mutate(original, data.draw)
    if damaged == original:
        return
    (path / rel).write_bytes(damaged)
    with pytest.raises(EmbedSearchError, match=Path(rel).name):
        _open_and_use(path)


# ----------------------------------------------------------------------------- hostile manifest
def test_manifest_file_names_cannot_point_outside(fuzz_template: Path, tmp_path: Path) -> None:
    path = tmp_path / "col"
    shutil.copytree(fuzz_template, path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    m = store.read_manifest_json(path)
    m["index"]["file"]["file"] = "../victim.txt"
    m["index"]["file"]["epoch"] = "an-older-epoch"
    (path / store.MANIFEST).write_text(json.dumps(_sign(m)))
    try:
        col = embedsearch.open(path)
        col.add(["one more"], ids=["new"], vectors=[np.ones(col.dim)])
        col.close()
    except EmbedSearchError:
        pass  # refusing the manifest is the right answer
    assert victim.exists(), "a write deleted a file outside the collection"
    m = store.read_manifest_json(fuzz_template)
    outside = tmp_path / "outside.parquet"
    shutil.copy(fuzz_template / m["segments"][0]["file"], outside)
    m["segments"][0]["file"] = str(outside)  # absolute path, matching checksum
    shutil.rmtree(path)
    shutil.copytree(fuzz_template, path)
    (path / store.MANIFEST).write_text(json.dumps(_sign(m)))
    with pytest.raises(EmbedSearchError):
        embedsearch.open(path)
