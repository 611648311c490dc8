"""The manager's own user namespace (hvfs.sandbox.userns.enter_manager_namespaces): as
root, every id mapped by a helper outside it, a spawned shell (no fork of the manager's
~40 MB on every cold start), or a fork where there is no shell; a helper that fails is the
manager's start failing with its one line. Each case in a fresh, single-threaded process,
as the manager is when it enters them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_ENTER = """
import os, sys
from hvfs.sandbox import userns
from hvfs.sandbox.errors import SetupError
userns.SHELL = sys.argv[1]
forked = []
fork = os.fork
def counted():
    pid = fork()
    if pid:
        forked.append(pid)
    return pid
os.fork = counted
try:
    idmap = userns.enter_manager_namespaces()
except SetupError as e:
    print("error:", e)
    sys.exit(0)
waited = None  # a fork's exit is reaped by a thread of its own
if not forked:
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        waited = False
    except ChildProcessError:  # no child: the shell was waited for
        waited = True
print(idmap.count, repr(open("/proc/self/uid_map").read().split()), repr(open("/proc/self/gid_map").read().split()),
      os.getresuid(), len(forked), waited)
"""

_ALL = "['0', '0', '4294967295']"


def _enter(shell: str) -> str:
    result = subprocess.run([sys.executable, "-c", _ENTER, shell], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("maps every id only as root")


def test_a_spawned_shell_maps_every_id_and_nothing_is_forked() -> None:
    assert _enter("/bin/sh") == f"4294967295 {_ALL} {_ALL} (0, 0, 0) 0 True"  # the shell waited for


def test_without_a_shell_a_fork_maps_them() -> None:
    assert _enter("/nonexistent/sh") == f"4294967295 {_ALL} {_ALL} (0, 0, 0) 1 None"


def test_a_helper_that_writes_no_map_fails_the_start_with_its_line() -> None:
    out = _enter("/bin/false")
    assert out.startswith("error:") and "could not write the manager's id maps" in out, out
    assert "/bin/false could not write /proc/" in out, out  # what failed, not newuidmap's hint
