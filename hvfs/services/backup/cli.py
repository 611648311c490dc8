"""``hvfs backup list|restore|prune``: the backup store from the command line.

Register with ``add_backup_command(subparsers)`` in hvfs/cli.py; ``args.handler(args)``
runs the chosen subcommand. Every subcommand takes ``--backup-store DIR``, as ``hvfs run``
spells it (``--store``, its first name, is still read; default: the ``backup`` directory
under hvfs's data directory, /var/lib/hvfs as root, else ~/.local/share/hvfs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from hvfs.private_dirs import private_directory
from hvfs.services.backup.index import BackupIndex, Version
from hvfs.services.backup.prune import prune
from hvfs.services.backup.restore import RestoreError, restore_as_tar, restore_into, select
from hvfs.services.backup.store import BlobStore, CorruptBlob, open_store
from hvfs.services.commands import ServiceError, Subparsers, argument, guarded
from hvfs.services.datadir import backup_directory
from hvfs.services.units import format_time, parse_duration, parse_time


def add_backup_command(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Define ``hvfs backup list [--vm VM] [PATH-GLOB]``, ``hvfs backup restore PATH [--at TIME]
    [--to DIR] [--vm VM]`` and ``hvfs backup prune [--keep N] [--max-age D]``."""
    backup: argparse.ArgumentParser = subparsers.add_parser(
        "backup", help="list, restore and prune file versions", description="The versions the backup service saved."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--backup-store", dest="store", metavar="DIR", help=f"the backup store (default: {backup_directory()})"
    )
    common.add_argument("--store", dest="store", help=argparse.SUPPRESS)  # its first name: scripts keep working
    actions = backup.add_subparsers(dest="backup_action", metavar="ACTION", required=True, parser_class=type(backup))

    listing = actions.add_parser("list", parents=[common], help="list versions")
    listing.add_argument("--vm", help="only this VM's versions")
    listing.add_argument("glob", nargs="?", metavar="PATH-GLOB", help="only paths matching (fnmatch: * matches /)")
    listing.add_argument("--json", action="store_true", help="print JSON, for scripts (docs/cli.md: its keys)")
    listing.set_defaults(handler=guarded(_list))

    restore = actions.add_parser(
        "restore",
        parents=[common],
        help="restore a file or a tree",
        description="Restore PATH as it was at TIME: the file (its newest version then, even if it was removed "
        "since) as DIR/NAME, or, for a directory, the files under it that existed then, below DIR.",
    )
    restore.add_argument("path", metavar="PATH", help="the file or directory, as the VM names it")
    restore.add_argument("--at", metavar="TIME", type=argument(parse_time), help="ISO 8601 or unix time (default: now)")
    restore.add_argument(
        "--to",
        metavar="DIR",
        default=".",
        help="where to write it (default: the current directory); '-' writes a tar stream to stdout, "
        "for a running VM: --to - | hvfs exec VM tar -x -C DIR",
    )
    restore.add_argument("--vm", help="the VM whose versions to use (needed when several have PATH)")
    restore.set_defaults(handler=guarded(_restore))

    pruning = actions.add_parser("prune", parents=[common], help="forget old versions and free their space")
    pruning.add_argument("--keep", metavar="N", type=int, help="keep the newest N versions of each path")
    pruning.add_argument(
        "--max-age",
        metavar="D",
        type=argument(parse_duration),
        help="forget versions older than D (7d, 12h), but never the newest of a file that still exists",
    )
    pruning.set_defaults(handler=guarded(_prune))
    return backup


def _open(args: argparse.Namespace) -> tuple[BlobStore, BackupIndex]:
    directory = args.store or backup_directory()
    if not os.path.exists(os.path.join(directory, "index.sqlite")):
        raise ServiceError(f"no backup store in {directory}; give the one hvfs run used with --backup-store DIR")
    # What is restored from a store others could write in might be theirs: refuse it.
    directory = private_directory(directory, "the backup store", "", create=False, ours=not args.store)
    return open_store(directory)


def _list(args: argparse.Namespace) -> int:
    _, index = _open(args)
    try:
        if args.json:
            print(json.dumps([version_json(v) for v in index.versions(vm=args.vm, glob=args.glob)], indent=2))
            return 0
        for v in index.versions(vm=args.vm, glob=args.glob):
            size = "-" if v.removed else str(v.size)
            digest = "-" if v.hash is None else v.hash[:12]
            print(f"{format_time(v.time)}  {v.vm}  {v.trigger:<8} {size:>10}  {digest:<12}  {v.path}")
    finally:
        index.close()
    return 0


def version_json(v: Version) -> dict[str, object]:
    """The keys of ``hvfs backup list --json``: the table's columns, unabbreviated."""
    return {
        "time": format_time(v.time),
        "unix_time": v.time,
        "vm": v.vm,
        "trigger": v.trigger,
        "size": None if v.removed else v.size,
        "sha256": v.hash,
        "removed": v.removed,
        "path": v.path,
    }


def _restore(args: argparse.Namespace) -> int:
    store, index = _open(args)
    try:
        selection = select(index, args.path, vm=args.vm, at=args.at)
    except RestoreError as e:
        raise ServiceError(str(e)) from None
    finally:
        index.close()
    if args.to == "-":
        try:
            restore_as_tar(store, selection, sys.stdout.buffer)
        except CorruptBlob as e:
            raise ServiceError(f"the backup store is damaged: {e}; other versions may still restore (--at)") from None
        return 0
    os.makedirs(args.to, exist_ok=True)
    dir_fd = os.open(args.to, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        written = restore_into(store, selection, dir_fd)
    except CorruptBlob as e:
        raise ServiceError(f"the backup store is damaged: {e}; other versions may still restore (--at)") from None
    finally:
        os.close(dir_fd)
    for version, relative in zip(selection.versions, written, strict=True):
        sys.stdout.write(f"{os.path.join(args.to, relative)}  ({version.path} of {format_time(version.time)})\n")
    return 0


def _prune(args: argparse.Namespace) -> int:
    if args.keep is None and args.max_age is None:
        raise ServiceError("give --keep N, --max-age D, or both")
    store, index = _open(args)
    try:
        pruned = prune(index, store, keep=args.keep, max_age=args.max_age)
    finally:
        index.close()
    print(f"forgot {pruned.versions} versions; deleted {pruned.blobs} blobs ({pruned.bytes} bytes)")
    return 0
