"""``embedsearch export``: prepare the ONNX encoder backends ahead of time."""

from __future__ import annotations

import argparse
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX (fp32, and int8 with --int8) into the encoder cache",
        description=(
            "Export a sentence-transformers model to ONNX once (needs torch), cached and "
            "checksummed under $EMBEDSEARCH_CACHE/onnx or ~/.cache/embedsearch/onnx. The "
            "onnx backends, and the torch backend on a machine without a GPU (it runs the "
            "same fp32 model through onnxruntime), then never import torch. Without this "
            "command the export happens on first use."
        ),
    )
    p.add_argument("--model", default=None, help="model path or name (default: the default model)")
    p.add_argument("--int8", action="store_true", help="also write the int8 quantised model")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from ..encoder import default_model_name, resolve_model_path
    from ..errors import InvalidInputError
    from ..onnx_backend import cached_export, default_cache_root, export_onnx, model_fingerprint

    path = resolve_model_path(args.model or default_model_name())
    try:
        out_dir = default_cache_root() / model_fingerprint(path)
    except OSError as exc:
        raise InvalidInputError(f"{path} is not a local model folder ({exc}).") from exc
    for quantized in (False, True) if args.int8 else (False,):
        t0 = time.perf_counter()
        found = cached_export(path, quantized=quantized)
        target = found or export_onnx(path, out_dir, quantized=quantized)
        verb = "cached" if found else f"exported in {time.perf_counter() - t0:.1f} s"
        print(f"{'int8' if quantized else 'fp32'}: {target} ({verb})")
    return 0
