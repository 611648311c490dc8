"""Starting a VM: hvfs-init, spawned in the manager's user namespace, does the rest.

hvfs-init (native/init/, built by the package's setup) is spawned with ``posix_spawn``,
so no Python code runs between fork and exec, which makes starting a VM safe from a
manager that has threads; with the GIL released meanwhile (``hvfs._sys.spawn``), so that
the manager's other threads (a run's, while a spare is made) go on. It gets a clean
environment, the VM's stdio and its end of the channel (fd 3). Because it is exec'd
before the VM's user namespace exists, its memory belongs to the manager's user
namespace, and it makes itself non-dumpable: the VM's root can neither trace, read nor
take fds from pid 1 (or from its children before they exec), while the manager still
can. What it does is in native/init/init.h.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hvfs import deferred
from hvfs._sys import process, spawner
from hvfs.sandbox import protocol
from hvfs.sandbox.errors import SetupError
from hvfs.sandbox.plan import BootPlan, Program
from hvfs.sandbox.preflight import userns_hint
from hvfs.sandbox.protocol import Message, Msg, Tag
from hvfs.sandbox.userns import IdMap, map_vm

log = deferred.logger("hvfs.launcher")
INIT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_bin", "hvfs-init")
RLIMIT_NAMES = ("nproc", "as", "nofile")  # the limits a VM's start may set


def rlimits() -> dict[str, int]:
    """The numbers of RLIMIT_NAMES, from ``resource`` (a shared library: imported by the
    few VMs with limits, not by every manager's start)."""
    import resource

    return {name: getattr(resource, f"RLIMIT_{name.upper()}") for name in RLIMIT_NAMES}


SEEDED_SIGNALS = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
HINTS = {
    errno.EPERM: "the kernel refused it inside the VM's user namespace",
    errno.ENOSYS: "this kernel lacks the call",
}
SECCOMP_HINT = "seccomp user notification is unavailable; hvfs needs Linux 5.14+ with CONFIG_SECCOMP_FILTER"


@dataclass
class Booted:
    """A booted VM's listener, and its terminal when it has one."""

    listener: int
    terminal: int | None  # the pty master, with -t


@dataclass(frozen=True)
class Run:
    """What a spare's START brings: the run's own, which a spare booted without."""

    program: Program
    hostname: str
    stdio: tuple[int, int, int]


@dataclass
class VmProcess:
    """A VM's two processes outside it, as the manager sees them: the shim (hvfs-init's
    launcher, which holds what outlives a manager and reports the exit status) over
    ``shim``, and pid 1 over ``chan``."""

    launcher_pid: int
    init_pid: int
    shim: socket.socket
    chan: socket.socket
    ours: bool = True  # the launcher is this process's child (not after a manager restart)
    terminal: int | None = None  # the pty master once booted, with a terminal (owned by the caller of start_vm)
    mounts: int | None = None  # pid 1's mount namespace, once booted: let go in reap
    _early: list[tuple[Message, list[int]]] = field(default_factory=list)
    finished: list[Callable[[], None]] = field(default_factory=list)  # run once the VM has ended (wait)

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.init_pid, signum)

    def kill(self) -> None:
        """End the VM now, whatever its processes do: SIGKILL to pid 1 from outside its
        namespace always lands, and the kernel then kills every other process of it."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.init_pid or self.launcher_pid, signal.SIGKILL)

    def wait_booted(self) -> Booted:
        """The VM's listener (and terminal), once pid 1 is in its boot view."""
        message, _ = self._receive_until(Msg.READY)
        numbers = message.ints(Tag.FD)
        fds = self.take([*numbers, *message.ints(Tag.MOUNTS)])  # pid 1 closes its own when told to start
        self.mounts = fds[len(numbers)] if len(fds) > len(numbers) else None
        self.terminal = fds[1] if message.int(Tag.TTY) else None
        return Booted(listener=fds[0], terminal=self.terminal)

    def take(self, numbers: list[int]) -> list[int]:
        """Duplicate pid 1's fds ``numbers`` into this process. Pid 1 names them rather
        than passing them: once its filter is in place, each sendmsg it made would be a
        request to a manager not yet serving it (native/init/init.h)."""
        pidfd = process.pidfd_open(self.init_pid)
        try:
            return [process.pidfd_getfd(pidfd, number) for number in numbers]
        finally:
            os.close(pidfd)

    def taken(self, numbers: list[int]) -> None:
        """Tell pid 1 it may close its fds ``numbers``, now duplicated here."""
        protocol.send(self.chan, Message(Msg.TAKEN).add_all_ints(Tag.FD, numbers))

    def deposit(self, fds: dict[str, int], moved: str | None = None) -> None:
        """Leave copies of ``fds`` (by role) with the shim, for a manager that comes after
        this one (native/init/shim.c). The shim keeps its own copies. ``moved``: where its
        socket is now (a spare's state directory, renamed to the run's)."""
        message = Message(Msg.DEPOSIT).add_all(Tag.ROLE, fds)
        if moved is not None:
            message.add(Tag.SHIM, moved)
        protocol.send(self.shim, message, list(fds.values()))

    def go(self, start: dict[str, Any], run: Run | None = None) -> None:
        """Tell pid 1 to start the command, with the settings made outside the VM (and a
        spare's ``run``: its program, hostname and stdio); raises SetupError when pid 1
        cannot apply them."""
        message = Message(Msg.START) if run is None else program_message(Msg.START, run.program)
        if run is not None:
            message.add(Tag.HOSTNAME, run.hostname)
        link = start.get("network")
        if link:
            message.add(Tag.NET_IFACE, link["interface"])
            message.add(Tag.NET_ADDR, socket.inet_aton(link["address"]))
            message.add(Tag.NET_PREFIX, int(link["prefix"]))
        if "memfd_noexec" in start:
            message.add(Tag.MEMFD_NOEXEC, int(start["memfd_noexec"]))
        for name, value in start.get("rlimits", {}).items():
            message.add(Tag.RLIMIT, struct.pack("<IQ", rlimits()[name], value))
        try:
            protocol.send(self.chan, message, run.stdio if run is not None else ())
        except protocol.MessageTooLarge as e:
            raise SetupError(
                "command", f"the command and its environment are too large ({e})", "shorten them"
            ) from None
        self._receive_until(Msg.STARTED)

    def exec(self, exec_id: int, program: Program, *, tty: bool, winsize: bytes | None, stdio: list[int]) -> None:
        """Ask pid 1 to start ``program`` as a process of ``hvfs exec``; the answers come
        as EXEC_STARTED and EXEC_EXITED messages (``receive``)."""
        message = program_message(Msg.EXEC, program).add(Tag.ID, exec_id).add(Tag.TTY, tty)
        if winsize:
            message.add(Tag.WINSIZE, winsize)
        protocol.send(self.chan, message, [] if tty else stdio)

    def receive(self) -> tuple[Message, list[int]]:
        """The next message from pid 1; ``protocol.ChannelClosed`` once the VM is gone."""
        if self._early:
            return self._early.pop(0)
        return protocol.receive(self.chan)

    def wait(self, *, reap: bool = True, hang_up: bool = True) -> int:
        """Wait for the VM to end; its exit code. The shim reports it, then exits once
        this side has hung up; without ``reap``, its end is the caller's to ``reap`` (a
        caller that tells the exit first: two wake-ups, the shim's and this thread's, and
        a loaded machine's wait for a CPU for each, are then off the exit's way). Without
        ``hang_up``, the caller hangs up (``hang_up``), once it has closed what the shim
        holds too (the VM's views): the shim's end, then, is the last to let them go and
        unmounts them, off the exit's way, rather than this process's close on it."""
        code = 128 + signal.SIGKILL  # the shim itself was killed: so was the VM
        try:
            while True:
                message, fds = protocol.receive(self.shim)
                for fd in fds:
                    os.close(fd)
                if message.type == Msg.VM_EXITED:
                    code = message.int(Tag.CODE)
                    break
                if message.type == Msg.ERROR:
                    log.warning("the shim of pid %d: %s", self.launcher_pid, _setup_error(message))
        except (protocol.ChannelClosed, OSError):
            pass
        if hang_up:
            self.hang_up()
        if reap:
            self.reap()
        return code

    def hang_up(self) -> None:
        """Let the shim end (after ``wait``), and run what waited for the VM's end."""
        self.shim.close()
        for finish in self.finished:
            try:
                finish()
            except OSError as e:
                log.warning("after the VM of pid %d: %s", self.launcher_pid, e.strerror or e)
        self.finished.clear()

    def reap(self) -> None:
        """Let pid 1's mount namespace go, and wait for the shim's own end, once ``wait``
        has hung up (only a child of ours). Held until now, the namespace is torn down here,
        after a caller's tell of the exit, rather than in pid 1's exit, before the shim
        hears of it (native/init/main.c)."""
        self.let_mounts_go()
        if self.ours:
            with contextlib.suppress(ChildProcessError):
                while True:
                    try:
                        os.waitpid(self.launcher_pid, 0)
                        break
                    except InterruptedError:
                        continue

    def let_mounts_go(self) -> None:
        """Close pid 1's mount namespace, held since its boot (``reap`` does, if not yet)."""
        if self.mounts is not None:
            mounts, self.mounts = self.mounts, None
            os.close(mounts)

    def _receive_until(self, kind: Msg) -> tuple[Message, list[int]]:
        """The next message of ``kind``, from pid 1 or the launcher, whichever sends it;
        an error from either ends the VM."""
        for i, (message, _fds) in enumerate(self._early):
            if message.type == kind:
                return self._early.pop(i)
        while True:
            readable, _, _ = select.select([self.chan, self.shim], [], [])
            source = self.chan if self.chan in readable else self.shim
            try:
                message, fds = protocol.receive(source)
            except (protocol.ChannelClosed, ConnectionResetError):
                self.kill()
                code = self.wait()
                raise SetupError("boot", f"the VM's launcher exited ({code}) before it was ready") from None
            if message.type == Msg.ERROR:
                self.kill()
                self.wait()
                raise _setup_error(message)
            if message.type == kind:
                return message, fds
            self._early.append((message, fds))


def _setup_error(message: Message) -> SetupError:
    step = message.string(Tag.STEP) or "VM"
    code = message.int(Tag.ERRNO)
    text = message.string(Tag.TEXT) or (os.strerror(code) if code else "failed")
    if step.startswith("limit "):
        number = int(step.split()[1])
        step = "limit " + next((name for name, n in rlimits().items() if n == number), str(number))
    if step == "VM namespaces":
        hint = userns_hint()
    elif step in ("seccomp filter", "no_new_privs"):
        hint = SECCOMP_HINT
    else:
        hint = HINTS.get(code, "")
    return SetupError(step, text, hint)


def program_message(kind: Msg, program: Program) -> Message:
    message = Message(kind).add_all(Tag.ARG, program.argv)
    message.add_all(Tag.ENV, (f"{key}={value}" for key, value in program.env.items()))
    message.add(Tag.WORKDIR, program.workdir).add(Tag.HOME_SET, program.home_set)
    if program.user is not None:
        message.add(Tag.USER, program.user)
    return message


def plan_message(plan: BootPlan) -> Message:
    if plan.spare:  # nothing of a run before one takes it
        message = Message(Msg.PLAN).add(Tag.SPARE, True).add(Tag.BOOT, plan.boot).add(Tag.TTY, False)
    else:
        message = program_message(Msg.PLAN, plan.program)
        message.add(Tag.HOSTNAME, plan.name).add(Tag.BOOT, plan.boot).add(Tag.TTY, plan.tty)
    message.add(Tag.GRACE_MS, int(plan.grace * 1000)).add(Tag.FILTER, plan.filter_program)
    message.add(Tag.WAIT_MS, int(plan.wait * 1000))
    if plan.traced:
        message.add(Tag.TRACED, True)
    if plan.shim:
        message.add(Tag.SHIM, plan.shim)
    if plan.winsize:
        message.add(Tag.WINSIZE, plan.winsize)
    return message


def _spawn(shim: socket.socket, chan: socket.socket, stdio: tuple[int, int, int]) -> int:
    if not os.access(INIT, os.X_OK):
        raise SetupError("hvfs-init", f"{INIT} is missing", "build it: run scripts/setup (or reinstall hvfs)")
    return spawner.spawn(
        INIT,
        ["hvfs-init"],  # the VM may read its pid 1's command line: no host path in it
        {},
        [*stdio, shim.fileno(), chan.fileno()],
        setsid=True,
        setsigmask=(),
        setsigdef=SEEDED_SIGNALS,
    )


def start(plan: BootPlan, idmap: IdMap) -> VmProcess:
    """Spawn the VM's launcher and map its user namespace; returns once the VM's pid 1
    exists (not yet booted)."""
    shim, shim_theirs = protocol.pair()
    chan, chan_theirs = protocol.pair()
    try:
        pid = _spawn(shim_theirs, chan_theirs, plan.stdio)
    finally:
        shim_theirs.close()
        chan_theirs.close()
    vm = VmProcess(launcher_pid=pid, init_pid=0, shim=shim, chan=chan)
    try:
        protocol.send(shim, plan_message(plan))
    except protocol.MessageTooLarge as e:
        vm.kill()
        vm.wait()
        raise SetupError("command", f"the command and its environment are too large ({e})", "shorten them") from None
    vm._receive_until(Msg.UNSHARED)
    try:
        map_vm(pid, idmap)
    except OSError as e:
        vm.kill()
        vm.wait()
        raise SetupError("VM id maps", e.strerror or str(e)) from None
    protocol.send(shim, Message(Msg.MAPPED))
    message, _ = vm._receive_until(Msg.INIT)
    vm.init_pid = message.int(Tag.PID)
    return vm
