"""The manager: one per user (one per host as root), started on demand by the front ends
(``hvfs.hypervisor.client``), stopped when it has had nothing to do for a while.

It serves every VM of its user: each ``hvfs run`` and each project of ``hvfs up`` is a
group (``hvfs.hypervisor.group``). It may be killed or restarted (an upgrade) without
losing a VM: a manager that starts finds the VMs of the one before in its state directory
and takes them back from their shims (``Group.resume``), joining the user namespace they
were made in; their pending requests waited meanwhile, for a bounded time.

Entering the namespaces forks (the id-map helper) or needs a single thread (setns of a
user namespace), so it happens first; every thread starts after.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any

from hvfs import _native as hot_path
from hvfs import cluster, dataclass_cache, deferred, machine, private_dirs, state
from hvfs._sys import spawner
from hvfs.errors import HvfsError
from hvfs.hypervisor import control, front_exit, frontrun, kept_outputs, telling, threads, vmdirs, vmstart
from hvfs.hypervisor.change_ops import ChangeOps
from hvfs.hypervisor.frontrun import FrontOps
from hvfs.hypervisor.group import Group
from hvfs.hypervisor.layout import Layout, read_json, remove_tree, write_json
from hvfs.hypervisor.lazy_parts import LazyParts
from hvfs.hypervisor.publish import Forwarder
from hvfs.hypervisor.spec import from_json, group_id
from hvfs.hypervisor.version import code_id
from hvfs.intercept.arch import native
from hvfs.project.config import Project
from hvfs.runtime import RunningVm
from hvfs.sandbox import preflight, userns
from hvfs.spec import UsageError

log = deferred.logger("hvfs.daemon")
# What a manager giving way lets finish
_CHANGING = frozenset({"run", "run_argv", "run_argv_checked", "up", "stop", "down"})
CHANGES_GRACE = 30.0  # seconds
SWEEP_AGE = 10.0  # seconds
RECONNECT = 30.0  # seconds a run's VM waits for its client to come back after a restart


def idle_timeout() -> float:
    """Seconds with no group and no client before the manager exits (HVFS_MANAGER_IDLE)."""
    try:
        return max(0.0, float(os.environ.get("HVFS_MANAGER_IDLE", "300")))
    except ValueError:
        return 300.0


class Daemon(ChangeOps, FrontOps, LazyParts):
    def __init__(self, layout: Layout, *, ready_fd: int | None = None) -> None:
        self.layout = layout
        self.ready_fd = ready_fd  # the client that started this manager waits for one line there
        self.groups: dict[str, Group] = {}
        self.lock = threading.Lock()
        self.changing = 0  # operations in progress that start or stop VMs
        self.done = threading.Event()
        self.stop_vms = False
        self.clients = 0
        self.last_busy = time.monotonic()
        self.hypervisor: vmstart.Hypervisor | None = None
        self.up_locks: dict[str, threading.Lock] = {}
        self.forwarders: dict[str, Forwarder] = {}  # a run's published ports, by group
        self.cluster: cluster.Member | None = None  # HVFS_CLUSTER's (hvfs.cluster)

    # -- life -----------------------------------------------------------------------

    def serve(self) -> int:
        try:
            return self._serve()
        except (HvfsError, OSError) as e:
            message = f"{e.strerror} ({e.filename})" if isinstance(e, OSError) and e.strerror else str(e)
            self._ready(f"error: {message}")
            log.error("the manager could not start: %s", message)
            return 125
        except BaseException as e:
            self._ready(f"error: internal error: {e!r}; see {self.layout.root}/manager.log")
            raise

    def _ready(self, line: str) -> None:
        if self.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.ready_fd, f"{line}\n".encode())
                os.close(self.ready_fd)
            self.ready_fd = None

    def _serve(self) -> int:
        os.chdir("/")
        os.makedirs(self.layout.groups, mode=0o700, exist_ok=True)
        os.makedirs(self.layout.vms, mode=0o700, exist_ok=True)
        lock = os.open(self.layout.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._ready("ready")  # another manager serves this state directory
            return 0
        preflight.check_kernel()
        hot_path.announce()  # one line when the drivers serve through the Python path unasked
        shim = vmstart.shims_alive(self.layout)
        rootless = os.geteuid() != 0
        state.decide_user()  # the user's own cache and data directories, named before root's uid inside
        idmap = userns.join_manager_namespaces(shim) if shim else userns.enter_manager_namespaces()
        spawner.start()  # a thread (so after the unshare), whose fd table is copied before any VM file is open
        if rootless:
            private_dirs.trust_unmapped_owners()
        self.hypervisor = vmstart.Hypervisor(self.layout, idmap, native())
        self.cluster = cluster.join(self.layout.cluster)  # before the VMs are taken back: they publish and hear
        write_json(self.layout.info, {"pid": os.getpid(), "version": code_id(), "started": time.time()})
        telling.start(lambda: list(self.groups.values()))
        self._resume()
        if self.cluster is not None:
            self.cluster.follow()
        server = control.ControlServer(self.layout.socket, self.handle, on_close=self.closed)
        self._ready("ready")
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: self.done.set())
        frontrun.prepare()  # while the front that started us connects
        try:
            while not self.done.wait(1.0):
                self._tick()
        finally:
            server.close()
            self._let_changes_finish()
            self.hypervisor.spares.close()  # whether or not the VMs stay: no run takes a spare now
            if self.stop_vms:
                for group in list(self.groups.values()):
                    self._remove(group, stop=True)
            if self.cluster is not None:
                self.cluster.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.layout.info)
            os.close(lock)
            dataclass_cache.save()  # a manager stopped within its first second saves too
        return 0

    def _let_changes_finish(self) -> None:
        """Wait a while for the operations starting or stopping VMs: a client left mid-start has no VM, no error."""
        deadline = time.monotonic() + CHANGES_GRACE
        while time.monotonic() < deadline:
            with self.lock:
                if self.changing == 0:
                    return
            time.sleep(0.02)
        log.warning("exiting with %d operations on VMs unfinished", self.changing)

    def _resume(self) -> None:
        assert self.hypervisor is not None
        try:
            gids = os.listdir(self.layout.groups)
        except FileNotFoundError:
            return
        for gid in gids:
            if gid.startswith(vmdirs.FREE):  # kept empty by a manager before (vmdirs)
                self._remove_state(gid)
                continue
            try:
                document: dict[str, Any] = read_json(self.layout.group_file(gid))
                project = from_json(document["project"])
                with kept_outputs.taken_back(self.layout, gid, document, project) as given:
                    group = Group(
                        gid, project, self.hypervisor, on_empty=self._empty, document=document["project"], given=given
                    )
            except Exception as e:  # no group.json: its manager died before its VM started, nothing ran
                unread = not isinstance(e, FileNotFoundError)
                log.log(logging.ERROR if unread else logging.INFO, "the group %s left by a manager before could"
                        " not be read; removing it", gid, exc_info=unread)  # fmt: skip
                self._remove_state(gid)
                continue
            self.groups[gid] = group
            group.owner_lost_at = time.monotonic()  # a run's client must come back
            group.detached = bool(document.get("detached", group.detached))
            group.autoremove = bool(document.get("autoremove", False))
            group.resume(document)
            for record in group.vms.values():  # its published ports, which the shim kept
                if record.running is not None and record.running.published and record.state == "running":
                    ports, listeners = zip(*record.running.published.items(), strict=True)
                    self._publish(group, record.running, list(listeners), list(ports), deposit=False)
                    for fd in listeners:
                        os.close(fd)
        self._sweep_vms()

    def _sweep_vms(self) -> None:
        """Remove the state of VMs no group runs any more (a removal failed, or left before)."""
        with self.lock:
            claimed = {r.vmid for g in self.groups.values() for r in g.vms.values() if r.state != "exited"}
        claimed |= self.hypervisor.spares.vmids() if self.hypervisor is not None else set()  # waiting spares
        claimed |= vmdirs.kept(self.layout)  # emptied, for the next VMs
        try:
            vmids = os.listdir(self.layout.vms)
        except FileNotFoundError:
            return
        for vmid in vmids:
            with contextlib.suppress(OSError):
                # One made in the last seconds may be a VM started again whose record still says exited.
                if vmid not in claimed and time.time() - os.stat(self.layout.vm(vmid)).st_mtime > SWEEP_AGE:
                    remove_tree(self.layout.vm(vmid))

    def _tick(self) -> None:
        dataclass_cache.save()  # what this start compiled (its first VM's too), for the next cold start
        now = time.monotonic()
        with self.lock:
            groups = list(self.groups.values())
            busy = bool(groups) or self.clients > 0
        if busy:
            self.last_busy = now
        elif now - self.last_busy > idle_timeout():
            self.done.set()
        self._sweep_vms()
        for group in groups:
            lost = group.owner_lost_at
            if group.detached:
                continue
            if group.project.kind == "run" and group.owner is None and lost is not None and now - lost > RECONNECT:
                log.warning("the client of %s did not come back: stopping it", group.gid)
                self._remove(group, stop=True)

    def _empty(self, group: Group) -> None:
        """A run's VM has ended: the group goes once its client heard the exit status; a
        detached one's stays, with its exit code, until ``hvfs rm`` (unless run with --rm)."""
        self._unpublish(group)
        self.leave_network(group)
        if (group.owner is not None and not group.detached) or group.autoremove:
            threads.spawn(self._remove, (group,), f"hvfs-{group.gid}-remove")  # kept: no start to wait for

    def _unpublish(self, group: Group) -> None:
        with self.lock:
            forwarder = self.forwarders.pop(group.gid, None)
        if forwarder is not None:
            forwarder.close()

    def _remove(self, group: Group, *, stop: bool = False) -> None:
        if stop:
            group.stop_all(group.stop_timeout)
        self._unpublish(group)
        with self.lock:
            if self.groups.get(group.gid) is not group:
                return
            del self.groups[group.gid]
        group.remove()
        group.removed.set()
        self._sweep_vms()

    def _remove_state(self, gid: str) -> None:
        import shutil  # with bz2 and lzma: 4 ms of a cold start's imports, for a group's removal

        shutil.rmtree(self.layout.group(gid), ignore_errors=True)

    # -- clients --------------------------------------------------------------------

    def closed(self, connection: control.Connection) -> None:
        """A client went away: a run's VM ends with its client, unless it is detached."""
        self.containers_closed(connection)
        with self.lock:
            self.clients = max(0, self.clients - 1)
            owned = [g for g in self.groups.values() if g.owner is connection and not front_exit.heard(g)]
            for group in self.groups.values():
                with contextlib.suppress(ValueError):
                    group.followers.remove(connection)
        for group in owned:
            group.owner = None
            if not group.detached:
                if all(r.state == "exited" for r in group.vms.values()):
                    self._remove(group)
                else:
                    threading.Thread(target=self._remove, args=(group,), kwargs={"stop": True}, daemon=True).start()

    def handle(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        op = message.get("op")
        handler = getattr(self, f"_op_{op}", None) if isinstance(op, str) else None
        changes = op in _CHANGING
        if changes:
            with self.lock:
                self.changing += 1
        try:
            if handler is None:
                connection.send({"error": f"unknown operation {op!r}"})
                return
            with self.hypervisor.spares.starting(op) if self.hypervisor is not None else contextlib.nullcontext():
                handler(message, fds, connection)
        except LookupError as e:
            connection.send({"error": str(e.args[0])})
        except HvfsError as e:
            connection.send({"error": str(e), "code": e.exit_code})
        finally:
            if changes:
                with self.lock:
                    self.changing -= 1
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _group(self, message: dict[str, Any]) -> Group:
        gid = message.get("gid")
        with self.lock:
            group = self.groups.get(str(gid))
        if group is None:
            raise LookupError(f"{message.get('what', 'that group')} is not up")
        return group

    def _new_group(self, message: dict[str, Any], given: Mapping[str, int] | None = None,
                   prepared: Project | None = None) -> Group:  # fmt: skip
        assert self.hypervisor is not None
        project = from_json(message["project"]) if prepared is None else prepared  # frontrun.handle's: no JSON
        gid = group_id(project)
        front_exit.settle_name(self.groups, gid)  # a run of the same name whose front heard its shim
        with self.lock:
            if gid in self.groups:
                if project.kind == "run":
                    raise UsageError(f"a VM named {project.name!r} is already running; choose another --name")
                raise LookupError(f"project {project.name!r} is already up")
            group = Group(
                gid, project, self.hypervisor, on_empty=self._empty, document=message.get("project"), given=given
            )
            self.groups[gid] = group
        return group

    def _op_run(self, message: dict[str, Any], fds: list[int], connection: control.Connection,
                prepared: Project | None = None) -> None:  # fmt: skip
        named = message.get("given")  # outputs the client opened as the user (--audit): the last fds
        given = [str(path) for path in named][: len(fds)] if isinstance(named, list) else []
        group = self._new_group(message, dict(zip(given, fds[len(fds) - len(given) :], strict=True)), prepared)
        group.stop_timeout = float(message.get("stop_timeout", group.stop_timeout))
        group.owner, group.detached = connection, bool(message.get("detach"))
        group.autoremove = group.detached and bool(message.get("remove"))
        # fds: stdio (3, or none with a terminal), then the outputs written at the VM's exit
        # (--diff, --export), then the listeners of published ports. handle() closes what is
        # left in ``fds``: the outputs are taken out of it, kept until the VM's exit.
        published, own = [int(port) for port in message.get("publish", ())], fds[: len(fds) - len(given)]
        listeners = own[len(own) - len(published) :] if published else []
        body = own[: len(own) - len(published)]
        roles = [str(r) for r in message.get("outputs", [])][: len(body)]
        kept = body[len(body) - len(roles) :] if roles else []
        group.outputs = dict(zip(roles, kept, strict=True))
        for fd in kept:
            fds.remove(fd)
        body = body[: len(body) - len(kept)]
        group.debug, group.exit_details = bool(message.get("debug")), not message.get("code_only")
        if not group.detached:  # a detached VM's output goes to its log only: its client is leaving
            group.followers.append(connection)
        winsize = bytes.fromhex(message["winsize"]) if message.get("winsize") else None
        stdio = (body[0], body[1], body[2]) if len(body) == 3 else None
        network = group.project.network
        try:
            if network.mode == "shared":
                group.bridge = self.networks.join(network.name, group)
            group.start(stdio=stdio, winsize=winsize)
        except BaseException:
            self._remove(group)
            for fd in group.outputs.values():
                os.close(fd)
            raise
        if network.mode == "shared":
            self.networks.refresh(network.name)
        record = next(iter(group.vms.values()))
        assert record.running is not None
        if published:
            self._publish(group, record.running, listeners, published)
        front_exit.send_started(connection, group, record, message)  # with its terminal, or the exit's pipe

    def _publish(
        self, group: Group, running: RunningVm, listeners: list[int], ports: list[int], *, deposit: bool = True
    ) -> None:
        """Forward the host's ``listeners`` to the VM's ``ports``; copies stay with its shim (``deposit``)."""
        if len(listeners) != len(ports):
            raise LookupError("the published ports came without their listening sockets; run hvfs run again")
        copies = [os.dup(fd) for fd in listeners]  # handle() closes the fds of the message
        try:
            forwarder = Forwarder(group.gid, running.process.init_pid, copies, ports)
        except OSError:  # the VM is gone already (its netns with it): nothing to reach, nothing kept
            for fd in copies:
                os.close(fd)
            return
        try:
            if deposit:
                roles = {f"publish:{i}:{port}": fd for i, (port, fd) in enumerate(zip(ports, listeners, strict=True))}
                running.process.deposit(roles)
        except OSError:
            forwarder.close()
            return
        with self.lock:
            self.forwarders[group.gid] = forwarder
        group.closing.append(forwarder.close)
        if all(r.state == "exited" for r in group.vms.values()):  # it exited meanwhile: _empty has been
            self._unpublish(group)

    def _op_attach(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        group = self._group(message)
        group.owner, group.owner_lost_at = connection, None
        group.followers.append(connection)
        connection.send({"attached": group.gid})
        for record in group.vms.values():
            if record.state == "exited":
                connection.send({"exited": record.config.name, "code": record.code})
        if all(r.state == "exited" for r in group.vms.values()):
            threading.Thread(target=self._remove, args=(group,), daemon=True).start()

    def _op_signal(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        self._group(message).signal(str(message["vm"]), int(message["signal"]))
        if message.get("reply"):  # hvfs run's forwarded signals want none
            connection.send({"ok": True})

    def _op_up(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        """Start a project; or, up already, apply its edited hvfs.toml (hvfs.hypervisor.recreate)."""
        from hvfs.hypervisor import recreate  # not a first run's: lazy_parts

        project = from_json(message["project"])
        gid = group_id(project)
        with self.lock:
            serial = self.up_locks.setdefault(gid, threading.Lock())
        with serial:  # one up of a project at a time
            with self.lock:
                group = self.groups.get(gid)
            if group is not None and project.kind == "project":
                changes = recreate.plan(group, project)
                if changes.none:
                    raise LookupError(f"project {project.name!r} is already up")
                if changes.whole:
                    self._remove(group, stop=True)
                else:
                    if message.get("foreground"):
                        group.followers.append(connection)
                    recreate.apply(group, project, changes)
                    self._reply_up(group, connection, changes.start)
                    return
            group = self._new_group(message)
            group.debug, group.exit_details = bool(message.get("debug")), not message.get("code_only")
            if message.get("foreground"):
                group.followers.append(connection)
            try:
                group.start()
            except BaseException:
                self._remove(group)
                raise
            self._reply_up(group, connection, list(group.vms))

    @staticmethod
    def _reply_up(group: Group, connection: control.Connection, started: list[str]) -> None:
        # A VM whose exit is still to be told counts: its follower reads on until it hears it.
        running = [n for n, r in group.vms.items() if r.state in ("running", "restarting") or r.telling]
        connection.send({"up": list(group.vms), "gid": group.gid, "running": running, "started": started})

    def _op_ps(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        front_exit.settle(list(self.groups.values()))  # what a front may have heard from a shim, recorded
        info = self._info()
        if message.get("gid") is None:
            with self.lock:
                groups = {gid: g.describe() for gid, g in self.groups.items()}
                about = {gid: _about(g) for gid, g in self.groups.items()}
            connection.send({"groups": groups, "about": about, "manager": info})
            return
        group = self._group(message)
        info["sources"] = dataclasses.asdict(group.pool.statistics())  # the group's live sources
        connection.send({"vms": group.describe(), "manager": info})

    def _op_exec(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        self._group(message).exec(message, fds, connection)  # pid 1 has its copies; handle() closes ours

    def _op_stop(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        group = self._group(message)
        code = group.stop(group.record(message.get("vm")), float(message.get("timeout", group.stop_timeout)))
        connection.send({"ok": True, "code": code})

    def _op_down(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        group = self._group(message)
        group.stop_timeout = float(message.get("timeout", group.stop_timeout))
        self._remove(group, stop=True)
        connection.send({"ok": True})

    def _op_shutdown(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        """Exit; with ``stop``, stop every VM first; without, leave them to the next manager."""
        self.stop_vms = bool(message.get("stop"))
        connection.send({"ok": True, "pid": os.getpid()})
        self.done.set()

    def _info(self) -> dict[str, Any]:
        cluster = {"cluster": self.cluster.statistics()} if self.cluster is not None else {}
        spares = {"spares": self.hypervisor.spares.statistics()} if self.hypervisor is not None else {}
        from hvfs.intercept import filter_cache  # the first VM's to import, not the manager's start

        info = {"pid": os.getpid(), "rss_kb": machine.resident_kb(), "version": code_id(), **cluster, **spares}
        return {**info, "filter_cache": filter_cache.statistics()}


def _about(group: Group) -> dict[str, Any]:
    """What ``hvfs ps -a`` says of a group besides its VMs: a project's, a run's, a container's."""
    return {"kind": group.project.kind, "project": group.project.name, "detached": group.detached}
