"""Where hvfs keeps per-VM state and caches, and the lock that makes VM names unique."""

from __future__ import annotations

import contextlib
import fcntl
import os

from hvfs.private_dirs import private_directory
from hvfs.spec import UsageError


def state_directory() -> str:
    """/run/hvfs as root; else $XDG_RUNTIME_DIR/hvfs, or /tmp/hvfs-UID where there is no
    runtime directory. Made (mode 0700) and checked private before anything is kept in
    it: see hvfs.private_dirs. Raises UnsafeDirectory."""
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


def _try_lock(path: str) -> int | None:
    """An fd holding the lock at ``path``, or None if another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed it as we took it: try the new one


def sweep(directory: str) -> None:
    """Remove what VMs killed before they could clean up left behind: entries whose lock
    no process holds. (A VM's mounts live in its manager's private namespace and vanish
    with it; only these names outlive a SIGKILL.)"""
    entries = set(os.listdir(directory))
    for entry in entries:
        path = os.path.join(directory, entry)
        if not entry.endswith(".lock"):
            if f"{entry}.lock" not in entries:  # a lock is made before its directory
                with contextlib.suppress(OSError):
                    os.rmdir(path)
            continue
        fd = _try_lock(path)
        if fd is None:
            continue
        with contextlib.suppress(OSError):
            os.rmdir(path.removesuffix(".lock"))
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


class NameLock:
    """Held for a VM's lifetime: a second VM of the same name is refused."""

    def __init__(self, name: str) -> None:
        self.directory = state_directory()
        sweep(self.directory)
        self.path = os.path.join(self.directory, f"{name}.lock")
        self.staging = os.path.join(self.directory, name)
        fd = _try_lock(self.path)
        if fd is None:
            raise UsageError(f"a VM named {name!r} is already running; choose another --name")
        self._fd = fd
        os.makedirs(self.staging, mode=0o700, exist_ok=True)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.rmdir(self.staging)
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
