"""Ways around the manager that the VM's filter refuses: they were refused in the
adversarial run, and these tests keep them refused.

Each call is tried again and again from several threads, with arguments aimed at the host
(a host file's real file handle, a :ro mount to remount writable or to clone and write
through) and, where the kernel reads arguments from memory (clone3), with a thread
flipping them. Each call's errno must be the one hvfs's table states
(``hvfs/intercept/syscalls.py``, which ``docs/compatibility.md`` shows), every time; the
host's files must be as they were; and the payloads are shown to work natively, so that a
refusal is the filter's and not a broken attack.
"""

from __future__ import annotations

import errno
import json
import platform
import subprocess
from pathlib import Path

from hvfs.intercept.arch import native
from hvfs.intercept.filter import syscall_numbers
from hvfs.intercept.syscalls import BY_NAME, TABLE, Handling
from tests.adversarial.conftest import Attacker, Outcome
from tests.adversarial.decoys import changes, plant, record
from tests.conftest import require

# A foreign ABI gets the filter's bad-arch action: EPERM (DESIGN.md, "What the filter must do").
FOREIGN_ABI_REFUSAL = "EPERM"
REFUSALS = {Handling.EPERM: "EPERM", Handling.ENOSYS: "ENOSYS", Handling.CLONE: "EPERM"}  # CLONE: with a namespace flag


def refusal(call: str) -> str:
    """The errno hvfs's table states for ``call`` ("SYSCALL" or "SYSCALL:VARIANT")."""
    return REFUSALS[BY_NAME[call.split(":")[0]].handling]


def results(outcome: Outcome) -> dict[str, dict[str, int]]:
    calls = outcome.report["calls"]
    assert isinstance(calls, dict)
    return calls


def assert_only(outcome: Outcome, call: str, expected: str) -> None:
    """``call`` ran and every try gave ``expected``."""
    got = results(outcome).get(call)
    assert got is not None and list(got) == [expected] and got[expected] > 0, (call, expected, got)


def host(attacker: Attacker, root: Path) -> tuple[Path, Path, Path]:
    """The writable volume, a :ro mount and a directory in no mount, with decoys."""
    volume = root / "vol"
    volume.mkdir()
    attacker.give(volume)
    plant(root / "ro", ("f", "g"), attacker)
    plant(root / "outside", ("f", "victim"), attacker)
    return volume, root / "ro", root / "outside"


def native_run(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60)


def sweep() -> list[str]:
    """Every call the table refuses outright, with its number on this architecture."""
    numbers = {name: nr for nr, name in syscall_numbers(native()).items()}
    refused = [s for s in TABLE if s.handling in (Handling.EPERM, Handling.ENOSYS)]
    missing = [s.name for s in refused if s.name not in numbers]
    if missing:  # e.g. calls that exist on x86_64 only: nothing to try here
        print(f"not on {platform.machine()}: {missing}")
    return [f"sweep={s.name}:{numbers[s.name]}" for s in refused if s.name in numbers]


def test_calls_around_the_manager_are_refused(attacker: Attacker, shared_tmp: Path) -> None:
    """io_uring, file handles, the mount family, new namespaces (unshare, setns, clone with
    each flag, clone3), chroot, bpf, userfaultfd, perf_event_open, keys, and a sweep of
    every call the table refuses."""
    volume, ro, outside = host(attacker, shared_tmp)
    binary = attacker.program("refused_calls")
    # The payloads work natively: the host's own handles of a host file and directory open
    # by handle (as root), and io_uring's OPENAT truncates a host file.
    handles = [native_run(binary, "handle-of", str(p)) for p in (outside / "victim", outside)]
    require(all(h.returncode == 0 for h in handles), f"no file handles on this file system: {handles[0].stderr}")
    opened = native_run(binary, "open-by-handle", str(volume), handles[0].stdout.strip())
    assert opened.stdout.strip() == str(outside / "victim"), opened.stderr
    scratch = shared_tmp / "scratch"
    scratch.write_bytes(b"content\n")
    uring = native_run(binary, "io_uring", str(scratch))
    print(f"natively, io_uring: {uring.stdout.strip() or uring.stderr.strip()}")
    if uring.returncode == 0:
        assert scratch.stat().st_size == 0
    scratch.unlink()
    before = {"ro": record(ro), "outside": record(outside)}
    table_sweep = sweep()
    outcome = attacker.run(
        "refused_calls", "/ro", "/vol", *(f"handle={h.stdout.strip()}" for h in handles), *table_sweep,
        options=("-v", f"{volume}:/vol", "-v", f"{ro}:/ro:ro"),
    )  # fmt: skip
    calls = results(outcome)
    print(f"refused calls, {attacker.variant}: {outcome.report['tries']} tries of {len(calls)} calls")
    for name, recorded in before.items():
        assert not changes(recorded, record(shared_tmp / name)), name
    assert (volume / "served").read_bytes() == b"served\n"
    assert outcome.code == 0, outcome.stderr
    assert outcome.count("escaped") == 0, outcome.report
    assert outcome.count("handles") == 2
    tried = [call for call in calls if not call.startswith("after:")]
    assert len(tried) > 100, tried
    assert {f"{call.split(':')[0]}" for call in tried} >= {s.split("=")[1].split(":")[0] for s in table_sweep}
    wrong = {call: calls[call] for call in tried if set(calls[call]) != {refusal(call)}}
    assert not wrong, f"not refused as the table states: {wrong}"
    assert min(sum(calls[call].values()) for call in tried) >= 100, outcome.report
    # Everything tried, the :ro mount still refuses and the volume is still served.
    assert_only(outcome, "after:write_ro", "EROFS")
    assert_only(outcome, "after:write_volume", "ok")


def test_foreign_abis_and_numbers_beyond_the_table(attacker: Attacker, shared_tmp: Path) -> None:
    """i386 ``int $0x80`` and x32 path calls on a :ro file, a volume file and a host file;
    ``syscall`` with garbage above bit 31 of the number; numbers the table does not know
    with a setxattrat's arguments; fchmodat2, which hvfs knows beyond libseccomp's table."""
    volume, ro, outside = host(attacker, shared_tmp)
    (volume / "f").write_bytes(b"volume\n")
    (volume / "f").chmod(0o644)
    attacker.give(volume)
    binary = attacker.program("foreign_abi")
    x86_64 = platform.machine() == "x86_64"
    if x86_64:
        # Natively the i386 ABI works (the x32 one only where the kernel has it).
        proof = shared_tmp / "proof"
        proof.mkdir()
        natively = json.loads(native_run(binary, "native", str(proof)).stdout)
        print(f"natively: {natively}")
        assert natively["int80"] >= 0 and (proof / "int80").exists()
        assert natively["x32"] >= 0 or natively["x32"] == -errno.ENOSYS
        assert natively["x32"] < 0 or (proof / "x32").exists()
    else:
        print(
            f"{platform.machine()}: the i386 and x32 entry points exist on x86_64 only; numbers beyond the table only"
        )
    known = syscall_numbers(native())
    beyond = [nr for nr in range(453, 481) if nr not in known] + [500, 511, 512, 547, 1000, 4095, 0x3FFFFFFF, -1]
    before = {"ro": record(ro), "outside": record(outside)}
    outcome = attacker.run(
        "foreign_abi", "/ro/f", "/vol/f", str(outside / "f"), *(f"above={nr}" for nr in beyond),
        options=("-v", f"{volume}:/vol", "-v", f"{ro}:/ro:ro"),
    )  # fmt: skip
    calls = results(outcome)
    print(f"foreign ABIs, {attacker.variant}: {outcome.report['tries']} tries of {len(calls)} calls")
    for name, recorded in before.items():
        assert not changes(recorded, record(shared_tmp / name)), name
    assert outcome.code == 0, outcome.stderr
    assert outcome.count("x86_64") == int(x86_64)
    foreign = [call for call in calls if call.startswith(("int80:", "x32:"))]
    assert len(foreign) == (2 * 12 * 3 if x86_64 else 0), foreign
    for call in foreign:
        assert_only(outcome, call, FOREIGN_ABI_REFUSAL)
    if x86_64:  # the low 32 bits are the number, for the kernel and the filter: served
        assert_only(outcome, "high_bits:open:ro", "EROFS")
        assert_only(outcome, "high_bits:open:volume", "ok")
    for nr in beyond:
        assert_only(outcome, f"above:{nr}", "ENOSYS")
    for target, expected in (("ro", "EROFS"), ("volume", "ok")):
        assert_only(outcome, f"fchmodat2:{target}", expected)
        assert_only(outcome, f"fchmodat2:{target}:nofollow", expected)
    # fchmodat2 reached the manager: the boot view is read-only, so only it could chmod.
    assert (volume / "f").stat().st_mode & 0o777 == 0o640


def test_a_second_listener_cannot_answer_for_the_manager(attacker: Attacker, shared_tmp: Path) -> None:
    """The VM stacks a filter of its own that sends its mutations to its own listener, to
    answer them with CONTINUE: the kernel refuses a second listener in one filter chain
    (EBUSY) from any thread, with TSYNC, from a fresh child. Meanwhile, and under filters
    that take no listener (ALLOW, TRACE, LOG), hvfs's filter still sends every mutation to
    the manager: the :ro file stays refused, the host file unreachable, the volume served.
    A stacked RET_USER_NOTIF without a listener only shuts the VM out (ENOSYS)."""
    volume, ro, outside = host(attacker, shared_tmp)
    stats = shared_tmp / "stats"
    stats.mkdir()
    attacker.give(stats)
    before = {"ro": record(ro), "outside": record(outside)}
    outcome = attacker.run(
        "second_listener", "/ro/f", "/vol", str(outside / "f"),
        options=("--stats", str(stats / "stats.json"), "-v", f"{volume}:/vol", "-v", f"{ro}:/ro:ro"),
    )  # fmt: skip
    print(f"second listener, {attacker.variant}: {outcome.report}")
    for name, recorded in before.items():
        assert not changes(recorded, record(shared_tmp / name)), name
    served = sorted(volume.iterdir())
    assert served and all(p.read_bytes() == b"served\n" for p in served), served
    assert outcome.code == 0, outcome.stderr
    assert outcome.count("installed") == 0 and outcome.count("escaped") == 0, outcome.report
    for variant in ("", "_tsync", "_wait_killable_recv", "_in_child"):
        assert_only(outcome, f"seccomp:new_listener{variant}", "EBUSY")
    for stacked in ("racing", "allow", "trace", "log"):
        if stacked != "racing":
            assert_only(outcome, f"seccomp:{stacked}", "ok")
        assert_only(outcome, f"{stacked}:write_ro", "EROFS")
        assert_only(outcome, f"{stacked}:write_host", "ENOENT")
        assert_only(outcome, f"{stacked}:write_volume", "ok")
    assert_only(outcome, "seccomp:notify_without_listener", "ok")
    for target in ("ro", "host", "volume"):
        assert_only(outcome, f"notify_without_listener:write_{target}", "ENOSYS")
    # The manager served those writes (the boot view is read-only), and no process of the
    # VM holds a listener to steal.
    document = json.loads((stats / "stats.json").read_text())
    assert document["requests"]["open"]["served"] >= outcome.count("served") > 0, document
    assert outcome.count("stolen") == 0 and outcome.count("scanned") > 0, outcome.report
    assert results(outcome)["pidfd_getfd:listener"] == {}
