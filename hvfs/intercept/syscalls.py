"""How each system call is handled: the one table of the driver, each entry with its decoder.

An entry says how the filter treats a syscall (``Handling``: the BPF compiled from this
table by ``filter.py``) and, for every syscall the filter may send to the driver, which
decoder turns its arguments into an HVFS API request (``hvfs.intercept.decoders``), as
gVisor's ``linux64.go`` keeps each syscall's implementation in its table entry. Table and
decoders know nothing of seccomp: any driver can use them (``decoders/tracee.py``).

A syscall absent from the table is allowed when libseccomp knows it (fd-based I/O and
everything that names no file), and answered ENOSYS when its number is newer than the
table libseccomp was built with: libc falls back from ENOSYS, and no new path syscall can
slip past the manager. ``docs/compatibility.md`` is generated from this table
(``python -m hvfs.intercept.syscalls``).

To add a syscall: its entry here, its decoder in the family module of
``hvfs/intercept/decoders/`` that mirrors the handler serving its request, and, for a new
request type, that type in ``hvfs/api/messages.py`` and its handler in
``hvfs/manager/handlers/`` (``tests/test_syscall_table.py`` checks that each has the other).
"""

from __future__ import annotations

import enum

from hvfs._sys.abi import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWTIME,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    O_CREAT,
    O_RDWR,
    O_TRUNC,
    O_WRONLY,
    TMPFILE_BIT,
)
from hvfs.intercept.decoders import attrs, names, opening, query, sending, sockets
from hvfs.intercept.decoders.context import Decoder


class Handling(enum.Enum):
    ALLOW = "runs natively"
    MUTATE = "always trapped and served by the manager"
    OPEN = "trapped when the flags ask to write, create or truncate; otherwise native"
    READ = "native; trapped and served in strict mode"
    STAT_AT = "native with AT_EMPTY_PATH (acts on a held fd); otherwise as READ"
    FD_META = "always trapped; the manager acts on the caller's fd, if it is the VM's own (else EPERM)"
    ACCESS = "trapped when asking for W_OK (the boot view is read-only); otherwise as READ"
    ALWAYS = "always trapped and served: the read-only boot view would answer it wrongly"
    SOCKET = (
        "always trapped (the address is in memory, and the fd may be changed): "
        "the manager performs the call on the socket it checked"
    )
    BIND = (
        "always trapped: the manager binds unix sockets; other families continue, "
        "as no race can make of them a name outside the VM"
    )
    SENDTO = "native without a destination (a NULL address); otherwise as connect"
    CREDS = (
        "always trapped, never decoded: may change the caller's credentials or umask, so the "
        "driver forgets those it read (hvfs/intercept/credcache.py), then continues"
    )
    EXEC = (
        "always trapped: an exec recomputes capabilities, so the driver forgets the caller's "
        "credentials; then checked and continued in strict mode, continued unchecked otherwise"
    )
    CLONE = "native unless a namespace flag is set, then EPERM"
    EPERM = "fails with EPERM"
    ENOSYS = "fails with ENOSYS"

    @property
    def notifies(self) -> bool:
        """Whether the filter sends such a call to the driver (in some configuration):
        then its entry must carry a decoder."""
        return self not in _NEVER_NOTIFIED

    @property
    def decoded(self) -> bool:
        """Whether such a call, when notified, is decoded into a request for the manager
        (then its entry must carry a decoder); CREDS calls are the driver's own."""
        return self.notifies and self is not Handling.CREDS


_NEVER_NOTIFIED = frozenset({Handling.ALLOW, Handling.CLONE, Handling.EPERM, Handling.ENOSYS})


class Syscall:
    """One entry of the table (a plain class: the driver imports the table at every start,
    and a dataclass costs more to define than the whole table to build)."""

    __slots__ = ("decoder", "flags_arg", "handling", "name", "note", "number")

    def __init__(
        self,
        name: str,
        handling: Handling,
        decoder: Decoder | None = None,
        *,
        flags_arg: int | None = None,
        number: int | None = None,
        note: str = "",
    ) -> None:
        self.name = name
        self.handling = handling
        self.decoder = decoder  # for every call the filter may notify
        self.flags_arg = flags_arg  # which argument the BPF tests (OPEN, STAT_AT, ACCESS, CLONE, SENDTO)
        self.number = number  # for calls newer than libseccomp's table (same on all arches)
        self.note = note

    def __repr__(self) -> str:
        return f"Syscall({self.name!r}, {self.handling.name})"


# The calls by which a thread changes its own ids, groups or capabilities.
CREDENTIAL_CALLS = ("setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid",
                    "setgroups", "capset")  # fmt: skip

M, R, E, N = Handling.MUTATE, Handling.READ, Handling.EPERM, Handling.ENOSYS
_CONTINUED = "checked, then continued; with AT_EMPTY_PATH and an empty path, continued unchecked, as %s runs natively"
_ON_THE_FD = "with AT_EMPTY_PATH and an empty path, as %s: on the caller's fd if it is the VM's own (else EPERM)"

TABLE: tuple[Syscall, ...] = (
    Syscall("open", Handling.OPEN, opening.open_, flags_arg=1),
    Syscall("openat", Handling.OPEN, opening.openat, flags_arg=2),
    Syscall("creat", M, opening.creat),
    Syscall("openat2", M, opening.openat2, note="flags live in memory, out of the BPF's reach"),
    Syscall("mkdir", M, names.mkdir),
    Syscall("mkdirat", M, names.mkdirat),
    Syscall("mknod", M, names.mknod, note="device nodes: EPERM, as in any user namespace"),
    Syscall("mknodat", M, names.mknodat, note="device nodes: EPERM, as in any user namespace"),
    Syscall("unlink", M, names.unlink),
    Syscall("unlinkat", M, names.unlinkat),
    Syscall("rmdir", M, names.rmdir),
    Syscall("rename", M, names.rename),
    Syscall("renameat", M, names.renameat),
    Syscall("renameat2", M, names.renameat2),
    Syscall("link", M, names.link),
    Syscall("linkat", M, names.linkat),
    Syscall("symlink", M, names.symlink),
    Syscall("symlinkat", M, names.symlinkat),
    Syscall("chmod", M, attrs.chmod),
    Syscall("fchmodat", M, attrs.fchmodat),
    Syscall("fchmodat2", M, attrs.fchmodat2, number=452),
    Syscall("chown", M, attrs.chown),
    Syscall("lchown", M, attrs.lchown),
    Syscall("fchownat", M, attrs.fchownat),
    Syscall("truncate", M, attrs.truncate),
    Syscall("utime", M, attrs.utime),
    Syscall("utimes", M, attrs.utimes),
    Syscall("futimesat", M, attrs.futimesat),
    Syscall("utimensat", M, attrs.utimensat, note="a NULL path acts on the fd"),
    Syscall("setxattr", M, attrs.setxattr),
    Syscall("lsetxattr", M, attrs.lsetxattr),
    Syscall("removexattr", M, attrs.removexattr),
    Syscall("lremovexattr", M, attrs.lremovexattr),
    Syscall("setxattrat", M, attrs.setxattrat, number=463, note=_ON_THE_FD % "fsetxattr"),
    Syscall("removexattrat", M, attrs.removexattrat, number=466, note=_ON_THE_FD % "fremovexattr"),
    Syscall("fchmod", Handling.FD_META, attrs.fchmod),
    Syscall("fchown", Handling.FD_META, attrs.fchown),
    Syscall("fsetxattr", Handling.FD_META, attrs.fsetxattr),
    Syscall("fremovexattr", Handling.FD_META, attrs.fremovexattr),
    Syscall("stat", R, query.stat),
    Syscall("lstat", R, query.lstat),
    Syscall("newfstatat", Handling.STAT_AT, query.newfstatat, flags_arg=3),
    Syscall("statx", Handling.STAT_AT, query.statx, flags_arg=2),
    Syscall("access", Handling.ACCESS, query.access, flags_arg=1),
    Syscall("faccessat", Handling.ACCESS, query.faccessat, flags_arg=2),
    Syscall("faccessat2", Handling.ACCESS, query.faccessat2, flags_arg=2),
    Syscall("readlink", R, query.readlink),
    Syscall("readlinkat", R, query.readlinkat),
    Syscall("chdir", R, query.chdir, note="checked, then continued: the kernel keeps the cwd"),
    Syscall("execve", Handling.EXEC, query.execve, note="checked, then continued: the kernel loads the binary"),
    Syscall("execveat", Handling.EXEC, query.execveat, note="checked, then continued"),
    Syscall(
        "statfs",
        Handling.ALWAYS,
        query.statfs,
        note="served from the writable view, so a writable mount is not ST_RDONLY",
    ),
    Syscall("fstatfs", Handling.ALWAYS, query.fstatfs, note="as statfs, for the file the fd is open on"),
    Syscall("getxattr", R, query.getxattr, note="checked, then continued"),
    Syscall("lgetxattr", R, query.lgetxattr, note="checked, then continued"),
    Syscall("listxattr", R, query.listxattr, note="checked, then continued"),
    Syscall("llistxattr", R, query.llistxattr, note="checked, then continued"),
    Syscall("getxattrat", R, query.getxattrat, number=464, note=_CONTINUED % "fgetxattr"),
    Syscall("listxattrat", R, query.listxattrat, number=465, note=_CONTINUED % "flistxattr"),
    Syscall("inotify_add_watch", R, query.inotify_add_watch, note="checked, then continued"),
    Syscall("fanotify_mark", R, query.fanotify_mark, note="checked, then continued"),
    Syscall(
        "bind",
        Handling.BIND,
        sockets.bind,
        note="a continued bind lands on the read-only boot view, or in the VM's network",
    ),
    Syscall(
        "connect",
        Handling.SOCKET,
        sockets.connect,
        note="a unix path: only sockets made in a VM, or on a mount marked 'sockets'",
    ),
    Syscall("sendto", Handling.SENDTO, sending.sendto, flags_arg=4, note="datagrams to a unix path: as connect"),
    Syscall(
        "sendmsg",
        Handling.SOCKET,
        sending.sendmsg,
        note="the manager sends a copy (at most 1 MiB; a stream returns after it)",
    ),
    Syscall(
        "sendmmsg",
        Handling.SOCKET,
        sending.sendmmsg,
        note="as sendmsg, for the first message only (a partial send; callers retry)",
    ),
    *(Syscall(name, Handling.CREDS) for name in CREDENTIAL_CALLS),
    Syscall("umask", Handling.CREDS, note="the umask is shared by threads: kept ones are unused until it is seen"),
    Syscall("prctl", Handling.CREDS, note="forgotten for the options that touch capabilities or securebits"),
    Syscall("clone", Handling.CLONE, flags_arg=0),
    Syscall("unshare", Handling.CLONE, flags_arg=0, note="unsharing files or fs state is allowed"),
    Syscall("clone3", N, note="its flags live in memory; libc falls back to clone"),
    Syscall("setns", E),
    Syscall("mount", E),
    Syscall("umount2", E),
    Syscall("pivot_root", E),
    Syscall("chroot", E),
    Syscall("move_mount", E),
    Syscall("open_tree", E),
    Syscall("open_tree_attr", E, number=467),
    Syscall("fsopen", E),
    Syscall("fsmount", E),
    Syscall("fsconfig", E),
    Syscall("fspick", E),
    Syscall("mount_setattr", E),
    Syscall("io_uring_setup", E, note="io_uring runs file operations past seccomp"),
    Syscall("io_uring_enter", E),
    Syscall("io_uring_register", E),
    Syscall("name_to_handle_at", E),
    Syscall("open_by_handle_at", E, note="opens by inode, past every path check"),
    Syscall("bpf", E),
    Syscall("userfaultfd", E, note="can stall the manager's reads of VM memory"),
    Syscall("kexec_load", E),
    Syscall("kexec_file_load", E),
    Syscall("init_module", E),
    Syscall("finit_module", E),
    Syscall("delete_module", E),
    Syscall("keyctl", E),
    Syscall("add_key", E),
    Syscall("request_key", E),
    Syscall("perf_event_open", E),
    Syscall("acct", E),
    Syscall("swapon", E),
    Syscall("swapoff", E),
    Syscall("quotactl", E),
    Syscall("quotactl_fd", E),
    Syscall("uselib", N),
    Syscall("file_getattr", N, number=468),
    Syscall("file_setattr", N, number=469),
)

BY_NAME: dict[str, Syscall] = {s.name: s for s in TABLE}

# Bits that make an open a write: the BPF compares the flags argument against them.
OPEN_WRITE_BITS = (O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, TMPFILE_BIT)
NAMESPACE_FLAGS = (CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET)
UNSHARE_ONLY_FLAGS = (CLONE_NEWTIME,)  # in clone() this bit is part of the exit signal


def compatibility_markdown() -> str:
    """The table as docs/compatibility.md shows it."""
    lines = [
        "# System call compatibility",
        "",
        "Generated by `python -m hvfs.intercept.syscalls` from `hvfs/intercept/syscalls.py`.",
        "Every syscall not listed runs natively when libseccomp knows it, and fails with",
        "ENOSYS when it is newer than libseccomp's table. *Request* is the HVFS API request",
        "(`hvfs/api/messages.py`) a trapped call is decoded to.",
        "",
        "| syscall | handling | request | note |",
        "| --- | --- | --- | --- |",
    ]
    for s in TABLE:
        requests = ", ".join(f"`{r.__name__}`" for r in s.decoder.requests) if s.decoder else ""
        lines.append(f"| `{s.name}` | {s.handling.value} | {requests} | {s.note} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(compatibility_markdown(), end="")
