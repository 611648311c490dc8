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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hvfs import changes_cli, run_flags
from hvfs.client import session
from hvfs.hypervisor.spec import run_project
from hvfs.sandbox import terminal
from hvfs.sandbox.stdio import Stdio
from hvfs.spec import RunSpec, UsageError

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


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
    if spec.detach:
        _check_detached(spec)
    if spec.persist:  # the VM's root is built from it: no one else may put files there
        from hvfs.private_dirs import private_directory

        private_directory(spec.persist, "--persist", "give a directory only you may write in", ours=False)
    project = run_project(spec)
    if spec.detach:
        return _detached(spec, project)
    listeners = run_flags.listeners(spec.publish)
    winsize = terminal.host_winsize() if spec.tty else None
    with forwarding_signals() as forwarder:
        # --review keeps the terminal for its question: the VM's stdin is empty
        reviewing = spec.changes is not None and spec.changes.commit == "review"
        stdio, outputs = None if spec.tty else Stdio(input=not reviewing), {}
        replaced: list[bool] = []  # the manager serving the VM was replaced: what it was to write at exit is lost
        try:
            outputs = changes_cli.outputs(spec.changes)
            started = session.launch(project, stdio.fds if stdio else None, stop_timeout=spec.stop_timeout,
                                     winsize=winsize, outputs=outputs,
                                     listeners=[s.fileno() for s in listeners])  # fmt: skip
        finally:
            if stdio is not None:
                stdio.handed_over()
            for fd in outputs.values():
                os.close(fd)
            for sock in listeners:  # the manager has its copies
                sock.close()
        forwarder.attach(started.signal)
        if started.fds:
            try:
                terminal.relay(started.fds[0], interactive=spec.interactive, until=started.connection.sock.fileno())
            finally:
                os.close(started.fds[0])
        exited = session.wait_exit(
            started,
            on_reattach=lambda again: _reattached(again, forwarder, replaced),
            on_review=_reviewer(started),
        )
        started.connection.close()
    if stdio is not None:
        stdio.finish()
    changes_cli.report(exited.get("commit"), spec.changes, exited.get("changes") if replaced else None)
    if spec.stats:
        _write_stats(spec.stats, exited.get("stats", {"vm": started.name}))
    return int(exited["code"])


def _reattached(again: session.Launch, forwarder: SignalForwarder, replaced: list[bool]) -> None:
    forwarder.attach(again.signal)
    replaced.append(True)


def _reviewer(started: session.Launch) -> Callable[[dict[str, Any]], None]:
    """--review: ask the user on the terminal, and tell the manager."""

    def review(message: dict[str, Any]) -> None:
        from hvfs.hypervisor import client

        answer = changes_cli.ask(message["review"])
        client.request(started.connection, "review", gid=started.gid, apply=answer)

    return review


def _check_detached(spec: RunSpec) -> None:
    if spec.tty or spec.interactive:
        raise UsageError("-d with -i or -t: a detached VM has no terminal here; drop -i/-t, or use hvfs exec -it")
    if spec.stats:
        raise UsageError("-d with --stats: a detached VM's statistics are not written; drop --stats")
    changes = spec.changes
    if changes is not None and (changes.diff or changes.commit or changes.export):
        raise UsageError(
            "-d with --diff, --export, --commit-on-success or --review: they act when the command ends, and a "
            "detached VM ends with no client; drop -d, or use hvfs diff/export NAME while it runs"
        )


def _detached(spec: RunSpec, project: Any) -> int:
    """``hvfs run -d``: the VM starts with no stdio of this process (its output goes to
    its log, for ``hvfs logs``), its name is printed, and it runs on in the manager."""
    listeners = run_flags.listeners(spec.publish)
    try:
        started = session.launch(project, None, stop_timeout=spec.stop_timeout, detach=True, remove=spec.remove,
                                 listeners=[s.fileno() for s in listeners])  # fmt: skip
    finally:
        for sock in listeners:
            sock.close()
    started.connection.close()
    print(started.name, flush=True)
    return 0


def _write_stats(path: str, document: dict[str, Any]) -> None:
    try:
        with open(path, "w") as f:
            json.dump(document, f, indent=2, sort_keys=True)
            f.write("\n")
    except OSError as e:  # checked before the VM started: it changed since
        raise UsageError(f"--stats {path}: cannot write: {e.strerror}; give another path") from None
