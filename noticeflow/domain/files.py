"""Reading the files people hand to noticeflow (a notice, a customers CSV, a baseline of the
sub-processors in use): one reader, so each says what is wrong in the same clear line — no such
file, a directory, unreadable, too large for what it should be, not UTF-8, not TOML."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path
from typing import Any

from noticeflow.domain.errors import InputError


def read_text(path: Path, kind: str, max_bytes: int, expected: str = "") -> str:
    """The text of the ``kind`` file at ``path`` (UTF-8, a byte order mark is fine).

    Past ``max_bytes`` the file is refused (``expected`` says what size it should have): a
    regular file's size is checked before reading, a pipe is read to one byte past it, and a
    device (/dev/zero, a terminal) is refused unread."""
    too_big = InputError(
        f"{path}: larger than {max_bytes:,} bytes; {expected or 'is this the right file?'}"
    )
    try:
        mode = path.stat().st_mode
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            raise InputError(f"{path}: is a device, not a {kind} file")
        if stat.S_ISREG(mode) and path.stat().st_size > max_bytes:
            raise too_big
        with path.open("rb") as stream:
            raw = stream.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise too_big
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a {kind} file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror or error}") from None
    return decode_utf8(raw, str(path))


def read_toml(path: Path, kind: str, max_bytes: int, expected: str = "") -> dict[str, Any]:
    """The table of the ``kind`` TOML file at ``path``, read as :func:`read_text` reads it."""
    text = read_text(path, kind, max_bytes, expected)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{path}: not valid TOML: {error}") from None


def decode_utf8(raw: bytes, source: str) -> str:
    """Bytes of a text file as str: UTF-8 with or without a byte order mark, or one clear error."""
    bom = raw.startswith(b"\xef\xbb\xbf")
    body = raw[3:] if bom else raw
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        offset = error.start + (3 if bom else 0)
        line = raw.count(b"\n", 0, offset) + 1
        raise InputError(
            f"{source}: not valid UTF-8: byte 0x{raw[offset]:02x} at byte offset {offset}"
            f" (line {line}); save the file as UTF-8"
        ) from None
