"""The ptrace driver's exec takeover, raced (issue 15): a sibling thread execs while its
leader keeps the tracer resuming it. The exec kills the leader and the exec'ing thread
takes over its pid and stops at its exec event under it; a resume meant for the leader's
stop would resume the new program there instead: with the leader's registers written back
(it crashes) and its exec event never seen by the manager (no credentials forgotten, under
``--strict`` no verification of what was exec'd). Each resume kind is driven by a mode of
``programs/exec_takeover.c``: calls the C loop answers (``answered``), write-opens served
through the kept socket's injected recvmsg (``installed``), signal-delivery-stops the C loop
passes (``signalled``), and under ``--strict`` the file exec'd swapped after its check
(``swap``), which only the exec event's verification can catch.

Host side: each exec'd program creates a marker through the manager; the markers, the
tries and the manager's count of the exec events it saw (``--stats`` ``execs``, and
``killed`` for the swaps caught) must agree, no exec'd program may die of a signal but a
swap caught, none be killed unverified, and no swapped-in program may run. The race ran:
many tries' leaders were in a call when the exec took over, and the C loop served them.

Root, strict and rootless, always under the ptrace driver; the HVFS_NATIVE=0 variants (the
Python loop: exec_tracer.py's and stopped.py's resumes) for the mode that makes every kind
of its resumes: a served open's install.

``crowd`` (issue 15): the same install raced with three threads more, each opening too. An
exec waits until the tracer has reaped the other threads it kills (the kernel's de_thread);
an install's wait for the leader's pid alone never reaped them, and the VM hung. Every
variant, with a timeout: a hang fails the test instead of holding CI.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial.conftest import ATTACK_VARIANTS, SECONDS, Attacker, Outcome

_LEAST = {"swap": (100, 100), "crowd": (100, 50)}  # tries, and takeovers of a leader in a call
_SEEN = ("execs", "killed", "installed", "written_here", "unlinked_here", "dev_continued_here", "fdmeta_here", "passed")


def _race(attacker: Attacker, shared_tmp: Path, mode: str) -> tuple[Outcome, dict[str, Any], Path]:
    """exec_takeover in ``mode`` in a VM with a volume; what it printed, the manager's
    counts, the volume (its markers). The same checks for every mode: every exec seen."""
    volume = shared_tmp / "vol"
    volume.mkdir()
    (volume / "kept").write_bytes(b"")
    given = [volume, volume / "kept"]
    if mode == "swap":  # prog-a checked, prog-b swapped in after: the same program, another marker
        for name, variant in (("prog-a", ""), ("prog-b", "b")):
            built = attacker.program("exec_takeover", variant=variant, defines=["SWAPPED_IN"] if variant else [])
            shutil.copy(built, volume / name)
            given.append(volume / name)
    attacker.give(*given)
    stats = shared_tmp / "stats.json"
    attacker.give(shared_tmp)
    options = ["--driver", "ptrace", "--stats", str(stats), "-v", f"{volume}:/vol"]
    try:  # the hang of issue 15 is a VM that never ends: failed, in about twice the race's time
        outcome = attacker.run("exec_takeover", "/vol", mode, options=options, timeout=SECONDS * 2 + 40)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the VM hung: exec_takeover {mode} did not end within {SECONDS * 2 + 40:.0f} s")
    counts = json.loads(stats.read_text())
    seen = {key: counts[key] for key in _SEEN}
    print(f"exec takeovers, {mode}, {attacker.variant}: {outcome.report} {seen}")
    assert outcome.code == 0, outcome.stderr
    tries, ran, killed = outcome.count("tries"), outcome.count("ran"), outcome.count("killed")
    markers = len(list(volume.glob("ran-*")))
    # No exec'd program resumed as its dead leader (a crash), none unseen, none killed but
    # a swapped-in one, which never ran.
    assert outcome.count("other") == 0 and outcome.count("exec_failed") == 0, (outcome.report, outcome.stderr)
    assert not list(volume.glob("swapped-*")), (outcome.report, seen)
    assert markers == ran == tries - killed, (markers, outcome.report)
    # +1: the command's own exec
    assert counts["execs"] == tries - killed + 1 and counts["killed"] == killed, (seen, outcome.report)
    # The race ran: many takeovers of a leader in a call (what share of the tries that is
    # follows the scheduler: a count, not a share). How many tries fit in the time follows
    # the load (464 to 1,552 seen in 6 s on 2 CPUs at a load of 4-5); a swap's try waits for
    # the manager to serve its parent's open and check its exec, in Python: ~30 ms, not ~6; a
    # crowd's try starts five threads, four of them opening (144 to 256 tries in 6 s at a load
    # of 5-8): what it must show is that none hung and every exec was seen.
    least_tries, least_in_call = _LEAST.get(mode, (300, 100))
    assert tries > least_tries and outcome.count("in_call") >= least_in_call, outcome.report
    return outcome, seen, volume


@pytest.mark.parametrize("attacker", ATTACK_VARIANTS[:3], indirect=True)
def test_every_exec_that_takes_over_a_leader_is_seen_by_the_manager(attacker: Attacker, shared_tmp: Path) -> None:
    _, seen, _ = _race(attacker, shared_tmp, "answered")
    # Calls answered in the C loop meanwhile, whose resume the takeover races (how many
    # follows the scheduler: 4 in CI65's rootless run, where most leaders were taken over in
    # their first call, Python's; up to 28,000 seen).
    assert seen["unlinked_here"] + seen["dev_continued_here"] > 0, seen


@pytest.mark.parametrize("attacker", ATTACK_VARIANTS[:3], indirect=True)
def test_an_exec_that_takes_over_a_leader_in_an_installed_open_is_seen(attacker: Attacker, shared_tmp: Path) -> None:
    """The leader's write-opens are served in the C loop and installed by a recvmsg run in
    place of the call (tracer_receive.h): the takeover lands before it, while it runs (an
    exec event reported to its wait), or before the thread's resume after it."""
    _, seen, _ = _race(attacker, shared_tmp, "installed")
    assert seen["written_here"] > 0, seen


@pytest.mark.parametrize("attacker", ATTACK_VARIANTS[3:], indirect=True)
def test_the_python_loop_sees_an_exec_that_takes_over_a_leader_in_an_install(
    attacker: Attacker, shared_tmp: Path
) -> None:
    """HVFS_NATIVE=0: the install's calls run by Stopped (_set, _run_to_exit), its release,
    the signal and event stops exec_tracer.py resumes."""
    _, seen, _ = _race(attacker, shared_tmp, "installed")
    assert seen["written_here"] == 0 and seen["passed"] == 0, seen  # the Python loop: nothing done in C


@pytest.mark.parametrize("attacker", ATTACK_VARIANTS, indirect=True)
def test_an_exec_among_many_threads_never_hangs_an_install(attacker: Attacker, shared_tmp: Path) -> None:
    """crowd: the leader's and three more threads' write-opens installed (in the C loop, or
    by the Python loop's Stopped under HVFS_NATIVE=0) while a sibling execs; the install's
    wait must reap the threads the exec kills and keep the others' stops for the main loop."""
    _, seen, _ = _race(attacker, shared_tmp, "crowd")
    assert seen["installed"] > 0, seen
    if "python" in attacker.variant:
        assert seen["written_here"] == 0 and seen["passed"] == 0, seen


@pytest.mark.parametrize("attacker", ATTACK_VARIANTS[:3], indirect=True)
def test_an_exec_that_takes_over_a_signalled_leader_is_seen(attacker: Attacker, shared_tmp: Path) -> None:
    """The leader's signal-delivery-stops, passed by the C loop (pass_through)."""
    _, seen, _ = _race(attacker, shared_tmp, "signalled")
    assert seen["passed"] > 0, seen


@pytest.mark.parametrize("attacker", ATTACK_VARIANTS[1:2], indirect=True)
def test_a_binary_swapped_after_its_check_never_runs_in_a_takeover(attacker: Attacker, shared_tmp: Path) -> None:
    """--strict: prog-a checked at the exec's seccomp stop, prog-b put in the path the kernel
    reads next; the takeover's exec event must be seen, or prog-b runs unverified. The swap
    landed (prog-b loaded, killed at its exec event) in ``killed`` tries."""
    outcome, seen, _ = _race(attacker, shared_tmp, "swap")
    assert outcome.count("killed") > 0, (outcome.report, seen)
