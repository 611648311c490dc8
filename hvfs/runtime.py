"""Starting VMs served by a manager in this process: what ``hvfs run`` and the daemon of
``hvfs up`` share.

A VM starts in four steps: its views are built in the manager's mount namespace; its
launcher, hvfs-init, is spawned and boots pid 1 into the boot view; the manager registers
the VM and serves its listener; then pid 1 is told to start the command, once its network
link exists.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hvfs.api import Transport
from hvfs.api.choice import transport_maker
from hvfs.intercept import served_stat
from hvfs.intercept.arch import Arch
from hvfs.intercept.backend import Driver, backend
from hvfs.manager.manager import Manager
from hvfs.manager.mounts import Mount
from hvfs.manager.sources.base import SourceError
from hvfs.manager.view import Views, build_views, ensure_path
from hvfs.manager.vm import VmContext, nodev
from hvfs.sandbox import launcher
from hvfs.sandbox.errors import SetupError
from hvfs.sandbox.plan import BootPlan, Program
from hvfs.sandbox.userns import IdMap
from hvfs.spec import UsageError

if TYPE_CHECKING:
    from hvfs.api.hooks import EventBus
    from hvfs.intercept.driver import SeccompDriver
    from hvfs.intercept.exec_tracer import ExecTracer
    from hvfs.intercept.ptrace import PtraceDriver

Starter = Callable[[BootPlan, IdMap], launcher.VmProcess]


@dataclass(frozen=True)
class VmSpec:
    """What a VM is made from: its mounts, its program and how it runs."""

    name: str
    mounts: tuple[Mount, ...]  # "/" among them
    program: Program
    strict: bool = False
    persist: str | None = None
    tty: bool = False
    # A scanner judges what this VM reads and runs: no read is left to the kernel, and
    # every exec is verified after the fact by an exec tracer.
    scanned: bool = False
    stdio: tuple[int, int, int] = (0, 1, 2)
    start: Mapping[str, Any] = field(default_factory=dict)  # for pid 1: network link, rlimits
    winsize: bytes | None = None  # of the terminal, with tty (else the size of this process's)
    hostname: str | None = None  # else the name


@dataclass
class RunningVm:
    """A VM that runs: its spec, its pid 1, its context in the manager and its driver."""

    spec: VmSpec
    process: launcher.VmProcess
    context: VmContext
    driver: Driver
    terminal: int | None  # the pty master, with a terminal
    tracer: ExecTracer | None = None  # while the VM is scanned
    published: dict[int, int] = field(default_factory=dict)  # resumed: the VM's port -> the host's listener

    @property
    def name(self) -> str:
        return self.spec.name

    def signal(self, signum: int) -> None:
        self.process.signal(signum)


def build(spec: VmSpec, staging: str) -> Views:
    """The VM's views, with its working directory made; errors the user can fix raise UsageError."""
    try:
        views = build_views(list(spec.mounts), staging, spec.persist)
    except SourceError as e:
        raise UsageError(str(e)) from None
    try:
        os.close(ensure_path(views.rw_root, spec.program.workdir))
    except (SourceError, OSError):
        views.release_boot()
        workdir = spec.program.workdir
        raise UsageError(f"-w {workdir}: not a directory in the VM; pick another working directory") from None
    return views


def start_vm(
    spec: VmSpec,
    views: Views,
    *,
    manager: Manager,
    idmap: IdMap,
    arch: Arch,
    program: bytes,
    start: Starter = launcher.start,
    before_start: Callable[[launcher.VmProcess], Mapping[str, Any]] | None = None,
    shim: str | None = None,
    outlives: bool = False,
    wait: float = 30.0,
    bus: EventBus | None = None,
    transport_kind: str = "inprocess",
    driver_kind: str = "seccomp",
) -> RunningVm:
    """Boot the VM on ``views``, serve it (with the services on ``bus``), and start its command.

    ``before_start`` runs once pid 1 is in its namespaces and before the command starts
    (the network link is made then); what it returns is added to pid 1's start message.
    The driver reaches the manager through the transport ``transport`` (hvfs.api.choice).
    """
    plan = BootPlan(
        name=spec.hostname or spec.name,
        boot=views.boot,
        program=spec.program,
        filter_program=program,
        traced=backend(driver_kind).traces,
        tty=spec.tty,
        winsize=spec.winsize if spec.winsize is not None else (_host_winsize() if spec.tty else None),
        stdio=spec.stdio,
        shim=shim,
        wait=wait,
    )
    vm, booted, vm_root = boot_vm(plan, views, idmap, start)
    return serve_vm(
        spec,
        views,
        vm,
        booted,
        vm_root,
        manager=manager,
        arch=arch,
        before_start=before_start,
        outlives=outlives,
        bus=bus,
        transport_kind=transport_kind,
        driver_kind=driver_kind,
    )


def boot_vm(
    plan: BootPlan, views: Views, idmap: IdMap, start: Starter = launcher.start
) -> tuple[launcher.VmProcess, launcher.Booted, int]:
    """Spawn the VM of ``plan`` until pid 1 is in its boot view with its filter: the
    process, its listener (and terminal), and an O_PATH fd of its root."""
    vm = start(plan, idmap)
    booted = vm.wait_booted()
    vm_root = os.open(f"/proc/{vm.init_pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    views.release_boot()  # the VM holds its own copy of the boot view now
    return vm, booted, vm_root


def serve_vm(
    spec: VmSpec,
    views: Views,
    vm: launcher.VmProcess,
    booted: launcher.Booted,
    vm_root: int,
    *,
    manager: Manager,
    arch: Arch,
    before_start: Callable[[launcher.VmProcess], Mapping[str, Any]] | None = None,
    outlives: bool = False,
    bus: EventBus | None = None,
    transport_kind: str = "inprocess",
    driver_kind: str = "seccomp",
    run: launcher.Run | None = None,
    ready: SeccompDriver | PtraceDriver | None = None,
) -> RunningVm:
    """Serve a booted VM and start its command (with ``run``, a spare's: see
    hvfs.hypervisor.spares; ``ready``, its driver, started with it and bound here)."""
    context = VmContext(
        spec.name,
        views.rw_root,
        vm_root,
        strict=spec.strict,
        socket_mounts=views.socket_mounts,
        own_mounts=views.own_mounts,
        images=views.images,
        sockets=manager.sockets,
        reads_judged=spec.scanned,
        bus=bus,
    )
    manager.add_vm(context)
    transport = transport_maker(transport_kind)(manager.handle_request)
    chosen = backend(driver_kind)
    driver: Driver
    if ready is not None:
        ready.bind(spec.name, transport)
        driver = ready
    else:
        driver = chosen.driver(booted.listener, spec.name, transport, arch, outlives=outlives, strict=spec.strict)
    tracer: ExecTracer | None = None
    if chosen.traces:
        from hvfs.intercept.ptrace import PtraceDriver

        assert isinstance(driver, PtraceDriver)
        if served_stat.writes_wanted() and nodev(context) and not context.reads_judged:
            quiet = bus.quiet if bus is not None else bytearray(b"\x01\x00")
            written = (views.rw_root, context.changes.c_note())
            served_here = served_stat.ServedStat(vm_root, quiet, False, None, written, context.own_mounts)
            served = driver.serve_stats(served_here)
            context.served_by_driver = served.counted if served is not None else None
        if spec.scanned:  # before START, so before any exec (a spare's: bound, tracing, no exec yet)
            driver.judge_execs()  # the driver traces already: it judges the execs itself
            tracer = driver.exec_tracer()
        try:
            if ready is None:
                driver.start()
        except OSError as e:
            hint = "the ptrace driver needs ptrace of the VM's processes: check /proc/sys/kernel/yama/ptrace_scope"
            raise SetupError("ptrace driver", e.strerror or str(e), hint) from None
    else:
        # Plain stats and opens served in the driver's C loop (strict), write-opens (every profile).
        writing = served_stat.writes_wanted() and nodev(context) and not context.reads_judged
        if (spec.strict or writing) and hasattr(driver, "serve_stats"):
            quiet = bus.quiet if bus is not None else bytearray(b"\x01\x00")
            audit = served_stat.audit_of(bus, spec.name) if bus is not None and spec.strict else None
            writes = (views.rw_root, context.changes.c_note()) if writing else None
            opens = spec.strict and not context.reads_judged
            served_here = served_stat.ServedStat(vm_root, quiet, opens, audit, writes, context.own_mounts)
            served = driver.serve_stats(served_here)
            context.served_by_driver = served.counted if served is not None else None
        if ready is None:
            driver.start()
        tracer = trace_execs(spec.name, vm.init_pid, transport) if spec.scanned else None
    settings = dict(spec.start)
    if before_start is not None:
        settings.update(before_start(vm))
    vm.go(settings, run)
    return RunningVm(spec=spec, process=vm, context=context, driver=driver, terminal=booted.terminal, tracer=tracer)


def _host_winsize() -> bytes | None:
    # termios and tty, for the few runs with a terminal, not at every manager's start
    from hvfs.sandbox import terminal

    return terminal.host_winsize()


def trace_execs(name: str, init_pid: int, transport: Transport) -> ExecTracer:
    """Trace the VM whose pid 1 is ``init_pid`` before its command starts, so that every
    one of its processes is (see hvfs.intercept.exec_tracer)."""
    from hvfs.intercept.exec_tracer import ExecTracer

    tracer = ExecTracer(init_pid, name, transport)
    try:
        tracer.start()
    except OSError as e:
        hint = "scanning needs ptrace of the VM's processes: check /proc/sys/kernel/yama/ptrace_scope (0 to 2 work)"
        raise SetupError("exec tracer", e.strerror or str(e), hint) from None
    return tracer
