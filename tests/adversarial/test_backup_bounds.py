"""Backup and quarantine must not be a denial of service.

A VM that makes 50 GiB sparse files and destroys them (``truncate -s 50G f; rm f``) once
made the manager copy 50 GiB of holes before ``rm`` returned (measured before the fix:
5.3 s for 1 GiB, 15.6 s for 4 GiB, a 4 GiB store), and a VM writing file after file could
fill the store's disk. Each test attacks as root, root --strict and rootless, and checks
from the host what the store took, how long the VM waited, and what the events said.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hvfs.services.space import margin_of
from tests.adversarial.conftest import ON_THE_NATIVE_PATH, SECONDS, Attacker
from tests.conftest import require

pytestmark = ON_THE_NATIVE_PATH

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
MIB = 1 << 20


def taken(root: Path) -> int:
    """What the files under ``root`` take on disk."""
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def events(audit: Path, operation: str) -> list[dict[str, object]]:
    """The audit's events of ``operation``, read on the host."""
    lines = audit.read_text().splitlines() if audit.exists() else []
    return [e for e in map(json.loads, lines) if e["operation"] == operation]


def statistics(stats: Path) -> dict[str, int]:
    backup: dict[str, int] = json.loads(stats.read_text())["services"]["backup"]
    return backup


@pytest.fixture
def small_fs() -> Iterator[Callable[[int], Path]]:
    """Small memory file systems for stores: ``small_fs(MiB)`` mounts one (mode 1777: any
    user may make a store in it, as in /tmp)."""
    require(os.geteuid() == 0, "mounting a small file system for the store needs root")
    mounted: list[Path] = []

    def mount(mib: int) -> Path:
        path = Path(tempfile.mkdtemp(prefix="hvfs-store-"))
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=1777", "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", str(path)], check=False)
        path.rmdir()


def backup_options(data: Path, store: Path, audit: Path, stats: Path, *extra: str) -> list[str]:
    return ["-v", f"{data}:/data", "--backup", "/data/*", "--backup-store", str(store),
            "--audit", str(audit), "--stats", str(stats), *extra]  # fmt: skip


def test_destroying_50_gib_files_costs_no_time_and_no_store(attacker: Attacker, shared_tmp: Path) -> None:
    data, store, audit, stats = (shared_tmp / n for n in ("data", "store", "audit.jsonl", "stats.json"))
    data.mkdir()
    attacker.give(data)
    began = time.monotonic()
    outcome = attacker.run("sparse_destroy", "/data", options=backup_options(data, store, audit, stats))
    took = time.monotonic() - began
    assert outcome.code == 0, outcome.stderr[-2000:]
    assert outcome.count("failures") == 0
    # The attack ran: every way of destroying a 50 GiB file, many times over.
    assert min(outcome.count(k) for k in ("unlinks", "renames", "truncates")) >= 20, outcome.report
    # No destroying call waited for a copy (each was 2-4 s a GiB before), and nothing
    # was left to copy once the VM was gone.
    assert outcome.count("max_us") < 1_000_000, outcome.report
    assert took < SECONDS + 30, f"hvfs run took {took:.1f} s"
    # The store holds no 50 GiB copy: at most the index and the empty file's blob.
    assert taken(store) < 16 * MIB, f"{taken(store)} bytes in the store"
    assert all(p.stat().st_size == 0 for p in (store / "blobs").rglob("*") if p.is_file())
    assert os.listdir(store / "tmp") == []
    skipped = events(audit, "backup")
    assert skipped and {e["result"] for e in skipped} == {"skipped: 50.0 GiB > backup-max-file 1.0 GiB"}
    assert statistics(stats)["skipped_size"] == len(skipped)


@pytest.mark.parametrize("bound", ["max-store", "margin"])
def test_many_large_files_never_fill_the_store_or_its_disk(
    attacker: Attacker, shared_tmp: Path, small_fs: Callable[[int], Path], bound: str
) -> None:
    data, audit, stats = shared_tmp / "data", shared_tmp / "audit.jsonl", shared_tmp / "stats.json"
    data.mkdir()
    attacker.give(data)
    disk = small_fs(160)
    store = disk / "store"
    extra = ["--backup-max-store", "48m"] if bound == "max-store" else []
    outcome = attacker.run("fill_store", "/data", "4", options=backup_options(data, store, audit, stats, *extra))
    assert outcome.code == 0, outcome.stderr[-2000:]
    assert outcome.count("failures") == 0
    assert outcome.count("written_mib") > 2 * 160, outcome.report  # far more than there is room for
    assert outcome.count("max_unlink_us") < 3_000_000, outcome.report  # the request path's budget (2 s)
    st = os.statvfs(disk)
    if bound == "max-store":
        assert taken(store) <= 48 * MIB, f"{taken(store)} bytes in a store bounded to 48 MiB"
        pattern = "skipped: store at "
    else:
        assert st.f_bavail * st.f_frsize >= margin_of(st), "the store's file system went under its margin"
        pattern = "free on the store's file system, which keeps"
    assert os.listdir(store / "tmp") == []
    counted = statistics(stats)
    assert counted["saved"] >= 3, counted  # versions were saved until the bound
    skipped = events(audit, "backup")
    assert skipped and all(pattern in str(e["result"]) for e in skipped), skipped[:3]
    assert counted["skipped_space"] == len(skipped)


def test_a_sparse_file_is_restored_with_its_content_and_holes(attacker: Attacker, shared_tmp: Path) -> None:
    data, store, out = shared_tmp / "data", shared_tmp / "store", shared_tmp / "out"
    data.mkdir()
    attacker.give(data)
    attacker.program("sparse_destroy")  # its bytes are the data written into the holes
    strict = ["--name", "disk", *(["--strict"] if attacker.strict else [])]
    volumes = ["-v", f"{data}:/data", "-v", f"{attacker.binaries}:/attacks:ro"]
    backup = ["--backup", "/data/*", "--backup-store", str(store)]
    script = (
        "truncate -s 64M /data/disk.img && "
        "dd if=/attacks/sparse_destroy of=/data/disk.img bs=4096 seek=2560 count=4 conv=notrunc status=none && "
        "dd if=/attacks/sparse_destroy of=/data/disk.img bs=4096 seek=12000 count=2 conv=notrunc status=none"
    )
    attacker.runner.ok("run", *strict, *volumes, *backup, "--", "sh", "-c", script)
    original = data / "disk.img"
    content, blocks = original.read_bytes(), original.stat().st_blocks
    require(blocks * 512 < MIB, f"the file system of {data} keeps no holes")
    attacker.runner.ok("run", *strict, *volumes, *backup, "--", "rm", "/data/disk.img")  # gone from the VM
    attacker.runner.ok("backup", "restore", "/data/disk.img", "--backup-store", str(store), "--to", str(out))
    restored = out / "disk.img"
    assert restored.read_bytes() == content
    assert restored.stat().st_blocks == blocks, (restored.stat().st_blocks, blocks)
    digest = hashlib.sha256(content).hexdigest()
    assert (store / "blobs" / digest[:2] / digest).stat().st_blocks == blocks  # as sparse as the file
    assert taken(store / "blobs") <= 3 * blocks * 512  # so were the versions before it


def test_a_file_the_quarantine_cannot_move_is_one_entry(attacker: Attacker, shared_tmp: Path) -> None:
    """A read-only mount: the infected file stays, and every open is refused again."""
    readonly, quarantine = shared_tmp / "ro", shared_tmp / "quarantine"
    readonly.mkdir()
    (readonly / "eicar.com").write_bytes(EICAR)
    attacker.give(readonly)
    options = ["-v", f"{readonly}:/ro:ro", "--scan", "--quarantine", str(quarantine)]
    outcome = attacker.run("refused_open", "/ro/eicar.com", options=options)
    assert outcome.code == 0, outcome.stderr[-2000:]
    assert outcome.count("opened") == 0 and outcome.count("other") == 0, outcome.report
    assert outcome.count("refused") == outcome.count("tries") >= 100, outcome.report
    entries = [e for e in os.listdir(quarantine) if not e.startswith(".")]
    assert len(entries) == 1, f"{len(entries)} entries for one file refused {outcome.count('refused')} times"
    assert (quarantine / entries[0] / "content").read_bytes() == EICAR
    assert (readonly / "eicar.com").read_bytes() == EICAR  # still there: it could not be moved
