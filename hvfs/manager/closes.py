"""Learning when a VM closes a file it wrote: ``close`` is not trapped, so the manager
puts a one-shot inotify watch (IN_CLOSE_WRITE) on each file it hands out for writing.

The manager installs the very open file it made, and drops its own reference before it
answers: the VM's last close is the file's last close, which is when the event comes.
Each watch remembers whom to tell (the bus of the VM that opened the file), so VMs with
different services share one watcher and one thread.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from hvfs import deferred
from hvfs._sys import inotify

log = deferred.logger("hvfs.manager")

T = TypeVar("T")


class CloseWatcher(Generic[T]):
    """Calls ``on_close(vm, path, listener)`` on its own thread for each watched close,
    with the ``listener`` given to ``watch``."""

    def __init__(self, on_close: Callable[[str, str, T], None]) -> None:
        self._on_close = on_close
        self._fd = inotify.init()
        self._stop_read, self._stop_write = os.pipe2(os.O_CLOEXEC)
        self._sync_read, self._sync_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._synced = threading.Condition()
        self._syncs_asked = self._syncs_done = 0
        self._stopped = False
        self._lock = threading.Lock()
        self._watched: dict[int, list[tuple[str, str, T]]] = {}  # watch -> (vm, path, listener) of its writers
        self._thread = threading.Thread(target=self._read, name="hvfs-closes", daemon=True)
        self._thread.start()

    def watch(self, vm: str, path: str, fd: int, listener: T) -> None:
        """Tell ``on_close(vm, path, listener)`` when the file open as ``fd`` (the manager's,
        before it is handed out) is closed after writing."""
        with self._lock:
            try:
                wd = inotify.add_watch(self._fd, f"/proc/self/fd/{fd}", inotify.IN_CLOSE_WRITE | inotify.IN_ONESHOT)
            except OSError as e:
                log.warning("cannot watch %s of VM %s for its close: %s", path, vm, e.strerror)
                return
            writers = self._watched.setdefault(wd, [])
            if not any(w[0] == vm and w[1] == path and w[2] is listener for w in writers):
                writers.append((vm, path, listener))

    def wait(self, timeout: float = 30.0) -> bool:
        """Return once every close queued before this call is handled; False on timeout
        (a stopped watcher handled them all before it stopped)."""
        if self._stopped:
            return True
        with self._synced:
            self._syncs_asked += 1
            ticket = self._syncs_asked
        with contextlib.suppress(BlockingIOError, OSError):  # a full pipe already asks
            os.write(self._sync_write, b"x")
        with self._synced:
            return self._synced.wait_for(lambda: self._syncs_done >= ticket, timeout)

    def _read(self) -> None:
        poller = select.poll()
        for fd in (self._fd, self._stop_read, self._sync_read):
            poller.register(fd, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._fd in ready:
                self._handle(os.read(self._fd, 65536))
            elif self._sync_read in ready:
                self._sync()
            elif self._stop_read in ready:
                return  # only once every queued close is handled

    def _sync(self) -> None:
        """Answer the waiters that asked so far: their closes were queued before they
        asked, so before the snapshot below, and are handled once inotify is drained."""
        with contextlib.suppress(BlockingIOError):
            os.read(self._sync_read, 4096)
        with self._synced:
            asked = self._syncs_asked
        pending = select.poll()
        pending.register(self._fd, select.POLLIN)
        while pending.poll(0):
            self._handle(os.read(self._fd, 65536))
        with self._synced:
            self._syncs_done = asked
            self._synced.notify_all()

    def _handle(self, data: bytes) -> None:
        for wd, mask in inotify.events(data):
            if not mask & inotify.IN_CLOSE_WRITE:
                continue
            with self._lock:
                writers = self._watched.pop(wd, [])
            for vm, path, listener in writers:
                try:
                    self._on_close(vm, path, listener)
                except Exception:
                    log.exception("a close handler failed for %s of VM %s", path, vm)

    def close(self, timeout: float = 30.0) -> None:
        """Handle the closes already queued (a VM that exited closed its files as it went),
        then stop; the services they call may be closed after this returns."""
        if self._stopped:
            return
        os.write(self._stop_write, b"x")
        self._thread.join(timeout)
        self._stopped = True
        for fd in (self._fd, self._stop_read, self._stop_write, self._sync_read, self._sync_write):
            with contextlib.suppress(OSError):
                os.close(fd)
