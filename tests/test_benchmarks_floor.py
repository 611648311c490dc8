"""The floor's strict mode (benchmarks/floor/, the runners floor-strict…): it traps what
``hvfs run --strict`` traps, since it loads the very program HVFS's seccomp backend gives a
strict VM, and a program under it sees what it sees natively."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvfs.intercept.arch import native
from hvfs.intercept.backend import SeccompBackend
from tests.conftest import REPO, SYSTEM_PYTHON

# benchmarks/fixtures.py by its path: the benchmarks are no package, and their module names
# (fixtures, measure, report) are not to shadow anything on sys.path.
_spec = importlib.util.spec_from_file_location("benchmark_fixtures", REPO / "benchmarks" / "fixtures.py")
assert _spec is not None and _spec.loader is not None
fixtures = sys.modules["benchmark_fixtures"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(fixtures)

# Every call the floor serves, on a file, a directory, a symlink and a missing name, by an
# absolute path, relative to the cwd and relative to a dirfd, or on a fd; errnos as names.
PROBE = r"""
import errno, json, os, stat, sys
base = sys.argv[1]
os.chdir(base)
results = {}

def record(name, call):
    try:
        results[name] = call()
    except OSError as e:
        results[name] = errno.errorcode[e.errno]

def fields(st):
    return [stat.S_IFMT(st.st_mode), st.st_mode & 0o7777, st.st_ino, st.st_dev, st.st_nlink, st.st_size,
            st.st_mtime_ns]

directory = os.open("d", os.O_RDONLY | os.O_DIRECTORY)
for name in ("file", "d", "link", "dangling", "missing", "file/below"):
    record("stat " + name, lambda: fields(os.stat(name)))
    record("lstat " + name, lambda: fields(os.lstat(name)))
    record("stat abs " + name, lambda: fields(os.stat(os.path.join(base, name))))
    record("access " + name, lambda: os.access(name, os.R_OK | os.W_OK))
    record("readlink " + name, lambda: os.readlink(name))
for name in ("inner", "inner-link", "gone"):
    record("stat at " + name, lambda: fields(os.stat(name, dir_fd=directory, follow_symlinks=False)))
    record("readlink at " + name, lambda: os.readlink(name, dir_fd=directory))
    record("access at " + name, lambda: os.access(name, os.R_OK, dir_fd=directory))
with open("file") as f:
    results["read"] = f.read()
with open("new", "w") as f:
    f.write("written\n")
with open(os.path.join(base, "new")) as f:
    results["read back"] = f.read()
record("open missing", lambda: open("missing/x").close())
record("create in missing", lambda: open("missing/x", "w").close())
made = os.open("made", os.O_WRONLY | os.O_CREAT, 0o600)
os.fchmod(made, 0o640)
os.fchown(made, os.getuid(), os.getgid())
os.utime(made, ns=(1, 2_000_000_000))  # futimens
results["on the fd"] = [os.stat("made").st_mode & 0o7777, os.stat("made").st_mtime_ns]
record("fchmod of no fd", lambda: os.fchmod(999, 0o600))
record("unlink new", lambda: os.unlink("new"))
record("unlink again", lambda: os.unlink("new"))
record("rmdir file", lambda: os.rmdir("file"))
# a path through a procfs names the caller, as does a path relative to a directory in one
record("proc self", lambda: os.readlink("/proc/self/exe"))
record("proc self at", lambda: os.readlink("self/exe", dir_fd=os.open("/proc", os.O_RDONLY)))
print(json.dumps(results, sort_keys=True))
"""


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The floor, built as benchmarks/fixtures.py builds it, with its strict program beside it."""
    bin = tmp_path_factory.mktemp("floor")
    failure = fixtures.compile_c(REPO / "benchmarks" / "floor" / "floor.c", bin / "floor")
    assert failure is None, failure
    failure = fixtures.write_strict_filter(REPO, bin / fixtures.STRICT_FILTER)
    assert failure is None, failure
    yield bin


def tree(root: Path) -> Path:
    root.mkdir()
    (root / "file").write_text("content\n")
    (root / "d").mkdir()
    (root / "d" / "inner").write_text("")
    os.symlink("file", root / "link")
    os.symlink("nowhere", root / "dangling")
    os.symlink("../file", root / "d" / "inner-link")
    return root


def test_strict_floor_loads_the_program_of_a_strict_vm(floor: Path) -> None:
    # hvfs run --strict asks the backend for its filter exactly so (hvfs/hypervisor/group.py)
    strict = SeccompBackend().filter_program(True, native())
    assert (floor / fixtures.STRICT_FILTER).read_bytes() == strict
    assert strict != SeccompBackend().filter_program(False, native())


def test_a_program_under_the_strict_floor_sees_what_it_sees_natively(floor: Path, tmp_path: Path) -> None:
    argv = [SYSTEM_PYTHON, "-S", "-c", PROBE]
    natively = subprocess.run([*argv, str(tree(tmp_path / "native"))], capture_output=True, text=True, check=True)
    strict = f"strict:{floor / fixtures.STRICT_FILTER}"
    served = subprocess.run(
        [str(floor / "floor"), strict, "sync", "nopin", *argv, str(tree(tmp_path / "floor"))],
        capture_output=True,
        text=True,
        env={**os.environ, "FLOOR_COUNTS": "1"},
    )
    assert served.returncode == 0, served.stderr
    expected, got = json.loads(natively.stdout), json.loads(served.stdout)
    # the trees differ in inode numbers and times alone: compare the rest, and the errnos
    for name in expected:
        if name.startswith(("stat", "lstat")) and isinstance(expected[name], list):
            assert got[name][:2] == expected[name][:2] and got[name][4:6] == expected[name][4:6], name
        else:
            assert got[name] == expected[name], name
    assert expected["proc self"] == expected["proc self at"] == os.path.realpath(SYSTEM_PYTHON)
    counts = served.stderr.split("floor:")[-1].split()
    counted = dict(zip(counts[::2], map(int, counts[1::2]), strict=True))
    # every kind was served (the stats only with --strict's filter), execve continued
    assert all(
        counted[kind] > 0
        for kind in ("open", "stat", "access", "readlink", "unlink", "fchmod", "fchown", "futimens", "continued")
    ), counted
    assert counted["cpu_us"] > 0  # its own CPU time, for benchmarks/served_floor_cpu.py


def test_statx_under_the_strict_floor(floor: Path, tmp_path: Path) -> None:
    root = tree(tmp_path / "tree")
    command = ["stat", "-c", "%n %F %s %h %a %N", "file", "d", "link", "dangling"]  # coreutils' stat: statx
    natively = subprocess.run(command, cwd=root, capture_output=True, text=True, check=True)
    strict = f"strict:{floor / fixtures.STRICT_FILTER}"
    served = subprocess.run(
        [str(floor / "floor"), strict, "nosync", "nopin", *command],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "FLOOR_COUNTS": "1"},
    )
    assert served.returncode == 0, served.stderr
    assert served.stdout == natively.stdout
    assert " statx 0 " not in served.stderr


def test_a_filter_that_is_not_one_is_one_line(floor: Path, tmp_path: Path) -> None:
    (tmp_path / "odd").write_bytes(b"abc")
    for filter in (tmp_path / "odd", tmp_path / "none"):
        done = subprocess.run([str(floor / "floor"), f"strict:{filter}", "sync", "nopin", "true"], capture_output=True)
        assert done.returncode == 2
        assert len(done.stderr.splitlines()) == 1 and str(filter).encode() in done.stderr
