"""The exec tracer: what a VM really executed, judged after the kernel loaded it.

An exec cannot be served: the manager checks the path, then lets the kernel run the
call, which reads the path again from the VM's memory, where a racing thread may have
put another one. So while a service must judge what VMs run (a scanner), every process
of the VM is traced, and at each ``PTRACE_EVENT_EXEC`` (new program loaded, none of it
run yet) the manager is asked about the very files loaded, one ``api.Executed`` request
each: the program, opened through ``/proc/PID/exe``, and its ELF interpreter, which the
kernel loaded by the path the program names (PT_INTERP, a script's ``#!`` line), shown
to the manager by no request: found again by its name in ``/proc/PID/maps``, checked by
inode. An Errno answer kills the process (SIGKILL: its parent sees 137), before it runs
one instruction of either. That also covers what no path names: fexecve and execveat of
a memfd or of an O_PATH fd. What cannot be judged for sure (a loaded file renamed or
deleted meanwhile) is killed too; what the manager may not read at all is let through,
as the scanner lets through what it cannot read.

Some facts about ptrace, which the code below relies on:

* A tracee is tied to the tracing *thread*: one thread issues every request for its
  tracees. If that thread exits, they are detached, and with ``PTRACE_O_EXITKILL``
  (which we set) killed: the VM's processes never run untraced.
* ``waitpid(-1, __WALL | __WNOTHREAD)`` reports every tracee, threads included, and
  nothing else: the manager's real children (launchers, the zygote's) belong to the
  threads that started them and are reaped by them, never here.
* The reverse holds too: no other thread of the manager may wait for "any child"
  (``waitpid(-1)``): without ``__WNOTHREAD`` a wait sees the tracees of every thread of
  the process, and would take their stops and exits from this one. The manager waits
  for its launchers by pid.
* Never trace a child of this very process: when the tracer and the real parent are one
  process, the tracer's wait reaps the child for good, and the parent's wait fails. VM
  processes are grandchildren at least (launcher, then pid 1).
* ``PTRACE_SEIZE`` of the VM's pid 1 with ``TRACEFORK | TRACEVFORK | TRACECLONE`` before
  its command starts traces every later process and thread of the VM automatically. It
  depends only on pid 1's pid, never on what pid 1 is. A non-dumpable pid 1 whose memory
  belongs to the manager's user namespace may still be traced by the manager, which holds
  CAP_SYS_PTRACE there; a VM's root, whose namespace is a child of it, may not.
* With SEIZE, a new tracee starts with a ``PTRACE_EVENT_STOP`` (SIGTRAP), which may be
  reported before its parent's fork event: each stop is handled on its own.
* A group-stop (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU) is a ``PTRACE_EVENT_STOP`` with that
  signal: ``PTRACE_LISTEN`` keeps the tracee stopped, as job control wants, until a
  SIGCONT; resuming it would defeat the stop.
* A signal-delivery-stop must re-inject its signal, or the tracee never gets it.
* At the exec stop, a thread that exec'd has taken its leader's pid; the event message
  is its former tid, which is gone without an exit report.
* Tracing has a cost per stop (a wake-up of this thread and a few syscalls): forks,
  clones, execs and signals of the VM each stop once or twice. It runs only while a
  scanner is on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
from collections import deque
from dataclasses import dataclass

from hvfs import api, deferred
from hvfs._sys import files, tracing
from hvfs._sys.abi import RESOLVE_IN_ROOT, RESOLVE_NO_SYMLINKS
from hvfs.api import Transport
from hvfs.intercept import awake

log = deferred.logger("hvfs.driver")

OPTIONS = (
    tracing.PTRACE_O_TRACEFORK
    | tracing.PTRACE_O_TRACEVFORK
    | tracing.PTRACE_O_TRACECLONE
    | tracing.PTRACE_O_TRACEEXEC
    | tracing.PTRACE_O_EXITKILL
)
_NEW_TRACEE = (tracing.PTRACE_EVENT_FORK, tracing.PTRACE_EVENT_VFORK, tracing.PTRACE_EVENT_CLONE)
_GROUP_STOPS = (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
_DELETED = " (deleted)"
# The kernel's name of a mapped file has no symlinks, and resolves inside the VM's root.
_BY_ITS_OWN_NAME = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS


@dataclass(frozen=True, slots=True)
class TracerStatistics:
    """What the exec tracer has done for a VM so far (its counts, and its tracees now)."""

    stops: int  # ptrace-stops handled
    execs: int  # executed files judged
    killed: int  # processes killed on the manager's answer
    unjudged: int  # execs whose file the manager could not open (let run)
    tracees: int  # processes and threads traced now


class ExecTracer:
    """Traces the VM whose pid 1 is ``init_pid`` (in the manager's pid namespace), from a
    thread of its own, until every process of the VM has exited."""

    options = OPTIONS  # what PTRACE_SEIZE sets (the ptrace driver adds its seccomp stops)

    def __init__(self, init_pid: int, vm: str, transport: Transport) -> None:
        self.init_pid = init_pid
        self._vm = vm
        self._transport = transport
        self._tracees: set[int] = set()
        self._seized = threading.Event()
        self._error: OSError | None = None
        self._lock = threading.Lock()
        self._counts = {"stops": 0, "execs": 0, "killed": 0, "unjudged": 0}
        self._round: deque[tuple[int, int, bytes | None]] = deque()  # stops pending (_next)
        self._raw: bytes | None = None  # the registers read with the last status, if any
        self._thread = threading.Thread(target=self._run, name=f"hvfs-{vm}-tracer", daemon=True)

    def start(self) -> None:
        """Seize pid 1; returns once it is traced. Raises OSError when it cannot be
        (EPERM: ptrace is forbidden here, say by a Yama ptrace_scope of 3)."""
        awake.start()  # every stop is a wake-up: keep the other CPUs from halting in a burst
        self._thread.start()
        self._seized.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the last process of the VM has exited; False on timeout."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def statistics(self) -> TracerStatistics:
        with self._lock:
            return TracerStatistics(**self._counts, tracees=len(self._tracees))

    def _run(self) -> None:
        try:
            tracing.seize(self.init_pid, self.options)
        except OSError as e:
            self._error = e
            self._seized.set()
            return
        self._tracees.add(self.init_pid)
        self._seized.set()
        while True:
            try:
                pid, status = self._next()
            except ChildProcessError:
                return  # no tracee left: the VM has ended
            try:
                self._on_status(pid, status)
            except Exception:  # never let the thread die: its tracees would die with it
                log.exception("exec tracer of VM %s: cannot handle status %#x of pid %d", self._vm, status, pid)
                self._recover(pid)

    def _next(self) -> tuple[int, int]:
        """The next status of a tracee (ChildProcessError when none is left), in rounds:
        waitpid(-1) reports the first ready tracee in the kernel's list, so a thread that is
        always ready would win every time; each wait is followed by every stop already
        pending, served in turn before the next wait (each ready thread once per round).
        Only stops are collected so: an exit is reaped only by the wait, when no stop is
        queued, so a queued thread's number cannot be reused meanwhile."""
        while self._round:
            pid, status, self._raw = self._round.popleft()
            if self._stands(pid, status):
                return pid, status
        pid, status, self._raw = self._wait_status()
        while (pending := self._pending_stop()) is not None:
            self._round.append(pending)
        return pid, status

    def _wait_status(self) -> tuple[int, int, bytes | None]:
        """The next status (exits included), waited for."""
        return (*os.waitpid(-1, tracing.WALL | tracing.WNOTHREAD), None)

    def _pending_stop(self) -> tuple[int, int, bytes | None] | None:
        """A stop already pending, as a wait status; None when there is none. Never an exit."""
        try:
            info = os.waitid(os.P_ALL, 0, os.WSTOPPED | os.WNOHANG | tracing.WALL | tracing.WNOTHREAD)
        except ChildProcessError:  # only zombies are left (a wait without WEXITED skips them)
            return None
        return None if info is None else (info.si_pid, info.si_status << 8 | 0x7F, None)

    def _stands(self, pid: int, status: int) -> bool:
        """Whether a stop queued in this round still stands. A thread's exec kills its
        leader, whose number it takes, and stops at its exec event: a stop of the leader
        queued before that would be applied to the new program. A seccomp stop of a thread
        killed meanwhile is dropped too (its exit comes next)."""
        event = tracing.event_of(status)
        try:
            signo, code = tracing.stop_signal(pid)
        except OSError as e:  # EINVAL: a stop without siginfo (a group-stop), kept
            return not (e.errno == errno.ESRCH and event == tracing.PTRACE_EVENT_SECCOMP)
        if event:
            return code > 0 and code >> 8 == event
        signum = os.WSTOPSIG(status)
        if signum == tracing.SYSCALL_STOP:
            return code == signum
        return signo == signum and not (code > 0 and code >> 8)  # a signal, not an event's trap

    def _recover(self, pid: int) -> None:
        """After a stop that could not be handled: let ``pid`` run on."""
        with contextlib.suppress(OSError):
            tracing.resume(pid)

    def _on_status(self, pid: int, status: int) -> None:
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            with self._lock:
                self._tracees.discard(pid)
            return
        if not os.WIFSTOPPED(status):
            return
        with self._lock:
            self._tracees.add(pid)  # a new tracee reports its first stop, maybe before its parent's event
            self._counts["stops"] += 1
        signum, event = os.WSTOPSIG(status), tracing.event_of(status)
        try:
            if event == tracing.PTRACE_EVENT_EXEC:
                self._on_exec(pid)
            elif event in _NEW_TRACEE:
                tracing.resume(pid)  # the child counts from its own first stop (maybe done and gone by now)
            elif event == tracing.PTRACE_EVENT_STOP and signum in _GROUP_STOPS:
                tracing.listen(pid)
            elif event:
                tracing.resume(pid)  # a new tracee's first stop, a listen woken by SIGCONT
            else:
                tracing.resume(pid, signum)  # a signal-delivery-stop: deliver it
        except OSError as e:
            if e.errno != errno.ESRCH:  # killed meanwhile (SIGKILL needs no resume)
                raise

    def _on_exec(self, pid: int) -> None:
        former = tracing.event_message(pid)
        with self._lock:
            if former != pid:
                self._tracees.discard(former)
            self._counts["execs"] += 1
        try:
            allowed = self._judge(pid)
        except Exception:  # what was not judged does not run
            log.exception("exec tracer of VM %s: cannot judge the exec of pid %d; killed", self._vm, pid)
            allowed = False
        if not allowed:
            os.kill(pid, signal.SIGKILL)
            with self._lock:
                self._counts["killed"] += 1
        tracing.resume(pid)

    def _judge(self, pid: int) -> bool:
        """Whether the manager lets ``pid`` run what its exec loaded: the program, and the
        ELF interpreter that the kernel loaded by the path the program names (PT_INTERP),
        which no request showed the manager either."""
        try:
            mapped = _mapped_files(pid)
            program = os.stat(f"/proc/{pid}/exe")
            path = os.readlink(f"/proc/{pid}/exe")
            interpreters = [(name, inode) for name, inode in mapped if (name, inode) != (path, program.st_ino)]
            if not self._ask(pid, self._open_program(pid), path):
                return False
            for name, inode in interpreters:
                if not self._ask(pid, self._open_interpreter(pid, name, inode), name):
                    return False
            if _mapped_files(pid) != mapped:
                raise _Unverifiable("a file it loaded was moved while it was judged")
        except (ProcessLookupError, FileNotFoundError):
            return False  # killed meanwhile, or its files are not where its /proc says
        except _Unverifiable as e:
            log.warning("exec tracer of VM %s: pid %d killed: %s", self._vm, pid, e)
            return False
        return True

    def _open_program(self, pid: int) -> int | None:
        """The very file ``pid`` executed, opened to be read; None when the manager may not
        read it (execute-only, its owner not mapped here): no service could judge it, and
        the scanner lets what it cannot read through (counted as unjudged)."""
        try:
            return os.open(f"/proc/{pid}/exe", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except PermissionError as e:
            log.warning("exec tracer of VM %s: cannot read the program of pid %d: %s", self._vm, pid, e.strerror)
            with self._lock:
                self._counts["unjudged"] += 1
            return None

    def _open_interpreter(self, pid: int, name: str, inode: int) -> int | None:
        """The interpreter ``pid`` has mapped as ``name``, found by that path in the VM
        (no symlinks: it is the kernel's own name for the file) and checked by inode."""
        if name.endswith(_DELETED):
            raise _Unverifiable(f"{name}: the interpreter it loaded is deleted")
        root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = files.openat2(root, name, os.O_RDONLY | os.O_NONBLOCK, 0, _BY_ITS_OWN_NAME)
        except PermissionError as e:  # as for the program: what nobody may read goes through
            log.warning("exec tracer of VM %s: cannot read %s, loaded by pid %d: %s", self._vm, name, pid, e.strerror)
            with self._lock:
                self._counts["unjudged"] += 1
            return None
        except OSError as e:
            raise _Unverifiable(f"{name}: the interpreter it loaded is not there ({e.strerror})") from None
        finally:
            os.close(root)
        if os.fstat(fd).st_ino != inode:
            os.close(fd)
            raise _Unverifiable(f"{name}: another file took the name of the interpreter it loaded")
        return fd

    def _ask(self, pid: int, fd: int | None, path: str) -> bool:
        """The manager's answer about one loaded file (``fd``, which this closes)."""
        if fd is None:
            return True
        try:
            request = api.Executed(caller=api.Caller(self._vm, pid), file=api.OpenFile(fd, path))
            response = self._transport.handle_request(request)
        finally:
            os.close(fd)
        return not isinstance(response, api.Errno)


class _Unverifiable(Exception):
    """What an exec loaded cannot be told for sure: a file gone or replaced meanwhile."""


def _mapped_files(pid: int) -> set[tuple[str, int]]:
    """(path, inode) of each file mapped by ``pid``: at the exec stop, the program and its
    ELF interpreter. The kernel escapes a newline in a name; such a name is not found
    again, and the exec is refused."""
    with open(f"/proc/{pid}/maps", "rb") as f:
        lines = f.read().splitlines()
    mapped = set()
    for line in lines:
        fields = line.split(maxsplit=5)  # address, perms, offset, device, inode, path
        if len(fields) == 6 and fields[5].startswith(b"/"):
            mapped.add((os.fsdecode(fields[5]), int(fields[4])))
    return mapped
