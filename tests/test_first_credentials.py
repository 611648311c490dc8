"""A caller's credentials read and kept by the seccomp driver's C loop
(hvfs/_native/first_credentials.h) are what the Python path reads: the same fields of the
same thread's /proc status (hotpath.first_read, the loop's own read, against procfs.py
parse_credentials and served_stat.py switch_of), for a VM user with supplementary groups
and its own umask, a setgid program, root with dropped capabilities; and a strict VM run
with them read in C (``HVFS_FIRST_CREDENTIALS``, on by default) answers and leaves exactly
what one whose credentials Python reads does, as root, as ``-u 1000:1000``, as root with its
fsgid set as a setgid program's and as root without its file capabilities (a capset, after
which C reads them again). Issue 14: make's new processes sent their first served request to
Python only for it to read their credentials."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hvfs._native import hotpath
from hvfs.intercept.procfs import parse_credentials
from hvfs.intercept.served_stat import switch_of
from tests.conftest import SYSTEM_PYTHON, Hvfs, require, state_dir
from tests.served_probe import ATTEMPT, both_ways, run_probe, snapshot

NATIVE = "the native hot path is not built: no C loop reads credentials"
CAP_CHOWN, CAP_FOWNER = 0, 3
# Clears every effective capability but CAP_CHOWN and CAP_FOWNER (this thread: the raw capset).
DROP_CAPS = r"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
header = (ctypes.c_uint32 * 2)(0x20080522, 0)
data = (ctypes.c_uint32 * 6)()
assert libc.syscall(125, header, data) == 0  # capget
data[0], data[3] = (1 << 0) | (1 << 3), 0  # effective, low and high words
assert libc.syscall(126, header, data) == 0, ctypes.get_errno()  # capset
"""
HOLD = "import sys\n{setup}\nprint('ready', flush=True)\nsys.stdin.read()\n"


def _held(command: list[str], **options: Any) -> subprocess.Popen[str]:
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, **options)
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    return child


@pytest.fixture
def processes(shared_tmp: Path) -> Iterator[dict[str, int]]:
    """Live processes by identity: their pids."""
    require(hotpath is not None, NATIVE)
    require(os.geteuid() == 0, "the identities are made by root")
    python = SYSTEM_PYTHON  # readable by any user
    held = {
        "user": _held(
            [python, "-c", HOLD.format(setup="")], user=1000, group=1000, extra_groups=[27, 100], umask=0o027
        ),
        "capless_root": _held([python, "-c", HOLD.format(setup=DROP_CAPS)], umask=0o002),
        "many_groups": _held([python, "-c", HOLD.format(setup="")], extra_groups=list(range(2000, 2040))),
    }
    sleeper = shared_tmp / "sleep-setgid"  # a real setgid program, run by uid 1000
    shutil.copy("/bin/sleep", sleeper)
    os.chown(sleeper, 0, 50)
    os.chmod(sleeper, 0o2755)
    setgid = subprocess.Popen([str(sleeper), "60"], user=1000, group=1000, extra_groups=[1000])
    for _ in range(500):  # its exec done: the egid is the program's group
        if Path(f"/proc/{setgid.pid}/status").read_text().split("\nGid:")[1].split()[1] == "50":
            break
        time.sleep(0.01)
    pids = {name: child.pid for name, child in held.items()} | {"setgid": setgid.pid}
    try:
        yield pids
    finally:
        setgid.kill()
        setgid.wait()
        for child in held.values():
            child.kill()
            child.communicate()  # reaped, its pipes closed


def test_the_loops_read_of_a_thread_is_pythons(processes: dict[str, int]) -> None:
    for name, pid in processes.items():
        got = hotpath.first_read(pid)
        creds = parse_credentials(Path(f"/proc/{pid}/status").read_bytes())
        if name == "many_groups":  # more than a published record holds: Python's, as before
            assert got is None and len(creds.groups) == 40
            continue
        assert got is not None, name
        fields = (creds.uid, creds.gid, creds.groups, creds.umask, creds.capabilities, creds.real_uid, creds.real_gid)
        assert got[:7] == fields, name
        switch = switch_of(creds)
        assert switch is not None
        what, _, _, _, effective = switch
        assert got[7:] == (what, effective, int(switch_of(creds.for_access()) == switch)), name
    user, setgid, capless = (hotpath.first_read(processes[name]) for name in ("user", "setgid", "capless_root"))
    assert user[:4] == (1000, 1000, (27, 100), 0o027) and user[4] == 0  # groups, umask, no capabilities
    require(setgid[1] == 50, "the setgid bit took no effect here (a nosuid mount)")
    assert (setgid[1], setgid[6]) == (50, 1000) and setgid[9] == 0  # access(2) switches otherwise
    assert capless[0] == 0 and capless[3] == 0o002 and capless[4] == (1 << CAP_CHOWN) | (1 << CAP_FOWNER)


PROBE = (
    r"""
import json, os, sys
mode = sys.argv[1]
if mode == "setgid":
    os.setresgid(0, 50, 50)  # a setgid program's ids: real 0, effective (and fs) 50
if mode == "capless":
"""
    + "\n".join("    " + line for line in DROP_CAPS.strip().splitlines())
    + "\n"
    + ATTEMPT
    + r"""
def created(path, mode=0o666):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.close(fd)
    st = os.stat(path)
    return [st.st_mode, st.st_uid, st.st_gid]

def written(path):
    fd = os.open(path, os.O_WRONLY)
    os.write(fd, b"w\n")
    os.close(fd)
    return True

cases = {
    "stat_private": lambda: os.stat("/data/private/secret").st_size,
    "write_root_only": lambda: written("/data/root-only"),
    "write_others_only": lambda: written("/data/others-only"),
    "write_group_only": lambda: written("/data/group-only"),
    "access_root_only": lambda: os.access("/data/root-only", os.W_OK),
    "access_others_only": lambda: os.access("/data/others-only", os.W_OK),
    "create": lambda: created("/data/open/new"),
    "create_in_setgid_dir": lambda: created("/data/sgid/new", 0o777),
    "stat_again": lambda: os.stat("/data/private/secret").st_size,
}
print(json.dumps({name: attempt(case) for name, case in cases.items()}))
"""
)
MODES = {"root": (), "user": ("-u", "1000:1000"), "setgid": (), "capless": ()}


def _place(root: Path, mode: str) -> None:
    data, probe = root / "data", root / "probe"
    for directory in (data / "private", data / "open", data / "sgid", root / "ro", probe):
        directory.mkdir(parents=True)
    os.chmod(data / "private", 0o700)
    (data / "private" / "secret").write_text("s")
    os.chmod(data / "open", 0o777)
    os.chown(data / "sgid", 0, 50)
    os.chmod(data / "sgid", 0o2777)
    for name, owner, group in (("root-only", 0, 0), ("others-only", 1000, 1000), ("group-only", 0, 50)):
        (data / name).write_text("")
        os.chown(data / name, owner, group)
        os.chmod(data / name, 0o600 if name != "group-only" else 0o660)
    (probe / "probe.py").write_text(PROBE.replace("sys.argv[1]", repr(mode)))


@pytest.mark.parametrize("mode", list(MODES))
def test_a_strict_vm_answers_as_when_python_reads_the_credentials(hvfs: Hvfs, tmp_path: Path, mode: str) -> None:
    require(hotpath is not None, NATIVE)
    require(os.geteuid() == 0, "the volume's owners are made by root")
    python_reads = hvfs.with_env(HVFS_FIRST_CREDENTIALS="0", HVFS_STATE_DIR=state_dir(None, "python-reads-credentials"))
    results: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = []
    for way, place in both_ways(hvfs, python_reads, tmp_path, None):
        _place(place, mode)
        answers, stats, _ = run_probe(way, place, *MODES[mode])
        results.append((answers, snapshot(place / "data"), stats["credentials"]))
    (in_c, files_c, counted_c), (in_python, files_python, counted_python) = results
    assert in_c == in_python, (in_c, in_python)
    assert files_c == files_python
    assert counted_c["read_in_c"] > 0 and counted_python["read_in_c"] == 0, (counted_c, counted_python)
    assert counted_c["reads"] < counted_python["reads"], (counted_c, counted_python)
    if mode == "capless":  # the capset made the loop read them again: CAP_DAC_OVERRIDE is gone
        assert in_c["write_others_only"] == ["error", 13] and in_c["create"][0] == "ok", in_c
    if mode == "setgid":
        assert in_c["create"] == ["ok", [0o100644, 0, 50]], in_c
