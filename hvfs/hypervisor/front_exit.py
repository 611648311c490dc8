"""A run's exit code told to the native front by the VM's shim, not by this manager.

The front's way to its exit was shim → manager (a thread woken, the GIL, the driver joined,
the views closed, the state removed) → front: two processes to get a CPU in turn and the
bookkeeping between them. For a run whose client needs nothing of that bookkeeping (its
exit code alone: no outputs written at the exit, no services, no staged changes, no log
pump, nothing restarted), the manager gives the front, with ``started``, the read end of a
pipe whose only write end it has deposited with the shim (role ``front``,
native/init/shim.c). The shim writes pid 1's exit code there as soon as it has written its
``exit`` file, then tells this manager as before; the front exits on whichever comes first.

What the front believes comes from the shim, which the VM cannot reach (not in its pid
namespace, non-dumpable, its memory owned by this manager's user namespace), and says only
the VM's own exit code, which the VM chooses anyway; pid 1 was forked before the pipe
existed. A stopped or hostile pid 1 writes nothing there: the front then waits as before.

The bookkeeping then finishes after the front has gone. What a client could see of it in
between is settled here: a ``hvfs ps`` or a run of the same name waits for a VM whose shim
has written its ``exit`` (the front may have heard it) until its watcher has recorded the
exit, and a run's client that leaves after its VM's exit does not stop its group
(``heard``)."""

from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hvfs.hypervisor.control import Connection
    from hvfs.hypervisor.group import Group
    from hvfs.hypervisor.records import VmRecord

SETTLE = 2.0  # seconds a request waits for a watcher to record an exit the shim has told
# The groups whose front was given the pipe, by group id, until they are freed: one that
# has left the daemon's table may still be removing its state directory, which a run of
# the same name would make again.
_offered: weakref.WeakValueDictionary[str, Group] = weakref.WeakValueDictionary()


def send_started(connection: Connection, group: Group, record: VmRecord, message: dict[str, Any]) -> None:
    """The run's ``started`` reply: with the VM's terminal, if it has one, or with the
    exit's pipe when ``offer`` gives one."""
    assert record.running is not None
    terminal, told = record.running.terminal, offer(group, record, message)
    reply = {"started": record.config.name, "gid": group.gid, "pid": record.running.process.init_pid}
    fds = [terminal] if terminal is not None else told
    try:
        connection.send({**reply, "exit_fd": True} if told else reply, fds)
    finally:
        for fd in fds or []:
            os.close(fd)
        record.running.terminal = None


def offer(group: Group, record: VmRecord, message: dict[str, Any]) -> list[int] | None:
    """The pipe's read end for the front that asked (``exit_fd``) when its run needs
    nothing but the exit code; its write end deposited with the VM's shim."""
    running = record.running
    if not message.get("exit_fd") or running is None or running.terminal is not None:
        return None
    if (group.project.kind != "run" or group.detached or group.autoremove or group.exit_details or group.outputs
            or group.services is not None or len(group.vms) != 1 or record.config.commit or record.health is not None
            or not record.drained.is_set()):  # fmt: skip
        return None
    read, write = os.pipe2(os.O_CLOEXEC)
    try:
        running.process.deposit({"front": write})
    except OSError:
        os.close(read)
        return None
    finally:
        os.close(write)
    record.front_exit = True
    _offered[group.gid] = group
    return [read]


def _exit_written(group: Group, record: VmRecord) -> bool:
    """Whether ``record``'s shim has written its VM's exit (before it told anyone)."""
    return bool(record.vmid) and os.path.exists(group.layout.exit_file(record.vmid))


def heard(group: Group) -> bool:
    """Whether a client leaving ``group`` may have heard of its VM's exit from the shim
    before this manager recorded it: the group then ends once its watcher has, as if the
    client had heard it from this manager, rather than being stopped."""
    return any(record.state != "exited" and _exit_written(group, record) for record in group.vms.values())


def settle(groups: list[Group]) -> None:
    """Wait until every exit a front may have heard from a shim is recorded."""
    for group in groups:
        for record in list(group.vms.values()):
            if record.front_exit and not record.exited.is_set() and _exit_written(group, record):
                record.exited.wait(SETTLE)


def _ending(group: Group) -> bool:
    """A run's group that its watcher removes once the exit is told: every VM exited."""
    records = list(group.vms.values())
    return (
        group.project.kind == "run"
        and not group.detached
        and all(r.state == "exited" or _exit_written(group, r) for r in records)
    )


def settle_name(groups: dict[str, Group], gid: str) -> None:
    """Before a run takes the group id ``gid``: wait for the group of a run that has
    ended (its front may have heard so from the shim) to be removed, its state too."""
    group = groups.get(gid) or _offered.get(gid)
    if group is not None and not group.removed.is_set() and _ending(group):
        group.removed.wait(SETTLE)
