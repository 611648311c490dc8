"""An event's flags by name, as the audit shows them: ``O_WRONLY|O_CREAT|O_TRUNC`` for an
open, ``RENAME_NOREPLACE`` for a rename, ``AT_SYMLINK_NOFOLLOW`` for a statx; a bit this
table does not know stays a number (``O_RDONLY|0x4000000``), so nothing is hidden."""

from __future__ import annotations

import os

from hvfs._sys.abi import (
    AT_EACCESS,
    AT_EMPTY_PATH,
    AT_NO_AUTOMOUNT,
    AT_SYMLINK_NOFOLLOW,
    MSG_DONTWAIT,
    MSG_FASTOPEN,
    MSG_NOSIGNAL,
    O_CREAT,
    O_PATH,
    O_RDWR,
    O_TRUNC,
    O_WRONLY,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    RENAME_WHITEOUT,
    TMPFILE_BIT,
    XATTR_CREATE,
    XATTR_REPLACE,
)

_ACCESS_MODE = 0o3
# Composite flags first (O_SYNC holds O_DSYNC's bit, O_TMPFILE O_DIRECTORY's): a bit
# named once is not named again.
_OPEN = (
    ("O_TMPFILE", TMPFILE_BIT | os.O_DIRECTORY),
    ("O_SYNC", os.O_SYNC),
    ("O_CREAT", O_CREAT),
    ("O_EXCL", os.O_EXCL),
    ("O_NOCTTY", os.O_NOCTTY),
    ("O_TRUNC", O_TRUNC),
    ("O_APPEND", os.O_APPEND),
    ("O_NONBLOCK", os.O_NONBLOCK),
    ("O_DSYNC", os.O_DSYNC),
    ("O_DIRECT", os.O_DIRECT),
    ("O_LARGEFILE", 0o100000),  # 0 in a 64-bit Python's os, set by 32-bit callers' libc
    ("O_DIRECTORY", os.O_DIRECTORY),
    ("O_NOFOLLOW", os.O_NOFOLLOW),
    ("O_NOATIME", os.O_NOATIME),
    ("O_CLOEXEC", os.O_CLOEXEC),
    ("O_PATH", O_PATH),
)
_AT = (
    ("AT_SYMLINK_NOFOLLOW", AT_SYMLINK_NOFOLLOW),
    ("AT_EACCESS", AT_EACCESS),
    ("AT_NO_AUTOMOUNT", AT_NO_AUTOMOUNT),
    ("AT_EMPTY_PATH", AT_EMPTY_PATH),
    ("AT_STATX_FORCE_SYNC", 0x2000),
    ("AT_STATX_DONT_SYNC", 0x4000),
)
_BY_OPERATION = {
    "rename": (("RENAME_NOREPLACE", RENAME_NOREPLACE), ("RENAME_EXCHANGE", RENAME_EXCHANGE),
               ("RENAME_WHITEOUT", RENAME_WHITEOUT)),
    "setxattr": (("XATTR_CREATE", XATTR_CREATE), ("XATTR_REPLACE", XATTR_REPLACE)),
    "send": (("MSG_DONTWAIT", MSG_DONTWAIT), ("MSG_NOSIGNAL", MSG_NOSIGNAL), ("MSG_FASTOPEN", MSG_FASTOPEN),
             ("MSG_OOB", 0x1), ("MSG_EOR", 0x80), ("MSG_CONFIRM", 0x800), ("MSG_MORE", 0x8000)),
    "statx": _AT,
    "access": _AT,
}  # fmt: skip


def _named(flags: int, table: tuple[tuple[str, int], ...]) -> list[str]:
    names = []
    for name, bits in table:
        if bits and flags & bits == bits:
            names.append(name)
            flags &= ~bits
    if flags:
        names.append(f"{flags:#x}")
    return names


def flag_names(operation: str, flags: int) -> str:
    """``flags`` of an ``operation`` event by name; "" for none (an open always has its
    access mode: ``O_RDONLY``)."""
    if operation == "open":
        access = ("O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE")[flags & _ACCESS_MODE]
        if flags & O_PATH:  # the access mode of an O_PATH open means nothing
            return "|".join(_named(flags & ~_ACCESS_MODE, _OPEN))
        return "|".join([access, *_named(flags & ~_ACCESS_MODE, _OPEN)])
    table = _BY_OPERATION.get(operation)
    if table is None:
        return f"{flags:#x}" if flags else ""
    return "|".join(_named(flags, table))


def is_write(flags: int) -> bool:
    """Whether an open with ``flags`` may change the file: write access, O_CREAT, O_TRUNC."""
    return bool(flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)) and not flags & O_PATH
