"""The manager's parts a first run does not need, made (and imported) when first used:
every cold ``hvfs run`` waits for the manager's imports (docs/performance.md, "A cold
start"). Containers (``hvfs docker``), shared networks (``--network NAME``), published
ports and a project's recreation plan come with the first request that names them."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hvfs.hypervisor import control
    from hvfs.hypervisor.containers import Containers
    from hvfs.hypervisor.group import Group
    from hvfs.hypervisor.networks import Networks


class LazyParts:
    @functools.cached_property
    def containers(self) -> Containers:
        from hvfs.hypervisor.containers import Containers

        return Containers(self)  # type: ignore[arg-type]  # mixed into the Daemon it needs

    @functools.cached_property
    def networks(self) -> Networks:  # hvfs run --network NAME
        from hvfs.hypervisor.networks import Networks

        return Networks()

    def containers_closed(self, connection: control.Connection) -> None:
        if "containers" in self.__dict__:  # none made: none of this client's
            self.containers.closed(connection)

    def leave_network(self, group: Group) -> None:
        """Out of the others' /etc/hosts, if on a shared network (only one made it so)."""
        if "networks" in self.__dict__:
            from hvfs.hypervisor.networks import SharedBridge

            if isinstance(group.bridge, SharedBridge):
                group.bridge.close()

    def _op_container(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        self.containers.create(message, fds, connection)

    def _op_container_start(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        self.containers.start(message, connection)

    def _op_container_follow(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        self.containers.follow(message, connection)

    def _op_container_remove(self, message: dict[str, Any], fds: list[int], connection: control.Connection) -> None:
        self.containers.remove(message, connection)
