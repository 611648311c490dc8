"""Acting as the caller: each worker thread switches to the caller's credentials.

Linux keeps fsuid, fsgid, supplementary groups, capabilities and (after unsharing
CLONE_FS) the umask per thread, so a worker can take on the caller's identity for one
request without touching the other workers, as virtiofsd does.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from hvfs._sys import caps, files, process
from hvfs.api import Credentials

AT_EACCESS = 0x200


@dataclass
class _ThreadIdentity:
    uid: int
    gid: int
    groups: tuple[int, ...]
    effective: int
    permitted: int
    inheritable: int


_local = threading.local()


def _identity() -> _ThreadIdentity:
    identity: _ThreadIdentity | None = getattr(_local, "identity", None)
    if identity is None:
        process.unshare(process.CLONE_FS)  # a umask of this thread's own
        effective, permitted, inheritable = caps.get_thread_caps()
        identity = _ThreadIdentity(
            uid=os.geteuid(),
            gid=os.getegid(),
            groups=tuple(os.getgroups()),
            effective=effective,
            permitted=permitted,
            inheritable=inheritable,
        )
        _local.identity = identity
    return identity


def for_access(creds: Credentials) -> Credentials:
    """access(2) checks with the real ids, and with no capabilities unless the real uid is 0."""
    full = (1 << 64) - 1
    return Credentials(
        uid=creds.real_uid,
        gid=creds.real_gid,
        groups=creds.groups,
        umask=creds.umask,
        capabilities=full if creds.real_uid == 0 else 0,
        real_uid=creds.real_uid,
        real_gid=creds.real_gid,
    )


@contextmanager
def acting_as(creds: Credentials | None) -> Iterator[None]:
    me = _identity()  # also gives this thread a cwd and umask of its own
    if creds is None:
        yield
        return
    old_umask = os.umask(creds.umask)
    wanted_caps = creds.capabilities & me.permitted
    switch_groups = creds.groups != me.groups
    switch_ids = creds.uid != me.uid or creds.gid != me.gid
    switch_caps = wanted_caps != me.effective
    try:
        if switch_groups:
            files.set_thread_groups(creds.groups)
        if switch_ids:
            files.set_thread_fsgid(creds.gid)
            files.set_thread_fsuid(creds.uid)
        if switch_caps:
            caps.set_thread_caps(wanted_caps, me.permitted, me.inheritable)
        yield
    finally:
        if switch_ids:
            files.set_thread_fsuid(me.uid)
            files.set_thread_fsgid(me.gid)
        if switch_caps or switch_ids:  # a changed fsuid also changes the effective set
            caps.set_thread_caps(me.effective, me.permitted, me.inheritable)
        if switch_groups:
            files.set_thread_groups(me.groups)
        os.umask(old_umask)
