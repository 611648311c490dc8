"""Where hvfs keeps per-VM state and caches, and the lock that makes VM names unique."""

from __future__ import annotations

import os

from hvfs.private_dirs import private_directory


def state_directory() -> str:
    """$HVFS_STATE_DIR if set; else /run/hvfs as root; else $XDG_RUNTIME_DIR/hvfs, or
    /tmp/hvfs-UID where there is no runtime directory. Made (mode 0700) and checked
    private before anything is kept in it: see hvfs.private_dirs. Raises UnsafeDirectory.
    Each such directory has a manager of its own (a test suite may want one)."""
    chosen = os.environ.get("HVFS_STATE_DIR")
    if chosen:
        return private_directory(os.path.abspath(chosen), "the state directory (HVFS_STATE_DIR)", "", tighten=True)
    if os.geteuid() == 0:
        return private_directory("/run/hvfs", "the state directory", "", tighten=True)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.access(runtime, os.W_OK):
        path = os.path.join(runtime, "hvfs")
        fix = "set XDG_RUNTIME_DIR to a directory of your own"
    else:
        path = f"/tmp/hvfs-{os.geteuid()}"
        fix = "set XDG_RUNTIME_DIR to a directory of your own (hvfs then uses XDG_RUNTIME_DIR/hvfs)"
    return private_directory(path, "the state directory", fix, tighten=True)


def cache_directory() -> str:
    """$XDG_CACHE_HOME/hvfs when set; else /var/cache/hvfs as root, ~/.cache/hvfs otherwise.
    Not checked: see private_cache_directory."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        if os.geteuid() == 0:
            return "/var/cache/hvfs"
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hvfs")


def private_cache_directory() -> str:
    """The cache directory, made and checked private (an unpacked image planted there by
    someone else would become a VM's root). Raises UnsafeDirectory."""
    fix = "set XDG_CACHE_HOME to a directory of your own" if os.geteuid() else ""
    return private_directory(cache_directory(), "the cache directory", fix)
