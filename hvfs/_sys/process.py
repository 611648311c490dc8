"""Process-level calls: namespaces, prctl, seccomp(2), pidfds and another process's memory."""

from __future__ import annotations

import ctypes
import os

from hvfs._sys.libc import check, libc, syscall

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_FS = 0x00000200

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_SET_DUMPABLE = 4

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5

PIDFD_THREAD = os.O_EXCL


def unshare(flags: int) -> None:
    syscall("unshare", flags)


def prctl(option: int, arg: int = 0) -> None:
    check("prctl", libc().prctl(ctypes.c_int(option), ctypes.c_ulong(arg), 0, 0, 0), option, arg)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_seccomp_filter(program: bytes, flags: int) -> int:
    """Install the BPF ``program`` on the calling thread; return the listener fd if any.

    The caller must have set ``NO_NEW_PRIVS`` (or hold CAP_SYS_ADMIN).
    """
    buffer = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    return syscall("seccomp", SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(prog))


def pidfd_open(pid: int, flags: int = 0) -> int:
    return syscall("pidfd_open", pid, flags)


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    return syscall("pidfd_getfd", pidfd, targetfd, 0)


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def read_memory(pid: int, address: int, size: int) -> bytes:
    """Read up to ``size`` bytes at ``address`` in process ``pid``.

    Returns fewer bytes when the range runs into unmapped memory; raises ``OSError``
    (EFAULT) when not even the first byte can be read, ESRCH when the process is gone.
    The remote range is split at page boundaries so that a partial read returns every
    readable page (the kernel never splits one iovec element).
    """
    page = os.sysconf("SC_PAGE_SIZE")
    chunks: list[tuple[int, int]] = []
    at, end = address, address + size
    while at < end:
        stop = min(end, (at // page + 1) * page)
        chunks.append((at, stop - at))
        at = stop
    local_buffer = ctypes.create_string_buffer(size)
    local = _IoVec(ctypes.cast(local_buffer, ctypes.c_void_p), size)
    remote = (_IoVec * len(chunks))(*(_IoVec(a, n) for a, n in chunks))
    # Safe because: the local buffer is ours and exactly `size` bytes long; the kernel
    # checks the remote ranges against the target's mappings.
    got = syscall("process_vm_readv", pid, ctypes.byref(local), 1, remote, len(chunks), 0)
    return local_buffer.raw[:got]


def write_memory(pid: int, address: int, data: bytes) -> None:
    """Write ``data`` at ``address`` in process ``pid``; EFAULT unless all of it lands."""
    local_buffer = ctypes.create_string_buffer(data, len(data))
    local = _IoVec(ctypes.cast(local_buffer, ctypes.c_void_p), len(data))
    remote = _IoVec(address, len(data))
    # Safe because: the kernel writes only within the target's writable mappings.
    done = syscall("process_vm_writev", pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if done != len(data):
        raise OSError(14, "partial write", "process_vm_writev")
