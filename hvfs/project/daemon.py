"""The manager of a project: runs every VM of an hvfs.toml, serves their files, and
answers the CLI (``hvfs ps``, ``exec``, ``stop``, ``down``) over its control socket.

Entering the namespaces forks (the id-map helper), so it happens before the first thread;
VMs are started with posix_spawn, which is safe from a process with threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from hvfs.hypervisor.mounts import MountSpec, mount_table, prepare_mounts
from hvfs.hypervisor.pool import SourcePool
from hvfs.hypervisor.services import ServiceOptions, ServiceSet
from hvfs.intercept.arch import native
from hvfs.manager.manager import Manager
from hvfs.manager.mounts import Mount
from hvfs.manager.sources.base import SourceError
from hvfs.manager.sources.registry import SourceSpec
from hvfs.project import control
from hvfs.project.config import Project, VmConfig
from hvfs.project.limits import LimitMaker
from hvfs.project.state import ProjectState
from hvfs.runtime import RunningVm, VmSpec, build, compile_program, start_vm
from hvfs.sandbox import launcher, preflight, protocol, stdio, userns
from hvfs.sandbox.errors import SetupError
from hvfs.sandbox.plan import Program
from hvfs.sandbox.protocol import Msg, Tag
from hvfs.spec import DEFAULT_PATH, UsageError, command_problem

log = logging.getLogger("hvfs.project")
STOP_TIMEOUT = 10.0


@dataclass
class VmRecord:
    config: VmConfig
    running: RunningVm | None = None
    state: str = "starting"
    code: int | None = None
    address: str | None = None
    started: float = 0.0
    start_ms: float = 0.0
    exited: threading.Event = field(default_factory=threading.Event)
    execs: dict[str, control.Connection] = field(default_factory=dict)  # exec id -> the asking client

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


class Daemon:
    def __init__(self, project: Project, state: ProjectState, *, foreground: bool, out: TextIO) -> None:
        self.project = project
        self.state = state
        self.foreground = foreground
        self.out = out
        self.vms: dict[str, VmRecord] = {name: VmRecord(vm) for name, vm in project.vms.items()}
        self.done = threading.Event()
        self.interrupted = False
        self._ids = itertools.count(1)
        self._width = max(len(n) for n in project.vms)
        self._print_lock = threading.Lock()
        self.server: control.ControlServer | None = None
        self.limits: LimitMaker | None = None
        self.services: ServiceSet | None = None
        self.trap_reads = False
        self.sources = SourcePool()  # released as the last VM using each is gone

    # -- life -----------------------------------------------------------------------

    def run(self, ready: Callable[[str | None], None]) -> int:
        """Start the project and serve it until ``hvfs down`` (or, in the foreground, until
        every VM has exited or the user interrupts). ``ready`` hears None once every VM
        runs, or the one-line error that stopped the start."""
        if not self.state.claim(self.project.file):
            ready(f"project {self.project.name} is already up")
            return 125
        try:
            self._start_everything()
        except (UsageError, SetupError, SourceError, OSError) as e:
            message = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            ready(message)
            self._shutdown()
            return 125
        except Exception as e:  # a bug: still leave nothing behind
            log.exception("project %s failed to start", self.project.name)
            ready(f"internal error: {e!r}; run 'hvfs up' (in the foreground) with HVFS_DEBUG=1 for details")
            self._shutdown()
            return 125
        ready(None)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        while not self.done.wait(1.0):
            pass
        self._shutdown()
        return 130 if self.interrupted else 0

    def _on_signal(self, signum: int, frame: object) -> None:
        self.interrupted = signum == signal.SIGINT
        self.done.set()

    def _start_everything(self) -> None:
        preflight.check_kernel()
        arch = native()
        options = ServiceOptions.from_table(self.project.services, self.project.directory)
        self.services = ServiceSet(options) if options.active else None
        self.trap_reads = options.needs.trap_reads
        stricts = {vm.strict or self.trap_reads for vm in self.project.vms.values()}
        programs = {strict: compile_program(strict, arch) for strict in stricts}
        mounts = {vm.name: prepare_mounts((MountSpec("/", vm.root), *vm.mounts)) for vm in self.project.vms.values()}
        bridge_wanted = self.project.network.mode == "bridge"
        idmap = userns.enter_manager_namespaces(network=bridge_wanted)
        self.manager = Manager()
        if self.services is not None:
            self.services.attach(self.manager)
        self.bridge = None
        self.hosts: SourceSpec | None = None
        if bridge_wanted:
            try:
                from hvfs.project.network import Bridge
            except ImportError:
                hint = "install hvfs with its dependencies: scripts/setup"
                raise SetupError("network", "pyroute2 is missing", hint) from None
            self.bridge = Bridge(self.project.network.subnet)
            for record in self.vms.values():
                if record.config.network:
                    record.address = self.bridge.reserve(record.config.name)
            self.hosts = SourceSpec(
                "synth", {"content": self.bridge.hosts().decode()}, name=f"{self.project.name}:hosts"
            )
        self.limits = LimitMaker(self.project.name, record=self.state.cgroups)
        self.server = control.ControlServer(self.state.control, self._handle)
        # Every VM takes its sources before the first starts: one that exits at once must
        # not release a source that a VM after it mounts.
        tables = {}
        for vm in self.project.vms.values():
            hosts = (MountSpec("/etc/hosts", self.hosts, readonly=True),) if self.hosts and vm.network else ()
            tables[vm.name] = mount_table(vm.name, (*mounts[vm.name], *hosts), self.sources)
        for record in self.vms.values():
            strict = record.config.strict or self.trap_reads
            self._start(record, tables[record.config.name], idmap, arch, programs[strict])

    def _start(self, record: VmRecord, table: list[Mount], idmap: userns.IdMap, arch: Any, program: bytes) -> None:
        vm = record.config
        began = time.monotonic()
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": vm.name, "HOME": "/root", **vm.environment}
        command = Program(vm.command, env, vm.workdir, vm.user, home_set="HOME" in vm.environment)
        output_read, output_write = os.pipe2(os.O_CLOEXEC)
        null = stdio.empty_input()
        scanning = self.services is not None and self.services.needs.judged_reads
        spec = VmSpec(
            vm.name,
            tuple(table),
            command,
            strict=vm.strict or self.trap_reads,
            stdio=(null, output_write, output_write),
            scanned=scanning,
            start={"memfd_noexec": 2} if scanning else {},
        )
        os.makedirs(self.state.staging(vm.name), mode=0o700, exist_ok=True)
        assert self.limits is not None
        plan = self.limits.plan(vm.name, vm.limits)

        def before_start(process: launcher.VmProcess) -> dict[str, Any]:
            settings: dict[str, Any] = {}
            LimitMaker.enter(plan, process.init_pid)
            if plan.rlimits:
                settings["rlimits"] = plan.rlimits
            if self.bridge is not None and vm.network:
                settings["network"] = self.bridge.attach(vm.name, process.init_pid)
            return settings

        views = build(spec, self.state.staging(vm.name))
        try:
            running = start_vm(
                spec,
                views,
                manager=self.manager,
                idmap=idmap,
                arch=arch,
                program=program,
                before_start=before_start,
                bus=self.services.bus if self.services else None,
            )
        finally:
            views.release_boot()
            os.close(output_write)
            os.close(null)
        record.running, record.state, record.started = running, "running", time.time()
        record.start_ms = (time.monotonic() - began) * 1000
        for target, name in ((self._pump, "log"), (self._watch, "wait"), (self._listen, "channel")):
            args = (record, output_read) if target == self._pump else (record,)
            threading.Thread(target=target, args=args, name=f"hvfs-{vm.name}-{name}", daemon=True).start()

    def _shutdown(self) -> None:
        running = [r for r in self.vms.values() if r.state == "running"]
        stoppers = [threading.Thread(target=self._stop, args=(r, STOP_TIMEOUT)) for r in running]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        if self.server is not None:
            self.server.close()
        if self.limits is not None:
            self.limits.cleanup()
        if self.services is not None:
            self.services.close()
        self.sources.close()
        self.state.remove()

    # -- one VM ---------------------------------------------------------------------

    def _stop(self, record: VmRecord, timeout: float) -> int | None:
        """SIGTERM to the command, then SIGKILL to the whole VM after ``timeout`` seconds."""
        if record.running is not None and record.state == "running":
            record.running.signal(signal.SIGTERM)
            if not record.exited.wait(timeout):
                record.running.process.kill()
                record.exited.wait(10)
        return record.code

    def _watch(self, record: VmRecord) -> None:
        assert record.running is not None
        code = record.running.process.wait()
        record.running.driver.join(timeout=5)
        with contextlib.suppress(KeyError):
            self.manager.remove_vm(record.config.name)
        record.running.context.close()
        self.sources.drop(record.config.name)
        record.code, record.state = code, "exited"
        record.exited.set()
        self._say(record.config.name, f"exited with code {code}")
        if self.foreground and all(r.state == "exited" for r in self.vms.values()):
            self.done.set()

    def _pump(self, record: VmRecord, output: int) -> None:
        """The VM's output into its log file, and, in the foreground, to the terminal."""
        pending = b""
        with open(self.state.log(record.config.name), "ab") as logfile:
            while chunk := os.read(output, 65536):
                logfile.write(chunk)
                logfile.flush()
                if self.foreground:
                    lines = (pending + chunk).split(b"\n")
                    pending = lines.pop()
                    for line in lines:
                        self._say(record.config.name, line.decode(errors="replace"))
        os.close(output)
        if pending and self.foreground:
            self._say(record.config.name, pending.decode(errors="replace"))

    def _say(self, vm: str, line: str) -> None:
        if self.foreground:
            with self._print_lock:
                self.out.write(f"{vm:<{self._width}} | {line}\n")
                self.out.flush()

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

    # -- the control socket ---------------------------------------------------------

    def _handle(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        op = message.get("op")
        try:
            if op == "ps":
                connection.send({"vms": [r.describe() for r in self.vms.values()], "manager": self._manager_info()})
            elif op == "stop":
                record = self._record(message)
                code = self._stop(record, float(message.get("timeout", STOP_TIMEOUT)))
                connection.send({"ok": True, "code": code})
            elif op == "down":
                timeout = float(message.get("timeout", STOP_TIMEOUT))
                threading.Thread(target=self._down, args=(connection, timeout), daemon=True).start()
            elif op == "exec":
                self._exec(self._record(message), message, fds, connection)
            else:
                connection.send({"error": f"unknown operation {op!r}"})
        except LookupError as e:
            connection.send({"error": str(e.args[0])})
        finally:
            for fd in fds:
                os.close(fd)

    def _record(self, message: dict[str, Any]) -> VmRecord:
        name = message.get("vm")
        if name not in self.vms:
            raise LookupError(f"no VM named {name!r} in project {self.project.name}; VMs: {', '.join(self.vms)}")
        return self.vms[str(name)]

    def _down(self, connection: control.Connection, timeout: float) -> None:
        for record in self.vms.values():
            self._stop(record, timeout)
        with contextlib.suppress(OSError):
            connection.send({"ok": True})
        self.done.set()

    def _exec(self, record: VmRecord, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        if record.state != "running" or record.running is None:
            raise LookupError(f"VM {record.config.name} is not running")
        exec_id = next(self._ids)
        vm = record.config
        given = {**vm.environment, **message.get("env", {})}
        program = Program(
            argv=tuple(message["argv"]),
            env={"PATH": DEFAULT_PATH, "HOSTNAME": vm.name, "HOME": "/root", **given},
            workdir=message.get("workdir") or vm.workdir,
            user=message.get("user") or vm.user,
            home_set="HOME" in given,
        )
        problem = command_problem(list(program.argv), program.env)
        if problem:  # pid 1 takes a command of a bounded size in one message
            raise LookupError(f"exec in {vm.name}: {problem}")
        if connection.hung_up():  # the client gave up waiting (this manager was stopped, or slow)
            log.warning("exec in %s not started: its client has gone", vm.name)
            return
        record.execs[str(exec_id)] = connection
        winsize = bytes.fromhex(message["winsize"]) if message.get("winsize") else None
        record.running.process.exec(exec_id, program, tty=bool(message.get("tty")), winsize=winsize, stdio=fds)

    def _manager_info(self) -> dict[str, Any]:
        rss = 0
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        return {"pid": os.getpid(), "file": self.project.file, "rss_kb": rss,
                "sources": dataclasses.asdict(self.sources.statistics())}  # fmt: skip
