"""File-system safety shared by every job that writes: atomic writes, no-clobber writes, path containment, and
one-line descriptions of OS errors.

Every file jaxdenoise writes goes through ``atomic_write`` (or is written aside and renamed in the same way):
a crash, a full disk or a second process never leaves a half-written file under the final name, and
``overwrite=False`` never replaces a file that appeared in the meantime (``os.link`` fails when the name
exists, so the check and the write are one step).
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from typing import Callable, Dict, Tuple, Union

Data = Union[bytes, str]


def first_line(e: BaseException, limit: int = 240) -> str:
    """The first non-empty line of an exception's message (or its type name), at most ``limit`` chars."""
    for line in str(e).strip().splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(e).__name__


class NotRegularFile(OSError):
    """A path that is a FIFO, socket or device: reading it could block forever, so it is never opened."""


def _kind(mode: int) -> str:
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a folder" if stat.S_ISDIR(mode) else
            "not a regular file")


def read_regular(path: str | os.PathLike, limit: int = -1) -> bytes:
    """The bytes of a regular file (the first ``limit`` when given). A FIFO, socket or device is refused
    (``NotRegularFile``) without blocking: it is opened non-blocking and checked before any read."""
    mode = os.stat(path).st_mode  # a socket cannot even be opened: say what it is
    if not stat.S_ISREG(mode):
        raise NotRegularFile(errno.EINVAL, f"{_kind(mode)}, not a regular file", os.fspath(path))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # and if it changed since: still no blocking open
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(errno.EINVAL, f"{_kind(mode)}, not a regular file", os.fspath(path))
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit)
    finally:
        os.close(fd)


def is_within(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """True when ``path`` is ``root`` or lies under it (symlinks resolved)."""
    p, r = os.path.realpath(path), os.path.realpath(root)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def creatable(path: str | os.PathLike) -> str | None:
    """Why ``path`` (a file or folder that may not exist yet) cannot be created, or None: its nearest existing
    ancestor must be a folder this process may write into."""
    probe = os.path.dirname(os.path.abspath(os.fspath(path)))
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        return f"{probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"permission denied: {probe}"
    return None


def makedirs(path: str | os.PathLike, created: list) -> None:
    """``os.makedirs(path, exist_ok=True)``, appending the folders it made to ``created`` (outermost first),
    so that ``remove_empty(created)`` can take back exactly those, and nothing else."""
    missing, p = [], os.path.abspath(os.fspath(path))
    while not os.path.lexists(p):
        missing.append(p)
        p = os.path.dirname(p)
    os.makedirs(path, exist_ok=True)
    created.extend(reversed(missing))


def remove_empty(created: list) -> None:
    """Remove the folders of ``created`` that are still empty, innermost first."""
    for d in reversed(created):
        try:
            os.rmdir(d)
        except OSError:
            pass


def tree_digests(root: str | os.PathLike) -> Dict[str, Tuple[int, str]]:
    """relpath (POSIX separators) -> (size, SHA-256 hex) of every file under ``root``, hidden ones included."""
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            out[os.path.relpath(path, root).replace(os.sep, "/")] = (os.path.getsize(path), h.hexdigest())
    return out


def describe(e: OSError, path: str | os.PathLike | None = None) -> str:
    """A one-line, plain description of an OS error: 'no space left on PATH', 'PATH is read-only', ..."""
    if e.errno is None:  # raised by our own code with a message of its own
        return first_line(e)
    where = os.fspath(path) if path is not None else (e.filename or "")
    code = e.errno
    if code == errno.ENOSPC or code == errno.EDQUOT:
        return f"no space left on {where}"
    if code == errno.EROFS:
        return f"{where} is on a read-only file system"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied: {where}"
    if code == errno.ENOTDIR:
        return f"{where}: a path component is a file, not a folder"
    if code == errno.EEXIST:
        return f"{where} already exists"
    if code == errno.ENOENT:
        return f"{where} does not exist"
    return f"{where}: {e.strerror or first_line(e)}"


def is_disk_full(e: BaseException) -> bool:
    """True for ENOSPC/EDQUOT, also when a library wrapped it (orbax, TensorStore: the text says so)."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e).lower()
    return "no space left on device" in text or "disk quota exceeded" in text


STALE_TEMP_SECONDS = 120  # an atomic_write's temporary file older than this belongs to a writer that was killed


def remove_stale_temps(path: str | os.PathLike) -> list:
    """Remove the temporary files ``atomic_write`` left beside ``path`` when a writer was killed (its exact
    name pattern, ``.NAME.XXXXXXXX.tmp``, older than ``STALE_TEMP_SECONDS``: a live write takes seconds);
    returns what was removed."""
    import re
    import time
    path = os.fspath(path)
    folder, name = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    pattern = re.compile(rf"^\.{re.escape(name)}\.[A-Za-z0-9_]{{8}}\.tmp$")
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        full = os.path.join(folder, entry)
        try:
            if pattern.match(entry) and os.path.isfile(full) and time.time() - os.lstat(full).st_mtime > STALE_TEMP_SECONDS:
                os.unlink(full)
                removed.append(full)
        except OSError:
            pass
    return removed


def atomic_write(path: str | os.PathLike, data: Data | Callable[[str], None], *, overwrite: bool = True,
                 fsync: bool = True) -> bool:
    """Write ``path`` all at once: to a hidden temporary file beside it, then rename (or link) into place.

    data: bytes, str (UTF-8), or a callable that writes the file at the temporary path it is given (for
    encoders that want a file name). overwrite=False never replaces an existing file: returns False and
    writes nothing when ``path`` exists (also when it appeared while we wrote). Raises OSError as the OS
    gave it (the temporary file is removed).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not overwrite and os.path.lexists(path):
        return False
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        if callable(data):
            os.close(fd)
            fd = -1
            data(tmp)
            if fsync:
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
        else:
            with os.fdopen(fd, "wb") as f:
                fd = -1
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        if overwrite:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # fails with EEXIST if the name exists: check and write in one step
        except FileExistsError:
            return False
        except OSError as e:  # no hard links here (FAT, some network file systems): reserve the name
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            except FileExistsError:
                return False
            os.replace(tmp, path)
        return True
    finally:
        if fd >= 0:
            os.close(fd)
        if os.path.lexists(tmp):
            os.unlink(tmp)
