"""What the manager knows of one VM of a group: its configuration, its running process,
its state and exit code, its health and restarts (``hvfs ps`` shows them)."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hvfs.hypervisor import control
from hvfs.hypervisor.health import Health, ProbeWaiter
from hvfs.hypervisor.restart import Restarts
from hvfs.project.config import VmConfig
from hvfs.runtime import RunningVm

if TYPE_CHECKING:
    from hvfs.hypervisor.services import ServiceSet


@dataclass
class VmRecord:
    """What the manager knows of one VM of a group, from its start to its removal."""

    config: VmConfig
    vmid: str = ""
    running: RunningVm | None = None
    state: str = "created"
    code: int | None = None
    address: str | None = None
    started: float = 0.0
    start_ms: float = 0.0
    exited: threading.Event = field(default_factory=threading.Event)
    drained: threading.Event = field(default_factory=threading.Event)  # its output all told
    telling: bool = False  # exited, its exit not yet told to the followers (daemon._reply_up)
    execs: dict[str, control.Connection | ProbeWaiter] = field(default_factory=dict)  # exec id -> who asked
    listened: RunningVm | None = None  # the running VM whose pid 1 a thread listens to (execs.listen_once)
    kept: list[int] = field(default_factory=list)  # fds this manager keeps for the VM's life
    stop_timer: threading.Timer | None = None
    health: Health | None = None  # its healthcheck's monitor, while it runs
    restarts: Restarts = field(init=False)
    front_exit: bool = False  # its shim tells its front its exit code (hvfs.hypervisor.front_exit)
    pool_key: str = ""  # its sources are taken from the pool under this key (new at each restart)

    def __post_init__(self) -> None:
        self.restarts = Restarts(self.config.restart)
        self.pool_key = self.pool_key or self.config.name

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
            "health": self.health.describe() if self.health is not None else None,
            "restart": str(self.config.restart),
            "restarts": self.restarts.count,
        }


def run_statistics(name: str, running: RunningVm, services: ServiceSet | None) -> dict[str, Any]:
    """A run's statistics for --stats: requests per operation and outcome, services."""
    stats = running.context.statistics()
    document: dict[str, Any] = {
        "vm": name,
        "requests": stats.requests,
        "served": stats.total("served"),
        "continued": stats.total("continued"),
        "failed": stats.total("failed"),
        **running.driver.statistics(),
    }
    if running.tracer is not None:
        document["exec_tracer"] = dataclasses.asdict(running.tracer.statistics())
    if services is not None:
        document["services"] = services.statistics()
    return document
