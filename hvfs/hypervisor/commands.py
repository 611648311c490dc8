"""``hvfs manager``: the manager itself (``serve``, as clients start it), and its state."""

from __future__ import annotations

import gc
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from hvfs.hypervisor import control
from hvfs.hypervisor.layout import Layout, read_json

if TYPE_CHECKING:
    import argparse


def add_manager_command(subparsers: Any) -> None:
    import argparse

    manager = subparsers.add_parser(
        "manager",
        help="the manager that serves your VMs (started on demand)",
        description="The per-user manager that serves every VM of hvfs run and hvfs up.",
    )
    actions = manager.add_subparsers(dest="action", metavar="ACTION", required=True)
    serve = actions.add_parser("serve", help="be the manager (in the foreground; clients start it on demand)")
    serve.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)  # where to say "ready" or why not
    status = actions.add_parser("status", help="whether a manager runs, and what it serves")
    status.add_argument("--json", action="store_true", help="print JSON, for scripts")
    stop = actions.add_parser("stop", help="stop the manager and every VM it serves")
    stop.add_argument("--keep", action="store_true", help="leave the VMs running for the next manager")
    actions.add_parser("restart", help="replace the manager; its VMs carry on")
    manager.set_defaults(handler=run)


def _close_inherited(ready_fd: int | None) -> None:
    """Close what the manager inherited besides its stdio and ``ready_fd``: it outlives the
    client that started it, and a pipe's end kept open here (a CI step's, a make
    jobserver's, any fd a shell passed on) would keep its reader waiting for the end."""
    first = 3
    if ready_fd is not None and ready_fd >= first:
        os.closerange(first, ready_fd)
        first = ready_fd + 1
    os.closerange(first, os.sysconf("SC_OPEN_MAX"))


def serve_spawned(arguments: list[str]) -> int | None:
    """``hvfs manager serve [--ready-fd N]`` as the fronts spawn it, read without argparse:
    a cold run waits for the manager's start, and the ``manager`` command's parser (with
    argparse and gettext, 3-4 ms) is needed by no later request (the run parser is built
    after ``ready``, while the front connects). None for any other spelling: the command
    line's parser reads it, and says what is wrong with it."""
    if arguments and not (len(arguments) == 2 and arguments[0] == "--ready-fd" and arguments[1].isdigit()):
        return None
    from hvfs import logs
    from hvfs.errors import HvfsError

    logs.configure()
    try:
        return _serve(Layout(), int(arguments[1]) if arguments else None)
    except HvfsError as e:  # as hvfs.cli.main answers them
        sys.stderr.write(f"hvfs: {e}\n")
        return e.exit_code
    except Exception as e:
        from hvfs.cli import _internal_error

        return _internal_error(e)


def _serve(layout: Layout, ready_fd: int | None) -> int:
    _close_inherited(ready_fd)
    # Every cold run waits for these imports; their objects live as long as the
    # manager, so collections during them find nothing (~10% of the imports' time).
    gc.disable()
    from hvfs._sys import mountinfo
    from hvfs.hypervisor.daemon import Daemon

    gc.freeze()
    gc.enable()
    mountinfo.own_directory(layout.root)  # each VM's views are staged there: no client's (views)
    return Daemon(layout, ready_fd=ready_fd).serve()


def run(args: argparse.Namespace) -> int:
    layout = Layout()
    if args.action == "serve":
        return _serve(layout, args.ready_fd)
    from hvfs.hypervisor import client  # a client's, not the manager's: a cold start waits for serve's imports

    if args.action == "status":
        try:
            connection = client.connect(layout, start=False)
        except control.NotUp:
            print(json.dumps({"running": False}) if args.json else "hvfs: no manager runs")
            return 0
        client.request(connection, "ps")
        reply, _ = connection.receive()
        connection.close()
        if args.json:
            print(json.dumps({"running": True, **reply}, indent=2, sort_keys=True))
        else:
            info = reply["manager"]
            print(f"manager pid {info['pid']}, {info['rss_kb'] // 1024} MiB, {len(reply['groups'])} groups")
            if spares := info.get("spares"):  # runs that took a VM made ahead, and those that found none
                print(f"  spares: {spares['ready']} ready; {spares['taken']} taken, {spares.get('missed', 0)} missed,"
                      f" {spares['made']} made since the manager started")  # fmt: skip
            for gid, vms in sorted(reply["groups"].items()):
                print(f"  {gid}: " + ", ".join(f"{vm['name']} ({vm['state']})" for vm in vms))
        return 0
    try:
        connection = client.connect(layout, start=args.action == "restart")
    except control.NotUp:
        return 0
    pid = read_json(layout.info).get("pid")
    client.request(connection, "shutdown", stop=args.action == "stop" and not args.keep)
    connection.receive()
    connection.close()
    client.wait_unlocked(layout)
    if args.action == "restart":
        client.connect(layout).close()
        print(f"hvfs: manager {pid} replaced by {read_json(layout.info).get('pid')}")
    return 0
