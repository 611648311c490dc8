"""A write-open of a character device under /dev, continued by the C receive loop
(hvfs/_native/served_dev.h), answers, counts and changes exactly what the Python path does
(``HVFS_SERVED_WRITE=0``: a manager of its own): every case below, continued in C or declined
to Python, gives the same answer, the same bytes written (or errno), the same request counts,
the same files and the same ``hvfs diff``, in the default and the strict profile, as root, as
a VM user and rootless, under the seccomp driver and ``--driver ptrace`` (whose tracer's C loop
lets the call run: tracer_write.h); and C continued the plain ones, the Python run none."""

from __future__ import annotations

import ctypes
import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Hvfs, chown_to, state_dir
from tests.served_probe import ATTEMPT, AUDIT, audit_records, both_ways, compared_runs, run_probe, snapshot
from tests.test_served_write import _in_python

PROBE = (
    r"""
import ctypes, errno, fcntl, json, os, stat
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
W, RW, C, T, X, NF = os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_EXCL, os.O_NOFOLLOW

def opened(path, flags, mode=0o644, dirfd=AT_FDCWD, creat=False):
    fd = libc.creat(path.encode(), mode) if creat else libc.openat(dirfd, path.encode(), flags, mode)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "open")
    try:
        st = os.fstat(fd)
        try:
            wrote = os.write(fd, b"marker\n")
        except OSError as e:
            wrote = -e.errno
        kind = "chr" if stat.S_ISCHR(st.st_mode) else "reg" if stat.S_ISREG(st.st_mode) else oct(st.st_mode)
        return [kind, os.major(st.st_rdev), os.minor(st.st_rdev), fcntl.fcntl(fd, fcntl.F_GETFL), wrote]
    finally:
        os.close(fd)
"""
    + ATTEMPT
    + r"""
held = os.open("/data/file", os.O_WRONLY | os.O_APPEND)
null = os.open("/dev/null", os.O_RDONLY)
cases = {
    "null": lambda: opened("/dev/null", W),
    "null_creat_trunc": lambda: opened("/dev/null", W | C | T),
    "null_excl": lambda: opened("/dev/null", W | C | X),
    "null_rdwr": lambda: opened("/dev/null", RW),
    "null_nofollow": lambda: opened("/dev/null", W | NF),
    "null_creat_call": lambda: opened("/dev/null", 0, creat=True),
    "zero": lambda: opened("/dev/zero", RW),
    "full": lambda: opened("/dev/full", W),
    "urandom": lambda: opened("/dev/urandom", W),
    "tty": lambda: opened("/dev/tty", W),
    "symlink_to_null": lambda: opened("/data/to_null", W),
    "nofollow_symlink": lambda: opened("/data/to_null", W | NF),
    "dev_symlink_nofollow": lambda: opened("/dev/stdout", W | NF),
    "ptmx": lambda: opened("/dev/ptmx", RW | os.O_NOCTTY),
    "missing": lambda: opened("/dev/missing", W),
    "missing_creat": lambda: opened("/dev/made", W | C, 0o600),
    "missing_dir": lambda: opened("/dev/nodir/null", W),
    "a_directory": lambda: opened("/dev/shm", W),
    "trailing_slash": lambda: opened("/dev/null/", W),
    "double_slash": lambda: opened("/dev//null", W),
    "dotdot": lambda: opened("/dev/../dev/null", W),
    "relative": lambda: opened("null", W, dirfd=os.open("/dev", os.O_RDONLY | os.O_DIRECTORY)),
    "dev_fd": lambda: opened(f"/dev/fd/{held}", W | os.O_APPEND),
    "proc_fd_writable": lambda: opened(f"/proc/self/fd/{held}", W | os.O_APPEND),
    "proc_fd_null": lambda: opened(f"/proc/self/fd/{null}", W),
}
answers = {}
for name, case in cases.items():
    answers[name] = attempt(case)
    answers[name + "_again"] = attempt(case)  # the first of a process may be Python's (credentials)
print(json.dumps(answers))
"""
)

# Continued in C: the /dev cases whose path is a plain one to a character device (each twice).
C_CONTINUED_AT_LEAST = 16


def _volume(root: Path, owner: int | str | None) -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    (data / "file").write_text("file content\n")
    (data / "to_null").symlink_to("/dev/null")
    (root / "ro").mkdir()
    (root / "probe").mkdir()
    (root / "probe" / "probe.py").write_text(PROBE)
    for path in [root, root / "probe", root / "ro"]:
        os.chmod(path, 0o755)
    if owner is not None:
        for path in [data, data / "file"]:
            if isinstance(owner, int):
                os.chown(path, owner, owner)
            else:
                chown_to(path, owner)
    return data


def _compared(runner: Hvfs, root: Path, owner: int | str | None, *options: str) -> dict[str, Any]:
    """The probe run in C and on the Python path, each on a fresh volume: answers, request
    counts, files and diffs compared; C's continued opens counted. The C run's answers."""
    in_c, in_python = compared_runs(
        runner, _in_python(runner), root, owner, lambda place: _volume(place, owner), *options
    )
    assert in_c.files["file"][3] == "file content\n" + "marker\n" * 4
    assert in_c.diff == in_python.diff and "C /data/file" in in_c.diff, in_c.diff
    assert ("A /dev/made" in in_c.diff) == (in_c.answers["missing_creat"][0] == "ok"), in_c.diff
    assert in_c.stats["requests"]["open"] == in_python.stats["requests"]["open"], (in_c.stats, in_python.stats)
    if "ptrace" in options:  # the tracer's loop let them run (its count of the stops it answered)
        assert in_c.stats["driver"] == "ptrace" and in_c.stats["loop"] == "native", in_c.stats
        assert in_c.stats["dev_continued_here"] >= C_CONTINUED_AT_LEAST, in_c.stats
        assert in_python.stats["dev_continued_here"] == 0, in_python.stats
        return in_c.answers
    # strict: C continues some read-only opens on both runs (served_stat.h serve_open)
    continued = [stats["compiled"].get("open_continued", 0) for stats in (in_c.stats, in_python.stats)]
    assert continued[0] - continued[1] >= C_CONTINUED_AT_LEAST, (in_c.stats, in_python.stats)
    return in_c.answers


def _expected(in_c: dict[str, Any], as_root: bool) -> None:
    """What the kernel answers each case with, whichever path continued it (VM root may
    make a file in /dev, which the writable view holds; another user may not)."""
    null = ["chr", 1, 3]
    assert in_c["null"][0] == "ok" and in_c["null"][1][:3] == null and in_c["null"][1][4] == 7
    assert in_c["null_creat_trunc"][1][:3] == null and in_c["null_creat_call"][1][:3] == null
    assert in_c["null_excl"] == ["error", 17] and in_c["null_nofollow"][1][:3] == null
    assert in_c["full"][1][4] == -28 and in_c["zero"][1][:3] == ["chr", 1, 5]  # ENOSPC
    assert in_c["tty"] == ["error", 6]  # ENXIO: no controlling terminal
    assert in_c["symlink_to_null"][1][:3] == null and in_c["nofollow_symlink"] == ["error", 40]
    assert in_c["dev_symlink_nofollow"] == ["error", 40] and in_c["missing"] == ["error", 2]
    assert in_c["missing_creat"][1][0] == "reg" if as_root else in_c["missing_creat"] == ["error", 13]
    assert in_c["missing_dir"] == ["error", 2]
    assert in_c["a_directory"] == ["error", 21] and in_c["trailing_slash"] == ["error", 20]
    assert in_c["double_slash"][1][:3] == null and in_c["relative"][1][:3] == null
    assert in_c["dev_fd"][1][0] == "reg" and in_c["proc_fd_writable"][1][0] == "reg"
    assert in_c["proc_fd_null"] == ["error", 13]  # a read-only fd is not reopened for writing (reopening.py)
    for name in [name for name in in_c if not name.endswith("_again")]:
        assert in_c[name + "_again"][0] == in_c[name][0], name


DRIVERS = pytest.mark.parametrize("driver", [(), ("--driver", "ptrace")], ids=["seccomp", "ptrace"])


@DRIVERS
@pytest.mark.parametrize("profile", ["default", "strict"])
@pytest.mark.parametrize("as_user", [False, True], ids=["root", "vm-user"])
def test_a_device_write_open_answers_as_the_python_path(
    hvfs: Hvfs, tmp_path: Path, as_user: bool, profile: str, driver: tuple[str, ...]
) -> None:
    os.chmod(tmp_path, 0o755)
    options = (*(("-u", "1000:1000") if as_user else ()), *(("--default",) if profile == "default" else ()), *driver)
    _expected(_compared(hvfs, tmp_path, 1000 if as_user else None, *options), not as_user)


@pytest.mark.rootless
@DRIVERS
@pytest.mark.parametrize("profile", ["default", "strict"])
def test_a_rootless_vms_device_write_open_answers_as_the_python_path(
    rootless: Hvfs, shared_tmp: Path, profile: str, driver: tuple[str, ...]
) -> None:
    assert rootless.user is not None
    options = (*(("--default",) if profile == "default" else ()), *driver)
    _expected(_compared(rootless, shared_tmp, rootless.user, *options), True)


def _audited(runner: Hvfs, root: Path, owner: int | str | None, *options: str) -> list[dict[str, Any]]:
    """The probe run audited, served in C and on the Python path, each on a fresh volume:
    answers, files, diffs, request counts and audit records alike; C continued the plain
    device opens and recorded each one (a strict VM's: the default profile's audited VM is
    Python's alone). The C run's open records."""
    runs = []
    for way, place in both_ways(runner, _in_python(runner), root, owner):
        data = _volume(place, owner)
        answers, stats, diff = run_probe(way, place, *options, "--audit", AUDIT)
        runs.append((answers, audit_records(place), stats, diff, snapshot(data)))
    (in_c, c_records, c_stats, *c_rest), (in_python, python_records, python_stats, *python_rest) = runs
    assert in_c == in_python and c_rest == python_rest, (in_c, in_python)  # and the diffs, the files
    assert c_records == python_records, [(a, b) for a, b in zip(c_records, python_records, strict=False) if a != b][:3]
    assert c_stats["requests"]["open"] == python_stats["requests"]["open"], (c_stats, python_stats)
    continued = [stats["compiled"].get("open_continued", 0) for stats in (c_stats, python_stats)]
    if "--default" in options:  # an audited VM of the default profile has nothing served in C (runtime.py)
        assert continued == [0, 0], (c_stats["compiled"], python_stats["compiled"])
    else:
        assert continued[0] - continued[1] >= C_CONTINUED_AT_LEAST, (c_stats["compiled"], python_stats["compiled"])
    opens = [r for r in c_records if r.get("operation") == "open"]
    assert sum(r.get("paths") == ["/dev/null"] and r.get("result") == "continued" for r in opens) >= 10, opens
    return opens


@pytest.mark.parametrize("profile", ["default", "strict"])
@pytest.mark.parametrize("as_user", [False, True], ids=["root", "vm-user"])
def test_an_audited_vms_device_write_opens_are_continued_in_c_and_recorded_as_python_records_them(
    hvfs: Hvfs, tmp_path: Path, as_user: bool, profile: str
) -> None:
    """An audited strict VM's write-open of a device is continued by the C loop (served_dev.h)
    and its event recorded there ("continued", named as served.py names it): the same
    records, in the same order, as the Python path's, and the same answers, files and counts."""
    os.chmod(tmp_path, 0o755)
    owner = 1000 if as_user else None
    options = (*(("-u", "1000:1000") if as_user else ()), *(("--default",) if profile == "default" else ()))
    opens = _audited(hvfs, tmp_path, owner, *options)
    assert {r["paths"][0] for r in opens if r["result"] == "continued"} >= {"/dev/null", "/dev/zero", "/dev/full"}


@pytest.mark.rootless
@pytest.mark.parametrize("profile", ["default", "strict"])
def test_a_rootless_audited_vms_device_write_opens_are_recorded_as_python_records_them(
    rootless: Hvfs, shared_tmp: Path, profile: str
) -> None:
    assert rootless.user is not None
    _audited(rootless, shared_tmp, rootless.user, *(("--default",) if profile == "default" else ()))


MANY_PROBE = r"""
import os
for n in range(30):  # one serve call: the watch made after four probes, then verdicts kept
    for path in ("/dev/null", "/dev/zero", "/dev/full", "/dev/urandom"):
        os.close(os.open(path, os.O_WRONLY | (os.O_CREAT | os.O_TRUNC if n % 2 else 0)))
print("{}")
"""


@pytest.mark.parametrize("as_user", [False, True], ids=["root", "vm-user"])
def test_an_audited_vms_kept_device_verdicts_are_recorded_as_python_records_them(
    hvfs: Hvfs, tmp_path: Path, as_user: bool
) -> None:
    """120 device opens in a row of an audited strict VM, most continued on a verdict kept and
    named with /dev's name kept (served_dev.h): the same records as the Python path's."""
    os.chmod(tmp_path, 0o755)
    records = []
    for way, place in both_ways(hvfs, _in_python(hvfs), tmp_path, None):
        _volume(place, 1000 if as_user else None)
        (place / "probe" / "probe.py").write_text(MANY_PROBE)
        options = ("-u", "1000:1000") if as_user else ()
        _, stats, _ = run_probe(way, place, *options, "--audit", AUDIT)
        records.append((audit_records(place), stats["compiled"].get("open_continued", 0)))
    (c_records, c_continued), (python_records, python_continued) = records
    assert c_records == python_records
    devices = [r for r in c_records if r["operation"] == "open" and r["paths"][0].startswith("/dev/")]
    assert len(devices) == 120 and {r["result"] for r in devices} == {"continued"}, devices[:3]
    assert c_continued - python_continued >= 120, (c_continued, python_continued)


LOCKED_PROBE = (
    r"""
import json, os
"""
    + ATTEMPT
    + r"""
def opened(path):
    os.close(os.open(path, os.O_WRONLY))
    return "opened"

os.mkdir("/dev/locked", 0o700)  # root's alone: a user may not search it
os.symlink("/dev/null", "/dev/locked/null")
read, write = os.pipe()
child = os.fork()
if child == 0:
    os.setgroups([])
    os.setgid(1000)
    os.setuid(1000)
    answers = {}
    for n in range(3):
        answers[f"locked_{n}"] = attempt(lambda: opened("/dev/locked/null"))
        answers[f"null_{n}"] = attempt(lambda: opened("/dev/null"))
    os.write(write, json.dumps(answers).encode())
    os._exit(0)
os.close(write)
os.waitpid(child, 0)
print(os.read(read, 65536).decode())
"""
)


@DRIVERS
@pytest.mark.parametrize("profile", ["default", "strict"])
def test_a_device_behind_a_directory_the_caller_may_not_search_is_failed_as_python_fails_it(
    hvfs: Hvfs, tmp_path: Path, profile: str, driver: tuple[str, ...]
) -> None:
    """Why the probe acts as the caller: a user's write-open of a device through a directory
    under /dev only root may search fails EACCES in Python's probe, which answers and counts
    it (failed); probed with the manager's rights it would be continued (and failed by the
    kernel: the same answer, another count). So C declines it, and both runs count alike."""
    os.chmod(tmp_path, 0o755)
    runs = []
    for way, place in both_ways(hvfs, _in_python(hvfs), tmp_path, None):
        _volume(place, None)
        (place / "probe" / "probe.py").write_text(LOCKED_PROBE)
        answers, stats, _ = run_probe(way, place, *(("--default",) if profile == "default" else ()), *driver)
        runs.append((answers, stats))
    (in_c, c_stats), (in_python, python_stats) = runs
    assert in_c == in_python, (in_c, in_python)
    assert all(in_c[f"locked_{n}"] == ["error", 13] and in_c[f"null_{n}"] == ["ok", "opened"] for n in range(3)), in_c
    assert c_stats["requests"]["open"] == python_stats["requests"]["open"], (c_stats, python_stats)
    assert c_stats["requests"]["open"].get("failed", 0) >= 3, c_stats  # Python's answers, C's declines
    here = "dev_continued_here" if driver else "compiled"  # the user's /dev/null: C's
    continued = [stats[here] if driver else stats[here].get("open_continued", 0) for stats in (c_stats, python_stats)]
    assert continued[0] - continued[1] >= 2, (c_stats, python_stats)


WATCHED_PROBE = (
    r"""
import json, os, stat, threading, time
"""
    + ATTEMPT
    + r"""
open("/dev/spare", "w").close()
stop = False

def warm():
    while not stop:
        try:
            os.close(os.open("/dev/zero", os.O_WRONLY))
        except OSError:
            pass

thread = threading.Thread(target=warm)
thread.start()
time.sleep(0.3)
print("ready", flush=True)
while not os.path.exists("/data/go"):
    time.sleep(0.002)

def opened():
    fd = os.open("/dev/zero", os.O_WRONLY)
    try:
        return "reg" if stat.S_ISREG(os.fstat(fd).st_mode) else "other"
    finally:
        os.close(fd)

answer = attempt(opened)
stop = True
thread.join()
print(json.dumps(answer))
"""
)
RENAME_EXCHANGE = 2


def _exchanged_in_the_view(state: str) -> None:
    """/dev/zero and /dev/spare exchanged in the running VM's writable view by the host, through
    the manager's own fd of it (/proc/PID/fd/N: the boot view's fd refuses, EROFS): a change
    of the view no request of the VM's makes."""
    pid = json.loads((Path(state) / "manager.json").read_text())["pid"]
    renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    for entry in sorted(Path(f"/proc/{pid}/fd").iterdir()):
        dev = entry / "dev"
        try:
            if not (dev / "spare").is_file() or not stat.S_ISCHR(os.stat(dev / "zero").st_mode):
                continue
        except OSError:
            continue
        if renameat2(-100, bytes(dev / "zero"), -100, bytes(dev / "spare"), RENAME_EXCHANGE) == 0:
            return
    raise AssertionError("no writable view of the VM among the manager's fds")


def test_a_kept_device_verdict_is_forgotten_on_a_change_no_request_of_the_vm_made(hvfs: Hvfs, tmp_path: Path) -> None:
    """served_dev.h keeps a device's verdict while its inotify watch reports no change of the
    writable view's /dev: a change made while the C loop answers, here by the host through the
    manager's fd of the view (a takeover's Python worker, the manager's own commands, make
    them so), is seen: /dev/zero, a regular file now, is the manager's to serve (its writes
    noted), never continued on the verdict kept for the device (the kernel's EROFS on the boot
    view's read-only /dev)."""
    os.chmod(tmp_path, 0o755)
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "probe.py").write_text(WATCHED_PROBE)
    state = state_dir(None, "dev-watch")
    runner = hvfs.with_env(HVFS_STATE_DIR=state)
    volumes = ["-v", f"{data}:/data", "-v", f"{tmp_path / 'probe.py'}:/probe.py:ro"]
    args = [*runner.command, "run", "--strict", "--stats", str(tmp_path / "stats.json"), *volumes]
    with subprocess.Popen([*args, "--", "python3", "/probe.py"], stdout=subprocess.PIPE, text=True) as vm:
        assert vm.stdout is not None
        assert vm.stdout.readline().strip() == "ready"
        _exchanged_in_the_view(state)
        (data / "go").touch()
        out, _ = vm.communicate(timeout=60)
    assert vm.returncode == 0 and json.loads(out) == ["ok", "reg"], out
    compiled = json.loads((tmp_path / "stats.json").read_text())["compiled"]
    assert compiled.get("open_continued", 0) > 10, compiled  # the loop kept its verdict meanwhile


IDLE_PROBE = r"""
import os, time
for _ in range(10):  # a serve call's watch made (served_dev.h: after four probes)
    os.close(os.open("/dev/null", os.O_WRONLY))
os.mkdir("/event")  # served in C, in the same serve call: an event on the watch
os.rmdir("/event")
print("idle", flush=True)
time.sleep(3)
"""


def test_a_watch_with_an_event_unread_leaves_the_loop_asleep(hvfs: Hvfs, tmp_path: Path) -> None:
    """The receive loop polls the kept verdicts' watch with the listener until it is readable,
    then no more (it stays readable until a device open reads it): while the VM sleeps after
    an event no open has read, every thread of its manager is found asleep (a loop polling a
    readable fd would never be: it is running or runnable all the time)."""
    os.chmod(tmp_path, 0o755)
    (tmp_path / "probe.py").write_text(IDLE_PROBE)
    state = state_dir(None, "dev-idle")
    runner = hvfs.with_env(HVFS_STATE_DIR=state)
    stats = tmp_path / "stats.json"
    args = [*runner.command, "run", "--strict", "--stats", str(stats), "-v", f"{tmp_path / 'probe.py'}:/probe.py:ro"]
    with subprocess.Popen([*args, "--", "python3", "/probe.py"], stdout=subprocess.PIPE, text=True) as vm:
        assert vm.stdout is not None
        assert vm.stdout.readline().strip() == "idle"
        pid = json.loads((Path(state) / "manager.json").read_text())["pid"]
        asleep: dict[str, bool] = {}
        for _ in range(40):
            for task in Path(f"/proc/{pid}/task").iterdir():
                try:
                    status = (task / "stat").read_text().rpartition(")")[2].split()[0]
                except OSError:
                    continue
                asleep[task.name] = asleep.get(task.name, False) or status != "R"
            time.sleep(0.01)
        vm.communicate(timeout=60)
    assert vm.returncode == 0
    assert all(asleep.values()), asleep
    compiled = json.loads(stats.read_text())["compiled"]
    assert compiled.get("open_continued", 0) >= 10 and compiled.get("mkdir_served", 0) == 1, compiled
