"""The manager's operations on what a running VM changed: ``hvfs diff``, ``hvfs export``
and the answer to ``hvfs run --review`` (docs/changes.md). A part of the Daemon, kept
apart because it is one concern."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from hvfs.hypervisor import control

if TYPE_CHECKING:
    from hvfs.hypervisor.group import Group
    from hvfs.manager.vm import VmContext


class ChangeOps:
    groups: dict[str, Group]
    lock: threading.Lock

    def _group(self, message: dict[str, Any]) -> Group:
        raise NotImplementedError

    def _op_review(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        """A --review's answer: apply the staged changes or drop them (hvfs.hypervisor.staging)."""
        group = self._group(message)
        if group.owner is not connection or group.review is None:
            raise LookupError("no review is waiting for this client")
        group.review.answer = bool(message.get("apply"))

    def _op_changes(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        """What a running VM changed (hvfs diff), found by its name, written to the fd sent."""
        if len(fds) != 1:
            raise LookupError("changes needs one fd to write the list to")
        context = self._running_vm(message)
        from hvfs.manager.changes import write

        write(context.changes, fds[0], as_json=bool(message.get("json")))
        connection.send({"ok": True})

    def _op_export(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        """A running VM's changes as a tarball, written to the fd the client sent (hvfs export)."""
        if len(fds) != 1:
            raise LookupError("export needs one fd to write the tarball to")
        context = self._running_vm(message)
        from hvfs.manager.export import write_tarball

        with os.fdopen(os.dup(fds[0]), "wb") as out:
            written = write_tarball(context, out)
        connection.send({"ok": True, "entries": written})

    def _running_vm(self, message: dict[str, Any]) -> VmContext:
        name = str(message.get("vm"))
        with self.lock:
            groups = list(self.groups.values())
        found = [
            r.running.context
            for g in groups
            for n, r in g.vms.items()
            if n == name and r.running is not None and r.state == "running"
        ]
        if not found:
            raise LookupError(f"no VM named {name!r} is running; see 'hvfs ps'")
        if len(found) > 1:
            raise LookupError(f"{len(found)} running VMs are named {name!r}; stop the others or rename one")
        return found[0]
