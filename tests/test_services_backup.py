"""Backup: versions saved from fds, restored by time, deduplicated, pruned, never torn.

Each "VM" is a host directory standing for its writable view: VM path /data/x of vm1 is
ROOT/vm1/data/x. The service gets read-only fds on real files, as the manager gives it.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hvfs.services.backup import (
    BackupIndex,
    BackupLimits,
    BackupRule,
    BackupService,
    BlobStore,
    CorruptBlob,
    RestoreError,
    Skipped,
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
from hvfs.servicing import ServiceOptions
from hvfs.spec import UsageError
from tests.conftest import Hvfs, require


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


# Bounds: what a version, the store and a request may cost (service.py's docstring).


def sparse_file(path: Path, size: int, pieces: dict[int, bytes]) -> Path:
    """A file of ``size`` bytes, holes but for ``pieces`` (offset: data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in pieces.items():
            f.seek(offset)
            f.write(data)
    require(path.stat().st_blocks * 512 < size // 2, f"the file system of {path} keeps no holes")
    return path


def bounded(tmp_path: Path, **limits: Any) -> tuple[Vms, list[Skipped]]:
    skipped: list[Skipped] = []
    service = BackupService.open(
        str(tmp_path / "store"), [BackupRule("/data/*")], limits=BackupLimits(**limits), report=skipped.append
    )
    return Vms(tmp_path / "vms", service), skipped


def taken(root: Path) -> int:
    """What the files under ``root`` take on disk."""
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def test_a_sparse_file_is_stored_and_restored_with_its_holes(vms: Vms, tmp_path: Path) -> None:
    host = sparse_file(vms.host("vm1", "/data/disk.img"), 64 << 20, {1 << 20: os.urandom(5000), 40 << 20: b"x" * 70000})
    version = vms.closed("vm1", "/data/disk.img")
    content = host.read_bytes()
    assert version is not None and version.hash == hashlib.sha256(content).hexdigest()
    assert version.size == 64 << 20
    blob = Path(vms.service.store.path(version.hash))
    assert blob.stat().st_blocks == host.stat().st_blocks  # the holes stayed holes
    restore_to(vms, tmp_path / "r", "/data/disk.img")
    restored = tmp_path / "r" / "disk.img"
    assert restored.read_bytes() == content
    assert restored.stat().st_blocks == host.stat().st_blocks
    dense = vms.write("vm2", "/data/dense.img", content)  # the same content, every byte written
    assert vms.host("vm2", "/data/dense.img").stat().st_blocks > 4 * host.stat().st_blocks
    assert dense is not None and dense.hash == version.hash
    assert list(vms.service.store.digests()) == [version.hash]
    assert vms.service.index.blob_bytes() == blob.stat().st_blocks * 512


def test_a_file_larger_than_max_file_is_skipped_unread_and_reported_once(tmp_path: Path) -> None:
    vms, skipped = bounded(tmp_path, max_file=1 << 20)
    host = sparse_file(vms.host("vm1", "/data/huge"), 50 << 30, {7 << 30: b"data"})
    began = time.monotonic()
    assert vms.closed("vm1", "/data/huge") is None
    assert vms.remove("vm1", "/data/huge") is None  # the same file: nothing more to say
    took = time.monotonic() - began
    assert took < 1.0, f"{took:.2f} s for a file that is never read"
    assert [(s.path, s.trigger, s.reason) for s in skipped] == [
        ("/data/huge", "close", "skipped: 50.0 GiB > backup-max-file 1.0 MiB")
    ]
    stats = vms.service.statistics()
    assert (stats.skipped_size, stats.saved, stats.failed) == (1, 0, 0)
    assert list(vms.service.store.digests()) == [] and os.listdir(tmp_path / "store" / "tmp") == []
    assert not host.exists()
    host.write_bytes(b"small now")  # a new file under the same name is saved as usual
    assert vms.closed("vm1", "/data/huge") is not None


def test_the_request_path_skips_what_does_not_fit_its_budget(tmp_path: Path) -> None:
    vms, skipped = bounded(tmp_path, sync_bytes=1 << 20)
    host = vms.host("vm1", "/data/big")
    host.parent.mkdir(parents=True)
    host.write_bytes(os.urandom(2 << 20))  # changed where the manager did not see a close
    fd = os.open(host, os.O_RDONLY)
    try:
        assert vms.service.before_remove("vm1", "/data/big", fd) is None
        assert [s.reason for s in skipped] == ["skipped: 2.0 MiB > 1.0 MiB, the most copied before an answer"]
        assert vms.service.on_closed_after_write("vm1", "/data/big", fd) is not None  # off the request path: saved
    finally:
        os.close(fd)
    assert vms.service.statistics().skipped_size == 1


def test_a_copy_on_the_request_path_is_abandoned_at_its_deadline(tmp_path: Path) -> None:
    def stall() -> None:  # a slow disk, or a file system that takes its time
        time.sleep(0.5)

    skipped: list[Skipped] = []
    index = BackupIndex(str(tmp_path / "index.sqlite"))
    store = PausingStore(str(tmp_path / "store"), stall)
    service = BackupService(
        store, index, [BackupRule("/*")], limits=BackupLimits(sync_seconds=0.2), report=skipped.append
    )
    host = tmp_path / "f"
    host.write_bytes(os.urandom(THREE_CHUNKS))
    fd = os.open(host, os.O_RDONLY)
    began = time.monotonic()
    assert service.before_remove("vm1", "/f", fd) is None
    took = time.monotonic() - began
    os.close(fd)
    assert took < 1.0, f"the VM waited {took:.2f} s"
    assert [s.reason for s in skipped] == ["skipped: not copied in 0.2 s, the budget before an answer"]
    assert service.statistics().skipped_time == 1
    assert os.listdir(tmp_path / "store" / "tmp") == [] and list(store.digests()) == []
    service.close()


def test_the_store_never_takes_more_than_max_store(tmp_path: Path) -> None:
    bound = 6 << 20
    vms, skipped = bounded(tmp_path, max_store=bound)
    saved = [vms.write("vm1", f"/data/f{n}", os.urandom(1 << 20)) for n in range(10)]
    assert 3 <= sum(v is not None for v in saved) < 6
    assert taken(tmp_path / "store") <= bound
    assert skipped and all(re.fullmatch(r"skipped: store at .* > backup-max-store 6\.0 MiB", s.reason) for s in skipped)
    stats = vms.service.statistics()
    assert stats.skipped_space == len(skipped) == 10 - stats.saved
    blobs = tmp_path / "store" / "blobs"
    assert vms.service.index.blob_bytes() == taken(blobs)
    for n in range(10):  # the files go, and so do their versions, once pruned
        if vms.host("vm1", f"/data/f{n}").exists():
            vms.remove("vm1", f"/data/f{n}")
    prune(vms.service.index, vms.service.store, max_age=0, grace=0)
    assert vms.service.index.blob_bytes() == taken(blobs) == 0
    assert vms.write("vm1", "/data/again", os.urandom(1 << 20)) is not None  # room again


def test_two_services_on_one_store_keep_one_bound(tmp_path: Path) -> None:
    bound = 5 << 20
    first, _ = bounded(tmp_path, max_store=bound)
    second = Vms(
        first.root,
        BackupService.open(str(tmp_path / "store"), [BackupRule("/data/*")], limits=BackupLimits(max_store=bound)),
    )
    saved = 0
    for n in range(8):
        saved += (first if n % 2 else second).write("vm1", f"/data/f{n}", os.urandom(1 << 20)) is not None
    assert 2 <= saved < 5
    assert taken(tmp_path / "store") <= bound
    second.service.close()


def test_the_store_leaves_its_file_system_a_margin(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize
    vms, skipped = bounded(tmp_path, margin=free - (2 << 20))  # 2 MiB to go, as this test starts
    assert vms.write("vm1", "/data/big", os.urandom(8 << 20)) is None
    assert len(skipped) == 1 and re.fullmatch(
        r"skipped: .* free on the store's file system, which keeps .*", skipped[0].reason
    )
    assert os.listdir(tmp_path / "store" / "tmp") == []


def test_a_store_made_before_accounting_is_accounted_when_opened(tmp_path: Path) -> None:
    old = BlobStore(str(tmp_path / "store"))  # as an older hvfs left it: blobs, no accounting
    for size in (1000, 100_000):
        old.put(os.urandom(size))
    _, index = open_store(str(tmp_path / "store"))
    assert index.blob_bytes() == taken(tmp_path / "store" / "blobs") > 0
    index.close()
    _, again = open_store(str(tmp_path / "store"))  # accounted once, not twice
    assert again.blob_bytes() == taken(tmp_path / "store" / "blobs")
    again.close()


def test_the_bounds_are_options_of_hvfs_run_and_of_a_project(tmp_path: Path) -> None:
    options = ServiceOptions.parse(backup=("/data/*",), backup_max_file="2g", backup_max_store="512m")
    assert (options.backup_max_file, options.backup_max_store) == (2 << 30, 512 << 20)
    table = {"backup": ["/data/*"], "backup_max_file": 1 << 20, "backup_max_store": "10g"}
    options = ServiceOptions.from_table(table, str(tmp_path))
    assert (options.backup_max_file, options.backup_max_store) == (1 << 20, 10 << 30)
    assert ServiceOptions.parse(backup=("/data/*",)).backup_max_file is None  # the service's default
    with pytest.raises(UsageError, match="backup-max-file: size '1x' is not a size"):
        ServiceOptions.parse(backup=("/data/*",), backup_max_file="1x")
    with pytest.raises(UsageError, match="backup-max-store: True is not a size"):
        ServiceOptions.from_table({"backup": ["/data/*"], "backup_max_store": True}, str(tmp_path))
    with pytest.raises(UsageError, match="add --backup GLOB"):
        ServiceOptions.parse(backup_max_store="1g")


def test_a_bad_bound_is_one_line_and_exit_125(hvfs: Hvfs) -> None:
    result = hvfs.run("run", "--backup", "/data/*", "--backup-max-file", "lots", "--", "true")
    assert result.returncode == EXIT_HVFS
    assert result.stderr == "hvfs: backup-max-file: size 'lots' is not a size; use e.g. 64m, 1g or 512k\n"
