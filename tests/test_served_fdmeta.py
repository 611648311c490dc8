"""A VM's metadata changes through an fd (fchmod, fchown, futimens) served in the driver's C loop
(hvfs/_native/served_fdmeta.h) answer and change exactly what the Python path does, which
serves them with ``HVFS_SERVED_WRITE=0`` (a manager of its own): every case below, served in C
or declined to Python (an fd from the boot view, a device, a pipe, an O_PATH or a bad fd),
gives the same answer, the same files afterwards (mode, owner, content) and the same
``hvfs diff``, as root, as a VM user (C acting as that user) and rootless, in both profiles;
a tarball GNU tar extracts in a VM leaves the Python path's tree, owners, modes and times; and
an audited VM's changes are recorded alike (under --strict served in C)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Hvfs
from tests.served_probe import ATTEMPT, compared_runs
from tests.test_served_mutate import _extracted_both_ways
from tests.test_served_write import _in_python, _volume

PROBE = (
    r"""
import ctypes, json, os, struct
os.umask(0o022)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
SYS_UTIMENSAT, AT_FDCWD, AT_SYMLINK_NOFOLLOW = 280, -100, 0x100
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2

def made(name, mode=0o600):
    return os.open("/data/" + name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)

def after(fd, change):
    try:
        change(fd)
        st = os.fstat(fd)
        return [st.st_mode, st.st_uid, st.st_gid]
    finally:
        os.close(fd)

def chmodded(fd, mode):
    return after(fd, lambda fd: os.fchmod(fd, mode))

def chowned(fd, uid, gid):
    return after(fd, lambda fd: os.fchown(fd, uid, gid))

def utimensat(fd, times, path=None, flags=0, address=None):
    pair = ctypes.create_string_buffer(struct.pack("<qqqq", *times)) if times else None
    at = address if address is not None else (ctypes.addressof(pair) if pair else None)
    if libc.syscall(SYS_UTIMENSAT, fd, path, at, flags) < 0:
        raise OSError(ctypes.get_errno(), "utimensat")

def timed(fd, times, **how):
    # the times after the change: those the probe set, "now" or "kept" as it asked
    try:
        utimensat(fd, times, **how)
        st = os.stat(how["path"]) if "path" in how else os.fstat(fd)
        got = [st.st_atime_ns, st.st_mtime_ns]
        asked = [times[1], times[3]] if times else [UTIME_NOW, UTIME_NOW]
        return [{UTIME_NOW: "now", UTIME_OMIT: "kept"}.get(nsec, value) for nsec, value in zip(asked, got)]
    finally:
        os.close(fd)

def deleted(name):
    fd = made(name)
    os.unlink("/data/" + name)
    return fd
"""
    + ATTEMPT
    + r"""
cases = {
    "made": lambda: chmodded(made("m1"), 0o640),
    "made_setuid": lambda: chmodded(made("m2"), 0o4755),
    "made_setgid_sticky": lambda: chmodded(made("m3"), 0o3777),
    "made_high_bits": lambda: chmodded(made("m4"), 0o170644),
    "existing_rdwr": lambda: chmodded(os.open("/data/file", os.O_RDWR), 0o600),
    "others_file": lambda: chmodded(os.open("/data/others", os.O_WRONLY), 0o600),
    "readonly_fd": lambda: chmodded(os.open("/data/file2", os.O_RDONLY), 0o604),
    "directory_fd": lambda: chmodded(os.open("/data/dir", os.O_RDONLY | os.O_DIRECTORY), 0o700),
    "o_path": lambda: chmodded(os.open("/data/file3", os.O_PATH), 0o600),
    "bad_fd": lambda: os.fchmod(999, 0o600),
    "a_pipe": lambda: chmodded(os.pipe()[0], 0o600),
    "dev_null": lambda: chmodded(os.open("/dev/null", os.O_WRONLY), 0o666),
    "ro_volume": lambda: chmodded(os.open("/ro/file", os.O_RDONLY), 0o600),
    "deleted": lambda: chmodded(deleted("m5"), 0o600),
    "chown_made": lambda: chowned(made("o1"), 1000, 1000),
    "chown_to_root": lambda: chowned(made("o2"), 0, 0),
    "chown_neither": lambda: chowned(made("o3"), -1, -1),
    "chown_group_alone": lambda: chowned(made("o4"), -1, 4242),
    "chown_setuid_file": lambda: chowned(made("o5", 0o6755), 1000, 1000),
    "chown_others": lambda: chowned(os.open("/data/others", os.O_WRONLY), 1000, 1000),
    "chown_readonly_fd": lambda: chowned(os.open("/data/file4", os.O_RDONLY), 4242, 4242),
    "chown_unmapped": lambda: chowned(made("o6"), 3_000_000_000, -1),
    "chown_dev_null": lambda: chowned(os.open("/dev/null", os.O_WRONLY), 0, 0),
    "times_made": lambda: timed(made("t1"), (1_500_000_000, 123, 1_600_000_000, 456)),
    "times_now": lambda: timed(made("t2"), None),
    "times_omit": lambda: timed(made("t3"), (1_400_000_000, UTIME_NOW, 1_300_000_000, UTIME_OMIT)),
    "times_bad_nsec": lambda: timed(made("t4"), (1, 1_000_000_000, 2, 0)),
    "times_existing": lambda: timed(os.open("/data/file6", os.O_WRONLY), (1_200_000_000, 0, 1_200_000_000, 7)),
    "times_others": lambda: timed(os.open("/data/others", os.O_WRONLY), (1, 0, 2, 0)),
    "times_others_now": lambda: timed(os.open("/data/others", os.O_WRONLY), None),
    "times_readonly_fd": lambda: timed(os.open("/data/file5", os.O_RDONLY), (3, 0, 4, 0)),
    "times_ro_volume": lambda: timed(os.open("/ro/file", os.O_RDONLY), (3, 0, 4, 0)),
    "times_dev_null": lambda: timed(os.open("/dev/null", os.O_WRONLY), (3, 0, 4, 0)),
    "times_bad_fd": lambda: utimensat(999, (3, 0, 4, 0)),
    "times_at_fdcwd": lambda: utimensat(AT_FDCWD, (3, 0, 4, 0)),
    "times_o_path": lambda: timed(os.open("/data/file7", os.O_PATH), (3, 0, 4, 0)),
    "times_nofollow": lambda: timed(made("t5"), (5, 0, 6, 0), flags=AT_SYMLINK_NOFOLLOW),
    "times_bad_address": lambda: timed(made("t6"), (5, 0, 6, 0), address=8),
    "times_by_path": lambda: timed(made("t7"), (5, 0, 6, 0), path=b"/data/file8"),
}
print(json.dumps({name: attempt(case) for name, case in cases.items()}))
"""
)
# made ... made_high_bits, existing_rdwr, others_file; chown_made ... chown_others,
# chown_unmapped; times_made ... times_others_now: C's, served or answered EPERM (EINVAL)
C_SERVED_AT_LEAST = {"chmod": 6, "chown": 7, "utimens": 7}


def _served_here(stats: dict[str, Any], kind: str) -> int:
    """The requests of ``kind`` the C loop answered: served or failed (an errno)."""
    compiled = stats["compiled"]
    return int(compiled.get(f"{kind}_served", 0)) + int(compiled.get(f"{kind}_failed", 0))


def _seccomp_share(c_stats: dict[str, Any], python_stats: dict[str, Any]) -> None:
    """The seccomp loop's share: at least C_SERVED_AT_LEAST of each kind, none in the Python path's."""
    for kind, least in C_SERVED_AT_LEAST.items():
        assert _served_here(c_stats, kind) >= least, (kind, c_stats)
        assert _served_here(python_stats, kind) == 0, (kind, python_stats)


def _with_others(place: Path, owner: int | str | None, probe: str) -> Path:
    """test_served_write's volume in ``place`` with ``others``, a file another user (4243) owns that
    anyone may write, and ``probe`` as the probe: the volume. Also test_served_pathmeta's."""
    data = _volume(place, owner)
    (data / "others").write_text("others\n")
    os.chown(data / "others", 4243, 4243)
    os.chmod(data / "others", 0o666)
    (place / "probe" / "probe.py").write_text(probe)
    return data


def _both_ways(
    runner: Hvfs,
    root: Path,
    owner: int | str | None,
    *options: str,
    share: Callable[[dict[str, Any], dict[str, Any]], None] = _seccomp_share,
) -> dict[str, Any]:
    """The probe run served in C and on the Python path, each on a fresh volume: answers,
    files and diffs compared, and C's share checked (``share``); the C run's answers."""
    in_c, in_python = compared_runs(
        runner, _in_python(runner), root, owner, lambda place: _with_others(place, owner, PROBE), *options
    )
    assert in_c.diff == in_python.diff and "A /data/m1" in in_c.diff and "C /data/file" in in_c.diff, in_c.diff
    share(in_c.stats, in_python.stats)
    return in_c.answers


@pytest.mark.parametrize("profile", ["strict", "default"])
@pytest.mark.parametrize("as_user", [False, True], ids=["root", "vm-user"])
def test_each_fd_metadata_change_answers_as_the_python_path(
    hvfs: Hvfs, tmp_path: Path, as_user: bool, profile: str
) -> None:
    os.chmod(tmp_path, 0o755)
    options = (*(("-u", "1000:1000") if as_user else ()), *(("--default",) if profile == "default" else ()))
    in_c = _both_ways(hvfs, tmp_path, 1000 if as_user else None, *options)
    assert in_c["made"] == ["ok", [0o100640, 1000 if as_user else 0, 1000 if as_user else 0]]
    assert in_c["made_setuid"][1][0] == 0o104755 and in_c["made_high_bits"][1][0] == 0o100644
    assert in_c["others_file"] == (["error", 1] if as_user else ["ok", [0o100600, 4243, 4243]])
    assert in_c["o_path"] == ["error", 9] and in_c["bad_fd"] == ["error", 9] and in_c["dev_null"] == ["error", 1]
    assert in_c["ro_volume"] == ["error", 30]
    assert in_c["chown_to_root"] == (["error", 1] if as_user else ["ok", [0o100600, 0, 0]])
    assert in_c["chown_group_alone"] == (["error", 1] if as_user else ["ok", [0o100600, 0, 4242]])
    assert in_c["chown_neither"][0] == "ok" and in_c["chown_dev_null"] == ["error", 1]
    assert in_c["times_made"] == ["ok", [1_500_000_000 * 10**9 + 123, 1_600_000_000 * 10**9 + 456]]
    assert in_c["times_omit"] == ["ok", ["now", "kept"]] and in_c["times_bad_nsec"] == ["error", 22]
    assert in_c["times_others"] == (["error", 1] if as_user else ["ok", [10**9, 2 * 10**9]])
    assert in_c["times_others_now"] == ["ok", ["now", "now"]] and in_c["times_bad_address"] == ["error", 14]


@pytest.mark.rootless
def test_a_rootless_vms_fd_metadata_changes_answer_as_the_python_path(rootless: Hvfs, shared_tmp: Path) -> None:
    assert rootless.user is not None
    in_c = _both_ways(rootless, shared_tmp, rootless.user)
    assert in_c["made"][0] == "ok" and in_c["made"][1][0] == 0o100640


@pytest.mark.parametrize("profile", ["--strict", "--diff"], ids=["strict", "default"])
def test_tar_in_a_vm_leaves_the_python_paths_owners_modes_and_times(hvfs: Hvfs, tmp_path: Path, profile: str) -> None:
    (in_c, c_stats, _), (_, python_stats, _) = _extracted_both_ways(hvfs, tmp_path, profile)
    assert len(in_c) == 311
    assert in_c["tree/d3/f13"][:2] == [0o100644, 1000] and in_c["tree/d2/f12"][:2] == [0o100755, 0]
    for kind, least in C_SERVED_AT_LEAST.items():
        assert _served_here(c_stats, kind) >= least, (kind, c_stats)
        assert _served_here(python_stats, kind) == 0, (kind, python_stats)


@pytest.mark.parametrize("profile", ["--strict", "--diff"], ids=["strict", "default"])
def test_an_audited_vms_fd_metadata_changes_are_recorded_alike(hvfs: Hvfs, tmp_path: Path, profile: str) -> None:
    script = (
        "import os\n"
        "fd = os.open('/data/f', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)\n"
        "os.fchmod(fd, 0o640); os.fchown(fd, 0, 0); os.utime(fd, ns=(1, 2)); os.close(fd)\n"
    )
    records = []
    for name, way in (("c", hvfs), ("python", _in_python(hvfs))):
        place = tmp_path / name
        (place / "data").mkdir(parents=True)
        log, stats = place / "audit.jsonl", place / "stats.json"
        options = ["--audit", str(log), "--stats", str(stats), "-v", f"{place / 'data'}:/data"]
        result = way.run("run", profile, *options, "--", "python3", "-c", script)
        kept = [json.loads(line) for line in log.read_text().splitlines()]
        changes = [
            {k: v for k, v in r.items() if k not in ("time", "vm", "pid", "duration_us")}
            for r in kept
            if r.get("operation") in ("chmod", "chown", "utimens")
        ]
        st = (place / "data" / "f").stat()
        compiled = json.loads(stats.read_text())["compiled"]
        records.append((result.returncode, changes, [st.st_mode, st.st_uid, st.st_mtime_ns], compiled))
    (c_code, c_changes, c_file, c_stats), (python_code, python_changes, python_file, _) = records
    assert (c_code, c_changes, c_file) == (python_code, python_changes, python_file) == (0, c_changes, c_file)
    assert len(c_changes) == 3 and c_file == [0o100640, 0, 2], c_changes
    # --strict: served in C, each recorded there; the default profile's are Python's (runtime.py)
    served = 1 if profile == "--strict" else 0
    assert all(_served_here({"compiled": c_stats}, kind) == served for kind in ("chmod", "chown", "utimens")), c_stats
