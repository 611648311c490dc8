"""A metadata change through an fd by threads that exit or drop their credentials as fast as
they are made (issue 14: the C loop's fchmod and fchown, hvfs/_native/served_fdmeta.h, prove
the published thread the caller by the duplicate taken through its pidfd, with no poll of it;
tests/test_pidfd_getfd_proof.py checks the kernel property that rests on).

The target is a file only the VM's root may change, held open (written by no one). Root threads fchmod
it (their credentials published), then drop them and fchmod it again; or exit, their tid
handed to a thread of a child running as 65534 that fchmods and fchowns it. Every change by a
dropped or foreign thread must be refused: the host checks the file's mode and owner, and the
program counts both sides of the race, so that a race that never ran fails the test."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from tests.adversarial.conftest import ON_THE_NATIVE_PATH, Attacker

pytestmark = ON_THE_NATIVE_PATH


def test_a_thread_gone_or_dropped_never_changes_a_file_with_roots_credentials(
    attacker: Attacker, shared_tmp: Path
) -> None:
    attacker = dataclasses.replace(attacker, strict=True)  # the profile whose fchmod and fchown C serves
    volume, stats = shared_tmp / "vol", shared_tmp / "stats.json"
    volume.mkdir()
    target = volume / "root-only"
    target.write_bytes(b"")
    os.chmod(target, 0o600)
    attacker.give(volume, shared_tmp)  # the VM's root: the runner's user when rootless
    owner = target.stat().st_uid
    options = ("--stats", str(stats), "-v", f"{volume}:/vol")
    outcome = attacker.run("fdmeta_exit", "/vol/root-only", options=options)
    print(f"fdmeta drops and exits, {attacker.variant}: {outcome.report}")
    assert outcome.code == 0, outcome.stderr
    assert target.stat().st_mode & 0o7777 == 0o600 and target.stat().st_uid == owner  # host-side
    assert outcome.count("escapes") == 0 and outcome.count("other") == 0, outcome.report
    # The race ran: threads changed it as root, dropped, and were refused; threads exited and
    # a foreign one came after each (its tid the same in the VM now and then: ns_last_pid).
    assert outcome.count("dropped") > 100 and outcome.count("drop_failed") == 0, outcome.report
    assert outcome.count("root_ok") >= 3 * (outcome.count("dropped") + outcome.count("reuse_tries")), outcome.report
    assert outcome.count("reuse_unavailable") == 0 and outcome.count("reuse_tries") > 100, outcome.report
    assert outcome.count("refused") == outcome.count("dropped") + 2 * outcome.count("reuse_tries"), outcome.report
    record = json.loads(stats.read_text())
    if record.get("driver") != "ptrace":  # HVFS_ATTACK_DRIVER=ptrace: its C loop counts fdmeta_here
        assert record["compiled"].get("chmod_served", 0) >= 300, record["compiled"]
