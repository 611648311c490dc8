"""An audited strict VM's events the C loop recorded without the GIL (hvfs/_native/ring.h,
detached.h), seen from the host: the same audit as the C loop's record with the GIL
(``HVFS_AUDIT_DETACHED=0``, a manager of its own) for every case of tests/test_served_stat.py;
in the audit in the order the VM made its calls, C-recorded stats alternating with
Python-recorded truncates; and a manager stopped while the VM stats in a loop writes every
event it answered (the ring's last drain), a whole line each."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Hvfs, chown_to, state_dir
from tests.test_served_audit import _audited
from tests.test_served_stat import _volume

ALTERNATING = r"""
import os, sys
for n in range(int(sys.argv[1])):
    os.stat(f"/data/f{n % 10}")
    os.truncate(f"/data/f{n % 10}", 0)
"""
LOOPING = r"""
import os
n = 0
with open("/data/progress", "a") as progress:
    while True:
        os.stat("/data/f0")
        n += 1
        if n % 100 == 0:  # a whole line once these stats were answered
            progress.write(f"{n}\n")
            progress.flush()
"""
COUNT = 2000


def _setup(hvfs: Hvfs, root: Path, program: str) -> tuple[Path, Path]:
    data = root / "data"
    data.mkdir()
    for n in range(10):
        (data / f"f{n}").write_text("x")
    (root / "program.py").write_text(program)
    if hvfs.user is not None:
        root.chmod(0o755)
        chown_to(root, hvfs.user)
    return data, root / "audit.jsonl"


def _events(audit: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in audit.read_text().splitlines()]


def test_the_audit_is_the_one_recorded_with_the_gil(hvfs: Hvfs, tmp_path: Path) -> None:
    data = _volume(tmp_path, None)
    detached, stats, records = _audited(hvfs, tmp_path, data, "detached")
    with_gil = hvfs.with_env(HVFS_AUDIT_DETACHED="0", HVFS_STATE_DIR=state_dir(hvfs.user, "audit-with-gil"))
    answers, gil_stats, gil_records = _audited(with_gil, tmp_path, data, "with-gil")
    assert detached == answers
    assert records == gil_records
    assert stats["compiled"].get("audit_detached", 0) >= 20, stats["compiled"]
    assert "audit_detached" not in gil_stats["compiled"]


def _answered(progress: Path) -> int:
    lines = progress.read_text().split() if progress.exists() else []
    return int(lines[-1]) if lines else 0


@pytest.mark.parametrize("runner", ["hvfs", pytest.param("rootless", marks=pytest.mark.rootless)])
def test_c_and_python_recorded_events_are_in_the_order_the_vm_made_them(
    runner: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    hvfs: Hvfs = request.getfixturevalue(runner)
    root = tmp_path if hvfs.user is None else request.getfixturevalue("shared_tmp")
    data, audit = _setup(hvfs, root, ALTERNATING)
    stats = root / "stats.json"
    options = ["--strict", "--audit", str(audit), "--stats", str(stats), "-v", f"{data}:/data", "-v", f"{root}:/p:ro"]
    hvfs.ok("run", *options, "--", "python3", "/p/program.py", str(COUNT))
    made = [(e["operation"], e["paths"][0]) for e in _events(audit) if e.get("paths", [""])[0].startswith("/data/f")]
    assert made == [(operation, f"/data/f{n % 10}") for n in range(COUNT) for operation in ("stat", "truncate")]
    compiled = json.loads(stats.read_text())["compiled"]
    assert compiled.get("audit_detached", 0) >= COUNT - 10, compiled  # the stats: C's, without the GIL


def test_a_manager_stopped_meanwhile_writes_every_event_it_answered(hvfs: Hvfs, tmp_path: Path) -> None:
    data, audit = _setup(hvfs, tmp_path, LOOPING)
    options = ["--strict", "--audit", str(audit), "-v", f"{data}:/data", "-v", f"{tmp_path}:/p:ro"]
    hvfs.ok("run", "-d", "--name", f"auditstop{id(tmp_path)}", *options, "--", "python3", "/p/program.py")
    progress = data / "progress"
    deadline = time.monotonic() + 30
    while _answered(progress) < 5000:  # the ring busy: thousands of events a second
        assert time.monotonic() < deadline, "the VM made no progress"
        time.sleep(0.05)
    hvfs.ok("manager", "stop")
    answered = _answered(progress)  # the stats the VM had back, at least
    lines = audit.read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line whole
    stats = sum(1 for e in events if e["operation"] == "stat" and e["paths"] == ["/data/f0"])
    assert stats >= answered >= 5000, (stats, answered)
