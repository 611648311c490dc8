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

import pytest

from tests.adversarial.conftest import Attacker
from tests.conftest import Hvfs


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


UMASK_PROGRAM = """
import os, threading
go, done, started = threading.Event(), threading.Event(), threading.Event()
def sibling():
    open("/vol/sibling", "w").close()  # its credentials kept, with umask 022
    started.set()
    for k in range(200):
        go.wait(); go.clear()
        open(f"/vol/f{k}", "w").close()  # a sibling's create, after the umask call returned
        done.set()
t = threading.Thread(target=sibling); t.start()
open("/vol/before", "w").close()  # kept: this thread's credentials, umask 022
started.wait()
for k in range(200):
    os.umask(0o077 if k % 2 else 0o027)
    go.set(); done.wait(); done.clear()
t.join()
"""


@pytest.mark.parametrize(
    ("runner", "driver"),
    [("hvfs", "seccomp"), ("hvfs_python", "seccomp"), ("hvfs", "ptrace"), ("hvfs_python", "ptrace")],
)
def test_a_umask_changed_by_one_thread_holds_for_its_siblings(
    request: pytest.FixtureRequest, runner: str, driver: str, shared_tmp: Path
) -> None:
    """The umask is shared by a process's threads: after one thread's umask returns, the
    files its sibling creates get it, never the one kept with the sibling's credentials."""
    hvfs: Hvfs = request.getfixturevalue(runner)
    volume = shared_tmp / "vol"
    volume.mkdir()
    result = hvfs.run(
        "run", "--driver", driver, "-v", f"{volume}:/vol", "--", "python3", "-c", UMASK_PROGRAM, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert (volume / "before").stat().st_mode & 0o777 == 0o644
    assert (volume / "sibling").stat().st_mode & 0o777 == 0o644
    for k in range(200):
        assert (volume / f"f{k}").stat().st_mode & 0o777 == (0o600 if k % 2 else 0o640), k
