"""The backup on the bus of its VMs: a hook that saves what an unlink, a replacing rename
or a truncating open is about to destroy, a subscriber that records removals and renames,
and a close watcher that saves what VMs wrote (see service.py for what each call does)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import posixpath
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from hvfs import api
from hvfs.api.events import Event
from hvfs.api.hooks import EventBus, Files
from hvfs.api.messages import RENAME_EXCHANGE
from hvfs.cluster.identity import is_remote
from hvfs.services.backup.service import BackupLimits, BackupService, BackupStatistics, Skipped
from hvfs.services.base import service_event
from hvfs.services.describe import BACKUP

if TYPE_CHECKING:
    from hvfs.services.plugins.backup import BackupConfig


class Backup:
    """Implements Service."""

    name = "backup"

    def __init__(self, config: BackupConfig) -> None:
        limits = BackupLimits(max_store=config.max_store)
        if config.max_file is not None:
            limits = dataclasses.replace(limits, max_file=config.max_file)
        self._bus: EventBus | None = None
        self._files: Files | None = None
        self.backup: BackupService = BackupService.open(
            config.store, config.rules, limits=limits, report=self._skipped, shared=config.shared
        )

    def attach(self, bus: EventBus, files: Files) -> None:
        self._bus, self._files = bus, files
        bus.add_hook(_SaveBeforeDestroying(self))
        bus.subscribe(self._bookkeeping, name="backup", prompt=True)  # a rename's new name, while it is true
        bus.on_close(self.backup.on_closed_after_write, name="backup")

    @contextlib.contextmanager
    def _opened(self, vm: str, path: str | api.VmPath) -> Iterator[int | None]:
        """The manager's read-only fd on the regular file ``path`` of ``vm``, or None."""
        assert self._files is not None
        fd = self._files.open_file(vm, path)
        try:
            yield fd
        finally:
            if fd is not None:
                os.close(fd)

    def save_before_remove(self, vm: str, path: api.VmPath, *, replaced: bool, deadline: float) -> None:
        """Save the file a request is about to destroy, giving up at ``deadline`` (monotonic)."""
        normal = posixpath.normpath(str(path))
        if not self.backup.matches(vm, normal):
            return
        with self._opened(vm, path) as fd:
            if fd is not None:
                self.backup.before_remove(vm, normal, fd, replaced=replaced, deadline=deadline)

    def _bookkeeping(self, event: Event) -> None:
        """After the answer: removals and renames, as the backup index must know them;
        another host's (hvfs.cluster) are its manager's to record, in the shared store."""
        if event.result != "ok" or is_remote(event.vm):
            return
        if event.operation == "unlink":
            self.backup.after_remove(event.vm, event.paths[0])
        elif event.operation == "rename" and len(event.paths) == 2:
            old, new = event.paths
            with self._opened(event.vm, new) as fd:
                if fd is None:  # a directory, or gone again
                    self.backup.on_directory_renamed(event.vm, old, new)
                else:
                    self.backup.on_renamed(event.vm, old, new, fd)

    def _skipped(self, skipped: Skipped) -> None:
        if self._bus is not None:
            self._bus.publish(service_event(skipped.vm, 0, BACKUP, (skipped.path,), skipped.reason))

    def statistics(self) -> BackupStatistics:
        return self.backup.statistics()

    def close(self) -> None:
        self.backup.close()


class _SaveBeforeDestroying:
    """Implements Hook: before an unlink, a rename over a file or an open that truncates
    it, save what disappears."""

    name = "backup"

    def __init__(self, service: Backup) -> None:
        self.service = service

    def before(self, vm: str, request: api.Request) -> api.Response | None:
        service = self.service
        # One budget for the request, however many files it destroys: the VM waits for it.
        deadline = time.monotonic() + service.backup.limits.sync_seconds
        if isinstance(request, api.Open) and request.flags & os.O_TRUNC and request.flags & os.O_ACCMODE:
            # The content is about to go: its close may not have been handled yet.
            service.save_before_remove(vm, request.path, replaced=True, deadline=deadline)
        elif isinstance(request, api.Unlink):
            service.save_before_remove(vm, request.path, replaced=False, deadline=deadline)
        elif isinstance(request, api.Rename):
            service.save_before_remove(vm, request.new, replaced=True, deadline=deadline)
            if request.flags & RENAME_EXCHANGE:  # the other side is replaced too
                service.save_before_remove(vm, request.old, replaced=True, deadline=deadline)
        return None
