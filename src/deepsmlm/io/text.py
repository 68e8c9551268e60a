"""Reading a text file the user gave us: any failure (missing, a folder, unreadable, not
UTF-8 text) is a ``UserError`` that names the file and says what it is not."""

from __future__ import annotations

import os
from pathlib import Path

from deepsmlm.errors import UserError


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The UTF-8 text of ``path`` (``what`` names it in errors, e.g. "experiment file")."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not {_a(what)}")
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read the {what} ({err.strerror})") from None
    return decode_text(raw, path, what)


def decode_text(raw: bytes, path: str | os.PathLike, what: str = "file") -> str:
    """``raw`` as UTF-8 text (a BOM is dropped); a UserError for binary or non-UTF-8 data."""
    if b"\x00" in raw:
        raise UserError(f"{path}: a binary file, not {_a(what)} (text)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset "
                        f"{err.start}); save the {what} as UTF-8") from None


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"
