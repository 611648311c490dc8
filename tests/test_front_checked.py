"""``run_argv_checked`` (docs/control.md): the native front's run with hello's check in the
request. A real manager runs it for a client of its own code, and does nothing for one of
other code but answer ``fallback``; a client of its own code counts as connected."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvfs.hypervisor import control
from hvfs.hypervisor.version import code_id
from tests.conftest import FRONT, Hvfs, require


@pytest.fixture(scope="module")
def state(hvfs: Hvfs) -> Iterator[tuple[Hvfs, Path]]:
    path = Path(tempfile.mkdtemp(prefix="hvfs-checked-"))
    runner = hvfs.with_env(HVFS_STATE_DIR=str(path))
    runner.ok("run", "--", "true")  # a manager up
    yield runner, path
    runner.run("manager", "stop")


def _request(code: str, marker: Path) -> dict[str, object]:
    return {
        "hvfs": 1,
        "op": "run_argv_checked",
        "code": code,
        "argv": ["run", "--", "sh", "-c", f"echo ran > /dev/null; exit 7 # {marker}"],
        "cwd": "/",
        "views": [["/", os.stat("/").st_dev, os.stat("/").st_ino]],  # what this process sees there
        "env": {k: v for k, v in os.environ.items() if not k.startswith("HVFS_")},
    }


def _send(path: Path, message: dict[str, object]) -> list[dict[str, object]]:
    """Send ``message`` with pipes as its stdio; every reply until the exit or a last word."""
    pid = json.loads((path / "manager.json").read_text())["pid"]
    connection = control.connect(str(path / "manager.sock"), manager_pid=pid, timeout=30)
    pipes = [os.pipe() for _ in range(3)]
    try:
        connection.send(message, [pipes[0][0], pipes[1][1], pipes[2][1]])
        got: list[dict[str, object]] = []
        for reply, fds in control.replies(connection):
            for fd in fds:
                os.close(fd)
            got.append(reply)
            if {"fallback", "error", "exited"} & reply.keys():
                break
        return got
    finally:
        connection.close()
        for read, write in pipes:
            os.close(read)
            os.close(write)


def test_a_client_of_other_code_gets_a_fallback_and_nothing_runs(state: tuple[Hvfs, Path], tmp_path: Path) -> None:
    _, path = state
    groups = set(os.listdir(path / "groups"))
    got = _send(path, _request("0.0.1:/elsewhere/hvfs:1", tmp_path))
    assert got == [{"fallback": "the manager runs other code"}]
    made = set(os.listdir(path / "groups")) - groups  # the warm-up's may have gone meanwhile
    assert not [name for name in made if not name.startswith(".")], made  # ".free-": kept empty (vmdirs)


def test_a_client_of_its_own_code_runs_once_without_hello(state: tuple[Hvfs, Path], tmp_path: Path) -> None:
    _, path = state
    got = _send(path, _request(code_id(), tmp_path))
    assert [r for r in got if "started" in r] and got[-1]["exited"] and got[-1]["code"] == 7, got
    # The front reads an exit's code alone: no statistics or changes made on the way to it
    assert sorted(got[-1]) == ["code", "exited"], got[-1]


def test_the_warm_fronts_run_is_checked(state: tuple[Hvfs, Path], tmp_path: Path) -> None:
    """The front's own warm run (not the Python client's) works through it end to end."""
    _, path = state
    require(os.access(FRONT, os.X_OK), f"no native front at {FRONT}; run scripts/setup")
    trace = tmp_path / "trace"
    front = Hvfs([FRONT]).with_env(HVFS_STATE_DIR=str(path), HVFS_FRONT_TRACE=str(trace))
    result = front.run("run", "--", "sh", "-c", "exit 4")
    assert result.returncode == 4, result.stderr
    assert [line.split(":")[0] for line in trace.read_text().splitlines()] == ["native"]


def test_a_parse_leaves_no_thread_of_the_manager_in_the_clients_directory(
    state: tuple[Hvfs, Path], tmp_path: Path
) -> None:
    """A root manager parses on the connection's own thread (frontrun._here): in the
    client's working directory for the parse only, "/" again after, for every thread."""
    _, path = state
    require(os.access(FRONT, os.X_OK), f"no native front at {FRONT}; run scripts/setup")
    front = Hvfs([FRONT]).with_env(HVFS_STATE_DIR=str(path))
    for round_ in range(5):
        where = tmp_path / f"client-{round_}"
        where.mkdir()
        (where / "envs").write_text(f"KEY=round{round_}\n")  # read relative to the client's directory
        out = front.ok("run", "--env-file", "envs", "--", "sh", "-c", "echo $KEY", cwd=str(where))
        assert out == f"round{round_}\n"
    pid = json.loads((path / "manager.json").read_text())["pid"]
    cwds = {os.readlink(f"/proc/{pid}/task/{task}/cwd") for task in os.listdir(f"/proc/{pid}/task")}
    assert cwds == {"/"}, cwds
