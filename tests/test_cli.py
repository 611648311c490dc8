"""The command line as users meet it: errors, exit codes, signals, stdio, terminals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Hvfs, state_dir
from tests.helpers import PROBES


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["-v", "/nonexistent-hvfs-source:/data", "--", "true"], "does not exist"),
        (["-v", "just-one-part", "--", "true"], "SRC:DST"),
        (["-v", "/tmp:relative", "--", "true"], "relative"),
        (["-v", "/tmp:/data:bogus", "--", "true"], "unknown option"),
        (["-v", "/tmp:/proc/x", "--", "true"], "managed by hvfs"),
        (["--tmpfs", "relative", "--", "true"], "relative"),
        (["--tmpfs", "/x:size=lots", "--", "true"], "not a size"),
        (["-w", "relative", "--", "true"], "absolute"),
        (["--name", "bad name", "--", "true"], "--name"),
        (["--image", "/nonexistent-hvfs-image", "--", "true"], "--image"),
        (["--persist", "/etc/hostname", "--", "true"], "not a directory"),
        (["--persist", "/tmp", "--", "true"], "--persist /tmp is writable by others"),
        (["--persist", "/proc/1", "--", "true"], "--persist /proc/1 is on proc, a kernel interface"),
        (["--backup", "/x/*", "--backup-store", "/proc/1", "--", "true"], "the backup store /proc/1 is on proc"),
        (["--scan", "--quarantine", "/etc/passwd", "--", "true"], "the quarantine /etc/passwd is not a directory"),
        ([], "no command"),
        (["--frobnicate", "--", "true"], "unrecognized"),
        # Files hvfs writes a report into: kernel interfaces, directories, nowhere.
        (["--stats", "/proc/1/mem", "--", "true"], "--stats /proc/1/mem is a kernel interface (proc)"),
        (["--stats", "/proc/self/mem", "--", "true"], "is a kernel interface (proc)"),
        (["--stats", "/sys/kernel/mm/transparent_hugepage/enabled", "--", "true"], "kernel interface (sysfs)"),
        (["--stats", "/etc", "--", "true"], "--stats /etc is a directory"),
        (["--stats", "/nonexistent-hvfs/stats.json", "--", "true"], "/nonexistent-hvfs is not a directory"),
        (["--audit", "/proc/1/mem", "--", "true"], "--audit /proc/1/mem is a kernel interface"),
        # An image must be a directory or a tarball.
        (["--image", "/etc/passwd", "--", "true"], "--image /etc/passwd is neither a directory nor a tar archive"),
        (["--image", "/dev/null", "--", "true"], "--image /dev/null is neither a directory nor a file"),
        # Memory this machine does not have, and sizes or modes that are none.
        (["--tmpfs", "/x:size=100t", "--", "true"], "is more than this machine's memory and swap"),
        (["--tmpfs", "/x:size=0", "--", "true"], "size 0 is too small"),
        (["--tmpfs", "/x:mode=77777", "--", "true"], "not a file mode"),
    ],
)
def test_bad_input_gets_one_line_and_125(hvfs: Hvfs, args: list[str], mentions: str) -> None:
    name = f"bad-{os.getpid()}-{time.monotonic_ns()}"
    result = hvfs.run("run", "--name", name, *args)
    assert result.returncode == 125
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hvfs: ")
    assert mentions in lines[0]
    assert "Traceback" not in result.stderr
    assert not list(Path("/run/hvfs").glob(f"{name}*"))  # no lock, no staging directory


def test_statistics_are_written_where_asked(hvfs: Hvfs, tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    hvfs.ok("run", "--stats", str(stats), "--", "true")
    assert json.loads(stats.read_text())["vm"]
    out = hvfs.ok("run", "--stats", "/dev/stdout", "--", "true")  # a stream is fine too
    assert json.loads(out)["vm"]


def test_a_bad_second_volume_changes_nothing(hvfs: Hvfs, tmp_path: Path) -> None:
    (tmp_path / "keep").write_text("x")
    result = hvfs.run("run", "-v", f"{tmp_path}:/data", "-v", "/nonexistent-hvfs:/y", "--", "rm", "/data/keep")
    assert result.returncode == 125
    assert (tmp_path / "keep").read_text() == "x"


def test_user_namespaces_disabled_is_reported(hvfs: Hvfs, tmp_path: Path) -> None:
    # The limit is per user namespace, so this disables them for hvfs only; a state
    # directory of its own makes hvfs start a manager there, which must say why it cannot.
    command = " ".join(["env", f"HVFS_STATE_DIR={tmp_path}/state", *hvfs.command, "run", "--", "true"])
    result = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            f"echo 0 > /proc/sys/user/max_user_namespaces && exec {command}",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1
    assert "user.max_user_namespaces" in result.stderr


def test_missing_seccomp_user_notification_is_reported(hvfs: Hvfs, tmp_path: Path) -> None:
    # A manager of its own, started where seccomp(2) fails, which must say so.
    result = subprocess.run(
        [sys.executable, str(PROBES / "without_seccomp.py"), "run", "--", "true"],
        capture_output=True,
        text=True,
        env={**os.environ, "HVFS_STATE_DIR": str(tmp_path / "state")},
    )
    subprocess.run(  # a manager that could not run its VM still ran: it is ours to end
        [*hvfs.command, "manager", "stop"], env={**os.environ, "HVFS_STATE_DIR": str(tmp_path / "state")},
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1
    assert "seccomp" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (["sh", "-c", "exit 3"], 3),
        (["sh", "-c", "kill -TERM $$"], 128 + signal.SIGTERM),
        (["sh", "-c", "kill -KILL $$"], 128 + signal.SIGKILL),
        (["no-such-command-hvfs"], 127),
        (["/etc/passwd"], 126),
        (["true"], 0),
    ],
)
def test_exit_status_is_the_commands(hvfs: Hvfs, command: list[str], code: int) -> None:
    assert hvfs.run("run", "--", *command).returncode == code


def test_stdio_passes_through(hvfs: Hvfs) -> None:
    result = hvfs.run("run", "--", "sh", "-c", "tr a-z A-Z; echo err >&2", input="hello\n")
    assert (result.stdout, result.stderr, result.returncode) == ("HELLO\n", "err\n", 0)
    binary = bytes(range(256)) * 64
    assert hvfs.run("run", "--", "cat", input=binary).stdout == binary


def test_signals_reach_the_command(hvfs: Hvfs) -> None:
    script = 'trap "echo got-term; exit 9" TERM; echo ready; while :; do sleep 0.05; done'
    with subprocess.Popen(
        [*hvfs.command, "run", "--", "sh", "-c", script], stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 9
        assert process.stdout.read() == "got-term\n"


def test_vm_identity_environment_and_isolation(hvfs: Hvfs, tmp_path: Path) -> None:
    script = (
        "hostname; echo $HOME $PATH $FROM_ARG $FROM_HOST; pwd; "
        "python3 -c 'import os, socket; print(os.getpid(), [n for _, n in socket.if_nameindex()])'; "
        "ls /proc | grep -c '^[0-9]'"
    )
    env = {**os.environ, "FROM_HOST": "host-value"}
    out = hvfs.ok(
        "run",
        "--name",
        "hvfs-identity",
        "-e",
        "FROM_ARG=arg-value",
        "-e",
        "FROM_HOST",
        "-w",
        "/made/here",
        "--",
        "sh",
        "-c",
        script,
        env=env,
    ).splitlines()
    assert out[0] == "hvfs-identity"
    assert out[1] == "/root /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin arg-value host-value"
    assert out[2] == "/made/here"
    _pid, interfaces = out[3].split(" ", 1)
    assert interfaces == "['lo']"
    assert int(out[4]) <= 4  # init, sh, and the ls and grep of this pipeline: no host processes


def test_loopback_is_up(hvfs: Hvfs) -> None:
    program = (
        "import socket\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "c = socket.create_connection(s.getsockname()); a, _ = s.accept()\n"
        "c.sendall(b'ping'); print(a.recv(4).decode())"
    )
    assert hvfs.ok("run", "--", "python3", "-c", program).strip() == "ping"


def test_names_are_unique_while_running(hvfs: Hvfs) -> None:
    command = [*hvfs.command, "run", "--name", "hvfs-twin", "--", "sh", "-c", "echo up; sleep 30"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as first:
        try:
            assert first.stdout is not None and first.stdout.readline() == "up\n"
            second = hvfs.run("run", "--name", "hvfs-twin", "--", "true")
            assert second.returncode == 125
            assert "already running" in second.stderr
        finally:
            first.kill()
    deadline = time.monotonic() + 10
    while hvfs.run("run", "--name", "hvfs-twin", "--", "true").returncode != 0:
        assert time.monotonic() < deadline, "the name stayed taken after its VM ended"
        time.sleep(0.2)


def test_interactive_shell_with_a_terminal(hvfs: Hvfs) -> None:
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        hvfs.command[0],
        [*hvfs.command[1:], "run", "-it", "--name", "hvfs-tty", "--", "sh"],
        encoding="utf-8",
        timeout=20,
        dimensions=(33, 101),
    )
    child.expect("# ")
    child.sendline("tty; echo TERM=$TERM; stty size; hostname")
    child.expect("# ")
    assert child.before.splitlines()[1:] == ["/dev/pts/0", "TERM=xterm", "33 101", "hvfs-tty"]
    child.sendline("sleep 60")
    time.sleep(0.5)
    child.sendcontrol("c")  # the terminal's ^C reaches the foreground job inside the VM
    child.expect("# ")
    child.setwinsize(40, 120)
    child.sendline("stty size")
    child.expect("# ")
    assert child.before.splitlines()[1:] == ["40 120"]
    child.sendline("exit 7")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 7


def test_pid_1_reaps_orphans(hvfs: Hvfs) -> None:
    script = (
        "for i in 1 2 3 4 5; do sh -c 'sleep 0.1 &'; done; sleep 1; "  # each sleep is orphaned, then exits
        "grep -h '^State' /proc/[0-9]*/status | grep -c zombie || true"
    )
    assert hvfs.ok("run", "--", "sh", "-c", script).strip() == "0"


def test_nothing_is_left_behind_by_failed_or_killed_vms(hvfs: Hvfs) -> None:
    """A VM that cannot start leaves nothing in its manager's state; one whose client is
    killed ends with it, and its state goes with it."""
    groups = Path(state_dir(None)) / "groups"
    assert hvfs.run("run", "--name", "hvfs-fails", "-w", "/etc/passwd", "--", "true").returncode == 125
    assert not (groups / "run-hvfs-fails").exists()
    command = [*hvfs.command, "run", "--name", "hvfs-killed", "--", "sh", "-c", "echo up; sleep 30"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as killed:
        assert killed.stdout is not None and killed.stdout.readline() == "up\n"
        assert (groups / "run-hvfs-killed").exists()
        killed.kill()
    deadline = time.monotonic() + 20
    while (groups / "run-hvfs-killed").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (groups / "run-hvfs-killed").exists()
    assert "hvfs-killed" not in hvfs.ok("manager", "status")
