"""A rootless manager keeps its caches in the user's own cache directory (hvfs.state): in
its user namespace it looks like root, and once named root's /var/cache/hvfs, which it
cannot write, so every VM it started compiled its filter again."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOTLESS_USER, Hvfs

pytestmark = pytest.mark.rootless


def _filter_cache(runner: Hvfs) -> dict[str, Any]:
    status = json.loads(runner.ok("manager", "status", "--json"))
    assert status["running"], status
    counts: dict[str, Any] = status["manager"]["filter_cache"]
    return counts


def _own_directory(path: Path) -> Path:
    account = pwd.getpwnam(ROOTLESS_USER)
    path.mkdir(mode=0o700)
    os.chown(path, account.pw_uid, account.pw_gid)
    return path


def test_a_rootless_managers_next_start_finds_its_filter_in_the_cache(rootless: Hvfs, shared_tmp: Path) -> None:
    # A home and a manager of this test's own: an empty cache, whatever other tests left.
    home = _own_directory(shared_tmp / "home")
    runner = rootless.with_env(HOME=str(home), HVFS_STATE_DIR=str(_own_directory(shared_tmp / "state")))
    filters = home / ".cache" / "hvfs" / "filters"
    try:
        assert runner.ok("run", "--", "echo", "first") == "first\n"
        first = _filter_cache(runner)
        assert first["directory"] == str(filters)
        assert first["hits"] == 0 and first["misses"] >= 1 and first["stored"] >= 1, first
        entries = list(filters.iterdir())
        assert entries and all(e.stat().st_uid == pwd.getpwnam(ROOTLESS_USER).pw_uid for e in entries)
        assert all(e.stat().st_mode & 0o022 == 0 for e in entries)

        runner.ok("manager", "stop")  # a cold manager: only the cache on disk can spare it the compile
        assert runner.ok("run", "--", "echo", "second") == "second\n"
        second = _filter_cache(runner)
        assert second["directory"] == str(filters)
        assert second["hits"] >= 1 and second["misses"] == 0 and second["stored"] == 0, second
        assert sorted(filters.iterdir()) == sorted(entries)
    finally:
        runner.run("manager", "stop")
