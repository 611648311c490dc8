"""A JuiceFS client ends cleanly with the last VM that mounted its source: at SIGTERM,
closing its session in the metadata engine, once the VM's mount namespace (which the
manager holds until the exit is told: tests/test_exit_teardown.py) has let the mount go.
Released while that namespace still held it, the client could not end, was killed after
its stop timeout (10 s a VM), and left its session behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hvfs.manager.sources.juicefs import juicefs_binary
from tests.conftest import Hvfs
from tests.test_fuse_client_spawns import fuse  # noqa: F401 (a fixture: root, the client, /dev/fuse)
from tests.test_juicefs import _gone


@pytest.fixture
def binary(fuse: None) -> str:  # noqa: F811
    return juicefs_binary()


def _sessions(binary: str, meta: str) -> list[object]:
    status = subprocess.run([binary, "status", meta], capture_output=True, text=True, check=True)
    sessions: list[object] = json.loads(status.stdout).get("Sessions") or []
    return sessions


@pytest.mark.parametrize("driver", ["seccomp", "ptrace"])
def test_the_client_ends_with_its_last_vm_and_closes_its_session(
    hvfs: Hvfs, tmp_path: Path, binary: str, driver: str
) -> None:
    meta = f"sqlite3://{tmp_path}/meta.db"
    mount = f"type=juicefs,target=/data,meta={meta},name=stop,format=true,bucket={tmp_path}/objects"
    for round in range(3):
        out = hvfs.ok("run", "--driver", driver, "--mount", mount, "--", "sh", "-c", f"echo {round} >> /data/log")
        assert out == ""
        assert _gone(meta, seconds=5), "the client outlived its last VM"
        assert _sessions(binary, meta) == [], "the client was killed: its session is left behind"
    assert (hvfs.ok("run", "--mount", mount, "--", "cat", "/data/log")).split() == ["0", "1", "2"]
