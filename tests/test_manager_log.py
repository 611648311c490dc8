"""The manager's internal errors reach its log, never a VM's streams as a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Hvfs

# A VM's stderr is the manager's: an audit log on /dev/full fails on every event, an
# internal error in the event bus, with a traceback.
FAILING = ("--audit", "/dev/full")


def _log(root: Path) -> Path:
    return root / "hvfs" / "manager.log"


def test_an_internal_error_is_one_line_on_stderr(hvfs: Hvfs) -> None:
    env = {key: value for key, value in os.environ.items() if key != "HVFS_DEBUG"}
    result = hvfs.run("run", *FAILING, "--", "sh", "-c", "mkdir /tmp/x && echo made", env=env)
    assert result.returncode == 0 and result.stdout == "made\n", result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("hvfs: event subscriber audit failed") for line in lines), lines
    log = Path("/run/hvfs/manager.log")  # hvfs's state directory as root
    assert f"details in {log}" in lines[0]
    text = log.read_text()
    assert "Traceback" in text and "No space left on device" in text
    assert oct(log.stat().st_mode & 0o777) == "0o600"


@pytest.mark.rootless
def test_a_rootless_manager_logs_in_its_own_state_directory(rootless: Hvfs, shared_tmp: Path) -> None:
    runtime = shared_tmp / "runtime"
    runtime.mkdir(mode=0o700)
    os.chown(runtime, *_ids("hvfs-rootless"))
    command = list(rootless.command)
    command.insert(command.index("-i") + 1, f"XDG_RUNTIME_DIR={runtime}")  # into its env -i
    result = Hvfs(command, user=rootless.user).run("run", *FAILING, "--", "mkdir", "/tmp/x")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and f"details in {_log(runtime)}" in result.stderr
    assert "Traceback" in _log(runtime).read_text()


def test_hvfs_debug_prints_the_traceback(hvfs: Hvfs) -> None:
    result = hvfs.run("run", *FAILING, "--", "mkdir", "/tmp/x", env={**os.environ, "HVFS_DEBUG": "1"})
    assert result.returncode == 0
    assert "Traceback" in result.stderr and "No space left on device" in result.stderr


def _ids(user: str) -> tuple[int, int]:
    import pwd

    account = pwd.getpwnam(user)
    return account.pw_uid, account.pw_gid
