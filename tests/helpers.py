"""Helpers for comparing file trees made natively and in VMs."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

PROBES = Path(__file__).resolve().parent / "probes"


def snapshot(root: Path, *, times: bool = False) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root``: type, mode, size (not for directories), nlink, link
    target, and the content digest of regular files."""
    entries: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            kind = stat.S_IFMT(st.st_mode)
            target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
            size = None if stat.S_ISDIR(st.st_mode) else st.st_size
            entry: tuple[object, ...] = (kind, oct(stat.S_IMODE(st.st_mode)), size, st.st_nlink, target, digest)
            if times and not stat.S_ISLNK(st.st_mode):
                entry += (st.st_mtime_ns,)
            entries[str(path.relative_to(root))] = entry
    return entries
