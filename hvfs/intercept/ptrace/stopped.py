"""A thread stopped at its seccomp stop: its call read from its registers, answered by
rewriting them, and a manager-opened file installed in it by calls it is made to run.

x86_64 only: the registers are python-ptrace's ``user_regs_struct``; aarch64 would need
PTRACE_GETREGSET and its own numbers (the backend refuses it).

Answering. At a ``PTRACE_EVENT_SECCOMP`` stop the call has not run. Setting its number to
-1 skips it, and the kernel returns what ``rax`` then holds; leaving it alone and
resuming runs it (the kernel checks the filter again, which then lets it through).

Installing a file. ptrace has no ADDFD. The manager's file is sent (SCM_RIGHTS) on a
socket the process holds, and the thread is made to receive it: ``recvmsg`` in place of
its call, into a scratch buffer below its stack (beneath the red zone, where nothing of
the thread lives); the call then returns the received fd, once ``kcmp`` says it is the
manager's very file. The socket is kept in the process between opens (``kept.py``: its
number checked by kcmp before each use, given up at a fork, an exec and any doubt), so a
served open costs one injected call. Where there is none yet, the thread first runs
``socket(AF_UNIX, SOCK_DGRAM)`` in place of its call; the driver duplicates that socket
(pidfd_getfd), binds it to an abstract name and connects it to itself, so that nothing
but itself can send to it; the thread moves it to the kept sockets' numbers (``fcntl``
F_DUPFD_CLOEXEC from HIGH, or ``dup3`` over its given-up one) and closes the first
number, then receives (rewound onto its ``syscall`` instruction). Where it cannot be
kept (a NOFILE limit at or below HIGH), the socket serves that one file and is closed,
as before kept sockets. A racing thread may scribble on the scratch buffer, close or
replace the socket's number, queue its own file on the socket, or receive the file
itself: each ends in EIO for the call (the file, if taken, in its own fd table), never in
another file taken for the manager's.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import struct
from collections import deque
from collections.abc import Callable

from hvfs._native import tracer as native_tracer
from hvfs._sys import process, tracing
from hvfs.intercept.decoders.tracee import CallError, TargetGone
from hvfs.intercept.ptrace.kept import HIGH, Kept, KeptSockets

# x86_64 syscall numbers of the calls the thread is made to run, and of clone.
_SOCKET, _RECVMSG, _CLOSE, _FCNTL, _DUP3 = 41, 47, 3, 72, 292
CLONE = 56  # clone(2), whose flags the driver reads at a clone event
_SYSCALL_INSN = 2  # bytes of the `syscall` instruction, which rip points past
_RED_ZONE = 128
# The scratch buffer: struct msghdr, struct iovec, one byte, and room for one fd's cmsg.
_MSGHDR = struct.Struct("<QI4xQQQQi4x")  # name, namelen, iov, iovlen, control, controllen, flags
_IOVEC = struct.Struct("<QQ")
_CMSG = struct.Struct("<QiiI4x")  # len, level, type, one fd (CMSG_SPACE(4) = 24)
_IOV_AT, _BYTE_AT, _CMSG_AT, _SCRATCH = 64, 80, 96, 128
U64 = (1 << 64) - 1
Stop = tuple[int, int, bytes | None]  # a stop as a wait status: pid, status, registers read with it
# The recvmsg's flags as plain ints: or-ing socket's MsgFlag members costs ~0.5 µs a served open.
_DONTWAIT, _CMSG_CLOEXEC = int(socket.MSG_DONTWAIT), int(socket.MSG_CMSG_CLOEXEC)


def signed(value: int) -> int:
    """A register as the signed long the kernel returned."""
    return value - (1 << 64) if value & (1 << 63) else value


class Stopped:
    """One thread at its seccomp stop (``pid``), and what its call is answered with. Signals
    that arrive while it runs the calls of an install are kept in ``signals``, for the
    driver to deliver when it resumes the thread.

    The calls it is made to run are waited for as the main loop waits, for any tracee of
    the VM (issue 15): an exec kills its process's other threads and waits until the tracer
    has reaped each (the kernel's de_thread), and a leader killed so reports nothing until
    then, so a wait for ``pid`` alone would wait forever. What that wait meets of the other
    tracees is the main loop's: their stops are left as they are, for its next wait (with the
    C loop, kept in C with what its installs meet: tracer_met.h; else put at the end of
    ``round``, the main loop's stops pending, each checked to still stand when taken); their
    exits are reaped, kept in ``reaped`` for the driver's bookkeeping once this stop is
    handled, and any stop of theirs pending dropped (it stands no more, and the number is
    free for another thread now)."""

    def __init__(self, pid: int, raw: bytes | None = None, round: deque[Stop] | None = None) -> None:
        self.pid = pid
        self._round: deque[Stop] = round if round is not None else deque()
        self.reaped: list[tuple[int, int]] = []
        # ``raw``: its registers as the C loop read them at the stop (one GETREGS fewer),
        # handed back to it as they are by a served open's install.
        self.regs = tracing.registers(pid) if raw is None else tracing.Registers.from_buffer_copy(raw)
        self._raw = raw
        low = int(self.regs.orig_rax) & 0xFFFFFFFF
        # The call's number as the kernel takes it (and the filter saw it): the low 32 bits
        # of orig_rax, as a signed int.
        self.nr = low - (1 << 32) if low & (1 << 31) else low
        self.signals: list[int] = []
        self.gone_status: int | None = None  # its death's wait status (or its taker's exec event), seen by an install
        # Answered and resumed by the C loop once its file was installed and checked.
        self.resumed = False
        # What ``release`` writes back: (skip the call, its result); None resumes it as it is.
        self._outcome: tuple[bool, int] | None = None

    @property
    def args(self) -> tuple[int, int, int, int, int, int]:
        r = self.regs
        return (r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9)

    def answer(self, value: int) -> None:
        """Skip the call; it returns ``value`` (a negative errno for a failure). Written
        into the thread's registers by ``release``; the last answer given counts."""
        self._outcome = (True, value)

    def release(self, signum: int = 0) -> None:
        """Resume the thread, its answer (if any) written back first, delivering ``signum``:
        one call to the C loop where it is built (HVFS_NATIVE=0: the Python path). Nothing
        where the C loop resumed it already (``resumed``)."""
        if self.resumed:
            return
        if native_tracer is not None:
            skip, result = self._outcome if self._outcome is not None else (False, 0)
            raw = bytes(self.regs) if self._outcome is not None else None
            native_tracer.release(self.pid, raw, skip, signed(result & U64), signum)
            return
        if not tracing.at_call_stop(self.pid):  # as the C loop's release: killed, or taken over by an exec
            raise ProcessLookupError(errno.ESRCH, "not at its call's stop any more")
        if self._outcome is not None:
            skip, result = self._outcome
            regs = self._copy()
            if skip:
                regs.orig_rax = U64
            regs.rax = result & U64
            tracing.set_registers(self.pid, regs)
        tracing.resume(self.pid, signum)

    def run_call(self) -> None:
        """Let the call run now, to its exit (the thread stays stopped there until
        ``release``): what it changes is done when this returns. TargetGone if it dies."""
        self._run_to_exit()

    def install(self, fd: int, cloexec: bool, duplicate: Callable[[int], int], sockets: KeptSockets) -> None:
        """Install the manager's ``fd`` (taken) in the thread, and answer the call with its
        number there (see the module's docstring); a failure answers as the kernel would
        (EMFILE…) or EIO. ``duplicate``: a copy of one of the thread's fds here (the
        tracee's pidfd_getfd). TargetGone when the thread died meanwhile. Through a kept
        socket the C loop answers and resumes the thread (``resumed``): the caller must
        hold no other file of the VM's by then (the driver closes the tracee's first)."""
        try:
            result = self._install(fd, cloexec, duplicate, sockets)
        finally:
            if not self.resumed:  # else closed by the C loop, before it resumed the thread
                os.close(fd)
        self._finish(result)

    def _install(self, fd: int, cloexec: bool, duplicate: Callable[[int], int], sockets: KeptSockets) -> int:
        if native_tracer is not None:  # its number checked by the C loop, before it sends
            kept = sockets.unchecked(self.pid)
            if kept is not None:
                number = self._through_kept(kept, fd, cloexec, sockets, in_place=True)
                if number != -errno.ESTALE:
                    return number
        else:
            kept = sockets.usable(self.pid)
            if kept is not None:  # one recvmsg, in place of the call
                return self._through_kept(kept, fd, cloexec, sockets, in_place=True)
        theirs = self._in_place(_SOCKET, socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
        if theirs < 0:
            return theirs
        try:
            kept = _bound(duplicate(theirs), theirs)
        except (OSError, CallError):
            self._call(_CLOSE, theirs)
            return -errno.EIO
        if sockets.may_keep(self.pid) and self._move_high(kept, sockets):
            return self._through_kept(kept, fd, cloexec, sockets, in_place=False)
        try:  # this one file through a socket of its own, closed after
            return self._receive(kept, fd, cloexec, in_place=False)
        finally:
            self._call(_CLOSE, theirs)
            kept.close()

    def _through_kept(self, kept: Kept, fd: int, cloexec: bool, sockets: KeptSockets, in_place: bool) -> int:
        try:
            number = self._receive(kept, fd, cloexec, in_place)
        except TargetGone:
            sockets.give_up(self.pid)  # a file sent and never received is not left queued in it
            raise
        if number < 0 and number != -errno.EMFILE:
            sockets.give_up(self.pid)  # any doubt (ESTALE: its number names another file): a new one
        return number

    def _move_high(self, kept: Kept, sockets: KeptSockets) -> bool:
        """Move the thread's new socket to where kept sockets live (over the process's
        given-up one, else the first free number from HIGH), and keep it there."""
        low = kept.number
        stale = sockets.stale_number(self.pid)
        if stale is not None:
            moved = self._call(_DUP3, low, stale, os.O_CLOEXEC)
        else:
            moved = self._call(_FCNTL, low, fcntl.F_DUPFD_CLOEXEC, HIGH)
        if moved < 0 or not tracing.same_file(self.pid, moved, kept.sock.fileno()):
            if moved == -errno.EINVAL:  # a NOFILE limit at or below HIGH
                sockets.refuse(self.pid)
            return False
        self._call(_CLOSE, low)
        kept.number = moved
        sockets.keep(self.pid, kept)
        return True

    def _receive(self, kept: Kept, fd: int, cloexec: bool, in_place: bool) -> int:
        """Send ``fd`` on the thread's socket ``kept`` and make the thread receive it (in
        place of its call, or rewound onto it); the number it got, once ``kcmp`` says it
        is ``fd`` itself; EIO otherwise, EMFILE as the kernel says it."""
        flags = _DONTWAIT | (_CMSG_CLOEXEC if cloexec else 0)
        if in_place and native_tracer is not None:  # the same steps and checks, in C, in one call
            return self._receive_natively(kept, fd, flags)
        try:
            kept.send(fd)
        except OSError:
            return -errno.EIO
        scratch = (self.regs.rsp - _RED_ZONE - _SCRATCH) & ~0xF
        header = _MSGHDR.pack(0, 0, scratch + _IOV_AT, 1, scratch + _CMSG_AT, _CMSG.size, 0)
        buffer = header.ljust(_IOV_AT, b"\0") + _IOVEC.pack(scratch + _BYTE_AT, 1)
        buffer = buffer.ljust(_SCRATCH, b"\0")
        try:
            process.write_memory(self.pid, scratch, buffer)
        except OSError:
            return -errno.EIO
        run = self._in_place if in_place else self._call
        received = run(_RECVMSG, kept.number, scratch, flags)
        if received == -errno.EMFILE:
            return received
        if received < 0:
            return -errno.EIO
        try:
            length, level, kind, installed = _CMSG.unpack(process.read_memory(self.pid, scratch + _CMSG_AT, _CMSG.size))
        except (OSError, struct.error):
            return -errno.EIO
        ours = length >= 20 and (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
        # Without kcmp (never kept then), the number read back as before kept sockets.
        checked = tracing.same_file(self.pid, installed, fd) if tracing.kcmp_works() else True
        return int(installed) if ours and checked else -errno.EIO

    def _receive_natively(self, kept: Kept, fd: int, flags: int) -> int:
        """``_receive`` in place of the call, by the C loop (hvfs/_native/tracer.c), which
        first checks that the number still names the socket (ESTALE: nothing sent) and
        answers and resumes the thread once what it received is checked (``resumed``)."""
        address = kept.address if isinstance(kept.address, bytes) else os.fsencode(kept.address)
        result, signals, gone, self.resumed, reaped = native_tracer.receive(
            self.pid,
            self._raw if self._raw is not None else bytes(self.regs),
            kept.sock.fileno(),
            address,
            kept.number,
            fd,
            flags,
            tracing.kcmp_works(),
        )
        self.signals.extend(signals)
        self.reaped.extend(reaped)  # its stops of theirs dropped in C already; the round's by the driver
        if gone is not None:
            self.gone_status = gone if gone >= 0 else None
            raise TargetGone()
        return int(result)

    def _in_place(self, nr: int, *args: int) -> int:
        """Make the thread run ``nr`` with ``args`` in place of its call, to its exit."""
        regs = self._copy()
        regs.orig_rax = nr
        for name, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args, strict=False):
            setattr(regs, name, value & U64)
        self._set(regs)
        return self._run_to_exit()

    def _call(self, nr: int, *args: int) -> int:
        """Make the thread, stopped after a call, run ``nr`` with ``args``, to its exit."""
        try:
            regs = self._copy(tracing.registers(self.pid))
        except ProcessLookupError:  # killed meanwhile (a sibling's exec, say): its next status comes
            raise TargetGone() from None
        regs.rip = self.regs.rip - _SYSCALL_INSN
        regs.rax = nr
        for name, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args, strict=False):
            setattr(regs, name, value & U64)
        self._set(regs)
        self._run_to_exit()  # its syscall-entry stop
        return self._run_to_exit()

    def _set(self, regs: tracing.Registers) -> None:
        """The registers of a call it is made to run, written only while it is still at a
        call's stop: else it was killed, or a sibling's exec took over its pid (the leader's)
        and would run them (TargetGone, its pid's next status left for the wait)."""
        try:
            if not tracing.at_call_stop(self.pid):
                raise TargetGone()
            tracing.set_registers(self.pid, regs)
        except ProcessLookupError:  # killed since the check
            raise TargetGone() from None

    def _run_to_exit(self) -> int:
        """Resume to the next syscall stop; the call's result there. Signals that stop the
        thread meanwhile are kept for later; TargetGone if it dies, or if an exec event is
        reported under its pid: a sibling's exec killed it and took over its pid, and that
        stop (never resumed here, or the exec would go unseen) is handed back as its exit is."""
        if not tracing.at_call_stop(self.pid):  # killed, or its pid taken over since its last stop
            raise TargetGone()
        self._resume_to_syscall()
        while True:
            try:
                pid, status = os.waitpid(-1, tracing.WALL | tracing.WNOTHREAD)
            except ChildProcessError as e:
                raise TargetGone() from e
            if pid != self.pid:
                self._met(pid, status)
                continue
            if os.WIFEXITED(status) or os.WIFSIGNALED(status) or tracing.event_of(status) == tracing.PTRACE_EVENT_EXEC:
                self.gone_status = status  # taken from the main loop's wait: handed back to it
                raise TargetGone()
            if os.WSTOPSIG(status) == tracing.SYSCALL_STOP:
                try:
                    return signed(tracing.registers(self.pid).rax)
                except ProcessLookupError:  # killed since that stop: its next status comes
                    raise TargetGone() from None
            event, signum = tracing.event_of(status), os.WSTOPSIG(status)
            if not event and signum != signal.SIGTRAP:
                self.signals.append(signum)  # delivered once the call is answered
            if not tracing.stands(self.pid, status):  # ended since: its next status comes from the wait
                raise TargetGone()
            self._resume_to_syscall()

    def _met(self, pid: int, status: int) -> None:
        """Another tracee's status, met while this thread's call ran (the class's docstring).
        With the C loop, kept with what its installs meet (tracer_met.h), for its next wait."""
        ended = os.WIFEXITED(status) or os.WIFSIGNALED(status)
        if ended:
            self.reaped.append((pid, status))
            standing = [stop for stop in self._round if stop[0] != pid]
            self._round.clear()
            self._round.extend(standing)
        if native_tracer is not None:
            native_tracer.keep_met(pid, status)
        elif not ended:
            self._round.append((pid, status, None))

    def _resume_to_syscall(self) -> None:
        try:
            tracing.resume_to_syscall(self.pid)
        except ProcessLookupError:  # killed meanwhile (a sibling's exec, say): its next status comes
            raise TargetGone() from None

    def _finish(self, result: int) -> None:
        """After an install: the thread's registers as at its stop, its call returning
        ``result`` (written back by ``release``)."""
        self._outcome = (False, result)

    def _copy(self, regs: tracing.Registers | None = None) -> tracing.Registers:
        return tracing.Registers.from_buffer_copy(regs if regs is not None else self.regs)


def _bound(local: int, theirs: int) -> Kept:
    """The thread's new socket (``theirs``, duplicated here as ``local``) bound to an
    abstract name and connected to itself: nothing but itself can send to it."""
    sock = socket.socket(fileno=local)
    try:
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_DGRAM:
            raise OSError(errno.EBADF, "not the socket the thread made")
        sock.bind("")  # an abstract name of the kernel's choice, in the VM's network namespace
        sock.connect(sock.getsockname())
        return Kept(theirs, sock, sock.getsockname())
    except OSError:
        sock.close()
        raise
