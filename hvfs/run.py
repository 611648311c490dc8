"""``hvfs run``: one VM, handed to this user's manager (hvfs.hypervisor), which serves it.

This process is the VM's client: it gives the manager the VM's description and pipes for
its stdio (hvfs.sandbox.stdio), relays those and the terminal, passes signals on, and
waits for the exit status. The VM ends with this process (as docker's does with
``docker run``), unless a manager restart comes between: then this process connects to
the new manager and carries on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hvfs.hypervisor import client, control
from hvfs.hypervisor.spec import host_paths, run_project, to_json
from hvfs.sandbox import terminal
from hvfs.sandbox.stdio import Stdio
from hvfs.spec import RunSpec, UsageError

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
RECONNECT = 20.0  # seconds to find a manager again after the one serving the VM went away


def check_stdio() -> None:
    for fd in (0, 1, 2):
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            continue
        if stat.S_ISDIR(mode):
            raise UsageError(f"fd {fd} is a directory; a VM must not inherit a host directory, redirect it")


class SignalForwarder:
    """Signals to hvfs go to the VM's command, through the manager, which kills a VM that
    still runs ``--stop-timeout`` seconds after one that asks it to end, as ``docker stop``
    does. Installed before the VM starts, so that none is lost."""

    def __init__(self) -> None:
        self.send: Callable[[int], None] | None = None
        self.pending: list[int] = []

    def _handle(self, signum: int, frame: object) -> None:
        if self.send is None:
            self.pending.append(signum)
        else:
            self._forward(signum)

    def _forward(self, signum: int) -> None:
        assert self.send is not None
        with contextlib.suppress(OSError):  # the manager is being replaced: the next one hears the next
            self.send(signum)

    def attach(self, send: Callable[[int], None]) -> None:
        self.send = send
        for signum in self.pending:
            self._forward(signum)
        self.pending.clear()


@contextmanager
def forwarding_signals() -> Iterator[SignalForwarder]:
    forwarder = SignalForwarder()
    previous = {s: signal.signal(s, forwarder._handle) for s in FORWARDED}
    try:
        yield forwarder
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run(spec: RunSpec) -> int:
    check_stdio()
    if spec.persist:  # the VM's root is built from it: no one else may put files there
        from hvfs.private_dirs import private_directory

        private_directory(spec.persist, "--persist", "give a directory only you may write in", ours=False)
    project = run_project(spec)
    fields: dict[str, Any] = {"project": to_json(project), "stop_timeout": spec.stop_timeout, "debug": _debug()}
    if spec.tty:
        size = terminal.host_winsize()
        fields["winsize"] = size.hex() if size else None
    with forwarding_signals() as forwarder:
        connection = client.connect(paths=host_paths(project))
        stdio = None if spec.tty else Stdio()
        try:
            client.request(connection, "run", list(stdio.fds) if stdio else None, **fields)
        finally:
            if stdio is not None:
                stdio.handed_over()
        reply, fds, early = _first(connection)
        gid, name = reply["gid"], reply["started"]
        forwarder.attach(_signaller(connection, gid, name))
        if fds:
            try:
                terminal.relay(fds[0], interactive=spec.interactive, until=connection.sock.fileno())
            finally:
                os.close(fds[0])
        while True:
            exited = early or _exit_of(connection)
            if exited is not None:
                break
            connection = _reattach(gid)
            forwarder.attach(_signaller(connection, gid, name))
        connection.close()
    if stdio is not None:
        stdio.finish()
    if spec.stats:
        _write_stats(spec.stats, exited.get("stats", {"vm": name}))
    return int(exited["code"])


def _signaller(connection: control.Connection, gid: str, name: str) -> Callable[[int], None]:
    return lambda signum: client.request(connection, "signal", gid=gid, vm=name, signal=signum)


def _first(connection: control.Connection) -> tuple[dict[str, Any], list[int], dict[str, Any] | None]:
    """The manager's answer to the run: the VM started, or one line of why not; and its
    exit, when a VM that ends at once is heard of before the answer."""
    exited = None
    try:
        reply, fds = connection.receive()
        while "started" not in reply and "error" not in reply:
            if "exited" in reply:
                exited = reply
            else:
                told(reply)
            reply, fds = connection.receive()
    except (EOFError, OSError) as e:
        raise UsageError("the manager went away while starting the VM; see its log (hvfs manager status)") from e
    if "error" in reply:
        raise UsageError(str(reply["error"]))
    return reply, fds, exited


def _exit_of(connection: control.Connection) -> dict[str, Any] | None:
    """The VM's exit message, or None if the manager went away first."""
    for reply, fds in control.replies(connection):
        for fd in fds:
            os.close(fd)
        if "exited" in reply:
            return reply
        told(reply)
    return None


def _debug() -> bool:
    return bool(os.environ.get("HVFS_DEBUG"))


def told(message: dict[str, Any]) -> bool:
    """Print what the manager tells this client (hvfs.hypervisor.telling); whether it was that."""
    if "stderr" not in message:
        return False
    print(message["stderr"], file=sys.stderr, flush=True)
    return True


def _reattach(gid: str) -> control.Connection:
    """The manager went away (killed, or restarted for an upgrade): the VM waits, held by
    its shim; find the next manager (starting one) and follow the VM again."""
    deadline = time.monotonic() + RECONNECT
    while True:
        try:
            connection = client.connect()
            client.request(connection, "attach", gid=gid)
            reply, _ = connection.receive()
            if "error" in reply:
                raise UsageError(f"the VM was lost with its manager: {reply['error']}")
            return connection
        except (control.ControlError, EOFError, OSError):
            if time.monotonic() > deadline:
                raise UsageError("the manager went away and no other took the VM back") from None
            time.sleep(0.1)


def _write_stats(path: str, document: dict[str, Any]) -> None:
    try:
        with open(path, "w") as f:
            json.dump(document, f, indent=2, sort_keys=True)
            f.write("\n")
    except OSError as e:  # checked before the VM started: it changed since
        raise UsageError(f"--stats {path}: cannot write: {e.strerror}; give another path") from None
