"""When the manager dies, its VMs wait for the next one, for a bounded time, and are
served again once it is there; a VM whose manager never comes back ends.

What waits is a trapped call: the VM's shim holds its listener, so the kernel keeps the
call pending. A request the dead manager had taken and not answered is served again by
the next one (its record is kept in the shim's table of requests in flight). Past
HVFS_VM_WAIT seconds without a manager, calls fail with EIO instead of hanging; past ten
times that, the shim ends the VM, which nothing would ever serve again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from tests.conftest import Hvfs

BLOCKED = """
import os, sys, time
print("ready", flush=True)
while not os.path.exists("/data/go"):
    time.sleep(0.01)
for name in ("blocked", "after"):
    try:
        open(f"/data/{name}", "w").write(name)
        print("opened", name, flush=True)
    except OSError as e:
        print("errno", name, e.errno, flush=True)
"""

WRITER = """
import os
i = 0
while True:
    with open("/data/next", "w") as f:
        f.write(f"{i}\\n" + "x" * 300_000 + "\\nend\\n")
    os.rename("/data/next", "/data/current")
    i += 1
    if i == 20:
        print("running", flush=True)
"""


def _manager_pid() -> int:
    return int(json.loads(Path(os.environ["HVFS_STATE_DIR"], "manager.json").read_text())["pid"])


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/environ").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def _wait_gone(marker: str, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_a_request_taken_by_a_dead_manager_is_served_by_the_next(hvfs: Hvfs, tmp_path: Path) -> None:
    """A fault rule holds the open in the manager; the manager is killed while it holds
    it; hvfs run starts the next manager, which serves the open the VM still waits on,
    and the audit log marks where the dead manager's events end."""
    audit = tmp_path / "audit.jsonl"
    command = [*hvfs.command, "run", "--fault", "op=open,path=/data/blocked,delay=2s", "-v", f"{tmp_path}:/data",
               "--audit", str(audit), "--", "python3", "-c", BLOCKED]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as client:
        assert client.stdout is not None
        assert client.stdout.readline() == "ready\n"
        first = _manager_pid()
        (tmp_path / "go").touch()
        time.sleep(0.7)  # the open is in the manager now, held by the fault's delay
        os.kill(first, signal.SIGKILL)
        out, err = client.communicate(timeout=60)
    assert client.returncode == 0, err
    assert out.splitlines() == ["opened blocked", "opened after"]
    assert (tmp_path / "blocked").read_text() == "blocked"
    assert _manager_pid() != first
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    resumes = [i for i, e in enumerate(events) if e["operation"] == "resume"]
    assert len(resumes) == 1, events
    after = [e for e in events[resumes[0] :] if e["operation"] == "open" and e["paths"][0].startswith("/data/")]
    assert [e["paths"][0] for e in after] == ["/data/blocked", "/data/after"]  # served by the next manager


PROJECT = """
name = "orphan"
[sources.data]
type = "host"
path = "data"
[vms.vm]
command = ["python3", "-c", '''{script}''']
environment = {{ MARKER = "{marker}" }}
mounts = [{{ source = "data", target = "/data" }}]
"""


def test_without_a_manager_calls_fail_and_the_vm_ends(hvfs: Hvfs, tmp_path: Path) -> None:
    """No manager comes back: after HVFS_VM_WAIT (here 1 s) the VM's calls fail with EIO;
    after ten times that, its shim ends it."""
    marker = uuid.uuid4().hex
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "hvfs.toml").write_text(PROJECT.format(script=BLOCKED, marker=marker))
    env = {**os.environ, "HVFS_STATE_DIR": str(tmp_path / "state"), "HVFS_VM_WAIT": "1"}
    project = ["-f", str(tmp_path / "hvfs.toml")]
    hvfs.ok(*project, "up", "-d", env=env)
    manager = int(json.loads((tmp_path / "state" / "manager.json").read_text())["pid"])
    os.kill(manager, signal.SIGKILL)
    began = time.monotonic()
    (data / "go").touch()
    assert _processes_with(marker)
    assert _wait_gone(marker, 30) == []
    assert time.monotonic() - began < 25
    assert not (data / "blocked").exists() and not (data / "after").exists()  # nothing reached the files
    listing = json.loads(hvfs.ok(*project, "ps", "--json", env=env))  # the next manager finds it ended
    assert [vm["state"] for vm in listing["vms"]] == ["exited"]
    hvfs.ok(*project, "down", env=env)
    hvfs.ok("manager", "stop", env=env)


def test_killing_the_manager_mid_work_leaves_no_torn_file(hvfs: Hvfs, tmp_path: Path) -> None:
    marker = f"HVFS_MARK={uuid.uuid4().hex}"
    command = [*hvfs.command, "run", "-e", marker, "-v", f"{tmp_path}:/data", "--", "python3", "-c", WRITER]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as client:
        assert client.stdout is not None
        assert client.stdout.readline() == "running\n"
        for _ in range(3):
            time.sleep(0.3)
            os.kill(_manager_pid(), signal.SIGKILL)
            current = (tmp_path / "current").read_text()
            number = int(current.split("\n", 1)[0])
            assert current == f"{number}\n" + "x" * 300_000 + "\nend\n"  # one whole version, never a torn one
        time.sleep(1.0)  # the next manager serves it again: it goes on
        later = int((tmp_path / "current").read_text().split("\n", 1)[0])
        assert later > number
        client.send_signal(signal.SIGTERM)
        client.communicate(timeout=30)
    assert _wait_gone(marker, 10) == []
    current = (tmp_path / "current").read_text()
    number = int(current.split("\n", 1)[0])
    assert current == f"{number}\n" + "x" * 300_000 + "\nend\n"
