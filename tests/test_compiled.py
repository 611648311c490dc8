"""The driver's C loop (hvfs/_native/hotpath.c ``serve``, its table hvfs/intercept/compiled.py):
it answers what the table decides without Python, hands everything else to Python, records
what it answers in the in-flight table, and takes nothing from the services."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from hvfs import _native
from hvfs.intercept import compiled
from hvfs.intercept.arch import native as native_arch
from hvfs.intercept.decoders.context import Context, Passthrough
from hvfs.intercept.filter import syscall_numbers
from hvfs.intercept.syscalls import BY_NAME
from tests.conftest import Hvfs, require

NATIVE = "the native hot path is not built or HVFS_NATIVE=0: the C loop does not run"
TRIES = 200


class _NoReads:
    """A decoder's context that fails the test if the decoder reads anything."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the decoder used the context ({name}) before its Passthrough")


def test_each_compiled_continue_is_its_decoders_passthrough_on_plain_arguments() -> None:
    arch = native_arch()
    decided = compiled.rules(arch, python=set())
    numbers = {name: nr for nr, name in syscall_numbers(arch).items()}
    checked = 0
    for name, index in compiled.CONTINUE_IF_ZERO_ARGS.items():
        assert decided[numbers[name]] == (compiled.CONTINUE_IF_ZERO, index, 0)
        decoder = BY_NAME[name].decoder
        assert decoder is not None
        args = [7, 1, 1, 3, 0x1000, 0]
        args[index] = 0
        no_reads: Context = _NoReads()  # type: ignore[assignment]
        with pytest.raises(Passthrough):
            decoder.decode(no_reads, tuple(args))  # type: ignore[arg-type]
        checked += 1
    assert checked == len(compiled.CONTINUE_IF_ZERO_ARGS) > 0
    # A number the driver serves, or a credential call, is never compiled.
    for name in ("openat", "mkdir", "execve", "setuid", "umask"):
        nr = numbers[name]
        kept = compiled.rules(arch, python={nr})
        assert nr not in kept
    assert numbers["openat"] not in decided and numbers["mkdir"] not in decided
    assert decided[numbers["read"]] == (compiled.ERRNO, 0, errno.ENOSYS)  # never trapped: as _serve's KeyError


def _fanotify_script(nr: int) -> str:
    """TRIES fanotify_mark calls with a NULL pathname (continued by the table: the kernel
    fails them EBADF on fd -1), then one write-open of /dev/null (the manager's)."""
    return (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"codes = {{(libc.syscall({nr}, -1, 1, 1, -100, None), ctypes.get_errno())[1] for _ in range({TRIES})}}\n"
        "fd = os.open('/dev/null', os.O_WRONLY)\n"
        "print(sorted(codes))\n"
    )


def test_the_c_loop_counts_what_its_table_says(hvfs: Hvfs, shared_tmp: Path) -> None:
    require(_native.hotpath is not None, NATIVE)
    nr = {name: nr for nr, name in syscall_numbers(native_arch()).items()}["fanotify_mark"]
    stats, audit = shared_tmp / "stats.json", shared_tmp / "audit.jsonl"
    out = hvfs.ok("run", "--strict", "--stats", str(stats), "--audit", str(audit), "--",
                  "python3", "-c", _fanotify_script(nr))  # fmt: skip
    assert out == f"[{errno.EBADF}]\n"  # the continued call ran in the kernel, as natively
    document = json.loads(stats.read_text())
    counts = document["compiled"]
    assert counts["continued"] == TRIES and counts["answered"] == 0
    # Everything else was handed to Python: each request the manager counted, and the
    # credential calls the driver keeps (execs).
    manager = document["served"] + document["continued"] + document["failed"]
    assert manager > 0 and counts["handed_to_python"] >= manager
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
    out = runner.ok("run", "--strict", "--", "python3", "-c", _fanotify_script(nr))
    assert out == f"[{errno.EBADF}]\n"
