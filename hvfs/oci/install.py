"""``hvfs docker install`` and ``hvfs docker uninstall``: register hvfs-runtime with
Docker as the runtime ``hvfs`` (``runtimes.hvfs.path`` in /etc/docker/daemon.json, the
rest of the file kept as it was) and make the running dockerd reload it (SIGHUP: dockerd
reloads ``runtimes`` without a restart); ``hvfs docker ps`` lists the containers'
VMs as the manager serves them."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from typing import Any

from hvfs.spec import UsageError

DAEMON_JSON = "/etc/docker/daemon.json"
DOCKERD_PID = ("/var/run/docker.pid", "/run/docker.pid")


def runtime_path() -> str:
    """This installation's hvfs-runtime: next to the python running hvfs."""
    here = os.path.join(os.path.dirname(sys.executable), "hvfs-runtime")
    found = here if os.access(here, os.X_OK) else shutil.which("hvfs-runtime")
    if found is None:
        raise UsageError("hvfs-runtime is not installed next to hvfs; reinstall hvfs (pip install hvfs)")
    return os.path.abspath(found)


def add_docker_command(subparsers: Any) -> None:
    docker = subparsers.add_parser(
        "docker",
        help="use hvfs as a Docker runtime (docker run --runtime=hvfs)",
        description="Register hvfs-runtime with Docker, or remove it; list the containers' VMs.",
    )
    actions = docker.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (("install", "register the runtime"), ("uninstall", "remove the runtime")):
        action = actions.add_parser(name, help=f"{text} in {DAEMON_JSON} and reload dockerd")
        action.add_argument("--name", default="hvfs", help="the runtime's name for docker (default hvfs)")
        action.add_argument("--config", default=DAEMON_JSON, help=f"dockerd's configuration (default {DAEMON_JSON})")
        action.add_argument("--no-reload", action="store_true", help="do not signal dockerd")
        if name == "install":
            action.add_argument("--default", action="store_true", help="make it docker's default runtime")
            action.add_argument("--path", help="the runtime program (default: this installation's hvfs-runtime)")
            action.add_argument("--state-dir", help="the manager's state directory (default: root's, /run/hvfs)")
            action.add_argument("--services", metavar="FILE", help="[services] for every container (hvfs.toml syntax)")
    ps = actions.add_parser("ps", help="the VMs of docker's containers")
    ps.add_argument("--json", action="store_true", help="print JSON, for scripts")
    docker.set_defaults(handler=run)


def read_config(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    try:
        document = json.loads(text) if text.strip() else {}
    except ValueError as e:
        raise UsageError(f"{path}: not JSON ({e}); fix it first") from None
    if not isinstance(document, dict):
        raise UsageError(f"{path}: not a JSON object; fix it first")
    return document


def write_config(path: str, document: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.hvfs-tmp"
    mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as f:
        json.dump(document, f, indent=2)
        f.write("\n")
    os.rename(temporary, path)


def dockerd_pid() -> int | None:
    for path in DOCKERD_PID:
        with contextlib.suppress(OSError, ValueError):
            with open(path) as f:
                pid = int(f.read().strip())
            os.kill(pid, 0)
            return pid
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{name}/comm") as f:
                if f.read().strip() == "dockerd":
                    return int(name)
    return None


def reload_dockerd() -> str:
    pid = dockerd_pid()
    if pid is None:
        return "no dockerd runs; it reads the file when it starts"
    os.kill(pid, signal.SIGHUP)
    time.sleep(0.5)  # dockerd reloads on a goroutine of its own
    return f"dockerd (pid {pid}) reloaded it"


def run(args: argparse.Namespace) -> int:
    if args.action == "ps":
        return _ps(args)
    if os.geteuid() != 0:
        raise UsageError(f"hvfs docker {args.action} changes {args.config}: run it as root")
    document = read_config(args.config)
    runtimes = document.setdefault("runtimes", {})
    if not isinstance(runtimes, dict):
        raise UsageError(f"{args.config}: 'runtimes' is not an object; fix it first")
    if args.action == "install":
        runtimes[args.name] = {"path": args.path or runtime_path()}
        extra = [*(("--hvfs-state-dir", os.path.abspath(args.state_dir)) if args.state_dir else ()),
                 *(("--hvfs-config", os.path.abspath(args.services)) if args.services else ())]  # fmt: skip
        if extra:
            runtimes[args.name]["runtimeArgs"] = extra
        if args.default:
            document["default-runtime"] = args.name
        what = f"runtime {args.name} ({runtimes[args.name]['path']}) written to {args.config}"
    else:
        if runtimes.pop(args.name, None) is None:
            print(f"hvfs: no runtime {args.name} in {args.config}")
            return 0
        if not runtimes:
            del document["runtimes"]
        if document.get("default-runtime") == args.name:
            del document["default-runtime"]
        what = f"runtime {args.name} removed from {args.config}"
    write_config(args.config, document)
    reloaded = "" if args.no_reload else f"; {reload_dockerd()}"
    print(f"hvfs: {what}{reloaded}")
    return 0


def _ps(args: argparse.Namespace) -> int:
    from hvfs.hypervisor import client, control

    try:
        connection = client.connect(start=False)
    except control.NotUp:
        groups: dict[str, Any] = {}
    else:
        client.request(connection, "ps")
        reply, _ = connection.receive()
        connection.close()
        groups = {gid: vms for gid, vms in reply.get("groups", {}).items() if gid.startswith("docker-")}
    vms = [vm for members in groups.values() for vm in members]
    if args.json:
        print(json.dumps(vms, indent=2, sort_keys=True))
        return 0
    print(f"{'CONTAINER':14} {'STATE':10} {'CODE':5} {'SERVED':>8} {'CONTINUED':>9} {'FAILED':>6}")
    for vm in vms:
        requests = vm["requests"] or {}
        code = "" if vm["code"] is None else vm["code"]
        print(
            f"{vm['name']:14} {vm['state']:10} {code!s:5} {requests.get('served', '-')!s:>8} "
            f"{requests.get('continued', '-')!s:>9} {requests.get('failed', '-')!s:>6}"
        )
    return 0
