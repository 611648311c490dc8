"""ScanHook: the scanner as an EventBus hook, denying infected files with EACCES.

Integration: the manager gives the hook a way to open a request's file in the VM's
writable view, ``locate(vm, path) -> Located | None``, resolving ``path`` as the request
would (following symlinks for an Exec and an Open without O_NOFOLLOW) and returning
None when there is nothing to scan (ENOENT, a directory, a kernel path); then
``bus.add_hook(ScanHook(scanner, quarantine, locate, report=…))``. The hook owns and
closes the two fds of a Located. ``report`` (for an event or a log) is called in the
dispatching thread with each detection and its quarantine record (None when the
quarantine failed: the call is denied all the same).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from hvfs import api
from hvfs.services.scan.quarantine import Quarantine, QuarantineRecord
from hvfs.services.scan.scanner import Scanner, Verdict, needs_check
from hvfs.services.snapshot import UnstableContent

log = logging.getLogger("hvfs.services")


@dataclass(frozen=True, slots=True)
class Located:
    fd: int  # the file, opened read-only
    dir_fd: int  # its parent directory
    name: str  # its name in that directory (after following symlinks)


@dataclass(frozen=True, slots=True)
class Detected:
    vm: str
    path: str
    verdict: Verdict
    record: QuarantineRecord | None


class ScanHook:
    """Implements Hook: an infected file's open or exec fails with EACCES, and the file
    goes to the quarantine (when one is given)."""

    name = "scan"

    def __init__(
        self,
        scanner: Scanner,
        quarantine: Quarantine | None,
        locate: Callable[[str, api.VmPath], Located | None],
        *,
        report: Callable[[Detected], None] | None = None,
    ) -> None:
        self.scanner, self.quarantine = scanner, quarantine
        self._locate, self._report = locate, report

    def before(self, vm: str, request: api.Request) -> api.Response | None:
        if not needs_check(request):
            return None
        assert isinstance(request, api.Open | api.Exec)
        if isinstance(request.path, api.OpenFile):
            return self._check_open_file(vm, request.path)
        located = self._locate(vm, request.path)
        if located is None:
            return None
        path = str(request.path)
        try:
            verdict = self.scanner.check(vm, path, located.fd)
            if not verdict.infected:
                return None
            record = self._quarantine(vm, path, located, verdict)
        finally:
            os.close(located.fd)
            os.close(located.dir_fd)
        if self._report is not None:
            self._report(Detected(vm, path, verdict, record))
        return api.Errno(errno.EACCES)

    def _check_open_file(self, vm: str, file: api.OpenFile) -> api.Response | None:
        """An exec of an open file (fexecve, a memfd): judged from the fd, but there is no
        name to take it away from, so it is denied and not quarantined."""
        if not stat.S_ISREG(os.fstat(file.fd).st_mode):
            return None
        verdict = self.scanner.check(vm, file.path, file.fd)
        if not verdict.infected:
            return None
        if self._report is not None:
            self._report(Detected(vm, file.path, verdict, None))
        return api.Errno(errno.EACCES)

    def _quarantine(self, vm: str, path: str, located: Located, verdict: Verdict) -> QuarantineRecord | None:
        if self.quarantine is None or verdict.detection is None:
            return None
        try:
            return self.quarantine.move_in(vm, path, located.dir_fd, located.name, verdict.detection)
        except (OSError, UnstableContent) as e:  # still denied: an infected file stays unusable
            log.error("scan: cannot quarantine %s of VM %s: %s", path, vm, e)
            return None
