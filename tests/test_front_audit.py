"""An audited run (``hvfs run --audit FILE``) done by the native front: asked by the
manager once the run is parsed, the front opens FILE as the user who ran it and hands over
the fd (hvfs.hypervisor.frontrun). The file, its owner, its mode and its records are the
Python client's; what the user may not write is refused with the Python client's line
(exit 125) and left as it was, whatever the manager itself could open; a manager of other
code leaves the run to the Python client."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOTLESS_USER, Hvfs, staged_front
from tests.test_front import FakeManager, said, traced

PYTHON = [sys.executable, "-m", "hvfs"]
COMMAND = ["--", "sh", "-c", "cat /etc/hostname; echo hi > /tmp/x; ls /tmp >/dev/null"]
VARYING = ("time", "vm", "pid", "duration_us")  # a run's own: its VM's name, pids, times


def run(command: list[str], *args: str, cwd: str = "/", **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, cwd=cwd, input="", **kwargs)  # type: ignore[call-overload, no-any-return]


def records(path: Path) -> list[dict[str, object]]:
    """The audit file's events, without what differs from one run to the next."""
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert events, f"{path} has no events"
    return [{key: value for key, value in event.items() if key not in VARYING} for event in events]


def audited(file: str) -> list[list[str]]:
    return [["--audit", file], [f"--audit={file}"], ["--strict", "--audit", file], ["--audit", file, "--audit-reads"]]


@pytest.mark.parametrize("form", range(4), ids=["audit", "audit=", "strict", "audit-reads"])
def test_an_audited_run_is_the_fronts_with_the_python_clients_file(
    front: str, tmp_path: Path, form: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = tmp_path / "trace"
    native_file, python_file = tmp_path / "native.log", tmp_path / "python.log"
    native = run([front], "run", *audited(str(native_file))[form], *COMMAND, env=traced(trace))
    python = run(PYTHON, "run", *audited(str(python_file))[form], *COMMAND)
    assert (native.returncode, native.stdout, native.stderr) == (0, python.stdout, python.stderr)
    assert said(trace) == ["native"]
    assert records(native_file) == records(python_file)
    for made in (native_file, python_file):
        st = made.stat()
        assert (st.st_uid, st.st_gid, oct(st.st_mode)) == (os.getuid(), os.getgid(), oct(0o100600))


def test_a_relative_audit_file_is_the_fronts_directorys(front: str, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    (tmp_path / "native").mkdir()
    (tmp_path / "python").mkdir()
    native = run([front], "run", "--audit", "a.log", *COMMAND, cwd=str(tmp_path / "native"), env=traced(trace))
    python = run(PYTHON, "run", "--audit", "a.log", *COMMAND, cwd=str(tmp_path / "python"))
    assert (native.returncode, python.returncode) == (0, 0), native.stderr + python.stderr
    assert said(trace) == ["native"]
    assert records(tmp_path / "native" / "a.log") == records(tmp_path / "python" / "a.log")


def test_an_audit_file_is_appended_to(front: str, tmp_path: Path) -> None:
    file = tmp_path / "a.log"
    file.write_text("")
    file.chmod(0o640)  # kept: an existing file is appended to, its mode unchanged
    assert run([front], "run", "--audit", str(file), *COMMAND).returncode == 0
    first = len(records(file))
    assert run([front], "run", "--audit", str(file), *COMMAND).returncode == 0
    assert len(records(file)) == 2 * first
    assert oct(file.stat().st_mode) == oct(0o100640)


@pytest.mark.parametrize("where", ["no directory", "a directory", "a kernel interface"])
def test_a_bad_audit_path_is_the_python_clients_line(front: str, tmp_path: Path, where: str) -> None:
    path = {"no directory": str(tmp_path / "none" / "a.log"), "a directory": str(tmp_path),
            "a kernel interface": "/proc/self/status"}[where]  # fmt: skip
    trace = tmp_path / "trace"
    native = run([front], "run", "--audit", path, "--", "true", env=traced(trace))
    python = run(PYTHON, "run", "--audit", path, "--", "true")
    assert (native.returncode, native.stderr) == (125, python.stderr)
    assert python.stderr.count("\n") == 1 and path in python.stderr
    assert said(trace) == []  # the front's own line: no Python client
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("checks", [False, True], ids=["older", "newer"])
def test_a_manager_of_other_code_leaves_an_audited_run_to_the_python_client(
    front: str, tmp_path: Path, fake_state: Path, checks: bool
) -> None:
    trace, file = tmp_path / "trace", tmp_path / "a.log"
    fake = FakeManager(fake_state, version="0.0.1:/elsewhere/hvfs:1", named_pid=os.getpid(), checks=checks)
    result = run([front], "run", "--audit", str(file), *COMMAND, env=traced(trace, HVFS_STATE_DIR=str(fake_state)))
    assert result.returncode == 0, result.stderr
    assert said(trace) == ["the manager runs other code"]
    assert fake.ops() == ["run_argv_checked", "hello", "shutdown"]  # the front opened nothing for it
    reference = tmp_path / "python.log"
    assert run(PYTHON, "run", "--audit", str(reference), *COMMAND).returncode == 0
    assert records(file) == records(reference)


@pytest.mark.rootless
def test_a_rootless_audited_run_is_the_fronts_and_refuses_what_the_user_may_not_write(
    rootless: Hvfs, staged: Path, shared_tmp: Path
) -> None:
    """As the unprivileged user, whose manager (root in its user namespace) could override
    the permissions of the user's own files and follow links anywhere the user owns:
    the file is made as the user, and every path the user may not write is refused with
    the Python client's line and left unchanged."""
    trace = shared_tmp / "trace"
    front = staged_front(rootless, staged, trace)
    assert rootless.run("run", "--", "true").returncode == 0  # its manager, warm
    account = pwd.getpwnam(ROOTLESS_USER)
    native_file, python_file = shared_tmp / "native.log", shared_tmp / "python.log"
    native = front.run("run", "--strict", "--audit", str(native_file), *COMMAND)
    python = rootless.run("run", "--strict", "--audit", str(python_file), *COMMAND)
    assert (native.returncode, native.stdout) == (0, python.stdout), native.stderr
    assert said(trace) == ["native"]
    assert records(native_file) == records(python_file)
    for made in (native_file, python_file):
        st = made.stat()
        assert (st.st_uid, st.st_gid, oct(st.st_mode)) == (account.pw_uid, account.pw_gid, oct(0o100600))

    closed = shared_tmp / "closed"  # root's: the user may not create files in it
    closed.mkdir(mode=0o755)
    theirs = shared_tmp / "theirs"  # root's file, which the user may read but not write
    theirs.write_text("root's\n")
    theirs.chmod(0o644)
    own = shared_tmp / "own"  # the user's own file of mode 0400: its owner is mapped
    own.write_text("the user's, read-only\n")
    os.chown(own, account.pw_uid, account.pw_gid)
    own.chmod(0o400)
    for name, target in (("to-theirs", theirs), ("to-own", own)):  # planted by root, in the sticky directory
        (shared_tmp / name).symlink_to(target)
    for path in (closed / "a.log", theirs, own, shared_tmp / "to-theirs", shared_tmp / "to-own"):
        native = front.run("run", "--audit", str(path), "--", "true")
        python = rootless.run("run", "--audit", str(path), "--", "true")
        assert (native.returncode, native.stderr) == (125, python.stderr), path
        assert python.stderr.count("\n") == 1 and str(path) in python.stderr
    assert said(trace) == ["native"]  # refused by the front's own line, not by the Python client's
    assert list(closed.iterdir()) == []
    assert theirs.read_text() == "root's\n"
    assert (own.read_text(), oct(own.stat().st_mode)) == ("the user's, read-only\n", oct(0o100400))
