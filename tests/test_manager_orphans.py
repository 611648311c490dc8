"""A manager killed between receiving a VM's request and noting it in its table of
requests in flight (hvfs.intercept.inflight) leaves a notification the kernel never
delivers again: the next manager finds it (hvfs.intercept.orphans) and serves it, once.

Notification ids are consecutive from a random start, so the orphan is found near the id
of a request noted before it: a VM's very first request has none, and is not covered.

The kill is made exact by HVFS_TEST_DIE_AFTER_RECV (hvfs.intercept.driver): the manager
exits right after receiving the named syscall, before its record.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from hvfs.intercept.driver import DIE_AFTER_RECV
from tests.conftest import Hvfs

PROGRAM = r"""
import os, time
with open("/data/before", "w") as f:  # a request noted first: its id is where the next manager looks
    f.write("before")
while not os.path.exists("/data/go"):
    time.sleep(0.05)
data = os.open("/data", os.O_RDONLY | os.O_DIRECTORY)
os.mkdir("made", dir_fd=data)  # mkdirat: the request the manager dies on; twice would be EEXIST
with open("/data/after", "w") as f:
    f.write("after")
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


def test_a_request_received_and_not_noted_is_served_by_the_next_manager(hvfs: Hvfs, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "program.py").write_text(PROGRAM)
    (tmp_path / "hvfs.toml").write_text(
        'name = "orphans"\n[sources.data]\ntype = "host"\npath = "data"\n'
        '[vms.one]\ncommand = ["python3", "-B", "/data/program.py"]\n'
        'mounts = [{ source = "data", target = "/data" }]\n'
    )
    project = ["-f", str(tmp_path / "hvfs.toml")]
    state = os.environ["HVFS_STATE_DIR"]
    hvfs.ok("manager", "restart", env={**os.environ, DIE_AFTER_RECV: "mkdirat"})
    dying = _manager_pid(state)
    try:
        hvfs.ok(*project, "up", "-d")
        (data / "go").touch()
        deadline = time.monotonic() + 20
        while _alive(dying):
            assert time.monotonic() < deadline, "the manager did not die on the VM's mkdirat"
            time.sleep(0.05)
        assert not (data / "made").exists()  # received, never served
        time.sleep(0.5)  # the VM's thread waits in the orphaned notification
        listing = json.loads(hvfs.ok(*project, "ps", "--json"))  # the next manager, without the variable
        assert listing["manager"]["pid"] != dying
        deadline = time.monotonic() + 20
        while (vm := json.loads(hvfs.ok(*project, "ps", "--json"))["vms"][0])["state"] != "exited":
            assert time.monotonic() < deadline, f"the VM's mkdirat hangs: {vm}"
            time.sleep(0.1)
        output = hvfs.ok(*project, "logs", "one")
        assert vm["code"] == 0, output
        assert output.splitlines() == ["done"], output
    finally:
        hvfs.run(*project, "down")
    assert (data / "made").is_dir()
    assert (data / "after").read_text() == "after"
    log = Path(state, "manager.log").read_text()
    assert "received by a manager killed before noting it" in log  # served as an orphan, not by chance
