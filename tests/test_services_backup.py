"""Backup: versions saved from fds, restored by time, deduplicated, pruned, never torn.

Each "VM" is a host directory standing for its writable view: VM path /data/x of vm1 is
ROOT/vm1/data/x. The service gets read-only fds on real files, as the manager gives it.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hvfs.services.backup import (
    BackupIndex,
    BackupRule,
    BackupService,
    BlobStore,
    CorruptBlob,
    RestoreError,
    Version,
    open_store,
    prune,
    restore_into,
    select,
)
from hvfs.services.backup.cli import add_backup_command
from hvfs.services.backup.store import BlobWriter
from hvfs.services.commands import EXIT_HVFS
from hvfs.services.snapshot import read_lease
from hvfs.services.units import format_time
from tests.conftest import require


class Vms:
    """Host directories standing for VMs' writable views, and a service saving from them."""

    def __init__(self, root: Path, service: BackupService) -> None:
        self.root, self.service = root, service

    def host(self, vm: str, path: str) -> Path:
        return self.root / vm / path.lstrip("/")

    def write(self, vm: str, path: str, content: bytes, mode: int = 0o644) -> Version | None:
        """Write a file as a VM would, then tell the service it was closed."""
        host = self.host(vm, path)
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_bytes(content)
        host.chmod(mode)
        return self.closed(vm, path)

    def closed(self, vm: str, path: str) -> Version | None:
        fd = os.open(self.host(vm, path), os.O_RDONLY)
        try:
            return self.service.on_closed_after_write(vm, path, fd)
        finally:
            os.close(fd)

    def remove(self, vm: str, path: str) -> Version | None:
        """Unlink as the manager would: save first, unlink, then record the removal."""
        fd = os.open(self.host(vm, path), os.O_RDONLY)
        try:
            saved = self.service.before_remove(vm, path, fd)
        finally:
            os.close(fd)
        os.unlink(self.host(vm, path))
        self.service.after_remove(vm, path)
        return saved

    def tree(self, vm: str, path: str) -> dict[str, tuple[bytes, int]]:
        return files(self.host(vm, path))


def files(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every regular file under ``root``: relative path -> (content, permission bits)."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture
def vms(tmp_path: Path) -> Iterator[Vms]:
    service = BackupService.open(str(tmp_path / "store"), [BackupRule("/data/*")])
    yield Vms(tmp_path / "vms", service)
    service.close()


def restore_to(vms: Vms, target: Path, path: str, *, vm: str | None = None, at: float | None = None) -> list[str]:
    target.mkdir(parents=True, exist_ok=True)
    dir_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return restore_into(vms.service.store, select(vms.service.index, path, vm=vm, at=at), dir_fd)
    finally:
        os.close(dir_fd)


def test_three_versions_of_a_file_restore_byte_for_byte(vms: Vms, tmp_path: Path) -> None:
    contents = [b"first\n" * 1000, b"second", b"thirds"]  # the last two: same size, written at once
    versions = [vms.write("vm1", "/data/x.db", c, mode=0o640) for c in contents]
    assert all(v is not None for v in versions)
    assert [v.size for v in versions if v] == [len(c) for c in contents]
    assert [v.trigger for v in versions if v] == ["close"] * 3
    for n, (version, content) in enumerate(zip(versions, contents, strict=True)):
        assert version is not None
        assert restore_to(vms, tmp_path / f"r{n}", "/data/x.db", at=version.time) == ["x.db"]
        restored = tmp_path / f"r{n}" / "x.db"
        assert restored.read_bytes() == content
        assert stat.S_IMODE(restored.stat().st_mode) == 0o640
        assert restored.stat().st_mtime_ns == version.mtime_ns


def test_a_tree_restored_as_of_a_time_equals_the_tree_then(vms: Vms, tmp_path: Path) -> None:
    vms.write("vm1", "/data/a", b"a1")
    vms.write("vm1", "/data/sub/b", b"b1", mode=0o600)
    vms.write("vm1", "/data/c", b"c1")
    then = vms.tree("vm1", "/data")
    moment = time.time()
    vms.write("vm1", "/data/a", b"a2")
    vms.remove("vm1", "/data/c")
    vms.write("vm1", "/data/sub/d", b"d1")
    now = vms.tree("vm1", "/data")
    assert then != now
    restore_to(vms, tmp_path / "then", "/data", at=moment)
    assert files(tmp_path / "then") == then
    restore_to(vms, tmp_path / "now", "/data")
    assert files(tmp_path / "now") == now
    restore_to(vms, tmp_path / "sub", "/data/sub", at=moment)  # a subtree, relative to it
    assert files(tmp_path / "sub") == {"b": (b"b1", 0o600)}


def test_a_removed_file_can_still_be_restored(vms: Vms, tmp_path: Path) -> None:
    vms.write("vm1", "/data/gone", b"saved on close")
    host = vms.host("vm1", "/data/gone")
    host.write_bytes(b"changed, never closed through the manager")
    saved = vms.remove("vm1", "/data/gone")
    assert saved is not None and saved.trigger == "remove"
    latest = vms.service.index.latest("vm1", "/data/gone")
    assert latest is not None and latest.removed
    restore_to(vms, tmp_path / "r", "/data/gone")
    assert (tmp_path / "r" / "gone").read_bytes() == b"changed, never closed through the manager"
    assert vms.service.statistics().removals == 1


def test_identical_content_in_two_vms_is_stored_once(vms: Vms) -> None:
    content = os.urandom(100_000)
    first = vms.write("vm1", "/data/a.bin", content)
    second = vms.write("vm2", "/data/elsewhere/b.bin", content)
    assert first is not None and second is not None
    assert first.hash == second.hash
    assert list(vms.service.store.digests()) == [first.hash]
    stats = vms.service.statistics()
    assert (stats.saved, stats.new_blobs) == (2, 1)
    assert [(v.vm, v.path) for v in vms.service.index.versions()] == [
        ("vm1", "/data/a.bin"),
        ("vm2", "/data/elsewhere/b.bin"),
    ]


def test_an_unchanged_file_makes_no_new_version(vms: Vms) -> None:
    assert vms.write("vm1", "/data/f", b"same") is not None
    assert vms.closed("vm1", "/data/f") is None  # nothing changed: fingerprint equal, not even read
    assert vms.write("vm1", "/data/f", b"same") is None  # rewritten with the same bytes: same hash
    assert vms.service.statistics().unchanged == 2
    assert len(vms.service.index.versions()) == 1


def test_only_files_that_rules_select_are_saved(tmp_path: Path) -> None:
    rules = [BackupRule.parse("/data/*.db"), BackupRule.parse("web-*:/srv/*")]
    service = BackupService.open(str(tmp_path / "store"), rules)
    vms = Vms(tmp_path / "vms", service)
    assert vms.write("db", "/data/x.db", b"1") is not None
    assert vms.write("db", "/data/x.txt", b"1") is None
    assert vms.write("web-1", "/srv/index.html", b"1") is not None
    assert vms.write("db", "/srv/index.html", b"1") is None
    (vms.root / "db" / "data" / "dir.db").mkdir()
    assert vms.closed("db", "/data/dir.db") is None  # not a regular file
    with pytest.raises(ValueError, match="VM-GLOB:/PATH-GLOB"):
        BackupRule.parse("data/*")
    service.close()


def test_a_temporary_file_renamed_over_a_file_becomes_its_version(tmp_path: Path) -> None:
    service = BackupService.open(str(tmp_path / "store"), [BackupRule("/data/*")])
    vms = Vms(tmp_path / "vms", service)
    vms.write("vm1", "/data/config", b"old")
    vms.write("vm1", "/data/.config.tmp", b"new")  # a matching temporary file: saved too
    fd = os.open(vms.host("vm1", "/data/config"), os.O_RDONLY)
    assert service.before_remove("vm1", "/data/config", fd, replaced=True) is None  # "old" is saved already
    os.close(fd)
    os.rename(vms.host("vm1", "/data/.config.tmp"), vms.host("vm1", "/data/config"))
    fd = os.open(vms.host("vm1", "/data/config"), os.O_RDONLY)
    renamed = service.on_renamed("vm1", "/data/.config.tmp", "/data/config", fd)
    os.close(fd)
    assert renamed is not None and renamed.trigger == "rename"
    assert [(v.path, v.trigger) for v in service.index.versions()] == [
        ("/data/.config.tmp", "close"),
        ("/data/.config.tmp", "removed"),
        ("/data/config", "close"),
        ("/data/config", "rename"),
    ]
    assert service.index.tree_at("vm1", "/data", time.time()) == [renamed]
    service.close()


def test_a_renamed_directory_keeps_its_files_versions_without_reading_them(vms: Vms, tmp_path: Path) -> None:
    vms.write("vm1", "/data/dir/a", b"a", mode=0o600)
    vms.write("vm1", "/data/dir/sub/b", b"b")
    vms.write("vm1", "/data/dirt", b"not under /data/dir")
    blobs = set(vms.service.store.digests())
    os.rename(vms.host("vm1", "/data/dir"), vms.host("vm1", "/data/moved"))
    moved = vms.service.on_directory_renamed("vm1", "/data/dir/", "/data/moved")
    assert [v.path for v in moved] == ["/data/moved/a", "/data/moved/sub/b"]
    assert set(vms.service.store.digests()) == blobs
    restore_to(vms, tmp_path / "r", "/data")
    assert files(tmp_path / "r") == vms.tree("vm1", "/data")
    restore_to(vms, tmp_path / "old", "/data/dir/a")  # still restorable by its old name
    assert (tmp_path / "old" / "a").read_bytes() == b"a"


def test_saves_from_many_threads_are_all_recorded(vms: Vms, tmp_path: Path) -> None:
    def save(worker: int) -> None:
        for n in range(10):
            vms.write("vm1", f"/data/w{worker}/f{n}", f"{worker}:{n}".encode() * 100)

    threads = [threading.Thread(target=save, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(vms.service.index.versions()) == 80
    assert len(list(vms.service.store.digests())) == 80
    restore_to(vms, tmp_path / "all", "/data")
    assert files(tmp_path / "all") == vms.tree("vm1", "/data")


def test_prune_keeps_the_newest_versions_and_frees_the_rest(vms: Vms) -> None:
    saved = [vms.write("vm1", "/data/f", f"version {n}".encode()) for n in range(5)]
    shared = vms.write("vm1", "/data/g", b"version 0")  # shares version 0's blob
    assert all(saved) and shared is not None
    store, index = vms.service.store, vms.service.index
    pruned = prune(index, store, keep=2, grace=0)
    assert (pruned.versions, pruned.blobs) == (3, 2)  # versions 1 and 2 freed; version 0 is /data/g's too
    assert [v.id for v in index.versions()] == [saved[3].id, saved[4].id, shared.id]  # type: ignore[union-attr]
    assert set(store.digests()) == {v.hash for v in index.versions()}


def test_prune_by_age_spares_the_last_version_of_a_live_file(tmp_path: Path) -> None:
    day, now = 86400.0, float(int(time.time()))  # versions take the earlier of the clock and the ctime
    clock = [now]
    service = BackupService(*open_store(str(tmp_path / "store")), [BackupRule("/*")], clock=lambda: clock[0])
    vms = Vms(tmp_path / "vms", service)
    for age, path, content in [(30, "/old", b"o"), (10, "/f", b"1"), (8, "/f", b"2"), (1, "/f", b"3")]:
        clock[0] = now - age * day
        vms.write("vm1", path, content)
    clock[0] = now - 25 * day
    vms.write("vm1", "/deleted", b"d")
    clock[0] = now - 20 * day
    vms.remove("vm1", "/deleted")
    assert prune(service.index, service.store, max_age=7 * day, now=now, grace=0).versions == 4
    assert [(v.path, v.time) for v in service.index.versions()] == [("/f", now - day), ("/old", now - 30 * day)]
    service.close()


def test_collection_spares_young_unreferenced_blobs(tmp_path: Path) -> None:
    store = BlobStore(str(tmp_path / "store"))
    blob = store.put(b"not yet in the index")
    assert blob.new and not store.put(b"not yet in the index").new
    assert store.collect_garbage(set()).blobs == 0  # a writer may be about to reference it
    assert store.collect_garbage(set(), grace=0).blobs == 1
    assert not store.has(blob.digest)


class PausingWriter(BlobWriter):
    """A blob writer that calls ``pause`` once, after the first chunk was read from the
    file and before the rest is: the moment a concurrent writer would strike."""

    def __init__(self, store: BlobStore, pause: Callable[[], None]) -> None:
        super().__init__(store)
        self._pause: Callable[[], None] | None = pause

    def write(self, chunk: bytes) -> None:
        pause, self._pause = self._pause, None
        if pause is not None:
            pause()
        super().write(chunk)


class PausingStore(BlobStore):
    def __init__(self, root: str, pause: Callable[[], None]) -> None:
        super().__init__(root)
        self.pause = pause

    def writer(self) -> BlobWriter:
        return PausingWriter(self, self.pause)


THREE_CHUNKS = 3 << 20  # the service reads 1 MiB at a time


def paused_service(tmp_path: Path, pause: Callable[[], None]) -> BackupService:
    index = BackupIndex(str(tmp_path / "index.sqlite"))
    return BackupService(PausingStore(str(tmp_path / "store"), pause), index, [BackupRule("/*")])


def test_a_write_during_each_read_is_detected_and_nothing_is_saved(tmp_path: Path) -> None:
    host = tmp_path / "busy"
    host.write_bytes(b"a" * THREE_CHUNKS)
    fd = os.open(host, os.O_WRONLY)  # a VM holds it open for writing: no lease, the stat check guards
    go, done = threading.Event(), threading.Event()
    writes = 0

    def write_when_told() -> None:  # the VM's thread
        nonlocal writes
        while go.wait(5) and fd >= 0:
            go.clear()
            writes += 1
            os.pwrite(fd, b"b" * 4096, 0)  # the chunk already read...
            os.pwrite(fd, b"b" * 4096, THREE_CHUNKS - 4096)  # ...and one not read yet
            done.set()

    def pause() -> None:
        if fd >= 0:
            go.set()
            assert done.wait(5)
            done.clear()

    service = paused_service(tmp_path, pause)
    writer = threading.Thread(target=write_when_told)
    writer.start()
    reading = os.open(host, os.O_RDONLY)
    assert service.on_closed_after_write("vm1", "/busy", reading) is None
    assert writes == 3  # each attempt was torn
    assert service.statistics().torn == 1
    assert service.index.versions() == []
    assert os.listdir(tmp_path / "store" / "tmp") == []  # torn copies are discarded
    os.close(fd)  # the VM closes it: the next save takes a lease, and nothing writes
    fd = -1
    go.set()
    writer.join(5)
    version = service.on_closed_after_write("vm1", "/busy", reading)
    assert version is not None and version.hash == hashlib.sha256(host.read_bytes()).hexdigest()
    assert writes == 3
    os.close(reading)
    service.close()


def test_a_writer_opening_during_a_leased_read_waits_for_it(tmp_path: Path) -> None:
    host = tmp_path / "file"
    host.write_bytes(b"old " * (THREE_CHUNKS // 4))
    fd = os.open(host, os.O_RDONLY)
    with read_lease(fd) as leased:
        require(leased, f"the kernel grants no read lease on {tmp_path} (fs.leases-enable, or the file system)")
    opened = threading.Event()

    def rewrite() -> None:  # a VM opening the file again to change it
        with open(host, "r+b") as f:
            opened.set()
            f.write(b"new!" * (THREE_CHUNKS // 4))

    writer = threading.Thread(target=rewrite)

    def pause() -> None:
        writer.start()
        assert not opened.wait(0.2)  # its open waits for the lease

    service = paused_service(tmp_path, pause)
    version = service.on_closed_after_write("vm1", "/file", fd)
    writer.join(5)
    assert opened.is_set()
    assert version is not None and version.hash == hashlib.sha256(b"old " * (THREE_CHUNKS // 4)).hexdigest()
    assert host.read_bytes() == b"new!" * (THREE_CHUNKS // 4)
    os.close(fd)
    service.close()


def test_a_version_is_always_one_whole_write(vms: Vms) -> None:
    host = vms.host("vm1", "/data/flip")
    host.parent.mkdir(parents=True)
    whole = [bytes([n]) * (2 << 20) for n in (1, 2)]
    host.write_bytes(whole[0])
    stop = threading.Event()

    def flip() -> None:  # a program rewriting the file in pieces, closing it, now and then
        n = 0
        while not stop.is_set():
            n += 1
            fd = os.open(host, os.O_WRONLY)
            for offset in range(0, len(whole[0]), 1 << 16):
                os.pwrite(fd, whole[n % 2][offset : offset + (1 << 16)], offset)
            os.close(fd)
            stop.wait(0.003)

    writer = threading.Thread(target=flip)
    writer.start()
    try:
        versions = [vms.closed("vm1", "/data/flip") for _ in range(12)]
    finally:
        stop.set()
        writer.join()
    saved = {vms.service.store.read(v.hash or "") for v in versions if v is not None}
    assert saved  # some reads found the file closed
    assert saved <= set(whole)


def test_restore_never_follows_a_symlink_in_the_target(vms: Vms, tmp_path: Path) -> None:
    vms.write("vm1", "/data/sub/f", b"x")
    (tmp_path / "target").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "target" / "sub").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError) as caught:
        restore_to(vms, tmp_path / "target", "/data")
    assert caught.value.errno in (errno.ELOOP, errno.ENOTDIR)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_corrupt_blob_is_detected_on_restore(vms: Vms, tmp_path: Path) -> None:
    version = vms.write("vm1", "/data/f", b"precious")
    assert version is not None and version.hash is not None
    blob = vms.service.store.path(version.hash)
    os.chmod(blob, 0o600)
    Path(blob).write_bytes(b"rotten!!")
    with pytest.raises(CorruptBlob):
        restore_to(vms, tmp_path / "r", "/data/f")


def test_selection_explains_what_it_cannot_restore(vms: Vms) -> None:
    vms.write("vm1", "/data/f", b"1")
    vms.write("vm2", "/data/f", b"2")
    index = vms.service.index
    with pytest.raises(RestoreError, match="several VMs"):
        select(index, "/data/f")
    with pytest.raises(RestoreError, match="no backup of /nothing"):
        select(index, "/nothing")
    with pytest.raises(RestoreError, match="at or before"):
        select(index, "/data/f", vm="vm1", at=0)
    with pytest.raises(RestoreError, match="absolute"):
        select(index, "data/f")
    assert select(index, "/data/./f", vm="vm2").versions[0].vm == "vm2"


def hvfs_backup(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="hvfs")
    add_backup_command(parser.add_subparsers())
    args = parser.parse_args(["backup", *argv])
    status: int = args.handler(args)
    return status


def test_the_backup_command_lists_restores_and_prunes(
    vms: Vms, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = vms.service.store.root
    first = vms.write("vm1", "/data/notes.txt", b"monday")
    vms.write("vm1", "/data/notes.txt", b"tuesday")
    vms.write("vm2", "/data/other", b"x")
    assert first is not None
    assert hvfs_backup("list", "--store", store, "--vm", "vm1", "*.txt") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("vm1  close" in line and line.endswith("/data/notes.txt") for line in lines)
    at = format_time(first.time)
    assert hvfs_backup("restore", "/data/notes.txt", "--store", store, "--at", at, "--to", str(tmp_path / "r")) == 0
    assert (tmp_path / "r" / "notes.txt").read_bytes() == b"monday"
    assert "notes.txt" in capsys.readouterr().out
    unix = str(first.time)
    assert hvfs_backup("restore", "/data/notes.txt", "--store", store, "--at", unix, "--to", str(tmp_path / "u")) == 0
    assert (tmp_path / "u" / "notes.txt").read_bytes() == b"monday"
    assert hvfs_backup("restore", "/data", "--store", store, "--to", str(tmp_path / "r")) == EXIT_HVFS
    assert "choose one with --vm" in capsys.readouterr().err
    assert hvfs_backup("prune", "--store", store, "--keep", "1") == 0
    assert "forgot 1 versions" in capsys.readouterr().out
    assert hvfs_backup("prune", "--store", store) == EXIT_HVFS
    assert "--keep N, --max-age D" in capsys.readouterr().err
    assert hvfs_backup("list", "--store", str(tmp_path / "none")) == EXIT_HVFS
    assert "no backup store" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        hvfs_backup("prune", "--store", store, "--max-age", "7")
    assert "expected a number and a unit" in capsys.readouterr().err
