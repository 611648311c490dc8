"""The credentials the driver keeps per thread (hvfs/intercept/credcache.py), raced: a
thread that drops its privileges while its siblings keep the driver busy with root
requests, and a root thread's tid handed to a thread of an unprivileged process.

The target is a file only the VM's root may open for writing. Each open that got through
with stale root credentials writes "escape" into it: the host checks its content, which
must stay empty. The program also counts the race's both sides (root opens that
succeeded, then the same thread's open refused after its drop), so that a race that
never ran fails the test.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.adversarial.conftest import Attacker


def test_a_thread_that_drops_its_credentials_never_keeps_root_ones(attacker: Attacker, shared_tmp: Path) -> None:
    volume = shared_tmp / "vol"
    volume.mkdir()
    target = volume / "root-only"
    target.write_bytes(b"")
    os.chmod(target, 0o600)
    attacker.give(volume)  # the VM's root: the runner's user when rootless
    outcome = attacker.run("cred_drop", "/vol/root-only", options=("-v", f"{volume}:/vol"))
    print(f"credential drops, {attacker.variant}: {outcome.report}")
    assert outcome.code == 0, outcome.stderr
    assert target.read_bytes() == b"", outcome.report  # host-side: nothing opened it after a drop
    assert outcome.count("escapes") == 0, outcome.report
    # The race ran: threads opened as root, dropped, and were refused; the siblings kept
    # being served as root all along (each a new thread: about 500 in the 2 s of the default
    # budget on this loaded 2-CPU machine).
    assert outcome.count("dropped") > 100 and outcome.count("drop_failed") == 0, outcome.report
    assert outcome.count("root_ok") >= outcome.count("dropped"), outcome.report
    assert outcome.count("refused") == outcome.count("dropped"), outcome.report
    assert outcome.count("siblings_ok") > 1000 and outcome.count("siblings_refused") == 0, outcome.report
    # A tid the VM reuses (ns_last_pid) is another number in the manager's pid namespace,
    # where the driver names threads, so this guards the keying rather than the pidfd
    # check (tests/unit/test_credcache.py shows a dead thread's entry unused).
    assert outcome.count("reuse_refused") == outcome.count("reused"), outcome.report
