"""``hvfs images``: the cache of unpacked images (docker:NAME, docker save and OCI layouts,
rootfs tarballs): ``ls`` (``--json``), ``rm NAME...``, ``prune``."""

from __future__ import annotations

import argparse
import datetime
import json
from typing import Any

from hvfs.images import ImageError, cache, store


def add_images_command(subparsers: Any) -> None:
    images = subparsers.add_parser(
        "images",
        help="the cache of unpacked images (ls, rm, prune)",
        description="The images hvfs unpacked for --image (docker:NAME, OCI layouts, tarballs), one per image ID.",
    )
    actions = images.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser("ls", help="list the cached images")
    ls.add_argument("--json", action="store_true", help="print JSON, for scripts")
    rm = actions.add_parser("rm", help="remove cached images no running VM uses")
    rm.add_argument("names", nargs="+", metavar="NAME", help="an ID (or its first digits), docker:NAME or a path")
    actions.add_parser("prune", help="remove every cached image no running VM uses")
    images.set_defaults(handler=run)


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _short(entry: cache.Entry) -> str:
    kind, _, digest = entry.key.partition("-")
    return digest[:12] if digest else kind[:12]


def run(args: argparse.Namespace) -> int:
    from hvfs.state import private_cache_directory

    images = store.images_directory(private_cache_directory())
    if args.action == "ls":
        lowers = cache.mounted_lowers()
        found = [(e, cache.in_use(images, e, lowers)) for e in cache.entries(images)]
        if args.json:
            print(json.dumps([e.to_json(used) for e, used in found], indent=2, sort_keys=True))
            return 0
        print(f"{'ID':<14}{'KIND':<16}{'SIZE':>10}  {'UNPACKED':<18}{'IN USE':<8}NAMES")
        for entry, used in found:
            when = entry.meta.get("unpacked")
            stamp = datetime.datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M") if when else "-"
            names = ", ".join(entry.names) or "-"
            kind = str(entry.meta.get("kind", "rootfs"))
            print(f"{_short(entry):<14}{kind:<16}{_mb(entry.size):>10}  {stamp:<18}{'yes' if used else 'no':<8}{names}")
        return 0
    if args.action == "rm":
        chosen = [cache.find(images, name) for name in args.names]  # all found, or nothing removed
        for entry in chosen:
            if not cache.remove(images, entry):
                raise ImageError(
                    f"image {_short(entry)} ({', '.join(entry.names) or entry.key}) is in use by a running VM; "
                    "stop it first (hvfs ps)"
                )
            print(f"removed {_short(entry)} ({_mb(entry.size)})")
        return 0
    freed = cache.leftovers(images)
    kept = 0
    for entry in cache.entries(images):
        if cache.remove(images, entry):
            freed += entry.size
            print(f"removed {_short(entry)} {', '.join(entry.names) or '-'} ({_mb(entry.size)})")
        else:
            kept += 1
    cache.forget_stale_refs(images)
    with_kept = f"; kept {kept} in use" if kept else ""
    print(f"freed {_mb(freed)}{with_kept}")
    return 0
