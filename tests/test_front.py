"""The native front (native/client/, .venv/bin/hvfs): a warm `hvfs run` done by it, the
same outcome as the Python client's (tests/test_cli.py and test_run_flags.py are its
spec too: HVFS_TEST_FRONT=1 runs them through it), and everything else handed to the
Python client, having sent nothing to a manager it cannot vouch for."""

from __future__ import annotations

import json
import os
import pty
import pwd
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOTLESS_USER, Hvfs, staged_front

PYTHON = [sys.executable, "-m", "hvfs"]


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    return tmp_path / "trace"


def traced(trace: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "HVFS_FRONT_TRACE": str(trace), **extra}


def said(trace: Path) -> list[str]:
    """Which client did each run: "native", or why the Python client did; "cold, started"
    when the front started the manager first, "cold, met" when another client did meanwhile."""
    lines = trace.read_text().splitlines() if trace.exists() else []
    cold = {"cold: the front started the manager": "cold, started",
            "cold: another client started the manager meanwhile": "cold, met"}  # fmt: skip
    return [
        "native" if line.startswith("native: ") else cold.get(line, line.removeprefix("the Python client: "))
        for line in lines
    ]


def run(command: list[str], *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("input", "")
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, cwd="/", **kwargs)  # type: ignore[call-overload, no-any-return]


def test_a_warm_run_is_the_fronts_own(front: str, trace: Path) -> None:
    result = run([front], "run", "--", "sh", "-c", "tr a-z A-Z; echo err >&2; exit 3", input="hello\n",
                 env=traced(trace))  # fmt: skip
    assert (result.stdout, result.stderr, result.returncode) == ("HELLO\n", "err\n", 3)
    assert said(trace) == ["native"]
    binary = bytes(range(256)) * 256  # 64 KiB each way, through the front's relays
    out = subprocess.run([front, "run", "--", "cat"], input=binary, capture_output=True, timeout=60,
                         env=traced(trace))  # fmt: skip
    assert (out.stdout, out.returncode) == (binary, 0)
    assert said(trace) == ["native", "native"]


@pytest.mark.parametrize(
    ("command", "code"),
    [(["sh", "-c", "kill -TERM $$"], 143), (["no-such-command-hvfs"], 127), (["/etc/passwd"], 126), (["true"], 0)],
)
def test_exit_codes_as_the_python_client(front: str, trace: Path, command: list[str], code: int) -> None:
    native, python = run([front], "run", "--", *command, env=traced(trace)), run(PYTHON, "run", "--", *command)
    assert native.returncode == python.returncode == code
    assert native.stderr == python.stderr
    assert said(trace) == ["native"]


@pytest.mark.parametrize(
    "args",
    [
        ["--frobnicate", "--", "true"],
        ["-v", "just-one-part", "--", "true"],
        ["-v", "/nonexistent-hvfs-source:/data", "--", "true"],
        ["--name", "bad name", "--", "true"],
        ["-w", "relative", "--", "true"],
        ["--memory", "lots", "--", "true"],
        ["--env-file", "/nonexistent-hvfs.env", "--", "true"],
        [],
    ],
)
def test_mistakes_are_the_python_clients_line(front: str, trace: Path, args: list[str]) -> None:
    native, python = run([front], "run", *args, env=traced(trace)), run(PYTHON, "run", *args)
    assert (native.returncode, native.stdout, native.stderr) == (125, python.stdout, python.stderr)
    assert native.stderr.count("\n") == 1 and native.stderr.startswith("hvfs: ")
    assert "Traceback" not in native.stderr
    assert said(trace) == []  # the manager's line: neither a VM started nor the Python client ran


def test_relative_paths_and_env_are_the_fronts(front: str, trace: Path, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "file").write_text("from the front's cwd\n")
    (tmp_path / "vars.env").write_text("FROM_FILE=file-value\nONLY_HERE\n")
    env = traced(trace, ONLY_HERE="front-value", FROM_HOST="host-value")
    result = subprocess.run(
        [front, "run", "-v", "data:/data:ro", "--env-file", "vars.env", "-e", "FROM_HOST", "--",
         "sh", "-c", "cat /data/file; echo $FROM_FILE $ONLY_HERE $FROM_HOST"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env, input="",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "from the front's cwd\nfile-value front-value host-value\n"
    assert said(trace) == ["native"]


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["run", "-t", "--", "true"], "-t or -d"),
        (["run", "--stats", "/dev/null", "--", "true"], "the client binds ports or writes files"),
        (["run", "--help"], "argparse exits"),
        (["--version"], "not hvfs run"),
        (["manager", "status"], "not hvfs run"),
    ],
)
def test_the_rest_is_the_python_clients(front: str, trace: Path, args: list[str], why: str) -> None:
    native, python = run([front], *args, env=traced(trace)), run(PYTHON, *args)
    assert native.returncode == python.returncode == 0, native.stderr
    if args[0] != "manager":  # its pid and memory change
        assert native.stdout == python.stdout
    assert said(trace) == [why]


def test_a_terminal_is_the_python_clients(front: str, trace: Path) -> None:
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run([front, "run", "--", "echo", "via-python"], stdin=terminal, capture_output=True,
                                text=True, timeout=60, env=traced(trace))  # fmt: skip
    finally:
        os.close(terminal)
        os.close(controller)
    assert (result.stdout, result.returncode) == ("via-python\n", 0)
    assert said(trace) == ["a terminal, a directory or a closed fd as stdio"]


def test_a_cold_run_is_the_fronts_as_the_python_clients(front: str, trace: Path, tmp_path: Path) -> None:
    """No manager (and no state directory yet): the front makes the directory, starts the
    manager as the Python client would, and does the run; same outcome as a cold run of
    the Python client."""
    command = ["run", "--", "sh", "-c", "tr a-z A-Z; echo err >&2; exit 3"]
    outcomes = []
    for client, name in (([front], "front"), (PYTHON, "python")):
        state = tmp_path / name
        env = traced(trace, HVFS_STATE_DIR=str(state))
        try:
            result = run(client, *command, env=env, input="cold\n")
            outcomes.append((result.stdout, result.stderr, result.returncode))
            assert stat.S_IMODE(state.stat().st_mode) == 0o700
            assert json.loads((state / "manager.json").read_text())["pid"] > 0
        finally:
            run(PYTHON, "manager", "stop", env=env)
    assert outcomes[0] == outcomes[1] == ("COLD\n", "err\n", 3)
    assert said(trace) == ["cold, started", "native"]  # the Python client's own run leaves no trace


def test_cold_runs_at_once_start_one_manager(front: str, trace: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env = traced(trace, HVFS_STATE_DIR=str(state))
    try:
        runs = [subprocess.Popen([front, "run", "--", "echo", str(i)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 text=True, env=env, cwd="/") for i in range(4)]  # fmt: skip
        outputs = [(p.communicate(timeout=60)[0], p.returncode) for p in runs]
        assert outputs == [(f"{i}\n", 0) for i in range(4)]
        lines = said(trace)
        assert sorted(lines) == sorted(["cold, started"] + ["cold, met"] * 3 + ["native"] * 4), lines
        pid = json.loads((state / "manager.json").read_text())["pid"]
        assert run([front], "run", "--", "true", env=env).returncode == 0
        assert json.loads((state / "manager.json").read_text())["pid"] == pid
    finally:
        run(PYTHON, "manager", "stop", env=env)


def test_the_ptrace_driver_is_the_fronts(front: str, trace: Path, tmp_path: Path) -> None:
    """Named (--driver ptrace) or chosen automatically where user notification is missing
    (as if, here: the manager started with the same environment), the run is the front's,
    with the Python client's output, choice line and code; a mistake is its line."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env = {**os.environ, "HVFS_STATE_DIR": str(state), "HVFS_AS_IF_NO_USER_NOTIF": "1"}
    command = ["--", "sh", "-c", "cat; echo err >&2; exit 5"]
    runs = [
        ["--driver", "ptrace", *command],
        command,
        ["--driver", "auto", *command],
        ["--driver", "seccomp", "--", "true"],
    ]
    mistakes = [["-w", "relative", *command], ["--driver", "bogus", *command], ["-v", "/nonexistent-hvfs:/d", *command]]
    try:
        assert run(PYTHON, "run", "--", "true", env=env).returncode == 0  # its manager, with the variable
        for args in [*runs, *mistakes]:
            python = run(PYTHON, "run", *args, env=env, input="in\n")
            native = run([front], "run", *args, env={**env, "HVFS_FRONT_TRACE": str(trace)}, input="in\n")
            assert (native.returncode, native.stdout, native.stderr) == (python.returncode, python.stdout,
                                                                          python.stderr), args  # fmt: skip
            assert "Traceback" not in native.stderr
            assert native.returncode == (125 if args in mistakes else 0 if args == runs[3] else 5), native.stderr
        assert said(trace) == ["native"] * 4  # the mistakes were the manager's lines: no VM, no Python client
        first = run([front], "run", *command, env=env, input="in\n")
        chose = (
            "hvfs: using the ptrace driver: as if seccomp user notification were missing (HVFS_AS_IF_NO_USER_NOTIF=1)\n"
        )
        assert (first.stdout, first.stderr, first.returncode) == ("in\n", chose + "err\n", 5)
    finally:
        run(PYTHON, "manager", "stop", env=env)


@pytest.mark.parametrize("owner", ["mode 0755", "another user"])
def test_a_state_directory_not_private_is_refused(front: str, trace: Path, tmp_path: Path, owner: str) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    if owner == "mode 0755":
        state.chmod(0o755)
    else:
        os.chown(state, 65534, 65534)
    env = traced(trace, HVFS_STATE_DIR=str(state))
    try:
        native, python = run([front], "run", "--", "true", env=env), run(PYTHON, "run", "--", "true", env=env)
    finally:
        run(PYTHON, "manager", "stop", env=env)
    assert said(trace) == ["the state directory is missing or not private"]
    assert native.returncode == python.returncode
    if owner == "another user":
        assert native.returncode == 125 and "belongs to" in native.stderr


class FakeManager:
    """A server at a state directory's manager.sock that records what it is sent, as a
    manager of other code (``pid`` its own) or a process that is not the manager
    (manager.json naming another pid)."""

    def __init__(self, state: Path, *, version: str, named_pid: int, checks: bool = False) -> None:
        self.received: list[dict[str, object]] = []
        self.checks = checks  # knows run_argv_checked (a manager of newer code), or not (older)
        (state / "manager.json").write_text(json.dumps({"pid": named_pid}))
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.bind(str(state / "manager.sock"))
        self.sock.listen(4)
        self.version = version
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            with connection:
                while data := connection.recv(1 << 20):
                    message = json.loads(data)
                    self.received.append(message)
                    if message.get("op") == "hello":
                        connection.send(json.dumps({"version": self.version, "pid": os.getpid()}).encode())
                    elif message.get("op") == "shutdown":  # the Python client asks it to give way
                        # Listening no more before it answers, as a manager has stopped listening
                        # by the time its lock is free: the client, which finds no lock held
                        # here, connects again at once, and a connection queued on a socket
                        # closed after it was reset (ECONNRESET, seen in CI65).
                        self.sock.close()
                        connection.send(json.dumps({"ok": True, "pid": os.getpid()}).encode())
                        return
                    elif message.get("op") == "run_argv_checked" and self.checks:
                        assert message.get("code") != self.version
                        connection.send(json.dumps({"fallback": "the manager runs other code"}).encode())
                    else:  # as daemon.handle answers what it does not know
                        connection.send(json.dumps({"error": f"unknown operation {message.get('op')!r}"}).encode())

    def ops(self) -> list[object]:
        return [message.get("op") for message in self.received]


@pytest.mark.parametrize("checks", [False, True], ids=["older", "newer"])
def test_a_manager_of_other_code_is_the_python_clients(front: str, trace: Path, fake_state: Path, checks: bool) -> None:
    """Older: it does not know run_argv_checked (an error, nothing done); newer: it knows
    it, and its code differs (a fallback, nothing done). Either way the run is done once,
    by the Python client, which makes the manager give way."""
    fake = FakeManager(fake_state, version="0.0.1:/elsewhere/hvfs:1", named_pid=os.getpid(), checks=checks)
    result = run([front], "run", "--", "echo", "replaced", env=traced(trace, HVFS_STATE_DIR=str(fake_state)))
    assert (result.stdout, result.returncode) == ("replaced\n", 0), result.stderr
    assert said(trace) == ["the manager runs other code"]
    # The front: its run with its code id; the Python client: its hello, then it asked it to give way.
    assert fake.ops() == ["run_argv_checked", "hello", "shutdown"]
    assert isinstance(fake.received[0]["code"], str) and fake.received[0]["argv"] == ["run", "--", "echo", "replaced"]


def test_nothing_is_sent_to_a_socket_not_the_managers(front: str, trace: Path, fake_state: Path) -> None:
    impostor = subprocess.Popen(["sleep", "60"])  # the pid manager.json names: not the socket's server
    try:
        fake = FakeManager(fake_state, version="", named_pid=impostor.pid)
        result = run([front], "run", "--", "true", env=traced(trace, HVFS_STATE_DIR=str(fake_state)))
    finally:
        impostor.kill()
        impostor.wait()
    assert said(trace) == ["no manager of this user at its socket"]
    assert fake.received == []  # nor did the Python client, which refused it too
    assert result.returncode == 125 and "not by the manager" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_reach_the_command(front: str, trace: Path, signum: int) -> None:
    script = f'trap "echo got-{signum}; exit 9" {signum}; echo ready; while :; do sleep 0.05; done'
    with subprocess.Popen([front, "run", "--", "sh", "-c", script], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                          text=True, env=traced(trace), cwd="/") as process:  # fmt: skip
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        process.send_signal(signum)
        assert process.wait(timeout=20) == 9
        assert process.stdout.read() == f"got-{signum}\n"
    assert said(trace) == ["native"]


def test_the_front_uses_little_cpu(front: str, trace: Path) -> None:
    """What it is for: a warm run's client costs next to nothing (the Python client's
    interpreter start alone is ~11 ms of CPU; docs/performance.md)."""
    spent = []
    for _ in range(3):
        before = os.times()
        assert run([front], "run", "--", "true", env=traced(trace)).returncode == 0
        after = os.times()
        spent.append(after.children_user + after.children_system - before.children_user - before.children_system)
    assert said(trace) == ["native"] * 3
    assert min(spent) < 0.005, spent


def test_a_rootless_front_parses_as_the_user(rootless: Hvfs, staged: Path, shared_tmp: Path) -> None:
    """A front of the staged copy, for the unprivileged user: its run is native, and the
    manager's parse, which gave up its capabilities, reads no more than the user may (the
    user's own --env-file of mode 0000: the Python client's very line)."""
    trace = shared_tmp / "trace"
    traced = staged_front(rootless, staged, trace)
    assert rootless.run("run", "--", "true").returncode == 0  # its manager, warm
    secret = shared_tmp / "secret.env"
    secret.write_text("KEY=value\n")
    account = pwd.getpwnam(ROOTLESS_USER)
    os.chown(secret, account.pw_uid, account.pw_gid)  # both mapped: the manager's root could override
    secret.chmod(0)
    ok = traced.run("run", "-v", f"{shared_tmp}:/data", "--", "sh", "-c", "id -u; ls /data")
    assert (ok.returncode, ok.stdout.split()[:1]) == (0, ["0"]), ok.stderr
    secret_args = ("run", "--env-file", str(secret), "--", "true")
    native, python = traced.run(*secret_args), rootless.run(*secret_args)
    assert said(trace) == ["native"]  # the second one: neither the Python client nor a VM
    assert (native.returncode, native.stderr) == (125, python.stderr)
    assert "Permission denied" in native.stderr
    rootless.ok("manager", "stop")  # a cold run: the front starts the user's manager itself
    cold = traced.run("run", "--", "id", "-u")
    assert (cold.returncode, cold.stdout) == (0, "0\n"), cold.stderr
    assert said(trace)[1:] == ["cold, started", "native"]
    rootless.ok("manager", "stop")  # started with HVFS_FRONT_TRACE: not the next tests' manager


def test_the_vm_is_followed_to_the_next_manager(front: str, trace: Path, tmp_path: Path) -> None:
    """Its manager killed mid-run: the front has the next one started (it takes the VM
    back from its shim), attaches, and ends with the VM's own output and code."""
    state = tmp_path / "state"
    env = traced(trace, HVFS_STATE_DIR=str(state))
    try:
        assert run(PYTHON, "run", "--", "true", env=env).returncode == 0  # a manager of this state directory
        script = "echo ready; sleep 1.5; echo after; exit 4"
        with subprocess.Popen([front, "run", "--", "sh", "-c", script], stdout=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True, env=env, cwd="/") as process:  # fmt: skip
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
            deadline = time.monotonic() + 10
            while said(trace) != ["native"]:  # the front has "started" (the command may run before it is told)
                assert time.monotonic() < deadline
                time.sleep(0.01)
            killed = json.loads((state / "manager.json").read_text())["pid"]
            os.kill(killed, signal.SIGKILL)
            assert process.wait(timeout=30) == 4
            assert process.stdout.read() == "after\n"
        assert json.loads((state / "manager.json").read_text())["pid"] != killed
        assert said(trace) == ["native"]
    finally:
        run(PYTHON, "manager", "stop", env=env)


def test_parses_at_once_and_in_turn_each_in_its_own_directory(front: str, trace: Path, tmp_path: Path) -> None:
    """The manager's parse thread is kept from run to run (and a parse that comes while it
    is busy gets one of its own): each run's relative paths are its own front's directory,
    whichever thread parsed it, in turn and eight at once."""
    places = []
    for i in range(8):
        place = tmp_path / f"place{i}"
        (place / "data").mkdir(parents=True)
        (place / "data" / "mark").write_text(f"place{i}\n")
        (place / "vars.env").write_text(f"PLACE=place{i}\n")
        places.append(place)
    args = [
        front,
        "run",
        "-v",
        "data:/data:ro",
        "--env-file",
        "vars.env",
        "--",
        "sh",
        "-c",
        "cat /data/mark; echo $PLACE",
    ]

    def one(place: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=place, env=traced(trace), input="")

    for place in places[:3]:  # in turn: the kept thread each time
        result = one(place)
        assert (result.stdout, result.returncode) == (f"{place.name}\n{place.name}\n", 0), result.stderr
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    threads = [threading.Thread(target=lambda p=place: results.__setitem__(p.name, one(p))) for place in places]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {name: (r.stdout, r.returncode) for name, r in results.items()} == {
        place.name: (f"{place.name}\n{place.name}\n", 0) for place in places
    }
    assert said(trace) == ["native"] * 11


@pytest.mark.parametrize("client", ["front", "python"])
def test_a_manager_started_cold_keeps_no_inherited_fd(front: str, tmp_path: Path, client: str) -> None:
    """The manager outlives the run that started it: a pipe's end the caller inherited
    (a CI step's, a make jobserver's) is not kept open by it, so its reader sees the end."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env = {**os.environ, "HVFS_STATE_DIR": str(state)}
    command = [front] if client == "front" else PYTHON
    reader, writer = os.pipe()
    try:
        done = subprocess.run([*command, "run", "--", "true"], env=env, pass_fds=(writer,), capture_output=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        manager = int(json.loads((state / "manager.json").read_text())["pid"])
        assert Path(f"/proc/{manager}").exists()  # still serving
        os.close(writer)
        writer = -1
        ready, _, _ = select.select([reader], [], [], 10)
        assert ready and os.read(reader, 1) == b""  # the end: nobody holds the pipe's write end
    finally:
        for fd in (reader, writer):
            if fd >= 0:
                os.close(fd)
        run(PYTHON, "manager", "stop", env=env)
