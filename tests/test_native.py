"""The native hot path (hvfs/_native): really taken where it is built, and CI fails where
it is not; HVFS_NATIVE=0 forces the Python path. Both paths are run by the conformance
suite, the adversarial tests and tests/test_driver.py."""

from __future__ import annotations

import json
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
