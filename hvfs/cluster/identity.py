"""Who this manager is in a cluster and where the cluster's Redis is.

A manager is started on demand by its front ends, which hand it their ``HVFS_*``
variables (hvfs.hypervisor.client): ``HVFS_CLUSTER`` (the Redis URL) makes it a member,
``HVFS_CLUSTER_HOST`` names this host in the cluster (default: the machine's host name).
Only this module reads them, and it imports nothing of hvfs: a fault rule's ``host=``
(hvfs.services.faults) asks ``host_name`` without a cluster.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from hvfs.errors import HvfsError

CLUSTER_ENV = "HVFS_CLUSTER"
HOST_ENV = "HVFS_CLUSTER_HOST"
_SCHEMES = ("redis", "rediss", "unix")
REMOTE = "@"  # VM@HOST names another host's VM in this manager's events; never in a VM's own name


def is_remote(vm: str) -> bool:
    """Whether an event's VM is another host's (its event came from the cluster): a
    service acts on its own VMs' events only, and records the others' at most."""
    return REMOTE in vm


class ClusterError(HvfsError):
    """The cluster's settings are wrong or its Redis cannot be reached; the message says
    what to fix. A manager that cannot join does not start (exit 125 for its client)."""


@dataclass(frozen=True)
class ClusterConfig:
    """The cluster a manager joins: its Redis and this host's name in it."""

    url: str  # redis://HOST:PORT[/DB], rediss://…, unix:///path/to/redis.sock
    host: str  # this host's name in the cluster: events are marked with it


def host_name() -> str:
    """This host's name in the cluster (``HVFS_CLUSTER_HOST``, else the host name)."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


def host_problem(name: str) -> str | None:
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-" for c in name):
        return f"{HOST_ENV}={name!r} is not a host name; use letters, digits, '.', '_' and '-' (64 at most)"
    return None


def cluster_config() -> ClusterConfig | None:
    """The cluster this manager joins, None when ``HVFS_CLUSTER`` is unset or empty.
    Raises ClusterError for a URL or host name that cannot be right."""
    url = os.environ.get(CLUSTER_ENV, "").strip()
    if not url:
        return None
    from urllib.parse import urlsplit  # with ipaddress: 2 ms of every manager's start, for a cluster's alone

    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES or not (parts.hostname or parts.path):
        raise ClusterError(
            f"{CLUSTER_ENV}={url!r} is not a Redis URL; give redis://HOST:PORT (or unix:///path/to/redis.sock)"
        )
    host = host_name()
    problem = host_problem(host)
    if problem:
        raise ClusterError(problem)
    return ClusterConfig(url, host)
