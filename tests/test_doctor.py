"""``hvfs doctor``: what this machine gives hvfs, one line per check, and the fix."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Hvfs, require

CHECKS = (
    "kernel",
    "user namespaces",
    "AppArmor user namespace restriction",
    "seccomp user notification",
    "seccomp ADDFD",
    "seccomp sync wake-up",
    "driver",
    "overlayfs in a user namespace",
    "cgroup v2 delegation",
    "subordinate ids",
    "FUSE",
)
LINE = re.compile(r"^(ok  |FAIL|warn) ([^:]+): (.+)$")
LIMIT = Path("/proc/sys/user/max_user_namespaces")


def _lines(output: str) -> dict[str, tuple[str, str]]:
    found = {}
    for line in output.splitlines()[1:-1]:
        match = LINE.match(line)
        assert match, f"not a check line: {line!r}"
        assert match.group(2) not in found, f"{match.group(2)} twice"
        found[match.group(2)] = (match.group(1).strip(), match.group(3))
    return found


def _cgroup_v1() -> bool:
    with open("/proc/self/mountinfo") as f:
        return not any(" /sys/fs/cgroup " in line and " - cgroup2 " in line for line in f)


@pytest.mark.parametrize("who", ["hvfs", pytest.param("rootless", marks=pytest.mark.rootless)])
def test_doctor_says_what_it_found_here(who: str, request: pytest.FixtureRequest) -> None:
    runner: Hvfs = request.getfixturevalue(who)
    result = runner.run("doctor")
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = _lines(result.stdout)
    assert tuple(lines) == CHECKS
    assert result.stdout.splitlines()[-1] == "hvfs can run VMs here"
    for name in (
        "kernel",
        "user namespaces",
        "seccomp user notification",
        "seccomp ADDFD",
        "overlayfs in a user namespace",
    ):
        assert lines[name][0] == "ok", (name, lines[name])
    assert lines["driver"] == ("ok", "seccomp: seccomp user notification with ADDFD is available")
    if _cgroup_v1():
        state, text = lines["cgroup v2 delegation"]
        assert state == "warn" and text.startswith("cgroup v1 here") and "; fix: " in text
    if who == "rootless":
        assert result.stdout.startswith("hvfs doctor, as hvfs-rootless (rootless):")
    else:
        assert lines["subordinate ids"] == ("ok", "not needed as root: every id maps to itself")


def _doctor_without_user_namespaces() -> subprocess.CompletedProcess[str]:
    """``hvfs doctor`` with ``user.max_user_namespaces = 0``: set for the machine (and set
    back), or, where this process may not (no CAP_SYS_RESOURCE, as in a container), in a
    user namespace of its own, whose limit that sysctl then is (it is one per namespace)."""
    doctor = [sys.executable, "-m", "hvfs", "doctor"]
    original = LIMIT.read_text()
    try:
        LIMIT.write_text("0")
    except PermissionError:
        require(subprocess.run(["unshare", "--user", "--map-root-user", "true"]).returncode == 0, "no user namespaces")
        script = 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"'
        return subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", script, "sh", *doctor],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    try:
        return subprocess.run(doctor, capture_output=True, text=True, timeout=60)
    finally:
        LIMIT.write_text(original)


def test_doctor_names_disabled_user_namespaces_and_the_fix() -> None:
    before = LIMIT.read_text()
    result = _doctor_without_user_namespaces()
    assert LIMIT.read_text() == before
    print(result.stdout)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = _lines(result.stdout)
    assert lines["user namespaces"] == (
        "FAIL", "disabled (user.max_user_namespaces = 0); fix: sudo sysctl -w user.max_user_namespaces=15000"
    )  # fmt: skip
    assert lines["overlayfs in a user namespace"] == (
        "FAIL", "not tried: no user namespace here; fix: first fix user namespaces"
    )  # fmt: skip
    assert lines["seccomp user notification"][0] == "ok"  # the other checks still ran
    assert (
        result.stdout.splitlines()[-1] == "hvfs cannot run VMs here: fix user namespaces, overlayfs in a user namespace"
    )
