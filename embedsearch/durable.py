"""Safe, durable file operations inside a collection directory (the store's file layer).

A collection directory may come from someone else (a shared drive, an unpacked archive),
so nothing inside it is trusted to be what its name says. Every file embedsearch writes,
reads, locks or removes under a collection goes through this module, which

* works relative to directory file descriptors (``openat``-style ``dir_fd=``), opening every
  component below the collection root with ``O_NOFOLLOW``: a symlinked ``segments/`` or
  ``LOCK`` is refused with :class:`~embedsearch.errors.UnsafeFileError`, never followed;
* accepts only regular files (``fstat`` after opening) and plain directories;
* writes a file durably and atomically (:func:`write_file`): a fresh temp file created with
  ``O_EXCL``, written, fsynced, renamed over the target, and the directory fsynced, so a
  power cut leaves the old or the new file, never a mix;
* makes a new directory durable by fsyncing its parent (:func:`make_dirs`);
* unlinks only names the caller matched against its own patterns, and only regular files
  (:func:`remove_matching`).

The collection root itself is the path the user named and may be a symlink (a collection
kept on another disk); only what lies *inside* it is held to these rules.

Every primitive reports what it does to the recorders installed with :func:`recording`
(operation, absolute path, and for writes the bytes written). The power-loss checker in
``tests/test_powerloss.py`` replays those records to enumerate what a crash could leave.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

from .errors import CommitUncertainError, EmbedSearchError, UnsafeFileError

#: A file's identity as :func:`file_stamps` gives it: (device, inode, size, mtime_ns).
Stamp = tuple[int, int, int, int]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Temp files: ``.<final name>.<32 hex>.tmp``, created next to their final name.
TEMP_RE = re.compile(r"\.(?P<final>[A-Za-z0-9_.-]+)\.[0-9a-f]{32}\.tmp")

Recorder = Callable[[str, str, dict[str, Any]], None]
_RECORDERS: list[Recorder] = []


# --------------------------------------------------------------------------- recording
@contextlib.contextmanager
def recording(recorder: Recorder) -> Iterator[None]:
    """Report every file operation of this module to ``recorder(op, path, details)``.

    ``op`` is one of ``mkdir``, ``create``, ``write`` (details: ``data``), ``fsync``,
    ``rename`` (details: ``dst``), ``unlink``, ``fsync_dir``. Used by the power-loss checker.
    """
    _RECORDERS.append(recorder)
    try:
        yield
    finally:
        _RECORDERS.remove(recorder)


def _emit(op: str, path: Path | str, **details: Any) -> None:
    for rec in list(_RECORDERS):
        rec(op, os.path.abspath(path), details)


# --------------------------------------------------------------------------- errors
def raise_storage_error(exc: OSError, path: Path) -> NoReturn:
    """Turn an OSError from writing ``path`` into an EmbedSearchError that says what to do."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        raise EmbedSearchError(
            f"No room to write {path.name} ({exc.strerror}); free disk space or raise the "
            "file-size limit and retry. The collection is unchanged."
        ) from exc
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        raise EmbedSearchError(
            f"Cannot write in {path.parent} ({exc.strerror}); check its permissions. "
            "The collection is unchanged."
        ) from exc
    raise exc


def _unsafe(path: Path, what: str) -> UnsafeFileError:
    return UnsafeFileError(
        f"{path} is {what}; embedsearch only uses plain files and directories inside a "
        "collection (a link could make a write delete or overwrite files elsewhere). Replace "
        "it with the real file or directory, or remove it."
    )


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory, not a file"
    return "not a regular file"


def _parts(rel: str | os.PathLike[str]) -> list[str]:
    text = os.fspath(rel)
    parts = [p for p in text.split(os.sep) if p not in ("", ".")]
    if text.startswith(os.sep) or ".." in parts:
        raise ValueError(f"{text} is not a plain relative name")  # a bug, not user input
    return parts


# --------------------------------------------------------------------------- directories
# Paths are handled as strings on the way (pathlib's parsing was 85 % of opening a file,
# 35 of ~40 µs: a fresh process's first query opens a hundred); a Path is made only to be
# shown, in an error or to a recorder.
def _open_root(root: str | os.PathLike[str]) -> int:
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except NotADirectoryError:
        raise _unsafe(Path(root), "not a directory") from None


def _open_sub(
    parent: int, name: str, root: str | os.PathLike[str], upto: list[str], *, create: bool
) -> int:
    """Directory ``name`` in ``parent`` (``root/upto``, shown in errors), never a link."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _unsafe(Path(root, *upto), "a symbolic link or not a directory") from None
        raise
    shown = Path(root, *upto)
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent)
        _emit("mkdir", shown)
        fsync_fd(parent, shown.parent, directory=True)  # the new entry survives a power cut
    return _open_sub(parent, name, root, upto, create=False)


def _open_dirs(root: str | os.PathLike[str], parts: list[str], *, create: bool) -> int:
    """A descriptor of ``root/parts...``, each part opened without following links."""
    fd = _open_root(root)
    try:
        for i, part in enumerate(parts):
            sub = _open_sub(fd, part, root, parts[: i + 1], create=create)
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def opened_dir(
    root: Path, rel: str | os.PathLike[str] = "", *, create: bool = False
) -> Iterator[int]:
    """A file descriptor of ``root/rel``, every component below ``root`` opened without
    following links (created, and made durable in its parent, when ``create``)."""
    fd = _open_dirs(root, _parts(rel), create=create)
    try:
        yield fd
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """Create ``path`` and missing parents; each new directory is fsynced into its parent,
    so a collection created before a power cut is still there after it."""
    path = Path(os.path.abspath(path))
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    if not path.is_dir() and not missing:
        raise _unsafe(path, "not a directory")
    for new in reversed(missing):
        try:
            os.mkdir(new, 0o755)
        except FileExistsError:
            continue
        _emit("mkdir", new)
        fsync_dir(new.parent)


def fsync_fd(fd: int, path: Path | str, *, directory: bool = False) -> None:
    os.fsync(fd)
    _emit("fsync_dir" if directory else "fsync", path)


def fsync_dir(path: Path, rel: str | os.PathLike[str] = "") -> None:
    """fsync the directory ``path/rel`` (makes creates, renames and unlinks in it durable)."""
    with opened_dir(path, rel) as fd:
        fsync_fd(fd, Path(path, rel), directory=True)


# --------------------------------------------------------------------------- files
def _check_regular(fd: int, shown: Path) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise _unsafe(shown, _kind(st.st_mode))
    return st


def open_fd(
    root: Path, rel: str | os.PathLike[str], flags: int = os.O_RDONLY, mode: int = 0o644
) -> int:
    """Open the regular file ``root/rel`` (never through a link); returns a raw fd.

    ``flags`` may add ``O_RDWR``/``O_CREAT``; ``O_NOFOLLOW`` and ``O_CLOEXEC`` are always set.
    Raises UnsafeFileError for a link, a directory, a FIFO, a device...
    """
    *dirs, name = _parts(rel)
    dfd = _open_dirs(root, dirs, create=False)
    try:
        existed = True
        if flags & os.O_CREAT:
            try:
                os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                existed = False
        try:
            # O_NONBLOCK: opening a planted FIFO must not hang; cleared again below.
            fd = os.open(
                name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=dfd
            )
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _unsafe(Path(root, rel), "a symbolic link") from None
            if exc.errno in (errno.EISDIR, errno.ENXIO):
                raise _unsafe(Path(root, rel), "not a regular file") from None
            raise
    finally:
        os.close(dfd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            _check_regular(fd, Path(root, rel))  # raises, naming what it is
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    if not existed:
        _emit("create", Path(root, rel))
    return fd


@contextlib.contextmanager
def open_file(root: Path, rel: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file object reading the regular file ``root/rel`` (never through a link)."""
    fh = os.fdopen(open_fd(root, rel), "rb")
    with fh:
        yield fh


def read_bytes(root: Path, rel: str | os.PathLike[str]) -> bytes:
    """The whole content of the regular file ``root/rel``."""
    with open_file(root, rel) as fh:
        return fh.read()


def sha256_file(file: Path | str | IO[bytes], also: Callable[[bytes], None] | None = None) -> str:
    """SHA-256 hex digest of a file (a path, or an open binary file read from where it is),
    in 1 MiB blocks. The one checksum function of every file embedsearch verifies.

    ``also`` is called with each block too, so that a caller can compute a second checksum
    in the same read (a saved index's CRC-32: one read of 552 MiB instead of two at 10M).
    """
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as fh:
            return sha256_file(fh, also)
    digest = hashlib.sha256()
    for block in iter(lambda: file.read(1 << 20), b""):
        digest.update(block)
        if also is not None:
            also(block)
    return digest.hexdigest()


def write_file(
    root: Path,
    rel: str | os.PathLike[str],
    data: bytes | Callable[[IO[bytes]], None],
    *,
    create_dirs: bool = False,
    also: Callable[[bytes], None] | None = None,
) -> tuple[int, str]:
    """Durably and atomically replace ``root/rel`` with ``data`` (bytes, or a function that
    writes into the file object it is given). Returns ``(size, sha256)`` of what was written;
    ``also`` sees each block of that read-back too (:func:`sha256_file`).

    Readers see the old file or the new one, never a mix; after a power cut the same holds.
    A temp file (``.<name>.<hex>.tmp``) is created with ``O_EXCL``, written, fsynced and
    renamed over the target; then the directory is fsynced. A failure before the rename
    removes the temp file and raises (disk full, permissions: an EmbedSearchError saying
    what to do); a failure of the final directory sync raises CommitUncertainError, since
    the new file is already visible.
    """
    *dirs, name = _parts(rel)
    path = Path(root, rel)
    tmp = f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        with opened_dir(root, os.path.join(*dirs) if dirs else "", create=create_dirs) as dfd:
            folder = Path(root, *dirs)
            fd = os.open(
                tmp,
                os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=dfd,
            )
            _emit("create", folder / tmp)
            try:
                with os.fdopen(fd, "w+b") as fh:
                    if callable(data):
                        data(fh)
                    else:
                        fh.write(data)
                    fh.flush()
                    fh.seek(0)
                    if _RECORDERS:
                        content = fh.read()
                        _emit("write", folder / tmp, data=content)
                        fh.seek(0)
                    digest = sha256_file(fh, also)
                    size = fh.tell()
                    fsync_fd(fh.fileno(), folder / tmp)
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                _emit("rename", folder / tmp, dst=os.path.abspath(path))
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
                    _emit("unlink", folder / tmp)
                raise
            try:
                fsync_fd(dfd, folder, directory=True)
            except OSError as exc:  # the new file is in place: the old state is gone for readers
                raise CommitUncertainError(
                    f"{name} was replaced but its directory could not be synced ({exc.strerror}): "
                    "the change is visible now but may not survive a crash. Check the disk, then "
                    "reopen the collection to see its state."
                ) from exc
    except OSError as exc:
        raise_storage_error(exc, path)
    return size, digest


def write_dir(root: Path, rel: str | os.PathLike[str], fill: Callable[[Path], None]) -> bool:
    """Durably publish a directory of files written by a library that wants a path.

    ``fill`` writes into a fresh temp directory (``.<name>.<hex>.tmp`` beside ``rel``); then
    every file in it is fsynced (links or folders in it are refused), the temp directory is
    fsynced, renamed to ``rel`` and the parent fsynced. Returns False, removing the temp
    directory, when ``rel`` already exists (another process published it first).
    """
    *dirs, name = _parts(rel)
    parent = os.path.join(*dirs) if dirs else ""
    folder = Path(root, *dirs)
    tmp = f".{name}.{uuid.uuid4().hex}.tmp"
    with opened_dir(root, parent, create=True) as pfd:
        os.mkdir(tmp, 0o755, dir_fd=pfd)
        _emit("mkdir", folder / tmp)
        try:
            fill(folder / tmp)
            with opened_dir(root, Path(parent, tmp)) as tfd:
                for entry in sorted(os.listdir(tfd)):
                    fd = os.open(entry, _READ_FLAGS, dir_fd=tfd)
                    try:
                        _check_regular(fd, folder / tmp / entry)
                        if _RECORDERS:
                            _emit("create", folder / tmp / entry)
                            with os.fdopen(os.dup(fd), "rb") as fh:
                                _emit("write", folder / tmp / entry, data=fh.read())
                        fsync_fd(fd, folder / tmp / entry)
                    finally:
                        os.close(fd)
                fsync_fd(tfd, folder / tmp, directory=True)
            try:
                os.stat(name, dir_fd=pfd, follow_symlinks=False)
                published = False
            except FileNotFoundError:
                os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
                _emit("rename", folder / tmp, dst=str(folder / name))
                fsync_fd(pfd, folder, directory=True)
                return True
        except BaseException:
            remove_tree(root, Path(parent, tmp))
            raise
        remove_tree(root, Path(parent, tmp))
        return published


def move(root: Path, src: str | os.PathLike[str], dst_dir: str | os.PathLike[str]) -> str | None:
    """Durably move the regular file ``root/src`` into the directory ``root/dst_dir``
    (created if missing), keeping its name unless taken. Returns the new name relative to
    ``dst_dir``, or None when ``src`` is missing or is not a regular file (never moved)."""
    *sdirs, name = _parts(src)
    with (
        opened_dir(root, os.path.join(*sdirs) if sdirs else "") as sfd,
        opened_dir(root, dst_dir, create=True) as dfd,
    ):
        try:
            if not stat.S_ISREG(os.stat(name, dir_fd=sfd, follow_symlinks=False).st_mode):
                return None
        except FileNotFoundError:
            return None
        new = name
        with contextlib.suppress(FileNotFoundError):
            os.stat(new, dir_fd=dfd, follow_symlinks=False)
            stem, dot, suffix = name.rpartition(".")
            new = (
                f"{stem}.{uuid.uuid4().hex[:8]}{dot}{suffix}"
                if dot
                else f"{name}.{uuid.uuid4().hex[:8]}"
            )
        os.rename(name, new, src_dir_fd=sfd, dst_dir_fd=dfd)
        _emit("rename", Path(root, src), dst=os.path.abspath(Path(root, dst_dir, new)))
        fsync_fd(dfd, Path(root, dst_dir), directory=True)
        fsync_fd(sfd, Path(root, *sdirs), directory=True)
        return new


def remove_tree(root: Path, rel: str | os.PathLike[str]) -> None:
    """Remove the directory ``root/rel`` and everything in it, never following a link
    (a link named ``rel`` is left alone). Best effort: errors are ignored."""
    import shutil

    *dirs, name = _parts(rel)
    with (
        contextlib.suppress(OSError, EmbedSearchError),
        opened_dir(root, os.path.join(*dirs) if dirs else "") as pfd,
    ):
        if stat.S_ISDIR(os.stat(name, dir_fd=pfd, follow_symlinks=False).st_mode):
            shutil.rmtree(name, dir_fd=pfd)
            _emit("rmtree", Path(root, rel))


def owner_tag() -> str:
    """``<pid>-<random>``: names a hidden work directory after the process that owns it, so
    that :func:`sweep_abandoned` can tell a dead owner's leftovers from live work."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def sweep_abandoned(parent: Path, pattern: re.Pattern[str]) -> list[str]:
    """Remove the directories of ``parent`` whose name matches ``pattern`` (with a ``pid``
    group, see :func:`owner_tag`) and whose owning process is gone: the staging of a killed
    restore, the trash of a killed drop. Returns the names removed (best effort)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    removed = []
    for name in names:
        m = pattern.fullmatch(name)
        if m and not _alive(int(m.group("pid"))):
            remove_tree(parent, name)
            removed.append(name)
    return removed


def unlink(root: Path, rel: str | os.PathLike[str], *, sync: bool = False) -> bool:
    """Remove the file ``root/rel`` if it is a regular file (never follows or removes
    through a link). Returns True if removed. ``sync`` fsyncs the directory afterwards."""
    *dirs, name = _parts(rel)
    folder = Path(root, *dirs)
    try:
        with opened_dir(root, os.path.join(*dirs) if dirs else "") as dfd:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                return False
            os.unlink(name, dir_fd=dfd)
            _emit("unlink", folder / name)
            if sync:
                fsync_fd(dfd, folder, directory=True)
    except FileNotFoundError:
        return False
    return True


def list_files(root: Path, rel: str | os.PathLike[str] = "") -> list[str]:
    """Names of the regular files directly in ``root/rel`` (links and folders left out);
    empty when that directory does not exist."""
    return sorted(file_stamps(root, rel))


def file_stamps(root: Path, rel: str | os.PathLike[str] = "") -> dict[str, Stamp]:
    """``{name: (device, inode, size, mtime_ns)}`` of the regular files directly in
    ``root/rel`` (links and folders left out; empty when that directory does not exist):
    which file each name is, without opening any (a file written once, by rename, keeps
    its stamp until it is replaced)."""
    out: dict[str, Stamp] = {}
    try:
        with opened_dir(root, rel) as dfd:
            for name in os.listdir(dfd):
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        out[name] = stamp_of(st)
    except FileNotFoundError:
        return {}
    return out


def stamp_of(st: os.stat_result) -> Stamp:
    """A file's (device, inode, size, mtime_ns): see :func:`file_stamps`."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def remove_matching(
    root: Path, rel: str | os.PathLike[str], pattern: re.Pattern[str], keep: set[str]
) -> list[str]:
    """Unlink the regular files in ``root/rel`` whose names fully match ``pattern`` and are
    not in ``keep``; returns the removed names. Nothing else is ever touched, so a directory
    holding someone's other files loses none of them."""
    removed = []
    for name in list_files(root, rel):
        if pattern.fullmatch(name) and name not in keep:
            with contextlib.suppress(OSError):
                if unlink(root, Path(rel, name)):
                    removed.append(name)
    if removed:
        with contextlib.suppress(OSError, EmbedSearchError):
            fsync_dir(root, rel)
    return removed


def is_temp_of(name: str, final: re.Pattern[str]) -> bool:
    """True if ``name`` is a temp file :func:`write_file` made for a name matching ``final``."""
    m = TEMP_RE.fullmatch(name)
    return bool(m and final.fullmatch(m.group("final")))


__all__ = [
    "TEMP_RE",
    "fsync_dir",
    "is_temp_of",
    "list_files",
    "make_dirs",
    "move",
    "open_fd",
    "open_file",
    "opened_dir",
    "raise_storage_error",
    "read_bytes",
    "recording",
    "remove_matching",
    "remove_tree",
    "sha256_file",
    "unlink",
    "write_dir",
    "write_file",
]
