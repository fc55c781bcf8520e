"""``checksums.crc32`` is zlib's CRC-32, whichever implementation runs it."""

from __future__ import annotations

import hashlib
import mmap
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedsearch import checksums, durable, store


def test_crc32_equals_zlib_on_every_kind_of_buffer(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    blobs = [b"", b"a", os.urandom(1), os.urandom(4095), os.urandom(384 * 1024 + 7)]
    for blob in blobs:
        assert checksums.crc32(blob) == zlib.crc32(blob)
        assert checksums.crc32(memoryview(blob)) == zlib.crc32(blob)
        assert checksums.crc32(bytearray(blob)) == zlib.crc32(blob)
    # continued from a value, as files are checksummed block by block
    head, tail = blobs[-1][:1000], blobs[-1][1000:]
    assert checksums.crc32(tail, checksums.crc32(head)) == zlib.crc32(blobs[-1])
    # a numpy matrix's bytes and a read-only map of a file, as segments hand them over
    matrix = rng.normal(size=(300, 8)).astype(np.float32)
    flat = memoryview(matrix).cast("B")
    assert checksums.crc32(flat[96:4000]) == zlib.crc32(flat[96:4000])
    path = tmp_path / "f"
    path.write_bytes(blobs[-1])
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert checksums.crc32(m) == zlib.crc32(blobs[-1])
        assert checksums.crc32(memoryview(m)[5:70000]) == zlib.crc32(blobs[-1][5:70000])


def test_the_fast_implementation_is_installed() -> None:
    # isal is a dependency: without it first-touch checks run ~20x slower (see the module)
    assert checksums._fast is not None


def test_write_file_checksums_reads_back_once_and_matches_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A saved index's SHA-256 and CRC-32 come from one read-back of the written file
    (store.write_file_checksums); both must equal the file's own, across 1 MiB blocks."""
    payload = np.random.default_rng(3).integers(0, 256, (3 << 20) + 12345, dtype=np.uint8)
    reads: list[str] = []
    real = durable.sha256_file

    def counting(fh: Any, also: Any = None) -> str:  # plumbing spy around the real reader
        reads.append(getattr(fh, "name", ""))
        return real(fh, also)

    def writer(fh: Any) -> None:  # a writer's uneven pieces, as FAISS's callback hands them
        for i in range(0, payload.size, 70_001):
            fh.write(payload[i : i + 70_001].tobytes())

    monkeypatch.setattr(durable, "sha256_file", counting)
    for name, data in (("bytes.bin", payload.tobytes()), ("writer.bin", writer)):
        size, sha, crc = store.write_file_checksums(tmp_path, name, data)
        raw = (tmp_path / name).read_bytes()
        assert raw == payload.tobytes()
        assert size == len(raw)
        assert sha == hashlib.sha256(raw).hexdigest()
        assert crc == f"{zlib.crc32(raw):08x}"
    assert len(reads) == 2  # one read-back a file, both checksums from it
