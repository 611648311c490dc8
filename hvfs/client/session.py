"""The client side of the control protocol (docs/control.md) for one VM and its
processes: what ``hvfs run`` and the Python API (hvfs.client.vm) both do.

- ``launch``: hand the manager a group of one VM (``op: run``) with the VM's stdio, and
  take its first answer: started, or one line of why not.
- ``wait_exit``: the VM's exit message, following it to the next manager if the one
  serving it goes away (killed, or replaced by an upgrade).
- ``start_exec`` / ``Exec.wait``: a process of ``op: exec`` in a running VM.

The connection of a launch is the VM's owner: the VM ends when it closes (the client
exited), as ``docker run``'s container does with its client.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hvfs.hypervisor import client, control
from hvfs.hypervisor.spec import bound_paths, host_paths, to_json
from hvfs.project.config import Project
from hvfs.spec import UsageError

RECONNECT = 20.0  # seconds to find a manager again after the one serving the VM went away
SEE_LOG = "see its log (hvfs manager status)"


@dataclass
class Launch:
    """A VM the manager started for this client: ``connection`` owns it."""

    connection: control.Connection
    gid: str
    name: str
    pid: int  # the VM's pid 1 as the host sees it
    fds: list[int] = field(default_factory=list)  # the terminal's master side, with a tty
    exited: dict[str, Any] | None = None  # its exit, when the manager told it before "started"

    def signal(self, signum: int) -> None:
        """Pass ``signum`` to the VM's command (the manager kills a VM that still runs
        its stop timeout after a signal asking it to end)."""
        client.request(self.connection, "signal", gid=self.gid, vm=self.name, signal=signum)


def launch(
    project: Project,
    stdio: Sequence[int] | None,
    *,
    stop_timeout: float,
    winsize: bytes | None = None,
    outputs: Mapping[str, int] | None = None,
    detach: bool = False,
    remove: bool = False,
    listeners: Sequence[int] = (),
) -> Launch:
    """Start the one VM of ``project`` (a prepared group of kind "run"): ``stdio`` its
    stdin, stdout and stderr (None with a terminal, whose master side comes back in
    ``fds``). Raises UsageError with the manager's line when it could not start.
    ``detach``: the VM runs on when this client goes (``remove``: and goes as it exits);
    ``listeners``: listening sockets for the VM's published ports (VmConfig.publish)."""
    debug = bool(os.environ.get("HVFS_DEBUG"))  # its manager's records come with their tracebacks
    fields: dict[str, Any] = {"project": to_json(project), "stop_timeout": stop_timeout, "debug": debug}
    if project.vms[project.name].tty:
        fields["winsize"] = winsize.hex() if winsize else None
    if detach:
        fields.update(detach=True, remove=remove)
    if listeners:
        fields["publish"] = [port for _, _, port in project.vms[project.name].publish]
    connection = client.connect(paths=host_paths(project), bound=bound_paths(project))
    audit = project.services.get("audit")
    exited, given = None, []
    try:
        if isinstance(audit, str):
            given.append(open_audit(audit))
        # outputs: what the manager writes at the VM's exit (hvfs.changes_cli.outputs), after stdio;
        # then the listeners of published ports; the audit file opened here, as the user, last
        roles = list(outputs or {})
        fds = [*(stdio or ()), *(outputs or {}).values(), *listeners, *given]
        if given:
            fields["given"] = [audit]
        client.request(connection, "run", fds or None, outputs=roles, **fields)
        while True:
            try:
                reply, fds = connection.receive()
            except (EOFError, OSError) as e:
                raise UsageError(f"the manager went away while starting the VM; {SEE_LOG}") from e
            if told(reply) or "log" in reply:  # a detached VM's output, which its log keeps
                continue
            if "exited" not in reply:
                break
            exited = reply  # a VM that ended as it started: its exit can come before "started"
            for fd in fds:
                os.close(fd)
    except BaseException:
        connection.close()
        raise
    finally:
        for fd in given:  # the manager has its copy
            os.close(fd)
    if "error" in reply:
        connection.close()
        raise UsageError(str(reply["error"]))
    started = Launch(connection, str(reply["gid"]), str(reply["started"]), int(reply.get("pid") or 0), fds)
    started.exited = exited
    return started


def open_audit(path: str) -> int:
    """The audit file ``path``, opened (made, mode 0600) by this process, the user's: the
    manager, root in its user namespace, could open what the user may not, and a path
    checked before may be another by the time it opens it. Raises UsageError."""
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY, 0o600)
    except OSError as e:
        raise UsageError(f"--audit {path} cannot be written: {e.strerror}; give another path") from None


def exit_message(connection: control.Connection, on_review: Any = None) -> dict[str, Any] | None:
    """The VM's exit message on ``connection``, or None if the manager went away first.
    ``on_review(message)`` answers a --review's question (hvfs.changes_cli)."""
    for reply, fds in control.replies(connection):
        for fd in fds:
            os.close(fd)
        if "exited" in reply:
            return reply
        if "review" in reply and on_review is not None:
            on_review(reply)
            continue
        told(reply)
    return None


def told(message: dict[str, Any]) -> bool:
    """Print on stderr what the manager tells this client of its VM (a refused host
    socket, a service that failed: hvfs.hypervisor.telling); whether it was that."""
    if "stderr" not in message:
        return False
    say(message["stderr"])
    return True


def say(line: str) -> None:
    """``line`` on stderr in one write with its newline: the manager writes a run's --diff
    there too, at the VM's exit, maybe while this client still prints what it was told
    (print writes the newline apart, and a diff written between the two lost its first
    line into the told one: hvfs._sys.lines)."""
    stream = sys.stderr
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # a stream of the caller's (the Python API's user)
        stream.write(line + "\n")
        stream.flush()
        return
    stream.flush()
    from hvfs._sys.lines import write_lines  # on a told line alone: most runs have none (tests/test_startup.py)

    write_lines(fd, (line + "\n").encode(stream.encoding or "utf-8", stream.errors or "backslashreplace"))


def wait_exit(run: Launch, *, on_reattach: Any = None, on_review: Any = None) -> dict[str, Any]:
    """Wait for the VM to exit; returns the manager's ``exited`` message (``code``, and
    ``stats``). A manager that goes away meanwhile is replaced: ``run.connection``
    becomes the new owner (``on_reattach(run)`` is told)."""
    while True:
        exited = run.exited or exit_message(run.connection, on_review)
        if exited is not None:
            return exited
        run.connection.close()
        run.connection = reattach(run.gid)
        if on_reattach is not None:
            on_reattach(run)


def reattach(gid: str) -> control.Connection:
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


@dataclass
class Exec:
    """A process started in a VM by ``start_exec``; ``pid`` is its pid in the VM."""

    connection: control.Connection
    pid: int

    def wait(self, timeout: float | None = None) -> int | None:
        """Its exit status (137 if the VM ended first), or None after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                try:
                    self.connection.wait_answer(left)
                except control.NoAnswer:
                    return None
            try:
                reply, fds = self.connection.receive()
            except (EOFError, OSError, ValueError):
                raise UsageError("the manager went away while a command ran in the VM") from None
            for fd in fds:
                os.close(fd)
            if "error" in reply:
                raise UsageError(str(reply["error"]))
            if "exited" in reply:
                return int(reply["exited"])

    def close(self) -> None:
        self.connection.close()


def start_exec(
    gid: str,
    vm: str,
    argv: Sequence[str],
    stdio: Sequence[int],
    *,
    env: Mapping[str, str] | None = None,
    workdir: str | None = None,
    user: str | None = None,
    what: str = "the VM",
) -> Exec:
    """Start ``argv`` in the running VM ``vm`` of group ``gid`` with ``stdio`` (three fds,
    which the manager hands to the VM's pid 1; the caller closes its copies). Raises
    UsageError when the manager refuses (the VM is not running, the command too long)."""
    try:
        connection = client.connect(start=False)
    except control.ControlError as e:
        raise UsageError(f"exec in {vm}: {e}") from None
    try:
        fields = {"gid": gid, "vm": vm, "argv": list(argv), "env": dict(env or {}), "workdir": workdir,
                  "user": user, "tty": False, "what": what}  # fmt: skip
        client.request(connection, "exec", list(stdio), **fields)
        connection.wait_answer(control.answer_timeout())
        reply, fds = connection.receive()
    except control.ControlError as e:
        connection.close()
        raise UsageError(f"exec in {vm}: {e}") from None
    except (EOFError, OSError, ValueError):
        connection.close()
        raise UsageError(f"exec in {vm}: the manager closed the connection") from None
    for fd in fds:
        os.close(fd)
    if "error" in reply:
        connection.close()
        raise UsageError(str(reply["error"]))
    return Exec(connection, int(reply.get("started", 0)))
