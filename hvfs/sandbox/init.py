"""A VM's pid 1: boots the VM, starts the command, reaps zombies, forwards signals, and
starts the processes of ``hvfs exec``.

It exits with the command's status, which makes the kernel kill whatever else is left
in the VM. If the manager dies, every trapped call fails with ENOSYS from then on; pid 1
sees the control channel close, sends SIGTERM to every process of the VM, and after a
grace period exits, so the kernel kills the rest: nothing is left orphaned.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import select
import signal
import socket
import termios
import time
from typing import Any, NoReturn

from hvfs.sandbox import boot, channel, network, spawn
from hvfs.sandbox.errors import SetupError
from hvfs.sandbox.plan import BootPlan, exit_code

FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)
RLIMITS = {"nproc": resource.RLIMIT_NPROC, "as": resource.RLIMIT_AS, "nofile": resource.RLIMIT_NOFILE}


def run(plan: BootPlan, chan: socket.socket) -> NoReturn:
    code = 125
    try:
        boot.enter_boot_view(plan)
        master, slave = boot.open_terminal(plan) if plan.tty else (None, None)
        listener = boot.install_filter(plan)
        wakeup = _catch_signals()
        boot.report_ready(chan, listener, master)
        _apply(_wait_for_start(chan))
        channel.send(chan, {"started": True})
        command = os.fork()
        if command == 0:
            spawn.execute(plan.program, terminal=slave)
        if slave is not None:
            os.close(slave)
        code = Supervisor(plan, chan, command, wakeup).run()
    except SetupError as e:
        with contextlib.suppress(OSError):
            channel.send(chan, {"error": str(e)})
    except BaseException as e:  # never unwind into the manager's code that forked us
        with contextlib.suppress(OSError):
            channel.send(chan, {"error": f"init: {e!r}"})
    os._exit(code)


def _catch_signals() -> int:
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for signum in (*FORWARDED, signal.SIGCHLD):
        signal.signal(signum, lambda *_: None)
    return read_end


def _wait_for_start(chan: socket.socket) -> dict[str, Any]:
    """The manager's go-ahead, with what it set up outside the VM (a network link)."""
    try:
        message, _ = channel.receive(chan)
    except channel.ChannelClosed:
        raise SetupError("start", "the manager went away before starting the VM") from None
    start: dict[str, Any] = message.get("start", {})
    return start


def _apply(start: dict[str, Any]) -> None:
    link = start.get("network")
    if link:
        boot.step("network", lambda: network.configure_interface(link["interface"], link["address"], link["prefix"]))
    if start.get("memfd_noexec"):
        # Code run from a memfd was never written to a file: refuse to run it at all (6.3+).
        # Rootless, the sysctl belongs to the host's root; the manager scans an fd that
        # is executed (fexecve) instead.
        def memfd_noexec() -> None:
            try:
                with open("/proc/sys/vm/memfd_noexec", "w") as f:
                    f.write(str(start["memfd_noexec"]))
            except PermissionError:
                pass

        boot.step("memfd_noexec", memfd_noexec)
    for name, value in start.get("rlimits", {}).items():
        boot.step(f"limit {name}", lambda n=name, v=value: resource.setrlimit(RLIMITS[n], (v, v)))  # type: ignore[misc]


class Supervisor:
    """Waits for signals, children and messages from the manager, until the command exits."""

    def __init__(self, plan: BootPlan, chan: socket.socket, command: int, wakeup: int) -> None:
        self.plan = plan
        self.chan = chan
        self.command = command
        self.wakeup = wakeup
        self.execs: dict[int, str] = {}  # pid of an ``hvfs exec`` process -> its request id
        self.manager_lost_at: float | None = None

    def run(self) -> int:
        while True:
            timeout = None
            watched: list[int | socket.socket] = [self.wakeup]
            if self.manager_lost_at is None:
                watched.append(self.chan)
            else:
                timeout = max(0.0, self.manager_lost_at + self.plan.grace - time.monotonic())
            readable, _, _ = select.select(watched, [], [], timeout)
            if self.manager_lost_at is not None and not readable:
                return 128 + signal.SIGKILL  # grace is over; exiting kills the rest
            if self.chan in readable:
                self._from_manager()
            if self.wakeup in readable:
                status = self._on_signals()
                if status is not None:
                    return exit_code(status)

    def _from_manager(self) -> None:
        try:
            message, fds = channel.receive(self.chan)
        except (channel.ChannelClosed, OSError):
            self.manager_lost_at = time.monotonic()
            os.kill(-1, signal.SIGTERM)
            return
        if "exec" in message:
            self._exec(message["exec"], fds)

    def _exec(self, request: dict[str, Any], fds: list[int]) -> None:
        program = spawn.Program(
            argv=tuple(request["argv"]),
            env=request["env"],
            workdir=request.get("workdir", "/"),
            user=request.get("user"),
            home_set="HOME" in request.get("env_given", []),
        )
        master = slave = None
        if request.get("tty"):
            master, slave = os.openpty()
            if request.get("winsize"):
                fcntl.ioctl(slave, termios.TIOCSWINSZ, bytes.fromhex(request["winsize"]))
        pid = os.fork()
        if pid == 0:
            spawn.execute(program, terminal=slave, stdio=None if slave is not None else (fds[0], fds[1], fds[2]))
        for fd in fds + ([slave] if slave is not None else []):
            os.close(fd)
        self.execs[pid] = request["id"]
        reply = {"exec_started": request["id"], "pid": pid}
        channel.send(self.chan, reply, [master] if master is not None else None)
        if master is not None:
            os.close(master)

    def _on_signals(self) -> int | None:
        try:
            signals = os.read(self.wakeup, 512)
        except BlockingIOError:
            signals = b""
        for signum in signals:
            if signum != signal.SIGCHLD and self.manager_lost_at is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.command, signum)
        return self._reap()

    def _reap(self) -> int | None:
        """Reap every exited child; the command's wait status if it was among them."""
        found = None
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return found
            if pid == 0:
                return found
            if pid == self.command:
                found = status
            elif pid in self.execs:
                with contextlib.suppress(OSError):
                    channel.send(self.chan, {"exec_exited": self.execs.pop(pid), "code": exit_code(status)})
