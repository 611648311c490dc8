"""A stop (``hvfs stop``, ``down``, the abort of ``up``) racing a VM's restart: restart.cancel
against restart._again's launch, and against the watcher between restart.plan and its
exit told (restart.settle). Both windows are a few ms wide in a real manager, so they are
held open here with a group whose launch waits to be let go."""

from __future__ import annotations

import threading
from typing import Any

from hvfs.hypervisor import restart
from hvfs.hypervisor.records import VmRecord
from hvfs.project.config import VmConfig
from hvfs.project.lifecycle import RestartPolicy


class _Group:
    """What restart asks of a group: a launch held until ``release`` is set."""

    def __init__(self) -> None:
        self.launching, self.release = threading.Event(), threading.Event()
        self.dropped: list[str] = []
        self.told: list[dict[str, Any]] = []
        self.pool = self
        self.project = self

    kind = "project"

    def drop(self, key: str) -> None:
        self.dropped.append(key)

    def launch(self, record: VmRecord, table: object) -> None:
        self.launching.set()
        assert self.release.wait(10)
        record.state, record.code = "running", None

    def tell(self, message: dict[str, Any]) -> None:
        self.told.append(message)

    def save(self) -> None:
        pass


def _restarting() -> VmRecord:
    record = VmRecord(VmConfig("loop", ("true",), restart=RestartPolicy("always")))
    record.state, record.code = "restarting", 0
    return record


def test_a_stop_during_a_restarts_launch_finds_the_vm_running() -> None:
    """Group.stop cancels, then signals a VM it finds running: cancel must not return while
    the launch is under way (it found no timer and no VM running; the VM ran on, and the
    group was removed under its launch)."""
    group, record = _Group(), _restarting()
    timer = record.restarts.timer = threading.Timer(60, lambda: None)
    again = threading.Thread(target=restart._again, args=(group, record, []))
    again.start()
    assert group.launching.wait(10)
    seen: list[str] = []
    stopper = threading.Thread(target=lambda: (restart.cancel(group, record), seen.append(record.state)))  # type: ignore[arg-type]
    stopper.start()
    stopper.join(0.2)
    group.release.set()
    for thread in (again, stopper):
        thread.join(10)
    assert seen == ["running"], seen  # what Group.stop then signals
    assert record.restarts.stopped and group.told == []
    timer.cancel()


def test_a_stop_between_plan_and_the_exit_told_leaves_the_vm_exited() -> None:
    group, record = _Group(), _restarting()
    record.state, record.pool_key = "running", "loop#new"  # exited, its restart planned (plan)
    again = record.restarts.timer = threading.Timer(60, lambda: None)
    restart.cancel(group, record)  # type: ignore[arg-type]  # the user's stop, while the watcher tells
    assert restart.settle(group, record, 0, again) is None  # type: ignore[arg-type]
    assert (record.state, record.code, group.dropped) == ("exited", 0, ["loop#new"])
    planned = record.restarts.timer = threading.Timer(60, lambda: None)  # not stopped: restarts
    record.restarts.stopped, record.state = False, "running"
    assert restart.settle(group, record, 0, planned) is planned  # type: ignore[arg-type]
    assert record.state == "restarting"
