"""``hvfs.Project``: the VMs of an hvfs.toml, brought up and down from Python, as ``hvfs up
-d`` and ``hvfs down`` do (the same file, checked the same way: hvfs.project.config).

``up`` waits until every VM is ready: running, and healthy where the manager reports a
health (a VM's ``healthcheck``: ``ps`` then gives ``"health"``); a VM that exits with a
status other than 0 meanwhile is an error naming it, with the end of its output. Which
state counts as ready is one function, ``ready``, for a caller (or a subclass) to
replace.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from hvfs.client import commands
from hvfs.client.audit import SENTINEL, Audit, AuditError
from hvfs.client.commands import Result
from hvfs.hypervisor import client, control
from hvfs.hypervisor.layout import Layout
from hvfs.hypervisor.spec import bound_paths, group_id, host_paths, prepared, to_json
from hvfs.spec import UsageError

STOP_GRACE = 15.0  # after its timeout, the manager SIGKILLs a VM and waits 10 s more
LOG_TAIL = 20  # lines of a failed VM's output in the error
SETTLE = 0.5  # seconds every VM must have been ready before up() returns


class ProjectError(UsageError):
    """A project that could not be brought up, or a VM of it that failed."""


def ready(described: Mapping[str, Any]) -> bool:
    """Whether a VM, as ``ps`` describes it, is ready: running and, where it has a health
    check, healthy; or done (exited 0: a job that ran to its end)."""
    if described.get("state") == "exited":
        return described.get("code") == 0
    if described.get("state") != "running":
        return False
    health = described.get("health")
    return health is None or health == "healthy"


class ProjectVM:
    """One VM of a project that is up: commands, files, output (``Project[name]``)."""

    def __init__(self, project: Project, name: str) -> None:
        self.project, self.name = project, name

    def run(self, command: str | Sequence[str], **how: Any) -> Result:
        """As ``hvfs.VM.run``."""
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        return self.exec(argv, **how)

    def exec(self, argv: Sequence[str], *, timeout: float | None = None, input: str | bytes | None = None,
             env: Mapping[str, str] | None = None, workdir: str | None = None, user: str | None = None,
             check: bool = False) -> Result:  # fmt: skip
        """As ``hvfs.VM.exec`` (``hvfs exec`` does the same)."""
        data = input.encode() if isinstance(input, str) else input
        result = commands.run_in(self.project.gid, self.name, argv, input=data, env=env, workdir=workdir, user=user,
                                 timeout=timeout)  # fmt: skip
        return result.check() if check else result

    def read_file(self, path: str) -> bytes:
        return commands.read_file(self.project.gid, self.name, path)

    def write_file(self, path: str, data: str | bytes, *, mode: int | None = None) -> None:
        commands.write_file(self.project.gid, self.name, path, data.encode() if isinstance(data, str) else data,
                            mode=mode)  # fmt: skip

    def describe(self) -> dict[str, Any]:
        """The VM as ``hvfs ps --json`` shows it (state, code, pid, address…)."""
        for vm in self.project.ps():
            if vm.get("name") == self.name:
                return vm
        raise ProjectError(f"no VM {self.name} in project {self.project.name}")

    @property
    def state(self) -> str:
        return str(self.describe().get("state"))

    def logs(self) -> str:
        """What the VM's command wrote (its log file in the manager's state directory)."""
        try:
            with open(Layout().log(self.project.gid, self.name), "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def audit(self) -> Audit:
        """The project's audit, this VM's events only."""
        return self.project._audit_of(self.name)


class Project:
    """The project of ``file`` (an hvfs.toml). ``up()`` starts it (a ``with`` block does,
    and takes it down at its end); ``project["web"]`` is one of its VMs."""

    def __init__(self, file: str | os.PathLike[str] = "hvfs.toml", *, faults: Sequence[str] = (),
                 services: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        """``faults`` (``--fault`` rules) and ``services`` (keys of ``[services]``) are added
        to the file's own ``[services]``."""
        import dataclasses

        from hvfs.project import config

        loaded = config.load(os.fspath(file))
        table = {**loaded.services, **(services or {})}
        if faults:
            table["faults"] = [*table.get("faults", ()), *faults]
        self.config = dataclasses.replace(loaded, services=table)
        self.name = self.config.name
        self.gid = group_id(self.config)
        self.vms = {name: ProjectVM(self, name) for name in self.config.vms}

    def __getitem__(self, name: str) -> ProjectVM:
        if name not in self.vms:
            raise KeyError(f"no VM named {name!r} in project {self.name}; VMs: {', '.join(self.vms)}")
        return self.vms[name]

    def __repr__(self) -> str:
        return f"<hvfs.Project {self.name} ({self.config.file})>"

    def up(self, *, wait: bool = True, timeout: float = 60.0, settle: float = SETTLE,
           ready: Callable[[Mapping[str, Any]], bool] = ready) -> Project:  # fmt: skip
        """Start every VM (``hvfs up -d``); with ``wait``, return once all are ready (see
        ``wait_ready``)."""
        project = prepared(self.config)
        try:
            connection = client.connect(paths=host_paths(project), bound=bound_paths(project))
        except control.ControlError as e:
            raise ProjectError(str(e)) from None
        try:
            client.request(connection, "up", project=to_json(project), foreground=False)
            reply, _ = connection.receive()
        except (EOFError, OSError, ValueError):
            raise ProjectError("the manager went away while starting the project; see hvfs manager status") from None
        finally:
            connection.close()
        if "error" in reply:
            raise ProjectError(str(reply["error"]))
        if wait:
            self.wait_ready(timeout, settle=settle, ready=ready)
        return self

    def wait_ready(self, timeout: float = 60.0, *, settle: float = SETTLE,
                   ready: Callable[[Mapping[str, Any]], bool] = ready) -> None:  # fmt: skip
        """Return once ``ready`` has held for every VM for ``settle`` seconds (a VM that
        fails as it starts is seen running for a moment); raise ProjectError when one
        exits with a status other than 0, or after ``timeout`` seconds, naming the VM."""
        deadline = time.monotonic() + timeout
        since: float | None = None
        while True:
            described = self.ps()
            for vm in described:
                if vm.get("state") == "exited" and vm.get("code") != 0:
                    raise ProjectError(f"VM {vm['name']} exited with {vm.get('code')}{self._tail(vm['name'])}")
            if described and all(ready(vm) for vm in described):
                since = time.monotonic() if since is None else since
                if time.monotonic() - since >= settle:
                    return
            else:
                since = None
            if time.monotonic() > deadline:
                waiting = [str(vm.get("name")) for vm in described if not ready(vm)]
                raise ProjectError(f"project {self.name}: {', '.join(waiting)} not ready after {timeout:g}s")
            time.sleep(0.05)

    def _tail(self, name: str) -> str:
        lines = self.vms[name].logs().splitlines()[-LOG_TAIL:] if name in self.vms else []
        return ("; its last output:\n" + "\n".join(lines)) if lines else ""

    def ps(self) -> list[dict[str, Any]]:
        """Every VM as ``hvfs ps --json`` describes it; [] when the project is not up."""
        reply = self._call("ps")
        return list(reply.get("vms", [])) if reply is not None else []

    def down(self, timeout: float = 10.0) -> None:
        """Stop every VM (SIGTERM, SIGKILL ``timeout`` seconds later) and remove what the
        project held (``hvfs down``). Nothing happens to a project that is not up."""
        self._call("down", timeout=timeout, wait=(timeout + STOP_GRACE) * len(self.vms))

    def _call(self, op: str, *, wait: float | None = None, **fields: Any) -> dict[str, Any] | None:
        """One request; None when the project (or any manager) is not up."""
        try:
            connection = client.connect(start=False)
        except control.NotUp:
            return None
        except control.ControlError as e:
            raise ProjectError(str(e)) from None
        try:
            client.request(connection, op, gid=self.gid, what=f"project {self.name}", **fields)
            connection.wait_answer(control.answer_timeout() if wait is None else wait)
            reply, fds = connection.receive()
        except control.ControlError as e:
            raise ProjectError(f"{op}: {e}") from None
        except (EOFError, OSError, ValueError):
            raise ProjectError(f"{op}: the manager closed the connection") from None
        finally:
            connection.close()
        for fd in fds:
            os.close(fd)
        if "error" in reply:
            if "is not up" in str(reply["error"]):
                return None
            raise ProjectError(str(reply["error"]))
        return reply

    # -- audit ----------------------------------------------------------------------

    @property
    def audit(self) -> Audit:
        """The audit of every VM (the project's ``[services] audit = FILE``)."""
        return self._audit_of(None)

    def _audit_of(self, vm: str | None) -> Audit:
        path = self.config.services.get("audit")
        if not isinstance(path, str) or not path:
            raise AuditError(f'project {self.name} has no audit: add audit = "FILE" to its [services]')
        return Audit(os.path.join(self.config.directory, path), vm=vm, sync=self._sync)

    def _sync(self, nonce: str) -> None:
        running = [vm["name"] for vm in self.ps() if vm.get("state") == "running"]
        if running:  # the events of a group's VMs are written in order, whichever VM asked
            commands.run_in(self.gid, running[0], ["sh", "-c", f": > {SENTINEL}{nonce}/x"], timeout=30)

    # -- with -----------------------------------------------------------------------

    def __enter__(self) -> Project:
        return self.up()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.down()
