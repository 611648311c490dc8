"""An audited strict VM's stat, served in the driver's C loop and recorded there
(hvfs/_native/served_audit.h), names what it served: the path's text is recorded only for
a stat the C loop found with no symlink on the way, as the Python path names it.

The volume holds a directory ``d`` (its ``f`` one inode) and a symlink ``s`` to ``other``
(whose ``f`` is another). A second thread swaps ``d`` and ``s`` (renameat2 RENAME_EXCHANGE)
without pause while the main thread stats ``/data/d/f`` thousands of times. Each stat's
event, in order, must name the file the stat returned: ``/data/d/f`` or ``/data/s/f`` (the
directory, by its text or read back) for the directory's file, ``/data/other/f`` (through the
symlink, read back) for the other; one event per stat, none lost, none twice. ``--stats``
shows the C loop served stats meanwhile, so that a race run only on Python fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Hvfs, chown_to

TRIES = 3000
SWAPPING = r"""
import ctypes, json, os, random, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
RENAME_EXCHANGE = 2
done, flips = False, 0

def flip():
    global flips
    while not done:
        if libc.renameat2(-100, b"/data/d", -100, b"/data/s", RENAME_EXCHANGE) != 0:
            raise OSError(ctypes.get_errno(), "renameat2")
        flips += 1

def attempt(call):
    try:
        return call()
    except OSError as e:
        return -e.errno

thread = threading.Thread(target=flip)
thread.start()
seen = []
for _ in range(int(sys.argv[1])):
    if random.getrandbits(1):  # one more swap or not: the GIL's hand-offs do not lock a call to one state
        time.sleep(0)
CALLS
done = True
thread.join()
print(json.dumps({"seen": seen, "flips": flips}))
"""


def swap_race(calls: str) -> str:
    """The race program: a second thread swaps ``/data/d`` and ``/data/s`` (renameat2
    RENAME_EXCHANGE) without pause while the main thread, argv[1] times, runs ``calls`` (the
    loop's body, indented: each call's answer appended to ``seen`` by ``attempt``, an
    OSError's as -errno); it prints what it saw and how often it swapped. Also the audited
    readlink's and access' (test_audited_link_names.py)."""
    return SWAPPING.replace("CALLS\n", calls)


def audited_race(hvfs: Hvfs, tmp_path: Path, call: str, operation: str, served: str) -> None:
    """The race above with ``call`` (an expression giving the inode of what ``/data/d/f``
    named) as the main thread's: each ``operation`` event names the file ``call`` got, and
    the C loop served (``--stats``' ``served``) a share of them. Also the audited write-open's
    (test_audited_write_names.py)."""
    data = tmp_path / "data"
    (data / "d").mkdir(parents=True)
    (data / "other").mkdir()
    (data / "d" / "f").write_text("directory's\n")
    (data / "other" / "f").write_text("other's\n")
    (data / "s").symlink_to("other")
    (tmp_path / "race.py").write_text(swap_race(f"    seen.append(attempt(lambda: {call}))\n"))
    if hvfs.user is not None:  # a rootless VM's own files
        tmp_path.chmod(0o755)
        chown_to(tmp_path, hvfs.user)
    inside, other = (data / "d" / "f").stat().st_ino, (data / "other" / "f").stat().st_ino
    stats, log = tmp_path / "stats.json", tmp_path / "audit.jsonl"
    args = ["run", "--strict", "--stats", str(stats), "--audit", str(log), "-v", f"{data}:/data"]
    out = hvfs.ok(*args, "-v", f"{tmp_path}:/probe:ro", "--", "python3", "/probe/race.py", str(TRIES))
    result = json.loads(out)
    names = {"/data/d/f": inside, "/data/s/f": inside, "/data/other/f": other}
    events = [json.loads(line) for line in log.read_text().splitlines()]
    made = [event for event in events if event["operation"] == operation and event["paths"][0] in names]
    made = [event for event in made if operation != "open" or event["flags"] & 3]  # the write-opens, not python's own
    assert len(made) == TRIES  # one event per call: none lost, none twice
    escapes = [
        (event["paths"][0], seen)
        for event, seen in zip(made, result["seen"], strict=True)
        if event["result"] != "ok" or names[event["paths"][0]] != seen
    ]
    assert escapes == [], escapes[:10]
    assert inside in result["seen"] and other in result["seen"] and result["flips"] > 100, result["flips"]  # it raced
    compiled = json.loads(stats.read_text())["compiled"]
    print(f"{len(made)} calls, {len(escapes)} escapes, {result['flips']} swaps, C: {compiled}")  # for -s
    assert compiled.get(served, 0) > TRIES // 10, compiled


def test_an_audited_stat_names_the_file_it_served(hvfs: Hvfs, tmp_path: Path) -> None:
    audited_race(hvfs, tmp_path, 'os.stat("/data/d/f").st_ino', "stat", "stat_served")


# A relative stat from a directory fd of /data/d opened in the race: d's, or other's through
# s. Its event names the fd's directory as the kernel names it now (read anew from the caller
# for each request: never a text C kept from an earlier one, served_audit.h plain_base) and
# the name: d's file as /data/d/f or /data/s/f, other's as /data/other/f.
RELATIVE = '(lambda d: (os.stat("f", dir_fd=d).st_ino, os.close(d))[0])(os.open("/data/d", os.O_RDONLY))'


@pytest.mark.parametrize("runner", ["hvfs", pytest.param("rootless", marks=pytest.mark.rootless)])
def test_an_audited_relative_stat_names_the_file_it_served(
    runner: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    hvfs: Hvfs = request.getfixturevalue(runner)
    root = tmp_path if hvfs.user is None else request.getfixturevalue("shared_tmp")
    audited_race(hvfs, root, RELATIVE, "stat", "stat_served")
