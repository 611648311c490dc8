"""The notification loop: malformed calls, cancelled notifications, dying targets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Hvfs
from tests.helpers import PROBES

STORM = """
import os, signal, sys
signal.signal(signal.SIGALRM, lambda *_: None)
signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)  # a signal every 200 µs, as Go's preemption does
for i in range(2000):
    while True:
        try:
            os.close(os.open(f"/data/f{i}", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))
            break
        except InterruptedError:
            continue
        except FileExistsError:  # a repeated create after an interruption: already made
            break
signal.setitimer(signal.ITIMER_REAL, 0)
print(len(os.listdir("/data")))
"""

DYING = """
import os, signal, time
children = []
for n in range(8):
    pid = os.fork()
    if pid == 0:
        i = 0
        while True:
            os.close(os.open(f"/data/c{n}-{i % 50}", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644))
            i += 1
    children.append(pid)
time.sleep(0.5)
for pid in children:
    os.kill(pid, signal.SIGKILL)  # many die in the middle of a trapped call
for pid in children:
    os.waitpid(pid, 0)
os.close(os.open("/data/after", os.O_CREAT | os.O_WRONLY, 0o644))
print("served after", os.path.exists("/data/after"))
"""


@pytest.fixture(params=["hvfs", "hvfs_python"], ids=["native-path", "python-path"])
def served(request: pytest.FixtureRequest) -> Hvfs:
    """hvfs on each path that serves requests: the C hot path (where built), and Python."""
    runner: Hvfs = request.getfixturevalue(request.param)
    return runner


def test_malformed_paths_get_the_native_errnos(served: Hvfs) -> None:
    hvfs = served
    native = subprocess.run([sys.executable, str(PROBES / "bad_paths.py")], capture_output=True, text=True, check=True)
    in_vm = hvfs.ok("run", "-v", f"{PROBES}:/probes:ro", "--", "python3", "/probes/bad_paths.py")
    assert in_vm == native.stdout
    results = dict(line.rsplit(" ", 1) for line in in_vm.splitlines())
    assert results["null pointer"] == "EFAULT"
    assert results["runs into unmapped memory"] == "EFAULT"
    assert results["longer than PATH_MAX"] == "ENAMETOOLONG"
    assert results["bad dirfd"] == "EBADF"


def test_the_loop_survives_a_storm_of_signals(served: Hvfs, tmp_path: Path) -> None:
    hvfs = served
    stats_file = tmp_path / "stats.json"
    data = tmp_path / "data"
    data.mkdir()
    out = hvfs.ok("run", "--stats", str(stats_file), "-v", f"{data}:/data", "--", "python3", "-c", STORM)
    assert out.strip() == "2000"
    assert len(list(data.iterdir())) == 2000


def test_targets_dying_mid_call_do_not_disturb_the_manager(served: Hvfs, tmp_path: Path) -> None:
    hvfs = served
    out = hvfs.ok("run", "-v", f"{tmp_path}:/data", "--", "python3", "-c", DYING)
    assert out.strip() == "served after True"


def test_the_sync_wake_up_flag_is_set_where_the_kernel_has_it(hvfs: Hvfs, tmp_path: Path) -> None:
    import os

    release = tuple(int(x) for x in os.uname().release.split(".")[:2])
    stats_file = tmp_path / "stats.json"
    hvfs.ok("run", "--stats", str(stats_file), "--", "true")
    assert json.loads(stats_file.read_text())["sync_wake_up"] == (release >= (6, 6))
