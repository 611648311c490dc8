"""A project's private network: a bridge in the manager's own network namespace, a veth
pair per VM whose inner end is the VM's eth0, and /etc/hosts entries for VM names.

The manager has a network namespace of its own (as root and rootless alike), so nothing
here touches the host's network, and nothing reaches outside: there is no route out.
pyroute2 is imported here only, and this module only when a project has a bridge, so
that ``hvfs run`` never pays for it (about 95 ms).
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

from pyroute2 import IPRoute

BRIDGE = "hvfs0"


class Bridge:
    def __init__(self, subnet: str) -> None:
        self._ip = IPRoute()
        self.network = ipaddress.IPv4Network(subnet)
        hosts = self.network.hosts()
        self.gateway = str(next(hosts))
        self._free = hosts
        self._ids = itertools.count(1)
        self.entries: dict[str, str] = {}
        self._ip.link("add", ifname=BRIDGE, kind="bridge")
        self._bridge = self._ip.link_lookup(ifname=BRIDGE)[0]
        self._ip.addr("add", index=self._bridge, address=self.gateway, mask=self.network.prefixlen)
        self._ip.link("set", index=self._bridge, state="up")

    def reserve(self, vm: str) -> str:
        """An address for ``vm``, known before it starts so that /etc/hosts can list it."""
        self.entries[vm] = str(next(self._free))
        return self.entries[vm]

    def attach(self, vm: str, init_pid: int) -> dict[str, Any]:
        """Link the VM whose pid 1 is ``init_pid``; returns what pid 1 configures inside."""
        outer = f"hv-{next(self._ids)}"
        self._ip.link("add", ifname=outer, kind="veth", peer={"ifname": "eth0", "net_ns_pid": init_pid})
        index = self._ip.link_lookup(ifname=outer)[0]
        self._ip.link("set", index=index, master=self._bridge, state="up")
        return {"interface": "eth0", "address": self.entries[vm], "prefix": self.network.prefixlen}

    def hosts(self) -> bytes:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{address}\t{name}" for name, address in self.entries.items()]
        return ("\n".join(lines) + "\n").encode()

    def close(self) -> None:
        self._ip.close()
