"""Starting a VM: fork, new namespaces, id maps, then pid 1.

The launcher is forked from the manager while the manager is still single-threaded
(``clone`` from a busy multi-threaded Python can hang the child). It closes every fd it
does not need — above all the manager's fd of the writable view — joins new user, mount,
pid, uts, ipc, net and cgroup namespaces, waits for the manager to write its id maps,
and forks pid 1. The launcher dies with the manager (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from hvfs._sys import process
from hvfs.sandbox import channel, init
from hvfs.sandbox.errors import SetupError
from hvfs.sandbox.plan import BootPlan, exit_code
from hvfs.sandbox.preflight import userns_hint
from hvfs.sandbox.userns import IdMap, map_vm

NAMESPACES = (
    process.CLONE_NEWUSER
    | process.CLONE_NEWNS
    | process.CLONE_NEWPID
    | process.CLONE_NEWUTS
    | process.CLONE_NEWIPC
    | process.CLONE_NEWNET
    | process.CLONE_NEWCGROUP
)


@dataclass
class Booted:
    listener: int
    terminal: int | None  # the pty master, with -t


@dataclass
class VmProcess:
    launcher_pid: int
    init_pid: int
    chan: socket.socket
    waiter: Callable[[], int] | None = None  # how to wait, when the launcher is not our child
    _early: list[tuple[dict[str, object], list[int]]] = field(default_factory=list)

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.init_pid, signum)

    def wait_booted(self) -> Booted:
        """The VM's listener (and terminal), once pid 1 is in its boot view."""
        message, fds = self._receive_until("ready")
        return Booted(listener=fds[0], terminal=fds[1] if message.get("tty") else None)

    def go(self, start: dict[str, object]) -> None:
        """Tell pid 1 to start the command, with the settings made outside the VM; raises
        SetupError when pid 1 cannot apply them."""
        channel.send(self.chan, {"start": start})
        self._receive_until("started")

    def wait(self) -> int:
        """Wait for the VM to end; its exit code."""
        if self.waiter is not None:
            return self.waiter()
        _, status = os.waitpid(self.launcher_pid, 0)
        return exit_code(status)

    def _receive_until(self, key: str) -> tuple[dict[str, object], list[int]]:
        """The next message carrying ``key``; launcher and pid 1 share the channel, so
        their messages may arrive in either order."""
        for i, (message, _fds) in enumerate(self._early):
            if key in message:
                return self._early.pop(i)
        while True:
            message, fds = self._receive()
            if key in message:
                return message, fds
            self._early.append((message, fds))

    def _receive(self) -> tuple[dict[str, object], list[int]]:
        try:
            message, fds = channel.receive(self.chan)
        except channel.ChannelClosed:
            code = self.wait()
            raise SetupError("boot", f"the VM's launcher exited ({code}) before it was ready") from None
        if "error" in message:
            self.wait()
            raise SetupError("VM", str(message["error"]))
        return message, fds


def start(plan: BootPlan, idmap: IdMap) -> VmProcess:
    """Implements runtime.Starter by forking the launcher from this (single-threaded)
    process; returns once the VM's pid 1 exists (not yet booted)."""
    ours, theirs = channel.pair()
    manager = os.getpid()
    pid = os.fork()
    if pid == 0:
        ours.close()
        launch(plan, theirs, manager)
    theirs.close()
    return handshake(VmProcess(launcher_pid=pid, init_pid=0, chan=ours), idmap)


def handshake(vm: VmProcess, idmap: IdMap) -> VmProcess:
    """Map the new user namespace of the launcher ``vm``, then learn its pid 1."""
    pid = vm.launcher_pid
    vm._receive_until("unshared")
    try:
        map_vm(pid, idmap)
    except OSError as e:
        os.kill(pid, signal.SIGKILL)
        vm.wait()
        raise SetupError("VM id maps", e.strerror or str(e)) from None
    channel.send(vm.chan, {"mapped": True})
    message, _ = vm._receive_until("init")
    vm.init_pid = int(str(message["init"]))
    return vm


def _close_inherited_fds(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def launch(plan: BootPlan, chan: socket.socket, parent: int) -> NoReturn:
    """The launcher's life, in the forked child: never returns. Dies with ``parent``."""
    code = 125
    try:
        for signum in range(1, signal.NSIG):
            if signum not in (signal.SIGKILL, signal.SIGSTOP) and callable(signal.getsignal(signum)):
                signal.signal(signum, signal.SIG_DFL)  # the manager's handlers are not ours
        for target, fd in enumerate(plan.stdio):
            if fd != target:
                os.dup2(fd, target)
        _close_inherited_fds({0, 1, 2, chan.fileno()})
        os.setsid()
        process.prctl(process.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(code)
        try:
            process.unshare(NAMESPACES)
        except OSError as e:
            raise SetupError("VM namespaces", e.strerror or str(e), userns_hint()) from None
        channel.send(chan, {"unshared": True})
        message, _ = channel.receive(chan)
        if not message.get("mapped"):
            os._exit(code)
        pid = os.fork()
        if pid == 0:
            init.run(plan, chan)
        channel.send(chan, {"init": pid})
        chan.close()
        _, status = os.waitpid(pid, 0)
        code = exit_code(status)
    except SetupError as e:
        with contextlib.suppress(OSError):
            channel.send(chan, {"error": str(e)})
    except BaseException:
        pass
    os._exit(code)
