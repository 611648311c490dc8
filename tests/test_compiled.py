"""The driver's C loop (hvfs/_native/hotpath.c ``serve``, its table hvfs/intercept/compiled.py):
it answers what the table decides without Python, hands everything else to Python, records
what it answers in the in-flight table, and takes nothing from the services."""

from __future__ import annotations

import errno
import functools
import json
from pathlib import Path

import pytest

from hvfs import _native
from hvfs._sys.abi import PR_CAPBSET_DROP, PR_SET_KEEPCAPS, PR_SET_NAME, PR_SET_SECUREBITS
from hvfs.intercept import compiled
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
    # A number the manager decides, and a credential call but prctl, is never compiled;
    # a number the driver does not serve is its ENOSYS; a number kept for Python is Python's.
    for name in ("openat", "mkdir", "statx", "execve", "setuid", "setgroups", "capset", "umask"):
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
    assert counts["continued"] == 2 * TRIES and counts["answered"] == 0
    # Everything else was handed to Python: each request the manager counted, and the
    # credential calls the driver keeps (execs, the KEEPCAPS prctls).
    manager = document["served"] + document["continued"] + document["failed"]
    assert manager > 0 and counts["handed_to_python"] >= manager + KEEPCAPS
    # The audit sees every call the manager saw, the one open of /dev/null among them,
    # and none of the calls answered in C (the manager never saw them on either path).
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
