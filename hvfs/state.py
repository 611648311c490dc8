"""Where hvfs keeps per-VM state and caches, and the lock that makes VM names unique.

Each place is named for the user hvfs runs as. The rootless manager later enters a user
namespace of its own, where its effective uid is 0: asked there, ``os.geteuid()`` would
name root's places (/var/cache/hvfs, /run/hvfs), which that manager cannot write, and its
filter cache would never be used. So the manager calls ``decide_user`` before it enters
the namespace, and every place named afterwards is that user's own. Only the naming
changes: whether a directory may be trusted is still checked on what the process sees
(hvfs.private_dirs), exactly as strictly.
"""

from __future__ import annotations

import os

from hvfs.private_dirs import UnsafeDirectory, is_private, private_directory

_user: tuple[int, str] | None = None  # (euid, home) as decide_user found them
_cache_problem: UnsafeDirectory | None = None  # why the cache directory failed decide_user's check


def decide_user() -> None:
    """Name this user's places from now on, whatever uid the process has later (call it
    before entering a user namespace), and make and check the cache directory while the
    host's owners can still be told apart: in the rootless manager's namespace root and
    every other user show as one unmapped owner, which hvfs.private_dirs trusts on the way
    only to a path checked with the host's uids first."""
    global _user, _cache_problem
    _user = (os.geteuid(), os.path.expanduser("~"))
    try:
        private_cache_directory()
    except UnsafeDirectory as e:
        _cache_problem = e
    except OSError as e:
        _cache_problem = UnsafeDirectory(f"the cache directory {cache_directory()} cannot be made: {e.strerror}")


def _euid() -> int:
    return os.geteuid() if _user is None else _user[0]


def home() -> str:
    """The user's home directory, as decided (decide_user) or as it is now."""
    return os.path.expanduser("~") if _user is None else _user[1]


def state_directory() -> str:
    """$HVFS_STATE_DIR if set; else /run/hvfs as root; else $XDG_RUNTIME_DIR/hvfs, or
    /tmp/hvfs-UID where there is no runtime directory. Made (mode 0700) and checked
    private before anything is kept in it: see hvfs.private_dirs. Raises UnsafeDirectory.
    Each such directory has a manager of its own (a test suite may want one)."""
    chosen = os.environ.get("HVFS_STATE_DIR")
    if chosen:
        return private_directory(os.path.abspath(chosen), "the state directory (HVFS_STATE_DIR)", "", tighten=True)
    if _euid() == 0:
        return private_directory("/run/hvfs", "the state directory", "", tighten=True)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.access(runtime, os.W_OK):
        path = os.path.join(runtime, "hvfs")
        fix = "set XDG_RUNTIME_DIR to a directory of your own"
    else:
        path = f"/tmp/hvfs-{_euid()}"
        fix = "set XDG_RUNTIME_DIR to a directory of your own (hvfs then uses XDG_RUNTIME_DIR/hvfs)"
    return private_directory(path, "the state directory", fix, tighten=True)


def cache_directory() -> str:
    """$XDG_CACHE_HOME/hvfs when set; else /var/cache/hvfs as root, ~/.cache/hvfs otherwise.
    Not checked: see private_cache_directory."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        if _euid() == 0:
            return "/var/cache/hvfs"
        base = os.path.join(home(), ".cache")
    return os.path.join(base, "hvfs")


def private_cache_directory() -> str:
    """The cache directory, made and checked private (an unpacked image planted there by
    someone else would become a VM's root). Raises UnsafeDirectory."""
    if _cache_problem is not None:
        raise _cache_problem
    fix = "set XDG_CACHE_HOME to a directory of your own" if _euid() else ""
    return private_directory(cache_directory(), "the cache directory", fix)


def cache_problem() -> str | None:
    """None when the existing cache directory may be trusted (as private_cache_directory
    checks it, decide_user's verdict included), else why not."""
    if _cache_problem is not None:
        return str(_cache_problem)
    return is_private(cache_directory())


def user_is_root() -> bool:
    """Whether hvfs runs for root (as decided: see decide_user), rather than for a user."""
    return _euid() == 0
