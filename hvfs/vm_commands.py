"""``hvfs ps``, ``logs``, ``exec``, ``stop`` and ``rm`` by a VM's name, without an
hvfs.toml: the VMs of ``hvfs run -d`` (docker's commands for containers), and ``ps`` of
everything the manager runs (projects, runs, Docker containers of hvfs-runtime).

A run's group is ``run-NAME`` (hvfs.hypervisor.spec.group_id); a detached one stays in
the manager with its exit code until ``hvfs rm``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from hvfs.hypervisor import client, control
from hvfs.hypervisor.layout import Layout
from hvfs.project.cli import ProjectError, exec_in
from hvfs.spec import UsageError

FOLLOW_POLL = 0.2  # seconds between looks at a followed log
_STOP_GRACE = 15.0  # after its timeout, the manager SIGKILLs a VM and waits 10 s more
LIVE = ("created", "running", "restarting")


def by_name(args: argparse.Namespace, has_project: object) -> bool:
    """Whether ``args`` names VMs rather than a project's: no hvfs.toml here (and no -f),
    ``ps -a``, or ``rm``, which is for VMs of ``hvfs run -d`` only."""
    if args.subcommand == "rm":
        return True
    if args.subcommand == "ps" and args.all:
        return True
    return args.subcommand in ("ps", "logs", "exec", "stop") and not has_project


def run(args: argparse.Namespace) -> int:
    handler = {"ps": _ps, "logs": _logs, "exec": _exec, "stop": _stop, "rm": _rm}[args.subcommand]
    return int(handler(args))


def _gid(name: str) -> str:
    return f"run-{name}"


def _no_such(name: str) -> ProjectError:
    return ProjectError(f"no VM named {name!r} (of hvfs run -d, or in ./hvfs.toml); see 'hvfs ps -a'")


def _control_error(name: str, e: Exception) -> ProjectError:
    if isinstance(e, control.NotUp):
        return _no_such(name)
    if isinstance(e, control.NoAnswer):
        return ProjectError(f"the manager does not answer ({e}); see 'hvfs manager status'")
    return ProjectError(str(e))


def _call(op: str, *, wait: float | None = None, **fields: Any) -> dict[str, Any]:
    """One request to the manager (none is started for it); NotUp when none runs."""
    connection = client.connect(start=False)
    try:
        return client.ask(connection, op, wait=control.answer_timeout() if wait is None else wait, **fields)
    except (EOFError, OSError, ValueError):
        raise ProjectError("the manager closed the connection; run the command again") from None


def _vm(name: str) -> dict[str, Any]:
    """What the manager says of the run VM ``name``; ProjectError if there is none."""
    try:
        reply = _call("ps", gid=_gid(name), what=f"VM {name}")
    except control.ControlError as e:
        raise _control_error(name, e) from None
    if "error" in reply:
        raise _no_such(name)
    vms = [vm for vm in reply["vms"] if vm["name"] == name]
    if not vms:
        raise _no_such(name)
    return dict(vms[0])


def exists(name: str) -> bool:
    try:
        _vm(name)
    except (UsageError, control.ControlError):
        return False
    return True


def listing(everything: bool) -> list[dict[str, Any]]:
    """Every VM the manager runs (with ``everything``, also those exited), each with its
    group's ``kind`` (project, run, docker), ``project`` (for a project's) and ``group``."""
    try:
        reply = _call("ps")
    except control.NotUp:
        return []
    except control.ControlError as e:
        raise ProjectError(f"the manager does not answer ({e}); see 'hvfs manager status'") from None
    about = reply.get("about", {})
    found = []
    for gid, vms in sorted(reply.get("groups", {}).items()):
        group = about.get(gid, {})
        kind = str(group.get("kind", "project"))
        for vm in vms:
            if everything or vm["state"] in LIVE:
                project = group.get("project") if kind == "project" else None
                found.append({**vm, "group": gid, "kind": kind, "project": project})
    return found


def _ps(args: argparse.Namespace) -> int:
    vms = listing(bool(args.all))
    if args.json:
        print(json.dumps(vms, indent=2, sort_keys=True))
        return 0
    print(f"{'NAME':20} {'KIND':8} {'PROJECT':12} {'STATE':10} {'CODE':5} {'UP':>8} {'SERVED':>8} IMAGE")
    for vm in vms:
        up = f"{time.time() - vm['started']:.0f}s" if vm["state"] == "running" else "-"
        served = vm["requests"]["served"] if vm.get("requests") else "-"
        code = "" if vm["code"] is None else vm["code"]
        print(
            f"{vm['name']:20} {vm['kind']:8} {vm['project'] or '-':12} {vm['state']:10} {code!s:5} {up:>8} "
            f"{served!s:>8} {vm['image']}"
        )
    return 0


def _logs(args: argparse.Namespace) -> int:
    name = args.vm
    vm = _vm(name)
    path = Layout().log(_gid(name), name)
    if not os.path.exists(path):
        raise ProjectError(f"{name}'s output goes to its hvfs run, not to a log: run it with -d to keep one")
    running = vm["state"] in LIVE
    checked = time.monotonic()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                continue
            if not args.follow or not running:
                return 0
            time.sleep(FOLLOW_POLL)
            if time.monotonic() - checked > 1.0:  # docker's logs -f ends with the container
                checked = time.monotonic()
                try:
                    running = _vm(name)["state"] in LIVE
                except UsageError:
                    running = False  # removed: what it wrote is read to the end


def _exec(args: argparse.Namespace) -> int:
    name = args.vm
    _vm(name)

    def connect() -> control.Connection:
        try:
            return client.connect(start=False)
        except control.ControlError as e:
            raise _control_error(name, e) from None

    return exec_in(args, _gid(name), f"VM {name}", connect, lambda e: _control_error(name, e))


def _stop(args: argparse.Namespace) -> int:
    name = args.vm
    _vm(name)
    reply = _call("stop", gid=_gid(name), vm=name, timeout=args.timeout, wait=args.timeout + _STOP_GRACE)
    if "error" in reply:
        raise ProjectError(str(reply["error"]))
    print(name)
    return 0


def _rm(args: argparse.Namespace) -> int:
    """docker rm: a VM that runs is refused unless -f, which kills it."""
    for name in args.vm:  # each checked before any is removed
        if _vm(name)["state"] in LIVE and not args.force:
            raise ProjectError(f"VM {name} is running; stop it first ('hvfs stop {name}') or use 'hvfs rm -f {name}'")
    for name in args.vm:
        reply = _call("down", gid=_gid(name), what=f"VM {name}", timeout=0.0, wait=_STOP_GRACE)
        if "error" in reply and "is not up" not in str(reply["error"]):
            raise ProjectError(str(reply["error"]))
        print(name)
    return 0
