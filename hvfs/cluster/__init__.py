"""Managers that know about each other: the events of shared volumes over Redis streams.

A source with ``shared = "ID"`` is one volume that managers on several hosts serve (an
NFS or JuiceFS mount; on one machine, the same directory). A manager started with
``HVFS_CLUSTER=redis://…`` (hvfs.cluster.identity) joins the cluster (``member.join``):
it publishes the events it serves on each shared volume to that volume's stream and
reads the other hosts', which reach the audit of its groups that mount the volume
(marked ``VM@HOST``) and poke the file for the VMs' inotify; scan verdicts are shared by
content hash (``verdicts``). docs/cluster.md says what each service does with them.

The manager knows the member only through ``current()``: None outside a cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hvfs.cluster.member import Member

__all__ = ["Member", "current", "join"]

_current: Member | None = None


def current() -> Member | None:
    """The cluster this manager joined, or None."""
    return _current


def join(state_dir: str) -> Member | None:
    """Join the cluster ``HVFS_CLUSTER`` names (None when it names none), keeping the
    member's files in ``state_dir``; redis-py is imported only then. Raises
    identity.ClusterError (the manager's start fails with its one line)."""
    global _current
    from hvfs.cluster.identity import cluster_config

    config = cluster_config()
    if config is None:
        return None
    from hvfs.cluster.member import Member
    from hvfs.services.scan.shared import share_verdicts

    member = Member(config, state_dir)
    member.join()
    _current = member
    share_verdicts(member.verdicts)
    return member
