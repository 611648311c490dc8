"""A project's state directory: who runs it, its control socket, its VMs' logs.

It lives under hvfs's state directory (/run/hvfs as root, $XDG_RUNTIME_DIR/hvfs or
/tmp/hvfs-UID otherwise; checked private by hvfs.state) in projects/NAME/. The manager
holds an exclusive lock on manager.lock for its whole life: whoever can take the lock
knows no manager is up, and may clean up what a killed one left (manager.json and
cgroups.json say what that was).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from typing import Any

from hvfs.state import state_directory


class ProjectState:
    def __init__(self, project: str) -> None:
        self.project = project
        self.root = os.path.join(state_directory(), "projects", project)
        self.lock_path = os.path.join(self.root, "manager.lock")
        self.info_path = os.path.join(self.root, "manager.json")
        self.control = os.path.join(self.root, "control.sock")
        self.cgroups = os.path.join(self.root, "cgroups.json")  # what hvfs.project.limits made
        self.logs = os.path.join(self.root, "logs")
        self._lock_fd: int | None = None

    def log(self, vm: str) -> str:
        return os.path.join(self.logs, f"{vm}.log")

    def staging(self, vm: str) -> str:
        return os.path.join(self.root, "vms", vm)

    def running(self) -> dict[str, Any] | None:
        """The running manager's info, or None when no manager holds the lock."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self.info() or {"pid": None}
        finally:
            os.close(fd)
        return None

    def info(self) -> dict[str, Any] | None:
        """What manager.json says (pid, file, started), or None without one."""
        try:
            with open(self.info_path) as f:
                info = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"pid": None}
        return info if isinstance(info, dict) else {"pid": None}

    def left_behind(self) -> dict[str, Any] | None:
        """The info of a manager that is gone (killed) but left its state behind, or None."""
        return None if self.running() is not None else self.info()

    def take_over(self) -> bool:
        """Hold the lock as a manager would, to clean up after a dead one: False if a
        manager is up (or none ever left anything here)."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            if not os.path.isdir(self.root):
                return False
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def claim(self, file: str) -> bool:
        """Become the project's manager: False if another one is up. Cleans up after a
        manager that was killed."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        for stale in (self.logs, os.path.join(self.root, "vms")):
            shutil.rmtree(stale, ignore_errors=True)
        os.makedirs(self.logs, mode=0o700)
        with open(self.info_path, "w") as f:
            json.dump({"pid": os.getpid(), "file": file, "started": time.time()}, f)
        return True

    def remove(self) -> None:
        """Remove everything, the lock last (while still held)."""
        for name in os.listdir(self.root):
            path = os.path.join(self.root, name)
            if path != self.lock_path:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
        with contextlib.suppress(OSError):
            os.unlink(self.lock_path)
        with contextlib.suppress(OSError):
            os.rmdir(self.root)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
