"""``hvfs run``: one VM, served by a manager in this process.

The order matters: everything that forks (the id-map helper, the VM's launcher) happens
while this process is still single-threaded; the driver's worker threads start last.
"""

from __future__ import annotations

import json
import os
import signal
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from hvfs._sys import process
from hvfs.api import InProcessTransport
from hvfs.intercept.arch import Arch, native
from hvfs.intercept.driver import SeccompDriver
from hvfs.intercept.filter import FilterConfig, compile_filter
from hvfs.manager.manager import Manager
from hvfs.manager.mounts import Mount, system_mounts
from hvfs.manager.sources.base import Source, SourceError
from hvfs.manager.sources.host import HostSource
from hvfs.manager.sources.image import directory_image, host_image, tarball_image
from hvfs.manager.sources.memory import MemorySource
from hvfs.manager.view import Views, build_views, ensure_path
from hvfs.manager.vm import VmContext
from hvfs.sandbox import launcher, preflight, terminal, userns, users
from hvfs.sandbox.errors import SetupError
from hvfs.sandbox.plan import BootPlan
from hvfs.spec import RunSpec, UsageError
from hvfs.state import NameLock, cache_directory

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def image_source(image: str) -> Source:
    if image == "host":
        return host_image()
    if os.path.isdir(image):
        return directory_image(image)
    return tarball_image(image, os.path.join(cache_directory(), "images"))


def mount_table(spec: RunSpec, image: Source) -> list[Mount]:
    table = [Mount("/", image), *system_mounts()]
    table += [Mount(v.target, HostSource(v.source), v.readonly, v.sockets) for v in spec.volumes]
    table += [Mount(t.target, MemorySource(t.size, t.mode), t.readonly) for t in spec.tmpfs]
    return table


def check_stdio() -> None:
    for fd in (0, 1, 2):
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            continue
        if stat.S_ISDIR(mode):
            raise UsageError(f"fd {fd} is a directory; a VM must not inherit a host directory, redirect it")


class SignalForwarder:
    """Signals to hvfs go to the VM's pid 1, which passes them to the command. Installed
    before the VM starts, so that none is lost: early ones wait for the VM to exist."""

    def __init__(self) -> None:
        self.vm: launcher.VmProcess | None = None
        self.pending: list[int] = []

    def _handle(self, signum: int, frame: object) -> None:
        if self.vm is None:
            self.pending.append(signum)
        else:
            self.vm.signal(signum)

    def attach(self, vm: launcher.VmProcess) -> None:
        self.vm = vm
        for signum in self.pending:
            vm.signal(signum)
        self.pending.clear()


@contextmanager
def forwarding_signals() -> Iterator[SignalForwarder]:
    forwarder = SignalForwarder()
    previous = {s: signal.signal(s, forwarder._handle) for s in FORWARDED}
    try:
        yield forwarder
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run(spec: RunSpec) -> int:
    preflight.check_kernel()
    check_stdio()
    image = image_source(spec.image)
    arch = native()
    try:
        program = compile_filter(FilterConfig(trap_reads=spec.strict), arch)
    except ImportError:
        raise SetupError(
            "seccomp filter", "the pyseccomp package is missing", "install hvfs with its dependencies: scripts/setup"
        ) from None
    except RuntimeError as e:  # pyseccomp cannot find libseccomp
        raise SetupError("seccomp filter", str(e), "install libseccomp: apt-get install libseccomp2") from None
    except OSError as e:
        raise SetupError(
            "seccomp filter",
            f"libseccomp cannot build a user-notification filter ({e.strerror})",
            "seccomp user notification is unavailable here; hvfs needs Linux 5.14+ with CONFIG_SECCOMP_FILTER",
        ) from None
    if spec.persist:
        os.makedirs(spec.persist, exist_ok=True)
    lock = NameLock(spec.name)
    try:
        with forwarding_signals() as forwarder:
            return _run_locked(spec, image, program, arch, lock, forwarder)
    finally:
        lock.release()


def _run_locked(
    spec: RunSpec, image: Source, program: bytes, arch: Arch, lock: NameLock, forwarder: SignalForwarder
) -> int:
    idmap = userns.enter_manager_namespaces()
    ids = users.numeric(spec.user) if spec.user else None
    if ids is not None:
        idmap.check(ids[0], ids[0] if ids[1] is None else ids[1])
    views = _build(spec, image, lock.staging)
    try:
        return _boot_and_serve(spec, views, program, arch, idmap, forwarder)
    finally:
        views.release_boot()


def _boot_and_serve(
    spec: RunSpec, views: Views, program: bytes, arch: Arch, idmap: userns.IdMap, forwarder: SignalForwarder
) -> int:
    plan = BootPlan(
        name=spec.name,
        boot=views.boot,
        argv=spec.argv,
        env=dict(spec.env),
        workdir=spec.workdir,
        filter_program=program,
        tty=spec.tty,
        winsize=terminal.host_winsize() if spec.tty else None,
        user=spec.user,
        home_set=any(key == "HOME" for key in spec.env) and spec.env.get("HOME") != "/root",
    )
    vm = launcher.start(plan, idmap)
    booted = vm.wait_booted()
    forwarder.attach(vm)
    vm_root = os.open(f"/proc/{vm.init_pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    views.release_boot()  # the VM holds its own copy of the boot view now
    manager = Manager()
    context = VmContext(spec.name, views.rw_root, vm_root, strict=spec.strict, socket_mounts=views.socket_mounts)
    manager.add_vm(context)
    driver = SeccompDriver(booted.listener, spec.name, InProcessTransport(manager.handle_request), arch)
    driver.start()
    if booted.terminal is not None:
        pidfd = process.pidfd_open(vm.launcher_pid)
        try:
            terminal.relay(booted.terminal, interactive=spec.interactive, until=pidfd)
        finally:
            os.close(pidfd)
    code = vm.wait()
    driver.join(timeout=5)
    if spec.stats:
        _write_stats(spec.stats, context, driver)
    return code


def _build(spec: RunSpec, image: Source, staging: str) -> Views:
    try:
        views = build_views(mount_table(spec, image), staging, spec.persist)
    except SourceError as e:
        raise UsageError(str(e)) from None
    try:
        os.close(ensure_path(views.rw_root, spec.workdir))
    except (SourceError, OSError):
        views.release_boot()
        raise UsageError(f"-w {spec.workdir}: not a directory in the VM; pick another working directory") from None
    return views


def _write_stats(path: str, context: VmContext, driver: SeccompDriver) -> None:
    stats = context.statistics()
    document = {
        "vm": context.name,
        "requests": stats.requests,
        "served": stats.total("served"),
        "continued": stats.total("continued"),
        "failed": stats.total("failed"),
        "sync_wake_up": driver.sync_wake_up,
    }
    with open(path, "w") as f:
        json.dump(document, f, indent=2, sort_keys=True)
        f.write("\n")
