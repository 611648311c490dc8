"""ScanHook: the scanner as a hook (hvfs.api.hooks), denying infected files with EACCES.

What is judged is always a file the VM can no longer change, never a path it may still
rewrite in its memory:

- an open: the very fd the manager is about to install in the VM (``after``, on the
  handler's ``api.Fd``); the file handed out is the file judged;
- an exec: checked by path before the kernel runs it (``before``, which gives the caller
  a plain EACCES and fills the verdict cache), and again after the fact on the executed
  file itself (``api.Executed``, from the exec tracer), since a racing thread can make
  the kernel load another file than the one checked: the process is then killed;
- an exec of an open file (fexecve): that open file (an ``O_PATH`` one is reopened to be
  read).

Integration (``Scan``, the service, below): the hook gets a way to find a file in the
VM's writable view, ``locate(vm, path) -> Located | None`` (from the manager's
``Files.locate_file``), returning None when there is nothing there (the hook owns and
closes the two fds of a Located); then ``bus.add_hook(ScanHook(scanner, quarantine,
locate, report=…))``. ``report`` (for an event or a log) is called in the
dispatching thread once per quarantined file, with the detection and its record (None
when the quarantine failed: the call is denied all the same).

One verdict, one entry: a file the quarantine could not take away (a read-only mount)
stays, and every later open of it is denied without a new entry.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hvfs import api, deferred
from hvfs.api.hooks import EventBus, Files
from hvfs.services.base import service_event
from hvfs.services.describe import QUARANTINE
from hvfs.services.scan.engines import Engine
from hvfs.services.scan.quarantine import Quarantine, QuarantineRecord
from hvfs.services.scan.scanner import Scanner, ScanStatistics, Verdict
from hvfs.services.snapshot import UnstableContent

log = deferred.logger("hvfs.services")
_REMEMBERED = 4096  # quarantined files remembered, so that retries add no entries


@dataclass(frozen=True, slots=True)
class Located:
    fd: int  # the file, opened read-only
    dir_fd: int  # its parent directory
    name: str  # its name in that directory (after following symlinks)

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.dir_fd)


@dataclass(frozen=True, slots=True)
class Detected:
    vm: str
    path: str
    verdict: Verdict
    record: QuarantineRecord | None


class ScanHook:
    """Implements ResponseHook: an infected file's open or exec fails with EACCES (an
    executed one is killed), and the file goes to the quarantine (when one is given)."""

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
        self._lock = threading.Lock()
        # (device, inode, size, mtime) of files already quarantined: their retries are
        # denied without a new entry. An unlink changes the ctime, not these.
        self._quarantined: OrderedDict[tuple[int, int, int, int], QuarantineRecord | None] = OrderedDict()

    def before(self, vm: str, request: api.Request) -> api.Response | None:
        if isinstance(request, api.Executed):
            return self._judge(vm, request.file.path, request.file.fd)
        if not isinstance(request, api.Exec):
            return None
        if isinstance(request.path, api.OpenFile):
            return self._judge_open_file(vm, request.path)
        located = self._locate(vm, request.path)
        if located is None:
            return None
        with contextlib.closing(located):
            return self._judge(vm, str(request.path), located.fd, located)

    def after(self, vm: str, request: api.Request, response: api.Response) -> api.Response | None:
        if not isinstance(response, api.Fd) or not isinstance(request, api.Open):
            return None
        fd = response.fd
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
            return None  # nothing of the file reaches the VM through it
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return None  # directories; new and truncated files (scanned when closed)
        return self._judge(vm, str(request.path), fd)

    def _judge_open_file(self, vm: str, file: api.OpenFile) -> api.Response | None:
        """An exec of an open file: an O_PATH one cannot be read, so its file is reopened."""
        if not stat.S_ISREG(os.fstat(file.fd).st_mode):
            return None
        if not fcntl.fcntl(file.fd, fcntl.F_GETFL) & os.O_PATH:
            return self._judge(vm, file.path, file.fd)
        try:
            readable = os.open(f"/proc/self/fd/{file.fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as e:  # the manager may not read it either: judged after the exec
            log.warning("scan: cannot reopen %s of VM %s to judge its exec: %s", file.path, vm, e)
            return None
        try:
            return self._judge(vm, file.path, readable)
        finally:
            os.close(readable)

    def _judge(self, vm: str, path: str, fd: int, located: Located | None = None) -> api.Response | None:
        """EACCES when the content of ``fd`` is infected, after quarantining its file once."""
        verdict = self.scanner.check(vm, path, fd)
        if not verdict.infected:
            return None
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:  # one entry even when several threads open the file at once
            if key in self._quarantined:
                self._quarantined.move_to_end(key)
                return api.Errno(errno.EACCES)
            path, record = self._quarantine(vm, path, fd, st, verdict, located)
            self._quarantined[key] = record
            if len(self._quarantined) > _REMEMBERED:
                self._quarantined.popitem(last=False)
        if self._report is not None:
            self._report(Detected(vm, path, verdict, record))
        return api.Errno(errno.EACCES)

    def _quarantine(
        self, vm: str, path: str, fd: int, st: os.stat_result, verdict: Verdict, located: Located | None
    ) -> tuple[str, QuarantineRecord | None]:
        """Copy the judged file in, then take its name away in the VM; the file's VM path
        and its record. A file that no VM path names (a memfd, a deleted file) has nothing
        to take away: not kept."""
        if self.quarantine is None or verdict.detection is None:
            return path, None
        found = (path, located) if located is not None else self._where(vm, path, fd, st)
        if found is None:
            return path, None
        path, where = found
        try:
            record = self.quarantine.add(vm, path, fd, verdict.detection)
            try:
                self.quarantine.remove(where.dir_fd, where.name, st)
            except OSError as e:
                log.warning("scan: %s of VM %s stays in place (%s); every use of it is denied", path, vm, e.strerror)
            return path, record
        except (OSError, UnstableContent) as e:  # still denied: an infected file stays unusable
            log.error("scan: cannot quarantine %s of VM %s: %s", path, vm, e)
            return path, None
        finally:
            if where is not located:
                where.close()

    def _where(self, vm: str, path: str, fd: int, st: os.stat_result) -> tuple[str, Located] | None:
        """The VM path of the file of ``fd``, and the file found there in the VM's writable
        view: ``path``, the one asked for, if it still names that file; else the path it
        reads as (it may have been renamed, or reached through /proc)."""
        candidates = [path]
        with contextlib.suppress(OSError):
            candidates.append(os.readlink(f"/proc/self/fd/{fd}"))  # the VM's views read as its own paths
        for name in candidates:
            if not name.startswith("/") or name.endswith(" (deleted)"):
                continue
            located = self._locate(vm, api.VmPath("/", name))
            if located is None:
                continue
            found = os.fstat(located.fd)
            if (found.st_dev, found.st_ino) == (st.st_dev, st.st_ino):
                return name, located
            located.close()
        return None


class Scan:
    """Implements hvfs.services.base.Service: the scanner and its hook on the bus of its VMs,
    and a close watcher that scans what VMs wrote."""

    name = "scan"

    def __init__(self, engines: Sequence[Engine], quarantine: str) -> None:
        self.scanner = Scanner(engines)
        self.quarantine = quarantine
        self._bus: EventBus | None = None
        self._files: Files | None = None

    def attach(self, bus: EventBus, files: Files) -> None:
        self._bus, self._files = bus, files
        bus.add_hook(ScanHook(self.scanner, Quarantine(self.quarantine), self._locate, report=self._detected))
        bus.on_close(self.scanner.check, name="scan")  # fills the verdict cache before anyone opens it

    def _locate(self, vm: str, path: api.VmPath) -> Located | None:
        assert self._files is not None
        found = self._files.locate_file(vm, path)
        return None if found is None else Located(*found)

    def _detected(self, detected: Detected) -> None:
        if detected.record is not None and self._bus is not None:  # the scanner already said what it found
            log.warning("%s of VM %s quarantined as %s", detected.path, detected.vm, detected.record.id)
            self._bus.publish(service_event(detected.vm, 0, QUARANTINE, (detected.path,), "EACCES"))

    def statistics(self) -> ScanStatistics:
        return self.scanner.statistics()

    def close(self) -> None:
        pass
