"""The change set's notes that the C loops queue without the GIL (hvfs/_native/note_queue.h,
``ChangeSet.c_note``): more changes than the queue holds are all in the diff (a note the
full queue cannot take is made with the GIL), and a directory renamed by Python after C
noted files beneath it shows them moved (the queue drained before ``moved_away``), with
the seccomp driver and the ptrace driver alike, as the Python path (``HVFS_SERVED_WRITE=0``)
shows them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hvfs._native import hotpath
from tests.conftest import Hvfs
from tests.test_served_write import _in_python

DRIVERS = [[], ["--driver", "ptrace"]]
IDS = ["seccomp", "ptrace"]

# 50,000 files made as tar makes them (O_CREAT|O_EXCL, served in C), nothing in Python between.
MANY = r"""
import os
os.mkdir("/data/many")
for i in range(50_000):
    os.close(os.open(f"/data/many/file-{i:05}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
"""

# Files made in C in a directory Python made, the directory renamed by Python, a file made in
# C in the new place and one in a new directory of the old name.
MOVED = r"""
import os
os.mkdir("/data/dir")
for i in range(20):
    os.close(os.open(f"/data/dir/f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
os.rename("/data/dir", "/data/moved")
os.close(os.open("/data/moved/later", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
os.mkdir("/data/dir")
os.close(os.open("/data/dir/f3", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
"""


def _diffed(runner: Hvfs, root: Path, program: str, driver: list[str]) -> tuple[list[str], dict[str, Any]]:
    """``program``'s ``--diff`` lines, in a VM with ``root``/data as /data, and its statistics."""
    data = root / "data"
    data.mkdir(parents=True)
    (root / "program.py").write_text(program)
    os.chmod(root, 0o755)
    stats = root / "stats.json"
    volumes = ["-v", f"{data}:/data", "-v", f"{root / 'program.py'}:/program.py:ro"]
    result: subprocess.CompletedProcess[str] = runner.run(
        "run", *driver, "--diff", "--stats", str(stats), *volumes, "--", "python3", "/program.py", timeout=600
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line[:2] in ("A ", "C ", "D ")]
    return lines, json.loads(stats.read_text())


def _served_in_c(stats: dict[str, Any]) -> int:
    """The write-opens the C loop served: the seccomp driver's or the ptrace driver's count."""
    if stats.get("driver") == "ptrace":
        written: int = stats["written_here"]
        return written
    served: int = stats["compiled"].get("open_served", 0)
    return served


@pytest.mark.parametrize("driver", DRIVERS, ids=IDS)
def test_more_changes_than_the_queue_holds_are_all_in_the_diff(hvfs: Hvfs, tmp_path: Path, driver: list[str]) -> None:
    # note_queue.h: 8 bytes, then the path, padded to 8; past the queue's bytes, on the GIL
    queued = sum((8 + len(f"/data/many/file-{i:05}") + 7) // 8 * 8 for i in range(50_000))
    assert queued > 5 * hotpath.NOTE_QUEUE_BYTES
    in_c, c_stats = _diffed(hvfs, tmp_path / "c", MANY, driver)
    in_python, python_stats = _diffed(_in_python(hvfs), tmp_path / "python", MANY, driver)
    assert _served_in_c(c_stats) >= 40_000 and _served_in_c(python_stats) == 0, (c_stats, python_stats)
    assert in_c == in_python
    assert in_c[:2] == ["C /data", "A /data/many"]
    assert in_c[2:] == [f"A /data/many/file-{i:05}" for i in range(50_000)]


@pytest.mark.parametrize("driver", DRIVERS, ids=IDS)
def test_a_directory_renamed_after_c_noted_files_beneath_it_shows_them_moved(
    hvfs: Hvfs, tmp_path: Path, driver: list[str]
) -> None:
    in_c, c_stats = _diffed(hvfs, tmp_path / "c", MOVED, driver)
    in_python, python_stats = _diffed(_in_python(hvfs), tmp_path / "python", MOVED, driver)
    assert _served_in_c(c_stats) >= 20 and _served_in_c(python_stats) == 0, (c_stats, python_stats)
    assert in_c == in_python
    assert in_c == ["C /data", "A /data/dir", "A /data/dir/f3", "A /data/moved", "A /data/moved/later"]
