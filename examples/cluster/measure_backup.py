#!/usr/bin/env python3
"""The cost of one saved version in a backup store (docs/scale.md, docs/cluster.md): the
backup service (hvfs.services.backup) saving N distinct 4 KiB contents of one file, one
after the other, as a manager does on each close after a write, in three stores:

- local: a store on a local disk, its index in WAL mode, one connection kept open;
- shared-local: the same store said shared (``--backup-store-shared``): the index's
  rollback journal and its lock-then-open protocol, on a local disk;
- shared-juicefs: a shared store on a JuiceFS volume (a redis-server of its own on
  127.0.0.1, no persistence; objects in a directory of /dev/shm), mounted with the
  flags hvfs's juicefs source gives its clients (caches 0).

For each: milliseconds per version (median, p90) and the index connections opened per
version (in a shared store, each is one lock+open+work+close cycle). Root (a FUSE mount).

    sudo .venv/bin/python examples/cluster/measure_backup.py [--versions 100] [--only local,shared-local,...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from hvfs.services.backup import index as index_module
from hvfs.services.backup.service import BackupRule, BackupService

CASES = ("local", "shared-local", "shared-juicefs")


def per_version(store: str, shared: bool, versions: int, scratch: str) -> dict[str, float]:
    connects = 0
    connect = index_module._connect

    def counted(path: str) -> object:
        nonlocal connects
        connects += 1
        return connect(path)

    service = BackupService.open(store, [BackupRule("/data/*")], shared=shared)
    times = []
    try:
        index_module._connect = counted  # type: ignore[assignment]
        source = os.path.join(scratch, "file")
        for i in range(versions):
            with open(source, "wb") as f:
                f.write(f"version {i}\n".encode().ljust(4096, b"."))
            fd = os.open(source, os.O_RDONLY)
            try:
                started = time.perf_counter()
                saved = service.on_closed_after_write("vm", "/data/file", fd)
                times.append(time.perf_counter() - started)
            finally:
                os.close(fd)
            assert saved is not None, "a version was not saved"
    finally:
        index_module._connect = connect  # type: ignore[assignment]
        service.close()
    times.sort()
    return {
        "versions": versions,
        "ms_median": round(statistics.median(times) * 1000, 1),
        "ms_p90": round(times[int(len(times) * 0.9) - 1] * 1000, 1),
        "connections_per_version": round(connects / versions, 2),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def juicefs_volume(root: str) -> Iterator[str]:
    """A JuiceFS volume mounted at ROOT/mnt (gone after)."""
    from hvfs.manager.sources.juicefs import juicefs_binary

    binary, port = juicefs_binary(), _free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", root], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    objects = tempfile.mkdtemp(prefix="hvfs-measure-backup-", dir="/dev/shm")
    mountpoint = os.path.join(root, "mnt")
    os.mkdir(mountpoint, 0o700)
    meta = f"redis://127.0.0.1:{port}/1"
    try:
        time.sleep(0.5)
        subprocess.run([binary, "format", "--no-color", "--storage", "file", "--bucket", objects + "/", meta, "bench"],
                       check=True, capture_output=True, timeout=60)  # fmt: skip
        subprocess.run(
            [binary, "mount", "-d", "--no-usage-report", "--no-color", "--backup-meta", "0", "--cache-dir",
             os.path.join(root, "cache"), "--attr-cache=0", "--entry-cache=0", "--dir-entry-cache=0", meta,
             mountpoint], check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        os.chmod(mountpoint, 0o700)  # a formatted volume's root is 0777: a backup store refuses that
        yield mountpoint
    finally:
        subprocess.run([binary, "umount", "--force", mountpoint], capture_output=True, timeout=60, check=False)
        redis.send_signal(signal.SIGKILL)
        redis.wait()
        shutil.rmtree(objects, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--versions", type=int, default=100)
    parser.add_argument("--only", default=",".join(CASES))
    args = parser.parse_args()
    results = {}
    root = tempfile.mkdtemp(prefix="hvfs-measure-backup-")
    os.chmod(root, 0o700)
    try:
        for case in args.only.split(","):
            scratch = tempfile.mkdtemp(dir=root)
            if case == "shared-juicefs":
                with juicefs_volume(scratch) as mountpoint:
                    store = os.path.join(mountpoint, "store")
                    results[case] = per_version(store, True, args.versions, scratch)
            else:
                results[case] = per_version(os.path.join(scratch, "store"), case == "shared-local", args.versions,
                                            scratch)  # fmt: skip
            print(json.dumps({case: results[case]}), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
