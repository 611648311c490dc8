"""A strict VM's readlink and access served in the driver's C loop (hvfs/_native/served_link.h)
answer exactly as the Python path does, which serves them with ``HVFS_SERVED_STAT=0`` (a
manager of its own): every case below, served in C or declined to Python, gives the same
result both ways, as root, as a VM user (served in C acting as that user, as ``acting_as``
does) and rootless; and the C loop serves what it should (counted in ``--stats``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Hvfs, chown_to, state_dir
from tests.served_probe import ATTEMPT

PROBE = (
    r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
READLINK, READLINKAT, ACCESS, FACCESSAT, FACCESSAT2 = 89, 267, 21, 269, 439
AT_FDCWD, EACCESS, NOFOLLOW, EMPTY = -100, 0x200, 0x100, 0x1000
R, W, X = os.R_OK, os.W_OK, os.X_OK

def call(number, *args):
    got = libc.syscall(number, *args)
    if got < 0:
        raise OSError(ctypes.get_errno(), "syscall")
    return got

def readlink(path, size=256, dirfd=None, out=None):
    buffer = ctypes.create_string_buffer(256)
    where = buffer if out is None else out
    if dirfd is None:
        got = call(READLINK, path, where, ctypes.c_long(size))
    else:
        got = call(READLINKAT, dirfd, path, where, ctypes.c_long(size))
    return [got, buffer.raw[:got].decode()]

def access(path, mode=0, flags=None, dirfd=None):
    if dirfd is None and flags is None:
        return call(ACCESS, path, ctypes.c_long(mode))
    if flags is None:
        return call(FACCESSAT, dirfd, path, ctypes.c_long(mode))
    return call(FACCESSAT2, AT_FDCWD if dirfd is None else dirfd, path, ctypes.c_long(mode), flags)
"""
    + ATTEMPT
    + r"""
os.chdir("/data/dir")
data = os.open("/data", os.O_RDONLY | os.O_DIRECTORY)
here = os.open(".", os.O_PATH | os.O_DIRECTORY)
a_file = os.open("/data/file", os.O_RDONLY)
link_fd = os.open("/data/link", os.O_PATH | os.O_NOFOLLOW)
cases = {
    "readlink": lambda: readlink(b"/data/link"),
    "readlink_absolute_target": lambda: readlink(b"/data/abslink"),
    "readlink_dangling": lambda: readlink(b"/data/dangling"),
    "readlink_loop": lambda: readlink(b"/data/loop1"),
    "readlink_short_buffer": lambda: readlink(b"/data/abslink", size=4),
    "readlink_one_byte": lambda: readlink(b"/data/link", size=1),
    "readlink_zero_size": lambda: readlink(b"/data/link", size=0),
    "readlink_negative_size": lambda: readlink(b"/data/link", size=-1),
    "readlink_huge_size": lambda: readlink(b"/data/link", size=1 << 40),
    "readlink_a_file": lambda: readlink(b"/data/file"),
    "readlink_a_directory": lambda: readlink(b"/data/dir"),
    "readlink_fifo": lambda: readlink(b"/data/fifo"),
    "readlink_missing": lambda: readlink(b"/data/missing"),
    "readlink_not_a_directory": lambda: readlink(b"/data/file/x"),
    "readlink_through_loop": lambda: readlink(b"/data/loop1/x"),
    "readlink_through_link": lambda: readlink(b"/data/dirlink/inlink"),
    "readlink_trailing_slash": lambda: readlink(b"/data/dirlink/"),
    "readlink_private": lambda: readlink(b"/data/private/plink"),
    "readlink_relative": lambda: readlink(b"inlink"),
    "readlink_relative_up": lambda: readlink(b"../link"),
    "readlink_dirfd": lambda: readlink(b"link", dirfd=data),
    "readlink_dirfd_o_path": lambda: readlink(b"../abslink", dirfd=here),
    "readlink_dirfd_a_file": lambda: readlink(b"x", dirfd=a_file),
    "readlink_dirfd_none": lambda: readlink(b"link", dirfd=9999),
    "readlink_empty_path_o_path_link": lambda: readlink(b"", dirfd=link_fd),
    "readlink_empty": lambda: readlink(b""),
    "readlink_name_too_long": lambda: readlink(b"/data/" + b"x" * 300),
    "readlink_path_too_long": lambda: readlink(b"/data/" + b"a/" * 2100),
    "readlink_bad_path_pointer": lambda: readlink(ctypes.c_void_p(1)),
    "readlink_bad_buffer": lambda: readlink(b"/data/link", out=ctypes.c_void_p(1)),
    "readlink_proc_self_exe": lambda: readlink(b"/proc/self/exe")[1].startswith("/"),
    "readlink_proc_self": lambda: readlink(b"/proc/self")[1] == str(os.getpid()),
    "readlink_proc_fd": lambda: readlink(b"/proc/self/fd/%d" % data),
    "readlink_dev_fd": lambda: readlink(b"/dev/fd/%d" % data),
    "readlink_dev_stdin": lambda: readlink(b"/dev/stdin")[0] > 0,
    "access": lambda: access(b"/data/file"),
    "access_read": lambda: access(b"/data/file", R),
    "access_write": lambda: access(b"/data/file", W),
    "access_exec_plain_file": lambda: access(b"/data/file", X),
    "access_exec_program": lambda: access(b"/data/program", X),
    "access_all": lambda: access(b"/data/program", R | W | X),
    "access_directory_search": lambda: access(b"/data/dir", X),
    "access_read_only_volume": lambda: access(b"/probe/probe.py", W),
    "access_read_only_volume_read": lambda: access(b"/probe/probe.py", R),
    "access_locked": lambda: access(b"/data/locked", R),
    "access_locked_write": lambda: access(b"/data/locked", W),
    "access_private": lambda: access(b"/data/private/secret"),
    "access_private_dir": lambda: access(b"/data/private", R | X),
    "access_link": lambda: access(b"/data/link", R),
    "access_dangling": lambda: access(b"/data/dangling"),
    "access_loop": lambda: access(b"/data/loop1"),
    "access_missing": lambda: access(b"/data/missing"),
    "access_not_a_directory": lambda: access(b"/data/file/x"),
    "access_bad_mode": lambda: access(b"/data/file", 8),
    "access_high_mode": lambda: access(b"/data/file", 1 << 33),
    "access_relative": lambda: access(b"inner", R),
    "access_relative_up": lambda: access(b"../file", R | W),
    "faccessat": lambda: access(b"file", R, dirfd=data),
    "faccessat_o_path": lambda: access(b"../program", X, dirfd=here),
    "faccessat_dirfd_a_file": lambda: access(b"x", dirfd=a_file),
    "faccessat_dirfd_none": lambda: access(b"file", dirfd=9999),
    "faccessat2_none": lambda: access(b"/data/file", R, 0),
    "faccessat2_eaccess": lambda: access(b"/data/file", W, EACCESS),
    "faccessat2_eaccess_locked": lambda: access(b"/data/locked", R, EACCESS),
    "faccessat2_nofollow_link": lambda: access(b"/data/dangling", 0, NOFOLLOW),
    "faccessat2_nofollow_link_write": lambda: access(b"/data/link", W, NOFOLLOW),
    "faccessat2_nofollow_file": lambda: access(b"/data/file", R, NOFOLLOW | EACCESS),
    "faccessat2_dirfd": lambda: access(b"file", R | W, EACCESS, dirfd=data),
    "faccessat2_empty_path": lambda: access(b"", R, EMPTY, dirfd=a_file),
    "faccessat2_empty_path_flag_with_path": lambda: access(b"/data/file", R, EMPTY),
    "faccessat2_bad_flag": lambda: access(b"/data/file", R, 0x1),
    "access_empty": lambda: access(b""),
    "access_name_too_long": lambda: access(b"/data/" + b"x" * 300),
    "access_bad_path_pointer": lambda: access(ctypes.c_void_p(1)),
    "access_proc": lambda: access(b"/proc/self/status", R),
    "access_dev_null": lambda: access(b"/dev/null", R | W),
    "access_dev_fd": lambda: access(b"/dev/fd/%d" % data, R),
}
print(json.dumps({name: attempt(case) for name, case in cases.items()}))
"""
)


def _volume(root: Path, as_user: bool) -> Path:
    data = root / "data"
    (data / "dir").mkdir(parents=True)
    (data / "file").write_text("content\n")
    (data / "program").write_text("#!/bin/sh\n")
    os.chmod(data / "program", 0o755)
    (data / "locked").write_text("locked\n")
    (data / "dir" / "inner").write_text("inner\n")
    (data / "dir" / "inlink").symlink_to("inner")
    (data / "link").symlink_to("file")
    (data / "abslink").symlink_to("/data/file")
    (data / "dirlink").symlink_to("dir")
    (data / "dangling").symlink_to("missing")
    (data / "loop1").symlink_to("loop2")
    (data / "loop2").symlink_to("loop1")
    (data / "private").mkdir(mode=0o700)
    (data / "private" / "secret").write_text("secret\n")
    (data / "private" / "plink").symlink_to("secret")
    os.mkfifo(data / "fifo")
    (root / "probe.py").write_text(PROBE)
    os.chmod(root, 0o755)
    if as_user:  # the VM user's files, but for those that must stay out of its reach
        for path in [data, *data.rglob("*")]:
            if not path.is_symlink() and path.name not in ("private", "secret", "locked"):
                os.chown(path, 1000, 1000)
    os.chmod(data / "locked", 0o600)
    return data


def _probe(runner: Hvfs, root: Path, data: Path, *options: str) -> tuple[dict[str, Any], dict[str, int]]:
    stats = root / f"stats-{len(list(root.glob('stats-*')))}.json"
    args = ["run", "--strict", "--stats", str(stats), *options, "-v", f"{data}:/data", "-v", f"{root}:/probe:ro"]
    out = runner.ok(*args, "--", "python3", "/probe/probe.py")
    results: dict[str, Any] = json.loads(out)
    compiled: dict[str, int] = json.loads(stats.read_text())["compiled"]
    return results, compiled


def _in_python(runner: Hvfs) -> Hvfs:
    return runner.with_env(HVFS_SERVED_STAT="0", HVFS_STATE_DIR=state_dir(runner.user, "no-served-stat"))


def _served(compiled: dict[str, int], kind: str) -> int:
    return sum(compiled.get(f"{kind}_{how}", 0) for how in ("served", "continued", "failed"))


def _check(in_c: dict[str, Any], in_python: dict[str, Any], as_user: bool) -> None:
    assert in_c == in_python
    assert in_c["readlink"] == ["ok", [4, "file"]] and in_c["readlink_short_buffer"] == ["ok", [4, "/dat"]]
    assert in_c["readlink_a_file"] == ["error", 22] and in_c["readlink_missing"] == ["error", 2]
    assert in_c["readlink_through_loop"] == ["error", 40] and in_c["readlink_not_a_directory"] == ["error", 20]
    assert in_c["readlink_zero_size"] == ["error", 22] and in_c["readlink_bad_buffer"] == ["error", 14]
    assert in_c["readlink_name_too_long"] == ["error", 36] and in_c["readlink_proc_self"] == ["ok", True]
    assert in_c["access_read"] == ["ok", 0] and in_c["access_exec_plain_file"] == ["error", 13]
    assert in_c["access_read_only_volume"] == ["error", 13 if as_user else 30]  # EACCES before EROFS
    assert in_c["access_bad_mode"] == ["error", 22]
    assert in_c["access_dangling"] == ["error", 2] and in_c["faccessat2_bad_flag"] == ["error", 22]
    assert in_c["faccessat2_nofollow_link"] == ["ok", 0] and in_c["access_loop"] == ["error", 40]
    assert in_c["access_locked"] == (["error", 13] if as_user else ["ok", 0])
    assert in_c["readlink_private"] == (["error", 13] if as_user else ["ok", [6, "secret"]])


@pytest.mark.parametrize("as_user", [False, True], ids=["root", "vm-user"])
def test_each_case_answers_as_the_python_path(hvfs: Hvfs, tmp_path: Path, as_user: bool) -> None:
    data = _volume(tmp_path, as_user)
    options = ("-u", "1000:1000") if as_user else ()
    in_c, compiled = _probe(hvfs, tmp_path, data, *options)
    in_python, python_compiled = _probe(_in_python(hvfs), tmp_path, data, *options)
    _check(in_c, in_python, as_user)
    assert _served(python_compiled, "readlink") == _served(python_compiled, "access") == 0
    # a VM user's too: C acts as the caller, with its real ids for access (served_link.h)
    assert _served(compiled, "readlink") >= 15 and _served(compiled, "access") >= 25, compiled
    assert compiled.get("readlink_served", 0) >= 5 and compiled.get("access_failed", 0) >= 3, compiled


@pytest.mark.rootless
def test_a_rootless_vm_answers_as_the_python_path(rootless: Hvfs, shared_tmp: Path) -> None:
    assert rootless.user is not None
    data = _volume(shared_tmp, False)
    chown_to(shared_tmp, rootless.user)
    in_c, compiled = _probe(rootless, shared_tmp, data)
    in_python, _ = _probe(_in_python(rootless), shared_tmp, data)
    assert in_c == in_python
    assert in_c["readlink"] == ["ok", [4, "file"]] and in_c["access_read"] == ["ok", 0]
    assert _served(compiled, "readlink") >= 15 and _served(compiled, "access") >= 20, compiled


SET_USER_ID = (
    r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)

def access(path, mode, flags):
    if libc.syscall(439, -100, path, ctypes.c_long(mode), flags) < 0:
        raise OSError(ctypes.get_errno(), "faccessat2")
    return 0
"""
    + ATTEMPT
    + r"""
os.setresuid(1000, 0, 0)  # as a set-user-id root program run by uid 1000: real 1000, effective 0
cases = {
    "real_ids": lambda: access(b"/data/locked", os.R_OK, 0),
    "effective_ids": lambda: access(b"/data/locked", os.R_OK, 0x200),
    "real_ids_readable": lambda: access(b"/data/file", os.R_OK, 0),
}
answers = {name: attempt(case) for name, case in cases.items()}
for _ in range(300):
    attempt(cases["real_ids"])
print(json.dumps(answers))
"""
)


def test_access_with_real_ids_not_the_effective_ones_is_left_to_python(hvfs: Hvfs, tmp_path: Path) -> None:
    """access(2) checks with the real ids: a caller whose real uid is 1000 and effective uid 0
    has it served by Python (``access_alike`` 0), its AT_EACCESS check in C, with the answers
    of the Python path."""
    data = _volume(tmp_path, False)
    (tmp_path / "probe.py").write_text(SET_USER_ID)
    in_c, compiled = _probe(hvfs, tmp_path, data)
    in_python, _ = _probe(_in_python(hvfs), tmp_path, data)
    assert in_c == in_python
    assert in_c == {"real_ids": ["error", 13], "effective_ids": ["ok", 0], "real_ids_readable": ["ok", 0]}
    assert 1 <= _served(compiled, "access") < 100, compiled  # the 300 real-id checks: Python's
