"""``hvfs quarantine list|restore|delete``: the quarantine from the command line.

Register with ``add_quarantine_command(subparsers)`` in hvfs/cli.py; ``args.handler(args)``
runs the chosen subcommand. ``--quarantine DIR``, as ``hvfs run`` spells it (``--store``,
its first name, is still read), defaults to the ``quarantine`` directory under hvfs's
data directory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from hvfs.private_dirs import private_directory
from hvfs.services.commands import ServiceError, Subparsers, guarded
from hvfs.services.datadir import quarantine_directory
from hvfs.services.scan.quarantine import Quarantine, QuarantineError, QuarantineRecord
from hvfs.services.units import format_time


def add_quarantine_command(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Define ``hvfs quarantine list``, ``hvfs quarantine restore ID [--to PATH]`` and
    ``hvfs quarantine delete ID``."""
    quarantine: argparse.ArgumentParser = subparsers.add_parser(
        "quarantine", help="list and restore quarantined files", description="Files the scanner took out of VMs."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--quarantine", dest="store", metavar="DIR", help=f"the quarantine (default: {quarantine_directory()})"
    )
    common.add_argument("--store", dest="store", help=argparse.SUPPRESS)  # its first name: scripts keep working
    actions = quarantine.add_subparsers(
        dest="quarantine_action", metavar="ACTION", required=True, parser_class=type(quarantine)
    )
    listing = actions.add_parser("list", parents=[common], help="list quarantined files")
    listing.add_argument("--json", action="store_true", help="print JSON, for scripts (docs/cli.md: its keys)")
    listing.set_defaults(handler=guarded(_list))
    restore = actions.add_parser(
        "restore",
        parents=[common],
        help="put a file back",
        description="Put a quarantined file back, with its mode, owner and times, and remove it from the "
        "quarantine. Without --to, its VM path is read as a host path: right for VMs on the host image and "
        "for volumes mounted at the same path.",
    )
    restore.add_argument("id", metavar="ID", help="as 'hvfs quarantine list' shows it")
    restore.add_argument("--to", metavar="PATH", help="where to put it (an existing file is never replaced)")
    restore.set_defaults(handler=guarded(_restore))
    delete = actions.add_parser("delete", parents=[common], help="delete a quarantined file for good")
    delete.add_argument("id", metavar="ID")
    delete.set_defaults(handler=guarded(_delete))
    return quarantine


def _open(args: argparse.Namespace) -> Quarantine:
    directory = args.store or quarantine_directory()
    if not os.path.isdir(directory):
        raise ServiceError(f"no quarantine in {directory}; give the one hvfs run used with --quarantine DIR")
    # An entry planted by someone else would be restored as this user's file: refuse it.
    return Quarantine(private_directory(directory, "the quarantine", "", create=False, ours=not args.store))


def record_json(r: QuarantineRecord) -> dict[str, object]:
    """The keys of ``hvfs quarantine list --json``: the table's columns, unabbreviated."""
    return {
        "id": r.id,
        "time": format_time(r.time),
        "unix_time": r.time,
        "vm": r.vm,
        "path": r.path,
        "size": r.size,
        "sha256": r.sha256,
        "engine": r.engine,
        "signature": r.signature,
    }


def _list(args: argparse.Namespace) -> int:
    if args.json:
        sys.stdout.write(json.dumps([record_json(r) for r in _open(args).records()], indent=2) + "\n")
        return 0
    for r in _open(args).records():
        sys.stdout.write(f"{r.id}  {format_time(r.time)}  {r.vm}  {r.path}  {r.size} bytes  {r.engine}:{r.signature}\n")
    return 0


def _restore(args: argparse.Namespace) -> int:
    try:
        path = _open(args).restore(args.id, to=args.to)
    except QuarantineError as e:
        raise ServiceError(str(e)) from None
    sys.stdout.write(f"{path}\n")
    return 0


def _delete(args: argparse.Namespace) -> int:
    try:
        _open(args).delete(args.id)
    except QuarantineError as e:
        raise ServiceError(str(e)) from None
    return 0
