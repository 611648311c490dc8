"""--strict: reads are served too, and results stay those of a plain run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import Hvfs
from tests.helpers import PROBES, snapshot

REOPEN = """
import os
fd = os.open("/data/file", os.O_RDONLY)
print(os.read(fd, 100).decode())
w = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_APPEND)
os.write(w, b" appended")
st = os.stat("/data/file")
print(st.st_size, oct(st.st_mode))
print(os.readlink("/data/link"))
print(os.access("/data/file", os.R_OK | os.W_OK))
"""


def test_python_runs_and_its_reads_are_served(hvfs: Hvfs, tmp_path: Path) -> None:
    stats_file = tmp_path / "stats.json"
    out = hvfs.ok(
        "run", "--strict", "--stats", str(stats_file), "--", "python3", "-c", "import json, sqlite3; print(1)"
    )
    assert out.strip() == "1"
    requests = json.loads(stats_file.read_text())["requests"]
    assert requests["open"]["served"] >= 20  # the interpreter's imports
    assert requests["stat"]["served"] + requests.get("statx", {}).get("served", 0) >= 20
    assert "exec" in requests


def test_reads_writes_and_reopen_through_proc(hvfs: Hvfs, tmp_path: Path) -> None:
    data, stats_file = tmp_path / "data", tmp_path / "stats.json"
    data.mkdir()
    (data / "file").write_text("content")
    (data / "link").symlink_to("file")
    out = hvfs.ok("run", "--strict", "--stats", str(stats_file), "-v", f"{data}:/data", "--", "python3", "-c", REOPEN)
    assert out.splitlines() == ["content", "16 0o100644", "file", "True"]
    assert (data / "file").read_text() == "content appended"
    requests = json.loads(stats_file.read_text())["requests"]
    assert requests["readlink"]["served"] >= 1  # Python's start-up reads links too
    assert requests["access"]["served"] >= 1


def test_shell_script_matches_native(hvfs: Hvfs, tmp_path: Path) -> None:
    native, served = tmp_path / "native", tmp_path / "served"
    native.mkdir()
    served.mkdir()
    subprocess.run(["sh", str(PROBES / "ops.sh")], cwd=native, check=True, capture_output=True)
    out = hvfs.ok(
        "run",
        "--strict",
        "-v",
        f"{served}:/data",
        "-v",
        f"{PROBES}:/probes:ro",
        "-w",
        "/data",
        "--",
        "sh",
        "/probes/ops.sh",
    )
    assert out.strip() == "done"
    assert snapshot(served) == snapshot(native)


def test_errnos_match_native(hvfs: Hvfs, tmp_path: Path) -> None:
    native, served = tmp_path / "native", tmp_path / "served"
    native.mkdir()
    served.mkdir()
    expected = subprocess.run(
        ["python3", str(PROBES / "errnos.py"), str(native)], capture_output=True, text=True, check=True
    ).stdout
    got = hvfs.ok(
        "run",
        "--strict",
        "-v",
        f"{served}:/data",
        "-v",
        f"{PROBES}:/probes:ro",
        "--",
        "python3",
        "/probes/errnos.py",
        "/data",
    )
    assert json.loads(got) == json.loads(expected)
