"""The audit file of a rootless ``hvfs run --audit FILE`` swapped while the run starts.

A rootless manager is root in its user namespace: it may override the permissions of the
user's own files (their owner is mapped) and write through a link the user planted or
someone else did. Were it to open FILE itself after a check, a path swapped between the
check and the open, from a file the user may write to a link to the user's own read-only
file, would have the manager append the run's events to it. The native front opens FILE
itself, as the user (hvfs.hypervisor.frontrun): the kernel checks the user's own
credentials at the one open.

Host side, root flips FILE between the two (a rename each time, so that the path always
exists) as fast as it can while the user's front runs audited runs over and over for the
attack's time budget; then the read-only file must be as it was, and every run must have
either run (0) or been refused with one line naming FILE (125), by the front itself.
"""

from __future__ import annotations

import os
import pwd
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.adversarial.conftest import SECONDS, TRIES
from tests.conftest import ROOTLESS_USER, Hvfs, staged_front
from tests.test_front import said

pytestmark = pytest.mark.rootless

# The user's shell runs the tries (one runuser for all of them): each its exit code, and
# its stderr's lines, which must name FILE
LOOP = """
file=$1 until=$2 tries=$3 i=0
shift 3
while [ "$i" -lt "$tries" ] && [ "$(date +%s)" -lt "$until" ]; do
    "$@" run --audit "$file" -- true 2>>"$file.err" </dev/null
    echo "$?"
    i=$((i + 1))
done
"""


@pytest.mark.parametrize("client", ["front", "python"])
def test_a_swapped_audit_file_is_never_written_as_more_than_the_user(
    rootless: Hvfs, staged: Path, shared_tmp: Path, client: str
) -> None:
    """Either client: the front, or the Python client (which opens FILE itself too,
    hvfs.client.session.open_audit, and does the front's runs whose FILE its manager sees
    otherwise by the time the front opened it)."""
    account = pwd.getpwnam(ROOTLESS_USER)
    trace = shared_tmp / "trace"
    front = staged_front(rootless, staged, trace)
    assert rootless.run("run", "--", "true").returncode == 0  # its manager, warm
    precious = shared_tmp / "precious"  # the user's own, read-only: the manager's root could write it
    precious.write_text("")
    os.chown(precious, account.pw_uid, account.pw_gid)
    precious.chmod(0o400)
    target = shared_tmp / "audit.log"
    errors = Path(f"{target}.err")
    errors.write_text("")
    os.chown(errors, account.pw_uid, account.pw_gid)
    flips = [0]
    stop = threading.Event()

    def flip() -> None:
        # Each state held a random while too (up to 4 ms), not only flipped as fast as it
        # can be: the Python client looks at FILE over a longer window than the front, and
        # flipped without pause none of its runs found it still in place (CI51: 83 refused).
        while not stop.is_set():
            link, plain = shared_tmp / "link.new", shared_tmp / "plain.new"
            link.symlink_to(precious)
            os.rename(link, target)
            time.sleep(random.random() * 0.004)
            plain.write_text("")
            os.chown(plain, account.pw_uid, account.pw_gid)
            plain.chmod(0o600)
            os.rename(plain, target)
            time.sleep(random.random() * 0.004)
            flips[0] += 2

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    try:
        until = str(int(time.time() + SECONDS) + 1)
        words = [front.command[-1]] if client == "front" else rootless.command[len(front.command) - 2 :]
        command = [*front.command[:-1], "sh", "-c", LOOP, "sh", str(target), until, str(TRIES), *words]
        done = subprocess.run(command, capture_output=True, text=True, timeout=SECONDS + 120, cwd="/")
    finally:
        stop.set()
        flipper.join()
    codes = [int(line) for line in done.stdout.split()]
    assert codes and set(codes) <= {0, 125}, (done.stdout, done.stderr)
    refused = codes.count(125)
    lines = errors.read_text().splitlines()
    assert len(lines) == refused and all(str(target) in line for line in lines), lines[:3]
    swapped = f"this manager sees {target} otherwise"  # after the front's open: the Python client's run
    assert set(said(trace)) <= {"native", swapped} and said(trace).count("native") <= codes.count(0)
    assert (precious.read_text(), oct(precious.stat().st_mode)) == ("", oct(0o100400))  # 0 escapes
    print(f"{len(codes)} runs ({codes.count(0)} ran, {refused} refused) against {flips[0]} swaps")
    assert codes.count(0) and refused, "the race never went both ways"
