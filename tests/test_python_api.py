"""hvfs.VM and hvfs.Project, the Python API: real VMs of this session's manager."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hvfs
from hvfs.hypervisor import client


def _groups() -> dict[str, list[dict[str, object]]]:
    connection = client.connect(start=False)
    try:
        client.request(connection, "ps")
        reply, _ = connection.receive()
    finally:
        connection.close()
    groups: dict[str, list[dict[str, object]]] = reply["groups"]
    return groups


def test_run_exec_files_and_audit(tmp_path: Path) -> None:
    with hvfs.VM(mounts=[f"{tmp_path}:/data"], tmpfs=["/scratch"], env={"GREETING": "hello"}, audit=True) as vm:
        result = vm.run('echo "$GREETING"; echo oops >&2; echo x > /data/a.txt; exit 3')
        assert (result.code, result.stdout, result.stderr) == (3, "hello\n", "oops\n")
        assert vm.exec(["cat"], input="piped").stdout == "piped"
        assert vm.exec(["pwd"], workdir="/scratch").stdout == "/scratch\n"
        with pytest.raises(hvfs.CommandFailed, match="exited with 1"):
            vm.run("echo no >&2; false", check=True)
        vm.write_file("/data/b.txt", "bee", mode=0o600)
        assert (tmp_path / "b.txt").read_text() == "bee"
        assert os.stat(tmp_path / "b.txt").st_mode & 0o777 == 0o600
        assert vm.read_text("/data/a.txt") == "x\n"
        with pytest.raises(FileNotFoundError):
            vm.read_file("/data/missing")
        vm.run("echo y > /scratch/s; rm /data/a.txt; mkdir /data/d; mv /scratch/s /data/d/s > /dev/null")
        assert vm.audit.written() == {"/data/a.txt", "/data/b.txt", "/scratch/s", "/data/d/s"}
        assert vm.audit.removed() == {"/data/a.txt", "/scratch/s"}
        by_operation = vm.audit.by_operation()
        assert [e.paths for e in by_operation["mkdir"]] == [("/data/d",)]
        assert [e.paths for e in by_operation["rename"]] == [("/scratch/s", "/data/d/s")]
        assert not any("hvfs-audit-sync" in p for e in vm.audit.events() for p in e.paths)
        vm.audit.mark()
        vm.run("echo z > /data/c.txt")
        assert vm.audit.written() == {"/data/c.txt"}
        assert "(exit 3)\nhello\noops\n[hvfs] $ cat  (exit 0)\npiped\n[hvfs] $ pwd" in vm.logs()
    assert vm.code == 143 and not vm.running
    assert vm.audit.written() == {"/data/c.txt"}  # kept, though the VM and its files are gone


def test_timeout_kills_the_command_and_its_children(tmp_path: Path) -> None:
    with hvfs.VM(mounts=[f"{tmp_path}:/data"]) as vm:
        began = time.monotonic()
        with pytest.raises(hvfs.CommandTimeout) as raised:
            vm.run("echo started; (sleep 60; echo late > /data/late) & sleep 60", timeout=1)
        assert time.monotonic() - began < 10
        assert raised.value.stdout == b"started\n"
        assert vm.run("ps -eo comm | grep -c '^sleep$' || true").stdout.strip() == "1"  # the VM's own command
    assert not (tmp_path / "late").exists()


def test_stop_leaves_nothing_behind(tmp_path: Path) -> None:
    vm = hvfs.VM(name="hvfs-api-stop", audit=True, command=["sh", "-c", "echo booted; exec sleep 1000"])
    private = Path(vm.audit.path).parent
    assert private.is_dir() and private.stat().st_mode & 0o777 == 0o700
    assert "run-hvfs-api-stop" in _groups()
    deadline = time.monotonic() + 10
    while "booted" not in vm.logs() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert vm.logs() == "booted\n"
    assert vm.stop() == 143
    assert vm.stop() == 143  # again: nothing more
    deadline = time.monotonic() + 10
    while "run-hvfs-api-stop" in _groups() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "run-hvfs-api-stop" not in _groups()
    assert not private.exists()


def test_a_vm_whose_command_ends_reports_its_status() -> None:
    vm = hvfs.VM(command=["sh", "-c", "echo bye; exit 7"])
    assert vm.wait(30) == 7
    assert not vm.running and vm.logs() == "bye\n"
    assert vm.statistics["vm"] == vm.name
    with pytest.raises(hvfs.UsageError, match=r"not running|not up"):
        vm.run("true")
    vm.stop()


def test_faults_and_services(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    with hvfs.VM(mounts=[hvfs.Mount.host(tmp_path, "/data")], audit=str(audit),
                 faults=["op=mkdir,path=/data/*,errno=ENOSPC,nth=2"]) as vm:  # fmt: skip
        assert vm.run("mkdir /data/one").code == 0
        result = vm.run("mkdir /data/two")
        assert result.code == 1 and "No space left on device" in result.stderr
        assert [e.paths[0] for e in vm.audit.failed()] == ["/data/two"]
    assert (tmp_path / "one").is_dir() and not (tmp_path / "two").exists()
    assert audit.exists()  # a path of the caller's stays


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"mounts": ["/nonexistent-hvfs:/x"]}, "/nonexistent-hvfs"),
        ({"mounts": ["nocolon"]}, "expected SRC:DST"),
        ({"name": "no spaces"}, "letters, digits"),
        ({"faults": ["op=nothing,errno=EIO"]}, "unknown operation"),
        ({"services": {"colour": "blue"}}, "unknown key 'colour'"),
        ({"workdir": "relative"}, "absolute path"),
    ],
)
def test_bad_arguments_are_one_clear_error(arguments: dict[str, object], message: str) -> None:
    before = set(_groups())
    with pytest.raises(hvfs.UsageError, match=message):
        hvfs.VM(**arguments)  # type: ignore[arg-type]
    assert set(_groups()) == before


def test_a_vm_ends_with_the_process_that_owns_it(tmp_path: Path) -> None:
    script = "import hvfs, sys; vm = hvfs.VM(name='hvfs-api-orphan'); print(vm.name, flush=True); sys.stdin.read()"
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as owner:  # fmt: skip
        assert owner.stdout is not None and owner.stdout.readline() == "hvfs-api-orphan\n"
        assert "run-hvfs-api-orphan" in _groups()
        owner.kill()
    deadline = time.monotonic() + 40
    while "run-hvfs-api-orphan" in _groups() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "run-hvfs-api-orphan" not in _groups()


def test_project_up_exec_audit_and_down(tmp_path: Path) -> None:
    (tmp_path / "hvfs.toml").write_text(
        'name = "apitest"\n[sources.shared]\ntype = "memory"\n[services]\naudit = "audit.jsonl"\n'
        '[vms.web]\ncommand = "echo web up; exec sleep 1000"\nmounts = [{ target = "/shared", source = "shared" }]\n'
        '[vms.db]\ncommand = ["sleep", "1000"]\nmounts = [{ target = "/shared", source = "shared" }]\n'
    )
    with hvfs.Project(tmp_path / "hvfs.toml") as project:
        assert {vm["name"]: vm["state"] for vm in project.ps()} == {"web": "running", "db": "running"}
        assert project["web"].run("echo hello > /shared/x").code == 0
        assert project["db"].read_file("/shared/x") == b"hello\n"
        assert project.audit.written() == {"/shared/x"}
        assert project["web"].audit.written() == {"/shared/x"} and project["db"].audit.written() == set()
        assert project["web"].logs() == "web up\n"
        with pytest.raises(KeyError, match="VMs: web, db"):
            project["nope"]
    assert project.ps() == []
    project.down()  # not up: nothing happens


def test_project_whose_vm_fails_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "hvfs.toml").write_text(
        'name = "apifails"\n[vms.ok]\ncommand = ["sleep", "1000"]\n'
        '[vms.bad]\ncommand = "echo cannot start >&2; exit 3"\n'
    )
    project = hvfs.Project(tmp_path / "hvfs.toml")
    try:
        with pytest.raises(hvfs.UsageError, match=r"(?s)VM bad exited with 3.*cannot start"):
            project.up(timeout=30)
    finally:
        project.down()


def test_import_hvfs_stays_light() -> None:
    """``import hvfs`` (every hvfs run) loads none of the API until it is used."""
    code = "import sys, hvfs; print(json.dumps(sorted(m for m in sys.modules if m.startswith('hvfs'))))"
    found = subprocess.run([sys.executable, "-c", f"import json; {code}"], capture_output=True, text=True, check=True)
    assert json.loads(found.stdout) == ["hvfs"]
    assert hvfs.VM.__module__ == "hvfs.client.vm" and "VM" in hvfs.__all__
    with pytest.raises(AttributeError):
        hvfs.Nothing  # type: ignore[attr-defined]  # noqa: B018


def test_hvfs_run_still_speaks_through_the_same_session() -> None:
    """hvfs run is a client of hvfs.client.session: its exit status and output pass."""
    result = subprocess.run([sys.executable, "-m", "hvfs", "run", "--", "sh", "-c", "echo out; exit 5"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (result.returncode, result.stdout) == (5, "out\n")
