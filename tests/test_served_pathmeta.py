"""A VM's metadata changes by path (chmod, fchmodat, chown, lchown, fchownat, utimensat with a
path) served in the driver's C loop (hvfs/_native/served_pathmeta.h) answer and change exactly
what the Python path does, which serves them with ``HVFS_SERVED_WRITE=0`` (a manager of its
own): every case below, served in C or declined to Python (a symlink on the way, a device, a
symlink's mode, AT_EMPTY_PATH, a bad flag, any failure), gives the same answer, the same files
afterwards (mode, owner, times) and the same ``hvfs diff``, as root, as a VM user (C acting as
that user) and rootless, in both profiles; and a tarball's directories get their owners,
modes and times in C."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Hvfs
from tests.served_probe import ATTEMPT, compared_runs
from tests.test_served_fdmeta import _with_others
from tests.test_served_mutate import _extracted_both_ways
from tests.test_served_write import _in_python

PROBE = (
    r"""
import ctypes, json, os, struct
os.umask(0o022)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_long]
SYS_UTIMENSAT, SYS_FCHMODAT, SYS_FCHOWNAT = 280, 268, 260
AT_FDCWD, AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH = -100, 0x100, 0x1000
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
os.chdir("/data")
data = os.open("/data", os.O_RDONLY | os.O_DIRECTORY)

def checked(got, what):
    if got < 0:
        raise OSError(ctypes.get_errno(), what)

def owner(path):
    st = os.lstat(path)
    return [st.st_mode, st.st_uid, st.st_gid]

def chmodded(path, mode, dirfd=None, seen=None):
    raw = path.encode()
    checked(libc.chmod(raw, mode) if dirfd is None else libc.syscall(SYS_FCHMODAT, dirfd, raw, mode, 0), "chmod")
    return owner(seen or path)

def chowned(path, uid, gid, dirfd=None, flags=0, seen=None, follow=True):
    raw = path.encode()
    if dirfd is not None:
        got = libc.fchownat(dirfd, raw, uid, gid, flags)
    else:
        got = (libc.chown if follow else libc.lchown)(raw, uid, gid)
    checked(got, "chown")
    return owner(seen or path)

def timed(path, times, dirfd=AT_FDCWD, flags=0, address=None, seen=None):
    pair = ctypes.create_string_buffer(struct.pack("<qqqq", *times)) if times else None
    at = address if address is not None else (ctypes.addressof(pair) if pair else None)
    checked(libc.syscall(SYS_UTIMENSAT, dirfd, path.encode(), at, flags), "utimensat")
    st = os.lstat(seen or path)
    asked = [times[1], times[3]] if times else [UTIME_NOW, UTIME_NOW]
    got = [st.st_atime_ns, st.st_mtime_ns]
    return [{UTIME_NOW: "now", UTIME_OMIT: "kept"}.get(nsec, value) for nsec, value in zip(asked, got)]
"""
    + ATTEMPT
    + r"""
cases = {
    "chmod": lambda: chmodded("/data/file", 0o640),
    "chmod_relative": lambda: chmodded("file2", 0o600),
    "fchmodat_dirfd": lambda: chmodded("file3", 0o604, data, seen="/data/file3"),
    "fchmodat_cwd": lambda: chmodded("dir/inner", 0o700, AT_FDCWD),
    "chmod_a_directory": lambda: chmodded("/data/dir", 0o750),
    "chmod_setuid": lambda: chmodded("/data/file4", 0o6755),
    "chmod_high_bits": lambda: chmodded("/data/file5", 0o170644),
    "chmod_a_symlink": lambda: chmodded("/data/link", 0o600, seen="/data/file"),
    "chmod_dangling": lambda: chmodded("/data/dangling", 0o600),
    "chmod_through_symlink": lambda: chmodded("/data/dirlink/inner", 0o711),
    "chmod_others": lambda: chmodded("/data/others", 0o600),
    "chmod_private": lambda: chmodded("/data/private/secret", 0o600),
    "chmod_ro_volume": lambda: chmodded("/ro/file", 0o600),
    "chmod_dev_null": lambda: chmodded("/dev/null", 0o666),
    "chmod_missing": lambda: chmodded("/data/missing", 0o600),
    "chmod_trailing_slash": lambda: chmodded("/data/file6/", 0o600),
    "chmod_dotdot": lambda: chmodded("/data/dir/../file6", 0o600),
    "chmod_empty": lambda: chmodded("", 0o600),
    "chmod_proc": lambda: chmodded("/proc/self/cwd/file7", 0o600),
    "chown": lambda: chowned("/data/file7", 1000, 1000),
    "chown_to_root": lambda: chowned("/data/file8", 0, 0),
    "chown_neither": lambda: chowned("/data/file9", -1, -1),
    "chown_group_alone": lambda: chowned("/data/file10", -1, 4242),
    "chown_a_directory": lambda: chowned("/data/sgid", -1, 4242),
    "chown_a_symlink": lambda: chowned("/data/link", 1000, 1000, seen="/data/file"),
    "lchown_a_symlink": lambda: chowned("/data/link", 1000, 1000, follow=False),
    "lchown_a_file": lambda: chowned("/data/devfile", 1000, 1000, follow=False),
    "fchownat_nofollow": lambda: chowned("dangling", 1000, 1000, data, AT_SYMLINK_NOFOLLOW, seen="/data/dangling"),
    "fchownat_cwd": lambda: chowned("dir", 1000, -1, AT_FDCWD, 0),
    "fchownat_empty_path": lambda: chowned("", 1000, 1000, data, AT_EMPTY_PATH, seen="/data"),
    "fchownat_bad_flag": lambda: chowned("file", 1000, 1000, data, 0x1),
    "chown_others": lambda: chowned("/data/others", 1000, 1000),
    "chown_unmapped": lambda: chowned("/data/file", 3_000_000_000, -1),
    "chown_through_symlink": lambda: chowned("/data/dirlink/inner", 1000, 1000),
    "chown_ro_volume": lambda: chowned("/ro/file", 1000, 1000),
    "chown_dev_null": lambda: chowned("/dev/null", 0, 0),
    "times": lambda: timed("/data/file", (1_500_000_000, 123, 1_600_000_000, 456)),
    "times_now": lambda: timed("/data/file2", None),
    "times_omit": lambda: timed("/data/file3", (1_400_000_000, UTIME_NOW, 1_300_000_000, UTIME_OMIT)),
    "times_relative": lambda: timed("dir/inner", (7, 0, 8, 0)),
    "times_dirfd": lambda: timed("file4", (9, 0, 10, 0), data, seen="/data/file4"),
    "times_a_directory": lambda: timed("/data/dir", (11, 0, 12, 0)),
    "times_nofollow_symlink": lambda: timed("/data/link", (13, 0, 14, 0), flags=AT_SYMLINK_NOFOLLOW),
    "times_follow_symlink": lambda: timed("/data/link", (15, 0, 16, 0), seen="/data/file"),
    "times_nofollow_file": lambda: timed("/data/file5", (17, 0, 18, 0), flags=AT_SYMLINK_NOFOLLOW),
    "times_bad_nsec": lambda: timed("/data/file6", (1, 1_000_000_000, 2, 0)),
    "times_bad_address": lambda: timed("/data/file6", (5, 0, 6, 0), address=8),
    "times_bad_flag": lambda: timed("/data/file6", (5, 0, 6, 0), flags=0x1),
    "times_others": lambda: timed("/data/others", (1, 0, 2, 0)),
    "times_others_now": lambda: timed("/data/others", None),
    "times_missing": lambda: timed("/data/missing", (1, 0, 2, 0)),
    "times_ro_volume": lambda: timed("/ro/file", (3, 0, 4, 0)),
    "times_dev_null": lambda: timed("/dev/null", (3, 0, 4, 0)),
}
print(json.dumps({name: attempt(case) for name, case in cases.items()}))
"""
)
# chmod ... chmod_high_bits (7); of chown ... fchownat_cwd, the three a VM user may make too
# (chown, chown_neither, lchown_a_file: the rest EPERM, Python's); times ... times_nofollow_file
C_SERVED_AT_LEAST = {"chmod": 6, "chown": 3, "utimens": 7}


def _served_here(stats: dict[str, Any], kind: str) -> int:
    return int(stats["compiled"].get(f"{kind}_served", 0))


def _share(c_stats: dict[str, Any], python_stats: dict[str, Any]) -> None:
    for kind, least in C_SERVED_AT_LEAST.items():
        assert _served_here(c_stats, kind) >= least, (kind, c_stats)
        assert _served_here(python_stats, kind) == 0, (kind, python_stats)


def _both_ways(runner: Hvfs, root: Path, owner: int | str | None, *options: str) -> dict[str, Any]:
    """The probe run served in C and on the Python path, each on a fresh volume: answers (the
    times too), files and diffs compared, C's share checked; the C run's answers."""

    def prepare(place: Path) -> Path:
        data = _with_others(place, owner, PROBE)
        (data / "dirlink").symlink_to("dir")
        return data

    # the answers compared hold the times each case set, read back in the VM
    in_c, in_python = compared_runs(runner, _in_python(runner), root, owner, prepare, *options)
    assert in_c.diff == in_python.diff and "C /data/file" in in_c.diff, in_c.diff
    _share(in_c.stats, in_python.stats)
    return in_c.answers


@pytest.mark.parametrize("profile", ["strict", "default"])
@pytest.mark.parametrize("as_user", [False, True], ids=["root", "vm-user"])
def test_each_metadata_change_by_path_answers_as_the_python_path(
    hvfs: Hvfs, tmp_path: Path, as_user: bool, profile: str
) -> None:
    os.chmod(tmp_path, 0o755)
    options = (*(("-u", "1000:1000") if as_user else ()), *(("--default",) if profile == "default" else ()))
    in_c = _both_ways(hvfs, tmp_path, 1000 if as_user else None, *options)
    me = 1000 if as_user else 0
    assert in_c["chmod"] == ["ok", [0o100640, me, me]] and in_c["chmod_setuid"][1][0] == 0o106755
    assert in_c["chmod_others"] == (["error", 1] if as_user else ["ok", [0o100600, 4243, 4243]])
    assert in_c["chmod_dangling"] == ["error", 2] and in_c["chmod_ro_volume"] == ["error", 30]
    assert in_c["chmod_dev_null"] == ["error", 1] and in_c["chmod_trailing_slash"] == ["error", 20]
    assert in_c["chown_to_root"] == (["error", 1] if as_user else ["ok", [0o100644, 0, 0]])
    link = in_c["lchown_a_symlink"]  # the host made it: root's, which a VM user may not give away
    assert link == ["error", 1] if as_user else link == ["ok", [0o120777, 1000, 1000]]
    assert in_c["fchownat_bad_flag"] == ["error", 22] and in_c["fchownat_empty_path"][0] == "ok"
    assert in_c["times"] == ["ok", [1_500_000_000 * 10**9 + 123, 1_600_000_000 * 10**9 + 456]]
    assert in_c["times_omit"] == ["ok", ["now", "kept"]] and in_c["times_bad_nsec"] == ["error", 22]
    nofollow = in_c["times_nofollow_symlink"]  # root's symlink again
    assert nofollow == ["error", 1] if as_user else nofollow == ["ok", [13 * 10**9, 14 * 10**9]]
    assert in_c["times_others"] == (["error", 1] if as_user else ["ok", [10**9, 2 * 10**9]])
    assert in_c["times_bad_address"] == ["error", 14] and in_c["times_missing"] == ["error", 2]


@pytest.mark.rootless
def test_a_rootless_vms_metadata_changes_by_path_answer_as_the_python_path(rootless: Hvfs, shared_tmp: Path) -> None:
    assert rootless.user is not None
    in_c = _both_ways(rootless, shared_tmp, rootless.user)
    assert in_c["chmod"][0] == "ok" and in_c["chmod"][1][0] == 0o100640


@pytest.mark.parametrize("profile", ["--strict", "--diff"], ids=["strict", "default"])
def test_a_tarballs_directories_get_their_metadata_in_c(hvfs: Hvfs, tmp_path: Path, profile: str) -> None:
    (in_c, c_stats, _), (_, python_stats, _) = _extracted_both_ways(hvfs, tmp_path, profile)
    assert in_c["tree/d3"][:2] == [0o40750, 1000]
    # tar sets each of the ten directories' owner, mode and times by path, after their files
    for kind in ("chmod", "chown", "utimens"):
        assert _served_here(c_stats, kind) - _served_here(python_stats, kind) >= 10, (kind, c_stats, python_stats)
