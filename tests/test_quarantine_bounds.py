"""The quarantine's storage bounds: one verdict, one entry; entries bounded in size, in
total and by their file system's margin; holes kept. (The scanner's own tests are in
test_services_scan.py.)"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from hvfs.services.scan.engines import Detection
from hvfs.services.scan.quarantine import Quarantine
from hvfs.services.space import NoRoom
from tests.conftest import require

FOUND = Detection("builtin", "EICAR-Test-File")


def opened(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def entries(quarantine: Quarantine) -> list[str]:
    return sorted(os.listdir(quarantine.root))  # staging directories (".tmp-…") included


def test_a_file_quarantined_again_and_again_is_one_entry(tmp_path: Path) -> None:
    """What a refused open on a read-only mount does on every retry: the file stays, and
    is quarantined again."""
    quarantine = Quarantine(str(tmp_path / "q"))
    infected = tmp_path / "infected"
    infected.write_bytes(b"infected " * 1000)
    fd = opened(infected)
    first = quarantine.add("vm1", "/ro/infected", fd, FOUND)
    assert [quarantine.add("vm1", "/ro/infected", fd, FOUND) for _ in range(20)] == [first] * 20
    os.utime(infected)  # a new fingerprint, the same content: found by its hash
    assert quarantine.add("vm1", "/ro/infected", fd, FOUND) == first
    restarted = Quarantine(quarantine.root)  # another manager, which never saw this file
    assert restarted.add("vm1", "/ro/infected", fd, FOUND) == first
    assert entries(quarantine) == [first.id]
    other = restarted.add("vm2", "/ro/infected", fd, FOUND)  # another VM's file
    os.close(fd)
    assert entries(quarantine) == sorted([first.id, other.id])


def test_a_file_larger_than_an_entry_may_be_is_not_copied(tmp_path: Path) -> None:
    quarantine = Quarantine(str(tmp_path / "q"), max_entry=1 << 20)
    huge = tmp_path / "huge"
    with open(huge, "wb") as f:
        f.truncate(50 << 30)
    fd = opened(huge)
    began = time.monotonic()
    with pytest.raises(NoRoom) as refused:
        quarantine.add("vm1", "/huge", fd, FOUND)
    os.close(fd)
    assert time.monotonic() - began < 1.0
    assert refused.value.errno == errno.ENOSPC
    assert refused.value.strerror == "50.0 GiB > the quarantine's largest entry 1.0 MiB"
    assert entries(quarantine) == []


def test_the_quarantine_keeps_to_its_bound(tmp_path: Path) -> None:
    quarantine = Quarantine(str(tmp_path / "q"), max_store=3 << 20)
    kept = refused = 0
    for n in range(6):
        path = tmp_path / f"f{n}"
        path.write_bytes(os.urandom(1 << 20))
        fd = opened(path)
        try:
            quarantine.add("vm1", f"/f{n}", fd, FOUND)
            kept += 1
        except NoRoom as e:
            assert "> quarantine-max-store 3.0 MiB" in str(e.strerror)
            refused += 1
        finally:
            os.close(fd)
    assert (kept, refused) == (2, 4)  # two entries and their records fit in 3 MiB, a third does not
    assert sum(p.stat().st_blocks * 512 for p in Path(quarantine.root).rglob("*") if p.is_file()) <= 3 << 20
    assert not [e for e in entries(quarantine) if e.startswith(".")]


def test_a_sparse_file_keeps_its_holes_in_the_quarantine_and_back(tmp_path: Path) -> None:
    infected = tmp_path / "disk.img"
    with open(infected, "wb") as f:
        f.truncate(32 << 20)
        f.seek(20 << 20)
        f.write(b"infected " * 1000)
    require(infected.stat().st_blocks * 512 < 1 << 20, f"the file system of {tmp_path} keeps no holes")
    content, blocks = infected.read_bytes(), infected.stat().st_blocks
    quarantine = Quarantine(str(tmp_path / "q"))
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    record = quarantine.move_in("vm1", "/disk.img", dir_fd, "disk.img", FOUND)
    os.close(dir_fd)
    assert (Path(quarantine.root) / record.id / "content").stat().st_blocks == blocks
    restored = Path(quarantine.restore(record.id, to=str(tmp_path / "back.img")))
    assert restored.read_bytes() == content and restored.stat().st_blocks == blocks
