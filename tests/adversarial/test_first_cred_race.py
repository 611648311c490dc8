"""A new process's first credentials, read and kept by the driver's C loop
(hvfs/_native/first_credentials.h), raced by the process dropping them while its first
request waits: a signal handler's raw setresuid (or, as root, a capset that clears the
effective set) cancels the pending notification and restarts the open with the new
credentials. Every open made after the drop must be refused; one that got through writes
"escape" into its target, which the host checks. ``first_refused`` counts the window itself
(the first open, begun before the drop, refused once made again after it), so a race that
never ran fails the test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.adversarial.conftest import DRIVER, Attacker

VM_USER = 1000


def test_a_first_request_raced_by_a_drop_is_never_served_with_what_was_read_before(
    attacker: Attacker, shared_tmp: Path
) -> None:
    volume = shared_tmp / "vol"
    volume.mkdir()
    target, others = volume / "root-only", volume / "others-only"
    for path in (target, others):
        path.write_bytes(b"")
        os.chmod(path, 0o600)
    attacker.give(volume, target)  # the VM's root: the runner's user when rootless
    arguments = ["/vol/root-only"]
    if not attacker.rootless:  # the VM's uid 1000 is the host's here; rootless maps it elsewhere
        os.chown(others, VM_USER, VM_USER)
        arguments.append("/vol/others-only")
    counted = shared_tmp / "counted"
    counted.mkdir()
    attacker.give(counted)
    stats = counted / "stats.json"
    outcome = attacker.run("first_drop", *arguments, options=("-v", f"{volume}:/vol", "--stats", str(stats)))
    credentials = json.loads(stats.read_text())["credentials"]
    print(f"first credentials raced by drops, {attacker.variant}: {outcome.report}, credentials: {credentials}")
    assert outcome.code == 0, outcome.stderr
    assert target.read_bytes() == b"" and others.read_bytes() == b"", outcome.report  # host-side
    assert outcome.count("escapes") == 0 and outcome.count("other") == 0, outcome.report
    tries = outcome.count("tries")
    assert tries > 300 and outcome.count("drop_failed") == outcome.count("fork_failed") == 0, outcome.report
    # The race ran: first opens served before the drop, and first opens the drop reached
    # while they waited, refused once made again; every open after a drop refused.
    assert outcome.count("first_ok") > 0 and outcome.count("first_refused") > 0, outcome.report
    dropped = tries - outcome.count("no_signal")
    assert outcome.count("later_refused") == 3 * dropped, outcome.report
    # The first reads raced were the C loop's (on the Python path, Python's own).
    native = "python" not in attacker.variant and DRIVER != "ptrace"
    assert credentials["read_in_c" if native else "reads"] >= tries / 2, credentials
