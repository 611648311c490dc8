"""The GitHub Actions recipe: examples/github-workflow.yml and the composite action.yml.

This repository's CI is not GitHub's, so the workflow is checked here: its syntax and
shape, and then its steps, run in order by tests/workflow_runner.py as GitHub's runner
would run them (the same commands, as an unprivileged user with sudo), once for each
entry of its matrix: root (the suite under sudo) and rootless.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, ROOTLESS_USER, _create_user, require
from tests.workflow_runner import EXPRESSION

WORKFLOW = REPO / "examples" / "github-workflow.yml"
ACTION = REPO / "action.yml"


def _load(path: Path) -> dict[str, object]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return document


def test_the_workflow_and_the_action_are_well_formed() -> None:
    workflow = _load(WORKFLOW)
    assert workflow.get(True) == {"push": None, "pull_request": None}  # YAML 1.1 reads the key `on` as true
    job = workflow["jobs"]["test"]  # type: ignore[index]
    assert job["runs-on"] == "ubuntu-24.04"
    assert job["strategy"]["matrix"] == {"mode": ["root", "rootless"]}
    uses = [step["uses"] for step in job["steps"] if "uses" in step]
    assert uses == ["actions/checkout@v4", "./"]
    action = _load(ACTION)
    assert action["runs"]["using"] == "composite"  # type: ignore[index]
    steps = action["runs"]["steps"]  # type: ignore[index]
    assert all(step["shell"] == "bash" for step in steps if "run" in step), "composite run steps need a shell"
    inputs = set(action["inputs"])  # type: ignore[arg-type]
    given = set(next(s for s in job["steps"] if s.get("uses") == "./")["with"])
    assert given <= inputs
    text = ACTION.read_text()
    assert {m.group(1) for m in re.finditer(r"inputs\.([\w-]+)", text)} <= inputs
    assert "${{ github.action_path }}" in text  # installs HVFS from the action's own checkout
    for step in (*job["steps"], *steps):
        for expression in EXPRESSION.findall(str(step.get("run", "")) + str(step.get("with", ""))):
            assert re.fullmatch(r"[\w.\-' =!&|()]+", expression), expression


@pytest.mark.parametrize("mode", ["root", pytest.param("rootless", marks=pytest.mark.rootless)])
def test_the_workflow_runs_here(mode: str) -> None:
    """Its steps in order, as an unprivileged user with sudo (GitHub's runner): checkout,
    the action (system packages, pip install of this checkout, AppArmor, hvfs doctor), the
    example suite in VMs as root or rootless, and the manager stopped."""
    require(os.geteuid() == 0, "the runner gives its user sudo and a mount namespace: it needs root")
    require(shutil.which("sudo") is not None, "sudo is not installed (scripts/setup --test installs it)")
    require(shutil.which("unshare") is not None, "unshare (util-linux) is not installed")
    _create_user(ROOTLESS_USER)
    command = [sys.executable, "-m", "tests.workflow_runner", str(WORKFLOW), "test", f"mode={mode}",
               "--user", ROOTLESS_USER]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    steps = [line for line in result.stdout.splitlines() if line.startswith("--- ")]
    assert result.returncode == 0, "\n".join(result.stdout.splitlines()[-80:]) + result.stderr[-3000:]
    other = "rootless" if mode == "root" else "as root"
    assert steps == [
        "--- actions/checkout@v4",
        "--- Install HVFS",
        "--- System packages (libseccomp, uidmap, a C compiler for hvfs-init)",
        "--- exit 0",
        "--- HVFS, in a virtual environment",
        "--- exit 0",
        *(["--- Rootless VMs (AppArmor's user namespace restriction off)", "--- exit 0"] if mode == "rootless"
          else ["--- skipped: Rootless VMs (AppArmor's user namespace restriction off)"]),
        "--- hvfs doctor (what this runner gives HVFS; fails with the fix if VMs cannot run)",
        "--- exit 0",
        *(["--- Tests in VMs, as root", "--- exit 0", f"--- skipped: Tests in VMs, {other}"] if mode == "root"
          else [f"--- skipped: Tests in VMs, {other}", "--- Tests in VMs, rootless", "--- exit 0"]),
        "--- skipped: The manager's log, when something failed",
        "--- Stop the manager and its VMs",
        "--- exit 0",
    ]  # fmt: skip
    who = "root" if mode == "root" else f"{ROOTLESS_USER} (rootless)"
    assert f"hvfs doctor, as {who}:" in result.stdout
    assert re.search(r"^=+ 4 passed in [\d.]+s =+$", result.stdout, re.MULTILINE), result.stdout[-3000:]
    assert not [name for name in os.listdir("/etc/sudoers.d") if name.startswith("hvfs-runner-")]
