"""The order a project's VMs start in: each after the VMs it ``depends_on``, once they
are as its condition asks (compose's): "started" (they were started), "healthy" (their
healthcheck passed), "completed_successfully" (they exited 0).

A condition that can no longer be met (the VM it waits for exited, or is unhealthy)
fails the ``hvfs up`` that started the group, as compose's "dependency failed to start".
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from hvfs.errors import HvfsError
from hvfs.hypervisor.health import HEALTHY, UNHEALTHY
from hvfs.project.lifecycle import start_order as _order

if TYPE_CHECKING:
    from hvfs.hypervisor.group import Group
    from hvfs.hypervisor.records import VmRecord
    from hvfs.manager.mounts import Mount

POLL = 0.02  # seconds between looks at the VMs waited for


class DependencyFailed(HvfsError):
    """A VM's dependency will never be as it asks: compose's exit 1."""

    exit_code = 1


def start_vms(
    group: Group, names: list[str], *, stdio: tuple[int, int, int] | None = None, winsize: bytes | None = None
) -> None:
    """Start the VMs ``names`` of ``group``, each once the VMs it depends on are as it
    asks: their conditions are awaited at once, the VMs started one at a time. Raises as
    Group.start (or DependencyFailed), after stopping those VMs."""
    # Every VM takes its sources before the first starts: one that exits at once must
    # not release a source that a VM after it mounts.
    tables: dict[str, list[Mount]] = {}
    records = [group.vms[name] for name in names]
    failed: list[BaseException] = []

    def start_one(record: VmRecord) -> None:
        try:
            wait_dependencies(group, record, failed)
            with group.starting:
                if not failed:
                    group.launch(record, tables[record.config.name], stdio, winsize)
        except BaseException as e:
            failed.append(e)

    try:
        for record in records:
            tables[record.config.name] = group.table(record)
        if len(records) == 1:
            start_one(records[0])
        else:
            starters = [threading.Thread(target=start_one, args=(group.vms[n],)) for n in start_order(group, names)]
            for starter in starters:
                starter.start()
            for starter in starters:
                starter.join()
        if failed:
            raise failed[0]
    except BaseException:
        group.stop_all(0, records)
        for record in records:
            group.pool.drop(record.pool_key)
        raise


def start_order(group: Group, names: list[str]) -> list[str]:
    """``names`` ordered so that each comes after those it depends on."""
    return _order({n: group.vms[n].config.depends_on for n in names}, names)


def wait_dependencies(group: Group, record: VmRecord, failed: list[BaseException]) -> None:
    """Return once every VM ``record`` depends on meets its condition; raise
    DependencyFailed as soon as one cannot, or another VM of this start ``failed``."""
    for name, condition in record.config.depends_on.items():
        other = group.vms[name]
        while not _met(record, other, condition):
            if failed:
                raise DependencyFailed(f"{record.config.name} not started: {failed[0]}")
            time.sleep(POLL)


def _met(record: VmRecord, other: VmRecord, condition: str) -> bool:
    me, it = record.config.name, other.config.name
    if condition == "started":
        return other.state != "created"
    if condition == "completed_successfully":
        if other.state != "exited":
            return False
        if other.code != 0:
            raise DependencyFailed(
                f"dependency failed to start: {it} exited with code {other.code}, not 0 ({me} waits for it)"
            )
        return True
    health = other.health
    if health is not None and health.status == HEALTHY and other.state == "running":
        return True
    if other.state == "exited" or (health is not None and health.status == UNHEALTHY):
        what = "exited" if other.state == "exited" else "is unhealthy"
        last = health.results[-1].output.strip().splitlines()[-1:] if health is not None and health.results else []
        detail = f" (last check: {last[0][:200]})" if last else ""
        raise DependencyFailed(f"dependency failed to start: {it} {what}{detail}; {me} waits for it to be healthy")
    return False
