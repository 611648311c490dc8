"""``hvfs run --network NAME``: a network that VMs of several runs share, as a docker
user-defined network, and on which they reach each other by name.

It is a project's bridge (hvfs.project.network, in a network namespace of its own: nothing
reaches outside), made when the first VM names it and closed with the last. Each VM's
/etc/hosts is its group's synthesized file, rewritten in place (hvfs.manager.sources.synth)
whenever a VM joins or leaves, so that those started before see those started after.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hvfs import deferred
from hvfs.hypervisor import vmstart

if TYPE_CHECKING:
    from hvfs.hypervisor.group import Group

log = deferred.logger("hvfs.networks")
SUBNETS = "10.90.{}.0/24"  # one per live network; a project's default is 10.89.0.0/24


@dataclass
class _Network:
    bridge: Any  # vmstart._Bridge
    index: int
    members: dict[str, Group] = field(default_factory=dict)  # gid -> group


class Networks:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[str, _Network] = {}

    def join(self, name: str, group: Group) -> SharedBridge:
        """The bridge of the network ``name`` for ``group``, made if it is the first."""
        with self._lock:
            network = self._live.get(name)
            if network is None:
                used = {n.index for n in self._live.values()}
                index = next(i for i in range(256) if i not in used)
                network = self._live[name] = _Network(vmstart.make_bridge(SUBNETS.format(index)), index)
            network.members[group.gid] = group
        return SharedBridge(self, name, group.gid, network.bridge)

    def leave(self, name: str, gid: str) -> None:
        with self._lock:
            network = self._live.get(name)
            if network is None:
                return
            group = network.members.pop(gid, None)
            last = not network.members
            if last:
                del self._live[name]
        if group is not None:
            for vm in group.vms:
                network.bridge.forget(vm)
        if last:
            network.bridge.close()
        else:
            self.refresh(name)

    def refresh(self, name: str) -> None:
        """Rewrite every member's /etc/hosts with the network's VMs as they are now."""
        with self._lock:
            network = self._live.get(name)
            members = list(network.members.values()) if network is not None else []
        if network is None:
            return
        hosts = network.bridge.hosts()
        for group in members:
            source = group.pool.live(f"{group.gid}:hosts")
            if source is not None:
                source.update(hosts)  # type: ignore[attr-defined]  # a SynthSource

    def describe(self) -> dict[str, list[str]]:
        with self._lock:
            return {name: sorted(n.members) for name, n in self._live.items()}


class SharedBridge:
    """What a group uses of a shared network's bridge; its ``close`` leaves the network."""

    def __init__(self, networks: Networks, name: str, gid: str, bridge: Any) -> None:
        self._networks, self.name, self._gid, self._bridge = networks, name, gid, bridge
        self.netns: int = bridge.netns

    def reserve(self, vm: str) -> str:
        address: str = self._bridge.reserve(vm)
        return address

    def attach(self, vm: str, init_pid: int) -> dict[str, Any]:
        link: dict[str, Any] = self._bridge.attach(vm, init_pid)
        return link

    def hosts(self) -> bytes:
        text: bytes = self._bridge.hosts()
        return text

    def close(self) -> None:
        self._networks.leave(self.name, self._gid)
