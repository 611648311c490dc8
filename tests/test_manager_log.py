"""The manager's internal errors reach its log, never a VM's streams as a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Hvfs, state_dir

# A VM's stderr is the manager's: an audit log on /dev/full fails on every event, an
# internal error in the event bus, with a traceback.
FAILING = ("--audit", "/dev/full")


def test_an_internal_error_is_one_line_on_stderr(hvfs: Hvfs) -> None:
    env = {key: value for key, value in os.environ.items() if key != "HVFS_DEBUG"}
    result = hvfs.run("run", *FAILING, "--", "sh", "-c", "mkdir /tmp/x && echo made", env=env)
    assert result.returncode == 0 and result.stdout == "made\n", result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("hvfs: event subscriber audit failed") for line in lines), lines
    log = Path(state_dir(None)) / "manager.log"  # in the state directory of root's manager
    assert f"details in {log}" in lines[0]
    text = log.read_text()
    assert "Traceback" in text and "No space left on device" in text
    assert oct(log.stat().st_mode & 0o777) == "0o600"


@pytest.mark.rootless
def test_a_rootless_manager_logs_in_its_own_state_directory(rootless: Hvfs) -> None:
    result = rootless.run("run", *FAILING, "--", "mkdir", "/tmp/x")
    assert result.returncode == 0, result.stderr
    log = Path(state_dir("hvfs-rootless")) / "manager.log"
    assert "Traceback" not in result.stderr and f"details in {log}" in result.stderr
    assert "Traceback" in log.read_text()
    assert log.stat().st_uid == _ids("hvfs-rootless")[0]


def test_hvfs_debug_prints_the_traceback(hvfs: Hvfs) -> None:
    result = hvfs.run("run", *FAILING, "--", "mkdir", "/tmp/x", env={**os.environ, "HVFS_DEBUG": "1"})
    assert result.returncode == 0
    assert "Traceback" in result.stderr and "No space left on device" in result.stderr


def _ids(user: str) -> tuple[int, int]:
    import pwd

    account = pwd.getpwnam(user)
    return account.pw_uid, account.pw_gid
