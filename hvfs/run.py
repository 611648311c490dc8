"""``hvfs run``: one VM, served by a manager in this process.

The order matters: entering the manager's namespaces forks (the id-map helper), so it
happens while this process is still single-threaded; the VM's launcher is spawned
without a fork of Python, and the stdio relays and the driver's threads start after.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from hvfs._sys import process
from hvfs.hypervisor.mounts import MountSpec, mount_table, prepare_mounts
from hvfs.hypervisor.pool import SourcePool
from hvfs.intercept.arch import Arch, native
from hvfs.manager.manager import Manager
from hvfs.private_dirs import private_directory
from hvfs.runtime import RunningVm, VmSpec, build, compile_program, start_vm
from hvfs.sandbox import launcher, preflight, terminal, userns, users
from hvfs.sandbox.plan import Program
from hvfs.sandbox.stdio import Stdio
from hvfs.spec import RunSpec, UsageError
from hvfs.state import NameLock

if TYPE_CHECKING:
    from hvfs.hypervisor.services import ServiceSet

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def check_stdio() -> None:
    for fd in (0, 1, 2):
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            continue
        if stat.S_ISDIR(mode):
            raise UsageError(f"fd {fd} is a directory; a VM must not inherit a host directory, redirect it")


TERMINATING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class SignalForwarder:
    """Signals to hvfs go to the VM's pid 1, which passes them to the command. Installed
    before the VM starts, so that none is lost: early ones wait for the VM to exist.

    A signal that asks to end (INT, TERM, HUP, QUIT) also starts a clock: a VM still
    running ``stop_timeout`` seconds later is killed, whatever its processes do, as
    ``docker stop`` does."""

    def __init__(self, stop_timeout: float) -> None:
        self.vm: launcher.VmProcess | None = None
        self.pending: list[int] = []
        self.stop_timeout = stop_timeout
        self._deadline: threading.Timer | None = None

    def _handle(self, signum: int, frame: object) -> None:
        if self.vm is None:
            self.pending.append(signum)
        else:
            self._forward(self.vm, signum)

    def _forward(self, vm: launcher.VmProcess, signum: int) -> None:
        vm.signal(signum)
        if signum in TERMINATING and self._deadline is None:
            self._deadline = threading.Timer(self.stop_timeout, vm.kill)
            self._deadline.daemon = True
            self._deadline.start()

    def attach(self, vm: launcher.VmProcess) -> None:
        self.vm = vm
        for signum in self.pending:
            self._forward(vm, signum)
        self.pending.clear()

    def detach(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()


@contextmanager
def forwarding_signals(stop_timeout: float) -> Iterator[SignalForwarder]:
    forwarder = SignalForwarder(stop_timeout)
    previous = {s: signal.signal(s, forwarder._handle) for s in FORWARDED}
    try:
        yield forwarder
    finally:
        forwarder.detach()
        for s, handler in previous.items():
            signal.signal(s, handler)


def run(spec: RunSpec) -> int:
    preflight.check_kernel()
    check_stdio()
    arch = native()
    services = None
    sources = SourcePool()
    mounts = prepare_mounts((MountSpec("/", spec.image), *spec.mounts))  # a tarball unpacks here, as the user
    if spec.services:
        from hvfs.hypervisor.services import ServiceSet

        services = ServiceSet(spec.services)
    vm_spec = VmSpec(
        name=spec.name,
        mounts=tuple(mount_table(spec.name, mounts, sources)),
        program=Program(
            argv=spec.argv,
            env=dict(spec.env),
            workdir=spec.workdir,
            user=spec.user,
            home_set=any(key == "HOME" for key in spec.env) and spec.env.get("HOME") != "/root",
        ),
        strict=spec.strict or bool(spec.services and spec.services.needs.trap_reads),
        persist=spec.persist,
        tty=spec.tty,
        scanned=bool(spec.services and spec.services.needs.judged_reads),
        start={"memfd_noexec": 2} if spec.services and spec.services.needs.judged_reads else {},
    )
    program = compile_program(vm_spec.strict, arch)
    if spec.persist:  # the VM's root is built from it: no one else may put files there
        private_directory(spec.persist, "--persist", "give a directory only you may write in", ours=False)
    lock = NameLock(spec.name)
    try:
        with forwarding_signals(spec.stop_timeout) as forwarder:
            return _run_locked(spec, vm_spec, program, arch, lock, forwarder, services)
    finally:
        if services is not None:
            services.close()
        lock.release()
        sources.close()


def _run_locked(
    spec: RunSpec,
    vm_spec: VmSpec,
    program: bytes,
    arch: Arch,
    lock: NameLock,
    forwarder: SignalForwarder,
    services: ServiceSet | None,
) -> int:
    idmap = userns.enter_manager_namespaces()
    ids = users.numeric(spec.user) if spec.user else None
    if ids is not None:
        idmap.check(ids[0], ids[0] if ids[1] is None else ids[1])
    views = build(vm_spec, lock.staging)
    manager = Manager()
    if services is not None:
        services.attach(manager)
    stdio = Stdio(input=not vm_spec.tty)
    try:
        vm = start_vm(dataclasses.replace(vm_spec, stdio=stdio.fds), views, manager=manager, idmap=idmap,
                      arch=arch, program=program, bus=services.bus if services else None)  # fmt: skip
    finally:
        views.release_boot()
        stdio.handed_over()
    forwarder.attach(vm.process)
    if vm.terminal is not None:
        pidfd = process.pidfd_open(vm.process.launcher_pid)
        try:
            terminal.relay(vm.terminal, interactive=spec.interactive, until=pidfd)
        finally:
            os.close(pidfd)
    code = vm.process.wait()
    stdio.finish()
    vm.driver.join(timeout=5)
    if vm.tracer is not None:
        vm.tracer.join(timeout=5)
    if services is not None:
        services.close()  # save the last closes and deliver the last events before statistics are read
    if spec.stats:
        try:
            _write_stats(spec.stats, vm, services)
        except OSError as e:  # checked before the VM started: it changed since
            raise UsageError(f"--stats {spec.stats}: cannot write: {e.strerror}; give another path") from None
    return code


def _write_stats(path: str, vm: RunningVm, services: ServiceSet | None) -> None:
    context, driver = vm.context, vm.driver
    stats = context.statistics()
    document: dict[str, object] = {
        "vm": context.name,
        "requests": stats.requests,
        "served": stats.total("served"),
        "continued": stats.total("continued"),
        "failed": stats.total("failed"),
        "sync_wake_up": driver.sync_wake_up,
    }
    if services is not None:
        document["services"] = services.statistics()
    if vm.tracer is not None:
        document["exec_tracer"] = dataclasses.asdict(vm.tracer.statistics())
    with open(path, "w") as f:
        json.dump(document, f, indent=2, sort_keys=True)
        f.write("\n")
