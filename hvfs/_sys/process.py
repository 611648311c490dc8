"""Process-level calls: namespaces, prctl, seccomp(2), pidfds and another process's memory."""

from __future__ import annotations

import ctypes
import errno
import os

from hvfs._sys.libc import check, function, libc, syscall

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


def pidfd_send_signal(pidfd: int, signal: int) -> None:
    """To the thread of a PIDFD_THREAD pidfd, else to the process."""
    syscall("pidfd_send_signal", pidfd, signal, None, 0)


# struct iovec is {void *base; size_t len}: two 64-bit words on the 64-bit machines HVFS
# supports, so arrays of c_size_t hold iovecs and are cheap to fill in.
_IOVEC_WORDS = 2
_ADDRESS_END = 1 << 64
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# pid, local iovecs, their count, remote iovecs, their count, flags.
_VM_RW_ARGS = (ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong)
_process_vm_readv = function("process_vm_readv", ctypes.c_ssize_t, *_VM_RW_ARGS)
_process_vm_writev = function("process_vm_writev", ctypes.c_ssize_t, *_VM_RW_ARGS)


def _page_split(address: int, size: int) -> list[int]:
    """``address``..``address+size`` as iovec words, split at page boundaries, so that a
    partial read returns every readable page (the kernel never splits one iovec element)."""
    if address + size > _ADDRESS_END:
        raise OSError(errno.EFAULT, os.strerror(errno.EFAULT), "process_vm_readv")
    words: list[int] = []
    at, end = address, address + size
    while at < end:
        stop = min(end, (at // PAGE_SIZE + 1) * PAGE_SIZE)
        words += (at, stop - at)
        at = stop
    return words


def _vm_error(name: str, pid: int, address: int, size: int) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, os.strerror(code), f"{name}({pid}, {address:#x}, {size})")


def read_memory(pid: int, address: int, size: int) -> bytes:
    """Read up to ``size`` bytes at ``address`` in process ``pid``.

    Returns fewer bytes when the range runs into unmapped memory; raises ``OSError``
    (EFAULT) when not even the first byte can be read, ESRCH when the process is gone.
    """
    words = _page_split(address, size)
    if not words:
        return b""
    local_buffer = ctypes.create_string_buffer(size)
    local = (ctypes.c_size_t * _IOVEC_WORDS)(ctypes.addressof(local_buffer), size)
    remote = (ctypes.c_size_t * len(words))(*words)
    # Safe because: the local buffer is ours and exactly `size` bytes long; the kernel
    # checks the remote ranges against the target's mappings.
    got = _process_vm_readv(pid, local, 1, remote, len(words) // _IOVEC_WORDS, 0)
    if got < 0:
        raise _vm_error("process_vm_readv", pid, address, size)
    return local_buffer.raw[:got]


class MemoryReader:
    """``read_memory`` through one buffer and one set of iovecs made once, for reads of at
    most a page (a path per request) on the hot path. Not thread-safe: one per thread."""

    def __init__(self, capacity: int = PAGE_SIZE) -> None:
        if capacity > PAGE_SIZE:
            raise ValueError("a MemoryReader reads at most a page: two iovecs cover any such range")
        self.capacity = capacity
        self._buffer = ctypes.create_string_buffer(capacity)
        self._view = memoryview(self._buffer).cast("B")
        self._local = (ctypes.c_size_t * _IOVEC_WORDS)(ctypes.addressof(self._buffer), capacity)
        self._remote = (ctypes.c_size_t * (2 * _IOVEC_WORDS))()

    def read(self, pid: int, address: int, size: int) -> bytes:
        """As ``read_memory``, for ``size`` up to ``capacity``."""
        if not 0 < size <= self.capacity:
            raise ValueError(f"read of {size} bytes by a MemoryReader of {self.capacity}")
        if address + size > _ADDRESS_END:
            raise OSError(errno.EFAULT, os.strerror(errno.EFAULT), "process_vm_readv")
        first = min(size, PAGE_SIZE - address % PAGE_SIZE)
        remote = self._remote
        remote[0] = address
        remote[1] = first
        count = 1
        if first < size:  # the range crosses into a second page
            remote[2] = address + first
            remote[3] = size - first
            count = 2
        self._local[1] = size
        # Safe because: the local iovec points into our own buffer and is at most its
        # capacity long; the kernel checks the remote ranges against the target's mappings.
        got = _process_vm_readv(pid, self._local, 1, remote, count, 0)
        if got < 0:
            raise _vm_error("process_vm_readv", pid, address, size)
        return self._view[:got].tobytes()


def write_memory(pid: int, address: int, data: bytes) -> None:
    """Write ``data`` at ``address`` in process ``pid``; EFAULT unless all of it lands."""
    local_buffer = ctypes.create_string_buffer(data, len(data))
    local = (ctypes.c_size_t * _IOVEC_WORDS)(ctypes.addressof(local_buffer), len(data))
    remote = (ctypes.c_size_t * _IOVEC_WORDS)(address % _ADDRESS_END, len(data))
    # Safe because: the kernel writes only within the target's writable mappings, and
    # reads only our own buffer of exactly len(data) bytes.
    done = _process_vm_writev(pid, local, 1, remote, 1, 0)
    if done < 0:
        raise _vm_error("process_vm_writev", pid, address, len(data))
    if done != len(data):
        raise OSError(errno.EFAULT, "partial write", "process_vm_writev")
