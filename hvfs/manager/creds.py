"""Acting as the caller: each worker thread switches to the caller's credentials.

Linux keeps fsuid, fsgid, supplementary groups, capabilities and (after unsharing
CLONE_FS) the umask per thread, so a worker can take on the caller's identity for one
request without touching the other workers, as virtiofsd does.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from hvfs._sys import caps, files, process
from hvfs._sys.abi import CLONE_FS

if TYPE_CHECKING:  # the messages load with a first request (hvfs.api)
    from hvfs.api import Credentials


@dataclass
class _ThreadIdentity:
    """A thread's ids, capabilities and umask, as it acts for a caller."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    effective: int
    permitted: int
    inheritable: int
    umask: int
    # The last credentials this thread acted as that needed no switch at all (the caller is
    # the manager's own user, as a rootless VM's root is): the same object next time (the
    # drivers keep a thread's credentials, frozen) is known to need none, with no compare.
    unswitched: Credentials | None = None


_local = threading.local()


def _identity() -> _ThreadIdentity:
    identity: _ThreadIdentity | None = getattr(_local, "identity", None)
    if identity is None:
        process.unshare(CLONE_FS)  # a umask of this thread's own
        effective, permitted, inheritable = caps.get_thread_caps()
        umask = os.umask(0o022)  # the only way to read it is to set it
        os.umask(umask)
        identity = _ThreadIdentity(
            uid=os.geteuid(),
            gid=os.getegid(),
            groups=tuple(os.getgroups()),
            effective=effective,
            permitted=permitted,
            inheritable=inheritable,
            umask=umask,
        )
        _local.identity = identity
    return identity


def _switch(creds: Credentials, me: _ThreadIdentity) -> tuple[bool, bool, bool]:
    wanted_caps = creds.capabilities & me.permitted
    ids = creds.uid != me.uid or creds.gid != me.gid
    # A fsuid moved off or onto 0 drops or raises the fs capabilities in the effective set
    # (unless SECBIT_NO_SETUID_FIXUP): after the ids, the set is made the caller's even
    # where it equals the manager's, as for a caller that kept its capabilities as uid 1000.
    groups = files.groups_to_switch(creds.gid, creds.groups, me.groups)
    switched = (groups, ids, ids or wanted_caps != me.effective)
    groups, ids, capabilities = switched
    try:
        if groups:
            files.set_thread_groups(creds.groups)
        if ids:
            files.set_thread_fsgid(creds.gid)
            files.set_thread_fsuid(creds.uid)
        if capabilities:
            caps.set_thread_caps(wanted_caps, me.permitted, me.inheritable)
    except BaseException:
        _restore(switched, me)  # never leave a worker half switched to a caller
        raise
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


_NOTHING_SWITCHED = (False, False, False)


def acting_as(creds: Credentials | None) -> _ActingAs:
    """Run the body with the caller's fsuid, fsgid, groups, capabilities and umask.

    Each is changed only where the caller's differs from the manager's, and put back
    afterwards, so that outside this block a worker always has the manager's own
    identity."""
    return _ActingAs(creds)


def manager_rights() -> _ManagerRights:
    """Inside ``acting_as``, the manager's own rights for a moment: for a lookup the
    caller has already made (its cwd, its dirfd), which the kernel does not repeat."""
    return _ManagerRights()


class _ActingAs:
    """Implements acting_as. A class rather than a generator: it runs for every request."""

    __slots__ = ("_creds", "_me", "_switched", "_umask")

    def __init__(self, creds: Credentials | None) -> None:
        self._creds = creds

    def __enter__(self) -> None:
        me = self._me = _identity()  # also gives this thread a cwd and umask of its own
        creds = self._creds
        if creds is None:
            return
        if creds is me.unswitched:  # nothing to switch, nor to put back (``manager_rights`` neither)
            self._creds = None
            return
        self._umask = creds.umask != me.umask
        if self._umask:
            os.umask(creds.umask)
        try:
            self._switched = _switch(creds, me)
        except BaseException:
            if self._umask:
                os.umask(me.umask)
            raise
        if not self._umask and self._switched == _NOTHING_SWITCHED:
            me.unswitched = creds
        _local.acting = (creds, self._switched)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._creds is None:
            return
        _local.acting = None
        if self._switched != _NOTHING_SWITCHED:
            _restore(self._switched, self._me)
        if self._umask:
            os.umask(self._me.umask)


class _ManagerRights:
    """Implements manager_rights."""

    __slots__ = ("_acting",)

    def __enter__(self) -> None:
        acting = getattr(_local, "acting", None)
        self._acting = acting if acting is not None and any(acting[1]) else None
        if self._acting is not None:
            _restore(self._acting[1], _identity())

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._acting is not None:
            creds = self._acting[0]
            _local.acting = (creds, _switch(creds, _identity()))
