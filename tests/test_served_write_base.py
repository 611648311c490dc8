"""A relative mutation's base directory kept open in the writable view by the C loop from one
request to the next (hvfs/_native/write_open.h write_base) answers and changes exactly what
the C loop opening each base anew (``HVFS_SERVED_BASE=0``) and the Python path
(``HVFS_SERVED_WRITE=0``) do: creations, unlinks, mkdirs, chmods and rmdirs relative to the
cwd and to a dirfd, around a cwd renamed (same directory, new text: the change set notes the
new one), a new directory at the old text, a dirfd whose directory moved, an fd number given
another directory, and a deleted cwd. Same answers, files and ``hvfs diff``, as root, as a VM
user and rootless."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Hvfs, chown_to, state_dir
from tests.served_probe import ATTEMPT, run_probe, snapshot
from tests.test_served_write import _in_python

PROBE = (
    r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
os.umask(0o022)

def made(name, dirfd=AT_FDCWD):
    fd = libc.openat(dirfd, name.encode(), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "open")
    os.write(fd, name.encode())
    os.close(fd)
    return sorted(os.listdir(dirfd if dirfd != AT_FDCWD else "."))

def unlinked(name, dirfd=AT_FDCWD):
    if libc.unlinkat(dirfd, name.encode(), 0) < 0:
        raise OSError(ctypes.get_errno(), "unlink")
    return sorted(os.listdir(dirfd if dirfd != AT_FDCWD else "."))
"""
    + ATTEMPT
    + r"""
steps = []
def step(name, function):
    steps.append([name, attempt(function)])

os.chdir("/data/a")
step("create", lambda: made("f1"))
step("create_again", lambda: made("f2"))
step("unlink", lambda: unlinked("f1"))
step("mkdir", lambda: [os.mkdir("sub", 0o750), os.stat("sub").st_mode])
step("chmod", lambda: [os.chmod("sub", 0o700), os.stat("sub").st_mode])
step("rmdir", lambda: [os.rmdir("sub"), sorted(os.listdir("."))])
os.rename("/data/a", "/data/b")  # the cwd moves with it: a new text, the same directory
step("create_renamed", lambda: made("f3"))
step("unlink_renamed", lambda: unlinked("f2"))
step("mkdir_renamed", lambda: [os.mkdir("sub2"), sorted(os.listdir("/data/b"))])
os.mkdir("/data/a")
step("create_beside_new_dir_at_old_text", lambda: made("f4"))
os.chdir("/data/a")
step("create_at_old_text", lambda: made("f5"))
held = os.open("/data/b", os.O_RDONLY | os.O_DIRECTORY)
step("dirfd_create", lambda: made("f6", held))
os.rename("/data/b", "/data/c")
step("dirfd_moved_create", lambda: made("f7", held))
step("dirfd_moved_unlink", lambda: unlinked("f6", held))
other = os.open("/data/a", os.O_RDONLY | os.O_DIRECTORY)
os.dup2(other, held)
step("dirfd_number_reused", lambda: made("f8", held))
step("dirfd_number_reused_unlink", lambda: unlinked("f5", held))
os.mkdir("/data/gone")
os.chdir("/data/gone")
step("in_cwd_before_deleted", lambda: [made("g"), unlinked("g")])
os.rmdir("/data/gone")
step("cwd_deleted_create", lambda: made("h"))
step("cwd_deleted_unlink", lambda: unlinked("g"))
print(json.dumps(dict(steps)))
"""
)


def _place(root: Path, owner: int | str | None) -> Path:
    """A fresh volume (/data, with its directory a), the probe, and an empty /ro."""
    data = root / "data"
    (data / "a").mkdir(parents=True)
    (root / "ro").mkdir()
    (root / "probe").mkdir()
    (root / "probe" / "probe.py").write_text(PROBE)
    for path in [root, root / "probe", root / "ro"]:
        os.chmod(path, 0o755)
    if isinstance(owner, str):
        chown_to(root, owner)
    elif owner is not None:
        for path in [data, data / "a"]:
            os.chown(path, owner, owner)
    return data


def _without_kept_bases(runner: Hvfs) -> Hvfs:
    return runner.with_env(HVFS_SERVED_BASE="0", HVFS_STATE_DIR=state_dir(runner.user, "no-served-base"))


def _compared(runner: Hvfs, root: Path, owner: int | str | None, *options: str) -> dict[str, Any]:
    """The probe with bases kept, opened anew, and on the Python path: answers, files and diffs
    alike; the kept run's answers."""
    runs = []
    for name, way in (("kept", runner), ("anew", _without_kept_bases(runner)), ("python", _in_python(runner))):
        place = root / name
        place.mkdir()
        if isinstance(owner, str):
            chown_to(place, owner)
        data = _place(place, owner)
        answers, stats, diff = run_probe(way, place, *options)
        runs.append((answers, diff, snapshot(data), stats))
    (kept, kept_diff, kept_files, kept_stats), *others = runs
    for answers, diff, files, _ in others:
        assert answers == kept, (kept, answers)
        assert files == kept_files, (kept_files, files)
        assert diff == kept_diff, (kept_diff, diff)
    # noted by the text read anew: the renamed cwd's (not /data/a/f2), the moved dirfd's (not /data/b/f7)
    assert {"D /data/b/f2", "A /data/c/f7", "A /data/a/f8"} <= set(kept_diff), kept_diff
    assert kept["create_renamed"] == ["ok", ["f2", "f3"]] and kept["dirfd_moved_unlink"] == [
        "ok",
        ["f3", "f4", "f7", "sub2"],
    ]
    assert kept["dirfd_number_reused"] == ["ok", ["f5", "f8"]] and kept["cwd_deleted_create"] == ["error", 2]
    compiled = kept_stats["compiled"]
    assert compiled.get("open_served", 0) >= 6 and compiled.get("unlink_served", 0) >= 4, compiled  # C served them
    return kept


@pytest.mark.parametrize("as_user", [False, True], ids=["root", "vm-user"])
def test_kept_write_bases_act_as_the_python_path(hvfs: Hvfs, tmp_path: Path, as_user: bool) -> None:
    os.chmod(tmp_path, 0o755)
    _compared(hvfs, tmp_path, 1000 if as_user else None, *(("-u", "1000:1000") if as_user else ()))


@pytest.mark.rootless
def test_a_rootless_vms_kept_write_bases_act_as_the_python_path(rootless: Hvfs, shared_tmp: Path) -> None:
    assert rootless.user is not None
    _compared(rootless, shared_tmp, rootless.user)
