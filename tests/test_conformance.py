"""The differential conformance suite: the same ~550 file operations, natively and in a
VM, in three privilege models and both modes; any difference fails unless the allow-list
(tests/conformance/allowlist.toml) explains it.

The native oracle always has the VM's own privilege model: root in a user namespace that
maps every id to itself (a root VM), uid 1000 (a VM user), or the unprivileged user as
root of a user namespace with its subordinate ids (a rootless VM). Both sides get a
read-only bind at /ro and a tmpfs at /other, for the EROFS and EXDEV cases.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    REPO,
    ROOTLESS_USER,
    SYSTEM_PYTHON,
    TRANSPORTS,
    Hvfs,
    chown_to,
    python_path,
    require,
    state_dir,
)

CONFORMANCE = REPO / "tests" / "conformance"
PRIVILEGES = ("root", "user", "rootless")
MODES = ("default", "strict")
MAX_ALLOWED = 10


def allow_list() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = tomllib.loads((CONFORMANCE / "allowlist.toml").read_text())["allowed"]
    return entries


def test_the_allow_list_is_short_and_explained() -> None:
    entries = allow_list()
    assert len(entries) <= MAX_ALLOWED
    for entry in entries:
        assert entry["case"] and entry["reason"].strip(), entry


@pytest.fixture(scope="module")
def place() -> Iterator[Path]:
    """A directory every test user can search, with the read-only source in it."""
    root = Path(tempfile.mkdtemp(prefix="hvfs-conformance-"))
    os.chmod(root, 0o755)
    (root / "ro" / "dir").mkdir(parents=True)
    (root / "ro" / "file").write_text("read-only\n")
    for mount_point in ("ro-mount", "other"):
        (root / mount_point).mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _workdir(place: Path, name: str, owner: str | None) -> Path:
    work = place / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o755)
    if owner is not None:
        chown_to(work, owner)
    return work


def _native(place: Path, privilege: str, probes: Path) -> dict[str, Any]:
    owner = {"root": None, "user": "1000", "rootless": ROOTLESS_USER}[privilege]
    work = _workdir(place, f"native-{privilege}", None)
    if owner == "1000":
        os.chown(work, 1000, 1000)
    elif owner:
        chown_to(work, owner)
    conformance = probes.parent / "conformance"
    env = {
        **os.environ,
        "PROBE": str(conformance / "probe"),
        "WORK": str(work),
        "RO_SOURCE": str(place / "ro"),
        "RO": str(place / "ro-mount"),
        "OTHER": str(place / "other"),
    }
    native = ["sh", str(conformance / "native.sh")]
    if privilege == "root":
        command = [*native, SYSTEM_PYTHON, str(probes / "in_userns.py")]
    elif privilege == "user":
        command = [*native, "setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups"]
    else:
        require(shutil.which("newuidmap") is not None, "newuidmap (package uidmap) is needed for the rootless oracle")
        passed = [f"{k}={env[k]}" for k in ("PROBE", "WORK", "RO_SOURCE", "RO", "OTHER")]
        command = ["runuser", "-u", ROOTLESS_USER, "--", "env", *passed, "unshare", "--user", "--map-auto",
                   "--map-root-user", *native]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    results: dict[str, Any] = json.loads(out.stdout)
    return results


def _in_vm(place: Path, privilege: str, mode: str, runner: Hvfs, transport: str) -> dict[str, Any]:
    owner = {"root": None, "user": None, "rootless": ROOTLESS_USER}[privilege]
    work = _workdir(place, f"vm-{privilege}-{mode}-{transport}", owner)
    if privilege == "user":
        os.chown(work, 1000, 1000)
    args = ["run"] + (["--strict"] if mode == "strict" else []) + (["-u", "1000:1000"] if privilege == "user" else [])
    args += ["-v", f"{work}:/data", "-v", f"{place / 'ro'}:/ro:ro", "--tmpfs", "/other"]
    args += ["-v", f"{runner.probes.parent / 'conformance'}:/probe:ro", "--"]
    args += ["python3", "/probe/probe", "/data", "--ro", "/ro", "--other", "/other"]
    results: dict[str, Any] = json.loads(runner.over(transport).ok(*args, timeout=300))
    return results


@pytest.fixture(scope="module")
def native_results() -> dict[str, dict[str, Any]]:
    """The oracle's results per privilege model, computed once for both modes."""
    return {}


# Each transport on the native hot path (when built), and the in-process one again on the
# Python path (HVFS_NATIVE=0, a manager of its own): both paths answer as Linux does; and
# the ptrace driver, chosen as where the kernel lacks seccomp user notification.
CARRIERS = [pytest.param((transport, "native"), id=transport) for transport in TRANSPORTS] + [
    pytest.param(("inprocess", "python"), id="inprocess-python"),
    pytest.param(("inprocess", "ptrace"), id="ptrace"),
]


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("privilege", PRIVILEGES)
def test_a_vm_answers_as_linux_does(
    privilege: str,
    mode: str,
    carrier: tuple[str, str],
    place: Path,
    native_results: dict[str, dict[str, Any]],
    request: pytest.FixtureRequest,
) -> None:
    """Over each transport (HVFS_TRANSPORT): the in-process call, and the socket protocol;
    on each path that serves the requests (the native hot path, the Python one); and by
    the ptrace driver."""
    transport, path = carrier
    runner: Hvfs = request.getfixturevalue("rootless" if privilege == "rootless" else "hvfs")
    if path == "python":
        runner = python_path(runner)
    elif path == "ptrace":
        runner = runner.with_env(HVFS_AS_IF_NO_USER_NOTIF="1")
    _compare(privilege, mode, runner, transport, place, native_results)


@pytest.mark.parametrize("privilege", PRIVILEGES)
def test_a_strict_vm_answers_as_linux_does_with_every_stat_served_in_python(
    privilege: str, place: Path, native_results: dict[str, dict[str, Any]], request: pytest.FixtureRequest
) -> None:
    """With the C loop's served stats off (HVFS_SERVED_STAT=0, a manager of its own), the
    Python path they fall back to answers as Linux does too (the other tests run them in C)."""
    runner: Hvfs = request.getfixturevalue("rootless" if privilege == "rootless" else "hvfs")
    runner = runner.with_env(HVFS_SERVED_STAT="0", HVFS_STATE_DIR=state_dir(runner.user, "no-served-stat"))
    _compare(privilege, "strict", runner, "inprocess", place, native_results)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("privilege", PRIVILEGES)
def test_a_vm_answers_as_linux_does_with_every_write_open_served_in_python(
    privilege: str, mode: str, place: Path, native_results: dict[str, dict[str, Any]], request: pytest.FixtureRequest
) -> None:
    """With the C loop's write-opens, creations, unlinks and fd metadata changes off
    (HVFS_SERVED_WRITE=0, a manager of its own), the Python path answers as Linux does too
    (the other tests run them in C)."""
    runner: Hvfs = request.getfixturevalue("rootless" if privilege == "rootless" else "hvfs")
    runner = runner.with_env(HVFS_SERVED_WRITE="0", HVFS_STATE_DIR=state_dir(runner.user, "no-served-write"))
    _compare(privilege, mode, runner, "inprocess", place, native_results)


def _compare(
    privilege: str,
    mode: str,
    runner: Hvfs,
    transport: str,
    place: Path,
    native_results: dict[str, dict[str, Any]],
) -> None:
    if privilege not in native_results:
        native_results[privilege] = _native(place, privilege, runner.probes)
    expected = native_results[privilege]
    got = _in_vm(place, privilege, mode, runner, transport)
    configuration = f"{privilege}-{mode}"
    allowed = {e["case"] for e in allow_list() if configuration in e.get("configurations", [configuration])}
    assert len(expected) >= 150
    differences = {
        case: {"native": expected[case], "vm": got.get(case)}
        for case in expected
        if expected[case] != got.get(case) and case not in allowed
    }
    assert not differences, json.dumps(differences, indent=1, sort_keys=True)
