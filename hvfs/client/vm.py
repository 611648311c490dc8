"""``hvfs.VM``: one VM of the user's manager, driven from Python (docs/python-api.md).

The VM is a group of its own, as ``hvfs run``'s is, described the same way (hvfs.spec's
RunSpec, hvfs.hypervisor.spec's run_project) and started through the same client code
(hvfs.client.session). Its command defaults to one that waits for ever, so that
commands can be run in it (``run``, ``exec``: the protocol's ``exec``) until ``stop``.
This process owns it: if this process dies, the manager stops the VM.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from hvfs import spec
from hvfs.client import commands, session
from hvfs.client.audit import SENTINEL, Audit, AuditError
from hvfs.client.commands import Result
from hvfs.hypervisor import threads
from hvfs.hypervisor.mounts import MountSpec
from hvfs.hypervisor.spec import run_project
from hvfs.sandbox.stdio import empty_input
from hvfs.spec import UsageError

IDLE_COMMAND = ("sleep", "2147483647")  # a VM that waits until it is stopped (busybox's sleep too)
LOG_LIMIT = 4 << 20  # bytes of a VM's output kept for logs()
STOP_GRACE = 15.0  # after its stop timeout, the manager SIGKILLs a VM and waits 10 s more


@dataclass(frozen=True)
class Mount:
    """A mount of a source of any type (docs/sources.md) at ``target``. A plain string
    does as well where mounts are given: ``"SRC:DST[:ro]"`` (a host directory, as
    ``hvfs run -v``) or ``"type=TYPE,target=DST[,ro][,OPTION=VALUE...]"`` (``--mount``)."""

    target: str
    type: str = "host"
    options: Mapping[str, str] = field(default_factory=dict)
    readonly: bool = False
    sockets: bool = False

    @classmethod
    def host(cls, path: str | os.PathLike[str], target: str, *, readonly: bool = False,
             sockets: bool = False) -> Mount:  # fmt: skip
        """A host directory (or file), served."""
        return cls(target, "host", {"path": os.fspath(path)}, readonly, sockets)

    @classmethod
    def memory(cls, target: str, *, size: str | None = None, readonly: bool = False) -> Mount:
        """A memory file system of the VM's own (``--tmpfs``)."""
        return cls(target, "memory", {"size": size} if size else {}, readonly)

    def spec(self, cwd: str) -> MountSpec:
        what = f"mount at {self.target!r}"
        target = spec.parse_target(self.target, what)
        from hvfs.manager.sources import registry
        from hvfs.manager.sources.base import OptionError

        try:
            source = registry.parse(self.type, dict(self.options), cwd)
        except OptionError as e:
            raise UsageError(f"{what}: {e.problem}") from None
        return MountSpec(target, source, self.readonly, self.sockets)


def mount_spec(mount: str | Mount, cwd: str) -> MountSpec:
    """A mount given as a Mount or as ``-v`` / ``--mount`` text; relative paths are ``cwd``'s."""
    if isinstance(mount, Mount):
        return mount.spec(cwd)
    if "target=" in mount:
        return spec.parse_mount(mount, cwd)
    return spec.parse_volume(mount, cwd)


def services_table(
    audit: str | None, audit_reads: bool, faults: Sequence[str], fault_seed: int | None, more: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``[services]`` table (keys as hvfs.toml has them) these arguments ask for."""
    table = dict(more)
    if audit:
        table["audit"] = audit
    if audit_reads:
        table["audit_reads"] = True
    if faults:
        table["faults"] = [*table.get("faults", ()), *faults]
    if fault_seed is not None:
        table["fault_seed"] = fault_seed
    return table


def _remove_private(path: str | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


class VM:
    """A VM, started at once (``hvfs.VM(...)``) and stopped by ``stop()`` or at the end of
    a ``with`` block. Raises UsageError (an HvfsError) naming what to fix when it cannot
    start.

    - ``image``: ``"host"`` (the host's /usr, /etc…, read-only, under a copy-on-write
      layer), a root file system directory or tarball.
    - ``mounts``: ``Mount``s or strings (``"./data:/data"``, ``"type=memory,target=/t"``);
      ``tmpfs``: ``"/scratch[:size=64m]"``.
    - ``command``: the VM's own command (default: wait until stopped); ``env``,
      ``workdir``, ``user``: its environment (added to PATH, HOME and HOSTNAME), working
      directory and user, which ``run``/``exec`` inherit.
    - services: ``audit`` (True: a file of this VM's, or a path), ``audit_reads``,
      ``faults`` (rules in ``--fault`` syntax), ``fault_seed``, and ``services``, any
      other key of hvfs.toml's ``[services]`` (backup, scan…).
    - ``strict``: serve reads too; ``persist``: keep the root's changes in a directory.
    """

    def __init__(
        self,
        image: str = "host",
        *,
        mounts: Sequence[str | Mount] = (),
        tmpfs: Sequence[str] = (),
        command: Sequence[str] | None = None,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str = "/",
        user: str | None = None,
        strict: bool = False,
        persist: str | None = None,
        audit: bool | str = False,
        audit_reads: bool = False,
        faults: Sequence[str] = (),
        fault_seed: int | None = None,
        services: Mapping[str, Any] | None = None,
        stop_timeout: float = 10.0,
        cwd: str | None = None,
    ) -> None:
        cwd = os.path.abspath(cwd or os.getcwd())
        self.name = spec.check_name(name) if name else spec.drawn_name()
        # 0700, for this VM's audit file; made only for one (a directory costs a start 0.2 ms)
        private = tempfile.mkdtemp(prefix="hvfs-vm-") if audit is True else None
        self._cleanup = weakref.finalize(self, _remove_private, private)
        try:
            audit_path = os.path.join(private, "audit.jsonl") if private is not None else None
            if isinstance(audit, str) and audit:
                audit_path = audit
            if audit_path is not None:
                audit_path = os.path.abspath(os.path.join(cwd, audit_path))
            self._run_spec = self._describe(
                image, mounts, tmpfs, command, env or {}, workdir, user, strict, persist, stop_timeout, cwd,
                services_table(audit_path, audit_reads, faults, fault_seed, services or {}),
            )  # fmt: skip
            self._audit = Audit(audit_path, vm=self.name, sync=self._sync) if audit_path else None
            self._log = bytearray()
            self._log_lock = threading.Lock()
            self._exited: dict[str, Any] | None = None
            self._done = threading.Event()
            self._start()
        except BaseException:
            self._cleanup()
            raise

    def _describe(
        self, image: str, mounts: Sequence[str | Mount], tmpfs: Sequence[str], command: Sequence[str] | None,
        env: Mapping[str, str], workdir: str, user: str | None, strict: bool, persist: str | None,
        stop_timeout: float, cwd: str, table: dict[str, Any],
    ) -> spec.RunSpec:  # fmt: skip
        from hvfs.hypervisor.services import ServiceOptions

        options = ServiceOptions.from_table(table, cwd) if table else None
        argv = tuple(command) if command is not None else IDLE_COMMAND
        environment = {"PATH": spec.DEFAULT_PATH, "HOSTNAME": self.name, "HOME": "/root", **env}
        problem = spec.command_problem(argv, environment)
        if problem:
            raise UsageError(f"command: {problem}")
        if persist is not None:
            from hvfs.private_dirs import private_directory

            fix = "give a directory only you may write in"
            persist = private_directory(spec.check_persist(persist), "persist", fix, ours=False)
        return spec.RunSpec(
            argv=argv,
            name=self.name,
            image=spec.check_image(image if image == "host" else os.path.join(cwd, image)),
            mounts=(*(mount_spec(m, cwd) for m in mounts), *(spec.parse_tmpfs(t) for t in tmpfs)),
            workdir=spec.check_workdir(workdir),
            env=environment,
            strict=strict,
            persist=persist,
            user=spec.check_user(user) if user else None,
            stop_timeout=spec.check_timeout(stop_timeout, "stop_timeout"),
            home_set="HOME" in env,
            services=options if options is not None and options.active else None,
        )

    def _start(self) -> None:
        project = run_project(self._run_spec)
        output, write_end = os.pipe2(os.O_CLOEXEC)
        stdin = empty_input()
        try:
            self._launch = session.launch(project, (stdin, write_end, write_end),
                                          stop_timeout=self._run_spec.stop_timeout)  # fmt: skip
        except BaseException:
            os.close(output)
            raise
        finally:
            os.close(stdin)
            os.close(write_end)
        self.gid = self._launch.gid
        # Kept threads (hvfs.hypervisor.threads): a thread's start waits for it to run, on a
        # loaded machine 0.5-0.8 ms for these two; one a VM before has ended is handed the work.
        self._pumped = threading.Event()
        threads.spawn(self._read_output, (output,), f"hvfs-{self.name}-log")
        threads.spawn(self._watch, (), f"hvfs-{self.name}-wait")

    def _read_output(self, fd: int) -> None:
        try:
            while chunk := os.read(fd, 65536):
                self._append(chunk)
        finally:
            os.close(fd)
            self._pumped.set()

    def _append(self, data: bytes) -> None:
        with self._log_lock:
            self._log += data
            if len(self._log) > LOG_LIMIT:
                del self._log[: len(self._log) - LOG_LIMIT]

    def _watch(self) -> None:
        try:
            self._exited = session.wait_exit(self._launch)
        except UsageError as e:
            self._exited = {"exited": self.name, "code": 125, "error": str(e)}
        finally:
            self._done.set()

    # -- state ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    @property
    def code(self) -> int | None:
        """The exit status of the VM's command, once it has exited."""
        return int(self._exited["code"]) if self._exited is not None else None

    @property
    def statistics(self) -> dict[str, Any]:
        """Once the VM has exited: its requests by operation and outcome, its services' own
        records (what ``hvfs run --stats`` writes)."""
        return dict(self._exited.get("stats", {})) if self._exited is not None else {}

    def wait(self, timeout: float | None = None) -> int | None:
        """The VM's exit status once its command has exited; None after ``timeout`` seconds."""
        self._done.wait(timeout)
        return self.code

    def logs(self) -> str:
        """What the VM's command wrote (stdout and stderr), and each command run in it
        with its status and output."""
        with self._log_lock:
            return self._log.decode(errors="replace")

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.code}"
        return f"<hvfs.VM {self.name} {state}>"

    # -- commands and files ---------------------------------------------------------

    def run(self, command: str | Sequence[str], *, timeout: float | None = None, input: str | bytes | None = None,
            env: Mapping[str, str] | None = None, workdir: str | None = None, user: str | None = None,
            check: bool = False) -> Result:  # fmt: skip
        """Run ``command`` in the VM (a string goes to ``sh -c``) and wait for it; returns
        its status and output. ``timeout`` raises CommandTimeout (the command killed);
        ``check`` raises CommandFailed unless it exited 0."""
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        return self.exec(argv, timeout=timeout, input=input, env=env, workdir=workdir, user=user, check=check)

    def exec(self, argv: Sequence[str], *, timeout: float | None = None, input: str | bytes | None = None,
             env: Mapping[str, str] | None = None, workdir: str | None = None, user: str | None = None,
             check: bool = False) -> Result:  # fmt: skip
        """Run the program ``argv`` (no shell) in the VM, as ``run`` does."""
        data = input.encode() if isinstance(input, str) else input
        try:
            result = commands.run_in(self.gid, self.name, argv, input=data, env=env, workdir=workdir, user=user,
                                     timeout=timeout)  # fmt: skip
        except commands.CommandTimeout as e:
            self._transcript(argv, f"killed after {e.timeout:g}s", e.stdout + e.stderr)
            raise
        self._transcript(argv, f"exit {result.code}", result.stdout_bytes + result.stderr_bytes)
        return result.check() if check else result

    def _transcript(self, argv: Sequence[str], outcome: str, output: bytes) -> None:
        import shlex

        if output and not output.endswith(b"\n"):
            output += b"\n"
        self._append(f"[hvfs] $ {shlex.join(argv)}  ({outcome})\n".encode() + output)

    def read_file(self, path: str) -> bytes:
        """``path``'s content, read by a process in the VM (so audited, and subject to faults)."""
        return commands.read_file(self.gid, self.name, path)

    def read_text(self, path: str) -> str:
        return self.read_file(path).decode()

    def write_file(self, path: str, data: str | bytes, *, mode: int | None = None) -> None:
        """Write ``data`` to ``path`` from a process in the VM (created or truncated)."""
        commands.write_file(self.gid, self.name, path, data.encode() if isinstance(data, str) else data, mode=mode)

    # -- audit ----------------------------------------------------------------------

    @property
    def audited(self) -> bool:
        """Whether the VM was started with its audit on."""
        return self._audit is not None

    @property
    def audit(self) -> Audit:
        """The VM's audit (hvfs.client.audit.Audit); needs ``audit=True`` (or a path)."""
        if self._audit is None:
            raise AuditError(f"VM {self.name} has no audit: start it with audit=True")
        return self._audit

    def _sync(self, nonce: str) -> None:
        """Make one request the audit will show (see hvfs.client.audit)."""
        if not self.running:
            return  # its services closed before it was reported exited: the file is whole
        try:
            commands.run_in(self.gid, self.name, ["sh", "-c", f": > {SENTINEL}{nonce}/x"], timeout=30)
        except UsageError:
            if self.wait(STOP_GRACE) is None:
                raise

    # -- end ------------------------------------------------------------------------

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the VM's command."""
        if self.running:
            self._launch.signal(signum)

    def stop(self, timeout: float | None = None) -> int | None:
        """Stop the VM (SIGTERM to its command, SIGKILL to the whole VM ``timeout`` seconds
        later, default its ``stop_timeout``) and release everything: its group in the
        manager, its services, this VM's files. The audit stays readable. Returns the
        exit status; calling it again does nothing more."""
        if self.running:
            limit = self._run_spec.stop_timeout if timeout is None else timeout
            self.signal(signal.SIGTERM)  # the manager kills the whole VM stop_timeout seconds later
            if not self._done.wait(limit):
                self.signal(signal.SIGKILL)
            self._done.wait(self._run_spec.stop_timeout + STOP_GRACE)
        if self._audit is not None:
            self._audit.keep()
        self._launch.connection.close()
        self._pumped.wait(5)
        self._cleanup()
        return self.code

    close = stop

    def __enter__(self) -> VM:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
