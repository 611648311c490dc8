"""``hvfs up``, ``ps``, ``exec``, ``logs``, ``stop`` and ``down``: a project of VMs
described in hvfs.toml, as ``docker compose`` runs containers."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from hvfs import driver_choice as choice
from hvfs import spec
from hvfs.hypervisor import client, control
from hvfs.hypervisor.layout import Layout
from hvfs.hypervisor.spec import bound_paths, group_id, host_paths, prepared, to_json
from hvfs.project import config
from hvfs.sandbox import terminal
from hvfs.sandbox.stdio import Stdio
from hvfs.spec import UsageError

DEFAULT_FILE = "hvfs.toml"
_STOP_GRACE = 15.0  # after its timeout, the manager SIGKILLs a VM and waits 10 s more


class ProjectError(UsageError):
    """A one-line problem for the user (exit 125)."""


class DependencyFailed(ProjectError):
    """A VM's ``depends_on`` condition cannot be met: compose's exit 1."""

    exit_code = 1


def add_commands(subparsers: Any) -> None:
    up = subparsers.add_parser("up", help="start the VMs of a project", description="Start every VM of hvfs.toml.")
    up.add_argument("-d", "--detach", action="store_true", help="run in the background")
    up.add_argument(
        "--abort-on-container-exit", action="store_true", help="stop every VM when one exits, and exit with its code"
    )
    up.add_argument(
        "--exit-code-from", metavar="VM", help="exit with this VM's code (implies --abort-on-container-exit)"
    )
    up.add_argument(
        "--driver",
        default="",
        metavar="seccomp|ptrace|auto",
        help="what traps the VMs' calls (else hvfs.toml's)",
    )
    ps = subparsers.add_parser("ps", help="list a project's VMs (every VM without hvfs.toml, or with -a)")
    ps.add_argument("--json", action="store_true", help="print JSON, for scripts")
    ps.add_argument("-a", "--all", action="store_true", help="every VM the manager runs, and those exited")
    exec_ = subparsers.add_parser(
        "exec", help="run a command in a running VM", usage="hvfs exec [OPTIONS] VM [--] COMMAND..."
    )
    exec_.add_argument("-i", "--interactive", action="store_true", help="forward input to the terminal")
    exec_.add_argument("-t", "--tty", action="store_true", help="give the command a pseudo-terminal")
    exec_.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE")
    exec_.add_argument("-u", "--user", help="USER[:GROUP] of the VM")
    exec_.add_argument("-w", "--workdir")
    exec_.add_argument("vm")
    exec_.add_argument("command", nargs=argparse.REMAINDER)
    logs = subparsers.add_parser("logs", help="show a VM's output")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    logs.add_argument("vm")
    stop = subparsers.add_parser("stop", help="stop one VM")
    stop.add_argument("-t", "--timeout", type=float, default=10.0, help="seconds before SIGKILL (default 10)")
    stop.add_argument("vm")
    rm = subparsers.add_parser("rm", help="remove a VM of hvfs run -d (and its exit code)")
    rm.add_argument("-f", "--force", action="store_true", help="stop it first if it runs")
    rm.add_argument("vm", nargs="+")
    down = subparsers.add_parser("down", help="stop every VM of the project, and clean up")
    down.add_argument("-t", "--timeout", type=float, default=10.0, help="seconds before SIGKILL (default 10)")


COMMANDS = ("up", "ps", "exec", "logs", "stop", "down", "rm")


def run(args: argparse.Namespace) -> int:
    from hvfs import vm_commands

    if vm_commands.by_name(args, args.file or os.path.exists(DEFAULT_FILE)):
        return vm_commands.run(args)
    project = config.load(args.file or DEFAULT_FILE)
    if args.subcommand in ("logs", "exec", "stop") and args.vm not in project.vms and vm_commands.exists(args.vm):
        return vm_commands.run(args)  # a VM of hvfs run -d, named in a project's directory
    handler = {"up": _up, "ps": _ps, "exec": _exec, "logs": _logs, "stop": _stop, "down": _down}[args.subcommand]
    return handler(args, project)


def _connect(
    project: config.Project, *, start: bool = False, paths: Sequence[str] = (), bound: Sequence[str] = ()
) -> control.Connection:
    """The manager, started for ``up`` (``start``) or when one before it left VMs."""
    try:
        return client.connect(start=start, paths=paths, bound=bound)
    except control.ControlError as e:
        raise _control_error(project, e) from None


def _control_error(project: config.Project, e: Exception) -> ProjectError:
    """The one line for a control error, with what to do."""
    if isinstance(e, control.NoAnswer):
        pid = _manager_pid()
        return ProjectError(
            f"the manager (pid {pid}) does not answer ({e}); if it is stopped, resume it with 'kill -CONT {pid}', "
            f"or end it with 'kill -KILL {pid}': its VMs wait for the next one, which the next command starts"
        )
    if isinstance(e, control.NotUp):
        return ProjectError(f"project {project.name} is not up")
    if isinstance(e, control.Impostor):
        return ProjectError(f"{e}: nothing was sent to it; stop what serves it, or remove {Layout().root} (as root)")
    return ProjectError(str(e))


def _manager_pid() -> object:
    return client.manager_pid(Layout())


def _call(project: config.Project, op: str, *, wait: float | None = None, **fields: Any) -> dict[str, Any]:
    """One request about ``project``, answered within ``wait`` seconds (default:
    control.answer_timeout())."""
    connection = _connect(project)
    try:
        reply = client.ask(
            connection, op, gid=group_id(project), what=f"project {project.name}",
            wait=control.answer_timeout() if wait is None else wait, **fields,
        )  # fmt: skip
    except control.ControlError as e:
        raise _control_error(project, e) from None
    except (EOFError, OSError, ValueError):
        raise ProjectError("the manager closed the connection; run the command again") from None
    if "error" in reply:
        raise ProjectError(str(reply["error"]))
    return reply


def _up(args: argparse.Namespace, project: config.Project) -> int:
    if args.exit_code_from is not None and args.exit_code_from not in project.vms:
        known = ", ".join(project.vms)
        raise ProjectError(
            f"--exit-code-from {args.exit_code_from}: no such VM in project {project.name}; VMs: {known}"
        )
    if args.detach and (args.abort_on_container_exit or args.exit_code_from):
        flag = "--exit-code-from" if args.exit_code_from else "--abort-on-container-exit"
        raise ProjectError(f"-d and {flag} cannot be combined: drop -d to follow the VMs")
    outcome = Outcome(exit_from=args.exit_code_from, abort=args.abort_on_container_exit)
    if args.driver:
        try:
            project = dataclasses.replace(project, driver=choice.check(args.driver, "--driver"))
        except ValueError as e:
            raise ProjectError(str(e)) from None
    ready = prepared(project)
    connection = _connect(project, start=True, paths=host_paths(ready), bound=bound_paths(ready))
    debug = bool(os.environ.get("HVFS_DEBUG"))
    client.request(connection, "up", project=to_json(ready), foreground=not args.detach, debug=debug)
    early: list[dict[str, Any]] = []  # what a VM said before the last one started
    while True:
        reply, fds = connection.receive()
        for fd in fds:
            os.close(fd)
        if "up" in reply or "error" in reply:
            break
        early.append(reply)
    if "error" in reply:
        connection.close()
        if "is already up" in str(reply["error"]):
            print(f"hvfs: project {project.name} is already up; see 'hvfs ps'")
            return 0
        if reply.get("code") == DependencyFailed.exit_code:
            raise DependencyFailed(str(reply["error"]))
        raise ProjectError(str(reply["error"]))
    if args.detach:
        connection.close()
        started = reply.get("started", list(project.vms))
        print(f"hvfs: project {project.name} is up: {', '.join(project.vms)}; started: {', '.join(started)}")
        return 0
    return _follow(connection, project, reply, early, outcome)


class Outcome:
    """The exit code of ``hvfs up`` in the foreground, from the VMs' exits as they come.

    Compose v2 returns 0 when every container has exited, whatever their codes, unless
    told otherwise; a CI job needs the failure, so hvfs returns the code of the first VM
    that exited non-zero (0 if all exited 0). With --abort-on-container-exit, as compose:
    the first VM to exit stops all the others, and its code is returned; with
    --exit-code-from VM (which implies it), that VM's code, whenever and however it
    ended (stopped by the abort: 143 or 137). A VM that its restart policy starts again
    has not exited yet."""

    def __init__(self, *, exit_from: str | None, abort: bool) -> None:
        self.exit_from, self.abort = exit_from, abort or exit_from is not None
        self.code: int | None = None
        self.aborting = False

    def exited(self, name: str, code: int) -> bool:
        """Note a VM's final exit; True when this one starts the abort."""
        if self.exit_from is not None:
            if name == self.exit_from:
                self.code = code
        elif self.abort:
            if not self.aborting:
                self.code = code
        elif self.code is None and code != 0:
            self.code = code
        starts = self.abort and not self.aborting
        self.aborting = self.aborting or starts
        return starts

    def result(self) -> int:
        return self.code or 0


def _follow(
    connection: control.Connection, project: config.Project, reply: dict[str, Any], early: list[dict[str, Any]],
    outcome: Outcome,
) -> int:  # fmt: skip
    """``hvfs up`` in the foreground: every VM's output, prefixed with its name, until they
    have all exited (or Ctrl-C, which takes the project down); returns as ``outcome`` says."""
    width = max(len(name) for name in reply["up"])
    running = set(reply.get("running", reply["up"]))
    stopper: threading.Thread | None = None

    def messages() -> Iterator[dict[str, Any]]:
        yield from early  # before the reply: the VMs it says are running are still to come
        if not running:
            return
        for message, fds in control.replies(connection):
            for fd in fds:
                os.close(fd)
            yield message

    try:
        for message in messages():
            if "log" in message:
                print(f"{message['log']:<{width}} | {message['line']}", flush=True)
            elif "stderr" in message:
                print(message["stderr"], file=sys.stderr, flush=True)
            elif "exited" in message:
                name, code = str(message["exited"]), int(message["code"])
                again = " (restarting)" if message.get("restarting") else ""
                print(f"{name:<{width}} | exited with code {code}{again}", flush=True)
                if again:
                    continue
                running.discard(name)
                if outcome.exited(name, code) and running and stopper is None:
                    print("Aborting on VM exit...", flush=True)
                    stopper = threading.Thread(target=_take_down, args=(project,), daemon=True)
                    stopper.start()  # meanwhile this thread reads on: the exits come here
                if not running:
                    break
    except KeyboardInterrupt:
        _call(project, "down", timeout=10.0, wait=(10.0 + _STOP_GRACE) * len(project.vms))
        return 130
    finally:
        connection.close()
    if stopper is not None:
        stopper.join()
    _take_down(project)  # every VM has exited: the project goes, as it came, with this command
    return outcome.result()


def _take_down(project: config.Project) -> None:
    with contextlib.suppress(ProjectError):  # not up any more: another took it down
        _call(project, "down", timeout=10.0, wait=(10.0 + _STOP_GRACE) * len(project.vms))


def _ps(args: argparse.Namespace, project: config.Project) -> int:
    try:
        reply = _call(project, "ps")
    except ProjectError as e:
        if "is not up" not in str(e):
            raise
        reply = {"vms": [], "manager": None}
    if args.json:
        print(json.dumps(reply, indent=2, sort_keys=True))
        return 0
    print(
        f"{'NAME':16} {'STATE':10} {'HEALTH':9} {'CODE':5} {'RESTARTS':>8} {'ADDRESS':15} {'UP':>8} {'SERVED':>8} IMAGE"
    )
    for vm in reply["vms"]:
        up = f"{time.time() - vm['started']:.0f}s" if vm["state"] == "running" else "-"
        served = vm["requests"]["served"] if vm["requests"] else "-"
        code = "" if vm["code"] is None else vm["code"]
        health = (vm.get("health") or {}).get("status", "-")
        restarts = vm.get("restarts", 0)
        print(
            f"{vm['name']:16} {vm['state']:10} {health:9} {code!s:5} {restarts:>8} {vm['address'] or '-':15} {up:>8} "
            f"{served!s:>8} {vm['image']}"
        )
    return 0


def _exec(args: argparse.Namespace, project: config.Project) -> int:
    return exec_in(
        args, group_id(project), f"project {project.name}", lambda: _connect(project),
        lambda e: _control_error(project, e),
    )  # fmt: skip


def exec_in(
    args: argparse.Namespace, gid: str, what: str, connect: Callable[[], control.Connection],
    control_error: Callable[[Exception], ProjectError],
) -> int:  # fmt: skip
    """``hvfs exec`` in the VM ``args.vm`` of the group ``gid`` (``what``, for messages)."""
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ProjectError("no command given; usage: hvfs exec [OPTIONS] VM [--] COMMAND...")
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not key or not sep:
            raise ProjectError(f"-e {item!r}: expected KEY=VALUE")
        env[key] = value
    fields: dict[str, Any] = {"vm": args.vm, "argv": command, "env": env, "workdir": args.workdir,
                              "user": args.user, "tty": args.tty}  # fmt: skip
    if args.tty:
        size = terminal.host_winsize()
        fields["winsize"] = size.hex() if size else None
    problem = spec.command_problem(command, env)
    if problem:
        raise ProjectError(f"exec {args.vm}: {problem}")
    wait = control.answer_timeout()
    connection = connect()  # vouched for: nothing, least of all our stdio, goes to another
    stdio = None if args.tty else Stdio()  # pipes, never the user's files: see hvfs.sandbox.stdio
    try:
        client.request(connection, "exec", None if stdio is None else list(stdio.fds), gid=gid, what=what,
                       **fields)  # fmt: skip
        if stdio is not None:
            stdio.handed_over()
        connection.wait_answer(wait)  # "started" or an error: the command's own run has no time limit
    except control.ControlError as e:
        raise control_error(e) from None
    except OSError as e:
        raise ProjectError(f"the manager went away: {e.strerror}") from None
    for reply, fds in control.replies(connection):
        if "error" in reply:
            raise ProjectError(str(reply["error"]))
        if "started" in reply and fds:
            terminal.relay(fds[0], interactive=args.interactive, until=connection.sock.fileno())
            os.close(fds[0])
        if "exited" in reply:
            if stdio is not None:
                stdio.finish()
            return int(reply["exited"])
    raise ProjectError("the manager went away")


def _logs(args: argparse.Namespace, project: config.Project) -> int:
    if args.vm not in project.vms:
        raise ProjectError(f"no VM named {args.vm!r} in project {project.name}; VMs: {', '.join(project.vms)}")
    path = Layout().log(group_id(project), args.vm)
    if not os.path.exists(path):
        raise ProjectError(f"no output of {args.vm}: project {project.name} is not up")
    with open(path, "rb") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            elif not args.follow or not os.path.exists(path):
                return 0
            else:
                time.sleep(0.2)


def _stop(args: argparse.Namespace, project: config.Project) -> int:
    _call(project, "ps")  # does it answer at all? stopping may take a while
    _call(project, "stop", vm=args.vm, timeout=args.timeout, wait=args.timeout + _STOP_GRACE)
    return 0


def _down(args: argparse.Namespace, project: config.Project) -> int:
    try:
        _call(project, "ps")  # does it answer at all? stopping every VM may take a while
    except ProjectError as e:
        if "is not up" in str(e):
            return 0
        raise
    _call(project, "down", timeout=args.timeout, wait=(args.timeout + _STOP_GRACE) * len(project.vms))
    return 0
