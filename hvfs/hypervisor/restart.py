"""Whether, and when, a project's VM that ended is started again: its ``restart`` policy
(hvfs.project.lifecycle.RestartPolicy), as docker's restart manager decides.

- "no": never. "always": whatever its exit code. "unless-stopped": as "always" (docker's
  two differ only when dockerd restarts; a new hvfs manager starts no exited VM).
  "on-failure[:N]": when it exited non-zero, at most N times (no limit without N).
- Never a VM the user stopped (``hvfs stop``, ``down``, the abort of ``up``).
- A back-off between a VM's end and its new start, as docker's: 100 ms, doubled at each
  restart up to a minute, back to 100 ms once a run lasted 10 s.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hvfs import deferred
from hvfs.manager.mounts import Mount
from hvfs.manager.sources.base import SourceError
from hvfs.project.lifecycle import RestartPolicy
from hvfs.sandbox.errors import SetupError

if TYPE_CHECKING:
    from hvfs.hypervisor.group import Group
    from hvfs.hypervisor.records import VmRecord

log = deferred.logger("hvfs.restart")

FIRST_DELAY = 0.1
MAX_DELAY = 60.0
RESET_AFTER = 10.0  # seconds of running after which the back-off starts again from FIRST_DELAY


@dataclass
class Restarts:
    """One VM's restarts: how many so far, the next back-off, and whether the user
    stopped it. Used under its group's lock, or from the VM's own watcher."""

    policy: RestartPolicy
    count: int = 0
    delay: float = 0.0
    stopped: bool = False  # by the user: no policy starts it again
    timer: threading.Timer | None = field(default=None, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def after_exit(self, code: int, ran: float) -> float | None:
        """Seconds to wait before starting the VM that exited with ``code`` after
        running ``ran`` seconds, or None if it stays exited."""
        if not self.wants(code):
            return None
        self.delay = FIRST_DELAY if self.delay == 0.0 or ran >= RESET_AFTER else min(MAX_DELAY, self.delay * 2)
        return self.delay

    def wants(self, code: int) -> bool:
        policy = self.policy
        if self.stopped or policy.name == "no":
            return False
        if policy.name == "on-failure":
            return code != 0 and (policy.max_retries == 0 or self.count < policy.max_retries)
        return True


def plan(group: Group, record: VmRecord, code: int) -> threading.Timer | None:
    """For the VM of ``record`` that has just exited with ``code`` (its watcher calls
    this before its sources are released): the timer that will start it again, not yet
    started, with its mount table taken anew (so that a memory source it shares lives on
    across the restart, as a docker volume does); or None if it stays exited."""
    if group.project.kind != "project":
        return None
    restarts = record.restarts
    with restarts.lock:
        delay = restarts.after_exit(code, time.time() - record.started)
        if delay is None:
            return None
        if record.config.network and group.project.network.mode == "bridge" and group.bridge is None:
            log.warning("%s of %s not restarted: this manager took over the project, not its bridge",
                        record.config.name, group.gid)  # fmt: skip
            return None
        used = record.pool_key
        record.pool_key = f"{record.config.name}#{os.urandom(4).hex()}"
        try:
            table = group.table(record)
        except (SourceError, OSError) as e:
            log.warning("%s of %s not restarted: %s", record.config.name, group.gid, e)
            record.pool_key = used
            return None
        timer = threading.Timer(delay, _again, (group, record, table))
        timer.daemon = True
        restarts.timer = timer
        return timer


def _again(group: Group, record: VmRecord, table: list[Mount]) -> None:
    restarts = record.restarts
    # The launch under the lock: a stop meanwhile (cancel) waits for the VM it starts, then
    # stops it. Without, the stop found neither a timer to cancel nor a VM running, and the
    # down that followed removed the group under the launch (whose save then failed: the
    # VM started, unwatched, and told exited with no code).
    with restarts.lock:
        if restarts.timer is None or restarts.stopped or record.state != "restarting":
            return  # cancelled meanwhile: cancel released the table
        restarts.timer = None
        restarts.count += 1
        try:
            group.launch(record, table)
        except (SetupError, SourceError, OSError, LookupError, ValueError) as e:
            failed: Exception | None = e
            group.pool.drop(record.pool_key)
            record.state = "exited"
        else:
            failed = None
    if failed is not None:
        log.warning("%s of %s could not be restarted: %s", record.config.name, group.gid, failed)
        group.tell({"exited": record.config.name, "code": record.code})
        group.save()


def settle(group: Group, record: VmRecord, code: int, again: threading.Timer | None) -> threading.Timer | None:
    """Record the exit of the VM of ``record`` (its watcher, after ``plan``): exited, or
    restarting with ``again``, returned to be started; exited after all if the user
    stopped it since ``plan`` (cancel took its timer while it still ran), its table released."""
    with record.restarts.lock:
        if again is not None and record.restarts.timer is not again:
            again = None
            group.pool.drop(record.pool_key)
        record.code, record.state = code, "exited" if again is None else "restarting"
    return again


def cancel(group: Group, record: VmRecord) -> None:
    """The user stopped the VM: no restart, not even one waiting for its back-off (which
    then ends, as an exit, for the clients that follow the group)."""
    restarts = record.restarts
    with restarts.lock:
        restarts.stopped = True
        timer, restarts.timer = restarts.timer, None
        if timer is None or record.state != "restarting":
            return
        timer.cancel()
        record.state = "exited"
    group.pool.drop(record.pool_key)
    group.tell({"exited": record.config.name, "code": record.code})
