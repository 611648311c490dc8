"""The manager's side of the OCI runtime (hvfs.oci): containers as VMs of one group.

Every container of one runtime root (one dockerd) is a VM of one group, so that a named
volume or a bind source mounted by two containers is one source of the group's pool,
and the group's services see every container. A container's waiter (hvfs.oci.waiter)
asks for it with ``container``; the VM is held before its command starts until the
runtime's ``start`` says ``container_start``; ``container_remove`` forgets it.

The runtime runs in the host's mount namespace, where docker mounted the container's
root file system after this manager made its own copy of the mounts (on a host whose /
is private, none of them reach it). So the waiter sends each host tree it needs as a
detached mount (open_tree), which is attached here, once per host object, under the
state directory's ``trees/`` in this manager's namespace; the VM's sources name those
places. A tree is detached again when no VM of the group uses it any more.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hvfs import deferred
from hvfs._sys import files
from hvfs._sys import mount as m
from hvfs.hypervisor import control
from hvfs.hypervisor.mounts import MountSpec
from hvfs.hypervisor.spec import from_json, group_id
from hvfs.manager.sources.registry import SourceSpec
from hvfs.project.config import VmConfig

if TYPE_CHECKING:
    from hvfs.hypervisor.daemon import Daemon
    from hvfs.hypervisor.group import Group

log = deferred.logger("hvfs.containers")
FOREVER = 10.0 * 365 * 24 * 3600  # docker decides when a stopped container is killed


@dataclass
class _Waiting:
    go: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


class Containers:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.lock = threading.Lock()
        self.waiting: dict[tuple[str, str], _Waiting] = {}
        self.waiters: dict[control.Connection, tuple[str, str]] = {}  # waiter -> (gid, vm)
        self.trees: dict[str, set[tuple[str, str]]] = {}  # attached tree -> the VMs using it

    # -- requests -------------------------------------------------------------------

    def create(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        """A container's VM, held before its command; replies ``created`` (with the pty
        master, with a terminal) once pid 1 is ready, and ``exited`` once it has ended."""
        project = from_json(message["project"])
        group = self._group(project)
        gid = group.gid
        vm = VmConfig(**{**message["vm"], "command": tuple(message["vm"]["command"])})
        trees = message["trees"]  # one per fd after the three of stdio: [key, is it a directory]
        if len(fds) != 3 + len(trees):
            raise LookupError(f"{len(fds)} fds for {len(trees)} trees and stdio")
        places = [self._attach(key, fd, (gid, vm.name)) for (key, _), fd in zip(trees, fds[3:], strict=True)]
        vm = _placed(vm, message["root"], message["mounts"], places)
        waiting = self.waiting[(gid, vm.name)] = _Waiting()
        with self.lock:
            self.waiters[connection] = (gid, vm.name)
        group.followers.append(connection)

        def hold(process: Any) -> None:
            connection.send(
                {"created": vm.name, "gid": gid, "pid": process.init_pid},
                [process.terminal] if process.terminal is not None else None,
            )
            while not waiting.go.wait(0.5):
                if connection.hung_up():
                    raise LookupError(f"the waiter of {vm.name} has gone")

        winsize = bytes.fromhex(message["winsize"]) if message.get("winsize") else None
        try:
            record = group.add(
                vm,
                stdio=(fds[0], fds[1], fds[2]),
                winsize=winsize,
                hold=hold,
                root_readonly=bool(message["root"].get("readonly")),
            )
        except BaseException as e:
            waiting.error = str(e)
            waiting.started.set()
            self._forget(connection, group)
            raise
        finally:
            waiting.started.set()
        if record.running is not None and record.running.terminal is not None:
            os.close(record.running.terminal)  # the waiter holds the master now
            record.running.terminal = None
        connection.send({"started": vm.name})

    def start(self, message: dict[str, Any], connection: control.Connection) -> None:
        key = (str(message.get("gid")), str(message.get("vm")))
        waiting = self.waiting.get(key)
        if waiting is None:
            raise LookupError(f"container {key[1]} is not waiting to start")
        waiting.go.set()
        waiting.started.wait(60)
        self.waiting.pop(key, None)
        if waiting.error is not None:
            raise LookupError(waiting.error)
        connection.send({"ok": True})

    def follow(self, message: dict[str, Any], connection: control.Connection) -> None:
        """A waiter whose manager went away (a restart) follows its container again:
        ``following``, then ``exited`` as for ``create``; the VM's exit, if it came meanwhile."""
        group = self.daemon._group(message)
        name = str(message.get("vm"))
        record = group.vms.get(name)
        if record is None:
            raise LookupError(f"container {name} is not in {group.gid}")
        with self.lock:
            self.waiters[connection] = (group.gid, name)
        group.followers.append(connection)
        connection.send({"following": name})
        if record.state == "exited":
            connection.send({"exited": name, "code": record.code})

    def remove(self, message: dict[str, Any], connection: control.Connection) -> None:
        """Forget a container's VM, killing it first with ``force``; its group goes with
        its last VM."""
        group = self.daemon._group(message)
        name = str(message.get("vm"))
        record = group.vms.get(name)
        if record is not None and record.state == "running" and record.running is not None:
            if not message.get("force"):
                raise LookupError(f"container {name} is running; stop it first or force it")
            record.running.process.kill()
            record.exited.wait(10)
        self._drop(group, name)
        connection.send({"ok": True})

    def closed(self, connection: control.Connection) -> None:
        """A waiter went away: its container's VM goes too, whatever it was doing."""
        with self.lock:
            key = self.waiters.pop(connection, None)
        if key is None:
            return
        with self.daemon.lock:
            group = self.daemon.groups.get(key[0])
        record = group.vms.get(key[1]) if group is not None else None
        if record is not None and record.running is not None and record.state == "running":
            log.warning("the waiter of container %s has gone: ending its VM", key[1])
            record.running.process.kill()

    # -- the group and its trees ----------------------------------------------------

    def _group(self, project: Any) -> Group:
        from hvfs.hypervisor.group import Group

        daemon = self.daemon
        assert daemon.hypervisor is not None
        gid = group_id(project)
        with daemon.lock:
            group = daemon.groups.get(gid)
            if group is None:
                group = Group(gid, project, daemon.hypervisor, on_empty=daemon._empty)
                group.stop_timeout = FOREVER
                daemon.groups[gid] = group
                os.makedirs(os.path.dirname(self.daemon.layout.log(gid, "x")), mode=0o700, exist_ok=True)
                group.save()
        return group

    def _attach(self, key: str, tree: int, user: tuple[str, str]) -> str:
        """Where the host tree ``tree`` (a detached mount, identified by ``key``) is in this
        manager's namespace: attached there now, unless it already is."""
        name = hashlib.sha256(key.encode()).hexdigest()[:32]
        place = os.path.join(self.daemon.layout.root, "trees", name)
        with self.lock:
            users = self.trees.setdefault(place, set())
            if not users or not _attached(place):
                os.makedirs(os.path.dirname(place), mode=0o700, exist_ok=True)
                directory = os.path.isdir(f"/proc/self/fd/{tree}")
                with contextlib.suppress(FileExistsError):
                    if directory:
                        os.mkdir(place, 0o700)
                    else:
                        os.close(os.open(place, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))
                at = os.open(place, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    m.attach(os.dup(tree), at)
                finally:
                    os.close(at)
            users.add(user)
        return place

    def _drop(self, group: Group, name: str) -> None:
        group.discard(name)
        with self.lock:
            for place, users in list(self.trees.items()):
                users.discard((group.gid, name))
                if not users:
                    del self.trees[place]
                    try:
                        m.umount(place, m.MNT_DETACH)
                    except OSError as e:
                        if e.errno != errno.EINVAL:
                            log.warning("detaching %s: %s", place, e.strerror)
                    with contextlib.suppress(OSError):
                        os.rmdir(place) if os.path.isdir(place) else os.unlink(place)
        if not group.vms:
            self.daemon._remove(group)

    def _forget(self, connection: control.Connection, group: Group) -> None:
        with self.lock:
            key = self.waiters.pop(connection, None)
        with contextlib.suppress(ValueError):
            group.followers.remove(connection)
        if key is not None:
            self.waiting.pop(key, None)
            self._drop(group, key[1])


def _placed(vm: VmConfig, root: dict[str, Any], mounts: list[dict[str, Any]], places: list[str]) -> VmConfig:
    """``vm`` with its root and mounts: each a tree (by its index in ``places``) or a
    source of its own (a tmpfs)."""

    def source(description: dict[str, Any], kind: str) -> SourceSpec:
        if "tree" in description:
            place = places[int(description["tree"])]
            return SourceSpec(kind, {"path": place}, name=f"tree:{place}" if kind == "host" else None)
        return SourceSpec.from_json(description["source"])

    specs = tuple(MountSpec(str(d["target"]), source(d, "host"), readonly=bool(d.get("readonly"))) for d in mounts)
    return dataclasses.replace(vm, root=source(root, "rootfs"), mounts=specs)


def _attached(place: str) -> bool:
    """Whether a tree is attached at ``place``: its mount is not its parent's (a bind of a
    directory of the same file system has the same device, which os.path.ismount takes
    for no mount at all, and a tree attached again on top would outlive its last user)."""
    try:
        here = os.open(place, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        parent = os.open(os.path.dirname(place), os.O_PATH | os.O_CLOEXEC)
        try:
            return files.mount_id(here) != files.mount_id(parent)
        finally:
            os.close(parent)
    finally:
        os.close(here)
