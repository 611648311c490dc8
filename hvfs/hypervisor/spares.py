"""Warm spares: a VM booted before the run that takes it (issue 14, start-up).

Most of a VM's start is the same from run to run of one configuration: its views (the
writable view, the boot view), hvfs-init spawned, the namespaces and id maps, pid 1 in its
boot view with its filter loaded and its listener taken. A spare is all that, done ahead,
for one configuration (``Recipe.key``: image, mounts, read-only root, limits, strict,
transport, driver), and used once: a run whose configuration has the same key takes it
(``vmstart.start``), sends the run's own program, environment, working directory, user,
hostname and stdio with START (native/init: T_SPARE), and the next spare of that key is
made on a thread of its own, off the run's path: it waits for the starts being served
(``Spares.starting``) before it begins and, while a spare of its key is still ready,
between its steps, rather than compete with them for the GIL.

What keeps one run from seeing another's: a spare never ran user code, and was made for
no run (its pid 1 knows nothing of one until START; its stdio until then is /dev/null);
its views are its own, fresh, never given to any other VM; its state directory is
renamed to the run's. A spare is dropped when its configuration has not been asked for in
``idle_seconds()``, when a host directory it binds is no longer the one it bound (replaced
since) or has other mounts below it (propagated to the manager since), and with its
manager: ``close()`` at the manager's exit, and a manager that dies takes its spares
along (pid 1 ends on its channel's end, the shim with it: shim.c).
``HVFS_SPARE=0`` makes none.

Under the ptrace driver, a spare's tracer thread is started with it and seizes its pid 1
(ptrace is per tracer thread: the thread that serves the run must be the one that
seized); it takes no status, so serves and tells nothing, until the run binds it
(``PtraceDriver.bind``), as the seccomp driver's workers wait. Its pid 1 is traced with
EXITKILL: it dies with the manager, and a spare dropped unbound is killed and reaped by
that thread, which then ends.

An audited run (a bus with subscribers and no hook: ``--audit``) takes a spare as any
other: nothing of its boot depends on the audit, whose bus is the VM's from the run's bind
of the spare's driver (``runtime.serve_vm``), before START, as a VM made from scratch has
it from its driver's start, also before START: both record the same events, from the
command's first (tests/test_spares_audit.py). A spare made for runs without the audit
serves one with it, and back: the configuration (``Recipe.key``) is the same.

Not kept warm (each would share or miss something of a run): a terminal (its pty is
made at boot), a network (the bridge is a group's), services with hooks (their rules are
a group's, not tried in a spare; a scanner traces from boot), --persist and staged mounts
(a directory of the run's), named sources (a group's), an image other than the host's (a
spare would keep it in use), and source kinds other than ``KINDS``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hvfs import deferred
from hvfs._sys.mountinfo import mounts_below
from hvfs.hypervisor import vmdirs
from hvfs.hypervisor.layout import Layout, ready_json, remove_tree
from hvfs.hypervisor.mounts import MountSpec, mount_table
from hvfs.hypervisor.pool import SourcePool
from hvfs.intercept.arch import Arch
from hvfs.intercept.backend import backend
from hvfs.intercept.driver import MAX_WORKERS, SeccompDriver
from hvfs.intercept.inflight import InflightTable
from hvfs.manager.view import Views, build_views
from hvfs.project.config import VmConfig
from hvfs.runtime import boot_vm
from hvfs.sandbox import launcher
from hvfs.sandbox.plan import BootPlan, Program
from hvfs.sandbox.userns import IdMap

if TYPE_CHECKING:
    from hvfs.intercept.ptrace import PtraceDriver

log = deferred.logger("hvfs.spares")
# A host mount's file (device, inode) and the mounts below it, as Recipe.identity finds them.
Identity = tuple[int, int, tuple[str, ...] | None] | None
DRIVERS = frozenset({"seccomp", "ptrace"})  # both start their threads with the spare, then wait for bind
KINDS = frozenset({"host", "image", "memory"})  # sources a spare may hold: made and released as the VM's own
MOST = 4  # configurations kept warm at once; the least recently asked for goes first
# Seconds a spare's making waits after the last run that asked: that run is not over when
# it asks (its start ends, then its command runs and its exit is told), and on two CPUs the
# making would slow it. Unless its configuration's runs come back to back (kept DEPTH deep)
# and none is ready: then it waits only for the runs starting (Spares.starting), as the
# next run would otherwise find none.
SETTLE = float(os.environ.get("HVFS_SPARE_SETTLE", "0.01"))
STARTING = frozenset({"run", "run_argv", "run_argv_checked", "up"})  # control operations that start VMs
# The longest a spare's making waits, at each of its steps, for the runs starting meanwhile
# (Spares.starting): runs that never stop coming must not keep every spare from being made.
YIELD = 0.5
# Spares kept of a configuration that a run found none of (runs back to back: the next
# spare is still being made), against one of any other: the second is made while the first waits.
DEPTH = 2


def enabled() -> bool:
    return os.environ.get("HVFS_SPARE", "1") != "0"


def idle_seconds() -> float:
    """How long a configuration nobody runs keeps its spare: HVFS_SPARE_IDLE, 60 by default."""
    try:
        return max(0.5, float(os.environ.get("HVFS_SPARE_IDLE", "60")))
    except ValueError:
        return 60.0


@dataclass(frozen=True)
class Recipe:
    """A configuration a spare is made for: what its views and pid 1's boot depend on."""

    vm: VmConfig
    strict: bool
    transport: str
    driver: str

    @functools.cached_property  # asked for several times per run; a repr of the whole configuration
    def key(self) -> str:
        vm = self.vm
        return repr((vm.image, vm.root, vm.read_only, vm.mounts, vm.limits, self.strict, self.transport, self.driver))

    def mounts(self) -> tuple[MountSpec, ...]:
        return (MountSpec("/", self.vm.root, self.vm.read_only), *self.vm.mounts)

    def identity(self) -> tuple[Identity, ...]:
        """Which host files the host mounts name now, and what is mounted below them in this
        manager's table (where the host's mounts propagate to it, one made since a spare's
        bind is not in that spare's): a spare whose differ is stale."""
        found: list[Identity] = []
        for mount in self.mounts():
            if mount.source.kind == "host":
                path = mount.source.options["path"]
                try:
                    st = os.stat(path)
                except OSError:
                    found.append(None)
                    continue
                below = mounts_below(path)
                found.append((st.st_dev, st.st_ino, tuple(sorted(below.mounts)) if below is not None else None))
        return tuple(found)


def recipe(vm: VmConfig, *, strict: bool, warmable: bool, transport: str, driver: str) -> Recipe | None:
    """The recipe of ``vm``'s configuration, or None when no spare may stand in for it
    (``warmable``: the caller has nothing of its own for the boot: no terminal, network,
    hooked services, scanner or hold)."""
    if not warmable or not enabled() or vm.tty or vm.persist or vm.staged or vm.commit or driver not in DRIVERS:
        return None
    found = Recipe(vm, strict, transport, driver)
    if any(m.source.kind not in KINDS or m.source.name is not None or _stored_image(m) for m in found.mounts()):
        return None
    return found


def _stored_image(mount: MountSpec) -> bool:
    """An image of the user's store: a spare would keep it in use (``hvfs image rm``
    refused, ``hvfs image ls`` saying so) for a run that may never come."""
    return mount.source.kind == "image" and mount.source.options.get("path") != "host"


@dataclass
class Spare:
    """A VM made ahead of the run that will take it: its views, its pid 1 and its driver."""

    key: str
    vmid: str
    views: Views
    process: launcher.VmProcess
    booted: launcher.Booted
    vm_root: int
    pool: SourcePool  # its sources, released when the VM that took it has ended
    identity: tuple[Identity, ...]
    driver: SeccompDriver | PtraceDriver | None = None  # its threads started, waiting for the run's bind
    made: float = field(default_factory=time.monotonic)

    def drop(self, layout: Layout) -> None:
        """End it and remove everything of it: processes, fds, sources, state."""
        self.process.kill()
        self.process.chan.close()
        if self.driver is not None:  # first: a traced pid 1's end is its tracer's to reap before its parent hears
            self.driver.stop()
        self.process.wait()
        if self.driver is not None:
            self.driver.close()  # the listener (or pid 1's pidfd) with it
        listener = (self.booted.listener,) if self.driver is None else ()
        for fd in (*listener, self.vm_root, self.views.rw_root, *self.views.images.values()):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pool.close()
        with contextlib.suppress(OSError):
            remove_tree(layout.vm(self.vmid))


class Spares:
    """The spares of one manager, and the thread that makes them."""

    def __init__(self, layout: Layout, idmap: IdMap, filter_program: Callable[[bool, str], bytes], arch: Arch) -> None:
        self.layout = layout
        self.arch = arch
        self.idmap = idmap
        self.filter_program = filter_program
        self.wait = 30.0  # the shim's bound (vmstart.vm_wait), set by the manager
        self._ready: dict[str, list[Spare]] = {}
        self._depth: dict[str, int] = {}  # spares kept of a configuration: 1, or DEPTH once one was missed
        self._wanted: dict[str, tuple[Recipe, float]] = {}  # key: recipe, when last asked for
        self._making: set[str] = set()  # vmids being made
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._asked_at = 0.0
        self._runs = 0  # runs starting now (starting()): the making waits for them
        self.made = 0
        self.taken = 0
        self.missed = 0  # runs that could have taken a spare and found none ready (started fresh)

    def take(self, wanted: Recipe, vmid: str) -> Spare | None:
        """The spare of ``wanted``'s configuration, if one is ready: now the VM ``vmid``,
        its state directory renamed to that VM's."""
        with self._cond:
            ready = self._ready.get(wanted.key)
            spare = ready.pop(0) if ready else None
            if spare is None:
                self.missed += 1
                if wanted.key in self._wanted:  # run again before its spare was ready
                    self._depth[wanted.key] = DEPTH
                return None
            # Fresh first, and renamed before the daemon can see it unclaimed: its sweep
            # spares a directory changed in the last seconds (daemon._sweep_vms).
            try:
                os.utime(self.layout.vm(spare.vmid))
                os.rename(self.layout.vm(spare.vmid), self.layout.vm(vmid))
                spare.vmid = vmid
                moved = True
            except OSError as e:
                log.warning("a spare VM could not be taken: %s", e)
                moved = False
        if not moved or spare.identity != wanted.identity():  # or a host directory was replaced since
            spare.drop(self.layout)
            with self._cond:
                self.missed += 1
            return None
        self.taken += 1
        return spare

    def starting(self, op: object) -> contextlib.AbstractContextManager[None]:
        """Around the manager's serving of the control operation ``op``: while one that
        starts VMs (``STARTING``) is served, from its request to its ``started``, the making
        of a spare, done on a thread of this process, waits at its next step rather than
        compete for the GIL and the CPUs with it (on two CPUs, a making that ran alongside
        made a back-to-back run take up to twice as long)."""
        return self._starting() if op in STARTING else contextlib.nullcontext()

    @contextlib.contextmanager
    def _starting(self) -> Iterator[None]:
        with self._cond:
            self._runs += 1
        try:
            yield
        finally:
            with self._cond:
                self._runs -= 1
                if not self._runs:
                    self._cond.notify_all()

    def _yield(self, key: str | None = None) -> None:
        """Wait (at most YIELD) until no run is starting: before a making and, for ``key``'s,
        between its steps, unless a run of ``key`` coming now would find no spare ready."""
        deadline = time.monotonic() + YIELD
        with self._cond:
            while self._runs and not self._closed and (left := deadline - time.monotonic()) > 0:
                if key is not None and self._urgent(key):
                    return
                self._cond.wait(timeout=left)

    def _urgent(self, key: str) -> bool:
        """Whether ``key``'s runs come back to back (kept DEPTH deep) and none is ready."""
        return self._depth.get(key, 1) == DEPTH and not self._ready.get(key)

    def want(self, wanted: Recipe) -> None:
        """``wanted``'s configuration was run: keep a spare of it (made in the background)."""
        with self._cond:
            if self._closed:
                return
            self._wanted.pop(wanted.key, None)
            self._asked_at = time.monotonic()
            self._wanted[wanted.key] = (wanted, self._asked_at)
            while len(self._wanted) > MOST:
                self._depth.pop(oldest := next(iter(self._wanted)), None)
                del self._wanted[oldest]
            vmdirs.keep(self.layout)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="hvfs-spares", daemon=True)
                self._thread.start()
            # The making waits for the runs starting: the last one's end wakes it
            # (_starting), not this, which would take the GIL from the run's start.
            if not self._runs:
                self._cond.notify()

    def statistics(self) -> dict[str, int]:
        """Spares ready now, made and taken since the manager started, and the runs that
        could have taken one and found none ready (hvfs manager status)."""
        with self._cond:
            ready = sum(map(len, self._ready.values()))
            return {"ready": ready, "made": self.made, "taken": self.taken, "missed": self.missed}

    def vmids(self) -> set[str]:
        """The state directories of the spares, made or being made (not the daemon's to sweep)."""
        with self._cond:
            return {s.vmid for ready in self._ready.values() for s in ready} | set(self._making)

    def close(self) -> None:
        """Drop every spare (the manager exits)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)
        with self._cond:
            spares, self._ready = [s for ready in self._ready.values() for s in ready], {}
        for spare in spares:
            spare.drop(self.layout)
        vmdirs.drop(self.layout)  # the VMs' directories kept for the next spares

    def _serve(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                idle = idle_seconds()
                for key in [k for k, (_, seen) in self._wanted.items() if now - seen > idle]:
                    del self._wanted[key]
                    self._depth.pop(key, None)
                if not self._wanted:  # no spares, none soon: no VM directories kept for them
                    vmdirs.drop(self.layout)
                stale = [s for k, ready in self._ready.items() if k not in self._wanted for s in ready]
                for spare in stale:
                    self._ready.pop(spare.key, None)
                todo = next(
                    (r for k, (r, _) in self._wanted.items() if len(self._ready.get(k, ())) < self._depth.get(k, 1)),
                    None,
                )
                settle = 0 if todo is not None and self._urgent(todo.key) else self._asked_at + SETTLE - now
                if todo is not None and settle > 0 and not stale:
                    self._cond.wait(timeout=settle)
                    continue
                vmid = os.urandom(6).hex()
                if todo is not None and not stale:
                    self._making.add(vmid)
            # Taken out of _ready above: dropped here whatever comes next, or nothing ends
            # them (their VMs end only when their sockets are collected, their shims left
            # unreaped and their fds open in the manager).
            for spare in stale:
                spare.drop(self.layout)
            if stale:  # what to make, and its settling, decided again without them
                continue
            if todo is None:
                with self._cond:
                    if not self._closed:
                        self._cond.wait(timeout=min(1.0, idle))
                continue
            self._yield()  # even with none ready: the start that found none goes first
            made = self._make(todo, vmid)
            with self._cond:
                self._making.discard(vmid)
                keep = made is not None and not self._closed and todo.key in self._wanted
                if keep and made is not None:
                    self._ready.setdefault(todo.key, []).append(made)
            if made is not None and not keep:
                made.drop(self.layout)
            if made is None:  # it fails as a run of it would: do not try again until one is run
                with self._cond:
                    self._wanted.pop(todo.key, None)

    def _make(self, wanted: Recipe, vmid: str) -> Spare | None:
        """A spare of ``wanted``, as the VM ``vmid``; between its steps it waits for the runs
        starting, unless one coming now would find none ready (then a making that waited at
        each step would fall behind runs back to back)."""
        staging = self.layout.staging(vmid)
        pool = SourcePool()
        views: Views | None = None
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            vmdirs.make(self.layout, vmid)
            identity = wanted.identity()
            views = build_views(mount_table(vmid, wanted.mounts(), pool), staging, None)
            self._yield(wanted.key)
            plan = BootPlan(
                name="",
                boot=views.boot,
                program=Program(("",), {}),
                filter_program=self.filter_program(wanted.strict, wanted.driver),
                traced=backend(wanted.driver).traces,
                stdio=(null, null, null),
                shim=self.layout.shim(vmid),
                wait=self.wait,
                spare=True,
            )
            process, booted, vm_root = boot_vm(plan, views, self.idmap)
            ready_json(self.layout.vm_file(vmid))  # the run's vm.json (vmstart.start), off its path
            self._yield(wanted.key)
        except Exception as e:
            log.warning("a spare VM could not be made: %s", e)
            if views is not None:
                views.release_boot()
                for fd in (views.rw_root, *views.images.values()):
                    os.close(fd)
            pool.close()
            with contextlib.suppress(OSError):
                remove_tree(self.layout.vm(vmid))
            return None
        finally:
            os.close(null)
        spare = Spare(wanted.key, vmid, views, process, booted, vm_root, pool, identity)
        try:  # the run's driver, its threads started now
            if backend(wanted.driver).traces:
                from hvfs.intercept.ptrace import PtraceDriver

                spare.driver = PtraceDriver(booted.listener, "spare", None, self.arch)
            else:  # the VM it becomes may outlive its manager: its table in flight
                spare.driver = SeccompDriver(booted.listener, "spare", None, self.arch,
                                             inflight=InflightTable(MAX_WORKERS), strict=wanted.strict)  # fmt: skip
            spare.driver.start()
        except Exception as e:
            log.warning("a spare VM's driver could not be started: %s", e)
            spare.drop(self.layout)
            return None
        self.made += 1
        return spare
