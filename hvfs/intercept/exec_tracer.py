"""The exec tracer: what a VM really executed, judged after the kernel loaded it.

An exec cannot be served: the manager checks the path, then lets the kernel run the
call, which reads the path again from the VM's memory, where a racing thread may have
put another one. So while a service must judge what VMs run (a scanner), every process
of the VM is traced, and at each ``PTRACE_EVENT_EXEC`` (new program loaded, none of it
run yet) the manager is asked about the very file loaded, opened through
``/proc/PID/exe``: an ``api.Executed`` request. An Errno answer kills the process
(SIGKILL: its parent sees 137), before it runs one instruction of the file. That also
covers what no path names: fexecve and execveat of a memfd or of an O_PATH fd.

Some facts about ptrace, which the code below relies on:

* A tracee is tied to the tracing *thread*: one thread issues every request for its
  tracees. If that thread exits, they are detached, and with ``PTRACE_O_EXITKILL``
  (which we set) killed: the VM's processes never run untraced.
* ``waitpid(-1, __WALL | __WNOTHREAD)`` reports every tracee, threads included, and
  nothing else: the manager's real children (launchers, the zygote's) belong to the
  threads that started them and are reaped by them, never here.
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
import logging
import os
import signal
import threading
from dataclasses import dataclass

from hvfs import api
from hvfs._sys import tracing
from hvfs.api import Transport

log = logging.getLogger("hvfs.driver")

OPTIONS = (
    tracing.PTRACE_O_TRACEFORK
    | tracing.PTRACE_O_TRACEVFORK
    | tracing.PTRACE_O_TRACECLONE
    | tracing.PTRACE_O_TRACEEXEC
    | tracing.PTRACE_O_EXITKILL
)
_NEW_TRACEE = (tracing.PTRACE_EVENT_FORK, tracing.PTRACE_EVENT_VFORK, tracing.PTRACE_EVENT_CLONE)
_GROUP_STOPS = (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


@dataclass(frozen=True, slots=True)
class TracerStatistics:
    stops: int  # ptrace-stops handled
    execs: int  # executed files judged
    killed: int  # processes killed on the manager's answer
    unjudged: int  # execs whose file the manager could not open (let run)
    tracees: int  # processes and threads traced now


class ExecTracer:
    """Traces the VM whose pid 1 is ``init_pid`` (in the manager's pid namespace), from a
    thread of its own, until every process of the VM has exited."""

    def __init__(self, init_pid: int, vm: str, transport: Transport) -> None:
        self.init_pid = init_pid
        self._vm = vm
        self._transport = transport
        self._tracees: set[int] = set()
        self._seized = threading.Event()
        self._error: OSError | None = None
        self._lock = threading.Lock()
        self._counts = {"stops": 0, "execs": 0, "killed": 0, "unjudged": 0}
        self._thread = threading.Thread(target=self._run, name=f"hvfs-{vm}-tracer", daemon=True)

    def start(self) -> None:
        """Seize pid 1; returns once it is traced. Raises OSError when it cannot be
        (EPERM: ptrace is forbidden here, say by a Yama ptrace_scope of 3)."""
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
            tracing.seize(self.init_pid, OPTIONS)
        except OSError as e:
            self._error = e
            self._seized.set()
            return
        self._tracees.add(self.init_pid)
        self._seized.set()
        while True:
            try:
                pid, status = os.waitpid(-1, tracing.WALL | tracing.WNOTHREAD)
            except ChildProcessError:
                return  # no tracee left: the VM has ended
            try:
                self._on_status(pid, status)
            except Exception:  # never let the thread die: its tracees would die with it
                log.exception("exec tracer of VM %s: cannot handle status %#x of pid %d", self._vm, status, pid)
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
            self._tracees.add(pid)  # a new tracee may report before its parent's event
            self._counts["stops"] += 1
        signum, event = os.WSTOPSIG(status), tracing.event_of(status)
        try:
            if event == tracing.PTRACE_EVENT_EXEC:
                self._on_exec(pid)
            elif event in _NEW_TRACEE:
                child = tracing.event_message(pid)
                with self._lock:
                    self._tracees.add(child)
                tracing.resume(pid)
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
        if not self._judge(pid):
            os.kill(pid, signal.SIGKILL)
            with self._lock:
                self._counts["killed"] += 1
        tracing.resume(pid)

    def _judge(self, pid: int) -> bool:
        """Whether the manager lets the file ``pid`` has just loaded run."""
        exe = f"/proc/{pid}/exe"
        try:
            fd = os.open(exe, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as e:
            if e.errno in (errno.ESRCH, errno.ENOENT):
                return True  # killed meanwhile
            # Not readable by the manager either (execute-only, its owner not mapped here):
            # no service could read it; the scanner lets what it cannot read through.
            log.warning("exec tracer of VM %s: cannot open the program of pid %d: %s", self._vm, pid, e.strerror)
            with self._lock:
                self._counts["unjudged"] += 1
            return True
        try:
            try:
                path = os.readlink(exe)
            except OSError:
                path = "?"
            request = api.Executed(caller=api.Caller(self._vm, pid), file=api.OpenFile(fd, path))
            response = self._transport.handle_request(request)
        finally:
            os.close(fd)
        return not isinstance(response, api.Errno)
