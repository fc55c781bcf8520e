"""``HistoryMixin``: versions, time travel, tags, retention, restore, snapshots and diffs.

Added to :class:`embedsearch.Collection`. Every commit is a version (see
:mod:`embedsearch.versions` for the records and the retention rule); this mixin is the
public face of that history. Snapshots and diffs are delegated to :mod:`.snapshot` and
:mod:`.diff`, imported on first use so that importing embedsearch stays light.

Example:
    >>> col.tag("before-cleanup")
    >>> col.delete(bad_ids)
    >>> old = col.at("before-cleanup")          # read-only view of the past
    >>> old.search("refund policy", k=3)
    >>> col.restore("before-cleanup")           # undo, as a new commit
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import versions as _versions
from .errors import InvalidInputError
from .manifest import IndexSection
from .versions import VersionInfo

if TYPE_CHECKING:
    from .collection import Collection
    from .diff import VersionDiff
    from .snapshot import SnapshotInfo


class HistoryMixin:
    """History methods; the host is a :class:`~embedsearch.Collection`."""

    # ------------------------------------------------------------------ listing
    def versions(self: Collection) -> list[VersionInfo]:
        """The kept versions, oldest first (the newest is marked ``current``).

        Each has its number, commit time, the operation that made it, rows added and
        deleted by it, live rows, and its tags.
        """
        self.refresh()
        return _versions.list_versions(self.path, self._manifest)

    @property
    def version(self: Collection) -> int:
        """The version this handle shows: the newest, or the one a view is pinned to."""
        self.refresh()
        return _versions.generation_of(self._manifest)

    def resolve_version(self: Collection, version: int | str) -> int:
        """The number of a version given as a number, a negative offset or a tag."""
        self.refresh()
        return _versions.resolve(self.path, version, self._manifest)

    def tags(self: Collection) -> dict[str, int]:
        """``{tag: version}``."""
        return _versions.tags(self.path)

    @property
    def keep_days(self: Collection) -> float:
        """Retention: untagged versions are kept this many days (default 7)."""
        return _versions.keep_days(self.path)

    def set_retention(self: Collection, keep_days: float) -> None:
        """Keep untagged versions for ``keep_days`` days (0: only the newest and tagged ones).

        Files no kept version needs are removed at the next cleanup (the next write session,
        compaction or a saved index).
        """
        days = _versions.check_keep_days(keep_days)
        with self._write_mutex:
            self._begin_write()
            _versions.set_keep_days(self.path, days)
            _versions.cleanup(self.path, self._manifest)

    # ------------------------------------------------------------------ time travel
    def at(self: Collection, version: int | str) -> Collection:
        """A read-only view of a kept version (number, negative offset, or tag).

        Search, filters, RAG retrieval and the latent methods answer as the collection did
        then; writes raise :class:`~embedsearch.ReadOnlyError`.
        """
        self.refresh()
        past = _versions.manifest_at(self.path, version, self._manifest)
        view = type(self)(
            self.path,
            past,
            None,
            self._backend,
            stamp=(0, 0, 0),
            version=_versions.generation_of(past),
        )
        view._encoder = self._encoder
        return view

    # ------------------------------------------------------------------ tags
    def tag(self: Collection, tag: str, version: int | str | None = None) -> int:
        """Name a version (default: the newest) so retention keeps it; returns its number.

        Raises:
            InvalidInputError: a bad tag name, a tag already in use, or an unknown version.
        """
        tag = _versions.check_tag(tag)
        with self._write_mutex:
            self._begin_write()
            current = self._manifest
            gen = (
                _versions.generation_of(current)
                if version is None
                else _versions.generation_of(_versions.manifest_at(self.path, version, current))
            )
            existing = _versions.tags(self.path)
            if tag in existing and existing[tag] != gen:
                raise InvalidInputError(
                    f"tag {tag!r} already names version {existing[tag]}; untag it first or "
                    "choose another name."
                )
            if gen == _versions.generation_of(current) and not _record_exists(self.path, gen):
                _versions.record_hook(self.path, "unknown", live=self._table.count)(
                    _versions.as_json(current)
                )
            _versions.set_tag(self.path, tag, gen)
            return gen

    def untag(self: Collection, tag: str) -> None:
        """Remove a tag (the version then follows the retention rule).

        Raises:
            InvalidInputError: no such tag.
        """
        with self._write_mutex:
            self._begin_write()
            if tag not in _versions.tags(self.path):
                raise InvalidInputError(f"no tag {tag!r} in collection {self.name!r}.")
            _versions.set_tag(self.path, tag, None)

    # ------------------------------------------------------------------ restore
    def restore(self: Collection, version: int | str) -> int:
        """Make a kept version the newest, as a new commit; returns the new version number.

        The versions in between stay in the history (restore is an undo you can undo).
        Every file of that version is read and checked before anything is committed.
        """
        with self._write_mutex:
            self._begin_write()
            current = self._manifest
            past = _versions.manifest_at(self.path, version, current)
            if _versions.generation_of(past) == _versions.generation_of(current):
                return _versions.generation_of(current)
            view = self.at(_versions.generation_of(past))
            view._table.check_all()  # reads and checksums every file of that version
            now_ids = set(self.ids())
            then_ids = view.ids()
            added = sum(1 for i in then_ids if i not in now_ids)
            deleted = len(now_ids) - (len(then_ids) - added)
            manifest = past.replace(generation=current.generation, checksum=None)
            gone = _versions.index_gone(self.path, past)
            if gone:  # its index went with the version (versions.kept_files): re-made below
                manifest = manifest.replace(index=IndexSection(past.index.spec, None))
            committed = self._commit(
                manifest, "restore", added=added, deleted=deleted, live=len(then_ids)
            )
            self._load(committed)
            if gone:
                self._maybe_save_index(force=True)
            view.close()
            return _versions.generation_of(committed)

    # ------------------------------------------------------------------ snapshots, diffs
    def snapshot(
        self: Collection, file: str | os.PathLike[str], version: int | str | None = None
    ) -> SnapshotInfo:
        """Write a self-contained, checksummed tar of the newest (or a kept) version.

        Safe while writers and servers run: the archive holds exactly one committed
        version. Restore it with :func:`embedsearch.restore_snapshot`.
        """
        from .snapshot import write_snapshot

        if version is None and self.pinned_version is not None:
            version = self.pinned_version  # a view archives the version it shows
        return write_snapshot(self.path, file, version)

    def diff(
        self: Collection,
        a: int | str,
        b: int | str | None = None,
        *,
        probes: Sequence[str] | None = None,
        k: int = 10,
        clusters: int | None = None,
        map_path: str | os.PathLike[str] | None = None,
        seed: int = 0,
    ) -> VersionDiff:
        """What changed from version ``a`` to ``b`` (default: the newest), rows and meaning.

        Args:
            a, b: version numbers (negative: back from the newest) or tags.
            probes: queries whose top-``k`` is compared between the two versions.
            k: depth of the probe comparison (overlap@k).
            clusters: number of topics (default: chosen from the collection's size).
            map_path: also draw the two versions side by side, new documents highlighted
                (``.png`` or ``.html``).
            seed: seed of the clustering and the map.

        Returns:
            A :class:`~embedsearch.diff.VersionDiff`: ids added/removed/changed, topics that
            appeared/vanished/grew/shrank with labels and sizes, the centroid shift, and
            per-probe overlap@k.
        """
        from .diff import diff_views

        old = self.at(a)
        new = self.at(-1 if b is None else b)
        try:
            return diff_views(
                old, new, probes=probes, k=k, clusters=clusters, map_path=map_path, seed=seed
            )
        finally:
            old.close()
            new.close()


def _record_exists(root: Any, gen: int) -> bool:
    return _versions.record_path(root, gen).is_file()
