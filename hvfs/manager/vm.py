"""What the manager knows of one VM."""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hvfs import api, deferred
from hvfs.manager.changes import ChangeSet
from hvfs.patterns import pattern

if TYPE_CHECKING:  # the bus is made for the VMs whose services want one
    from hvfs.api.hooks import EventBus

log = deferred.logger("hvfs.manager")

# Mount points whose file systems the VM's own kernel instance serves (its procfs and
# devpts): the writable view has only empty read-only placeholders there.
KERNEL_MOUNTS = ("/proc", "/dev/pts")
# normpath only drops components: a path whose text holds none of the mounts' last
# components cannot normalize into one (asked on every request; normpath is slow).
_MENTIONS_A_KERNEL_MOUNT = pattern("|".join(re.escape(m.rpartition("/")[2]) for m in KERNEL_MOUNTS))
WARNINGS_KEPT = 256  # distinct warnings per VM; past that, refusals are only counted


@dataclass(frozen=True)
class VmStatistics:
    """Requests per operation and outcome: served, continued, failed (answered an errno),
    waiting (a socket call that would have blocked, asked again later)."""

    requests: dict[str, dict[str, int]]

    def total(self, outcome: str) -> int:
        return sum(by_outcome.get(outcome, 0) for by_outcome in self.requests.values())


@dataclass
class VmContext:
    """One VM as the manager serves it: its views, its mode and its counts."""

    name: str
    rw_root: int  # root of the VM's writable view: a detached mount tree held by this fd
    vm_root: int  # the VM's own root, in its mount namespace: read-only fds come from here
    strict: bool = False
    # Unix sockets made by VMs, as (device, inode); shared by every VM of one manager.
    sockets: set[tuple[int, int]] = field(default_factory=set)
    socket_mounts: frozenset[int] = frozenset()  # mount ids of volumes marked "sockets"
    # A service judges what this VM reads (a scanner): no open that can read content is
    # left to the kernel, which would read its path again from the VM's memory.
    reads_judged: bool = False
    # The services of this VM's group (its ``hvfs run``, its project); None: no services,
    # and no cost for those of other VMs of the manager.
    bus: EventBus | None = None
    own_mounts: frozenset[int] = frozenset()  # mount ids of the whole writable view
    # Copy-on-write mounts (ids) and an O_PATH fd on their image's file system (statfs).
    images: dict[int, int] = field(default_factory=dict)
    changes: ChangeSet = field(default_factory=ChangeSet)  # what it changed (hvfs diff)
    staged: dict[str, int] = field(default_factory=dict)  # mount target -> fd of its staged upper layer
    roots_named_from_themselves: bool | None = None  # readlink of both roots is "/" (hvfs.manager.served)
    view_nodev: bool | None = None  # the writable view opens no device node (hvfs.manager.handlers.direct)
    # Requests its driver served without the manager (stats in C: hvfs.intercept.served_stat),
    # counted as ``count`` counts them.
    served_by_driver: Callable[[], dict[tuple[type, str], int]] | None = None
    _warned: set[str] = field(default_factory=set)
    _counts: Counter[tuple[type, str]] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def is_kernel_path(self, path: api.VmPath | str) -> bool:
        text = str(path)
        if _MENTIONS_A_KERNEL_MOUNT.search(text) is None:
            return False
        normal = posixpath.normpath(text)
        return any(normal == m or normal.startswith(m + "/") for m in KERNEL_MOUNTS)

    def count(self, kind: type, outcome: str) -> None:
        """One more request of type ``kind`` (named as ``api.messages.operation`` names it
        only when ``statistics`` is asked: a string made per request cost the dispatch)."""
        with self._lock:
            self._counts[kind, outcome] += 1

    def warn_once(self, message: str) -> None:
        """Log a warning about what this VM tried, once per distinct message: an attack
        loop repeats the same refusal thousands of times."""
        with self._lock:
            if message in self._warned or len(self._warned) >= WARNINGS_KEPT:
                return
            self._warned.add(message)
        log.warning("VM %s: %s", self.name, message)

    def statistics(self) -> VmStatistics:
        with self._lock:
            counts = self._counts.copy()
        if self.served_by_driver is not None:
            counts.update(self.served_by_driver())
        items = list(counts.items())
        requests: dict[str, dict[str, int]] = {}
        if not items:  # a VM that asked nothing: no message type named, none loaded
            return VmStatistics(requests)
        from hvfs.api.messages import operation_of

        named = (((operation_of(kind), outcome), n) for (kind, outcome), n in items)
        for (operation, outcome), n in sorted(named):
            requests.setdefault(operation, {})[outcome] = n
        return VmStatistics(requests)

    def close(self) -> None:
        for fd in (self.rw_root, self.vm_root, *self.images.values(), *self.staged.values()):
            with contextlib.suppress(OSError):
                os.close(fd)


def nodev(vm: VmContext) -> bool:
    """Whether the VM's writable view refuses device nodes: every view made by
    ``hvfs.manager.view`` (nodev on each of its mounts); not a view handed over by a manager
    from before that (``hvfs manager restart``), nor a plain directory (hvfs.testing)."""
    nodev = vm.view_nodev
    if nodev is None:
        nodev = vm.view_nodev = bool(os.fstatvfs(vm.rw_root).f_flag & os.ST_NODEV)
    return nodev
