"""Backup bounds: what one version, the whole store and a request may cost (see
hvfs/services/backup/service.py), with holes kept and hashed as zeros.

As in test_services_backup.py, a host directory stands for each VM's writable view.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hvfs.hypervisor.services import ServiceOptions
from hvfs.services.backup import (
    BackupIndex,
    BackupLimits,
    BackupRule,
    BackupService,
    BlobStore,
    Skipped,
    open_store,
    prune,
)
from hvfs.services.commands import EXIT_HVFS
from hvfs.spec import UsageError
from tests.conftest import Hvfs, require
from tests.test_services_backup import THREE_CHUNKS, PausingStore, Vms, restore_to


@pytest.fixture
def vms(tmp_path: Path) -> Iterator[Vms]:
    service = BackupService.open(str(tmp_path / "store"), [BackupRule("/data/*")])
    yield Vms(tmp_path / "vms", service)
    service.close()


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
    def bounds(options: ServiceOptions) -> tuple[int | None, int | None]:
        config = options.config("backup")
        return config.max_file, config.max_store

    options = ServiceOptions.parse({"backup": ("/data/*",), "backup_max_file": "2g", "backup_max_store": "512m"}, "/")
    assert bounds(options) == (2 << 30, 512 << 20)
    table = {"backup": ["/data/*"], "backup_max_file": 1 << 20, "backup_max_store": "10g"}
    options = ServiceOptions.from_table(table, str(tmp_path))
    assert bounds(options) == (1 << 20, 10 << 30)
    assert bounds(ServiceOptions.parse({"backup": ("/data/*",)}, "/"))[0] is None  # the service's default
    with pytest.raises(UsageError, match="backup-max-file: size '1x' is not a size"):
        ServiceOptions.parse({"backup": ("/data/*",), "backup_max_file": "1x"}, "/")
    with pytest.raises(UsageError, match="backup-max-store: True is not a size"):
        ServiceOptions.from_table({"backup": ["/data/*"], "backup_max_store": True}, str(tmp_path))
    with pytest.raises(UsageError, match="add --backup GLOB"):
        ServiceOptions.parse({"backup_max_store": "1g"}, "/")


def test_a_bad_bound_is_one_line_and_exit_125(hvfs: Hvfs) -> None:
    result = hvfs.run("run", "--backup", "/data/*", "--backup-max-file", "lots", "--", "true")
    assert result.returncode == EXIT_HVFS
    assert result.stderr == "hvfs: backup-max-file: size 'lots' is not a size; use e.g. 64m, 1g or 512k\n"
