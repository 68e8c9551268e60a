"""One run per output folder: an advisory lock held for the life of a command.

``folder_lock(out, "localize")`` takes an exclusive ``flock`` on ``out/.deepsmlm.lock``;
a second command into the same folder fails at once with a ``UserError`` naming the run
that holds it. The operating system drops the lock when the process ends — Ctrl-C, a crash
or ``kill -9`` — so a lock is never left stale. The lock file itself stays (it is empty of
meaning once unlocked; its text names the last holder, for the message).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from deepsmlm.errors import UserError

LOCK_NAME = ".deepsmlm.lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold ``folder``'s lock while the block runs (the folder must exist)."""
    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise UserError(f"cannot write in {folder}: {err.strerror}") from None
    try:
        if not _try_lock(fd):
            holder = _read(fd) or "another deepsmlm run"
            raise UserError(f"{folder} is in use by {holder}; wait for it to end or choose "
                            "another --out")
        note = (f"`deepsmlm {command}` (pid {os.getpid()} on {socket.gethostname()}, since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')})")
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode(), 0)
        yield folder
    finally:
        os.close(fd)  # closing drops the lock


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; nothing is guarded
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks (some network mounts): do not block
        return True
    return True


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 512, 0).decode(errors="replace").strip()
    except OSError:
        return ""
