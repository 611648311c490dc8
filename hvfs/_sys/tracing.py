"""ptrace(2) for the exec tracer and the ptrace driver, through python-ptrace, with what
it lacks.

python-ptrace's binding issues the calls (``ptrace.binding``: cont, syscall, getregs,
setregs, the generic ``ptrace`` function) and defines the registers
(``ptrace_registers_t``). It predates PTRACE_SEIZE, PTRACE_LISTEN, PTRACE_O_EXITKILL,
PTRACE_O_TRACESECCOMP and PTRACE_EVENT_SECCOMP, and its ``ptrace_geteventmsg`` reads the
kernel's unsigned long into a C int, so those are here. Errors become ``OSError`` with
the real errno: ESRCH is normal (a tracee killed or gone while the tracer looked at it).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import signal
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from ptrace import PtraceError, binding
from ptrace.binding import func as binding_calls

from hvfs._sys.libc import typed_syscall

PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_GETEVENTMSG = binding_calls.PTRACE_GETEVENTMSG
PTRACE_GET_SYSCALL_INFO = 0x420E

PTRACE_O_TRACEFORK = binding_calls.PTRACE_O_TRACEFORK
PTRACE_O_TRACEVFORK = binding_calls.PTRACE_O_TRACEVFORK
PTRACE_O_TRACECLONE = binding_calls.PTRACE_O_TRACECLONE
PTRACE_O_TRACEEXEC = binding_calls.PTRACE_O_TRACEEXEC
PTRACE_O_EXITKILL = 0x100000
PTRACE_O_TRACESECCOMP = 0x80
PTRACE_O_TRACESYSGOOD = binding_calls.PTRACE_O_TRACESYSGOOD

PTRACE_EVENT_FORK = binding_calls.PTRACE_EVENT_FORK
PTRACE_EVENT_VFORK = binding_calls.PTRACE_EVENT_VFORK
PTRACE_EVENT_CLONE = binding_calls.PTRACE_EVENT_CLONE
PTRACE_EVENT_EXEC = binding_calls.PTRACE_EVENT_EXEC
PTRACE_EVENT_SECCOMP = 7
PTRACE_EVENT_STOP = 128
SYSCALL_STOP = 0x80 | 5  # WSTOPSIG of a syscall-stop with TRACESYSGOOD: SIGTRAP | 0x80

Registers: Any = binding.ptrace_registers_t

KCMP_FILE = 0

# wait(2) flags the os module does not name: every kind of child (threads too), and only
# those of the calling thread (its tracees), never the process's own children.
WALL = 0x40000000
WNOTHREAD = 0x20000000

P = ParamSpec("P")
R = TypeVar("R")


def _errno_flows(call: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(call)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return call(*args, **kwargs)
        except PtraceError as e:
            code = e.errno or 0
            raise OSError(code, f"ptrace {call.__name__}{args}: {os.strerror(code)}") from None

    return wrapper


@_errno_flows
def seize(pid: int, options: int) -> None:
    """Trace ``pid`` without stopping it, with ``options`` set at once (no window in which
    a fork or an exec could go unseen)."""
    binding_calls.ptrace(PTRACE_SEIZE, pid, 0, options)


@_errno_flows
def resume(pid: int, signum: int = 0) -> None:
    """PTRACE_CONT, delivering ``signum`` (a signal-delivery-stop's signal, or 0)."""
    binding.ptrace_cont(pid, signum)


@_errno_flows
def resume_to_syscall(pid: int, signum: int = 0) -> None:
    """PTRACE_SYSCALL: resume until the next syscall-entry or syscall-exit stop."""
    binding.ptrace_syscall(pid, signum)


@_errno_flows
def registers(pid: int) -> Any:
    """The stopped tracee's general registers (PTRACE_GETREGS)."""
    return binding.ptrace_getregs(pid)


@_errno_flows
def set_registers(pid: int, regs: Any) -> None:
    binding.ptrace_setregs(pid, regs)


@_errno_flows
def listen(pid: int) -> None:
    """Leave a seized tracee in its group-stop until SIGCONT, still reporting to us."""
    binding_calls.ptrace(PTRACE_LISTEN, pid, 0, 0)


@_errno_flows
def event_message(pid: int) -> int:
    """PTRACE_GETEVENTMSG: the new tracee's pid at a fork, the former tid at an exec."""
    message = ctypes.c_ulong()
    # Safe because: the kernel writes exactly one unsigned long at the address given.
    binding_calls.ptrace(PTRACE_GETEVENTMSG, pid, 0, ctypes.addressof(message))
    return message.value


@_errno_flows
def stop_signal(pid: int) -> tuple[int, int]:
    """(si_signo, si_code) of the tracee's ptrace-stop (PTRACE_GETSIGINFO): an event stop's
    code is SIGTRAP | event << 8. EINVAL at a stop without one (a group-stop)."""
    info = binding.ptrace_getsiginfo(pid)
    return int(info.si_signo), int(info.si_code)


def at_call_stop(pid: int) -> bool:
    """Whether the tracee is at a stop of a call (PTRACE_GET_SYSCALL_INFO's op: its seccomp
    stop, or a syscall-entry or -exit stop), never at an exec event (op 0): what a resume
    meant for a call's stop checks first, since a sibling's exec may have killed a leader
    stopped there and taken over its pid. False when it is not stopped (killed meanwhile)."""
    info = (ctypes.c_uint8 * 128)()
    try:
        # Safe because: the kernel writes at most the size given into the buffer.
        done = binding_calls.ptrace(PTRACE_GET_SYSCALL_INFO, pid, ctypes.sizeof(info), ctypes.addressof(info))
    except PtraceError:
        return False
    return done > 0 and 1 <= info[0] <= 3


def stands(pid: int, status: int) -> bool:
    """Whether the tracee is still at the stop its wait ``status`` reported: a thread's exec
    kills its leader, whose number it takes, and stops at its exec event, so a stop of the
    leader reported before that would otherwise be answered on the new program (tracer.c's
    still_at). A seccomp stop of a thread killed meanwhile does not stand either (its exit
    comes next)."""
    event = event_of(status)
    try:
        signo, code = stop_signal(pid)
    except OSError as e:  # EINVAL: a stop without siginfo (a group-stop), kept
        return not (e.errno == errno.ESRCH and event == PTRACE_EVENT_SECCOMP)
    if event:
        return code > 0 and code >> 8 == event
    signum = os.WSTOPSIG(status)
    if signum == SYSCALL_STOP:
        return code == signum
    # a signal; a SIGTRAP not an event's trap (another signal's code is its sender's to choose)
    return signo == signum and (signum != signal.SIGTRAP or not (code > 0 and code >> 8))


def event_of(status: int) -> int:
    """The PTRACE_EVENT_* of a stop's wait status (0 for a signal-delivery-stop)."""
    return status >> 16


_kcmp = typed_syscall("kcmp", ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong)


@functools.cache
def kcmp_works() -> bool:
    """Whether this kernel has kcmp (CONFIG_KCMP, or CHECKPOINT_RESTORE before 5.12)."""
    try:
        _kcmp(os.getpid(), os.getpid(), KCMP_FILE, 0, 0)
    except OSError as e:
        return e.errno != errno.ENOSYS
    return True


def same_file(pid: int, fd: int, local: int) -> bool:
    """Whether ``pid``'s ``fd`` is this process's ``local`` (the same open file, by kcmp);
    False when it is not, or cannot be told (no such fd, ``pid`` gone, no kcmp here)."""
    if fd < 0:
        return False
    try:
        return _kcmp(pid, os.getpid(), KCMP_FILE, fd, local) == 0
    except OSError:
        return False
