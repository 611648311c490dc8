"""A strict VM's write-open of a file that exists, served in the driver's C loop
(hvfs/_native/served_write.h), answers and changes exactly what the Python path does, which
serves it with ``HVFS_SERVED_WRITE=0`` (a manager of its own): every case below, served in C
or declined to Python, gives the same answer, the same fd flags, the same files afterwards
(content, mode, owner) and the same ``hvfs diff``, as root, as a VM user (C acting as that
user) and rootless; an audited VM's write-opens are served in C too and recorded alike; and a
script written through a served open runs at once (the manager's copy closed before the
answer: no ETXTBSY)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Hvfs, chown_to, state_dir
from tests.served_probe import ATTEMPT, compared_runs, run_probe

PROBE = (
    r"""
import ctypes, fcntl, json, os, stat, sys
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, O_TMPFILE, O_PATH = -100, 0o20200000, 0o10000000
W, C, T, A, X = os.O_WRONLY, os.O_CREAT, os.O_TRUNC, os.O_APPEND, os.O_EXCL
os.umask(0o027)
os.chdir("/data")
data = os.open("/data", os.O_RDONLY | os.O_DIRECTORY)

def opened(path, flags, mode=0o666, dirfd=AT_FDCWD, creat=False):
    raw = path.encode() if isinstance(path, str) else path
    fd = libc.creat(raw, mode) if creat else libc.openat(dirfd, raw, flags, mode)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "open")
    try:
        st = os.fstat(fd)
        status, fd_flags = fcntl.fcntl(fd, fcntl.F_GETFL), fcntl.fcntl(fd, fcntl.F_GETFD)
        kind = stat.S_IFMT(st.st_mode)
        wrote = None
        if kind == stat.S_IFREG and status & os.O_ACCMODE != os.O_RDONLY and not status & O_PATH:
            try:
                wrote = os.write(fd, b"w\n")
            except OSError as e:
                wrote = -e.errno
        size = os.fstat(fd).st_size if kind == stat.S_IFREG else None
        return [status, fd_flags, st.st_mode, st.st_uid, st.st_gid, wrote, size]
    finally:
        os.close(fd)
"""
    + ATTEMPT
    + r"""
cases = {
    "wronly": lambda: opened("/data/file", W),
    "rdwr": lambda: opened("/data/file2", os.O_RDWR),
    "trunc": lambda: opened("/data/file3", W | T),
    "append": lambda: opened("/data/file4", W | A),
    "creat_existing": lambda: opened("/data/file5", W | C | T, 0o600),
    "excl_existing": lambda: opened("/data/file", W | C | X),
    "create_new": lambda: opened("/data/new1", W | C, 0o764),
    "create_new_excl": lambda: opened("/data/new2", os.O_RDWR | C | X, 0o640),
    "creat_call_existing": lambda: opened("/data/file6", 0, 0o600, creat=True),
    "creat_call_new": lambda: opened("/data/new3", 0, 0o755, creat=True),
    "missing": lambda: opened("/data/missing", W),
    "create_relative": lambda: opened("dir/new5", W | C | T, 0o666),
    "create_dirfd": lambda: opened("new6", os.O_RDWR | C, 0o604, dirfd=data),
    "create_setuid_mode": lambda: opened("/data/new7", W | C, 0o6775),
    "create_in_setgid_dir": lambda: opened("/data/sgid/new8", W | C, 0o2775),
    "create_unwritable_dir": lambda: opened("/data/private/new9", W | C, 0o600),
    "create_missing_dir": lambda: opened("/data/nodir/new10", W | C, 0o600),
    "nonblock": lambda: opened("/data/file", W | os.O_NONBLOCK),
    "cloexec": lambda: opened("/data/file", W | os.O_CLOEXEC),
    "sync": lambda: opened("/data/file", W | os.O_SYNC),
    "dsync": lambda: opened("/data/file", W | os.O_DSYNC),
    "noatime": lambda: opened("/data/file", W | os.O_NOATIME),
    "direct": lambda: opened("/data/file", W | os.O_DIRECT),
    "append_nonblock": lambda: opened("/data/file4", W | A | os.O_NONBLOCK),
    "unknown_bits": lambda: opened("/data/file", W | 0x40000000),
    "accmode_3": lambda: opened("/data/file", 3),
    "rdonly_trunc": lambda: opened("/data/file7", os.O_RDONLY | T),
    "rdonly_create": lambda: opened("/data/new4", os.O_RDONLY | C, 0o600),
    "directory_flag": lambda: opened("/data/file", W | os.O_DIRECTORY),
    "a_directory": lambda: opened("/data/dir", W),
    "symlink": lambda: opened("/data/link", W | A),
    "nofollow_symlink": lambda: opened("/data/link", W | os.O_NOFOLLOW),
    "dangling_create": lambda: opened("/data/dangling", W | C, 0o600),
    "fifo_no_reader": lambda: opened("/data/fifo", W | os.O_NONBLOCK),
    "fifo_rdwr": lambda: opened("/data/fifo", os.O_RDWR),
    "private": lambda: opened("/data/private/secret", W),
    "readonly_mode": lambda: opened("/data/ro_file", W),
    "ro_volume": lambda: opened("/ro/file", W),
    "dev_null": lambda: opened("/dev/null", W),
    "relative": lambda: opened("dir/inner", W | A),
    "dirfd": lambda: opened("file8", W | A, dirfd=data),
    "dirfd_absolute": lambda: opened("/data/file8", W | A, dirfd=data),
    "trailing_slash": lambda: opened("/data/file/", W),
    "double_slash": lambda: opened("/data//file9", W | A),
    "dot": lambda: opened("/data/./file9", W | A),
    "dotdot": lambda: opened("/data/dir/../file9", W | A),
    "above_root": lambda: opened("/../../data/file9", W | A),
    "through_proc": lambda: opened("/proc/self/cwd/file10", W | A),
    "developer_named": lambda: opened("/data/devfile", W | A),
    "name_too_long": lambda: opened("/data/" + "x" * 300, W | C),
    "path_too_long": lambda: opened("/data/" + "a/" * 2100 + "f", W),
    "tmpfile": lambda: opened("/data/dir", O_TMPFILE | W, 0o600),
    "o_path": lambda: opened("/data/file", O_PATH | W),
    "bad_pointer": lambda: opened(ctypes.c_void_p(1), W),
    "empty": lambda: opened("", W),
}
print(json.dumps({name: attempt(case) for name, case in cases.items()}))
"""
)

FILES = ("file", "file2", "file3", "file4", "file5", "file6", "file7", "file8", "file9", "file10", "devfile", "ro_file")
C_SERVED_AT_LEAST = 20  # the plain cases: wronly ... noatime, relative, dirfd, the creations but for O_EXCL ...


def _volume(root: Path, owner: int | str | None) -> Path:
    """The cases' volume (and a read-only one beside it, /ro); ``owner``: a VM user's uid, or
    a rootless runner's user, who then owns all but the private file and its directory."""
    data = root / "data"
    (data / "dir").mkdir(parents=True)
    for name in FILES:
        (data / name).write_text(f"{name} content\n")
    os.chmod(data / "ro_file", 0o444)
    (data / "dir" / "inner").write_text("inner\n")
    (data / "link").symlink_to("file")
    (data / "dangling").symlink_to("missing2")
    (data / "private").mkdir(mode=0o700)
    (data / "private" / "secret").write_text("secret\n")
    os.mkfifo(data / "fifo")
    (root / "ro").mkdir()
    (root / "ro" / "file").write_text("read-only\n")
    (root / "probe").mkdir()
    (root / "probe" / "probe.py").write_text(PROBE)
    for path in [root, root / "probe", root / "ro"]:
        os.chmod(path, 0o755)
    if owner is not None:
        for path in [data, *data.rglob("*"), root / "ro" / "file"]:
            if not path.is_symlink() and path.name not in ("private", "secret"):
                if isinstance(owner, int):
                    os.chown(path, owner, owner)
                else:
                    chown_to(path, owner)
    sgid = data / "sgid"  # a setgid directory of another group: what is made in it takes that group
    sgid.mkdir()
    os.chown(sgid, -1, 4242)
    os.chmod(sgid, 0o2777)
    return data


def _in_python(runner: Hvfs) -> Hvfs:
    return runner.with_env(HVFS_SERVED_WRITE="0", HVFS_STATE_DIR=state_dir(runner.user, "no-served-write"))


def _open_served(stats: dict[str, Any]) -> int:
    served: int = stats["compiled"].get("open_served", 0)
    return served


def _compared(
    runner: Hvfs, root: Path, owner: int | str | None, *options: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The probe run served in C and on the Python path, each on a fresh volume: answers, files
    and diffs compared; the C run's answers, and each run's statistics."""
    in_c, in_python = compared_runs(
        runner, _in_python(runner), root, owner, lambda place: _volume(place, owner), *options
    )
    assert in_c.diff == in_python.diff and "C /data/file" in in_c.diff and "A /data/new1" in in_c.diff, in_c.diff
    return in_c.answers, in_c.stats, in_python.stats


def _both_ways(runner: Hvfs, root: Path, owner: int | str | None, *options: str) -> dict[str, Any]:
    """The probe compared in C and on the Python path, and C's share counted; the C run's answers."""
    in_c, c_stats, python_stats = _compared(runner, root, owner, *options)
    # C served the plain ones: counted as the manager's own opens, none of them on Python's run
    assert _open_served(c_stats) - _open_served(python_stats) >= C_SERVED_AT_LEAST, (c_stats, python_stats)
    assert c_stats["requests"]["open"] == python_stats["requests"]["open"]
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
    assert in_c["append"][1][0] & os.O_APPEND and in_c["trunc"][1][6] == 2
    assert in_c["private"] == (["error", 13] if as_user else in_c["private"])
    assert in_c["readonly_mode"] == (["error", 13] if as_user else in_c["readonly_mode"])
    assert in_c["ro_volume"] == ["error", 30] and in_c["a_directory"] == ["error", 21]
    assert in_c["wronly"][1][3] == (1000 if as_user else 0)


@pytest.mark.rootless
@pytest.mark.parametrize("profile", ["strict", "default"])
def test_a_rootless_vm_answers_as_the_python_path(rootless: Hvfs, shared_tmp: Path, profile: str) -> None:
    assert rootless.user is not None
    in_c = _both_ways(rootless, shared_tmp, rootless.user, *(("--default",) if profile == "default" else ()))
    assert in_c["wronly"][0] == "ok" and in_c["private"][0] == "ok"


def test_an_audited_vms_write_opens_are_served_in_c_and_recorded_alike(hvfs: Hvfs, tmp_path: Path) -> None:
    records = []
    for name, way in (("c", hvfs), ("python", _in_python(hvfs))):
        place = tmp_path / name
        place.mkdir()
        _volume(place, None)
        log = place / "audit.jsonl"
        answers, stats, _ = run_probe(way, place, "--audit", str(log))
        kept = [json.loads(line) for line in log.read_text().splitlines()]
        opens = [{k: v for k, v in r.items() if k not in ("time", "vm", "pid", "duration_us")} for r in kept]
        records.append((answers, [r for r in opens if r.get("operation") == "open"], stats))
    (in_c, c_opens, c_stats), (in_python, python_opens, python_stats) = records
    assert in_c == in_python and c_opens == python_opens
    assert any(r.get("paths") == ["/data/file"] for r in c_opens), c_opens
    # the audited VM's plain write-opens are served in C (served_audit.h records them)
    assert _open_served(c_stats) - _open_served(python_stats) >= C_SERVED_AT_LEAST, (c_stats, python_stats)


def _written_andrun_probe(runner: Hvfs, root: Path, *profile: str) -> None:
    data = root / "data"
    data.mkdir()
    if runner.user is not None:
        chown_to(data, runner.user)
    stats = root / "stats.json"
    script = """
        cd /data
        i=0
        while [ $i -lt 60 ]; do
            i=$((i + 1))
            : > s$i
            chmod +x s$i
            sh -c ': > "$0" && printf "#!/bin/sh\\necho ran\\n" > "$0" && exec "./$0"' s$i
        done
        """
    out = runner.ok("run", *profile, "--stats", str(stats), "-v", f"{data}:/data", "--", "sh", "-euc", script)
    assert out.split() == ["ran"] * 60, out
    assert (data / "s60").read_text() == "#!/bin/sh\necho ran\n"
    assert _open_served(json.loads(stats.read_text())) >= 60


@pytest.mark.parametrize("profile", ["strict", "default"])
def test_a_script_written_through_a_served_open_runs_at_once(hvfs: Hvfs, tmp_path: Path, profile: str) -> None:
    """The C loop closes its copy of a writable file before it answers: a script written (its
    open served in C: the process's second, once its credentials are known) and run at once
    never fails with ETXTBSY."""
    _written_andrun_probe(hvfs, tmp_path, *(["--strict"] if profile == "strict" else []))


@pytest.mark.rootless
def test_a_rootless_vms_script_written_through_a_served_open_runs_at_once(rootless: Hvfs, shared_tmp: Path) -> None:
    _written_andrun_probe(rootless, shared_tmp, "--strict")
