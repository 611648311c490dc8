"""A fork server for VM launchers, for a manager that has threads.

Forking a multi-threaded Python process can leave the child holding a lock that another
thread held at the time (the import lock, a logging handler, malloc's), and the child
then hangs (BenchExec met this). The zygote is forked once, while the manager is still
single-threaded, and stays single-threaded: it forks every launcher. The launchers are
its children, so it reaps them and reports their exit codes back.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import select
import signal
import socket
import threading
from dataclasses import replace
from typing import NoReturn

from hvfs._sys import process
from hvfs.sandbox import channel, launcher
from hvfs.sandbox.errors import SetupError
from hvfs.sandbox.plan import BootPlan, exit_code
from hvfs.sandbox.userns import IdMap

MAX_REQUEST = 1 << 20


class Zygote:
    def __init__(self) -> None:
        ours, theirs = channel.pair()
        manager = os.getpid()
        pid = os.fork()
        if pid == 0:
            ours.close()
            _serve(theirs, manager)
        theirs.close()
        self.pid = pid
        self._sock = ours
        self._ids = itertools.count(1)
        self._send = threading.Lock()
        self._changed = threading.Condition()
        self._launched: dict[int, int] = {}  # request id -> launcher pid
        self._exits: dict[int, int] = {}  # launcher pid -> exit code
        self._alive = True
        self._reader = threading.Thread(target=self._read, name="hvfs-zygote", daemon=True)
        self._reader.start()

    def start(self, plan: BootPlan, idmap: IdMap) -> launcher.VmProcess:
        """Implements runtime.Starter: a launcher forked by the zygote."""
        ours, theirs = channel.pair()
        request = next(self._ids)
        with self._send:
            socket.send_fds(self._sock, [pickle.dumps((request, plan))], [theirs.fileno(), *plan.stdio])
        theirs.close()
        with self._changed:
            self._changed.wait_for(lambda: request in self._launched or not self._alive)
            if request not in self._launched:
                raise SetupError("zygote", "the process that forks VMs has exited")
            pid = self._launched.pop(request)
        vm = launcher.VmProcess(launcher_pid=pid, init_pid=0, chan=ours, waiter=lambda: self.wait(pid))
        return launcher.handshake(vm, idmap)

    def wait(self, pid: int) -> int:
        """The exit code of launcher ``pid``, once it has exited."""
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exits or not self._alive)
            return self._exits.pop(pid, 128 + signal.SIGKILL)

    def _read(self) -> None:
        while True:
            try:
                message, _ = channel.receive(self._sock)
            except (channel.ChannelClosed, OSError):
                break
            with self._changed:
                if "launched" in message:
                    self._launched[int(message["launched"])] = int(message["pid"])
                elif "exited" in message:
                    self._exits[int(message["exited"])] = int(message["code"])
                self._changed.notify_all()
        with self._changed:
            self._alive = False
            self._changed.notify_all()

    def close(self) -> None:
        # shutdown, not just close: our reader thread is blocked in recv on this socket,
        # and closing an fd neither wakes a blocked recv nor tells the zygote we left.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _serve(sock: socket.socket, manager: int) -> NoReturn:
    """The zygote's loop: fork a launcher per request, report every launcher's exit."""
    try:
        process.prctl(process.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != manager:
            os._exit(1)
        for name in os.listdir("/proc/self/fd"):
            if int(name) not in (0, 1, 2, sock.fileno()):
                with contextlib.suppress(OSError):
                    os.close(int(name))
        wakeup_read, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wakeup_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        watched: list[int | socket.socket] = [sock, wakeup_read]
        while True:
            readable, _, _ = select.select(watched, [], [])
            if sock in readable and not _launch_one(sock):
                os._exit(0)  # the manager is gone; its launchers die with us
            if wakeup_read in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(wakeup_read, 512)
                _report_exits(sock)
    except BaseException:
        os._exit(1)


def _launch_one(sock: socket.socket) -> bool:
    data, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 4)
    if not data:
        return False
    request, plan = pickle.loads(data)
    chan = socket.socket(fileno=fds[0])
    pid = os.fork()
    if pid == 0:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        launcher.launch(replace(plan, stdio=(fds[1], fds[2], fds[3])), chan, os.getppid())
    chan.close()
    for fd in fds[1:]:
        os.close(fd)
    channel.send(sock, {"launched": request, "pid": pid})
    return True


def _report_exits(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        channel.send(sock, {"exited": pid, "code": exit_code(status)})
