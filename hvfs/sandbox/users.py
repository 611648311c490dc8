"""``--user``: who the command runs as, resolved from the VM's own /etc/passwd and
/etc/group (read as files, so that images without glibc's NSS work too)."""

from __future__ import annotations

from dataclasses import dataclass


class UnknownUser(Exception):
    pass


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def _entries(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []


def numeric(spec: str) -> tuple[int, int | None] | None:
    """``UID[:GID]`` as numbers, or None when names are involved."""
    user, _, group = spec.partition(":")
    if user.isdigit() and (not group or group.isdigit()):
        return int(user), int(group) if group else None
    return None


def resolve(spec: str, passwd: str = "/etc/passwd", group_file: str = "/etc/group") -> User:
    """``USER[:GROUP]`` by name or number, as docker's ``--user``."""
    user, _, group = spec.partition(":")
    accounts = _entries(passwd)
    account = next((a for a in accounts if len(a) >= 7 and (a[0] == user or (user.isdigit() and a[2] == user))), None)
    if account is None and not user.isdigit():
        raise UnknownUser(f"no user named {user!r} in the VM's /etc/passwd")
    uid = int(account[2]) if account else int(user)
    gid = int(account[3]) if account else uid
    groups_table = _entries(group_file)
    if group:
        match = next((g for g in groups_table if len(g) >= 3 and (g[0] == group or g[2] == group)), None)
        if match is None and not group.isdigit():
            raise UnknownUser(f"no group named {group!r} in the VM's /etc/group")
        gid = int(match[2]) if match else int(group)
    name = account[0] if account else None
    extra = sorted({int(g[2]) for g in groups_table if len(g) >= 4 and name and name in g[3].split(",")})
    home = account[5] if account else "/"
    return User(uid=uid, gid=gid, groups=tuple(dict.fromkeys([gid, *extra])), home=home)
