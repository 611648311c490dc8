"""``hvfs-runtime``: an OCI runtime with runc's command line, for containerd's shim.

    hvfs-runtime [--root R] [--log L] [--log-format json] [--systemd-cgroup] COMMAND ...

``create`` forks the container's waiter (hvfs.oci.waiter), which the manager makes a VM
for, held before its command; ``start`` lets it go; ``state``, ``kill``, ``delete``,
``exec``, ``ps`` and ``features`` as runc's. An error is one line on stderr and in the
log (as runc's, JSON with ``--log-format json``), and exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import sys
import time
from typing import Any, NoReturn

from hvfs.hypervisor import client, control
from hvfs.oci import bundle as bundles
from hvfs.oci import hooks, waiter
from hvfs.oci.bundle import BundleError
from hvfs.oci.state import DEFAULT_ROOT, State, Store, alive, start_time


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise BundleError(message)


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="hvfs-runtime", description="An OCI runtime whose containers are HVFS VMs.")
    top.add_argument("--root", default=DEFAULT_ROOT)
    top.add_argument("--log")
    top.add_argument("--log-format", default="text", choices=("text", "json"))
    top.add_argument("--debug", action="store_true")
    top.add_argument("--systemd-cgroup", action="store_true")
    top.add_argument("--rootless", default="auto")
    top.add_argument("--criu")
    top.add_argument("--hvfs-config", help="the [services] of the containers' group (default /etc/hvfs/docker.toml)")
    top.add_argument("--hvfs-state-dir", help="the state directory of the manager to use (default root's)")
    commands = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    create = commands.add_parser("create")
    create.add_argument("--bundle", "-b", default=".")
    run = commands.add_parser("run")
    run.add_argument("--bundle", "-b", default=".")
    run.add_argument("--detach", "-d", action="store_true")
    for p in (create, run):
        p.add_argument("--pid-file")
        p.add_argument("--console-socket")
        p.add_argument("--no-pivot", action="store_true")
        p.add_argument("--no-new-keyring", action="store_true")
        p.add_argument("--preserve-fds", type=int, default=0)
        p.add_argument("id")
    commands.add_parser("start").add_argument("id")
    state = commands.add_parser("state")
    state.add_argument("id")
    kill = commands.add_parser("kill")
    kill.add_argument("--all", "-a", action="store_true")
    kill.add_argument("id")
    kill.add_argument("signal", nargs="?", default="SIGTERM")
    delete = commands.add_parser("delete")
    delete.add_argument("--force", "-f", action="store_true")
    delete.add_argument("id")
    execute = commands.add_parser("exec")
    execute.add_argument("--process", "-p", required=True)
    execute.add_argument("--pid-file")
    execute.add_argument("--console-socket")
    execute.add_argument("--detach", "-d", action="store_true")
    execute.add_argument("--preserve-fds", type=int, default=0)
    execute.add_argument("id")
    ps = commands.add_parser("ps")
    ps.add_argument("--format", "-f", default="table")
    ps.add_argument("id")
    ps.add_argument("ps_options", nargs="*")
    commands.add_parser("features")
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args: argparse.Namespace | None = None
    try:
        args = parser().parse_args(argv)
        if args.hvfs_state_dir:
            os.environ["HVFS_STATE_DIR"] = args.hvfs_state_dir
        return COMMANDS[args.command](args)
    except (BundleError, control.ControlError) as e:
        _log_error(args, argv, str(e))
        return 1


def _log_error(args: argparse.Namespace | None, argv: list[str], message: str) -> None:
    sys.stderr.write(f"hvfs-runtime: {message}\n")
    path = args.log if args is not None else _option(argv, "--log")
    json_format = (args.log_format if args is not None else _option(argv, "--log-format")) == "json"
    if not path:
        return
    now = datetime.datetime.now(datetime.UTC).isoformat()
    line = json.dumps({"level": "error", "msg": message, "time": now}) if json_format else f"{now} error {message}"
    with contextlib.suppress(OSError), open(path, "a") as f:
        f.write(line + "\n")


def _option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _fork(body: Any) -> tuple[int, str]:
    """Fork a waiter running ``body(report_fd)``; its pid and the one line it reports."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            os.setsid()
            code = body(write_end)
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        line = f.readline().decode(errors="replace").strip()
    if not line:
        os.waitpid(pid, 0)
        raise BundleError("the container's waiter exited before it was ready; see the hvfs manager's log")
    if line.startswith("error "):
        os.waitpid(pid, 0)
        raise BundleError(line.removeprefix("error "))
    return pid, line


def _write_pid(path: str | None, pid: int) -> None:
    if path:
        temporary = f"{path}.hvfs-tmp"
        with open(temporary, "w") as f:
            f.write(str(pid))
        os.rename(temporary, path)


def _create(args: argparse.Namespace) -> int:
    store = Store(args.root)
    directory = os.path.abspath(args.bundle)
    found = bundles.load(args.id, directory)
    store.new(args.id)
    try:
        pid, line = _fork(
            lambda report: waiter.container(found, args.root, args.hvfs_config, args.console_socket, report)
        )
        _, init, gid, vm = line.split()
        now = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        state = State(
            args.id, directory, pid, start_time(pid), int(init), gid, vm, now,
            annotations=found.annotations, hooks=found.hooks,
        )  # fmt: skip
        store.save(state)
        try:
            for kind in ("prestart", "createRuntime"):
                hooks.run_hooks(kind, found.hooks.get(kind, []), state.oci())
        except BundleError:
            _end(state)
            raise
        _write_pid(args.pid_file, pid)
    except BaseException:
        store.remove(args.id)
        raise
    return 0


def _end(state: State) -> None:
    """Kill a waiter that must not go on (its VM ends with its connection)."""
    if alive(state.pid, state.pid_start):
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(state.pid, 0)


def _call(op: str, **fields: Any) -> dict[str, Any]:
    connection = client.connect(start=False)
    try:
        client.request(connection, op, **fields)
        reply, fds = connection.receive()
    finally:
        connection.close()
    for fd in fds:
        os.close(fd)
    if "error" in reply:
        raise BundleError(str(reply["error"]))
    return reply


def _start(args: argparse.Namespace) -> int:
    store = Store(args.root)
    state = store.load(args.id)
    if state.status() != "created":
        raise BundleError(f"container {args.id} is {state.status()}, not created")
    _call("container_start", gid=state.gid, vm=state.vm)
    state.started = True
    store.save(state)
    with contextlib.suppress(BundleError):  # as runc: a poststart hook that fails is only reported
        hooks.run_hooks("poststart", state.hooks.get("poststart", []), state.oci())
    return 0


def _state(args: argparse.Namespace) -> int:
    state = Store(args.root).load(args.id)
    print(json.dumps(state.oci(), indent=2))
    return 0


def _signal_number(text: str) -> int:
    if text.isdigit():
        return int(text)
    name = text.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise BundleError(f"unknown signal {text!r}") from None


def _command_pid(init: int) -> int | None:
    """The VM's command, as the host sees it: pid 1's first child."""
    try:
        with open(f"/proc/{init}/task/{init}/children") as f:
            children = [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return None
    return min(children, key=start_time) if children else None


def _caught(pid: int, signum: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    except (OSError, ValueError):
        pass
    return True


def _kill(args: argparse.Namespace) -> int:
    state = Store(args.root).load(args.id)
    signum = _signal_number(args.signal)
    if state.status() == "stopped":
        raise BundleError(f"container {args.id} is not running")
    if state.status() == "created" or signum == signal.SIGKILL:
        _end(state) if state.status() == "created" else os.kill(state.init, signal.SIGKILL)
        return 0
    # A container's command is its pid 1 under runc, which the kernel shields from every
    # signal it has no handler for (SIGKILL and SIGSTOP aside): so here too.
    command = _command_pid(state.init)
    if signum != signal.SIGSTOP and command is not None and not _caught(command, signum):
        return 0
    _call("signal", gid=state.gid, vm=state.vm, signal=signum, reply=True)
    return 0


def _delete(args: argparse.Namespace) -> int:
    store = Store(args.root)
    try:
        state = store.load(args.id)
    except BundleError:
        if args.force:
            return 0
        raise
    if state.status() == "running" and not args.force:
        raise BundleError(f"container {args.id} is running; stop it first or use --force")
    if args.force and state.status() != "stopped":
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.init, signal.SIGKILL)
        _end(state)
    with contextlib.suppress(BundleError, control.ControlError):
        _call("container_remove", gid=state.gid, vm=state.vm, force=True)
    store.remove(args.id)
    with contextlib.suppress(BundleError):
        hooks.run_hooks("poststop", state.hooks.get("poststop", []), {**state.oci(), "status": "stopped"})
    return 0


def _exec(args: argparse.Namespace) -> int:
    state = Store(args.root).load(args.id)
    if state.status() != "running":
        raise BundleError(f"container {args.id} is {state.status()}, not running")
    try:
        with open(args.process) as f:
            process = bundles.read_process(json.load(f))
    except (OSError, ValueError) as e:
        raise BundleError(f"--process {args.process}: {e}") from None
    pid, _ = _fork(lambda report: waiter.execute(state.gid, state.vm, process, args.console_socket, report))
    _write_pid(args.pid_file, pid)
    if args.detach:
        return 0
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _ps(args: argparse.Namespace) -> int:
    state = Store(args.root).load(args.id)
    pids = _descendants(state.init) if state.status() != "stopped" else []
    if args.format == "json":
        print(json.dumps(pids))
    else:
        print("PID")
        for pid in pids:
            print(pid)
    return 0


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{name}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(name))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(found)


def _features(args: argparse.Namespace) -> int:
    print(
        json.dumps(
            {
                "ociVersionMin": "1.0.0",
                "ociVersionMax": "1.0.2",
                "hooks": [*list(bundles.HOOKS[:1]), "createRuntime", "poststart", "poststop"],
                "mountOptions": sorted({*bundles.IGNORED_MOUNT_OPTIONS, "ro"}),
                "linux": {"namespaces": sorted(bundles.NAMESPACES | {"user"})},
            },
            indent=2,
        )
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    args.pid_file = args.pid_file or None
    _create(args)
    _start(args)
    if args.detach:
        return 0
    state = Store(args.root).load(args.id)
    while alive(state.pid, state.pid_start):
        time.sleep(0.1)
    return 0


COMMANDS = {
    "create": _create,
    "run": _run,
    "start": _start,
    "state": _state,
    "kill": _kill,
    "delete": _delete,
    "exec": _exec,
    "ps": _ps,
    "features": _features,
}
