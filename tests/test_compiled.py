"""The driver's C loop (hvfs/_native/hotpath.c ``serve``, its table hvfs/intercept/compiled.py):
it answers what the table decides without Python, hands everything else to Python, records
what it answers in the in-flight table, and takes nothing from the services."""

from __future__ import annotations

import errno
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hvfs import _native
from hvfs._sys.abi import PR_CAPBSET_DROP, PR_SET_KEEPCAPS, PR_SET_NAME, PR_SET_SECUREBITS
from hvfs.intercept import compiled, inflight
from hvfs.intercept.arch import native as native_arch
from hvfs.intercept.credcache import CredWatch, before_change
from hvfs.intercept.decoders.context import Passthrough
from hvfs.intercept.filter import syscall_numbers
from hvfs.intercept.syscalls import BY_NAME
from hvfs.intercept.tracee import Tracee
from tests.conftest import Hvfs, require

NATIVE = "the native hot path is not built or HVFS_NATIVE=0: the C loop does not run"
TRIES = 200
KEEPCAPS = 10


class _NoReads:
    """A decoder's context that fails the test if the decoder reads anything."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the decoder used the context ({name}) before its Passthrough")


def test_each_compiled_continue_is_its_decoders_passthrough_on_plain_arguments() -> None:
    arch = native_arch()
    decided = compiled.rules(arch)
    numbers = {name: nr for nr, name in syscall_numbers(arch).items()}
    for name, index in compiled.CONTINUE_IF_ARG.items():
        assert decided[numbers[name]] == compiled.Rule(compiled.CONTINUE_IF_IN, index, (0,))
        decoder = BY_NAME[name].decoder
        assert decoder is not None
        args = [7, 1, 1, 3, 0x1000, 0]
        args[index] = 0
        with pytest.raises(Passthrough):
            decoder.decode(_NoReads(), tuple(args))  # type: ignore[arg-type]  # a context that reads nothing
    assert compiled.CONTINUE_IF_ARG
    # A number the manager decides, a checked exec and umask are never compiled (set*id,
    # setgroups and capset are, bumped: tests/test_creds_compiled.py); a number the driver
    # does not serve is its ENOSYS; a number kept for Python is Python's.
    for name in ("openat", "mkdir", "statx", "execve", "umask"):
        assert numbers[name] not in decided, name
    assert decided[numbers["read"]] == compiled.Rule(compiled.ERRNO, errno=errno.ENOSYS)
    assert numbers["prctl"] not in compiled.rules(arch, python={numbers["prctl"]})


def test_a_compiled_prctl_is_one_credcache_continues_without_a_bump() -> None:
    arch = native_arch()
    prctl = compiled.rules(arch)[{name: nr for nr, name in syscall_numbers(arch).items()}["prctl"]]
    assert prctl.kind == compiled.CONTINUE_IF_IN32 and prctl.arg == 0
    for option in (*prctl.values, PR_SET_KEEPCAPS, PR_SET_SECUREBITS, PR_CAPBSET_DROP):
        watch = CredWatch()
        proceeded: list[int] = []
        no_reads: Tracee = _NoReads()  # type: ignore[assignment]
        args = (option, 0, 0, 0, 0, 0)
        done = before_change(
            watch, "prctl", args, no_reads, functools.partial(proceeded.append, option), checks_exec=True
        )
        assert done and proceeded == [option]
        assert (watch.generation == 0) == (option in prctl.values), option  # continued in C only without a bump
        assert watch.usable(0) == (option in prctl.values)


def _script(fanotify_mark: int, prctl: bool) -> str:
    """TRIES fanotify_mark calls with a NULL pathname (continued by the table: the kernel
    fails them EBADF on fd -1), TRIES prctl(PR_SET_NAME) (continued by the table) and
    KEEPCAPS prctl(PR_SET_KEEPCAPS) (Python's), then one write-open of /dev/null (the
    manager's)."""
    script = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"call = lambda: (libc.syscall({fanotify_mark}, -1, 1, 1, -100, None), ctypes.get_errno())[1]\n"
        f"codes = {{call() for _ in range({TRIES})}}\n"
        "fd = os.open('/dev/null', os.O_WRONLY)\n"
        "print(sorted(codes))\n"
    )
    if prctl:
        script += (
            f"names = {{libc.prctl({PR_SET_NAME}, b'named%d' % (n % 3), 0, 0, 0) for n in range({TRIES})}}\n"
            f"kept = {{libc.prctl({PR_SET_KEEPCAPS}, 0, 0, 0, 0) for _ in range({KEEPCAPS})}}\n"
            "print(sorted(names | kept), open('/proc/self/comm').read().strip())\n"
        )
    return script


def test_the_c_loop_counts_what_its_table_says(hvfs: Hvfs, shared_tmp: Path) -> None:
    require(_native.hotpath is not None, NATIVE)
    nr = {name: nr for nr, name in syscall_numbers(native_arch()).items()}["fanotify_mark"]
    stats, audit = shared_tmp / "stats.json", shared_tmp / "audit.jsonl"
    out = hvfs.ok("run", "--strict", "--stats", str(stats), "--audit", str(audit), "--",
                  "python3", "-c", _script(nr, prctl=True))  # fmt: skip
    # The continued calls ran in the kernel, as natively.
    assert out == f"[{errno.EBADF}]\n[0] named{(TRIES - 1) % 3}\n"
    document = json.loads(stats.read_text())
    counts = document["compiled"]
    # Answered in C: only the stats, read-only opens, readlinks and accesses it serves for the
    # audit, recording each (hvfs/_native/served_audit.h); none of the table's errnos here.
    # Continued in C: the table's, and the served kinds' failed lookups (the interpreter's
    # probes of missing paths), recorded as continued (served_resolved.h).
    in_c = sum(n for kind, n in counts.items() if kind.endswith(("_served", "_failed")))
    looked_up = sum(n for kind, n in counts.items() if kind.endswith("_continued"))
    assert counts["continued"] == 2 * TRIES + looked_up and counts["answered"] == in_c
    # Everything else was handed to Python: each request the manager counted but C's
    # answers and looked-up continues, and the credential calls the driver keeps (execs,
    # the KEEPCAPS prctls).
    manager = document["served"] + document["continued"] + document["failed"]
    assert manager > in_c + looked_up and counts["handed_to_python"] >= manager - in_c - looked_up + KEEPCAPS
    # The audit sees every call the manager saw (C's served stats and opens are counted as
    # its own), the one open of /dev/null among them, and none of the calls the table
    # continued in C (the manager never saw them on either path).
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(events) == manager
    assert any("/dev/null" in event["paths"] for event in events), events[-3:]


@pytest.mark.parametrize("runner_fixture", ["hvfs", "hvfs_python"])
def test_both_paths_answer_the_compiled_calls_alike(
    runner_fixture: str, shared_tmp: Path, request: pytest.FixtureRequest
) -> None:
    runner: Hvfs = request.getfixturevalue(runner_fixture)
    nr = {name: nr for nr, name in syscall_numbers(native_arch()).items()}["fanotify_mark"]
    out = runner.ok("run", "--strict", "--", "python3", "-c", _script(nr, prctl=True))
    assert out == f"[{errno.EBADF}]\n[0] named{(TRIES - 1) % 3}\n"


# Run in a process of its own: the filter (getppid trapped, everything else allowed) stays
# on the thread that loads it, and the children it forks inherit it. A: a child calls
# getppid TRIES times, each answered in C by an errno rule; a thread stops the loop
# through the stop pipe once the child has exited. B: with no rule, the child's getppid is
# handed back, recorded in the in-flight slot as received, then continued.
_LISTENER_SCRIPT = """
import ctypes, json, os, sys, threading
from hvfs import _native
from hvfs._sys import notify, process
from hvfs._sys.abi import PR_SET_NO_NEW_PRIVS
from hvfs.doctor.probes import _getppid_filter
from hvfs.intercept import compiled, inflight
from hvfs.intercept.arch import native
from hvfs.intercept.filter import syscall_numbers

tries, error = int(sys.argv[1]), int(sys.argv[2])
getppid = {name: nr for nr, name in syscall_numbers(native()).items()}["getppid"]
me = os.getpid()
process.prctl(PR_SET_NO_NEW_PRIVS, 1)
listener = process.load_seccomp_filter(_getppid_filter(), process.SECCOMP_FILTER_FLAG_NEW_LISTENER)
table = inflight.InflightTable(4)
memory, slot_at, last_at = table.place(2)
report = {}

def child(calls, expected):
    pid = os.fork()
    if pid == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        codes = set()
        for _ in range(calls):
            parent = libc.syscall(getppid)
            codes.add("continued" if parent == me else ctypes.get_errno())
        os._exit(0 if codes == {expected} else 1)
    return pid

def stop_after(pid, stop):
    status = os.waitpid(pid, 0)[1]
    report.setdefault("children", []).append(os.waitstatus_to_exitcode(status))
    os.write(stop, b"x")

def serve(rules, pid, record_handed=True):
    counts = bytearray(compiled.COUNTS.size)
    stop_read, stop_write = os.pipe()
    waiter = threading.Thread(target=stop_after, args=(pid, stop_write))
    waiter.start()
    got = _native.hotpath.serve(listener, stop_read, *compiled.table(rules), memory, slot_at, last_at, counts,
                                record_handed)
    return got, compiled.COUNTS.unpack_from(counts), waiter

pid = child(tries, error)
got, counts, waiter = serve({getppid: compiled.Rule(compiled.ERRNO, errno=error)}, pid)
waiter.join()
report["a"] = {"got": got, "counts": counts, "pending": len(table.pending()), "last_id": table.last_id()}

pid = child(1, "continued")
got, counts, waiter = serve({}, pid)
pending = table.pending()
notify.respond(listener, got[0], flags=notify.SECCOMP_USER_NOTIF_FLAG_CONTINUE)
waiter.join()
report["b"] = {"nr": got[2] == getppid, "counts": counts, "last_id": table.last_id() == got[0],
               "pending": [(p.notification == got[4], p.state, p.received_ns > 0) for p in pending]}
print(json.dumps(report))
"""


def test_the_c_loop_answers_records_and_hands_back_on_a_listener_of_its_own(tmp_path: Path) -> None:
    require(_native.hotpath is not None, NATIVE)
    script = tmp_path / "listener.py"
    script.write_text(_LISTENER_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(TRIES), str(errno.EPERM)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["children"] == [0, 0]  # each child saw every call answered as the rule said
    # A: every call answered in C, each slot cleared after its answer, the last id kept.
    assert report["a"] == {"got": None, "counts": [0, TRIES, 0], "pending": 0, "last_id": report["a"]["last_id"]}
    assert report["a"]["last_id"]
    # B: handed to Python, recorded as InflightTable.record would: the notification, RECEIVED.
    assert report["b"] == {
        "nr": True,
        "counts": [0, 0, 1],
        "last_id": True,
        "pending": [[True, inflight.RECEIVED, True]],
    }
