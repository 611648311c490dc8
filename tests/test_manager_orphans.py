"""A manager killed between receiving a VM's request and noting it in its table of
requests in flight (hvfs.intercept.inflight) leaves a notification the kernel never
delivers again: the next manager finds it (hvfs.intercept.orphans) and serves it, once.

Notification ids are consecutive from a random start, so the orphan is found near the id
of a request noted before it: a VM's very first request has none, and is not covered.

The kill is made exact by HVFS_TEST_DIE_AFTER_RECV (hvfs.intercept.driver): the manager
exits right after receiving the named syscall, before its record.
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Any

from hvfs.intercept.driver import DIE_AFTER_RECV
from tests.conftest import Hvfs

PROGRAM = r"""
import os, time
with open("/data/before", "w") as f:  # a request noted first: its id is where the next manager looks
    f.write("before")
while not os.path.exists("/data/go"):
    time.sleep(0.05)
data = os.open("/data", os.O_RDONLY | os.O_DIRECTORY)
try:
    os.mkdir("made", dir_fd=data)  # mkdirat: the request the manager dies on; twice would be EEXIST
    print("made", flush=True)
except OSError as e:
    raise SystemExit(e.errno)  # its output may be lost with no manager; its exit status is not
print("done", flush=True)
"""


def _manager_pid(state: str) -> int:
    return int(json.loads(Path(state, "manager.json").read_text())["pid"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _project(tmp_path: Path) -> tuple[Path, list[str]]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "program.py").write_text(PROGRAM)
    (tmp_path / "hvfs.toml").write_text(
        'name = "orphans"\n[sources.data]\ntype = "host"\npath = "data"\n'
        '[vms.one]\ncommand = ["python3", "-B", "/data/program.py"]\n'
        'mounts = [{ source = "data", target = "/data" }]\n'
    )
    return data, ["-f", str(tmp_path / "hvfs.toml")]


def _die_on_mkdir(hvfs: Hvfs, project: list[str], data: Path, env: dict[str, str]) -> int:
    """Starts the VM under a manager that dies on its mkdirat; the manager's pid once it is dead."""
    hvfs.ok("manager", "restart", env={**env, DIE_AFTER_RECV: "mkdirat"})
    dying = _manager_pid(env["HVFS_STATE_DIR"])
    hvfs.ok(*project, "up", "-d", env=env)
    (data / "go").touch()
    deadline = time.monotonic() + 20
    while _alive(dying):
        assert time.monotonic() < deadline, "the manager did not die on the VM's mkdirat"
        time.sleep(0.05)
    assert not (data / "made").exists()  # received, never served
    return dying


def _exited(hvfs: Hvfs, project: list[str], env: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (vm := json.loads(hvfs.ok(*project, "ps", "--json", env=env))["vms"][0])["state"] != "exited":
        assert time.monotonic() < deadline, f"the VM's mkdirat hangs: {vm}"
        time.sleep(0.1)
    return vm


def test_a_request_received_and_not_noted_is_served_by_the_next_manager(hvfs: Hvfs, tmp_path: Path) -> None:
    data, project = _project(tmp_path)
    env = dict(os.environ)
    state = env["HVFS_STATE_DIR"]
    try:
        dying = _die_on_mkdir(hvfs, project, data, env)
        time.sleep(0.5)  # the VM's thread waits in the orphaned notification
        listing = json.loads(hvfs.ok(*project, "ps", "--json"))  # the next manager, without the variable
        assert listing["manager"]["pid"] != dying
        vm = _exited(hvfs, project, env)
        output = hvfs.ok(*project, "logs", "one")
        assert vm["code"] == 0, output
        assert output.splitlines() == ["made", "done"], output  # made once: no EEXIST, no EIO
    finally:
        hvfs.run(*project, "down")
    assert (data / "made").is_dir()
    log = Path(state, "manager.log").read_text()
    assert "received by a manager killed before noting it" in log  # served as an orphan, not by chance


def test_with_no_manager_back_the_shim_answers_the_orphan_eio(hvfs: Hvfs, tmp_path: Path) -> None:
    """No manager comes back within HVFS_VM_WAIT (here 1 s): the shim answers the orphan
    with EIO, as it answers the requests noted in the table, and the VM goes on."""
    data, project = _project(tmp_path)
    env = {**os.environ, "HVFS_STATE_DIR": str(tmp_path / "state"), "HVFS_VM_WAIT": "1"}
    began = time.monotonic()
    try:
        _die_on_mkdir(hvfs, project, data, env)
        deadline = time.monotonic() + 8  # the shim's bound is 1 s; it ends the VM at 10 s
        while not list((tmp_path / "state" / "vms").glob("*/exit")):  # written by the shim as pid 1 exits
            assert time.monotonic() < deadline, "the orphaned mkdirat hangs with no manager"
            time.sleep(0.1)
        assert time.monotonic() - began < 9
        vm = _exited(hvfs, project, env)  # a manager again, to hear how it ended
        assert vm["code"] == errno.EIO, vm  # the orphaned mkdirat failed with EIO
    finally:
        hvfs.run(*project, "down", env=env)
        hvfs.run("manager", "stop", env=env)
    assert not (data / "made").exists()  # answered, never made
