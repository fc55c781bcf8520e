"""Checking and repairing a collection on disk: :func:`verify` and :func:`repair`.

``verify`` reads everything the manifest names and reports what is wrong without changing
a byte: the manifest's own checksum and structure, every segment and tombstone file
(presence, SHA-256, Parquet schema, row count), the saved FAISS index (checksum against the
manifest *before* FAISS reads it, dimension, row count, epoch), invariants across files
(no id live twice, tombstones inside the rows they delete from), and leftovers of
interrupted writes (``*.tmp`` files, unreferenced segments or index files).

``repair`` takes the collection's write lock, moves every unreadable segment, tombstone or
index file into ``<collection>/quarantine/``, commits a manifest without them (tombstone
positions renumbered around dropped segments, so deletes never come back and never hit the
wrong rows), removes leftovers and rebuilds the derived FAISS index from the stored vectors.
A damaged *manifest* is not guessed at: the order of segments and which rows were deleted
live only there, so ``repair`` stops and says to restore it from a backup.

Severity: ``error`` means data is damaged or the collection cannot be opened; ``warning``
means derived or leftover files that ``repair`` (or the next write) cleans up.

Example:
    >>> report = verify("indexes/notes")
    >>> report.ok, [p.kind for p in report.problems]
    (True, [])
"""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import durable, store, versions
from .errors import CollectionNotFoundError, CorruptionError, UnsafeFileError
from .manifest import (
    INDEX_RE,
    SEGMENT_RE,
    TAIL_RE,
    TOMBSTONE_RE,
    IndexFileRef,
    IndexSection,
    Manifest,
    SegmentRef,
)
from .segment import verify_blocks, verify_columns, verify_crcs, verify_ids, verify_segment

Severity = Literal["error", "warning"]

#: A segment's derived parts (manifest key, check against the verified segment): damaged,
#: they are dropped without losing a row, and the next write rebuilds them. The id index
#: and row checksums are files; the typed column layout (format 5) and the Arrow block
#: checksums (format 7) are in the manifest only.
_DERIVED = (
    ("ids", verify_ids),
    ("crcs", verify_crcs),
    ("columns", verify_columns),
    ("blocks", verify_blocks),
)

#: What segments of older formats lack, each a warning of ``verify`` (how to tell, what it
#: costs a reader, what ``upgrade`` does to them).
_FORMAT_GAPS: tuple[tuple[Callable[[SegmentRef], bool], str, str], ...] = (
    (lambda s: s.legacy, "in format 1 (read whole on every open)", "convert"),
    (
        lambda s: not s.legacy and s.ids is None,
        "without an id index (format 2: a process reads and hashes their ids on its first look-up)",
        "add",
    ),
    (
        lambda s: s.lacks_row_crcs,
        "without row checksums (formats 2-3: a process checks a whole 64-row block to read "
        "one row the first time)",
        "add",
    ),
    (
        lambda s: s.lacks_columns,
        "without a typed column layout (formats 2-4: a process checksums a whole segment "
        "file before its first filter reads a column)",
        "add",
    ),
    (
        lambda s: s.lacks_blocks,
        "without block checksums (formats 2-6: a process checksums a whole segment file "
        "before it first reads a hit's text from it)",
        "add",
    ),
)

QUARANTINE_DIR = "quarantine"
# The only file names a manifest may contain: anything else (``../x``, absolute paths) is
# refused without being opened, so a hostile manifest cannot point us outside the collection.
# (The typed manifest already refuses other names; these checks stay as a second guard.)
_SEGMENT_NAME = re.compile(rf"^{SEGMENT_RE.pattern}\Z")
_TOMBSTONE_NAME = re.compile(rf"^{TOMBSTONE_RE.pattern}\Z")
_INDEX_NAME = re.compile(rf"^{INDEX_RE.pattern}\Z")
_TAIL_NAME = re.compile(rf"^{TAIL_RE.pattern}\Z")


@dataclass(frozen=True)
class Problem:
    """One finding of :func:`verify`.

    Attributes:
        severity: ``error`` (data damaged / collection cannot open) or ``warning``.
        file: the file concerned, relative to the collection.
        kind: a short machine-readable tag (``checksum``, ``missing``, ``orphan``…).
        detail: what is wrong and what to do, for people.
    """

    severity: Severity
    file: str
    kind: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class VerifyReport:
    """What :func:`verify` found in one collection."""

    path: str
    problems: list[Problem] = field(default_factory=list)
    segments: int = 0
    tombstone_files: int = 0
    rows: int = 0
    live: int = 0
    index_file: str | None = None
    files_checked: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when nothing is damaged (warnings about leftovers allowed)."""
        return not self.errors

    def add(self, severity: Severity, file: str, kind: str, detail: str) -> None:
        self.problems.append(Problem(severity, file, kind, detail))

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "segments": self.segments,
            "tombstone_files": self.tombstone_files,
            "rows": self.rows,
            "live": self.live,
            "index_file": self.index_file,
            "files_checked": self.files_checked,
            "problems": [p.to_dict() for p in self.problems],
        }


@dataclass
class RepairReport:
    """What :func:`repair` did."""

    path: str
    quarantined: list[str] = field(default_factory=list)
    dropped_refs: list[str] = field(default_factory=list)
    removed_leftovers: list[str] = field(default_factory=list)
    lost_rows: int = 0
    lost_tombstone_files: int = 0
    #: Past versions forgotten because a file they named was quarantined (they cannot open).
    versions_dropped: list[int] = field(default_factory=list)
    manifest_rewritten: bool = False
    index_rebuilt: bool = False
    before: VerifyReport | None = None
    after: VerifyReport | None = None

    @property
    def ok(self) -> bool:
        return self.after is not None and self.after.ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "quarantined": self.quarantined,
            "dropped_refs": self.dropped_refs,
            "removed_leftovers": self.removed_leftovers,
            "lost_rows": self.lost_rows,
            "lost_tombstone_files": self.lost_tombstone_files,
            "versions_dropped": self.versions_dropped,
            "manifest_rewritten": self.manifest_rewritten,
            "index_rebuilt": self.index_rebuilt,
            "before": self.before.to_dict() if self.before else None,
            "after": self.after.to_dict() if self.after else None,
        }


# ----------------------------------------------------------------------------- helpers
def _root(path: str | os.PathLike[str]) -> Path:
    root = Path(path)
    if not root.is_dir():
        raise CollectionNotFoundError(
            f"No collection at {root}; check the name or EMBEDSEARCH_HOME (`embedsearch list`)."
        )
    return root


def _safe_name(name: str, pattern: re.Pattern[str]) -> bool:
    return bool(pattern.match(name))


def _culprit(root: Path, ref: SegmentRef) -> tuple[str, str, str]:
    """Which file of a segment that failed to load is at fault: (file, kind, detail)."""
    parts = [store.FileRef(ref.file, ref.rows, ref.sha256, ref.bytes)]
    if ref.vectors is not None:
        parts.append(
            store.FileRef(ref.vectors.file, ref.rows, ref.vectors.sha256, ref.vectors.bytes)
        )
    found = [(part.file, *_classify(root, part)) for part in parts]
    for file, kind, detail in found:
        if kind != "unreadable" or "cannot be read" in detail:
            return file, kind, detail
    return found[0]


def _classify(root: Path, ref: store.FileRef) -> tuple[str, str]:
    """Why a file named by the manifest failed to load: (kind, detail)."""
    try:
        with durable.open_file(root, ref.file) as fh:
            digest = store.sha256_file(fh)
            size = fh.tell()
    except (FileNotFoundError, NotADirectoryError):
        return "missing", "named in the manifest but not on disk"
    except UnsafeFileError:
        return "unsafe", "is a link or not a regular file; it is never followed"
    except OSError as exc:
        return "unreadable", f"cannot be read ({exc.strerror})"
    if digest != ref.sha256:
        return "checksum", f"SHA-256 differs from the manifest ({size} bytes, expected {ref.bytes})"
    return "unreadable", "checksum matches but the content cannot be parsed as expected"


def _leftovers(root: Path, manifest: Manifest | None) -> list[tuple[str, str]]:
    """(relative name, kind) of temp files and files no manifest names."""
    return [
        (rel, "temp-file" if rel.endswith(".tmp") else "orphan")
        for rel in store.leftovers(
            root, manifest, keep=versions.kept_files(root, manifest) if manifest else None
        )
    ]


def _report_leftovers(root: Path, manifest: Manifest | None, report: VerifyReport) -> None:
    try:
        found = _leftovers(root, manifest)
    except UnsafeFileError as exc:  # a linked segments/: reported, never followed
        report.add("error", store.SEGMENTS_DIR, "unsafe", str(exc))
        return
    for rel, kind in found:
        report.add(
            "warning",
            rel,
            kind,
            "leftover of an interrupted or replaced write; the next writer (or repair) removes it",
        )


def _read_manifest(root: Path, report: VerifyReport) -> Manifest | None:
    try:
        manifest = store.read_manifest(root)
    except CorruptionError as exc:
        report.add("error", store.MANIFEST, "manifest", str(exc))
        return None
    return manifest  # read_manifest also checked its structure and file names


# ----------------------------------------------------------------------------- verify
def verify(path: str | os.PathLike[str]) -> VerifyReport:
    """Check every file of a collection against its manifest; change nothing.

    Args:
        path: the collection directory.

    Returns:
        A :class:`VerifyReport`; ``report.ok`` is False when anything is damaged.

    Raises:
        CollectionNotFoundError: ``path`` is not a directory.
        NotACollectionError: the directory has no embedsearch manifest.
    """
    root = _root(path)
    report = VerifyReport(path=str(root))
    manifest = _read_manifest(root, report)
    report.files_checked += 1
    if manifest is None:
        _report_leftovers(root, None, report)
        return report
    dim = manifest.dim
    report.segments = len(manifest.segments)
    report.tombstone_files = len(manifest.tombstones)

    ids: list[str | None] = []
    segments: list[Any] = []
    for ref in manifest.segments:
        report.files_checked += len(ref.files())
        if not _safe_name(ref.file, _SEGMENT_NAME):
            report.add("error", ref.file, "bad-name", "not a segment file name; never opened")
            ids.extend([None] * ref.rows)
            continue
        try:
            seg = verify_segment(root, ref, dim)
        except CorruptionError:
            file, kind, detail = _culprit(root, ref)
            report.add("error", file, kind, f"segment {detail}; run `embedsearch repair`")
            ids.extend([None] * ref.rows)
            segments.append(None)
            continue
        for key, check in _DERIVED:
            try:
                check(root, ref, seg)
            except CorruptionError as exc:
                part = getattr(ref, key)
                if hasattr(part, "file"):  # the id index or the row checksums
                    file = part.file
                    kind = _classify(root, store.FileRef(part.file, 0, part.sha256, 0))[0]
                else:  # the column layout or block checksums: in the manifest entry only
                    file, kind = ref.file, "layout"
                report.add(
                    "error",
                    file,
                    kind,
                    f"{exc} `embedsearch repair` drops it (no rows are lost); the next "
                    "write rebuilds it",
                )
        ids.extend(seg.ids().to_pylist())
        segments.append(seg)
    report.rows = len(ids)
    for lacks, what, verb in _FORMAT_GAPS:
        if behind := [s for s in manifest.segments if lacks(s)]:
            report.add(
                "warning",
                store.MANIFEST,
                "format",
                f"{len(behind)} segment(s) {what}; run `embedsearch upgrade` (or write to the "
                f"collection) to {verb} them",
            )

    live = np.ones(len(ids), dtype=bool)
    for ref in manifest.tombstones:
        report.files_checked += 1
        if not _safe_name(ref.file, _TOMBSTONE_NAME):
            report.add("error", ref.file, "bad-name", "not a tombstone file name; never opened")
            continue
        try:
            positions = store.read_tombstones(root, ref)
        except CorruptionError:
            kind, detail = _classify(root, ref)
            report.add(
                "error",
                ref.file,
                kind,
                f"tombstone file {detail}; deleted documents may reappear. Run `embedsearch repair`",
            )
            continue
        bad = positions[(positions < 0) | (positions >= len(ids))]
        if bad.size:
            report.add(
                "warning",
                ref.file,
                "tombstone-range",
                f"{bad.size} position(s) outside the {len(ids)} stored rows",
            )
        live[positions[(positions >= 0) & (positions < len(ids))]] = False
    _check_duplicates(ids, live, report)
    report.live = int(sum(1 for i, alive in zip(ids, live) if alive and i is not None))

    _verify_index(root, manifest, dim, report, segments)
    _verify_history(root, manifest, report)
    _report_leftovers(root, manifest, report)
    return report


def _verify_history(root: Path, manifest: dict[str, Any], report: VerifyReport) -> None:
    """Every kept past version must still find its files (present, right size); the ones
    the current version shares were checked above, the others are checked here by size.
    A past version's index file may be gone (see ``versions.kept_files``)."""
    current = versions.files_of(manifest)
    try:
        kept = versions.kept_manifests(root, manifest)
    except CorruptionError as exc:
        report.add("error", versions.VERSIONS_DIR, "history", str(exc))
        return
    for gen, past in kept.items():
        for name, (_, size) in versions.file_checksums(past).items():
            if name in current:
                continue
            report.files_checked += 1
            try:
                actual = (root / name).stat().st_size
            except OSError:
                actual = -1
            if actual < 0 and name in versions.index_files_of(past):
                continue  # a past version's index is derived data, re-made when it is opened
            if actual != size:
                what = "missing" if actual < 0 else f"{actual} bytes, not {size}"
                report.add(
                    "error",
                    name,
                    "history",
                    f"kept version {gen} names this file but it is {what}; that version cannot "
                    "be opened (untag it, or let retention expire it).",
                )


def _check_duplicates(ids: list[str | None], live: np.ndarray, report: VerifyReport) -> None:
    """An id must be live at most once; otherwise a stale version would show up in search."""
    seen: set[str] = set()
    dups: set[str] = set()
    for doc_id, alive in zip(ids, live):
        if doc_id is None or not alive:
            continue
        if doc_id in seen:
            dups.add(doc_id)
        seen.add(doc_id)
    if dups:
        shown = ", ".join(repr(d) for d in sorted(dups)[:5])
        report.add(
            "error",
            store.MANIFEST,
            "duplicate-live-id",
            f"{len(dups)} id(s) are live in more than one row ({shown}); searches may return "
            "an old version",
        )


def _verify_index(
    root: Path, manifest: Manifest, dim: int, report: VerifyReport, segments: list[Any]
) -> None:
    saved = manifest.index.file
    if not saved:
        return
    ref = saved
    report.index_file = ref.file
    report.files_checked += 1
    if not _safe_name(ref.file, _INDEX_NAME):
        report.add("error", ref.file, "bad-name", "not an index file name; never opened")
        return
    kind, _detail = _classify(root, ref)
    if kind == "missing":
        report.add(
            "error", ref.file, "missing", "index file missing; `embedsearch repair` rebuilds it"
        )
        return
    if kind != "unreadable":
        report.add(
            "error",
            ref.file,
            kind,
            "index file fails its checksum or is not a plain file; it is not loaded (rebuilt "
            "in memory on every open) until `embedsearch repair` rebuilds it",
        )
        return
    if saved.epoch != manifest.epoch:
        report.add("warning", ref.file, "stale-index", "index belongs to an older epoch; ignored")
    if ref.rows > report.rows:
        report.add(
            "error",
            ref.file,
            "index-rows",
            f"index holds {ref.rows} rows but the segments only {report.rows}",
        )
    from .index import entries_per_row, faiss  # only after the checksum matched

    try:
        with store.open_verified(root, ref) as fh:
            index = faiss().read_index(faiss().PyCallbackIOReader(fh.read))
    except Exception as exc:  # noqa: BLE001 - FAISS raises RuntimeError with C++ text
        report.add("error", ref.file, "unreadable", f"FAISS cannot read it ({exc})")
        return
    resolved = str(ref.info.get("resolved", ""))
    if index.d != dim or index.ntotal != ref.rows * entries_per_row(resolved):
        report.add(
            "error",
            ref.file,
            "index-shape",
            f"index has d={index.d}, ntotal={index.ntotal}; manifest expects d={dim}, "
            f"rows={ref.rows}"
            + (" (two entries a row: spilled lists)" if entries_per_row(resolved) == 2 else ""),
        )
        return
    holder = _holder(manifest, index, ref.info)
    problem = holder.check_against(ref.rows)
    if problem:
        report.add("error", ref.file, "index-ids", f"{problem}; `embedsearch repair` rebuilds it")
        return
    for tail in manifest.index.tail:
        report.files_checked += 1
        problem = _tail_problem(root, tail, holder)
        if problem:
            kind, detail = problem
            report.add(
                "error",
                tail.file,
                kind,
                f"index tail {detail}; the rows it holds are indexed from the segments on "
                "every open until `embedsearch repair` rebuilds the index",
            )
            return
    detail = _index_content(index, segments, ref.rows)
    if detail:
        report.add(
            "error", ref.file, "index-content", f"{detail}; `embedsearch repair` rebuilds it"
        )
        return
    problem = _trained_problem(root, ref, index, holder)
    if problem:
        report.add(
            "error",
            ref.file,
            "index-trained",
            f"{problem}; `embedsearch repair` rebuilds the index",
        )


def _holder(manifest: Manifest, index: Any, info: dict[str, Any]) -> Any:
    """A VectorIndex around a FAISS index read from the file ``info`` records, to check it
    (``check_against``) and its tails (``read_codes``) as a reader would."""
    from .index import VectorIndex

    holder = VectorIndex(manifest.index.spec, manifest.dim)
    holder._index = index
    holder.info.resolved = str(info.get("resolved", ""))
    holder.info.kind = str(info.get("kind", ""))
    return holder


def _tail_problem(root: Path, tail: store.FileRef, holder: Any) -> tuple[str, str] | None:
    """(kind, detail) of what is wrong with an index tail file, or None when its codes can be
    appended to ``holder`` (the index loaded from the file the tail follows)."""
    if not _safe_name(tail.file, _TAIL_NAME):
        return "bad-name", "not an index tail name; never opened"
    kind, detail = _classify(root, tail)
    if kind != "unreadable":
        return kind, detail
    try:
        with store.open_verified(root, tail) as fh:
            holder.read_codes(fh, tail.rows)
    except Exception as exc:  # noqa: BLE001 - a crafted file fails here, whatever the cause
        return "unreadable", f"is not this index's codes ({exc})"
    return None


def _trained_problem(root: Path, ref: IndexFileRef, index: Any, holder: Any) -> str | None:
    """What is wrong with the training saved at the end of the index file of ``ref`` (None
    when it is fine or there is none): it must read back as an empty index of the kind
    recorded and encode rows exactly as ``index`` (the index read from the file) does, or
    writers that only add rows would file them in the wrong cells."""
    if ref.trained is None:
        return None
    try:
        header = holder.check_trained(store.read_trained(root, ref))
    except Exception as exc:  # noqa: BLE001 - a crafted part fails here, whatever the cause
        return f"the training saved after the index is unusable ({exc})"
    probe = np.random.default_rng(0).standard_normal((64, index.d)).astype(np.float32)
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    if not np.array_equal(header.sa_encode(probe), index.sa_encode(probe)):
        return (
            "the training saved after the index is not the index's own: rows that writers "
            "add would go to the wrong cells"
        )
    return None


def _index_content(index: Any, segments: list[Any], rows: int, sample: int = 64) -> str | None:
    """Compare the index's stored vectors with the segments' on a sample of positions.

    Reconstructs sampled rows from the index (approximately, for quantised codes) and
    requires a mean cosine of at least 0.5 with the stored vectors: an index built from
    other vectors, or with rows shuffled, scores near 0. Fast-scan indexes are not asked to
    reconstruct (FAISS 1.15 crashes the process doing so on one read back from a file: a
    segmentation fault in ``verify`` at 1M and 5M rows; FAISS's own reports of fast-scan
    reconstruction faults: facebookresearch/faiss#4089, #5436); each sampled row must come
    back among the nearest to its own stored vector. Indexes that can do neither are not
    judged here.
    """
    from .index import VectorIndex, faiss

    starts = np.cumsum([0] + [s.rows if s is not None else 0 for s in segments])
    if not rows or any(s is None for s in segments):
        return None
    picks = np.unique(np.random.default_rng(0).integers(0, rows, size=min(sample, rows)))
    want = np.empty((picks.size, index.d), dtype=np.float32)
    for i, p in enumerate(picks.tolist()):
        s = int(np.searchsorted(starts, p, side="right")) - 1
        want[i] = segments[s].take(np.array([p - starts[s]]))[0]
    f = faiss()
    base = VectorIndex._unwrap(index)
    fast = tuple(
        getattr(f, name) for name in ("IndexIVFFastScan", "IndexFastScan") if hasattr(f, name)
    )
    if fast and isinstance(base, fast):
        return _index_returns_its_rows(index, base, want, picks)
    try:
        if isinstance(base, f.IndexIVF):
            base.make_direct_map()
        got = np.stack([index.reconstruct(int(p)) for p in picks.tolist()])
    except Exception:  # noqa: BLE001 - this index type does not reconstruct
        return None
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
    cos = float(np.mean(np.sum(got * want, axis=1) / np.maximum(norms, 1e-12)))
    if cos < 0.5:
        return (
            f"its vectors do not match the segments' (mean cosine {cos:.2f} over "
            f"{len(picks)} sampled rows)"
        )
    return None


def _index_returns_its_rows(
    index: Any, base: Any, want: np.ndarray, picks: np.ndarray
) -> str | None:
    """The content check for indexes that cannot reconstruct rows: search each sampled
    row's stored vector (many probes, a deep list) and require at least half of the rows
    among their own results. An index of other vectors, or of shuffled rows, returns a row
    among its k nearest with odds of about k / rows: k is at most 5 % of the rows."""
    from .index import faiss

    k = int(min(256, max(1, index.ntotal // 20)))
    if isinstance(base, faiss().IndexIVF):
        base.nprobe = int(min(base.nlist, 256))
    try:
        _, ids = index.search(want, k)
    except Exception:  # noqa: BLE001 - not searchable here: not judged
        return None
    found = float(np.mean([p in set(row) for p, row in zip(picks.tolist(), ids.tolist())]))
    if found < 0.5:
        return (
            f"its vectors do not match the segments' ({found:.0%} of {len(picks)} sampled "
            f"rows come back among the {k} nearest to their own vector)"
        )
    return None


# ----------------------------------------------------------------------------- repair
def _quarantine(root: Path, rel: str, report: RepairReport) -> None:
    """Move a damaged file into ``quarantine/`` (kept for inspection, never loaded); a link
    or anything but a regular file is never moved or followed."""
    new = durable.move(root, rel, QUARANTINE_DIR)
    if new is not None:
        report.quarantined.append(f"{QUARANTINE_DIR}/{new}")


def _remap(positions: Iterable[np.ndarray], spans: list[tuple[int, int, int | None]]) -> list[int]:
    """Old row positions → new ones after dropping segments; rows of dropped segments vanish.

    ``spans`` is ``(old_start, rows, new_start or None)`` per segment in manifest order.
    """
    out: set[int] = set()
    starts = np.array([s for s, _, _ in spans], dtype=np.int64)
    for arr in positions:
        for p in arr.tolist():
            i = int(np.searchsorted(starts, p, side="right")) - 1
            if i < 0:
                continue
            old, rows, new = spans[i]
            if p < old + rows and new is not None:
                out.add(new + (p - old))
    return sorted(out)


def repair(path: str | os.PathLike[str], *, rebuild_index: bool = True) -> RepairReport:
    """Quarantine what cannot be read, commit a manifest without it, rebuild derived files.

    Args:
        path: the collection directory.
        rebuild_index: rebuild and save the FAISS index afterwards (approximate indexes).

    Returns:
        A :class:`RepairReport` with what was moved, dropped and removed, and a fresh
        :func:`verify` of the result.

    Raises:
        LockedError: another writer holds the collection; stop it and retry.
        CorruptionError: the manifest itself is damaged; restore it from a backup.
    """
    root = _root(path)
    report = RepairReport(path=str(root), before=verify(root))
    bad_manifest = [p for p in report.before.errors if p.file == store.MANIFEST]
    if bad_manifest and bad_manifest[0].kind in ("manifest", "manifest-structure"):
        raise CorruptionError(
            f"{root / store.MANIFEST} is damaged ({bad_manifest[0].detail}). It alone records "
            "which segments are live and which rows were deleted, so it cannot be rebuilt "
            "safely: restore it from a backup."
        )
    lock = store.WriterLock(root)
    lock.acquire()
    try:
        manifest = store.read_manifest(root)
        manifest, changed = _repair_files(root, manifest, report)
        if changed:
            hook = versions.record_hook(root, "repair", deleted=report.lost_rows)
            manifest = store.write_manifest(root, manifest, hook)
            report.manifest_rewritten = True
        report.versions_dropped = versions.drop_broken(root, manifest)
        report.removed_leftovers = versions.cleanup(root, manifest)
    finally:
        lock.release()
    if rebuild_index:
        report.index_rebuilt = _rebuild_index(root)
    report.after = verify(root)
    return report


def _repair_files(root: Path, manifest: Manifest, report: RepairReport) -> tuple[Manifest, bool]:
    """Drop unreadable files from ``manifest``; returns (new manifest, anything changed)."""
    dim = manifest.dim
    spans: list[tuple[int, int, int | None]] = []
    good_segments: list[SegmentRef] = []
    old = new = 0
    derived_dropped = False
    for ref in manifest.segments:
        ok = _safe_name(ref.file, _SEGMENT_NAME)
        if ok:
            try:
                seg = verify_segment(root, ref, dim)
            except CorruptionError:
                ok = False
                for name in ref.files():
                    _quarantine(root, name, report)
            else:
                for key, check in _DERIVED:
                    try:
                        check(root, ref, seg)
                    except CorruptionError:  # derived data: drop it, keep the rows
                        part = getattr(ref, key)
                        if hasattr(part, "file"):  # the layout has no file of its own
                            _quarantine(root, part.file, report)
                            report.dropped_refs.append(part.file)
                        ref = dataclasses.replace(ref, **{key: None})
                        derived_dropped = True
        if ok:
            spans.append((old, ref.rows, new))
            good_segments.append(ref)
            new += ref.rows
        else:
            spans.append((old, ref.rows, None))
            report.dropped_refs.append(ref.file)
            report.lost_rows += ref.rows
        old += ref.rows

    tomb_positions: list[np.ndarray] = []
    good_tombs: list[store.FileRef] = []
    for ref in manifest.tombstones:
        try:
            if not _safe_name(ref.file, _TOMBSTONE_NAME):
                raise CorruptionError(ref.file)
            tomb_positions.append(store.read_tombstones(root, ref))
            good_tombs.append(ref)
        except CorruptionError:
            if _safe_name(ref.file, _TOMBSTONE_NAME):
                _quarantine(root, ref.file, report)
            report.dropped_refs.append(ref.file)
            report.lost_tombstone_files += 1

    changed = False
    if len(good_segments) != len(manifest.segments):
        # Positions shift: rewrite the deletes as one tombstone file in the new numbering,
        # and start a new epoch so no saved index (built on the old numbering) is reused.
        positions = _remap(tomb_positions, spans)
        manifest = manifest.replace(
            tombstones=(store.write_tombstones(root, positions),) if positions else (),
            segments=good_segments,
            epoch=uuid.uuid4().hex,
            index=IndexSection(manifest.index.spec, None),
        )
        changed = True
    elif len(good_tombs) != len(manifest.tombstones) or derived_dropped:
        manifest = manifest.replace(tombstones=tuple(good_tombs), segments=good_segments)
        changed = True

    saved = manifest.index.file
    if saved and not _index_file_ok(root, manifest):
        for ref in manifest.index.files():
            if _safe_name(ref.file, _INDEX_NAME) or _safe_name(ref.file, _TAIL_NAME):
                _quarantine(root, ref.file, report)
            report.dropped_refs.append(ref.file)
        manifest = manifest.replace(index=IndexSection(manifest.index.spec, None))
        changed = True
    return manifest, changed


def _index_file_ok(root: Path, manifest: Manifest) -> bool:
    saved = manifest.index.file
    if saved is None or not _safe_name(saved.file, _INDEX_NAME) or saved.epoch != manifest.epoch:
        return False
    try:
        from .index import faiss

        with store.open_verified(root, saved) as fh:
            index = faiss().read_index(faiss().PyCallbackIOReader(fh.read))
        holder = _holder(manifest, index, saved.info)
    except Exception:  # noqa: BLE001 - any failure means: rebuild it
        return False
    if index.d != manifest.dim or holder.check_against(saved.rows) is not None:
        return False
    if _trained_problem(root, saved, index, holder) is not None:
        return False
    return all(_tail_problem(root, tail, holder) is None for tail in manifest.index.tail)


def _rebuild_index(root: Path) -> bool:
    """Rebuild and save an approximate index that the manifest no longer names."""
    from .collection import open as open_collection

    col = open_collection(root, create=False)
    try:
        info = col.info()["index"]
        manifest = store.read_manifest(root)
        if info["kind"] != "approximate" or manifest.index.file:
            return False
        col.reindex(manifest.index.spec)
        return True
    finally:
        col.close()


__all__ = ["Problem", "RepairReport", "VerifyReport", "repair", "verify"]
