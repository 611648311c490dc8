"""The manager that serves a project killed, or stopped: the next command starts another,
which takes the project's VMs back; a stopped one gets clear errors, and must never run
a command for a client that gave up; a socket that is not the manager's gets nothing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FRONT, Hvfs, require


class Project:
    def __init__(self, hvfs: Hvfs, directory: Path, name: str, state: Path) -> None:
        self.hvfs, self.name, self.state = hvfs, name, state
        self.file = str(directory / "hvfs.toml")

    def run(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return self.hvfs.run("-f", self.file, *args, **kwargs)  # type: ignore[arg-type]

    def ok(self, *args: str, **kwargs: object) -> str:
        return self.hvfs.ok("-f", self.file, *args, **kwargs)

    @property
    def group(self) -> Path:
        """The project's directory in the manager's state (its name and a hash of its directory)."""
        (found,) = (self.state / "groups").glob(f"{self.name}-*")
        return found

    def manager_pid(self) -> int:
        pid: int = json.loads(self.ok("ps", "--json"))["manager"]["pid"]
        return pid

    def states(self) -> dict[str, str]:
        return {vm["name"]: vm["state"] for vm in json.loads(self.ok("ps", "--json"))["vms"]}


def _one_line(result: subprocess.CompletedProcess[str], *mentions: str) -> None:
    assert result.returncode == 125, (result.returncode, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("hvfs: "), result.stderr
    for mention in mentions:
        assert mention in result.stderr, result.stderr


def _to_files(
    project: Project, args: tuple[str, ...], *, directory: Path, wrapper: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """hvfs with its output in files: ``exec`` hands its stdio to the manager, which holds
    them, unread, for as long as it is stopped (a pipe would not see its end until then)."""
    out, err = directory / "client.out", directory / "client.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        command = [*wrapper, *project.hvfs.command, "-f", project.file, *args]
        environment = {**os.environ, "HVFS_STATE_DIR": str(project.state), **(env or {})}
        code = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=environment,
                              timeout=60)  # fmt: skip
    return subprocess.CompletedProcess(command, code.returncode, out.read_text(), err.read_text())


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, f"pid {pid} is still there"
        time.sleep(0.02)


@pytest.fixture
def project(hvfs: Hvfs, tmp_path: Path) -> Iterator[Project]:
    """A project with limits, served by a manager of its own (its own state directory)."""
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
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    own = hvfs.with_env(HVFS_STATE_DIR=str(state))
    yield Project(own, directory, name, state)
    with contextlib.suppress(subprocess.TimeoutExpired):
        for pid in _stopped(state):
            os.kill(pid, signal.SIGCONT)
        own.run("-f", str(directory / "hvfs.toml"), "down", "-t", "1", timeout=60)
        own.run("manager", "stop", timeout=60)


def _stopped(state: Path) -> list[int]:
    with contextlib.suppress(OSError, ValueError, KeyError):
        return [int(json.loads((state / "manager.json").read_text())["pid"])]
    return []


def test_a_killed_manager_is_replaced_and_takes_its_project_back(project: Project) -> None:
    project.ok("up", "-d")
    record = json.loads((project.group / "cgroups.json").read_text())
    cgroups = [Path(p) for p in record["cgroups"]]
    require(bool(cgroups), "no cgroup can be made here: limits fall back to rlimits")
    assert all(c.is_dir() for c in cgroups)
    before = project.manager_pid()
    os.kill(before, signal.SIGKILL)
    _wait_gone(before)
    assert all(c.is_dir() for c in cgroups)  # the VMs still run in them

    assert project.states() == {"limited": "running", "free": "running"}  # ps started the next manager
    after = project.manager_pid()
    assert after != before
    assert project.ok("exec", "limited", "--", "sh", "-c", "echo back > /data/f; cat /data/f").strip() == "back"
    assert project.run("stop", "free", "-t", "1").returncode == 0
    assert project.states() == {"limited": "running", "free": "exited"}
    assert project.run("down").returncode == 0
    assert list((project.state / "groups").iterdir()) == []
    assert not [c for c in cgroups if c.exists()]
    assert project.ok("ps", "--json") and json.loads(project.ok("ps", "--json"))["vms"] == []


def test_up_after_a_killed_manager_finds_the_project_up(project: Project) -> None:
    project.ok("up", "-d")
    before = project.manager_pid()
    os.kill(before, signal.SIGKILL)
    _wait_gone(before)
    up = project.run("up", "-d")
    assert up.returncode == 0 and "is already up" in up.stdout, (up.stdout, up.stderr)
    assert project.ok("exec", "limited", "--", "echo", "back").strip() == "back"
    project.ok("down")


def test_commands_without_a_manager_start_none_when_nothing_is_left(project: Project) -> None:
    assert project.run("ps").returncode == 0
    assert project.run("down").returncode == 0
    assert not (project.state / "manager.json").exists()  # no manager was started for them
    _one_line(project.run("exec", "free", "--", "true"), f"project {project.name} is not up")


def test_a_stopped_manager_gets_a_clear_timeout_and_runs_no_stale_command(project: Project) -> None:
    project.ok("up", "-d")
    manager = project.manager_pid()
    data = Path(project.file).parent / "data"
    os.kill(manager, signal.SIGSTOP)
    quick = {"HVFS_CONTROL_TIMEOUT": "2"}
    try:
        for args in (
            ("exec", "limited", "--", "sh", "-c", "echo ran > /data/after-timeout"),
            ("ps",),
            ("stop", "free"),
            ("down",),
        ):
            began = time.monotonic()
            result = _to_files(project, args, env=quick, directory=data.parent)
            _one_line(result, f"the manager (pid {manager}) does not answer", "kill -CONT")
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
    log = (project.state / "manager.log").read_text()
    assert log.count("dropped: its client has gone") >= 5, log  # 2 execs, ps, and the pings of stop and down
    assert project.states() == {"limited": "running", "free": "running"}
    project.ok("down")


def test_a_socket_of_this_user_that_is_not_the_manager_gets_nothing(project: Project) -> None:
    """manager.json names the manager's pid: a socket served by another process, even of
    the same user, is not the manager's."""
    import fcntl

    impostor = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    impostor.bind(str(project.state / "manager.sock"))
    impostor.listen(8)
    lock = os.open(project.state / "manager.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    (project.state / "manager.json").write_text(json.dumps({"pid": 1, "started": 0}))
    try:
        for args in (("ps",), ("exec", "free", "--", "true"), ("up", "-d")):
            _one_line(project.run(*args), f"served by pid {os.getpid()}, not by the manager (pid 1)")
        assert project.hvfs.run("run", "--", "true").returncode == 125
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
        assert connections >= 4 and received == 0
    finally:
        impostor.close()
        os.close(lock)
        for name in ("manager.sock", "manager.lock", "manager.json"):
            (project.state / name).unlink()


def test_a_file_system_mounted_after_the_manager_started_is_served_and_kept_in(hvfs: Hvfs, tmp_path: Path) -> None:
    """Without systemd, / is private: mounts made after the manager started do not reach
    its namespace. It gives way to a manager that sees them, and the VM gets the mounted
    file system, both to read and to write, never what lies under the mount point."""
    require(os.geteuid() == 0, "mounting a file system needs root")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    own = hvfs.with_env(HVFS_STATE_DIR=str(state))
    point = tmp_path / "point"
    point.mkdir()
    (point / "under").write_text("under the mount point\n")
    try:
        own.ok("run", "--", "true")
        first = json.loads((state / "manager.json").read_text())["pid"]
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "hvfs-test", str(point)], check=True)
        try:
            (point / "over").write_text("on the mounted file system\n")
            out = own.ok("run", "-v", f"{point}:/m", "--", "sh", "-c", "cat /m/over; ls /m; echo new > /m/written")
            assert out.splitlines() == ["on the mounted file system", "over"], out
            assert (point / "written").read_text() == "new\n"
            assert json.loads((state / "manager.json").read_text())["pid"] != first
        finally:
            subprocess.run(["umount", str(point)], check=True)
        assert sorted(os.listdir(point)) == ["under"]
    finally:
        own.run("manager", "stop", timeout=60)


def test_a_file_system_mounted_over_the_fronts_working_directory_is_seen(tmp_path: Path) -> None:
    """The native front sends what it sees at its working directory with its request (no
    ``stat`` round trip for a plain run): mounted there after the manager started, it is
    seen otherwise, and the run is the Python client's, as for a path the run names."""
    require(os.geteuid() == 0, "mounting a file system needs root")
    require(os.access(FRONT, os.X_OK), f"no native front at {FRONT}; run scripts/setup")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    trace = tmp_path / "trace"
    own = Hvfs([FRONT]).with_env(HVFS_STATE_DIR=str(state), HVFS_FRONT_TRACE=str(trace))
    point = tmp_path / "point"
    point.mkdir()
    try:
        assert own.ok("run", "--", "echo", "ran", cwd=str(point)) == "ran\n"
        assert trace.read_text().splitlines()[-1].startswith("native: ")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "hvfs-test", str(point)], check=True)
        try:
            assert own.ok("run", "--", "echo", "ran", cwd=str(point)) == "ran\n"
            assert trace.read_text().splitlines()[-1] == f"the Python client: this manager sees {point} otherwise"
        finally:
            subprocess.run(["umount", str(point)], check=True)
    finally:
        own.run("manager", "stop", timeout=60)
