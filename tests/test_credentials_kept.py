"""A VM whose programs change their umask back and forth (as tar does: umask(0), then
umask(old)) keeps its callers' credentials: the manager reads a caller's /proc status a few
times, not once per served request (hvfs/intercept/credcache.py). Counted by the driver
(``--stats``: ``credentials``), never timed. The modes of what is created check that the
umask in force was honoured."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Hvfs

DRIVERS = ["seccomp", "ptrace"]
OPENS = 2000

# umask(0) then umask(022), 100 times (the second call may run before the first is seen
# done), then 2,000 served opens for writing.
UMASK_THEN_OPENS = f"""
import os
for k in range(100):
    os.umask(0); os.umask(0o22)
for k in range({OPENS}):
    os.close(os.open(f"/vol/f{{k % 50}}", os.O_WRONLY | os.O_CREAT, 0o666))
os.umask(0o077)
os.close(os.open("/vol/after", os.O_WRONLY | os.O_CREAT, 0o666))
"""


def counts(stats: Path) -> dict[str, Any]:
    """The driver's credential counts, with ``kept_used`` counting as well the opens the C loop
    served (hvfs/_native/served_write.h; the ptrace driver's tracer_write.h: ``written_here``),
    each for a caller whose kept credentials Python published: C serves no other."""
    document = json.loads(stats.read_text())
    credentials = document.get("credentials")
    assert credentials is not None, f"the driver counts no credential reads: {sorted(document)}"
    found = dict(credentials)
    found["kept_used"] += document.get("compiled", {}).get("open_served", 0) + document.get("written_here", 0)
    return found


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_vm_changing_its_umask_keeps_its_credentials(hvfs: Hvfs, tmp_path: Path, driver: str) -> None:
    volume = tmp_path / "vol"
    volume.mkdir()
    stats = tmp_path / "stats.json"
    args = ["run", "--driver", driver, "--stats", str(stats), "-v", f"{volume}:/vol"]
    hvfs.ok(*args, "--", "python3", "-c", UMASK_THEN_OPENS)
    assert (volume / "f0").stat().st_mode & 0o777 == 0o644
    assert (volume / "after").stat().st_mode & 0o777 == 0o600  # the last umask, seen
    found = counts(stats)
    assert found["trusted"] == 1, found
    assert found["kept_used"] >= OPENS - 10, found
    assert found["reads"] <= 10, found  # not one per open


@pytest.mark.parametrize("driver", DRIVERS)
def test_tar_then_opens_keep_credentials(hvfs: Hvfs, tmp_path: Path, driver: str) -> None:
    """GNU tar's own umask(0) then umask(old) as it extracts, then served opens in the
    same VM: the credentials are still kept after tar."""
    archive = tmp_path / "a.tar"
    source = tmp_path / "src"
    source.mkdir()
    for k in range(20):
        path = source / f"d{k}" / "f"
        path.parent.mkdir()
        path.write_text(str(k))
        path.chmod(0o666)
    with tarfile.open(archive, "w") as tar:
        tar.add(source, arcname="src")
    volume = tmp_path / "vol"
    volume.mkdir()
    stats = tmp_path / "stats.json"
    script = f"umask 022 && tar -xf /in/a.tar -C /vol && python3 -c '{OPENER}'"
    args = ["run", "--driver", driver, "--stats", str(stats), "-v", f"{volume}:/vol", "-v", f"{tmp_path}:/in:ro"]
    hvfs.ok(*args, "--", "sh", "-c", script)
    assert (volume / "src" / "d3" / "f").read_text() == "3"
    found = counts(stats)
    assert found["trusted"] == 1, found
    assert found["kept_used"] >= OPENS - 10, found
    assert found["reads"] <= 100, found  # tar's and python's execs and umasks, not one per open


OPENER = f"""
import os
for k in range({OPENS}):
    os.close(os.open("/vol/g", os.O_WRONLY | os.O_CREAT, 0o666))
"""
