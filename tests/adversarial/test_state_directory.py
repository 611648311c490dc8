"""Another user of the host takes over a victim's state directory.

hvfs keeps its manager's lock, control socket, VM records and staging directories in a
state directory: /run/hvfs as root, else $XDG_RUNTIME_DIR/hvfs, else /tmp/hvfs-UID. In
/tmp, anyone may make that name first. An attacker who does (a directory of theirs, a
symbolic link to one, or a directory of the victim's that they may write in) plants a
manager.sock there, with a held manager.lock and a manager.json, so that the victim's
``hvfs exec`` or ``hvfs run`` takes it for the manager and sends it the victim's stdio fds.

Each test runs the victim's hvfs commands over and over for the attack's time budget,
and checks on the host side that every one refused with one line naming the directory
and exit 125, and that the attacker's listener received 0 bytes and 0 fds. The victim
and the attacker are users of their own (hvfs-victim, hvfs-attacker), so that no other
test's state directory is touched.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.adversarial.conftest import SECONDS
from tests.conftest import Hvfs, _create_user, as_user, require

pytestmark = pytest.mark.rootless

VICTIM, ATTACKER = "hvfs-victim", "hvfs-attacker"
PROJECT = "target"
# The attacker's listener: accepts every connection on the socket it is given and counts
# what arrives (bytes, fds), writing its counts after each event.
LISTENER = r"""
import array, fcntl, json, os, select, socket, sys
path, lock, report = sys.argv[1:4]
listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
listener.bind(path)
os.chmod(path, 0o777)
listener.listen(128)
if lock != "-":
    held = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(held, fcntl.LOCK_EX)
counts = {"connections": 0, "bytes": 0, "fds": 0, "pid": os.getpid()}
def save():
    with open(report + ".tmp", "w") as f:
        json.dump(counts, f)
    os.replace(report + ".tmp", report)
save()
clients = []
while True:
    ready, _, _ = select.select([listener, *clients], [], [], 1.0)
    for sock in ready:
        if sock is listener:
            client, _ = listener.accept()
            clients.append(client)
            counts["connections"] += 1
        else:
            fds = array.array("i")
            try:
                data, ancillary, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(16 * fds.itemsize))
            except OSError:
                data, ancillary = b"", []
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            counts["bytes"] += len(data)
            counts["fds"] += len(fds)
            if not data:
                clients.remove(sock)
                sock.close()
    save()
"""


@dataclass
class Scene:
    victim: Hvfs
    victim_uid: int
    attacker_uid: int
    project_file: str
    work: Path  # world-readable, for the listener's code and reports

    @property
    def state(self) -> Path:
        return Path(f"/tmp/hvfs-{self.victim_uid}")

    def as_attacker(self, *command: str) -> None:
        subprocess.run(["runuser", "-u", ATTACKER, "--", *command], check=True, capture_output=True)

    def listen(self, socket_path: Path, lock: Path | None) -> tuple[subprocess.Popen[bytes], Path]:
        """The attacker's listener at ``socket_path`` (holding ``lock``), and its report."""
        report = self.work / "reports" / f"{time.monotonic_ns()}.json"
        code = self.work / "listener.py"
        process = subprocess.Popen(
            ["/usr/bin/python3", str(code), str(socket_path), str(lock or "-"), str(report)],
            user=self.attacker_uid,
            group=pwd.getpwuid(self.attacker_uid).pw_gid,
            extra_groups=[],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while not report.exists():
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the listener did not start"
            time.sleep(0.02)
        return process, report

    def victim_commands(self) -> Iterator[tuple[str, ...]]:
        f = ("-f", self.project_file)
        while True:
            yield (*f, "exec", "a", "--", "true")
            yield (*f, "ps")
            yield (*f, "stop", "a")
            yield (*f, "down")
            yield (*f, "up", "-d")
            yield ("run", "--", "true")


def _counts(report: Path) -> dict[str, int]:
    counts: dict[str, int] = json.loads(report.read_text())
    return counts


@pytest.fixture
def scene(staged: Path) -> Iterator[Scene]:
    require(os.geteuid() == 0, "creating the victim and the attacker needs root")
    victim = _create_user(VICTIM)
    attacker = _create_user(ATTACKER)
    work = Path(tempfile.mkdtemp(prefix="hvfs-takeover-"))
    os.chmod(work, 0o755)
    (work / "listener.py").write_text(LISTENER)
    os.chmod(work / "listener.py", 0o644)
    (work / "reports").mkdir()
    os.chown(work / "reports", attacker.pw_uid, -1)
    project = work / "project"
    project.mkdir(mode=0o755)
    (project / "hvfs.toml").write_text(f'name = "{PROJECT}"\n[vms.a]\ncommand = "sleep 60"\n')
    os.chmod(project / "hvfs.toml", 0o644)
    default_state = as_user(VICTIM, staged).with_env(HVFS_STATE_DIR="")  # the victim's default state directory
    scene = Scene(default_state, victim.pw_uid, attacker.pw_uid, str(project / "hvfs.toml"), work)
    _remove(scene.state)
    yield scene
    scene.victim.run("-f", scene.project_file, "down")
    scene.victim.run("manager", "stop")
    _remove(scene.state)
    shutil.rmtree(work, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_symlink():
        path.unlink()
    shutil.rmtree(path, ignore_errors=True)


def _plant(scene: Scene, variant: str) -> Path:
    """Makes the victim's state directory the attacker's way; returns where the attacker
    can write the project's directory."""
    state = scene.state
    if variant == "attacker-directory":
        scene.as_attacker("mkdir", "-m", "0777", str(state))
        scene.as_attacker("chmod", "0777", str(state))  # past the attacker's umask
        return state
    if variant == "symlink":
        elsewhere = scene.work / "elsewhere"
        elsewhere.mkdir()
        os.chown(elsewhere, scene.attacker_uid, -1)
        os.chmod(elsewhere, 0o700)
        scene.as_attacker("ln", "-s", str(elsewhere), str(state))
        return elsewhere
    if variant == "group-writable":
        attacker_group = pwd.getpwuid(scene.attacker_uid).pw_gid
        state.mkdir()
        os.chown(state, scene.victim_uid, attacker_group)
        os.chmod(state, 0o770)
        return state
    raise AssertionError(variant)


@pytest.mark.parametrize("variant", ["attacker-directory", "symlink", "group-writable"])
def test_a_planted_state_directory_is_refused_and_its_socket_gets_nothing(scene: Scene, variant: str) -> None:
    planted = _plant(scene, variant)
    (planted / "manager.json").write_text(json.dumps({"pid": 1, "started": 0}))
    os.chown(planted / "manager.json", scene.attacker_uid, -1)
    listener, report = scene.listen(planted / "manager.sock", planted / "manager.lock")
    try:
        tries, refused, seen = 0, 0, set()
        deadline = time.monotonic() + SECONDS
        for command in scene.victim_commands():
            if time.monotonic() > deadline and tries >= 12:
                break
            try:
                result = scene.victim.run(*command, timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"hvfs {' '.join(command)} hung on the planted socket, which got {_counts(report)}")
            tries += 1
            one_line = result.stderr.count("\n") == 1 and result.stderr.startswith("hvfs: the state directory")
            if result.returncode == 125 and one_line and str(scene.state) in result.stderr:
                refused += 1
                seen.add(command[2] if command[0] == "-f" else command[0])
            else:
                pytest.fail(f"hvfs {' '.join(command)} exited {result.returncode}:\n{result.stderr}")
        counts = _counts(report)
    finally:
        listener.kill()
        listener.communicate()
    assert refused == tries >= 12 and seen == {"exec", "ps", "stop", "down", "up", "run"}
    assert counts["connections"] == counts["bytes"] == counts["fds"] == 0, counts
    print(f"{variant}: {tries} commands refused, listener got {counts}")


def test_a_socket_served_by_another_user_gets_nothing(scene: Scene) -> None:
    """The victim's own, private state directory, in which root (for the test) puts a
    socket the attacker listens on: the kernel's peer credentials unmask it."""
    scene.state.mkdir(mode=0o700)
    os.chown(scene.state, scene.victim_uid, -1)
    setup = scene.victim.run("-f", scene.project_file, "ps")
    assert setup.returncode == 0, setup.stderr  # a directory hvfs takes as the victim's own
    assert not (scene.state / "manager.json").exists()  # and no manager was started for a ps
    attacker_dir = scene.work / "attacker"
    attacker_dir.mkdir()
    os.chown(attacker_dir, scene.attacker_uid, -1)
    listener, report = scene.listen(attacker_dir / "manager.sock", None)
    try:
        os.rename(attacker_dir / "manager.sock", scene.state / "manager.sock")
        lock = os.open(scene.state / "manager.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)  # "a manager is up"
        info = {"pid": _counts(report)["pid"], "started": 0}
        (scene.state / "manager.json").write_text(json.dumps(info))
        for path in (scene.state / "manager.lock", scene.state / "manager.json"):
            os.chown(path, scene.victim_uid, -1)
        tries = 0
        deadline = time.monotonic() + SECONDS
        for command in scene.victim_commands():
            if time.monotonic() > deadline and tries >= 8:
                break
            try:
                result = scene.victim.run(*command, timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"hvfs {' '.join(command)} hung on the planted socket, which got {_counts(report)}")
            tries += 1
            assert result.returncode == 125, f"hvfs {' '.join(command)}: {result.returncode}\n{result.stderr}"
            assert result.stderr.count("\n") == 1 and f"uid {scene.attacker_uid}" in result.stderr, result.stderr
        os.close(lock)
        counts = _counts(report)
    finally:
        listener.kill()
        listener.communicate()
    assert counts["connections"] >= tries  # hvfs did reach the socket: the check, not luck, held
    assert counts["bytes"] == counts["fds"] == 0, counts
    print(f"peer check: {tries} commands refused, listener got {counts}")


def _in_private_run(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` as root in a mount namespace of its own with an empty tmpfs on /run, so
    that the real /run/hvfs of other tests is left alone."""
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-euc", f"mount -t tmpfs tmpfs /run\n{script}"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_roots_state_directory_is_roots_and_private(hvfs: Hvfs) -> None:
    require(os.geteuid() == 0, "hvfs as root")
    require(shutil.which("unshare") is not None, "unshare (util-linux) is needed")
    attacker = _create_user(ATTACKER)
    default = hvfs.with_env(HVFS_STATE_DIR="")  # root's own state directory, /run/hvfs
    command = " ".join([*default.command, "run", "--", "true"])
    stop = " ".join([*default.command, "manager", "stop"])  # the manager started in the private /run
    made = _in_private_run(f"{command}\nstat -c '%u %a' /run/hvfs\n{stop}")
    assert made.returncode == 0, made.stderr
    assert made.stdout.split() == ["0", "700"]
    loose = _in_private_run(f"mkdir -m 0755 /run/hvfs\n{command}\nstat -c '%u %a' /run/hvfs\n{stop}")
    assert loose.returncode == 0 and loose.stdout.split() == ["0", "700"], loose.stderr  # tightened
    for plant in (
        f"mkdir -m 0777 /run/hvfs; chown {attacker.pw_uid} /run/hvfs",
        "mkdir -m 0777 /run/hvfs; chmod 0777 /run/hvfs",
        f"mkdir -m 0700 /run/elsewhere; chown {attacker.pw_uid} /run/elsewhere; ln -s /run/elsewhere /run/hvfs; "
        f"chown -h {attacker.pw_uid} /run/hvfs",
        "chmod 0777 /run; mkdir -m 0700 /run/hvfs",
    ):
        refused = _in_private_run(f"{plant}\n{command}")
        assert refused.returncode == 125, (plant, refused.stderr)
        assert refused.stderr.count("\n") == 1 and "/run/hvfs" in refused.stderr, (plant, refused.stderr)
