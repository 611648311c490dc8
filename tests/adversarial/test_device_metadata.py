"""The host's device nodes in a VM's /dev: their content is the VM's to use, their
metadata is not.

The VM's /dev binds the host's own inodes of null, full, zero and tty, so a chmod or a
utimes there, which the manager would serve with the caller's rights (root's, as root),
would change the host's nodes. The attack program tries mode, owner, times and xattrs
by path, through /proc/self/fd/N and by fd, while it keeps using the devices for I/O; the
host then checks every node: mode, owner, mtime and ctime unchanged.
"""

from __future__ import annotations

import os

from tests.adversarial.conftest import Attacker

DEVICES = ("/dev/null", "/dev/full", "/dev/zero", "/dev/tty")


def snapshot() -> dict[str, tuple[int, int, int, int, int]]:
    result = {}
    for device in DEVICES:
        st = os.stat(device)
        # A terminal's mtime moves with its I/O (anyone's, on the host): for /dev/tty the
        # ctime stands for it, which every chmod, chown, utimes and xattr change moves too.
        mtime = 0 if device == "/dev/tty" else st.st_mtime_ns
        result[device] = (st.st_mode, st.st_uid, st.st_gid, mtime, st.st_ctime_ns)
    return result


def test_device_nodes_keep_their_metadata(attacker: Attacker) -> None:
    before = snapshot()
    outcome = attacker.run("device_metadata")
    print(outcome.report)
    assert snapshot() == before, f"a host device node changed: {before} {snapshot()}"
    assert outcome.code == 0, outcome.stderr
    assert "Traceback" not in outcome.stderr
    assert outcome.count("changed") == 0, outcome.report
    assert outcome.count("refused") > 1000
    assert outcome.count("io") > 0  # writes to /dev/null, reads of /dev/zero, ENOSPC from /dev/full
    # The race ran: the same fd number was the VM's own file (changed) and /dev/null (refused).
    assert outcome.count("own_ok") > 0 and outcome.count("race_refused") > 0, outcome.report
