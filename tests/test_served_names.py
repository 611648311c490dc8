"""A strict VM's stats and read-only opens of paths whose names merely hold the letters of
the VM's kernel mounts ("multiprocessing", "venv/scripts", "devel": W2's standard library)
are served in the driver's C loop (hvfs/_native/served_names.h), and answer exactly as the
Python path does, which serves them with ``HVFS_SERVED_STAT=0`` (a manager of its own);
paths with a component "proc", "pts" or (an open's) "dev", spelt every way the decoder and
the handlers normalize, stay Python's and answer alike too. As root, as a VM user (C acting
as that user) and rootless."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Hvfs, chown_to
from tests.served_probe import ATTEMPT
from tests.test_served_stat import _compiled, _in_python

PROBE = (
    r"""
import ctypes, fcntl, json, os, stat
libc = ctypes.CDLL(None, use_errno=True)
SYS_STATX, AT_FDCWD = 332, -100

def fields(st):
    return [st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns]

def kind(path, **kw):
    return stat.S_IFMT(os.stat(path, **kw).st_mode)

def statx(path, flags=0, dirfd=AT_FDCWD):
    buffer = ctypes.create_string_buffer(256)
    if libc.syscall(SYS_STATX, dirfd, path, flags, 0x7FF, buffer) < 0:
        raise OSError(ctypes.get_errno(), "statx")
    raw = bytearray(buffer.raw)
    raw[64:80] = bytes(16)  # stx_atime
    raw[144:152] = bytes(8)  # stx_mnt_id: each VM's own mount tree
    return raw.hex()

def opened(path, flags=os.O_RDONLY, dir_fd=AT_FDCWD):
    fd = libc.openat(dir_fd, path.encode(), flags)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "openat")
    try:
        st = os.fstat(fd)
        kind = stat.S_IFMT(st.st_mode)
        content = os.read(fd, 64).decode() if kind == stat.S_IFREG else None
        listed = sorted(os.listdir(fd)) if kind == stat.S_IFDIR else None
        same = fields(st) if kind in (stat.S_IFREG, stat.S_IFDIR) else kind
        return [same, content, listed, fcntl.fcntl(fd, fcntl.F_GETFL)]
    finally:
        os.close(fd)
"""
    + ATTEMPT
    + r"""
os.chdir("/data/multiprocessing")
scripts = os.open("/data/venv/scripts", os.O_RDONLY | os.O_DIRECTORY)
kernel_named = os.open("/data/proc", os.O_RDONLY | os.O_DIRECTORY)
cases = {
    # served in C now: names holding the letters, no such component
    "stat_letters": lambda: fields(os.stat("/data/multiprocessing/process.py")),
    "lstat_letters": lambda: fields(os.lstat("/data/venv/scripts/activate")),
    "stat_devel": lambda: fields(os.stat("/data/devel/device.h")),
    "stat_pts_prefix": lambda: fields(os.stat("/data/ptsx/ptsy")),
    "stat_dev_suffix": lambda: fields(os.stat("/data/xdev")),
    "relative_in_letters": lambda: fields(os.stat("process.py")),
    "relative_up_from_letters": lambda: fields(os.stat("../devel/device.h")),
    "dirfd_letters": lambda: fields(os.lstat("activate", dir_fd=scripts)),
    "statx_letters": lambda: statx(b"/data/multiprocessing/process.py"),
    "statx_relative": lambda: statx(b"process.py"),
    "link_in_letters": lambda: fields(os.stat("/data/multiprocessing/pool_link")),
    "lstat_link_in_letters": lambda: fields(os.lstat("/data/multiprocessing/pool_link")),
    "missing_in_letters": lambda: fields(os.stat("/data/multiprocessing/missing")),
    "open_letters": lambda: opened("/data/multiprocessing/process.py"),
    "open_devel": lambda: opened("/data/devel/device.h"),
    "open_relative": lambda: opened("process.py"),
    "open_dirfd": lambda: opened("activate", dir_fd=scripts),
    "open_letters_directory": lambda: opened("/data/multiprocessing", os.O_RDONLY | os.O_DIRECTORY),
    "open_devpts_named": lambda: opened("/data/devpts/file"),
    # a component spelt "proc", "pts" or "dev": Python's, in the VM or not
    "volume_proc_dir": lambda: fields(os.stat("/data/proc/file")),
    "volume_pts_dir": lambda: fields(os.stat("/data/pts/file")),
    "volume_dev_dir_open": lambda: opened("/data/dev/file"),
    "volume_dev_dir_stat": lambda: fields(os.stat("/data/dev/file")),
    "dirfd_named_proc": lambda: fields(os.stat("file", dir_fd=kernel_named)),
    "proc_self": lambda: kind("/proc/self/status"),
    "proc_itself": lambda: kind("/proc"),
    "proc_through_letters_dotdot": lambda: kind("/data/multiprocessing/../../proc/self/status"),
    "proc_double_slash": lambda: kind("//proc/self/status"),
    "proc_dot": lambda: kind("/./proc/self/status"),
    "proc_self_cwd": lambda: fields(os.stat("/proc/self/cwd/process.py")),
    "proc_self_root": lambda: fields(os.stat("/proc/self/root/data/devel/device.h")),
    "dev_pts": lambda: kind("/dev/pts"),
    "dev_double_slash_pts": lambda: kind("/dev//pts"),
    "dev_null_open": lambda: opened("/dev/null")[0],
    "dev_dot_null_open": lambda: opened("/dev/./null")[0],
    "dev_stdin_open": lambda: opened("/dev/stdin")[0],
    "symlink_to_proc": lambda: kind("/data/devel/self_link/status"),
    "symlink_to_dev_null": lambda: opened("/data/devel/null_link")[0],
}
print(json.dumps({name: attempt(case) for name, case in cases.items()}))
"""
)

REPEATED = r"""
import os, sys
kind, count = sys.argv[1], int(sys.argv[2])
os.chdir("/data/multiprocessing")
scripts = os.open("/data/venv/scripts", os.O_RDONLY | os.O_DIRECTORY)
for _ in range(count):
    if kind == "letters":
        os.stat("/data/multiprocessing/process.py"); os.lstat("process.py"); os.stat("activate", dir_fd=scripts)
        os.close(os.open("/data/devel/device.h", os.O_RDONLY))
    else:
        os.stat("/data/proc/file"); os.stat("/proc/self/cwd/process.py"); os.stat("/dev/pts")
        os.close(os.open("/data/dev/file", os.O_RDONLY))
"""


def _volume(root: Path, owner: str | int | None) -> Path:
    """The cases' volume, with the probes beside it; owned by ``owner`` (a uid or a rootless
    runner's user) where given."""
    data = root / "data"
    for name, body in (
        ("multiprocessing/process.py", "process\n"),
        ("venv/scripts/activate", "activate\n"),
        ("devel/device.h", "device\n"),
        ("ptsx/ptsy", "ptsy\n"),
        ("xdev", "xdev\n"),
        ("devpts/file", "devpts\n"),
        ("proc/file", "proc\n"),
        ("pts/file", "pts\n"),
        ("dev/file", "dev\n"),
    ):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_text(body)
    (data / "multiprocessing" / "pool_link").symlink_to("process.py")
    (data / "devel" / "self_link").symlink_to("/proc/self")
    (data / "devel" / "null_link").symlink_to("/dev/null")
    (root / "probe.py").write_text(PROBE)
    (root / "repeated.py").write_text(REPEATED)
    os.chmod(root, 0o755)
    if isinstance(owner, str):
        chown_to(root, owner)
    elif owner is not None:
        for path in [data, *data.rglob("*")]:
            os.lchown(path, owner, owner)
    return data


def _probe(runner: Hvfs, root: Path, data: Path, *options: str) -> tuple[dict[str, Any], dict[str, Any]]:
    stats = root / f"stats-{len(list(root.glob('stats-*')))}.json"
    args = ["run", "--strict", "--stats", str(stats), *options, "-v", f"{data}:/data", "-v", f"{root}:/probe:ro"]
    out = runner.ok(*args, "--", "python3", "/probe/probe.py")
    results: dict[str, Any] = json.loads(out)
    return results, json.loads(stats.read_text())


def _compared(runner: Hvfs, root: Path, owner: str | int | None, *options: str) -> dict[str, Any]:
    """The probe's answers served in C and on the Python path, compared; the C run's."""
    data = _volume(root, owner)
    in_c, _ = _probe(runner, root, data, *options)
    in_python, python_stats = _probe(_in_python(runner), root, data, *options)
    assert in_c == in_python
    assert "stat_served" not in _compiled(python_stats)
    assert in_c["stat_letters"][0] == "ok" and in_c["relative_in_letters"] == in_c["stat_letters"]
    assert in_c["proc_self_cwd"] == in_c["stat_letters"] and in_c["volume_proc_dir"][0] == "ok"
    assert in_c["missing_in_letters"] == ["error", 2] and in_c["open_letters"][1][1] == "process\n"
    return in_c


@pytest.mark.parametrize("as_user", [False, True], ids=["root", "vm-user"])
def test_each_name_answers_as_the_python_path(hvfs: Hvfs, tmp_path: Path, as_user: bool) -> None:
    _compared(hvfs, tmp_path, 1000 if as_user else None, *(("-u", "1000:1000") if as_user else ()))


@pytest.mark.rootless
def test_a_rootless_vms_names_answer_as_the_python_path(rootless: Hvfs, shared_tmp: Path) -> None:
    assert rootless.user is not None
    in_c = _compared(rootless, shared_tmp, rootless.user)
    assert in_c["open_devel"][1][1] == "device\n"


def test_the_c_loop_serves_names_with_the_letters_and_declines_kernel_components(hvfs: Hvfs, tmp_path: Path) -> None:
    data = _volume(tmp_path, None)

    def counts(kind: str, count: int) -> dict[str, int]:
        stats = tmp_path / f"{kind}-{count}.json"
        args = ["run", "--strict", "--stats", str(stats), "-v", f"{data}:/data", "-v", f"{tmp_path}:/probe:ro"]
        hvfs.ok(*args, "--", "python3", "/probe/repeated.py", kind, str(count))
        return _compiled(json.loads(stats.read_text()))

    base, letters, kernel = counts("letters", 0), counts("letters", 200), counts("kernel", 200)
    assert letters.get("stat_served", 0) - base.get("stat_served", 0) >= 600, (base, letters)
    assert letters.get("open_served", 0) - base.get("open_served", 0) >= 200, (base, letters)
    assert letters["handed_to_python"] - base["handed_to_python"] < 20, (base, letters)
    assert kernel.get("stat_served", 0) - base.get("stat_served", 0) < 20, (base, kernel)
    assert kernel["handed_to_python"] - base["handed_to_python"] >= 800, (base, kernel)
