"""``--user``: hvfs-init resolves names from the VM's own /etc/passwd and /etc/group;
the manager only needs the numbers, to check that its id maps can hold them."""

from __future__ import annotations


def numeric(spec: str) -> tuple[int, int | None] | None:
    """``UID[:GID]`` as numbers, or None when names are involved."""
    user, _, group = spec.partition(":")
    if user.isdigit() and (not group or group.isdigit()):
        return int(user), int(group) if group else None
    return None
