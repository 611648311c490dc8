"""``hvfs up``, ``ps``, ``exec``, ``logs``, ``stop`` and ``down``: a project of VMs
described in hvfs.toml, as ``docker compose`` runs containers."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import sys
import time
from typing import Any

from hvfs import spec
from hvfs._sys import process
from hvfs.project import cleanup, config, control
from hvfs.project.state import ProjectState
from hvfs.sandbox import terminal
from hvfs.sandbox.stdio import Stdio
from hvfs.spec import UsageError

DEFAULT_FILE = "hvfs.toml"
_STOP_GRACE = 15.0  # after its timeout, the manager SIGKILLs a VM and waits 10 s more


class ProjectError(UsageError):
    """A one-line problem for the user (exit 125)."""


def add_commands(subparsers: Any) -> None:
    up = subparsers.add_parser("up", help="start the VMs of a project", description="Start every VM of hvfs.toml.")
    up.add_argument("-d", "--detach", action="store_true", help="run in the background")
    ps = subparsers.add_parser("ps", help="list a project's VMs")
    ps.add_argument("--json", action="store_true", help="print JSON, for scripts")
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
    down = subparsers.add_parser("down", help="stop every VM and the manager, and clean up")
    down.add_argument("-t", "--timeout", type=float, default=10.0, help="seconds before SIGKILL (default 10)")


COMMANDS = ("up", "ps", "exec", "logs", "stop", "down")


def run(args: argparse.Namespace) -> int:
    project = config.load(args.file or DEFAULT_FILE)
    state = ProjectState(project.name)
    handler = {"up": _up, "ps": _ps, "exec": _exec, "logs": _logs, "stop": _stop, "down": _down}[args.subcommand]
    return handler(args, project, state)


def _running(project: config.Project, state: ProjectState) -> dict[str, Any]:
    info = state.running()
    if info is None:
        gone = state.left_behind()
        if gone is not None:
            raise _gone(project, gone)
        raise ProjectError(f"project {project.name} is not up; start it with 'hvfs up -d'")
    return info


def _gone(project: config.Project, info: dict[str, Any]) -> ProjectError:
    return ProjectError(
        f"the manager of project {project.name} (pid {info.get('pid')}) is gone and left its state behind; "
        "clean up with 'hvfs down'"
    )


def _manager_pid(info: dict[str, Any]) -> int | None:
    try:
        return int(str(info.get("pid")))
    except ValueError:
        return None


def _control_error(project: config.Project, state: ProjectState, info: dict[str, Any], e: Exception) -> ProjectError:
    """The one line for a control error, with what to do."""
    pid = info.get("pid")
    if isinstance(e, control.NoAnswer):
        return ProjectError(
            f"the manager of project {project.name} (pid {pid}) does not answer ({e}); if it is stopped, resume it "
            f"with 'kill -CONT {pid}', or end it with 'kill -KILL {pid}' and clean up with 'hvfs down'"
        )
    if isinstance(e, control.Impostor):
        return ProjectError(
            f"project {project.name}: {e}: nothing was sent to it; stop what serves it, or remove {state.root} "
            "(as root) and start the project again"
        )
    if isinstance(e, control.NotUp):
        return ProjectError(f"project {project.name} is not up; start it with 'hvfs up -d'")
    return ProjectError(str(e))


def _call(
    project: config.Project, state: ProjectState, info: dict[str, Any], op: str, *, wait: float | None = None,
    **fields: Any,
) -> dict[str, Any]:  # fmt: skip
    """One request to the running manager (``info``), answered within ``wait`` seconds
    (default: control.answer_timeout())."""
    try:
        return control.call(state.control, op, manager_pid=_manager_pid(info), wait=wait, **fields)
    except control.ControlError as e:
        raise _control_error(project, state, info, e) from None


def _up(args: argparse.Namespace, project: config.Project, state: ProjectState) -> int:
    from hvfs.project.daemon import Daemon

    info = state.running()
    if info is not None:
        print(f"hvfs: project {project.name} is already up (manager pid {info.get('pid')}); see 'hvfs ps'")
        return 0
    _clean_up_after_dead_manager(project, state)
    if not args.detach:

        def report(error: str | None) -> None:
            if error:
                sys.stderr.write(f"hvfs: {error}\n")

        return Daemon(project, state, foreground=True, out=sys.stdout).run(report)
    read_end, write_end = os.pipe()
    pid = os.fork()  # still single-threaded: the daemon may fork its own children
    if pid == 0:
        os.close(read_end)
        os.setsid()
        os.makedirs(state.root, mode=0o700, exist_ok=True)
        log = os.open(os.path.join(state.root, "manager.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open("/dev/null", os.O_RDONLY)
        for target, fd in ((0, null), (1, log), (2, log)):
            os.dup2(fd, target)

        def ready(error: str | None) -> None:
            os.write(write_end, (error or "").encode() or b"\n")
            os.close(write_end)

        code = 125
        try:
            code = Daemon(project, state, foreground=False, out=sys.stdout).run(ready)
        except BaseException as e:
            import traceback

            traceback.print_exc()  # into the manager's log
            with contextlib.suppress(OSError):
                ready(f"internal error: {e!r}; see {os.path.join(state.root, 'manager.log')}")
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write_end)
    answer = os.read(read_end, 65536).decode()
    os.close(read_end)
    if answer.strip() == "" and answer:
        print(f"hvfs: project {project.name} is up: {', '.join(project.vms)}")
        return 0
    raise ProjectError(answer.strip() or "the manager exited while starting; see its log")


def _ps(args: argparse.Namespace, project: config.Project, state: ProjectState) -> int:
    info = state.running()
    reply: dict[str, Any] = {"vms": [], "manager": None}
    if info is None:
        gone = state.left_behind()
        if gone is not None:
            raise _gone(project, gone)
    else:
        try:
            reply = control.call(state.control, "ps", manager_pid=_manager_pid(info))
        except control.NotUp:
            pass  # starting: its control socket is not there yet
        except control.ControlError as e:
            raise _control_error(project, state, info, e) from None
    if args.json:
        print(json.dumps(reply, indent=2, sort_keys=True))
        return 0
    print(f"{'NAME':16} {'STATE':10} {'CODE':5} {'ADDRESS':15} {'UP':>8} {'SERVED':>8} IMAGE")
    for vm in reply["vms"]:
        up = f"{time.time() - vm['started']:.0f}s" if vm["state"] == "running" else "-"
        served = vm["requests"]["served"] if vm["requests"] else "-"
        code = "" if vm["code"] is None else vm["code"]
        print(
            f"{vm['name']:16} {vm['state']:10} {code!s:5} {vm['address'] or '-':15} {up:>8} {served!s:>8} {vm['image']}"
        )
    return 0


def _exec(args: argparse.Namespace, project: config.Project, state: ProjectState) -> int:
    info = _running(project, state)
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
    message: dict[str, Any] = {
        "hvfs": control.VERSION,
        "op": "exec",
        "vm": args.vm,
        "argv": command,
        "env": env,
        "workdir": args.workdir,
        "user": args.user,
        "tty": args.tty,
    }
    stdio = None
    if args.tty:
        size = terminal.host_winsize()
        message["winsize"] = size.hex() if size else None
    problem = spec.command_problem(command, env)
    if problem:
        raise ProjectError(f"exec {args.vm}: {problem}")
    wait = control.answer_timeout()
    try:  # nothing, least of all our stdio, goes to a socket before its server is vouched for
        connection = control.connect(state.control, manager_pid=_manager_pid(info), timeout=wait)
        stdio = None if args.tty else Stdio()  # pipes, never the user's files: see hvfs.sandbox.stdio
        connection.send(message, None if stdio is None else list(stdio.fds))
        if stdio is not None:
            stdio.handed_over()
        connection.wait_answer(wait)  # "started" or an error: the command's own run has no time limit
    except control.ControlError as e:
        raise _control_error(project, state, info, e) from None
    except OSError as e:
        raise ProjectError(f"the manager of project {project.name} went away: {e.strerror}") from None
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


def _logs(args: argparse.Namespace, project: config.Project, state: ProjectState) -> int:
    if args.vm not in project.vms:
        raise ProjectError(f"no VM named {args.vm!r} in project {project.name}; VMs: {', '.join(project.vms)}")
    path = state.log(args.vm)
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


def _stop(args: argparse.Namespace, project: config.Project, state: ProjectState) -> int:
    info = _running(project, state)
    _call(project, state, info, "ps")  # does it answer at all? stopping may take a while
    _call(project, state, info, "stop", vm=args.vm, timeout=args.timeout, wait=args.timeout + _STOP_GRACE)
    return 0


def _down(args: argparse.Namespace, project: config.Project, state: ProjectState) -> int:
    info = state.running()
    if info is None:
        _clean_up_after_dead_manager(project, state)
        return 0
    manager = _pidfd(info.get("pid"))
    try:
        _call(project, state, info, "ps")  # does it answer at all? stopping every VM may take a while
        with contextlib.suppress(ProjectError):  # it may close the connection as it exits
            _call(
                project, state, info, "down", timeout=args.timeout, wait=(args.timeout + _STOP_GRACE) * len(project.vms)
            )
        deadline = time.monotonic() + args.timeout + 30
        while state.running() is not None or (manager is not None and not _exited(manager)):
            if time.monotonic() > deadline:
                raise ProjectError(f"the manager of {project.name} (pid {info.get('pid')}) did not exit")
            time.sleep(0.05)
    finally:
        if manager is not None:
            os.close(manager)
    return 0


def _clean_up_after_dead_manager(project: config.Project, state: ProjectState) -> None:
    removed = cleanup.clean_up_after(state)
    if removed is not None:
        print(
            f"hvfs: the manager of project {project.name} (pid {removed.pid}) was gone; "
            f"removed what it left: {removed.describe(state.root)}"
        )


def _pidfd(pid: object) -> int | None:
    """A pidfd of the manager, taken before asking it to exit, so that a reused pid
    cannot fool the wait."""
    try:
        return process.pidfd_open(int(str(pid)))
    except (OSError, ValueError):
        return None


def _exited(pidfd: int) -> bool:
    return bool(select.select([pidfd], [], [], 0)[0])
