"""Request and response types of the HVFS API. An fd in a message is lent or given
(hvfs.api.fds says what each means)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from hvfs._sys.abi import RENAME_EXCHANGE as RENAME_EXCHANGE  # renameat2's; services take it from here
from hvfs.api.fds import GivenFd, LentFd  # in this module's globals: the wire resolves the hints here


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who a request acts as, with ids as the manager's user namespace sees them."""

    uid: int  # fsuid
    gid: int  # fsgid
    groups: tuple[int, ...]
    umask: int
    capabilities: int  # effective capability mask
    real_uid: int
    real_gid: int

    def for_access(self) -> Credentials:
        """access(2)'s: the real ids, no capabilities unless the real uid is 0 (served_link.h)."""
        uid, gid, capabilities = self.real_uid, self.real_gid, (1 << 64) - 1 if self.real_uid == 0 else 0
        return Credentials(uid, gid, self.groups, self.umask, capabilities, uid, gid)


@dataclass(frozen=True, slots=True)
class Caller:
    """The VM and thread a request comes from, with its credentials where the request needs them."""

    vm: str
    pid: int  # thread id, in the manager's pid namespace
    creds: Credentials | None = None  # present for requests that change something
    # Served again after a manager restart: when the dead manager took it (ns since the
    # epoch), for a change that may have been made already (hvfs.manager.replay).
    replayed_since: int = 0


@dataclass(frozen=True, slots=True)
class VmPath:
    """A path as the VM gave it, with the directory a relative one starts from.

    ``base`` is the absolute VM path of the caller's cwd or dirfd ("/" for an absolute
    ``name``). The manager resolves ``name`` from that directory, as the kernel does, so
    that mount crossings and the search permission of the base's ancestors are native.
    """

    base: str
    name: str
    # The (device, inode) of the caller's base directory, for a relative name: a directory
    # fd from outside the VM (a host directory passed over a socket) has a path string that
    # may name something else in the VM, and must not be mistaken for it.
    base_id: tuple[int, int] | None = field(default=None, compare=False)

    def __str__(self) -> str:
        if self.name.startswith("/"):
            return self.name
        return self.base.rstrip("/") + "/" + self.name


@dataclass(frozen=True, slots=True)
class OpenFile:
    """An open file of the caller, duplicated into the driver, which lends it to the
    manager for one request (and the requests of a ``WouldBlock`` that names it)."""

    fd: LentFd
    path: str  # its virtual path, for events and messages


Target = VmPath | OpenFile


# Requests. Each names the errnos its handler may answer in hvfs.manager.handlers.


@dataclass(frozen=True, slots=True, kw_only=True)
class Open:
    """open(2), openat(2), openat2(2), creat(2)."""

    caller: Caller
    path: VmPath
    flags: int
    mode: int = 0
    resolve: int = 0
    legacy: bool = True  # open/openat/creat: unknown flags are ignored, as the kernel does
    # The caller's own open file that ``path`` names through a magic link (/proc/self/fd/N,
    # /dev/stdout): the call reopens that very file, whatever path it has, if any.
    via: OpenFile | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Stat:
    """stat(2), lstat(2), newfstatat(2) of a path."""

    caller: Caller
    path: VmPath
    follow: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Statx:
    """statx(2) of a path."""

    caller: Caller
    path: VmPath
    flags: int  # AT_* flags other than AT_EMPTY_PATH
    mask: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Access:
    """access(2), faccessat(2), faccessat2(2)."""

    caller: Caller
    path: Target
    mode: int
    flags: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Readlink:
    """readlink(2), readlinkat(2)."""

    caller: Caller
    path: Target


@dataclass(frozen=True, slots=True, kw_only=True)
class Statfs:
    """statfs(2) of a path, fstatfs(2) of an open file."""

    caller: Caller
    path: Target


@dataclass(frozen=True, slots=True, kw_only=True)
class Lookup:
    """A read whose result is the kernel's to give (statfs, getxattr, inotify_add_watch):
    the manager checks that the path resolves, then lets the call continue."""

    caller: Caller
    path: VmPath
    follow: bool
    call: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Chdir:
    """chdir(2)."""

    caller: Caller
    path: VmPath


@dataclass(frozen=True, slots=True, kw_only=True)
class Exec:
    """execve(2), execveat(2), fexecve(3): asked before the kernel runs it."""

    caller: Caller
    path: Target  # an OpenFile for fexecve, or for a /proc/self/fd/N that names no VM path (a memfd)
    follow: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Executed:
    """After the fact: the kernel has loaded ``file`` into the process ``caller.pid``,
    which is stopped before running any of it (``PTRACE_EVENT_EXEC``). ``file`` is the
    very executed file (opened through /proc/PID/exe), whatever path the exec named. An
    Errno answer kills the process; only the exec tracer, which runs while a service
    must judge what VMs run (a scanner), sends it."""

    caller: Caller
    file: OpenFile


@dataclass(frozen=True, slots=True, kw_only=True)
class Mkdir:
    """mkdir(2), mkdirat(2)."""

    caller: Caller
    path: VmPath
    mode: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Mknod:
    """mknod(2), mknodat(2)."""

    caller: Caller
    path: VmPath
    mode: int
    device: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Unlink:
    """unlink(2), unlinkat(2) without AT_REMOVEDIR."""

    caller: Caller
    path: VmPath


@dataclass(frozen=True, slots=True, kw_only=True)
class Rmdir:
    """rmdir(2), unlinkat(2) with AT_REMOVEDIR."""

    caller: Caller
    path: VmPath


@dataclass(frozen=True, slots=True, kw_only=True)
class Rename:
    """rename(2), renameat(2), renameat2(2) and its RENAME_* flags."""

    caller: Caller
    old: VmPath
    new: VmPath
    flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """link(2), linkat(2)."""

    caller: Caller
    old: Target  # an open file for flink: linkat(fd, "", AT_EMPTY_PATH) or /proc/self/fd/N
    new: VmPath
    follow: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Symlink:
    """symlink(2), symlinkat(2)."""

    caller: Caller
    target: str  # stored verbatim
    path: VmPath


@dataclass(frozen=True, slots=True, kw_only=True)
class Chmod:
    """chmod(2), fchmod(2), fchmodat(2), fchmodat2(2)."""

    caller: Caller
    target: Target
    mode: int
    follow: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Chown:
    """chown(2), lchown(2), fchown(2), fchownat(2)."""

    caller: Caller
    target: Target
    uid: int  # as uid_t: 0 to 0xFFFFFFFE, or 0xFFFFFFFF for unchanged
    gid: int
    follow: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Truncate:
    """truncate(2) of a path."""

    caller: Caller
    path: VmPath
    length: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Utimens:
    """utimensat(2), utimes(2), utime(2), futimesat(2)."""

    caller: Caller
    target: Target
    times: tuple[tuple[int, int], tuple[int, int]] | None  # (sec, nsec) pairs; nsec may be UTIME_NOW/OMIT
    follow: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class SetXattr:
    """setxattr(2) and its l-, f- and -at forms."""

    caller: Caller
    target: Target
    name: str
    value: bytes
    flags: int
    follow: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveXattr:
    """removexattr(2) and its l-, f- and -at forms."""

    caller: Caller
    target: Target
    name: str
    follow: bool = True


@dataclass(frozen=True, slots=True)
class SocketAddress:
    """A socket address as the caller gave it, read once: its exact bytes (a sockaddr of
    the caller's length), and the path they name when they name a unix-socket path."""

    raw: bytes
    path: VmPath | None = None


@dataclass(frozen=True, slots=True)
class PassedFiles:
    """SCM_RIGHTS: open files of the caller it passes, duplicated into the manager."""

    files: tuple[OpenFile, ...]


@dataclass(frozen=True, slots=True)
class SenderCredentials:
    """SCM_CREDENTIALS: a process, a user and a group, as the manager's namespaces see
    them (the kernel shows them to a receiver in its own)."""

    pid: int
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class Ancillary:
    """Any other control message, with its data as the caller gave it."""

    level: int
    kind: int
    data: bytes


Control = PassedFiles | SenderCredentials | Ancillary


@dataclass(frozen=True, slots=True, kw_only=True)
class Bind:
    """bind() of the caller's socket: the manager makes a unix socket's name itself."""

    caller: Caller
    socket: OpenFile
    address: SocketAddress


@dataclass(frozen=True, slots=True, kw_only=True)
class Connect:
    """connect() of the caller's socket, which the manager performs with the address it
    checked. ``resumed``: a connect the manager began earlier has become ready."""

    caller: Caller
    socket: OpenFile
    address: SocketAddress
    resumed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    """sendto(), sendmsg(), or the first message of sendmmsg(): the manager sends a copy
    of the data, to the destination it checked, on the caller's socket."""

    caller: Caller
    socket: OpenFile
    data: bytes  # the caller's bytes, at most a bounded number of them
    length: int  # how many bytes the caller gave (more than len(data) past the bound)
    flags: int  # the call's MSG_* flags
    address: SocketAddress | None  # None: no destination given
    control: tuple[Control, ...] = ()
    header_flags: int | None = None  # the msghdr's msg_flags; None for sendto(), which has no msghdr
    sent: int = 0  # how much of data earlier attempts of this same call have sent


Request = (
    Open
    | Stat
    | Statx
    | Access
    | Readlink
    | Lookup
    | Statfs
    | Chdir
    | Exec
    | Executed
    | Mkdir
    | Mknod
    | Unlink
    | Rmdir
    | Rename
    | Link
    | Symlink
    | Chmod
    | Chown
    | Truncate
    | Utimens
    | SetXattr
    | RemoveXattr
    | Bind
    | Connect
    | Send
)


# Responses.


@dataclass(frozen=True, slots=True)
class Errno:
    """Fail the call with ``errno`` (and send the caller ``signal``, when set)."""

    errno: int
    signal: int = 0  # a signal the caller gets with the error, as SIGPIPE comes with EPIPE


@dataclass(frozen=True, slots=True)
class Value:
    """Return ``value`` from the call."""

    value: int


@dataclass(frozen=True, slots=True)
class Continue:
    """Let the kernel run the call itself, on the VM's read-only boot view."""


@dataclass(frozen=True, slots=True)
class Fd:
    """Install ``fd`` in the caller as the call's result; ownership passes to the driver.

    For a file open for writing, the manager holds no other reference to it once the
    response is delivered: the caller's last close is the file's last (inotify's
    IN_CLOSE_WRITE, ETXTBSY on an exec right after writing)."""

    fd: GivenFd
    cloexec: bool


@dataclass(frozen=True, slots=True)
class StatResult:
    """A stat(2) family call's result, written into the caller's buffer."""

    stat: os.stat_result


@dataclass(frozen=True, slots=True)
class StatxResult:
    """A statx(2) call's result, written into the caller's buffer as it is."""

    raw: bytes  # the kernel's struct statx, identical on every architecture


@dataclass(frozen=True, slots=True)
class StatfsResult:
    """A statfs(2) call's result, written into the caller's buffer as it is."""

    raw: bytes  # the kernel's struct statfs; 64-bit Linux has one layout for it


@dataclass(frozen=True, slots=True)
class Data:
    """Bytes for the caller's output buffer (readlink); the call returns how many fit."""

    data: bytes


@dataclass(frozen=True, slots=True)
class WouldBlock:
    """The call would block. The driver waits until ``fd`` is ready for ``events``
    (poll(2) bits; 0: only time), then asks ``again``; should a signal come for the
    caller meanwhile, it answers ``interrupted`` instead, as the kernel would. ``fd`` and
    the open files of ``again`` are the request's own, lent back (the socket it acts on)."""

    fd: LentFd
    events: int
    again: Request
    interrupted: Errno | Value


Response = Errno | Value | Continue | Fd | StatResult | StatxResult | StatfsResult | Data | WouldBlock


def operation(request: Request) -> str:
    """The operation's name, as events and statistics show it."""
    return operation_of(type(request))


def operation_of(kind: type) -> str:
    """``operation``'s name for a request of type ``kind``."""
    return kind.__name__.lower()
