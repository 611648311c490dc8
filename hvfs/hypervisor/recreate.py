"""``hvfs up`` of a project that is up already: as ``docker compose up``, the VMs whose
configuration changed in hvfs.toml are made again, new ones started, removed ones
stopped, exited ones started again; the others keep running. Nothing changed and every
VM running: the project "is already up".

A VM's configuration is what the client prepared (hvfs.hypervisor.spec.config_hash):
its own keys, and the project's network, services and transport, which its group holds
for all its VMs. A change to those (or, on a bridge, to the set of VMs, which every VM's
/etc/hosts lists) makes the whole group again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hvfs.hypervisor import ordering
from hvfs.hypervisor.spec import config_hash
from hvfs.project.config import Project

if TYPE_CHECKING:
    from hvfs.hypervisor.group import Group


@dataclass(frozen=True)
class Changes:
    whole: bool = False  # down, and up again
    stop: list[str] = field(default_factory=list)  # changed, or no longer in the file
    start: list[str] = field(default_factory=list)  # changed, new, or exited

    @property
    def none(self) -> bool:
        return not (self.whole or self.stop or self.start)


def plan(group: Group, project: Project) -> Changes:
    """What ``hvfs up`` of the prepared ``project`` changes in its running ``group``."""
    old = group.project
    if (old.network, dict(old.services), old.transport) != (project.network, dict(project.services), project.transport):
        return Changes(whole=True)
    changed = [n for n in project.vms if n in old.vms and config_hash(old, n) != config_hash(project, n)]
    added = [n for n in project.vms if n not in old.vms]
    gone = [n for n in old.vms if n not in project.vms]
    exited = [n for n in project.vms if n in old.vms and n not in changed and group.vms[n].state == "exited"]
    renetworked = any(project.vms[n].network != old.vms[n].network for n in changed)
    unreachable = group.bridge is None and bool(changed or exited)  # a bridge this manager has no handle on
    if project.network.mode == "bridge" and (added or gone or renetworked or unreachable):
        return Changes(whole=True)  # every VM's /etc/hosts lists them all
    return Changes(stop=changed + gone, start=[n for n in project.vms if n in changed or n in added or n in exited])


def apply(group: Group, project: Project, changes: Changes) -> None:
    """Stop what changed or went, then start what changed, came or had exited, in the
    order of their dependencies (raises as Group.start_vms)."""
    from hvfs.hypervisor.records import VmRecord

    group.stop_all(group.stop_timeout, [group.vms[n] for n in changes.stop])
    for name in changes.stop:
        group.pool.drop(group.vms[name].pool_key)
    records = {}
    for name, vm in project.vms.items():
        record = group.vms.get(name)
        if record is None or name in changes.stop:
            record = VmRecord(vm, address=record.address if record is not None else None)
        record.restarts.stopped = False  # started by the user again
        records[name] = record
    group.project, group.vms = project, records
    group.save()
    ordering.start_vms(group, changes.start)
