"""One run per output folder: an advisory lock held for the life of a command.

``folder_lock(out, "localize")`` takes an exclusive ``flock`` on the folder itself; a
second command into the same folder fails at once with a ``UserError`` naming the run that
holds it (from the note ``out/.deepsmlm.lock``, written while the lock is held and removed
with it). The operating system drops the lock when the process ends — Ctrl-C, a crash or
``kill -9`` — so a lock is never left stale (after ``kill -9`` only the note stays, and the
next run replaces it).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from deepsmlm.errors import UserError

NOTE_NAME = ".deepsmlm.lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold ``folder``'s lock while the block runs (the folder must exist)."""
    folder = Path(folder)
    note = folder / NOTE_NAME
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as err:
        raise UserError(f"cannot use the folder {folder}: {err.strerror}") from None
    try:
        if not _try_lock(fd):
            holder = _read(note) or "another deepsmlm run"
            raise UserError(f"{folder} is in use by {holder}; wait for it to end or choose "
                            "another --out")
        text = (f"`deepsmlm {command}` (pid {os.getpid()} on {socket.gethostname()}, since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')})")
        with contextlib.suppress(OSError):  # the note only serves the message above
            note.write_text(text)
        try:
            yield folder
        finally:
            with contextlib.suppress(OSError):
                note.unlink()
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


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()[:300]
    except OSError:
        return ""
