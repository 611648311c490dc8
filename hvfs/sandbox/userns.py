"""User namespaces: the manager's own, and the identity maps of each VM's.

The manager always runs in a user namespace of its own, so that it holds exactly the
privileges a VM's root holds over files, no more: as root, every id maps to itself (a
VM's root then acts on host files as docker's does, without any capability outside);
as an unprivileged user, that user's id is root inside, and the user's subordinate ids
(/etc/subuid, through newuidmap) are 1, 2, … — or, without them, root is the only id.
A VM's user namespace maps the manager's ids onto themselves, so ids read by the
manager from a VM need no translation.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass

from hvfs._sys import mount as m
from hvfs._sys import namespaces, process
from hvfs._sys.abi import CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWUSER
from hvfs.sandbox import subids
from hvfs.sandbox.errors import SetupError
from hvfs.sandbox.preflight import userns_hint

ALL_IDS = 4294967295


@dataclass(frozen=True)
class IdMap:
    """The ids of the manager's namespace: 0 up to ``count``, in the extents of its maps."""

    count: int
    single_reason: str = ""  # why there is only one id, when there is
    extents: tuple[tuple[int, int], ...] = ()  # (first id, count) as the manager's maps split them

    def identity(self) -> str:
        """The VM's map: each of the manager's ids to itself. The kernel maps every extent
        of a child's map through one extent of its parent's, so the splits must match."""
        extents = self.extents or ((0, self.count),)
        return "".join(f"{first} {first} {count}\n" for first, count in extents)

    def check(self, uid: int, gid: int) -> None:
        """Refuse a VM user these maps cannot hold, saying why."""
        if max(uid, gid) >= self.count:
            hint = self.single_reason or f"ids 0 to {self.count - 1} are mapped"
            raise SetupError("--user", f"id {max(uid, gid)} cannot be mapped here", hint)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


# Root's id-map helper: a shell spawned (vfork and exec), not a fork of the manager. A fork
# copies the page tables of the manager's ~40 MB and turns its next write to each page into
# a copy until the child has exited: 2.6-10 ms of every cold start, against 1.0-1.2 ms for
# the shell (measured after the manager's imports, alternated). $1 is the manager's pid;
# it writes nothing unless the manager says "u" (it has unshared), and says "m" once both
# maps are written (each in one write, as the kernel requires).
SHELL = "/bin/sh"
_MAP_ALL = (
    'read -r go && [ "$go" = u ] && printf "0 0 %s\\n" "$2" > "/proc/$1/uid_map"'
    ' && printf "0 0 %s\\n" "$2" > "/proc/$1/gid_map" && echo m'
)


def _spawn_root_helper() -> tuple[int, int, int] | None:
    """The shell that will map every id of this process's next user namespace, with the
    pipes to tell it and to hear it: (pid, tell, hear); None where there is no shell."""
    to_helper, tell = os.pipe()
    hear, from_helper = os.pipe()
    try:
        pid = os.posix_spawn(
            SHELL, ["sh", "-c", _MAP_ALL, "sh", str(os.getpid()), str(ALL_IDS)], {},
            file_actions=[
                (os.POSIX_SPAWN_DUP2, to_helper, 0),
                (os.POSIX_SPAWN_DUP2, from_helper, 1),
                (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            ],
        )  # fmt: skip
    except OSError:
        os.close(tell)
        os.close(hear)
        return None
    finally:
        os.close(to_helper)
        os.close(from_helper)
    return pid, tell, hear


def _fork_helper(subordinate: subids.SubordinateIds | None, uid: int, gid: int) -> tuple[int, int, int]:
    """A fork of this process that maps its next user namespace's ids: through newuidmap
    for ``subordinate`` ids, else all of them (root without a shell); (pid, tell, hear)."""
    ready_read, tell = os.pipe()
    hear, done_write = os.pipe()
    helper = os.fork()
    if helper == 0:
        os.close(tell)
        os.close(hear)
        code = 1
        try:
            if os.read(ready_read, 1) == b"u":
                parent = os.getppid()
                if subordinate:
                    subids.map_with_helpers(parent, uid, gid, subordinate)
                else:
                    _write(f"/proc/{parent}/uid_map", f"0 0 {ALL_IDS}\n")
                    _write(f"/proc/{parent}/gid_map", f"0 0 {ALL_IDS}\n")
                os.write(done_write, b"m")
                code = 0
        finally:
            os._exit(code)
    os.close(ready_read)
    os.close(done_write)
    return helper, tell, hear


def enter_manager_namespaces(*, network: bool = False) -> IdMap:
    """Move this (single-threaded) process into a new user and mount namespace, and a
    network namespace of its own when ``network`` (its VMs' bridge lives there)."""
    uid, gid = os.geteuid(), os.getegid()
    privileged = uid == 0
    subordinate = None if privileged else subids.lookup(uid)
    helper: tuple[int, int, int] | None = None
    forked = False
    if privileged or subordinate:
        # Only a process outside the new namespace may map more than its own id (as
        # root, or through the setuid newuidmap): a helper started before unshare does it.
        helper = _spawn_root_helper() if privileged else None
        if helper is None:
            helper, forked = _fork_helper(subordinate, uid, gid), True
    try:
        process.unshare(CLONE_NEWUSER | CLONE_NEWNS | (CLONE_NEWNET if network else 0))
    except OSError as e:
        if helper is not None:
            os.close(helper[1])
            os.close(helper[2])
            os.waitpid(helper[0], 0)
        raise SetupError("user namespace", e.strerror or str(e), userns_hint()) from None
    if helper is not None:
        pid, tell, hear = helper
        with contextlib.suppress(BrokenPipeError):  # a helper gone already has mapped nothing: said below
            os.write(tell, b"u\n")
        os.close(tell)
        mapped = os.read(hear, 2)
        os.close(hear)
        if not mapped.startswith(b"m"):
            os.waitpid(pid, 0)
            hint = "check newuidmap and /etc/subuid" if subordinate else (
                f"{SHELL if not forked else 'a fork of the manager'} could not write /proc/{os.getpid()}/uid_map"
                " (is it confined by a security module?)"
            )  # fmt: skip
            raise SetupError("user namespace", "could not write the manager's id maps", hint)
        if subordinate:
            idmap = IdMap(subordinate.count, extents=((0, 1), (1, subordinate.count - 1)))
        else:
            idmap = IdMap(ALL_IDS)
    else:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"0 {uid} 1\n")
        _write("/proc/self/gid_map", f"0 {gid} 1\n")
        idmap = IdMap(1, subids.why_single_id(uid))
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    # Mounts made here never propagate back to the host; the host's still reach us.
    m.mount(None, "/", None, m.MS_REC | m.MS_SLAVE)
    # The maps are written: a fork's exit (a copy of this big process torn down) is not waited for.
    if helper is not None and forked:
        threading.Thread(target=os.waitpid, args=(helper[0], 0), name="hvfs-idmap-reaper", daemon=True).start()
    elif helper is not None:
        os.waitpid(helper[0], 0)  # a shell that has said "m": it exits now
    return idmap


def join_manager_namespaces(vm_process: int) -> IdMap:
    """Move this (single-threaded) process into the user namespace of the manager that
    started the VM whose launcher is ``vm_process`` (the parent of the VM's own), and into a
    new mount namespace of its own, as a restarted manager does. Its id maps are the
    ones that namespace was given; as its creator's user, this process has every
    capability there."""
    outside = os.geteuid()
    user = os.open(f"/proc/{vm_process}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    try:
        manager = namespaces.parent(user)
    except OSError as e:
        raise SetupError("user namespace", f"cannot reach the VMs' manager namespace ({e.strerror})") from None
    finally:
        os.close(user)
    try:
        namespaces.setns(manager, CLONE_NEWUSER)
    except OSError as e:
        raise SetupError("user namespace", f"cannot join the VMs' manager namespace ({e.strerror})") from None
    finally:
        os.close(manager)
    process.unshare(CLONE_NEWNS)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    m.mount(None, "/", None, m.MS_REC | m.MS_SLAVE)
    return current_idmap(outside)


def current_idmap(outside_uid: int) -> IdMap:
    """The IdMap of the user namespace this process is in, read from its uid map
    (``outside_uid``: whose namespace it is, for the reason of a single id)."""
    extents = []
    with open("/proc/self/uid_map") as f:
        for line in f:
            inside, _outside, count = (int(field) for field in line.split())
            extents.append((inside, count))
    total = sum(count for _, count in extents)
    reason = subids.why_single_id(outside_uid) if total == 1 else ""
    return IdMap(total, reason, tuple(extents) if len(extents) > 1 else ())


def map_vm(pid: int, idmap: IdMap) -> None:
    """Write the identity maps of the VM whose launcher is ``pid``."""
    _write(f"/proc/{pid}/uid_map", idmap.identity())
    _write(f"/proc/{pid}/gid_map", idmap.identity())
