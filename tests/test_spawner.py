"""hvfs._sys.spawner: the manager's children (a VM's hvfs-init) are spawned from a thread
whose fd table is its own, so that no child holds a file the manager has open meanwhile.
A child cloned from the manager's table held a VM's just-written script (a writer) until
its exec: the VM's exec of that script failed with ETXTBSY (docs/ptrace.md)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

from hvfs._sys import spawner
from hvfs._sys.spawn import posix_spawn
from hvfs.sandbox import launcher

SCRIPT = b"#!/bin/sh\nexit 0\n"


def _links(tid: int) -> list[str]:
    found = []
    for name in os.listdir(f"/proc/self/task/{tid}/fd"):
        try:
            found.append(os.readlink(f"/proc/self/task/{tid}/fd/{name}"))
        except FileNotFoundError:
            continue  # the listing's own fd
    return found


def test_the_spawner_thread_holds_none_of_the_files_opened_after_it(tmp_path: Path) -> None:
    tid = spawner.start()
    target = tmp_path / "written"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o700)
    try:
        assert str(target) in _links(threading.get_native_id())  # this thread's table has it
        assert str(target) not in _links(tid)
        assert len(_links(tid)) <= 5, _links(tid)  # the standard fds and its pidfd of this process
    finally:
        os.close(fd)


def _fds_of_child(spawn: object) -> list[int]:
    read, write = os.pipe()
    kept = os.open("/dev/null", os.O_RDONLY)
    os.set_inheritable(kept, True)  # what a plain spawn would pass on
    try:
        pid = spawn("/bin/sh", ["sh", "-c", "ls /proc/self/fd"], {}, [kept, write, write])  # type: ignore[operator]
    finally:
        os.close(write)
        os.close(kept)
    with os.fdopen(read) as output:
        found = sorted(int(line) for line in output.read().split())
    assert os.waitpid(pid, 0)[1] == 0
    return found


def test_a_child_gets_the_fds_it_is_given_and_no_other() -> None:
    def plain(path: str, argv: list[str], env: dict[str, str], fds: list[int]) -> int:
        return posix_spawn(path, argv, env, file_actions=[(os.POSIX_SPAWN_DUP2, fd, i) for i, fd in enumerate(fds)])

    assert _fds_of_child(spawner.spawn) == [0, 1, 2, 3]  # 3: ls's own listing
    assert len(_fds_of_child(plain)) > 4  # the inheritable one at least: the check above can fail


def test_a_script_written_while_children_are_spawned_runs_at_once(tmp_path: Path) -> None:
    """Thousands of write-close-exec rounds while another thread spawns children as fast as
    it can, each child cloned from whatever table its spawner has: none may meet a writer.
    Spawned from a thread that shares this one's table instead, 4 and 8 of 2000 execs met
    ETXTBSY here, and 5 and 13 with the child closing its copies first thing (closefrom):
    a child preempted between its clone and that close still holds the file."""
    stop = threading.Event()

    def spawn_children() -> None:
        while not stop.is_set():
            pid = spawner.spawn("/bin/true", ["true"], {}, [0, 1, 2])
            os.waitpid(pid, 0)

    script = tmp_path / "s"
    busy = 0
    thread = threading.Thread(target=spawn_children)
    thread.start()
    try:
        for _ in range(2000):
            fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o700)
            os.write(fd, SCRIPT)
            os.close(fd)
            try:
                pid = os.posix_spawn(str(script), [str(script)], {})
            except OSError as e:
                assert e.errno == errno.ETXTBSY, e
                busy += 1
                continue
            assert os.waitpid(pid, 0)[1] == 0
    finally:
        stop.set()
        thread.join()
    assert busy == 0, f"{busy} of 2000 execs met a writer"


def test_the_launcher_spawns_through_it() -> None:
    assert launcher.spawner is spawner


def test_a_manager_without_standard_fds_gives_a_child_the_right_ones(tmp_path: Path) -> None:
    """With 0-2 closed, the spawner's copies take the low numbers the child's fds go to
    (its pidfd 0, then 1, 2, 3): each dup2 still finds its source."""
    out = tmp_path / "out"
    program = f"""
import os
from hvfs._sys import spawner
for fd in (0, 1, 2):
    os.close(fd)
spawner.start()
read, write = os.pipe()  # 0 and 1 here, and low in the spawner's table too
null = os.open("/dev/null", os.O_RDONLY)
pid = spawner.spawn("/bin/sh", ["sh", "-c", "echo out; ls -l /proc/self/fd/0 | grep -o null; ls /proc/self/fd"],
                    {{}}, [null, write, write])
os.close(write)
found = b""
while chunk := os.read(read, 4096):
    found += chunk
os.waitpid(pid, 0)
with open({str(out)!r}, "wb") as f:
    f.write(found)
"""
    done = subprocess.run([sys.executable, "-c", program], check=False, timeout=60)
    assert done.returncode == 0
    lines = out.read_text().split()
    assert lines[:2] == ["out", "null"] and sorted(int(n) for n in lines[2:]) == [0, 1, 2, 3], lines
