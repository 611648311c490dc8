"""The native hot path (hvfs/_native): really taken where it is built, and CI fails where
it is not; HVFS_NATIVE=0 forces the Python path. Both paths are run by the conformance
suite, the adversarial tests and tests/test_driver.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hvfs import _native
from tests.conftest import Hvfs, require

BUILT = "the native hot path is not built (scripts/setup compiles hvfs/_native/hotpath.c; python3-dev is needed)"


@pytest.mark.parametrize("runner_fixture", ["hvfs", pytest.param("rootless", marks=pytest.mark.rootless)])
def test_the_native_path_serves_where_it_is_built(
    runner_fixture: str, shared_tmp: Path, request: pytest.FixtureRequest
) -> None:
    require(_native.hotpath is not None or _native.reason == f"{_native.ENVIRONMENT}=0", BUILT)
    require(_native.hotpath is not None, "this test session runs with HVFS_NATIVE=0")
    runner: Hvfs = request.getfixturevalue(runner_fixture)
    stats = shared_tmp / "stats.json"
    out = runner.ok("run", "--stats", str(stats), "--tmpfs", "/scratch", "--", "sh", "-c",
                    "echo served > /scratch/f && cat /scratch/f")  # fmt: skip
    assert out == "served\n"
    document = json.loads(stats.read_text())
    assert document["hot_path"] == "native"  # the rootless copy carries the built .so too


@pytest.mark.parametrize("runner_fixture", ["hvfs_python", pytest.param("rootless_python", marks=pytest.mark.rootless)])
def test_hvfs_native_0_forces_the_python_path(
    runner_fixture: str, shared_tmp: Path, request: pytest.FixtureRequest
) -> None:
    runner: Hvfs = request.getfixturevalue(runner_fixture)
    stats = shared_tmp / "stats.json"
    out = runner.ok("run", "--stats", str(stats), "--tmpfs", "/scratch", "--", "sh", "-c",
                    "echo served > /scratch/f && cat /scratch/f")  # fmt: skip
    assert out == "served\n"
    assert json.loads(stats.read_text())["hot_path"] == "python (HVFS_NATIVE=0)"


_FIRST_USE = """
import sys
from hvfs import _native
before = sorted(m for m in sys.modules if m.startswith("hvfs._native."))
got = (_native.tracer is not None, _native.audit_reason, _native.tracer_status(), _native.audit_status())
after = sorted(m for m in sys.modules if m.startswith("hvfs._native."))
print(" ".join(before), "|", " ".join(after), "|", got)
"""


@pytest.mark.parametrize("setting", ["1", "0"])
def test_the_tracer_and_the_audits_writer_load_on_first_use(setting: str) -> None:
    """A cold manager under the seccomp driver without an audit loads neither _tracer nor
    _audit (hvfs/_native/__init__.py); asked for, they are there, as they were at import."""
    require(_native.hotpath is not None or _native.reason == f"{_native.ENVIRONMENT}=0", BUILT)
    env = {**os.environ, _native.ENVIRONMENT: setting}
    result = subprocess.run([sys.executable, "-P", "-c", _FIRST_USE], env=env, capture_output=True, text=True,
                            timeout=60, cwd="/")  # fmt: skip
    assert result.returncode == 0, result.stderr
    before, after, got = (part.strip() for part in result.stdout.split("|"))
    if setting == "0":
        assert before == after == ""
        assert got == "(False, 'HVFS_NATIVE=0', 'python (HVFS_NATIVE=0)', 'python (HVFS_NATIVE=0)')"
    else:
        assert before.split() == ["hvfs._native._hotpath", "hvfs._native._record"]
        assert after.split() == [
            "hvfs._native._audit",
            "hvfs._native._hotpath",
            "hvfs._native._record",
            "hvfs._native._tracer",
        ]
        assert got == "(True, 'built', 'native', 'native')"
