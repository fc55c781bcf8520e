"""The version history of one collection: a record per commit, tags, and retention.

Every commit writes a new manifest naming immutable files, so the past costs only the
files it still names. This module keeps that past addressable::

    versions/v-<generation>.json   the manifest of one commit, exactly as committed, plus
                                   what made it (operation, rows added/deleted, time)
    versions/tags.json             {"tag": generation}
    versions/settings.json         {"keep_days": 7.0}: the retention setting

A record is written (durably) *before* the manifest it copies becomes the commit point
(:func:`embedsearch.store.write_manifest` calls :func:`record_hook`), so a crash never
leaves a committed version without its record; a record whose generation is above the
current manifest's is the leftover of a commit that never happened and is ignored (the
next commit overwrites it).

Retention: a version is *kept* while it is the current one, tagged, or younger than
``keep_days`` (default 7). Expired records are deleted first and their files second
(:func:`cleanup`), so a crash in between leaves orphans for the next writer, never a
record naming missing files. Writers call these under the collection's write lock.

Example:
    >>> [v.version for v in list_versions(root)]
    [1, 2, 3]
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from . import durable, store
from .errors import CorruptionError, EmbedSearchError, InvalidInputError
from .manifest import SEGMENT_PARTS

_T = TypeVar("_T")
VERSIONS_DIR = "versions"
TAGS_FILE = "tags.json"
SETTINGS_FILE = "settings.json"
#: Derived: the kept records' summaries as the last writer's cleanup saw them (see
#: _saved_summaries); missing, damaged or stale, the records are parsed instead.
SUMMARIES_FILE = "summaries.json"
DEFAULT_KEEP_DAYS = 7.0
_RECORD_RE = re.compile(r"v-(\d{12})\.json")
#: The names this module writes under versions/ (their temp files are ours to remove).
_FILE_RE = re.compile(r"v-\d{12}\.json|tags\.json|settings\.json|summaries\.json")
_TAG_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")
OPS = (
    "create",
    "add",
    "upsert",
    "delete",
    "compact",
    "merge",
    "reindex",
    "index",
    "restore",
    "repair",
    "upgrade",
    "unknown",
)


@dataclass(frozen=True)
class VersionInfo:
    """One entry of :meth:`Collection.versions`.

    Attributes:
        version: the commit's generation number (grows by one per commit).
        time: when it was committed (ISO 8601, UTC).
        op: the operation that made it (``add``, ``upsert``, ``delete``, ``compact``,
            ``reindex``, ``index`` (a saved index), ``restore``, ``create``, ``repair``).
        added: rows written by that operation.
        deleted: rows it deleted (an upsert that replaces a row counts one of each).
        rows: live rows in this version.
        tags: the tags naming this version.
        current: whether this is the newest version.
    """

    version: int
    time: str
    op: str
    added: int
    deleted: int
    rows: int
    tags: tuple[str, ...] = ()
    current: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "time": self.time,
            "op": self.op,
            "added": self.added,
            "deleted": self.deleted,
            "rows": self.rows,
            "tags": list(self.tags),
            "current": self.current,
        }


# --------------------------------------------------------------------------- files
def _dir(root: Path) -> Path:
    return root / VERSIONS_DIR


def _rel(name: str) -> str:
    return f"{VERSIONS_DIR}/{name}"


def record_name(generation: int) -> str:
    return f"v-{generation:012d}.json"


def record_path(root: Path, generation: int) -> Path:
    """Where the record of ``generation`` lives."""
    return _dir(root) / record_name(generation)


def _read_json(root: Path, name: str, default: Any) -> Any:
    try:
        raw = durable.read_bytes(root, _rel(name))
    except (FileNotFoundError, NotADirectoryError):
        return default
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise CorruptionError(
            f"{_dir(root) / name} is not valid JSON ({exc}); restore it from a backup or "
            "delete it (tags/retention fall back to their defaults)."
        ) from None


def _write_json(root: Path, name: str, obj: Any, levels: int = 2) -> None:
    """Durably replace ``versions/<name>`` (the directory is created and synced if new)."""
    durable.write_file(root, _rel(name), store.readable_json(obj, levels), create_dirs=True)


def record_hook(root: Path, op: str, added: int = 0, deleted: int = 0, live: int = -1) -> Any:
    """The ``before_commit`` callback for :func:`embedsearch.store.write_manifest`."""

    def hook(body: dict[str, Any]) -> None:
        payload = {
            "generation": body["generation"],
            "time": body["updated"],
            "op": op,
            "added": int(added),
            "deleted": int(deleted),
            "live": int(live),
            "manifest": body,
        }
        _write_json(root, record_name(int(body["generation"])), payload, levels=3)

    return hook


def _records(names: Iterable[str]) -> list[tuple[int, str]]:
    """(generation, file name) of the version records among ``names``, oldest first."""
    return sorted((int(m.group(1)), n) for n in names if (m := _RECORD_RE.fullmatch(n)))


def _generations(root: Path) -> list[int]:
    try:
        names = durable.list_files(root, VERSIONS_DIR)
    except NotADirectoryError:
        return []
    return [gen for gen, _ in _records(names)]


def _load_record(root: Path, generation: int) -> dict[str, Any] | None:
    try:
        raw = durable.read_bytes(root, _rel(record_name(generation)))
    except FileNotFoundError:
        return None
    return _parse_record(raw, root, generation)


def _parse_record(raw: bytes, root: Path, generation: int) -> dict[str, Any]:
    path = record_path(root, generation)
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        raise CorruptionError(
            f"{path} is not valid JSON: version {generation}'s record is damaged. "
            "Other versions are unaffected; untag it or let retention expire it."
        ) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("manifest"), dict):
        raise CorruptionError(f"{path} is not a version record of embedsearch.")
    return obj


@dataclass(frozen=True)
class _Summary:
    """What retention and cleanup read of a version record: its time and the files it names."""

    time: str
    files: frozenset[str]
    index_files: frozenset[str]
    #: The record file it was read from: (device, inode, size, mtime in ns).
    stamp: durable.Stamp = (0, 0, 0, 0)


# Summaries of records already parsed by this process, keyed by the record file's identity.
# A record is written once, by the commit of its version (a new file, renamed into place),
# and never changed, so the same (device, inode, size, mtime) under the same name is the same
# record. A record holds its version's whole manifest (1.6 MB at 10M rows, for the 200
# segments' block checksums): a writer's cleanup parsed every kept record twice, 3.5 s of
# adding 10k rows to a 10M-row collection with 240 versions.
_SUMMARIES: dict[tuple[str, int, int, int, int, int], _Summary] = {}
MAX_SUMMARIES = 4096


def _known_summary(
    root: Path, generation: int, stamp: durable.Stamp, saved: dict[int, _Summary] | None
) -> _Summary | None:
    """The summary made from the record file of ``stamp``: parsed by this process or held
    by the summaries file (``saved``: as the caller read it; else read here); None when
    neither has it."""
    got = _SUMMARIES.get((str(root), generation, *stamp))
    if got is None:
        got = (_saved_summaries(root) if saved is None else saved).get(generation)
    return got if got is not None and got.stamp == stamp else None


def _record_summary(
    root: Path,
    generation: int,
    stamp: durable.Stamp | None = None,
    saved: dict[int, _Summary] | None = None,
) -> _Summary | None:
    """The :class:`_Summary` of a version's record (None when it has none), parsed once per
    process (see ``_SUMMARIES``), or not at all where the summaries file holds it (see
    :func:`_saved_summaries`); a damaged record raises as :func:`_load_record` does.

    ``stamp``: the record file's, from a listing of the directory (:func:`durable.file_stamps`);
    a summary made from that file is then used without opening it (the open's
    link-safe walk cost ~0.1 ms a record: 0.25 s of the first write at 2,500 versions).
    ``saved``: the summaries file as the caller read it (see :func:`_known_summary`)."""
    if stamp is not None and (known := _known_summary(root, generation, stamp, saved)):
        return known
    try:
        with durable.open_file(root, _rel(record_name(generation))) as fh:
            stamp = durable.stamp_of(os.fstat(fh.fileno()))
            key = (str(root), generation, *stamp)
            got = _known_summary(root, generation, stamp, saved)
            if got is None:
                rec = _parse_record(fh.read(), root, generation)
                manifest = rec["manifest"]
                got = _Summary(
                    time=str(rec.get("time", "")),
                    files=frozenset(sys.intern(name) for name in files_of(manifest)),
                    index_files=index_files_of(manifest),
                    stamp=stamp,
                )
                if len(_SUMMARIES) >= MAX_SUMMARIES:
                    _SUMMARIES.clear()
                _SUMMARIES[key] = got
            return got
    except FileNotFoundError:
        return None


# The summaries file as this process last read it, per collection: (its stamp, summaries).
_SAVED: dict[str, tuple[durable.Stamp, dict[int, _Summary]]] = {}


def _saved_summaries(root: Path) -> dict[int, _Summary]:
    """``{generation: summary}`` from ``versions/summaries.json``, read once per process and
    version of that file; ``{}`` when it is missing, a link or unreadable.

    A fresh process's first write parsed every kept record (each a whole manifest: at 5M
    rows ~160 records, 63 MiB of JSON, 0.16-0.25 s of every add). A summary is used only
    for the record file it was made from (``_Summary.stamp``: a record is written once, by
    rename, so device, inode, size and mtime name it); a copied, stale or crafted file
    names no record of this directory, and those are parsed as before.
    """
    try:
        with durable.open_file(root, _rel(SUMMARIES_FILE)) as fh:
            stamp = durable.stamp_of(os.fstat(fh.fileno()))
            cached = _SAVED.get(str(root))
            if cached is not None and cached[0] == stamp:
                return cached[1]
            raw = fh.read()
    except (OSError, EmbedSearchError):
        return {}
    try:
        saved = _decode_summaries(json.loads(raw))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        saved = {}
    _SAVED[str(root)] = (stamp, saved)
    return saved


def _decode_summaries(obj: Any) -> dict[int, _Summary]:
    """The summaries of :func:`_save_summaries`' JSON: each record's files are given as
    the names it adds to and drops from the record before it (consecutive versions share
    most files)."""
    files: set[str] = set()
    out: dict[int, _Summary] = {}
    for entry in obj["records"]:
        files.difference_update(str(name) for name in entry["gone"])
        files.update(sys.intern(str(name)) for name in entry["new"])
        stamp = tuple(int(v) for v in entry["stamp"])
        if len(stamp) != 4:
            raise ValueError("a stamp is four numbers")
        out[int(entry["generation"])] = _Summary(
            time=str(entry["time"]),
            files=frozenset(files),
            index_files=frozenset(str(name) for name in entry["index"]),
            stamp=stamp,  # type: ignore[arg-type]
        )
    return out


def _save_summaries(root: Path, kept: dict[int, _Summary]) -> None:
    """Save ``kept`` (the kept records' summaries) for the next process, unless the file
    holds them already. Lock holder only; derived data, so a failure is no error."""
    saved = _saved_summaries(root)
    if saved.keys() == kept.keys() and all(saved[g].stamp == s.stamp for g, s in kept.items()):
        return
    records = []
    before: frozenset[str] = frozenset()
    for gen in sorted(kept):
        summary = kept[gen]
        records.append(
            {
                "generation": gen,
                "stamp": list(summary.stamp),
                "time": summary.time,
                "new": sorted(summary.files - before),
                "gone": sorted(before - summary.files),
                "index": sorted(summary.index_files),
            }
        )
        before = summary.files
    with contextlib.suppress(OSError, EmbedSearchError):
        _write_json(root, SUMMARIES_FILE, {"records": records})


def as_json(manifest: Any) -> dict[str, Any]:
    """A manifest as its JSON object (typed manifests have ``to_json``)."""
    return manifest.to_json() if hasattr(manifest, "to_json") else manifest


def file_checksums(manifest: Any) -> dict[str, tuple[str, int]]:
    """``{file: (sha256, bytes)}`` of every file a manifest (object or JSON) names."""
    obj = as_json(manifest)
    out: dict[str, tuple[str, int]] = {}
    refs = list(obj.get("segments", [])) + list(obj.get("tombstones", []))
    for part in SEGMENT_PARTS:  # a segment's other files
        refs += [r[part] for r in obj.get("segments", []) if isinstance(r.get(part), dict)]
    index = obj.get("index") or {}
    if index.get("file"):
        refs += [index["file"], *index.get("tail", [])]
    for ref in refs:
        out[str(ref["file"])] = (str(ref["sha256"]), int(ref["bytes"]))
    return out


def live_rows(manifest: Any) -> int:
    """Live rows of a manifest: stored rows less the positions its tombstone files delete."""
    obj = as_json(manifest)
    stored = sum(int(r["rows"]) for r in obj.get("segments", []))
    return stored - sum(int(t["rows"]) for t in obj.get("tombstones", []))


def generation_of(manifest: Any) -> int:
    return int(manifest["generation"] if isinstance(manifest, dict) else manifest.generation)


def files_of(manifest: Any) -> set[str]:
    """Every file name a manifest (object or JSON) keeps alive."""
    return set(file_checksums(manifest))


def index_files_of(manifest: Any) -> frozenset[str]:
    """The saved index file and its tails a manifest (object or JSON) names, if any."""
    if not isinstance(manifest, dict):  # a typed manifest: not its whole JSON for this
        return frozenset(ref.file for ref in manifest.index.files())
    index = manifest.get("index") or {}
    if not isinstance(index.get("file"), dict):
        return frozenset()
    return frozenset(str(ref["file"]) for ref in [index["file"], *index.get("tail", [])])


def index_gone(root: Path, manifest: Any) -> bool:
    """Whether the saved index file or a tail that a manifest (object or JSON) names is gone
    from ``root``: a past version's index goes with it (see :func:`kept_files`)."""
    return any(not os.path.lexists(root / name) for name in index_files_of(manifest))


def check_manifest(obj: dict[str, Any], where: Path) -> Any:
    """A manifest kept outside ``manifest.json`` (a record, a snapshot), checked exactly as
    the live one is (checksum, structure, file names); ``where`` names it in errors."""
    return store.parse_manifest(json.dumps(obj).encode(), where)


def manifest_of(root: Path, rec: dict[str, Any]) -> Any:
    """The checked manifest a record holds."""
    return check_manifest(rec["manifest"], record_path(root, int(rec.get("generation", 0))))


# --------------------------------------------------------------------------- tags, settings
def tags(root: Path) -> dict[str, int]:
    """``{tag: version}`` of a collection."""
    obj = _read_json(root, TAGS_FILE, {})
    if not isinstance(obj, dict):
        raise CorruptionError(f"{_dir(root) / TAGS_FILE} is not a JSON object of tags.")
    return {str(k): int(v) for k, v in obj.items() if type(v) is int}


def check_tag(tag: Any) -> str:
    """A tag name: a letter, then up to 63 letters, digits, ``.``, ``_`` or ``-``."""
    if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag) or tag.isdigit():
        raise InvalidInputError(
            f"tag {tag!r} is not a valid tag: use a letter followed by up to 63 letters, "
            "digits, '.', '_' or '-' (e.g. 'before-cleanup')."
        )
    return tag


def set_tag(root: Path, tag: str, version: int | None) -> None:
    """Point ``tag`` at ``version`` (None removes it). Caller holds the write lock."""
    current = tags(root)
    if version is None:
        current.pop(tag, None)
    else:
        current[tag] = int(version)
    _write_json(root, TAGS_FILE, current)


def keep_days(root: Path) -> float:
    """The retention setting: untagged versions are kept this many days (0: only the newest)."""
    obj = _read_json(root, SETTINGS_FILE, {})
    val = obj.get("keep_days", DEFAULT_KEEP_DAYS) if isinstance(obj, dict) else DEFAULT_KEEP_DAYS
    return float(val) if isinstance(val, (int, float)) and val >= 0 else DEFAULT_KEEP_DAYS


def check_keep_days(days: Any) -> float:
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 <= days <= 36_500:
        raise InvalidInputError(
            f"keep_days must be a number of days from 0 to 36500, got {days!r} "
            "(0 keeps only the newest version and tagged ones)."
        )
    return float(days)


def set_keep_days(root: Path, days: float) -> None:
    """Change the retention setting. Caller holds the write lock."""
    _write_json(root, SETTINGS_FILE, {"keep_days": check_keep_days(days)})


# --------------------------------------------------------------------------- listing
def _parse_time(stamp: str) -> _dt.datetime | None:
    try:
        out = _dt.datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return None
    return out if out.tzinfo else out.replace(tzinfo=_dt.timezone.utc)


def _young(time: str, now: _dt.datetime, days: float) -> bool:
    """Whether a record stamped ``time`` is inside a retention window of ``days``."""
    stamp = _parse_time(time)
    return stamp is not None and (now - stamp).total_seconds() <= days * 86400


def _is_kept(root: Path, gen: int, rec: dict[str, Any]) -> bool:
    """Whether a past (not current) version is kept: tagged, or inside the window."""
    if gen in set(tags(root).values()):
        return True
    now = _dt.datetime.now(_dt.timezone.utc)
    return _young(str(rec.get("time", "")), now, keep_days(root))


def _retained(
    root: Path,
    current: int,
    now: _dt.datetime | None,
    read: Callable[[Path, int], _T | None],
    time_of: Callable[[_T], str],
    generations: list[int] | None = None,
) -> dict[int, _T]:
    """``{generation: read(root, generation)}`` of the versions kept under the retention
    rule: the current one, the tagged ones, and those inside the window (``generations``:
    the records the caller has listed; else listed here)."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    days = keep_days(root)
    tagged = set(tags(root).values())
    kept: dict[int, _T] = {}
    for gen in _generations(root) if generations is None else generations:
        if gen > current:
            continue  # a record of a commit that never happened
        got = read(root, gen)
        if got is not None and (gen == current or gen in tagged or _young(time_of(got), now, days)):
            kept[gen] = got
    return kept


def _kept(root: Path, current: int, now: _dt.datetime | None = None) -> dict[int, _Summary]:
    """``{generation: summary}`` of the kept versions: what cleanup reads, each record
    parsed once per process (see ``_SUMMARIES``), none opened whose summary is known."""
    stamps = durable.file_stamps(root, VERSIONS_DIR)  # one listing: the records and their stamps
    saved = _saved_summaries(root)

    def summary(root: Path, generation: int) -> _Summary | None:
        return _record_summary(root, generation, stamps.get(record_name(generation)), saved)

    generations = [gen for gen, _ in _records(stamps)]
    return _retained(root, current, now, summary, lambda summary: summary.time, generations)


def _kept_generations(
    root: Path, current: int, now: _dt.datetime | None = None
) -> tuple[list[int], dict[int, dict[str, Any]]]:
    """(kept generations, their whole records): for listings and past manifests, each
    record parsed once here (not summarised as well)."""
    recs = _retained(root, current, now, _load_record, lambda rec: str(rec.get("time", "")))
    return list(recs), recs


def list_versions(root: Path, current: dict[str, Any]) -> list[VersionInfo]:
    """The kept versions, oldest first; the current manifest is always the last."""
    current = as_json(current)
    cur_gen = generation_of(current)
    kept, recs = _kept_generations(root, cur_gen)
    by_version: dict[int, list[str]] = {}
    for tag, gen in sorted(tags(root).items()):
        by_version.setdefault(gen, []).append(tag)
    out = []
    for gen in kept:
        rec = recs[gen]
        out.append(_info(rec, rec["manifest"], by_version, gen == cur_gen))
    if cur_gen not in recs:  # a collection written before histories existed
        rec = {"op": "unknown", "added": 0, "deleted": 0, "time": current.get("updated", "")}
        out.append(_info(rec, current, by_version, True))
    return out


def _info(
    rec: dict[str, Any], manifest: dict[str, Any], tagmap: dict[int, list[str]], cur: bool
) -> VersionInfo:
    gen = generation_of(manifest)
    live = int(rec.get("live", -1))
    return VersionInfo(
        version=gen,
        time=str(rec.get("time", "")),
        op=str(rec.get("op", "unknown")),
        added=int(rec.get("added", 0)),
        deleted=int(rec.get("deleted", 0)),
        rows=live if live >= 0 else live_rows(manifest),
        tags=tuple(tagmap.get(gen, ())),
        current=cur,
    )


def resolve(root: Path, version: int | str, current: dict[str, Any]) -> int:
    """A version number from a number or a tag; raises if unknown or no longer kept."""
    if isinstance(version, str) and not version.lstrip("-").isdigit():
        tagmap = tags(root)
        if version not in tagmap:
            known = ", ".join(sorted(tagmap)) or "none"
            raise InvalidInputError(
                f"no tag {version!r} in this collection (tags: {known}); list them with "
                "versions()/`embedsearch versions NAME`."
            )
        return tagmap[version]
    if isinstance(version, bool) or not isinstance(version, (int, str)):
        raise InvalidInputError(f"version must be a version number or a tag, got {version!r}.")
    gen = int(version)
    cur = generation_of(current)
    if gen < 0:  # -1 is the newest, -2 the one before...
        kept = [v.version for v in list_versions(root, current)]
        if -gen > len(kept):
            raise InvalidInputError(f"version {gen}: only {len(kept)} version(s) are kept.")
        return kept[gen]
    if gen > cur or gen < 1:
        raise InvalidInputError(
            f"version {gen} does not exist: versions run from 1 to {cur}; list the kept ones "
            "with versions()."
        )
    return gen


def manifest_at(root: Path, version: int | str, current: dict[str, Any]) -> dict[str, Any]:
    """The checked manifest of a kept version (number or tag)."""
    gen = resolve(root, version, current)
    if gen == generation_of(current):
        return current
    rec = _load_record(root, gen)
    if rec is None or not _is_kept(root, gen, rec):
        raise InvalidInputError(
            f"version {gen} is no longer kept (retention keeps {keep_days(root):g} days and "
            "tagged versions); list the kept ones with versions()."
        )
    return manifest_of(root, rec)


def kept_manifests(root: Path, current: Any) -> dict[int, dict[str, Any]]:
    """``{version: manifest JSON}`` of the kept past versions (the current one left out)."""
    cur = generation_of(current)
    _, recs = _kept_generations(root, cur)
    return {gen: rec["manifest"] for gen, rec in recs.items() if gen != cur}


# --------------------------------------------------------------------------- cleanup
def kept_files(
    root: Path, current: dict[str, Any], kept: dict[int, _Summary] | None = None
) -> set[str]:
    """Every file a kept version needs: all the current version's files, the rows of every
    kept past version, and the index files of tagged past versions only.

    An untagged past version's index file goes once a newer one is saved: a collection
    built by 20 adds of 50,000 rows had kept 19 index files (1.2 GB beside 1.2 GB of rows
    at 1M rows) for a week. Opening such a version uses the current index when it was
    trained in the same epoch (its rows limited to that version's, see
    ``Collection._load_index``), else builds one; a tag keeps a version's own index.
    ``kept``: the kept records' summaries, where the caller has them (see :func:`cleanup`).
    """
    tagged = set(tags(root).values())
    names = files_of(current)
    kept = _kept(root, generation_of(current)) if kept is None else kept
    for gen, summary in kept.items():
        names |= summary.files if gen in tagged else summary.files - summary.index_files
    return names


def expire(
    root: Path, current: dict[str, Any], kept: dict[int, _Summary] | None = None
) -> list[int]:
    """Delete the records of versions retention no longer keeps (and of uncommitted ones);
    ``kept``: their summaries, where the caller has them (see :func:`cleanup`)."""
    keep = set(_kept(root, generation_of(current)) if kept is None else kept)
    gone = []
    # an interrupted record/tags/settings write leaves a temp file: ours, so it may go
    with contextlib.suppress(OSError):
        for name in durable.list_files(root, VERSIONS_DIR):
            if durable.is_temp_of(name, _FILE_RE):
                durable.unlink(root, _rel(name))
    for gen in _generations(root):
        if gen not in keep and durable.unlink(root, _rel(record_name(gen))):
            gone.append(gen)
    if gone:
        durable.fsync_dir(root, VERSIONS_DIR)
    return gone


def expire_quick(root: Path, current: int) -> None:
    """After a commit: drop untagged records older than the retention window, judged by the
    record file's mtime (no record is parsed), so history stays bounded between cleanups.

    Records are written in the order of their generations, so their mtimes rise with it:
    the walk from the oldest stops at the first record inside the window, and a commit
    pays for the records it expires, not for the history kept (each record was stat'ed
    twice: ~10 µs a record, 5-6 ms of every commit with 533 versions kept, which a week
    of small writes far exceeds). A record out of order (the clock set back) waits for
    :func:`cleanup`.
    """
    days = keep_days(root)
    tagged = set(tags(root).values())
    limit = _dt.datetime.now(_dt.timezone.utc).timestamp() - days * 86400
    gone = False
    try:
        with durable.opened_dir(root, VERSIONS_DIR) as dfd:
            for gen, name in _records(os.listdir(dfd)):
                if gen >= current:
                    break
                if gen in tagged:
                    continue
                try:
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                if st.st_mtime >= limit:
                    break  # this record and every later one are inside the window
                gone = durable.unlink(root, _rel(name)) or gone
    except FileNotFoundError:
        return
    if gone:
        durable.fsync_dir(root, VERSIONS_DIR)


def drop_broken(root: Path, current: Any) -> list[int]:
    """Forget past versions that can no longer be opened: a file they name is gone or has
    the wrong size (``repair`` quarantined it). Their records and the tags naming them are
    removed, so history lists only versions that open (a past version's index file may
    be gone: it is re-made on need). Lock holder only; returns them."""
    present = files_of(current)
    broken: list[int] = []
    for gen, past in kept_manifests(root, current).items():
        for name, (_, size) in file_checksums(past).items():
            if name in present or name in index_files_of(past):
                continue
            try:
                actual = os.stat(root / name, follow_symlinks=False).st_size
            except OSError:
                actual = -1
            if actual != size:
                broken.append(gen)
                break
    if not broken:
        return []
    for tag, gen in tags(root).items():
        if gen in broken:
            set_tag(root, tag, None)
    for gen in broken:
        durable.unlink(root, _rel(record_name(gen)))
    durable.fsync_dir(root, VERSIONS_DIR)
    return sorted(broken)


def cleanup(root: Path, current: dict[str, Any]) -> list[str]:
    """Expire old records, then remove files no kept version names (and save the kept
    records' summaries for the next process). Lock holder only."""
    kept = _kept(root, generation_of(current))  # each kept record opened once here
    expire(root, current, kept)
    removed = store.remove_orphans(root, current, keep=kept_files(root, current, kept))
    _save_summaries(root, kept)
    return removed
