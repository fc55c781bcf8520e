"""Write collections in older on-disk formats, as embedsearch wrote them then.

Kept for the upgrade tests only. :func:`to_format_3` strips the row checksums of format 4
(``.crc``), :func:`to_format_2` those and the id indexes (segments as format 2 wrote them:
Arrow + float32). :func:`downgrade` rewrites a format-2 collection in the
version-1 layout with the version-1 writer's code (Parquet segments holding the vector
column, zstd for the other columns, no dictionary; a ``format_version: 1`` manifest whose
checksum is the SHA-256 of its canonical JSON). Row order, tombstones, the epoch and the
saved index file are kept, exactly as a version-1 writer would have left them (and the
version history, which format 1 predates, is dropped).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def _segment_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("id", pa.string()),
            ("text", pa.string()),
            ("metadata", pa.string()),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_v1_segment(
    root: Path, ids: list[str], texts: list[str], meta: list[str | None], vectors: np.ndarray
) -> dict[str, Any]:
    """The version-1 ``store.write_segment``: one Parquet file, vectors inside."""
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    table = pa.Table.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.array(texts, pa.string()),
            pa.array(meta, pa.string()),
            pa.FixedSizeListArray.from_arrays(flat, dim),
        ],
        schema=_segment_schema(dim),
    )
    name = f"segments/seg-{uuid.uuid4().hex}.parquet"
    pq.write_table(
        table,
        root / name,
        compression={c: ("none" if c == "vector" else "zstd") for c in table.column_names},
        use_dictionary=False,
    )
    path = root / name
    return {"file": name, "rows": len(ids), "sha256": _sha256(path), "bytes": path.stat().st_size}


def downgrade(root: Path) -> None:
    """Rewrite the collection at ``root`` (format 2, closed) in format 1, in place."""
    from embedsearch import store
    from embedsearch.segment import open_segment

    manifest = store.read_manifest(root)
    obj = manifest.to_json()
    segments = []
    for ref in manifest.segments:
        seg = open_segment(root, ref, manifest.dim)
        segments.append(
            write_v1_segment(
                root,
                seg.ids().to_pylist(),
                seg.texts().to_pylist(),
                seg.metadata_json().to_pylist(),
                np.array(seg.vectors()),
            )
        )
        del seg
        for name in ref.files():
            os.unlink(root / name)
    # Format 1 predates version histories: a real format-1 collection has no versions/.
    shutil.rmtree(root / "versions", ignore_errors=True)
    obj["segments"] = segments
    obj["format_version"] = 1
    obj.pop("checksum", None)
    body = {k: v for k, v in obj.items()}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    body["checksum"] = hashlib.sha256(canonical).hexdigest()
    (root / store.MANIFEST).write_text(json.dumps(body, indent=1, sort_keys=True))
    store.remove_orphans(root, store.read_manifest(root))  # files only the history named


#: Rows per vector checksum block of the segments formats 2-5 wrote (since 2026-12-03).
OLD_BLOCK_ROWS = 64


def _reblock(root: Path, vref: dict[str, Any], rows: int, block_rows: int) -> None:
    """Give the vectors entry ``vref`` the block checksums of ``block_rows``-row blocks."""
    from embedsearch.segment import block_crcs

    stored = np.fromfile(root / vref["file"], dtype="<f4").reshape(rows, -1)
    vref["block_rows"], vref["crc32"] = block_rows, block_crcs(stored, block_rows)


def _strip(root: Path, keys: tuple[str, ...], version: int) -> None:
    """Drop the derived files ``keys`` of every segment of the (closed) collection at
    ``root`` and mark its manifest ``version`` (the version history, whose manifests name
    those files, is dropped as well)."""

    def strip(obj: dict[str, Any]) -> None:
        for seg in obj["segments"]:
            for key in keys:
                ref = seg.pop(key, None)
                if ref is not None and "file" in ref:  # the column layout has no file
                    os.unlink(root / ref["file"])
            vref = seg.get("vectors")
            if vref is not None:  # formats 2-5 checked vectors per 64-row block
                _reblock(root, vref, seg["rows"], OLD_BLOCK_ROWS)
        obj["format_version"] = version

    shutil.rmtree(root / "versions", ignore_errors=True)
    rewrite_manifest(root, strip)


def rewrite_manifest(root: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to the JSON of the manifest at ``root`` and store it with a matching
    checksum (what the manifest's own checksum cannot catch)."""
    from embedsearch import store

    obj = store.read_manifest(root).to_json()
    change(obj)
    obj.pop("checksum", None)
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    obj["checksum"] = hashlib.sha256(canonical).hexdigest()
    (root / store.MANIFEST).write_text(json.dumps(obj, indent=1, sort_keys=True))


def to_format_6(root: Path) -> None:
    """Rewrite the collection at ``root`` as format 6 wrote it, in place: no segment entry
    holds its Arrow file's block checksums (no file changes)."""
    _strip(root, ("blocks",), 6)


def to_format_4(root: Path) -> None:
    """Rewrite the collection at ``root`` as format 4 wrote it, in place: no segment entry
    holds its typed column layout or block checksums (no file changes)."""
    _strip(root, ("columns", "blocks"), 4)


def to_format_3(root: Path) -> None:
    """Rewrite the collection at ``root`` as format 3 wrote it, in place: no segment names
    row checksums (the ``.crc`` files are gone) or holds a column layout."""
    _strip(root, ("crcs", "columns", "blocks"), 3)


def to_format_2(root: Path) -> None:
    """Rewrite the collection at ``root`` as format 2 wrote it, in place: no id indexes
    (``.ids``), no row checksums (``.crc``), no column layouts."""
    _strip(root, ("ids", "crcs", "columns", "blocks"), 2)
