"""Where hvfs keeps per-VM state and caches, and the lock that makes VM names unique."""

from __future__ import annotations

import contextlib
import fcntl
import os

from hvfs.spec import UsageError


def state_directory() -> str:
    if os.geteuid() == 0:
        return "/run/hvfs"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.access(runtime, os.W_OK):
        return os.path.join(runtime, "hvfs")
    return f"/tmp/hvfs-{os.geteuid()}"


def cache_directory() -> str:
    """$XDG_CACHE_HOME/hvfs when set; else /var/cache/hvfs as root, ~/.cache/hvfs otherwise."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        if os.geteuid() == 0:
            return "/var/cache/hvfs"
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hvfs")


class NameLock:
    """Held for a VM's lifetime: a second VM of the same name is refused."""

    def __init__(self, name: str) -> None:
        self.directory = state_directory()
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self.path = os.path.join(self.directory, f"{name}.lock")
        self.staging = os.path.join(self.directory, name)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise UsageError(f"a VM named {name!r} is already running; choose another --name") from None
        os.makedirs(self.staging, mode=0o700, exist_ok=True)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.rmdir(self.staging)
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
