"""The credentials the driver keeps across execs (hvfs/intercept/credcache.py), raced: the
seccomp driver's C loop bumps only the exec'ing thread's bucket of the credential
generation (hvfs/_native/cred_bumps.h), so what it kept of every other thread stays in use.

A process of uid 65534 holding CAP_DAC_OVERRIDE execs a program without file
capabilities, which drops them all, from its leader (or, at the end, from another thread), while its
sibling threads, another capable process and an unprivileged one keep opening a file only
the VM's root (or that capability) may open for writing. Each open that got through with
the credentials of before the exec writes "escape" into it: the host checks its content.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.adversarial.conftest import Attacker


def test_an_exec_that_drops_capabilities_is_never_served_with_the_old_ones(
    attacker: Attacker, shared_tmp: Path
) -> None:
    volume = shared_tmp / "vol"
    volume.mkdir()
    target = volume / "root-only"
    target.write_bytes(b"")
    os.chmod(target, 0o600)
    attacker.give(volume)  # the VM's root: the runner's user when rootless
    outcome = attacker.run("exec_drop", "/vol/root-only", options=("-v", f"{volume}:/vol"))
    print(f"capability-dropping execs, {attacker.variant}: {outcome.report}")
    assert outcome.code == 0, outcome.stderr
    assert target.read_bytes() == b"", outcome.report  # host-side: nothing opened it for lost credentials
    assert outcome.count("escapes") == 0, outcome.report
    # The race ran: each try's process was served as capable before its exec (also after an
    # exec that failed), then refused after it; its siblings, the other capable process
    # and the unprivileged one were served all along, each as what it was.
    tries = outcome.count("tries")
    assert tries > 100 and outcome.count("setup_failed") == outcome.count("exec_failed") == 0, outcome.report
    assert outcome.count("capable_ok") == tries and outcome.count("capable_refused") == 0, outcome.report
    assert outcome.count("failed_exec_lost") == 0 and outcome.count("other") == 0, outcome.report
    assert outcome.count("refused") == tries, outcome.report
    assert 0 < outcome.count("from_thread") < tries / 2, outcome.report  # most race kept credentials
    assert outcome.count("siblings_ok") > tries and outcome.count("siblings_refused") == 0, outcome.report
    assert outcome.count("others_ok") > 1000 and outcome.count("others_refused") == 0, outcome.report
    assert outcome.count("nobody_refused") > 1000, outcome.report
