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
import functools
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from hvfs import cluster, deferred
from hvfs.hypervisor import control, execs, ordering, output_pump, records, restart, staging, telling, vmdirs, vmstart
from hvfs.hypervisor.health import Health, ProbeWaiter
from hvfs.hypervisor.layout import Layout, remove_tree, write_json
from hvfs.hypervisor.mounts import MountSpec, mount_table
from hvfs.hypervisor.pool import SourcePool
from hvfs.hypervisor.records import VmRecord
from hvfs.hypervisor.services import ServiceOptions, ServiceSet
from hvfs.hypervisor.spec import to_json
from hvfs.hypervisor.threads import spawn
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
from hvfs.sandbox.stdio import empty_input
from hvfs.services.base import service_event
from hvfs.spec import DEFAULT_PATH, command_problem

log = deferred.logger("hvfs.group")
STOP_TIMEOUT = 10.0
DRAIN_TIMEOUT = 5.0  # seconds a VM's exit waits for its output (a process it left may hold the pipe)


class Group:
    def __init__(
        self,
        gid: str,
        project: Project,
        hypervisor: Hypervisor,
        *,
        on_empty: Callable[[Group], None],
        document: dict[str, Any] | None = None,
        given: Mapping[str, int] | None = None,
    ) -> None:
        """``document``: the JSON that ``project`` was read from (spec.from_json), if any,
        saved as it is in group.json (a manager that takes the group back reads it the same
        way) rather than made again: a third of a millisecond of a run's start."""
        self.gid = gid
        self.project = project
        self.hypervisor = hypervisor
        self.layout: Layout = hypervisor.layout
        self.on_empty = on_empty  # a run's VM has ended: the daemon forgets the group
        self.vms = {name: VmRecord(vm) for name, vm in project.vms.items()}
        self.followers: list[control.Connection] = []  # who hears output and exits
        self.debug = False  # its client ran with HVFS_DEBUG: it hears tracebacks (hvfs.hypervisor.telling)
        self.owner: control.Connection | None = None  # a run's client: the VM ends with it
        self.owner_lost_at: float | None = None
        self.detached = project.kind != "run"
        self.autoremove = False  # a detached run's group goes as its VM exits (hvfs run -d --rm)
        # closed before a run's exit is told: its published ports (the client may run again on them)
        self.closing: list[Callable[[], None]] = []
        self.stop_timeout = STOP_TIMEOUT
        self._ids = iter(range(1, 1 << 62))
        self._lock, self._saving = threading.Lock(), threading.Lock()
        self.removed = threading.Event()  # its state removed (the daemon's _remove): a run may take its gid
        self._saved_project: tuple[Project | None, dict[str, Any]] = (project, document) if document else (None, {})
        self.starting = threading.Lock()  # one VM starts at a time; their dependencies are awaited at once
        options = ServiceOptions.from_table(project.services, "/", given) if project.services else None
        self.services = ServiceSet(options, given) if options is not None and options.active else None
        self.trap_reads = bool(options and options.needs.trap_reads)
        self.pool = SourcePool()  # each source released as the last VM using it is gone
        member = cluster.current()
        shares = member.shares(project, self.pool.local_path) if member is not None else []
        if shares and self.services is None:
            self.services = ServiceSet(ServiceOptions())  # a bus for the cluster's events alone
        self.manager = Manager()
        if self.services is not None:
            self.services.attach(self.manager)
        if member is not None and self.services is not None:
            member.attach(gid, self.services.bus, shares)
        self.limits = LimitMaker(gid, record=self.layout.cgroups(gid))
        self.bridge: Any = None
        self.hosts: SourceSpec | None = None
        self.review: staging.Review | None = None  # a --review waiting for its client's answer
        self.outputs: dict[str, int] = {}  # hvfs run --diff's stderr, --export's file: written at exit
        self.exit_details = True  # a run's statistics and changes told with its exit (not to the native front)

    # -- life -----------------------------------------------------------------------

    def save(self) -> None:
        with self._saving:  # VMs' watchers, restarts and starts save at once
            self._save_locked()

    def _save_locked(self) -> None:
        document = {
            "gid": self.gid,
            "project": self._project_json(),
            "vms": {name: r.vmid for name, r in self.vms.items() if r.vmid},
            "addresses": {name: r.address for name, r in self.vms.items() if r.address},
            "started": {name: r.started for name, r in self.vms.items() if r.vmid and r.started},
            "stop_timeout": self.stop_timeout,
            "detached": self.detached,
            "autoremove": self.autoremove,
            "codes": {n: r.code for n, r in self.vms.items() if r.state == "exited"},  # kept for ps -a
            "restarts": {n: [r.restarts.count, r.restarts.stopped] for n, r in self.vms.items() if r.restarts.count},
        }
        write_json(self.layout.group_file(self.gid), document)

    def _project_json(self) -> dict[str, Any]:  # made again when it changed (add, discard)
        project, document = self._saved_project
        if project is not self.project:
            document = to_json(self.project)
            self._saved_project = (self.project, document)
        return document

    def start(self, *, stdio: tuple[int, int, int] | None = None, winsize: bytes | None = None) -> None:
        """Start every VM (a run's with the client's ``stdio``); raises SetupError,
        UsageError or SourceError for what the user can fix, after stopping what started."""
        vmdirs.make_group(self.layout, self.gid)  # logs/ with a log (_follow)
        if self.project.network.mode != "none":  # a project's own, or a shared one (hypervisor.networks)
            self.bridge = self.bridge or vmstart.make_bridge(self.project.network.subnet)
            for record in self.vms.values():
                if record.config.network:
                    record.address = self.bridge.reserve(record.config.name)
            self.hosts = SourceSpec("synth", {"content": self.bridge.hosts().decode()}, name=f"{self.gid}:hosts")
        if self.project.kind != "run":  # a run's is written once, with its VM (_start): a file made is 0.5 ms on ext4
            self.save()
        ordering.start_vms(self, list(self.vms), stdio=stdio, winsize=winsize)

    def table(self, record: VmRecord) -> list[Mount]:
        """The mount table of ``record``'s VM, its sources taken under its pool key."""
        vm = record.config
        hosts = (MountSpec("/etc/hosts", self.hosts, readonly=True),) if self.hosts and vm.network else ()
        root = MountSpec("/", vm.root, vm.read_only)
        return mount_table(record.pool_key, (root, *vm.mounts, *hosts), self.pool)

    def launch(
        self,
        record: VmRecord,
        table: list[Mount],
        stdio: tuple[int, int, int] | None = None,
        winsize: bytes | None = None,
    ) -> None:
        """Start ``record``'s VM, with ``table`` taken for it (hvfs.hypervisor.ordering, restart)."""
        self._start(record, table, stdio, winsize)

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
                services=self.services,
                transport=self.project.transport,
                driver=self.project.driver or "seccomp",
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
        record.code = None
        record.exited.clear()
        record.start_ms = (time.monotonic() - began) * 1000
        self.save()
        self._follow(record, output)
        if vm.healthcheck is not None:
            record.health = Health(vm.healthcheck, functools.partial(self._probe, record), running.process.init_pid)
            record.health.start()

    def _follow(self, record: VmRecord, output: int | None) -> None:
        name = record.config.name
        threads: list[tuple[Callable[..., None], tuple[Any, ...], str]] = [(self._watch, (record,), "wait")]
        if output is not None:
            record.drained.clear()
            log_file = self.layout.log(self.gid, record.config.name)
            os.makedirs(os.path.dirname(log_file), mode=0o700, exist_ok=True)
            threads.append((output_pump.pump, (record.config.name, output, log_file, self.tell, record.drained), "log"))
        else:
            record.drained.set()
        for target, args, what in threads:  # kept threads: a thread's start waits for it to run
            spawn(target, args, f"hvfs-{name}-{what}")

    def resume(self, document: dict[str, Any]) -> None:
        """Take back the VMs a manager before this one ran (their shims hold them)."""
        self.stop_timeout = float(document.get("stop_timeout", STOP_TIMEOUT))
        # A resumed project's bridge lives on in its namespace, which its VMs' shims hold;
        # no VM joins it later, so this manager needs no handle on it.
        for name, vmid in document.get("vms", {}).items():
            record = self.vms.get(name)
            if record is None:
                continue
            record.vmid, record.address = vmid, document.get("addresses", {}).get(name)
            if document.get("codes", {}).get(name) is not None:  # exited before: kept (hvfs run -d)
                record.state, record.code = "exited", int(document["codes"][name])
                record.exited.set()
                continue
            with contextlib.suppress(TypeError, ValueError):
                count, stopped = document.get("restarts", {}).get(name, (0, False))
                record.restarts.count, record.restarts.stopped = int(count), bool(stopped)
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
                    remove_tree(self.layout.vm(vmid))
                continue
            started = document.get("started", {}).get(name)
            record.running, record.state = running, "running"
            record.started = float(started) if isinstance(started, int | float) else time.time()
            if self.services is not None:  # the audit's mark of the gap
                from hvfs.services.describe import RESUME  # with the events, which most VMs never make

                self.services.bus.publish(service_event(name, 0, RESUME, (), "ok"))
            self._follow(record, output)
        if self.project.kind == "run" and all(r.state == "exited" for r in self.vms.values()):
            self.on_empty(self)

    # -- one VM ---------------------------------------------------------------------
    def program(self, vm: VmConfig, argv: tuple[str, ...], more_env: dict[str, str], **given: Any) -> Program:
        """What a VM runs: its command, or a process of ``hvfs exec`` (``more_env``, and
        ``workdir``/``user`` overriding the VM's). The environment starts clean, as
        docker's; HOME is the user's home unless given (by the VM or the exec)."""
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": vm.hostname or vm.name, "HOME": "/root", **vm.environment, **more_env}
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
        """SIGTERM to the command, then SIGKILL to the whole VM after ``timeout`` seconds;
        no restart policy starts it again."""
        restart.cancel(self, record)
        if record.running is not None and record.state == "running":
            record.running.signal(signal.SIGTERM)
            if not record.exited.wait(timeout):
                record.running.process.kill()
                record.exited.wait(10)
        return record.code

    def stop_all(self, timeout: float, records: list[VmRecord] | None = None) -> None:
        """Stop every VM (of ``records``) at once."""
        chosen = list(self.vms.values()) if records is None else records
        stoppers = [threading.Thread(target=self.stop, args=(r, timeout)) for r in chosen]
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
        code = running.process.wait(reap=False, hang_up=False)  # hung up in _release, reaped once told
        running.driver.join(timeout=5)
        running.driver.close()
        if running.tracer is not None:
            running.tracer.join(timeout=5)
        if record.stop_timer is not None:
            record.stop_timer.cancel()
        self.manager.deliver_closes()  # the VM's last closes, while its services hear them
        if self.services is not None:
            self.services.bus.flush()  # its events too, while its files can still be read, and by its exit
        if record.health is not None:
            record.health.stop()
        with contextlib.suppress(KeyError):
            self.manager.remove_vm(record.config.name)
        self.review = staging.Review(self.owner, self.gid, code)  # before its scratch goes:
        settled = staging.settle(running.context, record.config, code, self.review.ask)
        staging.write_outputs(running.context, self.outputs)
        used = record.pool_key
        again = restart.plan(self, record, code)  # takes its sources again before they are released
        # Before the exit is told, not after: in runs back to back, a release after it ran
        # alongside the next run's start and made it ~1 ms slower (hyperfine, 2026-12-06).
        self._release(record, running, used)
        record.telling = True  # still running to an up's reply until its exit is told
        again = restart.settle(self, record, code, again)
        ended = all(r.state == "exited" for r in self.vms.values()) and self.project.kind == "run"
        # A group that goes with its VM (daemon._empty): its client hears the exit first
        going = ended and ((self.owner is not None and not self.detached) or self.autoremove)
        if not going:
            self._forget(record)
        record.exited.set()
        message: dict[str, Any] = {"exited": record.config.name, "code": code}
        record.drained.wait(DRAIN_TIMEOUT)  # its last lines before its exit, as it wrote them
        if again is not None:
            message["restarting"] = True
            again.start()
        if self.project.kind == "run":
            if self.services is not None:
                self._leave_cluster()
                self.services.close()  # the last closes saved, the last events out, before the numbers
            if self.exit_details:
                message["stats"] = records.run_statistics(record.config.name, running, self.services)
                message["changes"], message["commit"] = running.context.changes.document(staging.SHOWN), settled
        if ended:
            for close in self.closing:
                close()
        telling.flush()
        self.tell(message)
        record.telling = False
        running.process.reap()
        if going:
            self._forget(record, save=False)
        if ended:
            self.on_empty(self)

    def _release(self, record: VmRecord, running: RunningVm, used: str) -> None:
        """Close the exited VM's views and let its sources (taken under ``used``) go."""
        running.context.close()  # with the shim's copies still open: its end unmounts them
        running.process.hang_up()
        self.pool.drop(used, running.process.let_mounts_go)
        for fd in record.kept:
            with contextlib.suppress(OSError):
                os.close(fd)
        record.kept.clear()

    def _forget(self, record: VmRecord, *, save: bool = True) -> None:
        """Remove the exited VM's state; save its code (ps -a, the next manager)."""
        try:
            vmdirs.remove(self.layout, record.vmid)
        except OSError as e:  # the daemon sweeps it later
            log.warning("VM %s: its state %s stays for now: %s", record.config.name, e.filename, e.strerror)
        if save:
            with contextlib.suppress(OSError):  # the group is being removed: its state with it
                self.save()

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

    # -- requests -------------------------------------------------------------------

    def record(self, name: object) -> VmRecord:
        if name not in self.vms:
            what = "project " + self.project.name if self.project.kind == "project" else "this group"
            raise LookupError(f"no VM named {name!r} in {what}; VMs: {', '.join(self.vms)}")
        return self.vms[str(name)]

    def _probe(self, record: VmRecord, argv: tuple[str, ...], stdio: list[int], waiter: ProbeWaiter) -> None:
        """Start a health probe in ``record``'s VM, as an ``hvfs exec`` (health.Launcher)."""
        running = record.running
        if running is None or record.state != "running":
            raise LookupError(f"VM {record.config.name} is not running")
        exec_id = next(self._ids)
        record.execs[str(exec_id)] = waiter
        execs.listen_once(record)
        running.process.exec(exec_id, self.program(record.config, argv, {}), tty=False, winsize=None, stdio=stdio)

    def exec(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        record = self.record(message.get("vm"))
        if record.state != "running" or record.running is None:
            raise LookupError(f"VM {record.config.name} is not running")
        argv, env = tuple(message["argv"]), dict(message.get("env", {}))
        program = self.program(record.config, argv, env, workdir=message.get("workdir"), user=message.get("user"))
        problem = command_problem(list(program.argv), program.env)
        if problem:  # pid 1 takes a command of a bounded size in one message
            raise LookupError(f"exec in {record.config.name}: {problem}")
        if connection.hung_up():  # the client gave up waiting (this manager was stopped, or slow)
            log.warning("exec in %s not started: its client has gone", record.config.name)
            return
        exec_id = next(self._ids)
        record.execs[str(exec_id)] = connection
        execs.listen_once(record)
        winsize = bytes.fromhex(message["winsize"]) if message.get("winsize") else None
        record.running.process.exec(exec_id, program, tty=bool(message.get("tty")), winsize=winsize, stdio=fds)

    def describe(self) -> list[dict[str, Any]]:
        return [r.describe() for r in self.vms.values()]

    def remove(self) -> None:
        """Everything the group left: services finished, cgroups, bridge, state."""
        self.pool.close()
        if self.services is not None:
            self.manager.deliver_closes()
            self._leave_cluster()
            self.services.close()
        self.manager.close()
        self.limits.cleanup()
        with contextlib.suppress(OSError):
            remove_recorded(self.layout.cgroups(self.gid), self.gid)
        if self.bridge is not None:
            self.bridge.close()
        vmdirs.remove_group(self.layout, self.gid)  # or kept, emptied, for the next group

    def _leave_cluster(self) -> None:
        member = cluster.current()
        if member is not None:
            member.detach(self.gid)  # its last events out, on its bus's subscription
