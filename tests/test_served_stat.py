"""A strict VM's stats and read-only opens served in the driver's C loop
(hvfs/_native/served_stat.h) answer exactly as the Python path does, which serves them with
``HVFS_SERVED_STAT=0`` (a manager of its own): every case below, served in C or declined to
Python, gives the same result both ways, as root, as a VM user (served in C acting as that user,
as ``acting_as`` does), and rootless; and the C
loop serves what it should and declines the rest (counted in ``--stats``). An audited VM's:
tests/test_served_audit.py."""

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
import ctypes, fcntl, json, os, stat, sys
libc = ctypes.CDLL(None, use_errno=True)
SYS_NEWFSTATAT, SYS_STATX, AT_FDCWD = 262, 332, -100
NOFOLLOW, EMPTY, NO_AUTOMOUNT, FORCE_SYNC, DONT_SYNC = 0x100, 0x1000, 0x800, 0x2000, 0x4000

def fields(st):
    return [st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, st.st_size,
            st.st_mtime_ns, st.st_ctime_ns, st.st_blocks]

def call(number, *args):
    if libc.syscall(number, *args) < 0:
        raise OSError(ctypes.get_errno(), "syscall")

def newfstatat(path, flags=0, dirfd=AT_FDCWD, out=None):
    buffer = ctypes.create_string_buffer(144)
    call(SYS_NEWFSTATAT, dirfd, path, buffer if out is None else out, flags)
    raw = bytearray(buffer.raw)
    raw[72:88] = bytes(16)  # st_atim: not what is compared
    return raw.hex()

def statx(path, flags=0, mask=0x7FF, dirfd=AT_FDCWD):
    buffer = ctypes.create_string_buffer(256)
    call(SYS_STATX, dirfd, path, flags, mask, buffer)
    raw = bytearray(buffer.raw)
    raw[64:80] = bytes(16)  # stx_atime
    raw[144:152] = bytes(8)  # stx_mnt_id: each VM's own mount tree
    return raw.hex()

def kind(path, **kw):
    return stat.S_IFMT(os.stat(path, **kw).st_mode)

def opened(path, flags=os.O_RDONLY, dir_fd=AT_FDCWD):
    fd = libc.openat(dir_fd, path.encode(), flags)  # os.open would add O_CLOEXEC
    if fd < 0:
        raise OSError(ctypes.get_errno(), "openat")
    try:
        st = os.fstat(fd)
        kind = stat.S_IFMT(st.st_mode)
        content = os.read(fd, 64).decode() if kind == stat.S_IFREG else None
        listed = sorted(os.listdir(fd)) if kind == stat.S_IFDIR else None
        same = fields(st) if kind in (stat.S_IFREG, stat.S_IFDIR) else kind
        return [same, content, listed, fcntl.fcntl(fd, fcntl.F_GETFD), fcntl.fcntl(fd, fcntl.F_GETFL)]
    finally:
        os.close(fd)
"""
    + ATTEMPT
    + r"""
os.chdir("/data/dir")
data = os.open("/data", os.O_RDONLY | os.O_DIRECTORY)
here = os.open(".", os.O_PATH | os.O_DIRECTORY)
a_file = os.open("/data/file", os.O_RDONLY)
pipe_end = os.pipe()[0]
proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
root = os.open("/", os.O_PATH | os.O_DIRECTORY)
cases = {
    "stat": lambda: fields(os.stat("/data/file")),
    "stat_dir": lambda: fields(os.stat("/data/dir")),
    "lstat_link": lambda: fields(os.lstat("/data/link")),
    "stat_link": lambda: fields(os.stat("/data/link")),
    "stat_absolute_link": lambda: fields(os.stat("/data/abslink")),
    "relative": lambda: fields(os.stat("inner")),
    "relative_up": lambda: fields(os.stat("../file")),
    "relative_through_absolute_link": lambda: fields(os.stat("../abslink")),
    "relative_above_root": lambda: fields(os.stat("../../../../data/file")),
    "lstat_relative": lambda: fields(os.lstat("../link")),
    "dirfd": lambda: fields(os.stat("file", dir_fd=data)),
    "dirfd_lstat": lambda: fields(os.lstat("link", dir_fd=data)),
    "dirfd_o_path_up": lambda: fields(os.stat("../file", dir_fd=here)),
    "dirfd_absolute_path": lambda: fields(os.stat("/data/dir/inner", dir_fd=data)),
    "dirfd_absolute_link": lambda: fields(os.stat("abslink", dir_fd=data)),
    "dirfd_a_file": lambda: fields(os.stat("x", dir_fd=a_file)),
    "dirfd_a_pipe": lambda: fields(os.stat("x", dir_fd=pipe_end)),
    "dirfd_none": lambda: newfstatat(b"file", dirfd=9999),
    "dirfd_negative": lambda: newfstatat(b"file", dirfd=-5),
    "dirfd_proc": lambda: kind("self", dir_fd=proc),
    "dirfd_missing": lambda: fields(os.stat("missing", dir_fd=data)),
    # one component from its base: one fstatat or statx (served_quick.h), or the open's way
    "dirfd_dot": lambda: fields(os.stat(".", dir_fd=data)),
    "dirfd_dotdot": lambda: kind("..", dir_fd=data),  # the VM's root: each VM's own device
    "dirfd_mount_point": lambda: fields(os.stat("data", dir_fd=root)),
    "dirfd_lstat_mount_point": lambda: fields(os.lstat("data", dir_fd=root)),
    "dirfd_lstat_absolute_link": lambda: fields(os.lstat("abslink", dir_fd=data)),
    "dirfd_dangling": lambda: fields(os.stat("dangling", dir_fd=data)),
    "dirfd_lstat_dangling": lambda: fields(os.lstat("dangling", dir_fd=data)),
    "dirfd_loop": lambda: fields(os.stat("loop1", dir_fd=data)),
    "dirfd_fifo": lambda: fields(os.stat("fifo", dir_fd=data)),
    "dirfd_name_too_long": lambda: newfstatat(b"x" * 300, dirfd=data),
    "dirfd_private": lambda: fields(os.stat("private", dir_fd=data)),
    "statx_dirfd_nothing": lambda: statx(b"file", mask=0, dirfd=data),
    "statx_dirfd_link": lambda: statx(b"link", dirfd=data),
    "statx_dirfd_link_nofollow": lambda: statx(b"link", NOFOLLOW, dirfd=data),
    "statx_dirfd_dangling": lambda: statx(b"dangling", dirfd=data),
    "statx_dirfd_mount_point": lambda: statx(b"data", mask=0x1FFF, dirfd=root),
    "statx_dirfd_force_sync": lambda: statx(b"file", FORCE_SYNC, dirfd=data),
    "proc": lambda: kind("/proc/self/status"),
    "proc_dotdot": lambda: kind("/data/../proc/self"),
    "dev_pts": lambda: kind("/dev/pts"),
    "missing": lambda: fields(os.stat("/data/missing")),
    "missing_relative": lambda: fields(os.stat("missing")),
    "not_a_directory": lambda: fields(os.stat("/data/file/x")),
    "loop": lambda: fields(os.stat("/data/loop1")),
    "lstat_loop": lambda: fields(os.lstat("/data/loop1")),
    "dangling": lambda: fields(os.stat("/data/dangling")),
    "lstat_dangling": lambda: fields(os.lstat("/data/dangling")),
    "private": lambda: fields(os.stat("/data/private/secret")),
    "private_dir": lambda: fields(os.stat("/data/private")),
    "path_too_long": lambda: newfstatat(b"/data/" + b"a/" * 2100),
    "name_too_long": lambda: newfstatat(b"/data/" + b"x" * 300),
    "empty": lambda: newfstatat(b""),
    "bad_path_pointer": lambda: newfstatat(ctypes.c_void_p(1)),
    "bad_result_pointer": lambda: newfstatat(b"/data/file", out=ctypes.c_void_p(1)),
    "newfstatat": lambda: newfstatat(b"/data/file"),
    "newfstatat_nofollow": lambda: newfstatat(b"/data/link", NOFOLLOW),
    "newfstatat_no_automount": lambda: newfstatat(b"/data/file", NO_AUTOMOUNT),
    "newfstatat_empty_path_flag": lambda: newfstatat(b"/data/file", EMPTY),
    "newfstatat_bad_flag": lambda: newfstatat(b"/data/file", 0x1),
    "statx_basic": lambda: statx(b"/data/file"),
    "statx_nothing": lambda: statx(b"/data/file", mask=0),
    "statx_mount_id": lambda: statx(b"/data/file", mask=0x1000),
    "statx_btime": lambda: statx(b"/data/file", mask=0x800),
    "statx_all": lambda: statx(b"/data/file", mask=0x7FFFFFFF),
    "statx_reserved": lambda: statx(b"/data/file", mask=0x80000000),
    "statx_nofollow": lambda: statx(b"/data/link", NOFOLLOW),
    "statx_force_sync": lambda: statx(b"/data/file", FORCE_SYNC),
    "statx_dont_sync": lambda: statx(b"/data/file", DONT_SYNC),
    "statx_both_syncs": lambda: statx(b"/data/file", FORCE_SYNC | DONT_SYNC),
    "statx_bad_flag": lambda: statx(b"/data/file", 0x1),
    "statx_relative": lambda: statx(b"inner"),
    "statx_dirfd": lambda: statx(b"file", dirfd=data),
    "statx_missing": lambda: statx(b"/data/missing"),
    "open": lambda: opened("/data/file"),
    "open_cloexec": lambda: opened("/data/file", os.O_RDONLY | os.O_CLOEXEC),
    "open_flags_kept": lambda: opened("/data/file", os.O_RDONLY | os.O_NONBLOCK | os.O_NOATIME | os.O_APPEND),
    "open_unknown_flag_bits": lambda: opened("/data/file", os.O_RDONLY | 0x40000000),
    "open_directory": lambda: opened("/data/dir", os.O_RDONLY | os.O_DIRECTORY),
    "open_directory_of_a_file": lambda: opened("/data/file", os.O_RDONLY | os.O_DIRECTORY),
    # O_DIRECTORY: one open with the caller's flags, no probe (served_stat.h serve_open)
    "open_directory_nofollow": lambda: opened("/data/dir", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW),
    "open_directory_link": lambda: opened("/data/dirlink", os.O_RDONLY | os.O_DIRECTORY),
    "open_directory_link_nofollow": lambda: opened("/data/dirlink", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW),
    "open_directory_of_a_fifo": lambda: opened("/data/fifo", os.O_RDONLY | os.O_DIRECTORY),
    "open_directory_private": lambda: opened("/data/private", os.O_RDONLY | os.O_DIRECTORY),
    "open_directory_relative_up": lambda: opened("..", os.O_RDONLY | os.O_DIRECTORY),
    "open_directory_dirfd_dot": lambda: opened(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=data),
    "open_directory_dangling": lambda: opened("/data/dangling", os.O_RDONLY | os.O_DIRECTORY),
    "open_directory_loop": lambda: opened("/data/loop1", os.O_RDONLY | os.O_DIRECTORY),
    "open_dir_flags_kept": lambda: opened("/data/dir", os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | os.O_CLOEXEC),
    "open_relative": lambda: opened("inner"),
    "open_relative_up": lambda: opened("../link"),
    "open_dirfd": lambda: opened("abslink", dir_fd=data),
    "open_nofollow_link": lambda: opened("/data/link", os.O_RDONLY | os.O_NOFOLLOW),
    "open_missing": lambda: opened("/data/missing"),
    "open_loop": lambda: opened("/data/loop1"),
    "open_fifo_nonblocking": lambda: opened("/data/fifo", os.O_RDONLY | os.O_NONBLOCK),
    "open_private": lambda: opened("/data/private/secret"),
    "open_dev_null": lambda: opened("/dev/null"),
    "open_proc": lambda: opened("/proc/self/status")[1][:5],
    "open_path": lambda: opened("/data/file", os.O_PATH)[4],
    "open_name_too_long": lambda: opened("/data/" + "x" * 300),
}
print(json.dumps({name: attempt(case) for name, case in cases.items()}))
"""
)


def _volume(root: Path, owner: str | None) -> Path:
    data = root / "data"
    (data / "dir").mkdir(parents=True)
    (data / "file").write_text("content\n")
    (data / "dir" / "inner").write_text("inner\n")
    (data / "link").symlink_to("file")
    (data / "abslink").symlink_to("/data/file")
    (data / "dirlink").symlink_to("dir")
    (data / "dangling").symlink_to("missing")
    (data / "loop1").symlink_to("loop2")
    (data / "loop2").symlink_to("loop1")
    (data / "private").mkdir(mode=0o700)
    (data / "private" / "secret").write_text("secret\n")
    os.mkfifo(data / "fifo")
    (root / "probe.py").write_text(PROBE)
    os.chmod(root, 0o755)
    if owner is not None:
        for path in [root, *root.rglob("*")]:
            if not path.is_symlink():
                chown_to(path, owner)
    return data


def _probe(runner: Hvfs, root: Path, data: Path, *options: str) -> tuple[dict[str, Any], dict[str, Any]]:
    stats = root / f"stats-{len(list(root.glob('stats-*')))}.json"
    args = ["run", "--strict", "--stats", str(stats), *options, "-v", f"{data}:/data", "-v", f"{root}:/probe:ro"]
    out = runner.ok(*args, "--", "python3", "/probe/probe.py")
    results: dict[str, Any] = json.loads(out)
    return results, json.loads(stats.read_text())


def _in_python(runner: Hvfs) -> Hvfs:
    return runner.with_env(HVFS_SERVED_STAT="0", HVFS_STATE_DIR=state_dir(runner.user, "no-served-stat"))


def _compiled(document: dict[str, Any]) -> dict[str, int]:
    compiled: dict[str, int] = document["compiled"]
    return compiled


def _volume_for(tmp_path: Path, as_user: bool) -> tuple[Path, tuple[str, ...]]:
    """The cases' volume and the run's options: as a VM user (uid 1000), its files are
    that user's but for the two that must stay out of its reach."""
    data = _volume(tmp_path, None)
    if not as_user:
        return data, ()
    for path in [data, *data.rglob("*")]:
        if not path.is_symlink() and path.name not in ("private", "secret"):
            os.chown(path, 1000, 1000)
    return data, ("-u", "1000:1000")


@pytest.mark.parametrize("as_user", [False, True], ids=["root", "vm-user"])
def test_each_case_answers_as_the_python_path(hvfs: Hvfs, tmp_path: Path, as_user: bool) -> None:
    data, options = _volume_for(tmp_path, as_user)
    in_c, in_c_stats = _probe(hvfs, tmp_path, data, *options)
    in_python, python_stats = _probe(_in_python(hvfs), tmp_path, data, *options)
    assert in_c == in_python
    assert in_c["stat"][0] == "ok" and in_c["missing"] == ["error", 2] and in_c["loop"] == ["error", 40]
    assert in_c["path_too_long"] == ["error", 36] and in_c["name_too_long"] == ["error", 36]
    assert in_c["statx_reserved"] == ["error", 22] and in_c["bad_result_pointer"] == ["error", 14]
    assert in_c["relative_up"] == in_c["stat"] == in_c["relative_through_absolute_link"]
    assert in_c["private"] == (["error", 13] if as_user else in_c["private"])
    assert in_c["open_private"] == (["error", 13] if as_user else in_c["open_private"])
    assert in_c["open"][1][1] == "content\n" and in_c["open_cloexec"][1][3] == 1 and in_c["open"][1][3] == 0
    assert in_c["open_directory_of_a_file"] == ["error", 20] and in_c["open_loop"] == ["error", 40]
    assert in_c["open_directory_of_a_fifo"] == ["error", 20] and in_c["open_directory_link"][0] == "ok"
    assert in_c["open_directory_link_nofollow"][0] == "error" and in_c["open_directory_relative_up"][0] == "ok"
    assert in_c["open_directory_private"][0] == "ok" if not as_user else in_c["open_directory_private"] == ["error", 13]
    assert "served_stat" not in str(python_stats) and "stat_served" not in _compiled(python_stats)
    served = _compiled(in_c_stats).get("stat_served", 0) + _compiled(in_c_stats).get("statx_served", 0)
    opens = _compiled(in_c_stats).get("open_served", 0)
    # a VM user's too: C acts as the caller, as acting_as does (served_switch.h)
    assert served >= 30 and opens >= 10, _compiled(in_c_stats)
    # The VM's statistics count them as the manager's own
    requests = in_c_stats["requests"]
    assert requests["stat"]["served"] + requests["statx"]["served"] >= served


@pytest.mark.rootless
def test_a_rootless_vm_answers_as_the_python_path(rootless: Hvfs, shared_tmp: Path) -> None:
    assert rootless.user is not None
    data = _volume(shared_tmp, rootless.user)
    in_c, in_c_stats = _probe(rootless, shared_tmp, data)
    in_python, _ = _probe(_in_python(rootless), shared_tmp, data)
    assert in_c == in_python
    assert in_c["stat"][0] == "ok" and in_c["private"][0] == "ok"
    assert _compiled(in_c_stats).get("stat_served", 0) >= 20, _compiled(in_c_stats)


REPEATED = r"""
import os, sys
kind, count = sys.argv[1], int(sys.argv[2])
os.chdir("/data/dir")
data = os.open("/data", os.O_RDONLY | os.O_DIRECTORY)
for _ in range(count):
    if kind == "served":
        os.stat("/data/file"); os.lstat("inner"); os.stat("link", dir_fd=data)
    else:
        os.stat("/dev/pts")
        os.stat("/proc/self/status")
        for path in ("/data/" + "a/" * 2100, ""):
            try:
                os.stat(path)
            except OSError:
                pass
"""


def test_the_c_loop_serves_plain_stats_and_declines_the_rest(hvfs: Hvfs, tmp_path: Path) -> None:
    data = _volume(tmp_path, None)
    (tmp_path / "repeated.py").write_text(REPEATED)

    def counts(kind: str, count: int) -> dict[str, int]:
        stats = tmp_path / f"{kind}-{count}.json"
        args = ["run", "--strict", "--stats", str(stats), "-v", f"{data}:/data", "-v", f"{tmp_path}:/probe:ro"]
        hvfs.ok(*args, "--", "python3", "/probe/repeated.py", kind, str(count))
        return _compiled(json.loads(stats.read_text()))

    base, served, declined = counts("served", 0), counts("served", 200), counts("declined", 200)
    assert served.get("stat_served", 0) - base.get("stat_served", 0) >= 600, (base, served)
    assert declined.get("stat_served", 0) - base.get("stat_served", 0) < 20, (base, declined)
    assert declined["handed_to_python"] - base["handed_to_python"] >= 600, (base, declined)
