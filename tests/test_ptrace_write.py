"""The ptrace driver's write-open served in its C tracer loop (hvfs/_native/tracer_write.h)
answers and changes exactly what its Python path does, which serves it with
``HVFS_SERVED_WRITE=0`` (a manager of its own): tests/test_served_write.py's probe (every
case served in C or declined to Python) gives the same answers, fd flags, files afterwards
and ``hvfs diff`` under ``--driver ptrace``, as root, as a VM user (C acting as that user)
and rootless, strict and default; threads that change their credentials between opens are
served as themselves; a process with several threads and forks keeps its files right."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Hvfs
from tests.served_probe import snapshot
from tests.test_served_write import _compared, _in_python

C_SERVED_AT_LEAST = 20  # the plain cases, past the probe's first write-open (which plants its socket)


def _written_here(stats: dict[str, Any]) -> int:
    written: int = stats["written_here"]
    return written


def _both_ways(runner: Hvfs, root: Path, owner: int | str | None, *options: str) -> dict[str, Any]:
    """The probe under the ptrace driver, served in C and on the Python path, each on a
    fresh volume: everything compared; the C run's answers."""
    in_c, c_stats, python_stats = _compared(runner, root, owner, "--driver", "ptrace", *options)
    for stats in (c_stats, python_stats):
        assert stats["driver"] == "ptrace" and stats["loop"] == "native", stats
    assert _written_here(c_stats) >= C_SERVED_AT_LEAST and _written_here(python_stats) == 0, (c_stats, python_stats)
    assert c_stats["requests"]["open"] == python_stats["requests"]["open"], (c_stats, python_stats)
    return in_c


@pytest.mark.parametrize("profile", ["strict", "default"])
@pytest.mark.parametrize("as_user", [False, True], ids=["root", "vm-user"])
def test_each_write_open_answers_as_the_python_path(hvfs: Hvfs, tmp_path: Path, as_user: bool, profile: str) -> None:
    os.chmod(tmp_path, 0o755)
    options = (*(("-u", "1000:1000") if as_user else ()), *(("--default",) if profile == "default" else ()))
    in_c = _both_ways(hvfs, tmp_path, 1000 if as_user else None, *options)
    assert in_c["wronly"][0] == "ok" and in_c["excl_existing"] == ["error", 17] and in_c["missing"] == ["error", 2]
    assert in_c["create_new"][1][2] & 0o7777 == 0o740  # the caller's umask (027)
    assert in_c["create_in_setgid_dir"][1][4] == 4242 and in_c["create_missing_dir"] == ["error", 2]
    assert in_c["create_unwritable_dir"] == (["error", 13] if as_user else in_c["create_unwritable_dir"])
    assert in_c["cloexec"][1][1] == 1 and in_c["wronly"][1][1] == 0
    assert in_c["private"] == (["error", 13] if as_user else in_c["private"])
    assert in_c["wronly"][1][3] == (1000 if as_user else 0)


@pytest.mark.rootless
@pytest.mark.parametrize("profile", ["strict", "default"])
def test_a_rootless_vm_answers_as_the_python_path(rootless: Hvfs, shared_tmp: Path, profile: str) -> None:
    assert rootless.user is not None
    in_c = _both_ways(rootless, shared_tmp, rootless.user, *(("--default",) if profile == "default" else ()))
    assert in_c["wronly"][0] == "ok" and in_c["private"][0] == "ok"


# A root process that drops to uid 1000 (setresuid, setgroups), changes its umask, and a
# thread of it that stays root: each write-open is the caller's at the time, in C or not.
CHANGES = r"""
import ctypes, json, os, threading
libc = ctypes.CDLL(None, use_errno=True)
os.chdir("/data")
def made(name, mode=0o666):
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    except OSError as e:
        return ["error", e.errno]
    st = os.fstat(fd)
    os.write(fd, name.encode())
    os.close(fd)
    return [st.st_uid, st.st_gid, st.st_mode & 0o7777]
seen = {}
for i in range(5):
    seen[f"root{i}"] = made(f"root{i}")
os.umask(0o077)
for i in range(5):
    seen[f"umask{i}"] = made(f"umask{i}")
ready, go = threading.Event(), threading.Event()
def other():
    ready.wait()
    seen["thread_before"] = made("thread_before")  # the thread's own: still root (raw setresuid below)
    go.set()
thread = threading.Thread(target=other)
thread.start()
assert libc.syscall(117, 1000, 1000, 1000) == 0  # setresuid of this thread alone (the raw call)
for i in range(5):
    seen[f"user{i}"] = made(f"user{i}")
seen["private_as_user"] = made("private/x")
ready.set()
go.wait()
thread.join()
print(json.dumps(seen))
"""


def test_credentials_changed_between_opens_are_the_callers(hvfs: Hvfs, tmp_path: Path) -> None:
    """A thread's setresuid and a umask between its write-opens: each open afterwards is
    made as the thread is then (C's published record is stale after the change and Python
    reads it again), and a sibling thread that kept root is served as root."""
    os.chmod(tmp_path, 0o755)
    answers = []
    for name, way in (("c", hvfs), ("python", _in_python(hvfs))):
        data = tmp_path / name / "data"
        (data / "private").mkdir(parents=True)
        os.chmod(data, 0o777)
        os.chmod(data / "private", 0o700)
        (tmp_path / name / "probe.py").write_text(CHANGES)
        stats = tmp_path / name / "stats.json"
        out = way.ok("run", "--driver", "ptrace", "--stats", str(stats), "-v", f"{data}:/data",
                     "-v", f"{tmp_path / name / 'probe.py'}:/probe.py:ro", "--", "python3", "/probe.py")  # fmt: skip
        seen = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
        answers.append((seen, snapshot(data), json.loads(stats.read_text())))
    (in_c, c_files, c_stats), (in_python, python_files, _) = answers
    assert in_c == in_python and c_files == python_files
    assert in_c["root4"] == [0, 0, 0o644] and in_c["umask4"] == [0, 0, 0o600]
    assert in_c["user4"] == [1000, 0, 0o600] and in_c["private_as_user"] == ["error", 13]
    assert in_c["thread_before"] == [0, 0, 0o600]
    assert _written_here(c_stats) >= 8, c_stats


THREADS_AND_FORKS = r"""
import os, threading
os.chdir("/data")
def write(name, rounds):
    for i in range(rounds):
        with open(f"{name}", "a") as f:
            f.write(f"{i}\n")
threads = [threading.Thread(target=write, args=(f"t{n}", 200)) for n in range(4)]
for t in threads:
    t.start()
children = []
for n in range(3):
    pid = os.fork()
    if pid == 0:
        write(f"c{n}", 100)
        os._exit(0)
    children.append(pid)
for t in threads:
    t.join()
for pid in children:
    assert os.waitpid(pid, 0)[1] == 0
print("done")
"""


def test_threads_and_forks_keep_their_files(hvfs: Hvfs, tmp_path: Path) -> None:
    """Four threads and three forked children append to their own files at once, each
    open served in C or Python (a fork gives its parent's socket up: a doubted one is
    never sent on): every line reaches the host, in order."""
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(tmp_path, 0o755)
    (tmp_path / "probe.py").write_text(THREADS_AND_FORKS)
    stats = tmp_path / "stats.json"
    out = hvfs.ok("run", "--driver", "ptrace", "--stats", str(stats), "-v", f"{data}:/data",
                  "-v", f"{tmp_path / 'probe.py'}:/probe.py:ro", "--", "python3", "/probe.py")  # fmt: skip
    assert out.split() == ["done"]
    for n in range(4):
        assert (data / f"t{n}").read_text() == "".join(f"{i}\n" for i in range(200))
    for n in range(3):
        assert (data / f"c{n}").read_text() == "".join(f"{i}\n" for i in range(100))
    assert _written_here(json.loads(stats.read_text())) >= 500


BUSY = r"""
import os, threading, time
os.chdir("/data")
stop = threading.Event()
def busy(name):
    while not stop.is_set():
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT, 0o644))
def short(n):
    fd = os.open(f"short{n}", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"x")
    os.close(fd)
os.close(os.open("first", os.O_WRONLY | os.O_CREAT, 0o644))  # plants the socket: the rest may be C's
workers = [threading.Thread(target=busy, args=(f"busy{n}",)) for n in range(2)]
for t in workers:
    t.start()
made, end = 0, time.monotonic() + 1.0
while time.monotonic() < end:
    t = threading.Thread(target=short, args=(made,))
    t.start()
    t.join()
    made += 1
stop.set()
for t in workers:
    t.join()
print(made)
"""


def test_busy_write_opens_served_in_c_do_not_starve_a_new_thread(hvfs: Hvfs, tmp_path: Path) -> None:
    """Two threads write-open in a tight loop (served in C, each always ready again) while
    the main thread makes short threads that each write-open a file of their own: the C
    loop hands back to Python's round after SERVED_PER_WAIT, so the short threads progress."""
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(tmp_path, 0o755)
    (tmp_path / "probe.py").write_text(BUSY)
    stats = tmp_path / "stats.json"
    out = hvfs.ok("run", "--driver", "ptrace", "--stats", str(stats), "-v", f"{data}:/data",
                  "-v", f"{tmp_path / 'probe.py'}:/probe.py:ro", "--", "python3", "/probe.py")  # fmt: skip
    made = int(out.split()[-1])
    assert made >= 20, made
    assert all((data / f"short{n}").read_bytes() == b"x" for n in range(made))
    # How many is the load's: Python takes every wait with a birth or an exit in it.
    assert _written_here(json.loads(stats.read_text())) > 0
