"""A project's manager killed, or stopped: what ``hvfs down``, ``ps``, ``exec`` and ``stop``
do about it, and what must not happen (a command run for a client that gave up)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Hvfs, require

STATE = Path("/run/hvfs/projects")


class Project:
    def __init__(self, hvfs: Hvfs, directory: Path, name: str) -> None:
        self.hvfs, self.name = hvfs, name
        self.file = str(directory / "hvfs.toml")

    def run(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return self.hvfs.run("-f", self.file, *args, **kwargs)  # type: ignore[arg-type]

    def ok(self, *args: str, **kwargs: object) -> str:
        return self.hvfs.ok("-f", self.file, *args, **kwargs)

    @property
    def state(self) -> Path:
        return STATE / self.name

    def manager_pid(self) -> int:
        pid: int = json.loads(self.ok("ps", "--json"))["manager"]["pid"]
        return pid


def _one_line(result: subprocess.CompletedProcess[str], *mentions: str) -> None:
    assert result.returncode == 125, (result.returncode, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("hvfs: "), result.stderr
    for mention in mentions:
        assert mention in result.stderr, result.stderr


def _to_files(
    project: Project, args: tuple[str, ...], *, directory: Path, env: dict[str, str] | None = None,
    wrapper: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """hvfs with its output in files: ``exec`` hands its stdio to the manager, which holds
    them, unread, for as long as it is stopped (a pipe would not see its end until then)."""
    out, err = directory / "client.out", directory / "client.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        command = [*wrapper, *project.hvfs.command, "-f", project.file, *args]
        code = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env, timeout=60)
    return subprocess.CompletedProcess(command, code.returncode, out.read_text(), err.read_text())


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, f"pid {pid} is still there"
        time.sleep(0.02)


@pytest.fixture
def project(hvfs: Hvfs, tmp_path: Path) -> Iterator[Project]:
    require(os.geteuid() == 0, "the cgroups of a project's limits (cgroup v1 here) need root")
    name = f"mgr-{uuid.uuid4().hex[:8]}"
    directory = tmp_path / name
    (directory / "data").mkdir(parents=True)
    (directory / "hvfs.toml").write_text(
        f'name = "{name}"\n'
        '[sources.data]\ntype = "host"\npath = "data"\n'
        '[vms.limited]\ncommand = "sleep 600"\nmounts = [{ source = "data", target = "/data" }]\n'
        '[vms.limited.limits]\npids = 30\nmemory = "256m"\ncpus = 0.5\n'
        '[vms.free]\ncommand = "sleep 600"\n'
    )
    yield Project(hvfs, directory, name)
    subprocess.run([*hvfs.command, "-f", str(directory / "hvfs.toml"), "down", "-t", "1"], capture_output=True)


def test_down_cleans_up_after_a_killed_manager(project: Project) -> None:
    project.ok("up", "-d")
    record = json.loads((project.state / "cgroups.json").read_text())
    cgroups = [Path(p) for p in record["cgroups"]]
    require(bool(cgroups), "no cgroup can be made here: limits fall back to rlimits")
    assert all(c.is_dir() for c in cgroups)
    assert all(project.name in c.name or project.name in c.parent.name for c in cgroups)
    manager = project.manager_pid()
    os.kill(manager, signal.SIGKILL)
    _wait_gone(manager)
    assert project.state.is_dir() and all(c.is_dir() for c in cgroups)  # what a SIGKILL leaves behind

    for args in (("ps",), ("ps", "--json"), ("exec", "limited", "--", "true"), ("stop", "free")):
        _one_line(project.run(*args), f"manager of project {project.name} (pid {manager}) is gone", "hvfs down")

    down = project.run("down")
    assert down.returncode == 0, down.stderr
    assert down.stdout == (
        f"hvfs: the manager of project {project.name} (pid {manager}) was gone; removed what it left: "
        f"{len(cgroups)} cgroups, its state directory {project.state}\n"
    )
    assert not project.state.exists()
    assert not [c for c in cgroups if c.exists()]
    assert project.hvfs.run("run", "--", "true").returncode == 0  # and the host is fine
    again = project.run("down")
    assert again.returncode == 0 and again.stdout == ""  # nothing left to say
    assert project.ok("ps", "--json") and json.loads(project.ok("ps", "--json"))["vms"] == []


def test_up_after_a_killed_manager_starts_clean(project: Project) -> None:
    project.ok("up", "-d")
    manager = project.manager_pid()
    os.kill(manager, signal.SIGKILL)
    _wait_gone(manager)
    up = project.run("up", "-d")
    assert up.returncode == 0 and f"(pid {manager}) was gone; removed what it left" in up.stdout, up.stderr
    assert project.ok("exec", "limited", "--", "echo", "back").strip() == "back"
    project.ok("down")
    assert not project.state.exists()


def test_a_stopped_manager_gets_a_clear_timeout_and_runs_no_stale_command(project: Project) -> None:
    project.ok("up", "-d")
    manager = project.manager_pid()
    data = Path(project.file).parent / "data"
    os.kill(manager, signal.SIGSTOP)
    quick = {**os.environ, "HVFS_CONTROL_TIMEOUT": "2"}
    try:
        for args in (
            ("exec", "limited", "--", "sh", "-c", "echo ran > /data/after-timeout"),
            ("ps",),
            ("stop", "free"),
            ("down",),
        ):
            began = time.monotonic()
            result = _to_files(project, args, env=quick, directory=data.parent)
            _one_line(result, f"the manager of project {project.name} (pid {manager}) does not answer", "kill -CONT")
            assert time.monotonic() - began < 15, args
        # A client that gives up by itself, as a script's own timeout would.
        killed = _to_files(
            project, ("exec", "limited", "--", "sh", "-c", "echo ran > /data/after-kill"), directory=data.parent,
            wrapper=("timeout", "3"),
        )  # fmt: skip
        assert killed.returncode == 124, killed.stderr
    finally:
        os.kill(manager, signal.SIGCONT)
    # The manager now accepts what queued up while it was stopped; a new exec shows that it
    # serves again, and runs after every stale request was read.
    time.sleep(1)
    assert project.ok("exec", "limited", "--", "sh", "-c", "ls /data").split() == []
    assert sorted(p.name for p in data.iterdir()) == []
    dropped = (project.state / "manager.log").read_text().count("dropped: its client has gone")
    assert dropped >= 5, (project.state / "manager.log").read_text()  # 2 execs, ps, and the pings of stop and down
    assert {vm["name"]: vm["state"] for vm in json.loads(project.ok("ps", "--json"))["vms"]} == {
        "limited": "running",
        "free": "running",
    }
    project.ok("down")


def test_a_socket_of_this_user_that_is_not_the_manager_gets_nothing(project: Project) -> None:
    """manager.json names the manager's pid: a socket served by another process, even of
    the same user, is not the manager's."""
    import fcntl
    import socket

    project.state.mkdir(parents=True)
    impostor = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    impostor.bind(str(project.state / "control.sock"))
    impostor.listen(8)
    lock = os.open(project.state / "manager.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    (project.state / "manager.json").write_text(json.dumps({"pid": 1, "file": project.file, "started": 0}))
    try:
        for args in (("ps",), ("exec", "free", "--", "true")):
            _one_line(project.run(*args), f"served by pid {os.getpid()}, not by the manager (pid 1)")
        impostor.setblocking(False)
        connections = received = 0
        while True:
            try:
                connection, _ = impostor.accept()
            except BlockingIOError:
                break
            connections += 1
            connection.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                received += len(connection.recv(1 << 16))
            connection.close()
        assert connections == 2 and received == 0
    finally:
        impostor.close()
        os.close(lock)
        for name in ("control.sock", "manager.lock", "manager.json"):
            (project.state / name).unlink()
        project.state.rmdir()
