"""What a VM changed (docs/changes.md): ``hvfs run --diff``, ``--commit-on-success``,
``--export``, ``hvfs diff`` and ``hvfs export``, as root and rootless, strict or not."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.conftest import Hvfs, Vm

ACCEPTANCE = "echo a > /etc/x; rm /etc/hostname; echo b >> /data/f"


def _run(
    vm: Vm, options: Sequence[str], script: str, data: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    args = ["run", *(["--strict"] if vm.strict else []), *options, "-v", f"{data}:/data", "--", "sh", "-c", script]
    return vm.runner.run(*args, timeout=timeout)


def _diff_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line[:2] in ("A ", "C ", "D ")]


def _tree(path: Path) -> dict[str, str]:
    """Every name under ``path`` and what it is (content, symlink text, directory)."""
    found = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        if p.is_symlink():
            found[rel] = "-> " + os.readlink(p)
        elif p.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = p.read_text()
    return found


@pytest.fixture
def volume(vm: Vm, shared_tmp: Path) -> Path:
    path = shared_tmp / "data"
    path.mkdir()
    (path / "f").write_text("orig\n")
    (path / "g").write_text("kept\n")
    vm.give(path)
    return path


def test_run_diff_lists_exactly_the_changes(vm: Vm, volume: Path) -> None:
    result = _run(vm, ["--diff"], ACCEPTANCE, volume)
    assert result.returncode == 0, result.stderr
    # The parent of a name added or removed is shown changed (its entries changed), as docker does.
    assert _diff_lines(result.stderr) == ["C /data/f", "C /etc", "D /etc/hostname", "A /etc/x"]
    assert (volume / "f").read_text() == "orig\nb\n"  # not staged: a bind mount is written as it goes


def test_run_diff_follows_what_was_served(vm: Vm, volume: Path) -> None:
    script = (
        "echo t > /tmp/t; rm /tmp/t; "  # added then removed: nothing
        "mkdir /data/d; echo x > /data/d/x; mv /data/g /data/d/g; "  # rename: D old, A new
        "cd /data && ln -s f link && chmod 600 f && truncate -s 2 f"
    )
    result = _run(vm, ["--diff"], script, volume)
    assert result.returncode == 0, result.stderr
    assert _diff_lines(result.stderr) == [
        "C /data",
        "A /data/d",
        "A /data/d/g",
        "A /data/d/x",
        "C /data/f",
        "D /data/g",
        "A /data/link",
    ]


def test_commit_on_success_applies_when_the_command_exits_0(vm: Vm, volume: Path) -> None:
    result = _run(
        vm, ["--commit-on-success", "--diff"], ACCEPTANCE + "; rm /data/g; mkdir /data/n; ln -s /etc /data/n/l", volume
    )
    assert result.returncode == 0, result.stderr
    assert _tree(volume) == {"f": "orig\nb\n", "n": "dir", "n/l": "-> /etc"}
    assert "changes to the VM's root dropped" in result.stderr
    assert not os.path.exists("/etc/x") and os.path.exists("/etc/hostname")  # never the host's root


def test_commit_on_success_leaves_the_host_untouched_when_the_command_fails(vm: Vm, volume: Path) -> None:
    before = _tree(volume)
    result = _run(vm, ["--commit-on-success"], ACCEPTANCE + "; rm /data/g; mkdir /data/n; exit 1", volume)
    assert result.returncode == 1, result.stderr
    assert _tree(volume) == before
    assert "dropped (the command exited 1); the host is untouched" in result.stderr


def test_staged_mount_reads_its_own_writes(vm: Vm, volume: Path) -> None:
    """Staged or not, the VM sees its changes as it makes them."""
    result = _run(
        vm, ["--commit-on-success"], "echo b >> /data/f; cat /data/f; rm /data/g; test ! -e /data/g; exit 3", volume
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout == "orig\nb\n"
    assert (volume / "f").read_text() == "orig\n" and (volume / "g").exists()


def test_run_export_writes_changes_and_whiteouts(vm: Vm, volume: Path, shared_tmp: Path) -> None:
    out = shared_tmp / "changes.tar"
    result = _run(vm, ["--export", str(out)], ACCEPTANCE + "; ln -s /etc/passwd /data/l", volume)
    assert result.returncode == 0, result.stderr
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"data", "data/f", "data/l", "etc", "etc/x", "etc/.wh.hostname"}
        assert members["data/l"].issym() and members["data/l"].linkname == "/etc/passwd"
        assert tar.extractfile("data/f").read() == b"orig\nb\n"  # type: ignore[union-attr]
        assert tar.extractfile("etc/x").read() == b"a\n"  # type: ignore[union-attr]


def test_diff_and_export_of_a_running_vm(vm: Vm, volume: Path) -> None:
    name = f"diff-{os.getpid()}-{int(time.monotonic() * 1000) % 100000}"
    args = ["run", *(["--strict"] if vm.strict else []), "--name", name, "-v", f"{volume}:/data", "--", "sh", "-c",
            "rm /data/g; echo y > /etc/y; echo ready; sleep 30"]  # fmt: skip
    with subprocess.Popen(
        [*vm.runner.command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as running:
        try:
            assert running.stdout is not None and running.stdout.readline() == "ready\n"
            listed = vm.runner.run("diff", name)
            assert listed.returncode == 0, listed.stderr
            assert listed.stdout.splitlines() == ["C /data", "D /data/g", "C /etc", "A /etc/y"]
            document = json.loads(vm.runner.ok("diff", "--json", name))
            assert {"kind": "D", "path": "/data/g"} in document["changes"] and document["truncated"] is False
            exported = subprocess.run([*vm.runner.command, "export", name], capture_output=True, timeout=60)
            assert exported.returncode == 0, exported.stderr
            with tarfile.open(fileobj=io.BytesIO(exported.stdout)) as tar:
                assert {"data/.wh.g", "etc/y"} <= set(tar.getnames())
        finally:
            running.terminate()
            running.communicate(timeout=30)


def test_bad_change_flags_get_one_line(vm: Vm, volume: Path) -> None:
    review = vm.runner.run("run", "--review", "-v", f"{volume}:/data", "--", "true", stdin=subprocess.DEVNULL)
    assert review.returncode == 125 and review.stderr.count("\n") == 1
    assert "--review asks on the terminal" in review.stderr
    stage = vm.runner.run("run", "--commit-on-success", "--stage", "/nope", "-v", f"{volume}:/data", "--", "true")
    assert stage.returncode == 125 and "stage one of: /data" in stage.stderr and stage.stderr.count("\n") == 1
    alone = vm.runner.run("run", "--stage", "/data", "--", "true")
    assert alone.returncode == 125 and "add one of them" in alone.stderr
    missing = vm.runner.run("diff", "no-such-vm-here")
    assert missing.returncode == 125 and "no VM named 'no-such-vm-here'" in missing.stderr


def test_stage_chooses_the_mounts(vm: Vm, volume: Path, shared_tmp: Path) -> None:
    other = shared_tmp / "other"
    other.mkdir()
    vm.give(other)
    script = "echo o > /other/o; echo n > /data/n; exit 1"
    mounts = ["-v", f"{volume}:/data", "-v", f"{other}:/other"]
    args = ["run", *(["--strict"] if vm.strict else []), "--commit-on-success", "--stage", "/data", *mounts]
    args += ["--", "sh", "-c", script]
    result = vm.runner.run(*args)
    assert result.returncode == 1, result.stderr
    assert (other / "o").read_text() == "o\n"  # not staged: written as it went
    assert not (volume / "n").exists()


def test_a_long_change_list_arrives_whole(vm: Vm, volume: Path) -> None:
    """More changes than a control message holds: --diff still lists every one."""
    script = "mkdir /tmp/many; i=0; while [ $i -lt 6000 ]; do : > /tmp/many/file-with-a-long-name-$i; i=$((i+1)); done"
    result = _run(vm, ["--diff"], script, volume, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = _diff_lines(result.stderr)
    assert len(lines) == 6000 + 2 and lines[:2] == ["C /tmp", "A /tmp/many"]
    assert "A /tmp/many/file-with-a-long-name-5999" in lines


def _review(vm: Vm, volume: Path, answer: bytes) -> tuple[int, str]:
    """``hvfs run --review`` on a terminal of its own, answering ``answer`` when asked."""
    args = [*vm.runner.command, "run", *(["--strict"] if vm.strict else []), "--review", "-v", f"{volume}:/data",
            "--", "sh", "-c", "echo b >> /data/f; rm /data/g; exit 1"]  # fmt: skip
    pid, master = pty.fork()
    if pid == 0:
        os.chdir("/")
        os.execvp(args[0], args)
    seen = b""
    try:
        deadline = time.monotonic() + 120
        while b"[y/N]" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:  # EIO: it exited without asking
                    break
        assert b"[y/N]" in seen, seen
        os.write(master, answer)
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the other side is gone
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


def test_review_applies_after_yes_and_drops_after_no(vm: Vm, volume: Path) -> None:
    code, shown = _review(vm, volume, b"n\n")
    assert code == 1, shown
    assert "C /data/f" in shown and "D /data/g" in shown and "not approved" in shown
    assert (volume / "f").read_text() == "orig\n" and (volume / "g").exists()
    code, shown = _review(vm, volume, b"y\n")
    assert code == 1, shown
    assert "changes applied" in shown, shown
    assert (volume / "f").read_text() == "orig\nb\n" and not (volume / "g").exists()


def test_a_file_bind_is_never_silently_written_by_a_commit(vm: Vm, volume: Path) -> None:
    result = vm.runner.run("run", "--commit-on-success", "-v", f"{volume / 'f'}:/f", "--", "sh", "-c", "echo x > /f")
    assert result.returncode == 125 and result.stderr.count("\n") == 1, result.stderr
    assert "only directories can be staged" in result.stderr
    assert (volume / "f").read_text() == "orig\n"


def test_diff_of_a_project_vm(hvfs: Hvfs, tmp_path: Path) -> None:
    """A project's VM, found by its name: what it changed in its root and its volume."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "old").write_text("old\n")
    name = f"differ{os.getpid()}"
    (tmp_path / "hvfs.toml").write_text(
        f"[sources.data]\ntype = \"host\"\npath = \"{data}\"\n\n"
        f"[vms.{name}]\ncommand = \"rm /data/old; echo n > /data/new; echo r > /etc/r; touch /tmp/ready; sleep 60\"\n"
        "mounts = [{ source = \"data\", target = \"/data\" }]\n"
    )  # fmt: skip
    project = ["-f", str(tmp_path / "hvfs.toml")]
    hvfs.ok(*project, "up", "-d")
    try:
        deadline = time.monotonic() + 30
        while "A /tmp/ready" not in (listed := hvfs.run("diff", name).stdout) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert listed.splitlines() == [
            "C /data",
            "A /data/new",
            "D /data/old",
            "C /etc",
            "A /etc/r",
            "C /tmp",
            "A /tmp/ready",
        ]
    finally:
        hvfs.run(*project, "down")


def test_a_write_through_another_processs_fd_is_a_change(vm: Vm, volume: Path) -> None:
    """/proc/PID/fd/N of a file another process of the VM opened for reading: the open
    that writes through it is served (reopened) and is a change of that file."""
    script = "sleep 5 < /data/g & p=$!; sleep 0.3; echo y > /proc/$p/fd/0; kill $p"
    result = _run(vm, ["--diff"], script, volume)
    assert result.returncode == 0, result.stderr
    assert (volume / "g").read_text() == "y\n"
    assert _diff_lines(result.stderr) == ["C /data/g"]
