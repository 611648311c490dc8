"""Learning when a VM closes a file it wrote: ``close`` is not trapped, so the manager
puts a one-shot inotify watch (IN_CLOSE_WRITE) on each file it hands out for writing.

The manager installs the very open file it made, and drops its own reference before it
answers: the VM's last close is the file's last close, which is when the event comes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable

from hvfs._sys import inotify

log = logging.getLogger("hvfs.manager")


class CloseWatcher:
    def __init__(self, on_close: Callable[[str, str], None]) -> None:
        self._on_close = on_close
        self._fd = inotify.init()
        self._stop_read, self._stop_write = os.pipe2(os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._watched: dict[int, list[tuple[str, str]]] = {}  # watch -> (vm, path) of its writers
        self._thread = threading.Thread(target=self._read, name="hvfs-closes", daemon=True)
        self._thread.start()

    def watch(self, vm: str, path: str, fd: int) -> None:
        """Tell ``on_close(vm, path)`` when the file open as ``fd`` (the manager's, before it
        is handed out) is closed after writing."""
        with self._lock:
            try:
                wd = inotify.add_watch(self._fd, f"/proc/self/fd/{fd}", inotify.IN_CLOSE_WRITE | inotify.IN_ONESHOT)
            except OSError as e:
                log.warning("cannot watch %s of VM %s for its close: %s", path, vm, e.strerror)
                return
            writers = self._watched.setdefault(wd, [])
            if (vm, path) not in writers:
                writers.append((vm, path))

    def _read(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._stop_read, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._fd in ready:
                self._handle(os.read(self._fd, 65536))
            elif self._stop_read in ready:
                return  # only once every queued close is handled

    def _handle(self, data: bytes) -> None:
        for wd, mask in inotify.events(data):
            if not mask & inotify.IN_CLOSE_WRITE:
                continue
            with self._lock:
                writers = self._watched.pop(wd, [])
            for vm, path in writers:
                try:
                    self._on_close(vm, path)
                except Exception:
                    log.exception("a close handler failed for %s of VM %s", path, vm)

    def close(self, timeout: float = 30.0) -> None:
        """Handle the closes already queued (a VM that exited closed its files as it went),
        then stop; the services they call may be closed after this returns."""
        os.write(self._stop_write, b"x")
        self._thread.join(timeout)
        for fd in (self._fd, self._stop_read, self._stop_write):
            with contextlib.suppress(OSError):
                os.close(fd)
