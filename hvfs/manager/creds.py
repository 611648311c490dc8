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


def _switch(creds: Credentials, me: _ThreadIdentity) -> tuple[bool, bool, bool]:
    wanted_caps = creds.capabilities & me.permitted
    switched = (creds.groups != me.groups, creds.uid != me.uid or creds.gid != me.gid, wanted_caps != me.effective)
    groups, ids, capabilities = switched
    if groups:
        files.set_thread_groups(creds.groups)
    if ids:
        files.set_thread_fsgid(creds.gid)
        files.set_thread_fsuid(creds.uid)
    if capabilities:
        caps.set_thread_caps(wanted_caps, me.permitted, me.inheritable)
    return switched


def _restore(switched: tuple[bool, bool, bool], me: _ThreadIdentity) -> None:
    groups, ids, capabilities = switched
    if ids:
        files.set_thread_fsuid(me.uid)
        files.set_thread_fsgid(me.gid)
    if capabilities or ids:  # a changed fsuid also changes the effective set
        caps.set_thread_caps(me.effective, me.permitted, me.inheritable)
    if groups:
        files.set_thread_groups(me.groups)


@contextmanager
def acting_as(creds: Credentials | None) -> Iterator[None]:
    """Run the body with the caller's fsuid, fsgid, groups, capabilities and umask."""
    me = _identity()  # also gives this thread a cwd and umask of its own
    if creds is None:
        yield
        return
    old_umask = os.umask(creds.umask)
    switched = _switch(creds, me)
    _local.acting = (creds, switched)
    try:
        yield
    finally:
        _local.acting = None
        _restore(switched, me)
        os.umask(old_umask)


@contextmanager
def manager_rights() -> Iterator[None]:
    """Inside ``acting_as``, the manager's own rights for a moment: for a lookup the
    caller has already made (its cwd, its dirfd), which the kernel does not repeat."""
    acting = getattr(_local, "acting", None)
    if acting is None or not any(acting[1]):
        yield
        return
    me = _identity()
    creds, switched = acting
    _restore(switched, me)
    try:
        yield
    finally:
        _local.acting = (creds, _switch(creds, me))
