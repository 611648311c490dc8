"""A relative path's base directory kept open by the C loop from one stat or read-only open to
the next (hvfs/_native/served_base.h) answers exactly as the Python path, which finds the base
by its text for every request (``HVFS_SERVED_STAT=0``), and as the C loop opening each base
anew (``HVFS_SERVED_BASE=0``): a cwd renamed (same directory, new text), a new directory at
the old text, a dirfd whose directory moved, an fd number given another directory, a deleted
cwd, and one directory seen through two mounts (same directory, two texts: each its own
mount). As root, as a VM user and rootless."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Hvfs, chown_to, state_dir
from tests.served_probe import ATTEMPT
from tests.test_served_stat import _compiled, _in_python

PROBE = (
    r"""
import ctypes, json, os, stat
libc = ctypes.CDLL(None, use_errno=True)
SYS_STATX, AT_FDCWD = 332, -100

def fields(st):
    return [st.st_mode, st.st_size, st.st_nlink]

def same(path, other, dir_fd=None):
    return os.stat(path, dir_fd=dir_fd).st_ino == os.stat(other).st_ino

def mount_of(path, dirfd=AT_FDCWD):
    buffer = ctypes.create_string_buffer(256)
    if libc.syscall(SYS_STATX, dirfd, path if isinstance(path, bytes) else path.encode(), 0, 0x1000, buffer) < 0:
        raise OSError(ctypes.get_errno(), "statx")
    return int.from_bytes(buffer.raw[144:152], "little")

def mounts():
    here, first, second = mount_of("x"), mount_of("/s1/x"), mount_of("/s2/x")
    return [here == first, here == second, first == second]

def read(path, dir_fd=None):
    fd = os.open(path, os.O_RDONLY, dir_fd=dir_fd)
    try:
        return os.read(fd, 64).decode()
    finally:
        os.close(fd)
"""
    + ATTEMPT
    + r"""
steps = []
def step(name, function):
    steps.append([name, attempt(function)])

os.chdir("/data/a")
step("cwd", lambda: [fields(os.stat("f")), read("f")])
os.rename("/data/a", "/data/b")  # the cwd moves with it: a new text, the same directory
step("cwd_renamed", lambda: [fields(os.stat("f")), read("f"), same("f", "/data/b/f")])
os.mkdir("/data/a")
with open("/data/a/f", "w") as new:
    new.write("a new f, longer than the first\n")
step("new_dir_at_old_text", lambda: [fields(os.stat("f")), read("f"), same("f", "/data/b/f"), same("f", "/data/a/f")])
os.chdir("/data/a")
step("cwd_at_old_text", lambda: [fields(os.stat("f")), read("f"), same("f", "/data/a/f")])
held = os.open("/data/b", os.O_RDONLY | os.O_DIRECTORY)
step("dirfd", lambda: [fields(os.stat("f", dir_fd=held)), read("f", dir_fd=held)])
os.rename("/data/b", "/data/c")
os.mkdir("/data/b")
with open("/data/b/f", "w") as other:
    other.write("b again\n")
step("dirfd_moved", lambda: [fields(os.stat("f", dir_fd=held)), read("f", dir_fd=held), same("f", "/data/c/f", held)])
other_dir = os.open("/data/b", os.O_RDONLY | os.O_DIRECTORY)
os.dup2(other_dir, held)
step("dirfd_number_reused", lambda: [read("f", dir_fd=held), same("f", "/data/b/f", held)])
os.mkdir("/data/gone")
os.chdir("/data/gone")
step("cwd_before_deleted", lambda: fields(os.stat(".")))
os.rmdir("/data/gone")
step("cwd_deleted", lambda: fields(os.stat("f")))
os.chdir("/s1")
step("first_mount", lambda: [fields(os.stat("x")), *mounts()])
os.chdir("/s2")
step("second_mount", lambda: [fields(os.stat("x")), *mounts()])
first_fd, second_fd = os.open("/s1", os.O_RDONLY | os.O_DIRECTORY), os.open("/s2", os.O_RDONLY | os.O_DIRECTORY)
by_fd = lambda: mount_of(b"x", first_fd) == mount_of(b"x", second_fd)  # noqa: E731
step("mounts_by_dirfd", lambda: [by_fd(), mount_of("/s1/x") == mount_of("/s2/x")])
os.chdir("/s1")
step("first_mount_again", lambda: [*mounts(), read("x")])
print(json.dumps(steps))
"""
)


def _volume(root: Path, owner: str | int | None) -> tuple[Path, Path]:
    """A fresh volume for the probe (it renames and makes directories) and a directory it
    sees through two mounts."""
    data, shared = root / "data", root / "shared"
    (data / "a").mkdir(parents=True)
    (data / "a" / "f").write_text("first f\n")
    shared.mkdir()
    (shared / "x").write_text("shared x\n")
    (root / "probe.py").write_text(PROBE)
    os.chmod(root, 0o755)
    if isinstance(owner, str):
        chown_to(root, owner)
    elif owner is not None:
        for path in [data, shared, *data.rglob("*"), *shared.rglob("*")]:
            os.lchown(path, owner, owner)
    return data, shared


def _probe(runner: Hvfs, root: Path, owner: str | int | None, *options: str) -> tuple[list[Any], dict[str, Any]]:
    root.mkdir()
    if isinstance(owner, str):
        chown_to(root, owner)
    data, shared = _volume(root, owner)
    stats = root / "stats.json"
    volumes = ["-v", f"{data}:/data", "-v", f"{shared}:/s1", "-v", f"{shared}:/s2", "-v", f"{root}:/probe:ro"]
    out = runner.ok("run", "--strict", "--stats", str(stats), *options, *volumes, "--", "python3", "/probe/probe.py")
    steps: list[Any] = json.loads(out)
    return steps, json.loads(stats.read_text())


def _without_kept_bases(runner: Hvfs) -> Hvfs:
    return runner.with_env(HVFS_SERVED_BASE="0", HVFS_STATE_DIR=state_dir(runner.user, "no-served-base"))


def _compared(runner: Hvfs, root: Path, owner: str | int | None, *options: str) -> dict[str, Any]:
    """The probe's steps with bases kept, opened anew, and on the Python path: all alike."""
    kept, kept_stats = _probe(runner, root / "kept", owner, *options)
    anew, _ = _probe(_without_kept_bases(runner), root / "anew", owner, *options)
    in_python, _ = _probe(_in_python(runner), root / "python", owner, *options)
    assert kept == anew == in_python
    steps = dict(kept)
    assert steps["cwd"][1][1] == "first f\n" and steps["cwd_renamed"] == ["ok", [*steps["cwd"][1], True]]
    assert steps["new_dir_at_old_text"][1][1:] == ["first f\n", True, False]
    assert steps["cwd_at_old_text"][1][1].startswith("a new f") and steps["cwd_at_old_text"][1][2]
    assert steps["dirfd_moved"] == ["ok", [*steps["dirfd"][1], True]]
    assert steps["dirfd_number_reused"] == ["ok", ["b again\n", True]]
    assert steps["cwd_deleted"] == ["error", 2]
    # one directory, two mounts: through a dirfd of each, each its own mount, as their paths
    by_dirfd = steps["mounts_by_dirfd"]
    assert by_dirfd[0] == "ok" and by_dirfd[1][0] == by_dirfd[1][1], by_dirfd
    assert _compiled(kept_stats).get("stat_served", 0) >= 10, _compiled(kept_stats)  # C served them
    return steps


@pytest.mark.parametrize("as_user", [False, True], ids=["root", "vm-user"])
def test_kept_bases_answer_as_the_python_path(hvfs: Hvfs, tmp_path: Path, as_user: bool) -> None:
    os.chmod(tmp_path, 0o755)
    _compared(hvfs, tmp_path, 1000 if as_user else None, *(("-u", "1000:1000") if as_user else ()))


@pytest.mark.rootless
def test_a_rootless_vms_kept_bases_answer_as_the_python_path(rootless: Hvfs, shared_tmp: Path) -> None:
    assert rootless.user is not None
    _compared(rootless, shared_tmp, rootless.user)
