"""``hvfs run --audit FILE`` across a manager's restart: the next manager takes the run
back with the fd the user's client opened (kept by the VM's shim, hvfs.hypervisor.
kept_outputs), never opening FILE itself. The audit goes on in the same file; and when
FILE was replaced meanwhile by a symlink to a file the user may not write (root's, or
the user's own 0400 file, which a rootless manager, root in its user namespace, could
open), that file is left as it was and the manager's log says what happened.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOTLESS_USER, Hvfs, state_dir

TICKING = ["--", "sh", "-c", "while :; do echo x > /tmp/tick; sleep 0.1; done"]
REPLACED = "is no longer the file its user opened"


def _events(audit: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in audit.read_text().splitlines() if line.endswith("}")]


def _ticks(audit: Path, since: int = 0) -> int:
    """The VM's writes of /tmp/tick that the audit recorded, from its event ``since`` on."""
    return sum(1 for e in _events(audit)[since:] if "/tmp/tick" in e["paths"])


def _wait(what: str, condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds:g}s for {what}"
        time.sleep(0.1)


def _restart_audited(hvfs: Hvfs, state: str, audit: Path, name: str, swap: Path | None = None) -> Path:
    """Run a ticking VM audited into ``audit``, SIGKILL its manager once the audit
    records it, optionally put a symlink to ``swap`` at ``audit`` (the original moved
    aside), let the next manager take the VM back, and wait for ticks recorded after the
    takeover; returns where the original file is now."""
    hvfs.ok("run", "-d", "--name", name, "--audit", str(audit), *TICKING)
    original = audit
    try:
        _wait("the first ticks", lambda: audit.exists() and _ticks(audit) >= 3)
        if swap is not None:
            original = audit.with_name(audit.name + ".moved")
            os.rename(audit, original)
            os.symlink(swap, audit)
            owner = os.stat(original)
            os.lchown(audit, owner.st_uid, owner.st_gid)  # the user's own link, in the user's directory
        os.kill(int(json.loads(Path(state, "manager.json").read_text())["pid"]), signal.SIGKILL)
        listing = hvfs.ok("ps")  # starts the next manager, which takes the VM back
        assert name in listing, listing
        _wait("a resume", lambda: any(e["operation"] == "resume" for e in _events(original)))
        resumed = next(i for i, e in enumerate(_events(original)) if e["operation"] == "resume")
        _wait("ticks after the takeover", lambda: _ticks(original, resumed) >= 3)
    finally:
        hvfs.run("stop", "-t", "1", name)
        hvfs.run("rm", name)
    return original


def _manager_log(state: str) -> str:
    """The manager's log (hvfs.logs), made at its first warning."""
    log = Path(state, "manager.log")
    return log.read_text(errors="replace") if log.exists() else ""


def test_a_restarted_manager_keeps_recording_to_the_same_file(hvfs: Hvfs, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    state = os.environ["HVFS_STATE_DIR"]
    audit.write_text("")  # the user's, before the run: the same file (inode) all along
    inode = os.stat(audit).st_ino

    original = _restart_audited(hvfs, state, audit, f"auditrestart{os.getpid()}")
    assert original == audit and os.stat(audit).st_ino == inode
    operations = [e["operation"] for e in _events(audit)]
    assert operations.count("resume") == 1, operations


def test_a_root_managers_takeover_writes_nothing_through_a_planted_link(hvfs: Hvfs, tmp_path: Path) -> None:
    protected = tmp_path / "root-only"
    protected.write_text("root's\n")
    os.chmod(protected, 0o600)
    audit = tmp_path / "audit.jsonl"
    state = os.environ["HVFS_STATE_DIR"]
    logged = len(_manager_log(state))

    original = _restart_audited(hvfs, state, audit, f"audittake{os.getpid()}", swap=protected)
    assert protected.read_text() == "root's\n"  # a manager that opened FILE again would append here
    assert os.readlink(audit) == str(protected)
    assert _ticks(original) >= 6  # before and after the takeover, in the file the user opened
    said = [line for line in _manager_log(state)[logged:].splitlines() if REPLACED in line]
    assert len(said) == 1 and str(audit) in said[0], said


@pytest.mark.rootless
def test_a_rootless_managers_takeover_writes_nothing_to_the_users_read_only_file(
    rootless: Hvfs, shared_tmp: Path
) -> None:
    account = pwd.getpwnam(ROOTLESS_USER)
    home = shared_tmp / "user"
    home.mkdir()
    os.chown(home, account.pw_uid, account.pw_gid)
    precious = home / "precious"  # the user's own, read-only: root in the manager's namespace could write it
    precious.write_text("kept\n")
    os.chown(precious, account.pw_uid, account.pw_gid)
    os.chmod(precious, 0o400)
    audit = home / "audit.jsonl"
    state = state_dir(ROOTLESS_USER)
    logged = len(_manager_log(state))

    original = _restart_audited(rootless, state, audit, f"audittake{os.getpid()}", swap=precious)
    assert precious.read_text() == "kept\n"
    assert _ticks(original) >= 6
    said = [line for line in _manager_log(state)[logged:].splitlines() if REPLACED in line]
    assert len(said) == 1 and str(audit) in said[0], said
