"""Starting a program inside a VM: the command, or a process of ``hvfs exec``. Runs in a
child forked from the VM's pid 1, so the program inherits the VM's seccomp filter."""

from __future__ import annotations

import fcntl
import os
import signal
import termios
from dataclasses import dataclass
from typing import NoReturn

from hvfs._sys import process
from hvfs.sandbox import users

RESET = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCHLD,
    signal.SIGPIPE,
    signal.SIGXFSZ,
)


@dataclass(frozen=True)
class Program:
    argv: tuple[str, ...]
    env: dict[str, str]
    workdir: str = "/"
    user: str | None = None  # --user, resolved from the VM's own files
    home_set: bool = False  # whether HOME was given, which --user must then not replace


def execute(program: Program, *, terminal: int | None = None, stdio: tuple[int, int, int] | None = None) -> NoReturn:
    """Replace this (forked) process with ``program``; never returns. Exit 126 when it
    cannot be run, 127 when it is not found, as docker does."""
    try:
        signal.set_wakeup_fd(-1)
        for signum in RESET:
            signal.signal(signum, signal.SIG_DFL)  # Python ignores SIGPIPE; programs expect the default
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.setsid()  # off the host terminal: no TIOCSTI into the user's shell
        if terminal is not None:
            fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)
            stdio = (terminal, terminal, terminal)
        if stdio is not None:
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
        env = _become(program) if program.user is not None else program.env
        try:
            os.chdir(program.workdir)
        except OSError as e:
            _fail(126, f"working directory {program.workdir}: {e.strerror}")
        os.closerange(3, 1 << 20)
        os.execvpe(program.argv[0], list(program.argv), env)
    except FileNotFoundError:
        _fail(127, f"{program.argv[0]}: executable file not found in $PATH")
    except PermissionError:
        _fail(126, f"{program.argv[0]}: permission denied")
    except OSError as e:
        _fail(126, f"{program.argv[0]}: {e.strerror}")
    except BaseException:
        os._exit(126)
    os._exit(126)


def _fail(code: int, message: str) -> NoReturn:
    os.write(2, f"hvfs: {message}\n".encode())
    os._exit(code)


def _become(program: Program) -> dict[str, str]:
    """Switch to ``--user``; its home becomes $HOME unless one was given."""
    assert program.user is not None
    try:
        user = users.resolve(program.user)
        os.setgroups(list(user.groups))
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
        # Changing uid made us undumpable, and until exec our memory still belongs to
        # the initial user namespace (forked from the manager's): the manager could not
        # read the paths of our trapped calls (chdir, execve) without this.
        process.prctl(process.PR_SET_DUMPABLE, 1)
    except users.UnknownUser as e:
        _fail(126, f"--user {program.user}: {e}")
    except OSError as e:
        _fail(126, f"--user {program.user}: {e.strerror}; is that id mapped in this VM?")
    return program.env if program.home_set else {**program.env, "HOME": user.home}
