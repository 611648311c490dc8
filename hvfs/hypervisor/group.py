"""A group of VMs in the manager: a project of hvfs.toml, or the one VM of an ``hvfs run``.

A group has its own sources (a memory source mounted by two of its VMs is one file
system), its own services and its own network. Its VMs are started here, watched by a
thread each, and left, on their shims, to whatever manager comes after this one
(``resume``). Clients follow a group over their control connections: the owner of a run's
VM gets its exit status; a foreground ``hvfs up`` gets every line of output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hvfs.hypervisor import control, vmstart
from hvfs.hypervisor.layout import Layout, read_json, write_json
from hvfs.hypervisor.mounts import MountSpec, mount_table
from hvfs.hypervisor.pool import SourcePool
from hvfs.hypervisor.services import ServiceOptions, ServiceSet
from hvfs.hypervisor.spec import to_json
from hvfs.hypervisor.vmstart import Hypervisor
from hvfs.manager.manager import Manager
from hvfs.manager.mounts import Mount
from hvfs.manager.sources.registry import SourceSpec
from hvfs.project.config import Project, VmConfig
from hvfs.project.limits import LimitMaker, remove_recorded
from hvfs.runtime import RunningVm
from hvfs.sandbox import protocol
from hvfs.sandbox.errors import SetupError
from hvfs.sandbox.plan import Program
from hvfs.sandbox.protocol import Msg, Tag
from hvfs.sandbox.stdio import empty_input
from hvfs.services.base import service_event
from hvfs.services.describe import RESUME
from hvfs.spec import DEFAULT_PATH, command_problem

log = logging.getLogger("hvfs.group")
STOP_TIMEOUT = 10.0


@dataclass
class VmRecord:
    config: VmConfig
    vmid: str = ""
    running: RunningVm | None = None
    state: str = "created"
    code: int | None = None
    address: str | None = None
    started: float = 0.0
    start_ms: float = 0.0
    exited: threading.Event = field(default_factory=threading.Event)
    execs: dict[str, control.Connection] = field(default_factory=dict)  # exec id -> the asking client
    kept: list[int] = field(default_factory=list)  # fds this manager keeps for the VM's life
    stop_timer: threading.Timer | None = None

    def describe(self) -> dict[str, Any]:
        stats = self.running.context.statistics() if self.running else None
        return {
            "name": self.config.name,
            "state": self.state,
            "code": self.code,
            "pid": self.running.process.init_pid if self.running else None,
            "address": self.address,
            "image": self.config.image,
            "started": self.started,
            "start_ms": round(self.start_ms, 1),
            "requests": {o: stats.total(o) for o in ("served", "continued", "failed")} if stats else None,
        }


class Group:
    def __init__(
        self, gid: str, project: Project, hypervisor: Hypervisor, *, on_empty: Callable[[Group], None]
    ) -> None:
        self.gid = gid
        self.project = project
        self.hypervisor = hypervisor
        self.layout: Layout = hypervisor.layout
        self.on_empty = on_empty  # a run's VM has ended: the daemon forgets the group
        self.vms = {name: VmRecord(vm) for name, vm in project.vms.items()}
        self.followers: list[control.Connection] = []  # who hears output and exits
        self.owner: control.Connection | None = None  # a run's client: the VM ends with it
        self.owner_lost_at: float | None = None
        self.detached = project.kind != "run"
        self.stop_timeout = STOP_TIMEOUT
        self._ids = iter(range(1, 1 << 62))
        self._lock = threading.Lock()
        options = ServiceOptions.from_table(project.services, "/") if project.services else None
        self.services = ServiceSet(options) if options is not None and options.active else None
        self.trap_reads = bool(options and options.needs.trap_reads)
        self.manager = Manager()
        if self.services is not None:
            self.services.attach(self.manager)
        self.pool = SourcePool()  # each source released as the last VM using it is gone
        self.limits = LimitMaker(gid, record=self.layout.cgroups(gid))
        self.bridge: Any = None
        self.hosts: SourceSpec | None = None

    # -- life -----------------------------------------------------------------------

    def save(self) -> None:
        document = {
            "gid": self.gid,
            "project": to_json(self.project),
            "vms": {name: r.vmid for name, r in self.vms.items() if r.vmid},
            "addresses": {name: r.address for name, r in self.vms.items() if r.address},
            "started": {name: r.started for name, r in self.vms.items() if r.vmid and r.started},
            "stop_timeout": self.stop_timeout,
        }
        write_json(self.layout.group_file(self.gid), document)

    def start(self, *, stdio: tuple[int, int, int] | None = None, winsize: bytes | None = None) -> None:
        """Start every VM (a run's with the client's ``stdio``); raises SetupError,
        UsageError or SourceError for what the user can fix, after stopping what started."""
        os.makedirs(os.path.dirname(self.layout.log(self.gid, "x")), mode=0o700, exist_ok=True)
        if self.project.network.mode == "bridge":
            self.bridge = vmstart.make_bridge(self.project.network.subnet)
            for record in self.vms.values():
                if record.config.network:
                    record.address = self.bridge.reserve(record.config.name)
            self.hosts = SourceSpec("synth", {"content": self.bridge.hosts().decode()}, name=f"{self.gid}:hosts")
        self.save()
        # Every VM takes its sources before the first starts: one that exits at once must
        # not release a source that a VM after it mounts.
        tables = {}
        try:
            for vm in self.project.vms.values():
                hosts = (MountSpec("/etc/hosts", self.hosts, readonly=True),) if self.hosts and vm.network else ()
                tables[vm.name] = mount_table(vm.name, (MountSpec("/", vm.root), *vm.mounts, *hosts), self.pool)
            for record in self.vms.values():
                self._start(record, tables[record.config.name], stdio, winsize)
        except BaseException:
            self.stop_all(0)
            for name in self.vms:
                self.pool.drop(name)
            raise

    def add(
        self,
        vm: VmConfig,
        *,
        stdio: tuple[int, int, int],
        winsize: bytes | None,
        hold: Callable[[Any], None] | None = None,
        root_readonly: bool = False,
    ) -> VmRecord:
        """Start one more VM in this running group (a container of an OCI runtime's),
        with ``stdio`` and, with a terminal, ``winsize``; ``hold`` as vmstart.start's."""
        with self._lock:
            if vm.name in self.vms:
                raise LookupError(f"a VM named {vm.name!r} is already in {self.gid}")
            record = self.vms[vm.name] = VmRecord(vm)
            self.project = dataclasses.replace(self.project, vms={**self.project.vms, vm.name: vm})
        try:
            table = mount_table(vm.name, (MountSpec("/", vm.root, root_readonly), *vm.mounts), self.pool)
            self._start(record, table, stdio, winsize, hold=hold)
        except BaseException:
            self.pool.drop(vm.name)
            self.discard(vm.name)
            raise
        return record

    def discard(self, name: str) -> None:
        """Forget the VM ``name``, which has exited (or never started)."""
        with self._lock:
            self.vms.pop(name, None)
            self.project = dataclasses.replace(
                self.project, vms={n: v for n, v in self.project.vms.items() if n != name}
            )
        self.save()

    def _start(
        self,
        record: VmRecord,
        table: list[Mount],
        stdio: tuple[int, int, int] | None,
        winsize: bytes | None,
        hold: Callable[[Any], None] | None = None,
    ) -> None:
        began = time.monotonic()
        vm = record.config
        scanning = self.services is not None and self.services.needs.judged_reads
        output = None
        if stdio is None:
            output, write_end = os.pipe2(os.O_CLOEXEC)
            stdio = (empty_input(), write_end, write_end)
        record.vmid = os.urandom(6).hex()
        plan = self.limits.plan(f"{self.gid}-{vm.name}", vm.limits)
        try:
            running = vmstart.start(
                self.hypervisor,
                vm,
                vmid=record.vmid,
                mounts=table,
                program=self.program(vm, vm.command, {}),
                strict=vm.strict or self.trap_reads,
                scanned=scanning,
                stdio=stdio,
                winsize=winsize,
                limits=plan,
                network=(self.bridge, record.address) if self.bridge is not None and vm.network else None,
                output=output,
                manager=self.manager,
                bus=self.services.bus if self.services is not None else None,
                transport=self.project.transport,
                hold=hold,
            )
        except BaseException:
            if output is not None:
                os.close(output)
            raise
        finally:
            if output is not None:
                for fd in set(stdio):
                    os.close(fd)
        record.running, record.state, record.started = running, "running", time.time()
        record.start_ms = (time.monotonic() - began) * 1000
        self.save()
        self._follow(record, output)

    def _follow(self, record: VmRecord, output: int | None) -> None:
        name = record.config.name
        threads: list[tuple[Callable[..., None], tuple[Any, ...], str]] = [
            (self._watch, (record,), "wait"),
            (self._listen, (record,), "channel"),
        ]
        if output is not None:
            threads.append((self._pump, (record, output), "log"))
        for target, args, what in threads:
            threading.Thread(target=target, args=args, name=f"hvfs-{name}-{what}", daemon=True).start()

    def resume(self, document: dict[str, Any]) -> None:
        """Take back the VMs a manager before this one ran (their shims hold them)."""
        self.stop_timeout = float(document.get("stop_timeout", STOP_TIMEOUT))
        # A resumed project's bridge lives on in its namespace, which its VMs' shims hold;
        # no VM joins it later, so this manager needs no handle on it.
        for name, vmid in document.get("vms", {}).items():
            record = self.vms.get(name)
            if record is None:
                continue
            record.vmid = vmid
            record.address = document.get("addresses", {}).get(name)
            try:
                running, output, code = vmstart.resume(
                    self.hypervisor, record.config, vmid, self.manager, self.services
                )
            except (OSError, SetupError, protocol.ChannelClosed, ValueError) as e:
                log.warning("VM %s of %s could not be taken back: %s", name, self.gid, e)
                running, output, code = None, None, 128 + signal.SIGKILL
            if running is None:
                record.state, record.code = "exited", code
                record.exited.set()
                with contextlib.suppress(OSError):
                    shutil.rmtree(self.layout.vm(vmid))
                continue
            started = document.get("started", {}).get(name)
            record.running, record.state = running, "running"
            record.started = float(started) if isinstance(started, int | float) else time.time()
            if self.services is not None:  # the audit's mark of the gap
                self.services.bus.publish(service_event(name, 0, RESUME, (), "ok"))
            self._follow(record, output)
        if self.project.kind == "run" and all(r.state == "exited" for r in self.vms.values()):
            self.on_empty(self)

    # -- one VM ---------------------------------------------------------------------

    def program(self, vm: VmConfig, argv: tuple[str, ...], more_env: dict[str, str], **given: Any) -> Program:
        """What a VM runs: its command, or a process of ``hvfs exec`` (``more_env``, and
        ``workdir``/``user`` overriding the VM's). The environment starts clean, as
        docker's; HOME is the user's home unless given (by the VM or the exec)."""
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": vm.name, "HOME": "/root", **vm.environment, **more_env}
        if vm.tty:
            env.setdefault("TERM", "xterm")
        return Program(
            argv=argv,
            env=env,
            workdir=given.get("workdir") or vm.workdir,
            user=given.get("user") or vm.user,
            home_set=vm.home_set or "HOME" in more_env,
        )

    def stop(self, record: VmRecord, timeout: float) -> int | None:
        """SIGTERM to the command, then SIGKILL to the whole VM after ``timeout`` seconds."""
        if record.running is not None and record.state == "running":
            record.running.signal(signal.SIGTERM)
            if not record.exited.wait(timeout):
                record.running.process.kill()
                record.exited.wait(10)
        return record.code

    def stop_all(self, timeout: float) -> None:
        stoppers = [threading.Thread(target=self.stop, args=(r, timeout)) for r in self.vms.values()]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()

    def signal(self, name: str, signum: int) -> None:
        """Pass ``signum`` to a VM's command; a signal that asks it to end starts the stop
        clock: the VM is killed ``stop_timeout`` seconds later, whatever it does."""
        record = self.record(name)
        if record.running is None or record.state != "running":
            return
        record.running.signal(signum)
        if signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT) and record.stop_timer is None:
            record.stop_timer = threading.Timer(self.stop_timeout, record.running.process.kill)
            record.stop_timer.daemon = True
            record.stop_timer.start()

    def _watch(self, record: VmRecord) -> None:
        assert record.running is not None
        running = record.running
        code = running.process.wait()
        running.driver.join(timeout=5)
        running.driver.close()
        if running.tracer is not None:
            running.tracer.join(timeout=5)
        if record.stop_timer is not None:
            record.stop_timer.cancel()
        with contextlib.suppress(KeyError):
            self.manager.remove_vm(record.config.name)
        running.context.close()
        self.pool.drop(record.config.name)
        for fd in record.kept:
            with contextlib.suppress(OSError):
                os.close(fd)
        record.kept.clear()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.layout.vm(record.vmid))
        record.code, record.state = code, "exited"
        record.exited.set()
        message: dict[str, Any] = {"exited": record.config.name, "code": code}
        if self.project.kind == "run":
            if self.services is not None:
                self.services.close()  # the last closes saved, the last events out, before the numbers
            message["stats"] = self.statistics(record.config.name, running)
        self.tell(message)
        if all(r.state == "exited" for r in self.vms.values()) and self.project.kind == "run":
            self.on_empty(self)

    def _pump(self, record: VmRecord, output: int) -> None:
        """A project VM's output into its log file, and to the clients that follow it."""
        name = record.config.name
        pending = b""
        with open(self.layout.log(self.gid, name), "ab") as logfile:
            while True:
                try:
                    chunk = os.read(output, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                logfile.write(chunk)
                logfile.flush()
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    self.tell({"log": name, "line": line.decode(errors="replace")})
        os.close(output)
        if pending:
            self.tell({"log": name, "line": pending.decode(errors="replace")})

    def tell(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every client that follows the group; forget those gone."""
        with self._lock:
            followers = list(self.followers)
        for connection in followers:
            try:
                connection.send(message)
            except OSError:
                with self._lock, contextlib.suppress(ValueError):
                    self.followers.remove(connection)

    def _listen(self, record: VmRecord) -> None:
        """Pid 1's messages about the processes of ``hvfs exec``."""
        assert record.running is not None
        process = record.running.process
        while True:
            try:
                message, fds = process.receive()
            except (protocol.ChannelClosed, OSError):
                break
            exec_id = str(message.int(Tag.ID))
            if message.type == Msg.EXEC_STARTED:
                numbers = message.ints(Tag.FD)  # the pty master of ``hvfs exec -t``
                with contextlib.suppress(OSError):
                    fds += process.take(numbers)
                if numbers:
                    process.taken(numbers)
                client = record.execs.get(exec_id)
                if client is not None:
                    with contextlib.suppress(OSError):
                        client.send({"started": message.int(Tag.PID)}, fds or None)
            elif message.type == Msg.EXEC_EXITED:
                client = record.execs.pop(exec_id, None)
                if client is not None:
                    with contextlib.suppress(OSError):
                        client.send({"exited": message.int(Tag.CODE)})
            for fd in fds:
                os.close(fd)
        for client in record.execs.values():  # the VM ended: so did its exec'd processes
            with contextlib.suppress(OSError):
                client.send({"exited": 128 + signal.SIGKILL})
        record.execs.clear()

    # -- requests -------------------------------------------------------------------

    def record(self, name: object) -> VmRecord:
        if name not in self.vms:
            what = "project " + self.project.name if self.project.kind == "project" else "this group"
            raise LookupError(f"no VM named {name!r} in {what}; VMs: {', '.join(self.vms)}")
        return self.vms[str(name)]

    def exec(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        record = self.record(message.get("vm"))
        if record.state != "running" or record.running is None:
            raise LookupError(f"VM {record.config.name} is not running")
        program = self.program(
            record.config,
            tuple(message["argv"]),
            dict(message.get("env", {})),
            workdir=message.get("workdir"),
            user=message.get("user"),
        )
        problem = command_problem(list(program.argv), program.env)
        if problem:  # pid 1 takes a command of a bounded size in one message
            raise LookupError(f"exec in {record.config.name}: {problem}")
        if connection.hung_up():  # the client gave up waiting (this manager was stopped, or slow)
            log.warning("exec in %s not started: its client has gone", record.config.name)
            return
        exec_id = next(self._ids)
        record.execs[str(exec_id)] = connection
        winsize = bytes.fromhex(message["winsize"]) if message.get("winsize") else None
        record.running.process.exec(exec_id, program, tty=bool(message.get("tty")), winsize=winsize, stdio=fds)

    def describe(self) -> list[dict[str, Any]]:
        return [r.describe() for r in self.vms.values()]

    def statistics(self, name: str, running: RunningVm) -> dict[str, Any]:
        """A run's statistics for --stats: requests per operation and outcome, services."""
        stats = running.context.statistics()
        document: dict[str, Any] = {
            "vm": name,
            "requests": stats.requests,
            "served": stats.total("served"),
            "continued": stats.total("continued"),
            "failed": stats.total("failed"),
            **running.driver.statistics(),
        }
        if running.tracer is not None:
            document["exec_tracer"] = dataclasses.asdict(running.tracer.statistics())
        if self.services is not None:
            document["services"] = self.services.statistics()
        return document

    def remove(self) -> None:
        """Everything the group left: services finished, cgroups, bridge, state."""
        self.pool.close()
        if self.services is not None:
            self.services.close()
        self.manager.close()
        self.limits.cleanup()
        with contextlib.suppress(OSError):
            remove_recorded(self.layout.cgroups(self.gid), self.gid)
        if self.bridge is not None:
            self.bridge.close()
        shutil.rmtree(self.layout.group(self.gid), ignore_errors=True)


def saved(layout: Layout, gid: str) -> dict[str, Any]:
    document: dict[str, Any] = read_json(layout.group_file(gid))
    return document
