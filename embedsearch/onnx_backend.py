"""Sentence embeddings through onnxruntime: the ``onnx`` and ``onnx-int8`` encoder backends.

Why: on CPU, onnxruntime runs a MiniLM-class model at least as fast as torch, and its
dynamically quantised int8 variant is markedly faster, without importing torch at
inference time (torch is only needed once, to export the model).

How it stays faithful to the model's sentence-transformers pipeline:

- Tokenisation goes through the model's own ``tokenizer.json`` with the ``tokenizers``
  library, but with *its* padding and truncation switched off: that file pads every input
  to 128 tokens and truncates at 128, while sentence-transformers truncates at
  ``max_seq_length`` (256 for all-MiniLM-L6-v2, from ``sentence_bert_config.json``) and pads
  per batch. We truncate at ``max_seq_length``, pad per batch and pool with the attention
  mask.
- Pooling follows ``1_Pooling/config.json`` (mean, CLS, max or mean-sqrt-len); output is
  always L2-normalised, like ``SentenceTransformer.encode(normalize_embeddings=True)``.
- Texts are sorted by token length and batched (length bucketing), so short texts are not
  padded to the length of long ones; results come back in input order.

Exported files are cached per model fingerprint (a hash of the weights and configuration)
with a sha256 checksum next to each ``.onnx``; a missing, partial or corrupted file is
re-exported. Exports are written to a temporary folder and renamed into place, so a killed
export never leaves a file that looks valid.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .durable import sha256_file
from .errors import EncoderError

log = logging.getLogger(__name__)

#: Bump when the export recipe changes: it is part of the fingerprint, so old caches are
#: left alone and a fresh export happens.
EXPORT_VERSION = "1"
#: ONNX opset of the export (LayerNormalization is a native op from 17 on).
OPSET = 17
#: Batch size of one onnxruntime call; 32-64 measured fastest on CPU for MiniLM.
BATCH_SIZE = 32

_FP32_NAME = "model.onnx"
_INT8_NAME = "model.int8.onnx"
_POOLING_ORDER = ("cls", "max", "mean", "mean_sqrt_len")  # sentence-transformers' concat order
_POOLING_KEYS = {
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean": "pooling_mode_mean_tokens",
    "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
}
_SUPPORTED_MODULES = {"Transformer", "Pooling", "Normalize"}


@dataclass(frozen=True)
class ModelSpec:
    """What the ONNX pipeline needs to know about a sentence-transformers model folder.

    Attributes:
        root: the model folder (the one holding ``modules.json``).
        transformer_dir: the folder of the Hugging Face transformer (usually ``root``).
        max_seq_length: tokens per text after truncation, special tokens included.
        do_lower_case: whether sentence-transformers lower-cases texts before tokenising.
        pooling_modes: pooling modes in sentence-transformers' concatenation order.
        pooling_dir: the Pooling module's folder (None when the model has none: mean).
        hidden_size: width of the transformer's token embeddings.
    """

    root: Path
    transformer_dir: Path
    max_seq_length: int
    do_lower_case: bool
    pooling_modes: tuple[str, ...] = field(default=("mean",))
    pooling_dir: Path | None = None
    hidden_size: int = 0


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise EncoderError(f"Cannot read {path}: {exc}. Re-download or re-save the model.") from exc


def resolve_model_dir(model_path: str | Path) -> Path:
    """Return the local folder of a model given a path or a hub name already in the HF cache.

    Raises:
        EncoderError: the model is neither a folder nor cached locally.
    """
    path = Path(model_path).expanduser()
    if path.is_dir():
        return path.resolve()
    name = str(model_path)
    candidates = [name] if "/" in name else [name, f"sentence-transformers/{name}"]
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        candidates = []
    for candidate in candidates:
        try:
            return Path(snapshot_download(candidate, local_files_only=True))
        except Exception:  # any failure means "not cached here": try the next name
            continue
    raise EncoderError(
        f"Model {name!r} is not a local folder nor in the local Hugging Face cache. The ONNX "
        "backends need a sentence-transformers model folder: pass its path, or load it once "
        "with the torch backend (online) so that it is cached."
    )


def _pooling_modes(cfg: dict[str, Any], root: Path) -> tuple[str, ...]:
    """The pooling modes a ``1_Pooling/config.json`` switches on, in concatenation order."""
    if isinstance(cfg.get("pooling_mode"), str):  # the single-string form
        cfg = {**cfg, _POOLING_KEYS.get(cfg["pooling_mode"], cfg["pooling_mode"]): True}
    on = {k for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True}
    unsupported = on - set(_POOLING_KEYS.values())
    modes = tuple(m for m in _POOLING_ORDER if _POOLING_KEYS[m] in on)
    if unsupported or not modes:
        raise EncoderError(
            f"Pooling {sorted(unsupported) or cfg} of {root} is not implemented by the ONNX "
            "backends (mean, cls, max, mean_sqrt_len are). Use backend='torch'."
        )
    return modes


def read_model_spec(model_path: str | Path) -> ModelSpec:
    """Read ``modules.json`` and friends into a :class:`ModelSpec`.

    Raises:
        EncoderError: the folder is not a sentence-transformers model, or uses modules
            (e.g. ``Dense``) that the ONNX backends do not implement.
    """
    root = resolve_model_dir(model_path)
    modules = _read_json(root / "modules.json")
    if not isinstance(modules, list) or not modules:
        raise EncoderError(
            f"{root} has no modules.json, so it is not a sentence-transformers model folder. "
            "Save the model with SentenceTransformer.save(), or use the torch backend."
        )
    transformer_dir: Path | None = None
    pooling_dir: Path | None = None
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind not in _SUPPORTED_MODULES:
            raise EncoderError(
                f"{root} uses a {module.get('type')!r} module, which the ONNX backends do not "
                "implement (they support Transformer + Pooling + Normalize). Use backend='torch'."
            )
        sub = root / str(module.get("path", ""))
        if kind == "Transformer":
            transformer_dir = sub
        elif kind == "Pooling":
            pooling_dir = sub
    if transformer_dir is None:
        raise EncoderError(f"{root}/modules.json names no Transformer module. Use backend='torch'.")

    config = _read_json(transformer_dir / "config.json")
    sbert = _read_json(transformer_dir / "sentence_bert_config.json") or _read_json(
        root / "sentence_bert_config.json"
    )
    max_len = sbert.get("max_seq_length")
    if not max_len:  # what sentence-transformers does without sentence_bert_config.json
        tok_cfg = _read_json(transformer_dir / "tokenizer_config.json")
        limits = [config.get("max_position_embeddings"), tok_cfg.get("model_max_length")]
        max_len = min([int(x) for x in limits if isinstance(x, int) and x > 0] or [512])

    pooling_cfg = _read_json(pooling_dir / "config.json") if pooling_dir else {}
    modes = _pooling_modes(pooling_cfg or {"pooling_mode_mean_tokens": True}, root)
    return ModelSpec(
        root=root,
        transformer_dir=transformer_dir,
        max_seq_length=int(max_len),
        do_lower_case=bool(sbert.get("do_lower_case", False)),
        pooling_modes=modes,
        pooling_dir=pooling_dir,
        hidden_size=int(config.get("hidden_size") or 0),
    )


#: Memo of file digests, keyed by path, inode, size and times: a CLI call would otherwise
#: hash the same 90 MB twice (once to find the export, once to load it). It is also kept on
#: disk (``digests.json`` beside the export cache), so a fresh process does not re-hash a
#: model and its export on every call (~1 s of a cold command): a file whose inode, size,
#: mtime or ctime changed is hashed again.
_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}
_DIGESTS_LOADED: set[Path] = set()


def _digest_store() -> Path:
    return default_cache_root() / "digests.json"


def _load_digests(store: Path) -> None:
    if store in _DIGESTS_LOADED:
        return
    _DIGESTS_LOADED.add(store)
    try:
        raw = json.loads(store.read_text("utf-8"))
        for key, digest in raw.items():
            path, ino, size, mtime, ctime = key.rsplit("|", 4)
            _DIGESTS.setdefault((path, int(ino), int(size), int(mtime), int(ctime)), str(digest))
    except (OSError, ValueError, AttributeError):
        return  # no memo yet (or a damaged one): hash again


def _save_digests(store: Path) -> None:
    body = {"|".join(str(x) for x in key): digest for key, digest in _DIGESTS.items()}
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=store.parent, prefix=".digests-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(body, fh)
        os.replace(tmp, store)
    except OSError:
        pass  # a read-only cache: hashing again next time is only slower


def _file_digest(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    store = _digest_store()
    _load_digests(store)
    digest = _DIGESTS.get(key)
    if digest is None:
        digest = _DIGESTS[key] = sha256_file(path)
        _save_digests(store)
    return digest


def model_fingerprint(model_path: str | Path) -> str:
    """A short hash that changes whenever the model's weights or configuration change.

    Covers the weight files (safetensors or pytorch ``.bin``), the transformer and pooling
    configuration, and :data:`EXPORT_VERSION`, so a different model or a new export recipe
    never reuses a stale cache.
    """
    spec = read_model_spec(model_path)
    tdir = spec.transformer_dir
    weights = sorted(tdir.glob("*.safetensors")) or sorted(tdir.glob("pytorch_model*.bin"))
    if not weights:
        raise EncoderError(
            f"No weight file (*.safetensors or pytorch_model*.bin) in {tdir}. Re-download the model."
        )
    configs = [tdir / "config.json", spec.root / "modules.json"]
    if spec.pooling_dir is not None:
        configs.append(spec.pooling_dir / "config.json")
    digest = hashlib.sha256(f"embedsearch-onnx-{EXPORT_VERSION}-opset{OPSET}".encode())
    for path in [*weights, *configs]:
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(_file_digest(path).encode())
    return digest.hexdigest()[:16]


def default_cache_root() -> Path:
    """Where ONNX exports are cached: ``$EMBEDSEARCH_CACHE/onnx`` or ``~/.cache/embedsearch/onnx``."""
    base = os.environ.get("EMBEDSEARCH_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "embedsearch"
    return root / "onnx"


def _checksum_path(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".sha256")


def verify_checksum(onnx_path: Path) -> bool:
    """True when ``onnx_path`` and its ``.sha256`` file both exist and agree."""
    sums = _checksum_path(onnx_path)
    if not (onnx_path.is_file() and sums.is_file()):
        return False
    try:
        expected = sums.read_text("ascii").split()[0].lower()
    except (OSError, ValueError, IndexError):
        return False
    return _file_digest(onnx_path) == expected


def _export_fp32(spec: ModelSpec, dest: Path) -> None:
    """torch.onnx.export of the Hugging Face transformer (last_hidden_state) to ``dest``."""
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise EncoderError(
            "Exporting to ONNX needs torch and transformers (only once per model): install them, "
            "or copy an existing export into the cache folder."
        ) from exc

    # Eager attention traces to plain MatMul/Softmax, which onnxruntime fuses; SDPA does not.
    model = AutoModel.from_pretrained(str(spec.transformer_dir), attn_implementation="eager")
    model.eval()
    accepted = set(inspect.signature(model.forward).parameters)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted]

    class _LastHidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, args))).last_hidden_state

    # A batch with one padded row, so the trace covers the masked path.
    ids = torch.full((2, 16), 101, dtype=torch.long)
    mask = torch.ones((2, 16), dtype=torch.long)
    mask[1, 9:] = 0
    sample = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    args = tuple(sample[n] for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    # The TorchScript exporter (dynamo=False: the dynamo one needs onnxscript) warns about
    # its deprecation and about traced Python conditionals; _check_export verifies the result.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = _LastHidden(model)(*args).numpy()
        torch.onnx.export(
            _LastHidden(model),
            args,
            str(dest),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    _check_export(dest, dict(zip(names, (a.numpy() for a in args))), expected, mask.numpy())


def _check_export(
    path: Path, feeds: dict[str, np.ndarray], expected: np.ndarray, mask: np.ndarray
) -> None:
    """Run the fresh export once and compare with torch, so a broken trace never gets cached."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)[0]
    keep = mask.astype(bool)
    err = float(np.max(np.abs(got[keep] - expected[keep])))
    if not err < 1e-3:
        raise EncoderError(
            f"The ONNX export of this model disagrees with torch (max abs diff {err:.3g}); "
            "use backend='torch' for it."
        )


def _quantize(src: Path, dest: Path) -> None:
    """Dynamic int8 quantisation of every MatMul weight, per output channel.

    Per-channel scales kept the mean cosine to fp32 at 0.992 on headlines versus 0.966
    per-tensor; ``reduce_range`` (7-bit weights) bought nothing measurable on AVX2.
    """
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser logs one INFO line per tensor on the root logger; keep those out of the
    # caller's logs for the few seconds this takes.
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        quantize_dynamic(
            str(src),
            str(dest),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=False,
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
    finally:
        logging.disable(previous)


def cached_export(
    model_path: str | Path, *, quantized: bool = False, cache_dir: str | Path | None = None
) -> Path | None:
    """The verified ONNX export of a model if the cache already holds one, else None.

    Never exports (exporting needs torch): a command that wants to answer fast checks here
    and falls back to torch when nothing is cached.
    """
    try:
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
        path = root / model_fingerprint(model_path) / (_INT8_NAME if quantized else _FP32_NAME)
    except (EncoderError, OSError):
        return None
    return path if verify_checksum(path) else None


def export_onnx(model_path: str | Path, out_dir: str | Path, *, quantized: bool) -> Path:
    """Export a sentence-transformers model's transformer to ONNX, optionally int8.

    The graph maps ``input_ids``/``attention_mask``(/``token_type_ids``) of shape
    (batch, sequence), both dynamic, to ``last_hidden_state``; pooling and normalisation
    happen in :class:`OnnxBackend`. The file and a ``<name>.sha256`` checksum are written
    to a temporary folder inside ``out_dir`` and renamed into place.

    Args:
        model_path: a sentence-transformers model folder.
        out_dir: folder that receives ``model.onnx`` or ``model.int8.onnx``.
        quantized: apply onnxruntime dynamic quantisation (QInt8 weights, per channel).

    Returns:
        The path of the written ``.onnx`` file.

    Raises:
        EncoderError: the model cannot be exported (unsupported modules, missing torch,
            an export that disagrees with torch).
    """
    spec = read_model_spec(model_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / (_INT8_NAME if quantized else _FP32_NAME)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        fp32 = out / _FP32_NAME
        if not (quantized and verify_checksum(fp32)):
            fp32 = tmp / _FP32_NAME
            _export_fp32(spec, fp32)
        staged = tmp / target.name
        if quantized:
            _quantize(fp32, staged)
        digest = sha256_file(staged)
        sums = tmp / _checksum_path(target).name
        sums.write_text(f"{digest}  {target.name}\n", "ascii")
        # The .onnx first, then its checksum: a crash in between leaves a stale or missing
        # checksum, which fails verification and triggers a re-export.
        os.replace(staged, target)
        os.replace(sums, _checksum_path(target))
    except EncoderError:
        raise
    except Exception as exc:
        raise EncoderError(
            f"Exporting {spec.root} to ONNX failed: {exc}. Use backend='torch' for this model."
        ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class OnnxBackend:
    """Sentence embeddings through onnxruntime; no torch at inference time.

    Args:
        model_path: a sentence-transformers model folder (Transformer + Pooling [+ Normalize]).
        quantized: use the int8 dynamically quantised export (``onnx-int8``).
        cache_dir: root of the export cache; files go to ``<cache_dir>/<fingerprint>/``.
            Defaults to :func:`default_cache_root`.
        threads: CPU threads to use; defaults to ``os.cpu_count()``. Every onnxruntime call
            is single-threaded and up to ``threads`` calls (length buckets, or texts) run at
            once: a lone query then pays no thread hand-off, and bulk work keeps every core
            busy with coarse-grained calls (``benchmarks/peers.py``, 20k headlines: ingest
            337 -> 391 docs/s, text-query p50 23.8 -> 14.6 ms against 2 intra-op threads).
        per_text: run each text alone (batch of one) instead of in padded length buckets.
            Defaults to ``quantized``: dynamic int8 quantisation picks one activation scale per
            call, so in a batch a text's vector depends on its neighbours (cosine to its
            stand-alone vector down to 0.96 for a short text next to a long one). One text per
            call makes int8 vectors deterministic (a query gets exactly the vector the same
            text got as a document) at about the same throughput.

    Raises:
        EncoderError: the model cannot be read, exported or loaded.

    Example:
        >>> backend = OnnxBackend(model_dir, quantized=False)
        >>> backend.embed(["a cat", "a kitten"]).shape
        (2, 384)
    """

    name: str
    dim: int
    max_seq_length: int

    def __init__(
        self,
        model_path: str | Path,
        *,
        quantized: bool,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
        per_text: bool | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EncoderError(
                "The onnx backends need onnxruntime and tokenizers: `pip install onnxruntime "
                "tokenizers`, or use backend='torch'."
            ) from exc

        self.spec = read_model_spec(model_path)
        self.name = "onnx-int8" if quantized else "onnx"
        self.max_seq_length = self.spec.max_seq_length
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
        self.cache_dir = root / model_fingerprint(self.spec.root)
        self.onnx_path = self.cache_dir / (_INT8_NAME if quantized else _FP32_NAME)
        self._ensure_export(quantized)

        tok_file = self.spec.transformer_dir / "tokenizer.json"
        if not tok_file.is_file():
            raise EncoderError(
                f"{tok_file} is missing; the ONNX backends need a fast tokenizer file. Re-save "
                "the model with a recent sentence-transformers, or use backend='torch'."
            )
        # The file's own padding (fixed 128) and truncation (128) differ from what
        # sentence-transformers does; we pad per batch and truncate at max_seq_length.
        self._tokenizer = Tokenizer.from_file(str(tok_file))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=self.max_seq_length)
        # A second handle on the same file, never truncated, counts tokens. (Not the shared
        # one of embedsearch.tokenizer: that module reads the model spec from here, and
        # importing it back would make a loop.)
        self._counter = Tokenizer.from_file(str(tok_file))
        self._counter.no_padding()
        self._counter.no_truncation()
        self._pad_id = int(self._tokenizer.token_to_id("[PAD]") or 0)
        pad = _read_json(self.spec.transformer_dir / "config.json").get("pad_token_id")
        if isinstance(pad, int):
            self._pad_id = pad

        self.threads = max(1, int(threads or os.cpu_count() or 1))
        self.per_text = quantized if per_text is None else bool(per_text)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # parallel calls instead (see ``threads``)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(self.onnx_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise EncoderError(
                f"onnxruntime cannot load {self.onnx_path}: {exc}. Delete {self.cache_dir} to "
                "re-export, or use backend='torch'."
            ) from exc
        self._inputs = [i.name for i in self._session.get_inputs()]
        width = self._session.get_outputs()[0].shape[-1]
        hidden = width if isinstance(width, int) else self.spec.hidden_size
        self.dim = int(hidden) * len(self.spec.pooling_modes)

    def _ensure_export(self, quantized: bool) -> None:
        """Export into the cache unless a file with a matching checksum is already there."""
        if verify_checksum(self.onnx_path):
            return
        if self.onnx_path.exists() or _checksum_path(self.onnx_path).exists():
            log.warning(
                "ONNX cache file %s is corrupted or incomplete (checksum mismatch); re-exporting.",
                self.onnx_path,
            )
        log.info(
            "first use of model %s: exporting its encoder to ONNX%s once (takes a few seconds; "
            "later runs reuse it from %s)",
            self.spec.root,
            " int8" if quantized else "",
            self.cache_dir,
        )
        export_onnx(self.spec.root, self.cache_dir, quantized=quantized)
        if not verify_checksum(self.onnx_path):  # e.g. a concurrent writer or a full disk
            raise EncoderError(
                f"The ONNX export at {self.onnx_path} fails its checksum right after export. "
                f"Check free space and permissions of {self.cache_dir}."
            )

    def _prepare(self, texts: list[str]) -> list[str]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise EncoderError("embed() and token_counts() take a list of strings.")
        return [t.lower() for t in texts] if self.spec.do_lower_case else list(texts)

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens each text would use before truncation, special tokens ([CLS], [SEP]) included.

        A count above :attr:`max_seq_length` means the text is truncated when embedded;
        callers use this for length bucketing and chunking.
        """
        prepared = self._prepare(texts)
        if not prepared:
            return []
        return [len(e.ids) for e in self._counter.encode_batch(prepared)]

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts as L2-normalised float32 vectors of shape (len(texts), dim).

        Same semantics as the model's sentence-transformers pipeline with
        ``normalize_embeddings=True``: truncation at :attr:`max_seq_length`, pooling over
        real tokens only (attention mask). Texts are batched by similar length internally
        (or run one per call, see ``per_text``); row ``i`` of the result always belongs to
        ``texts[i]``.

        Raises:
            EncoderError: inputs are not strings, or onnxruntime fails.
        """
        prepared = self._prepare(texts)
        out = np.zeros((len(prepared), self.dim), dtype=np.float32)
        if not prepared:
            return out
        encodings = self._tokenizer.encode_batch(prepared)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64)
        # Longest first, so that the last calls in flight are the short ones (balanced threads).
        order = np.argsort(lengths, kind="stable")[::-1]
        size = 1 if self.per_text else BATCH_SIZE
        buckets = [order[start : start + size] for start in range(0, len(order), size)]

        def run(idx: np.ndarray) -> None:
            out[idx] = self._embed_batch([encodings[i] for i in idx], int(lengths[idx].max()))

        if self.threads == 1 or len(buckets) == 1:
            for idx in buckets:
                run(idx)
            return out
        with ThreadPoolExecutor(max_workers=min(self.threads, len(buckets))) as pool:
            list(pool.map(run, buckets))  # onnxruntime drops the GIL while it computes
        return out

    def _embed_batch(self, encodings: list[Any], width: int) -> np.ndarray:
        n = len(encodings)
        ids = np.full((n, width), self._pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            k = len(enc.ids)
            ids[row, :k] = enc.ids
            mask[row, :k] = 1
            types[row, :k] = enc.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        try:
            hidden = self._session.run(None, {k: feeds[k] for k in self._inputs})[0]
        except Exception as exc:
            raise EncoderError(f"onnxruntime failed while embedding a batch: {exc}") from exc
        return _normalize(
            _pool(hidden.astype(np.float32, copy=False), mask, self.spec.pooling_modes)
        )


def _pool(hidden: np.ndarray, mask: np.ndarray, modes: tuple[str, ...]) -> np.ndarray:
    """sentence-transformers' Pooling over real tokens, modes concatenated in its order."""
    weights = mask[..., None].astype(np.float32)
    counts = np.maximum(weights.sum(axis=1), 1e-9)
    parts = []
    for mode in modes:
        if mode == "cls":
            parts.append(hidden[:, 0])
        elif mode == "max":
            parts.append(np.where(weights > 0, hidden, -1e9).max(axis=1))
        elif mode == "mean":
            parts.append((hidden * weights).sum(axis=1) / counts)
        else:  # mean_sqrt_len
            parts.append((hidden * weights).sum(axis=1) / np.sqrt(counts))
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


def _normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise rows like torch.nn.functional.normalize (eps 1e-12)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
