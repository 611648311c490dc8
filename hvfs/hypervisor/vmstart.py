"""Starting one VM in the manager, and taking one back from its shim after a restart.

What a VM needs that only this manager holds is deposited with its shim right after it
starts (native/init/shim.c): the seccomp listener, the writable view, the manager's end
of pid 1's channel, the table of requests in flight, the VM's output pipe and the fds of
its image file systems. What the kernel cannot tell a new manager (pids, mount ids) is
written to vm.json. ``resume`` puts both together again.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hvfs._sys import process as sysproc
from hvfs._sys.abi import CLONE_NEWNET
from hvfs.api.choice import transport_maker
from hvfs.hypervisor import kept_outputs, spares, staging, vmdirs
from hvfs.hypervisor.layout import Layout, read_json, write_json
from hvfs.hypervisor.services import ServiceSet
from hvfs.intercept.arch import Arch
from hvfs.intercept.backend import DEFAULT, backend
from hvfs.manager.manager import Manager
from hvfs.manager.mounts import Mount
from hvfs.manager.sources.base import SourceError
from hvfs.manager.view import ensure_path
from hvfs.manager.vm import VmContext
from hvfs.project.config import VmConfig
from hvfs.project.limits import LimitMaker, LimitPlan
from hvfs.runtime import RunningVm, VmSpec, build, serve_vm, start_vm, trace_execs
from hvfs.sandbox import launcher, protocol, users
from hvfs.sandbox.plan import Program
from hvfs.sandbox.protocol import Message, Msg, Tag
from hvfs.sandbox.userns import IdMap
from hvfs.spec import UsageError

if TYPE_CHECKING:  # the bus is made for the VMs whose services want one
    from hvfs.api.hooks import EventBus


def vm_wait() -> float:
    """Seconds a VM's requests wait for a manager that went away before they fail with
    EIO (ten times that, and its shim ends it): HVFS_VM_WAIT, 30 by default."""
    try:
        return max(0.1, float(os.environ.get("HVFS_VM_WAIT", "30")))
    except ValueError:
        return 30.0


@dataclass
class Hypervisor:
    """What every group of one manager shares."""

    layout: Layout
    idmap: IdMap
    arch: Arch
    _programs: dict[tuple[str, bool], bytes] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    spares: spares.Spares = field(init=False)

    def __post_init__(self) -> None:
        self.spares = spares.Spares(
            self.layout, self.idmap, lambda strict, driver: self.filter_program(strict, driver), self.arch
        )
        self.spares.wait = vm_wait()

    def filter_program(self, strict: bool, driver: str = DEFAULT) -> bytes:
        with self._lock:
            if (driver, strict) not in self._programs:
                self._programs[driver, strict] = backend(driver).filter_program(strict, self.arch)
            return self._programs[driver, strict]


def start(
    hypervisor: Hypervisor,
    vm: VmConfig,
    *,
    vmid: str,
    mounts: list[Mount],
    program: Program,
    strict: bool,
    scanned: bool,
    stdio: tuple[int, int, int],
    winsize: bytes | None,
    limits: LimitPlan,
    network: tuple[Any, str | None] | None,
    output: int | None,
    manager: Manager | None = None,
    services: ServiceSet | None = None,
    transport: str = "inprocess",
    driver: str = DEFAULT,
    hold: Callable[[launcher.VmProcess], None] | None = None,
) -> RunningVm:
    """Start ``vm``, leave with its shim what must outlive this manager, and note the rest.
    ``hold``, if given, runs last before the command starts (an OCI runtime's ``create``
    returns there, and its ``start`` lets it go on)."""
    bus = services.bus if services is not None else None
    layout = hypervisor.layout
    ids = users.numeric(vm.user) if vm.user else None
    if ids is not None:
        hypervisor.idmap.check(ids[0], ids[0] if ids[1] is None else ids[1])
    spec = VmSpec(
        vm.name,
        tuple(mounts),
        program,
        strict=strict,
        persist=vm.persist,
        tty=vm.tty,
        scanned=scanned,
        stdio=stdio,
        start={"memfd_noexec": 2} if scanned else {},
        winsize=winsize,
        hostname=vm.hostname,
    )

    def before_start(process: launcher.VmProcess) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        LimitMaker.enter(limits, process.init_pid)
        if limits.rlimits:
            settings["rlimits"] = limits.rlimits
        if network is not None:
            settings["network"] = network[0].attach(vm.name, process.init_pid)
        if hold is not None:
            hold(process)
        return settings

    assert manager is not None
    warm = spares.recipe(
        vm,
        strict=strict,
        warmable=not scanned and network is None and hold is None and (bus is None or not bus.hooked),
        transport=transport,
        driver=driver,
    )
    spare = hypervisor.spares.take(warm, vmid) if warm is not None else None
    if spare is not None:
        running = _take(hypervisor, spare, spec, manager, before_start, bus, transport, driver)
        staged: dict[str, int] = {}
    else:
        running, staged = _start_fresh(hypervisor, vm, vmid, spec, manager, before_start, bus, transport, driver)
    running.context.staged = staged
    deposit = {
        "root": running.context.rw_root,
        "chan": running.process.chan.fileno(),
        **{f"driver:{role}": fd for role, fd in running.driver.kept().items()},
        **{f"image:{mount}": fd for mount, fd in running.context.images.items()},
        **{f"staged:{target}": fd for target, fd in staged.items()},
        **(kept_outputs.roles(services.kept) if services is not None else {}),
    }
    if output is not None:
        deposit["output"] = output
    if network is not None:
        deposit["netns"] = network[0].netns
    running.process.deposit(deposit, moved=layout.shim(vmid) if spare is not None else None)
    write_json(
        layout.vm_file(vmid),
        {
            "vmid": vmid,
            "name": vm.name,
            "launcher": running.process.launcher_pid,
            "init": running.process.init_pid,
            "strict": strict,
            "scanned": scanned,
            "transport": transport,
            "driver": driver,
            "own_mounts": sorted(running.context.own_mounts),
            "socket_mounts": sorted(running.context.socket_mounts),
        },
    )
    if warm is not None:
        hypervisor.spares.want(warm)  # the next run's, made in the background
    return running


def _take(
    hypervisor: Hypervisor,
    spare: spares.Spare,
    spec: VmSpec,
    manager: Manager,
    before_start: Callable[[launcher.VmProcess], dict[str, Any]],
    bus: EventBus | None,
    transport: str,
    driver: str,
) -> RunningVm:
    """Start the run of ``spec`` in ``spare``, which is the run's from now on: its state
    directory becomes the run's, its sources are released when it ends."""
    layout = hypervisor.layout
    try:
        try:
            os.close(ensure_path(spare.views.rw_root, spec.program.workdir))
        except (SourceError, OSError):
            workdir = spec.program.workdir
            raise UsageError(f"-w {workdir}: not a directory in the VM; pick another working directory") from None
        spare.process.finished.append(spare.pool.close)
        run = launcher.Run(spec.program, spec.hostname or spec.name, spec.stdio)
        return serve_vm(spec, spare.views, spare.process, spare.booted, spare.vm_root, manager=manager,
                        arch=hypervisor.arch, before_start=before_start, outlives=True, bus=bus,
                        transport_kind=transport, driver_kind=driver, run=run, ready=spare.driver)  # fmt: skip
    except BaseException:
        with contextlib.suppress(KeyError):
            manager.remove_vm(spec.name)
        spare.drop(layout)
        raise


def _start_fresh(
    hypervisor: Hypervisor,
    vm: VmConfig,
    vmid: str,
    spec: VmSpec,
    manager: Manager,
    before_start: Callable[[launcher.VmProcess], dict[str, Any]],
    bus: EventBus | None,
    transport: str,
    driver: str,
) -> tuple[RunningVm, dict[str, int]]:
    layout = hypervisor.layout
    vmdirs.make(layout, vmid)
    views = build(spec, layout.staging(vmid))
    staged = {}
    try:
        for target in vm.staged:  # reachable only now, before the staging mount is let go
            staged[target] = os.open(
                staging.upper_of(layout, vmid, target), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
            )
        running = start_vm(
            spec,
            views,
            manager=manager,
            idmap=hypervisor.idmap,
            arch=hypervisor.arch,
            program=hypervisor.filter_program(spec.strict, driver),
            before_start=before_start,
            shim=layout.shim(vmid),
            outlives=True,
            wait=vm_wait(),
            bus=bus,
            transport_kind=transport,
            driver_kind=driver,
        )
    except BaseException:
        for fd in staged.values():
            os.close(fd)
        raise
    finally:
        views.release_boot()
    return running, staged


def withdraw(layout: Layout, vmid: str, launcher_pid: int) -> tuple[socket.socket, dict[str, int]]:
    """Link to the shim of ``vmid`` and take what was deposited there."""
    link = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        link.connect(layout.shim(vmid))
        pid = int.from_bytes(link.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)[:4], "little")
        if pid != launcher_pid:
            raise ValueError(f"the shim of {vmid} is pid {pid}, not {launcher_pid}")
        protocol.send(link, Message(Msg.WITHDRAW))
        while True:
            message, fds = protocol.receive(link)
            if message.type == Msg.DEPOSITED:
                break
            for fd in fds:
                os.close(fd)
        roles = [os.fsdecode(data.rstrip(b"\0")) for tag, data in message.records if tag == Tag.ROLE]
    except BaseException:
        link.close()
        raise
    return link, dict(zip(roles, fds, strict=True))


def resume(
    hypervisor: Hypervisor, vm: VmConfig, vmid: str, manager: Manager, services: ServiceSet | None
) -> tuple[RunningVm | None, int | None, int | None]:
    """Take back the VM ``vmid`` from its shim: (the running VM, its output pipe, None),
    or (None, None, its exit status) when it ended meanwhile."""
    layout = hypervisor.layout
    record = read_json(layout.vm_file(vmid))
    try:
        link, fds = withdraw(layout, vmid, int(record["launcher"]))
    except (FileNotFoundError, ConnectionRefusedError):
        try:
            with open(layout.exit_file(vmid)) as f:
                return None, None, int(f.read().strip())
        except (OSError, ValueError):
            return None, None, 137
    init_pid = int(record["init"])
    process = launcher.VmProcess(
        launcher_pid=int(record["launcher"]),
        init_pid=init_pid,
        shim=link,
        chan=socket.socket(fileno=fds.pop("chan")),
        ours=False,
    )
    vm_root = os.open(f"/proc/{init_pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    images = {int(role.split(":", 1)[1]): fds.pop(role) for role in list(fds) if role.startswith("image:")}
    staged = {role.split(":", 1)[1]: fds.pop(role) for role in list(fds) if role.startswith("staged:")}
    context = VmContext(
        vm.name,
        fds.pop("root"),
        vm_root,
        strict=bool(record["strict"]),
        socket_mounts=frozenset(record["socket_mounts"]),
        own_mounts=frozenset(record["own_mounts"]),
        images=images,
        staged=staged,
        sockets=manager.sockets,
        reads_judged=bool(record["scanned"]),
        bus=services.bus if services is not None else None,
    )
    manager.add_vm(context)
    transport = transport_maker(str(record.get("transport", "inprocess")))(manager.handle_request)
    kept = {role.removeprefix("driver:"): fds.pop(role) for role in list(fds) if role.startswith("driver:")}
    driver = backend(str(record.get("driver", DEFAULT))).resume(
        kept, vm.name, transport, hypervisor.arch, init_pid, strict=bool(record["strict"])
    )
    tracer = trace_execs(vm.name, init_pid, transport) if record["scanned"] else None
    fds.pop("netns", None)
    output = fds.pop("output", None)
    published = {int(role.split(":")[2]): fds.pop(role) for role in list(fds) if role.startswith("publish:")}
    for fd in fds.values():
        os.close(fd)
    spec = VmSpec(vm.name, (), Program(tuple(vm.command), {}))
    running = RunningVm(spec=spec, process=process, context=context, driver=driver, terminal=None, tracer=tracer,
                        published=published)  # fmt: skip
    return running, output, None


class _Bridge:
    """A project's bridge, in a network namespace of its own (see hvfs.project.network).

    Network namespaces are per thread, and pyroute2 opens its netlink sockets in the
    thread that uses them: so one thread of the manager lives in the bridge's namespace
    and makes every change to it, as the others ask."""

    def __init__(self, subnet: str) -> None:
        self._calls: queue.Queue[tuple[Callable[[Any], Any], queue.Queue[tuple[bool, Any]]] | None] = queue.Queue()
        ready: queue.Queue[tuple[bool, Any]] = queue.Queue()
        threading.Thread(target=self._serve, args=(subnet, ready), name="hvfs-bridge", daemon=True).start()
        ok, value = ready.get()
        if not ok:
            raise value
        self.netns: int = value

    def _serve(self, subnet: str, ready: queue.Queue[tuple[bool, Any]]) -> None:
        try:
            sysproc.unshare(CLONE_NEWNET)
            netns = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            from hvfs.project.network import Bridge

            bridge = Bridge(subnet)
        except BaseException as e:
            ready.put((False, e))
            return
        ready.put((True, netns))
        while (call := self._calls.get()) is not None:
            function, answer = call
            try:
                answer.put((True, function(bridge)))
            except BaseException as e:
                answer.put((False, e))
        bridge.close()

    def _call(self, function: Callable[[Any], Any]) -> Any:
        answer: queue.Queue[tuple[bool, Any]] = queue.Queue()
        self._calls.put((function, answer))
        ok, value = answer.get()
        if not ok:
            raise value
        return value

    def reserve(self, vm: str) -> str:
        address: str = self._call(lambda bridge: bridge.reserve(vm))
        return address

    def attach(self, vm: str, init_pid: int) -> dict[str, Any]:
        link: dict[str, Any] = self._call(lambda bridge: bridge.attach(vm, init_pid))
        return link

    def hosts(self) -> bytes:
        text: bytes = self._call(lambda bridge: bridge.hosts())
        return text

    def forget(self, vm: str) -> None:
        """Take ``vm`` out of the hosts (its address is not given again)."""
        self._call(lambda bridge: bridge.entries.pop(vm, None))

    def close(self) -> None:
        self._calls.put(None)
        os.close(self.netns)


def make_bridge(subnet: str) -> _Bridge:
    return _Bridge(subnet)


def shims_alive(layout: Layout) -> int | None:
    """The pid of a live shim of this manager's VMs, if one is left (its user namespace's
    parent is the one a restarted manager joins)."""
    try:
        names = os.listdir(layout.vms)
    except FileNotFoundError:
        return None
    for vmid in names:
        try:
            pid = int(read_json(layout.vm_file(vmid))["launcher"])
            os.kill(pid, 0)
        except (OSError, ValueError, KeyError):
            continue
        if os.path.exists(layout.shim(vmid)):
            return pid
    return None
