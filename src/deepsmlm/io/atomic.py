"""Atomic writes: write to a temporary name in the same folder, then rename.

A crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from deepsmlm.errors import UserError


def write_error(path: str | os.PathLike, err: OSError) -> UserError:
    """A write failure as a UserError naming the file: disk full, permission, a folder."""
    code = err.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return UserError(f"disk full writing {path}; free some space and run again")
    if code in (errno.EACCES, errno.EPERM):
        return UserError(f"cannot write {path}: permission denied (is the folder writable?)")
    if code == errno.EROFS:
        return UserError(f"cannot write {path}: read-only file system")
    if code == errno.EISDIR or Path(path).is_dir():
        return UserError(f"cannot write {path}: it is a folder; give a file name")
    return UserError(f"cannot write {path}: {err.strerror or err}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    Any OSError while writing (disk full, permission denied) becomes a UserError naming
    ``path``; the temporary file is removed, nothing appears under the final name."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # as open() would make it, not mkstemp's 0600
    except OSError as err:
        raise write_error(path, err) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _sync(tmp_path)  # on disk before it takes the name: a power cut leaves old or new
        os.replace(tmp_path, path)
    except OSError as err:  # disk full, permissions, ...: never a half-written file
        raise write_error(path, err) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Remove what ``atomic_path`` left in ``folder`` when a process was killed before its
    rename (``.NAME.XXXX.tmp``; a streamed movie's may be as large as the movie). Call it
    only while holding the folder's lock (``io.lock``), when no other run can be writing."""
    removed = []
    for f in Path(folder).glob(".*.tmp"):
        if f.is_file():
            with contextlib.suppress(OSError):
                f.unlink()
                removed.append(f.name)
    return removed
