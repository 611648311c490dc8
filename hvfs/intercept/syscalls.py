"""How each system call is handled: the one declarative table of the driver.

A syscall absent from the table is allowed when libseccomp knows it (fd-based I/O and
everything that names no file), and answered ENOSYS when its number is newer than the
table libseccomp was built with: libc falls back from ENOSYS, and no new path syscall can
slip past the manager. ``docs/compatibility.md`` is generated from this table
(``python -m hvfs.intercept.syscalls``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


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
    CLONE = "native unless a namespace flag is set, then EPERM"
    EPERM = "fails with EPERM"
    ENOSYS = "fails with ENOSYS"


@dataclass(frozen=True)
class Syscall:
    name: str
    handling: Handling
    flags_arg: int | None = None  # which argument the BPF tests (OPEN, STAT_AT, CLONE, SENDTO)
    number: int | None = None  # for calls newer than libseccomp's table (same on all arches)
    note: str = ""


M, R, E, N = Handling.MUTATE, Handling.READ, Handling.EPERM, Handling.ENOSYS

TABLE: tuple[Syscall, ...] = (
    Syscall("open", Handling.OPEN, flags_arg=1),
    Syscall("openat", Handling.OPEN, flags_arg=2),
    Syscall("creat", M),
    Syscall("openat2", M, note="flags live in memory, out of the BPF's reach"),
    Syscall("mkdir", M),
    Syscall("mkdirat", M),
    Syscall("mknod", M, note="device nodes: EPERM, as in any user namespace"),
    Syscall("mknodat", M, note="device nodes: EPERM, as in any user namespace"),
    Syscall("unlink", M),
    Syscall("unlinkat", M),
    Syscall("rmdir", M),
    Syscall("rename", M),
    Syscall("renameat", M),
    Syscall("renameat2", M),
    Syscall("link", M),
    Syscall("linkat", M),
    Syscall("symlink", M),
    Syscall("symlinkat", M),
    Syscall("chmod", M),
    Syscall("fchmodat", M),
    Syscall("fchmodat2", M, number=452),
    Syscall("chown", M),
    Syscall("lchown", M),
    Syscall("fchownat", M),
    Syscall("truncate", M),
    Syscall("utime", M),
    Syscall("utimes", M),
    Syscall("futimesat", M),
    Syscall("utimensat", M, note="a NULL path acts on the fd"),
    Syscall("setxattr", M),
    Syscall("lsetxattr", M),
    Syscall("removexattr", M),
    Syscall("lremovexattr", M),
    Syscall("fchmod", Handling.FD_META),
    Syscall("fchown", Handling.FD_META),
    Syscall("fsetxattr", Handling.FD_META),
    Syscall("fremovexattr", Handling.FD_META),
    Syscall("stat", R),
    Syscall("lstat", R),
    Syscall("newfstatat", Handling.STAT_AT, flags_arg=3),
    Syscall("statx", Handling.STAT_AT, flags_arg=2),
    Syscall("access", Handling.ACCESS, flags_arg=1),
    Syscall("faccessat", Handling.ACCESS, flags_arg=2),
    Syscall("faccessat2", Handling.ACCESS, flags_arg=2),
    Syscall("readlink", R),
    Syscall("readlinkat", R),
    Syscall("chdir", R, note="checked, then continued: the kernel keeps the cwd"),
    Syscall("execve", R, note="checked, then continued: the kernel loads the binary"),
    Syscall("execveat", R, note="checked, then continued"),
    Syscall("statfs", Handling.ALWAYS, note="served from the writable view, so a writable mount is not ST_RDONLY"),
    Syscall("fstatfs", Handling.ALWAYS, note="as statfs, for the file the fd is open on"),
    Syscall("getxattr", R, note="checked, then continued"),
    Syscall("lgetxattr", R, note="checked, then continued"),
    Syscall("listxattr", R, note="checked, then continued"),
    Syscall("llistxattr", R, note="checked, then continued"),
    Syscall("inotify_add_watch", R, note="checked, then continued"),
    Syscall("fanotify_mark", R, note="checked, then continued"),
    Syscall("bind", Handling.BIND, note="a continued bind lands on the read-only boot view, or in the VM's network"),
    Syscall("connect", Handling.SOCKET, note="a unix path: only sockets made in a VM, or on a mount marked 'sockets'"),
    Syscall("sendto", Handling.SENDTO, flags_arg=4, note="datagrams to a unix path: as connect"),
    Syscall("sendmsg", Handling.SOCKET, note="the manager sends a copy (at most 1 MiB; a stream returns after it)"),
    Syscall("sendmmsg", Handling.SOCKET, note="as sendmsg, for the first message only (a partial send; callers retry)"),
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
    Syscall("setxattrat", N, number=463, note="libc falls back to setxattr"),
    Syscall("getxattrat", N, number=464),
    Syscall("listxattrat", N, number=465),
    Syscall("removexattrat", N, number=466),
    Syscall("file_getattr", N, number=468),
    Syscall("file_setattr", N, number=469),
)

BY_NAME: dict[str, Syscall] = {s.name: s for s in TABLE}

# Bits that make an open a write: the BPF compares the flags argument against them.
O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_TMPFILE_BIT = 0o1, 0o2, 0o100, 0o1000, 0o20000000
OPEN_WRITE_BITS = (O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_TMPFILE_BIT)
AT_EMPTY_PATH = 0x1000
W_OK = 2
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
UNSHARE_ONLY_FLAGS = (0x80,)  # CLONE_NEWTIME: in clone() this bit is part of the exit signal


def compatibility_markdown() -> str:
    """The table as docs/compatibility.md shows it."""
    lines = [
        "# System call compatibility",
        "",
        "Generated by `python -m hvfs.intercept.syscalls` from `hvfs/intercept/syscalls.py`.",
        "Every syscall not listed runs natively when libseccomp knows it, and fails with",
        "ENOSYS when it is newer than libseccomp's table.",
        "",
        "| syscall | handling | note |",
        "| --- | --- | --- |",
    ]
    for s in TABLE:
        lines.append(f"| `{s.name}` | {s.handling.value} | {s.note} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(compatibility_markdown(), end="")
