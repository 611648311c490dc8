"""A VM's mkdir, mkdirat, rmdir and unlinkat with AT_REMOVEDIR, served in the driver's C loop
(hvfs/_native/served_dirs.h), answer and change exactly what the Python path does, which serves
them with ``HVFS_SERVED_WRITE=0`` (a manager of its own): every case below, served in C or
declined to Python, gives the same answer, the same files afterwards (mode, owner, group) and
the same ``hvfs diff``, as root, as a VM user (C acting as that user) and rootless; and an
untar's directories are made and removed in C."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Hvfs
from tests.served_probe import ATTEMPT
from tests.test_served_mutate import _both_ways, _extracted_both_ways

DIR_PROBE = (
    r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, AT_REMOVEDIR = -100, 0x200
os.umask(0o027)
os.chdir("/data")
data = os.open("/data", os.O_RDONLY | os.O_DIRECTORY)

def checked(got, what):
    if got < 0:
        raise OSError(ctypes.get_errno(), what)
    return got

def made(path, mode=0o755, dirfd=None):
    raw = path.encode()
    checked(libc.mkdir(raw, mode) if dirfd is None else libc.mkdirat(dirfd, raw, mode), "mkdir")
    st = os.lstat(path if dirfd is None or path.startswith("/") else "/data/" + path)
    return [st.st_mode, st.st_uid, st.st_gid]

def removed(path, dirfd=None, flags=AT_REMOVEDIR):
    raw = path.encode()
    return checked(libc.rmdir(raw) if dirfd is None else libc.unlinkat(dirfd, raw, flags), "rmdir")
"""
    + ATTEMPT
    + r"""
cases = {
    "mkdir": lambda: made("/data/x1"),
    "mkdir_relative": lambda: made("x2", 0o700),
    "mkdirat_dirfd": lambda: made("x3", 0o775, data),
    "mkdirat_cwd": lambda: made("dir/x4", 0o711, AT_FDCWD),
    "mkdir_all_bits": lambda: made("/data/x5", 0o7777),
    "mkdir_high_bits": lambda: made("/data/x6", 0o170755),
    "mkdir_in_setgid_dir": lambda: made("/data/sgid/x7", 0o750),
    "mkdir_again": lambda: made("/data/x1"),
    "mkdir_existing_file": lambda: made("/data/file"),
    "mkdir_a_symlink": lambda: made("/data/link"),
    "mkdir_a_dangling_symlink": lambda: made("/data/dangling"),
    "mkdir_through_symlink": lambda: made("/data/dirlink/x8"),
    "mkdir_missing_dir": lambda: made("/data/nodir/x9"),
    "mkdir_private": lambda: made("/data/private/x10"),
    "mkdir_ro_volume": lambda: made("/ro/x11"),
    "mkdir_trailing_slash": lambda: made("/data/x12/"),
    "mkdir_dotdot": lambda: made("/data/dir/../x13"),
    "mkdir_above_root": lambda: made("/../data/x14"),
    "mkdir_the_root": lambda: made("/"),
    "mkdir_empty": lambda: made(""),
    "mkdir_dot": lambda: made("."),
    "mkdir_proc": lambda: made("/proc/x15"),
    "mkdir_name_too_long": lambda: made("/data/" + "x" * 300),
    "made_then_removed": lambda: [made("/data/x16"), removed("/data/x16")],
    "rmdir": lambda: removed("/data/dir2"),
    "rmdir_relative": lambda: removed("x2"),
    "unlinkat_dirfd": lambda: removed("x3", data),
    "unlinkat_cwd": lambda: removed("dir/x4", AT_FDCWD),
    "rmdir_again": lambda: removed("/data/dir2"),
    "rmdir_not_empty": lambda: removed("/data/dir"),
    "rmdir_a_file": lambda: removed("/data/file"),
    "rmdir_a_symlink": lambda: removed("/data/dirlink"),
    "rmdir_through_symlink": lambda: removed("/data/dirlink/x8"),
    "rmdir_private": lambda: removed("/data/private"),
    "rmdir_ro_volume": lambda: removed("/ro"),
    "rmdir_dot": lambda: removed("."),
    "rmdir_dotdot": lambda: removed("/data/dir/.."),
    "rmdir_the_root": lambda: removed("/"),
    "rmdir_missing": lambda: removed("/data/missing"),
    "rmdir_trailing_slash": lambda: removed("/data/x5/"),
    "unlinkat_bad_flag": lambda: removed("x6", data, AT_REMOVEDIR | 0x1),
}
print(json.dumps({name: attempt(case) for name, case in cases.items()}))
"""
)
SERVED_AT_LEAST = 12  # mkdir ... mkdir_in_setgid_dir (7), made_then_removed (2), rmdir ... unlinkat_cwd (4) less one


def _dirs_served(c_stats: dict[str, Any], python_stats: dict[str, Any]) -> int:
    """The mkdirs and rmdirs C served, none of them where it is turned off."""
    kinds = ("mkdir_served", "rmdir_served")
    assert not any(python_stats["compiled"].get(kind) for kind in kinds), python_stats
    return sum(c_stats["compiled"].get(kind, 0) for kind in kinds)


def _dirs_both_ways(runner: Hvfs, root: Path, owner: int | str | None, *options: str) -> dict[str, Any]:
    return _both_ways(runner, root, owner, *options, probe=DIR_PROBE, at_least=SERVED_AT_LEAST, share=_dirs_served)


@pytest.mark.parametrize("profile", ["strict", "default"])
@pytest.mark.parametrize("as_user", [False, True], ids=["root", "vm-user"])
def test_each_mkdir_and_rmdir_answers_as_the_python_path(
    hvfs: Hvfs, tmp_path: Path, as_user: bool, profile: str
) -> None:
    os.chmod(tmp_path, 0o755)
    options = (*(("-u", "1000:1000") if as_user else ()), *(("--default",) if profile == "default" else ()))
    in_c = _dirs_both_ways(hvfs, tmp_path, 1000 if as_user else None, *options)
    assert in_c["mkdir"] == ["ok", [0o40750, 1000 if as_user else 0, 1000 if as_user else 0]]
    assert in_c["mkdir_all_bits"][1][0] & 0o7777 == 0o1750  # the umask's; setuid and setgid dropped
    assert in_c["mkdir_in_setgid_dir"][1][0] == 0o42750 and in_c["mkdir_in_setgid_dir"][1][2] == 4242
    assert in_c["mkdir_again"] == ["error", 17] and in_c["mkdir_a_dangling_symlink"] == ["error", 17]
    assert in_c["mkdir_missing_dir"] == ["error", 2] and in_c["mkdir_ro_volume"] == ["error", 30]
    assert in_c["mkdir_private"] == (["error", 13] if as_user else in_c["mkdir_private"])
    assert in_c["made_then_removed"][0] == "ok" and in_c["rmdir"] == ["ok", 0] and in_c["unlinkat_cwd"] == ["ok", 0]
    assert in_c["rmdir_again"] == ["error", 2] and in_c["rmdir_not_empty"] == ["error", 39]
    assert in_c["rmdir_a_file"] == ["error", 20] and in_c["rmdir_a_symlink"] == ["error", 20]
    assert in_c["rmdir_dot"] == ["error", 22] and in_c["unlinkat_bad_flag"] == ["error", 22]


@pytest.mark.rootless
def test_a_rootless_vms_mkdirs_and_rmdirs_answer_as_the_python_path(rootless: Hvfs, shared_tmp: Path) -> None:
    assert rootless.user is not None
    in_c = _dirs_both_ways(rootless, shared_tmp, rootless.user)
    assert in_c["mkdir"][0] == "ok" and in_c["rmdir"] == ["ok", 0] and in_c["rmdir_again"] == ["error", 2]


@pytest.mark.parametrize("profile", ["--strict", "--diff"], ids=["strict", "default"])
def test_an_untars_directories_are_made_and_removed_in_c(hvfs: Hvfs, tmp_path: Path, profile: str) -> None:
    (in_c, c_stats, c_diff), (_, python_stats, _) = _extracted_both_ways(hvfs, tmp_path, profile)
    assert len(in_c) == 311 and in_c["tree/d3"][:2] == [0o40750, 1000]
    assert "A /data/tree/d3" in c_diff
    assert c_stats["compiled"].get("mkdir_served", 0) >= 10, c_stats
    assert c_stats["compiled"]["rmdir_served"] >= 10 and python_stats["compiled"].get("rmdir_served", 0) == 0
