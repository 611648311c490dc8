"""A VM's pid 1: boots the VM, starts the command, reaps zombies, forwards signals.

It exits with the command's status, which makes the kernel kill whatever else is left
in the VM. If the manager dies, every trapped call fails with ENOSYS from then on; pid 1
sees the control channel close, sends SIGTERM to every process of the VM, and after a
grace period exits, so the kernel kills the rest: nothing is left orphaned.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import socket
import termios
import time
from typing import NoReturn

from hvfs._sys import process
from hvfs.sandbox import boot, channel, users
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


def run(plan: BootPlan, chan: socket.socket) -> NoReturn:
    code = 125
    try:
        boot.enter_boot_view(plan)
        master, slave = boot.open_terminal(plan) if plan.tty else (None, None)
        listener = boot.install_filter(plan)
        wakeup = _catch_signals()
        boot.report_ready(chan, listener, master)
        command = os.fork()
        if command == 0:
            _exec_command(plan, slave)
        if slave is not None:
            os.close(slave)
        code = _supervise(plan, chan, command, wakeup)
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


def _exec_command(plan: BootPlan, slave: int | None) -> NoReturn:
    try:
        signal.set_wakeup_fd(-1)
        for signum in (*FORWARDED, signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(signum, signal.SIG_DFL)  # Python ignores SIGPIPE; programs expect the default
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.setsid()  # off the host terminal: no TIOCSTI into the user's shell
        if slave is not None:
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
        env = plan.env
        if plan.user is not None:
            env = _become(plan, env)
        try:
            os.chdir(plan.workdir)
        except OSError as e:
            os.write(2, f"hvfs: working directory {plan.workdir}: {e.strerror}\n".encode())
            os._exit(126)
        os.closerange(3, 1 << 20)
        os.execvpe(plan.argv[0], list(plan.argv), env)
    except FileNotFoundError:
        os.write(2, f"hvfs: {plan.argv[0]}: executable file not found in $PATH\n".encode())
        os._exit(127)
    except PermissionError:
        os.write(2, f"hvfs: {plan.argv[0]}: permission denied\n".encode())
        os._exit(126)
    except OSError as e:
        os.write(2, f"hvfs: {plan.argv[0]}: {e.strerror}\n".encode())
        os._exit(126)
    except BaseException:
        os._exit(126)
    os._exit(126)


def _become(plan: BootPlan, env: dict[str, str]) -> dict[str, str]:
    """Switch to ``--user``; its home becomes $HOME unless -e set one."""
    assert plan.user is not None
    try:
        user = users.resolve(plan.user)
        os.setgroups(list(user.groups))
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
        # Changing uid made us undumpable, and until exec our memory still belongs to
        # the initial user namespace (forked from the manager's): the manager could not
        # read the paths of our trapped calls (chdir, execve) without this.
        process.prctl(process.PR_SET_DUMPABLE, 1)
    except users.UnknownUser as e:
        os.write(2, f"hvfs: --user {plan.user}: {e}\n".encode())
        os._exit(126)
    except OSError as e:
        os.write(2, f"hvfs: --user {plan.user}: {e.strerror}; is that id mapped in this VM?\n".encode())
        os._exit(126)
    return env if plan.home_set else {**env, "HOME": user.home}


def _supervise(plan: BootPlan, chan: socket.socket, command: int, wakeup: int) -> int:
    manager_lost_at: float | None = None
    while True:
        timeout = None if manager_lost_at is None else max(0.0, manager_lost_at + plan.grace - time.monotonic())
        watched: list[int | socket.socket] = [wakeup] if manager_lost_at else [wakeup, chan]
        readable, _, _ = select.select(watched, [], [], timeout)
        if manager_lost_at is not None and not readable:
            return 128 + signal.SIGKILL  # grace is over; exiting kills the rest
        if chan in readable and _closed(chan):
            manager_lost_at = time.monotonic()
            os.kill(-1, signal.SIGTERM)
        if wakeup in readable:
            try:
                signals = os.read(wakeup, 512)
            except BlockingIOError:
                signals = b""
            for signum in signals:
                if signum != signal.SIGCHLD and manager_lost_at is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(command, signum)
            status = _reap(command)
            if status is not None:
                return exit_code(status)


def _closed(chan: socket.socket) -> bool:
    try:
        return chan.recv(channel.MAX_MESSAGE) == b""
    except OSError:
        return True


def _reap(command: int) -> int | None:
    """Reap every exited child; the command's wait status if it was among them."""
    found = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if pid == command:
            found = status
