"""A strict VM's stat served in the driver's C loop acting as its caller
(hvfs/_native/served_switch.h) sees only what the caller's credentials at the time allow,
while threads change their own credentials.

The volume holds ``private/secret`` in a root-owned 0700 directory. In a VM run as root,
three threads stat it thousands of times at once: one switches its own effective uid (the
raw setresuid, this thread only) between 0 and 1000 and stats after each switch (allowed as
0, EACCES as 1000); one has switched its own to 1000 once, for good, and must never see it;
the main thread stays root and must always see it. Then the whole process (glibc's
seteuid, every thread) switches back and forth while another thread stats: a stat made
while no switch was under way (a sequence both sides keep, read before and after) must
answer as the uid it ran under. ``--stats`` shows the C loop served stats meanwhile, so
that a race run only on Python fails.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import Hvfs

TRIES = 3000
RACE = r"""
import ctypes, errno, json, os, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
SYS_setresuid, SECRET = 117, "/data/private/secret"
tries = int(sys.argv[1])
wrong = {"toggler": [], "user": [], "root": [], "process": []}
done = False

def own_euid(uid):  # this thread only: the raw call, not glibc's broadcast to every thread
    if libc.syscall(SYS_setresuid, -1, uid, -1) != 0:
        raise OSError(ctypes.get_errno(), "setresuid")

def seen():
    try:
        os.stat(SECRET)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]

def toggler():
    for i in range(tries):
        uid = 1000 if i % 2 else 0
        own_euid(uid)
        got = seen()
        if got != ("EACCES" if uid else "ok"):
            wrong["toggler"].append((uid, got))
    own_euid(0)

def user():
    own_euid(1000)
    while not done:
        got = seen()
        if got != "EACCES":
            wrong["user"].append(got)

threads = [threading.Thread(target=toggler), threading.Thread(target=user)]
for thread in threads:
    thread.start()
rooted = 0
while threads[0].is_alive():
    got = seen()
    rooted += 1
    if got != "ok":
        wrong["root"].append(got)
done = True
for thread in threads:
    thread.join()

sequence = 0  # odd while the process's uid changes
def switcher():
    global sequence
    for i in range(tries // 3):
        sequence += 1
        os.seteuid(1000 if i % 2 == 0 else 0)
        sequence += 1
        time.sleep(0.0002)  # a while under each uid, for stats to be judged by
    os.seteuid(0)

thread = threading.Thread(target=switcher)
thread.start()
judged = 0
while thread.is_alive():
    before, uid = sequence, os.geteuid()
    got = seen()
    if before == sequence and before % 2 == 0 and os.geteuid() == uid:
        judged += 1
        if got != ("EACCES" if uid else "ok"):
            wrong["process"].append((uid, got))
thread.join()
print(json.dumps({"wrong": wrong, "rooted": rooted, "judged": judged}))
"""


def test_a_stat_served_in_c_sees_what_the_callers_credentials_at_the_time_allow(hvfs: Hvfs, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "private").mkdir(parents=True, mode=0o700)
    (data / "private" / "secret").write_text("secret\n")
    os.chmod(data / "private", 0o700)
    (tmp_path / "race.py").write_text(RACE)
    stats = tmp_path / "stats.json"
    args = ["run", "--strict", "--stats", str(stats), "-v", f"{data}:/data", "-v", f"{tmp_path}:/probe:ro"]
    out = hvfs.ok(*args, "--", "python3", "/probe/race.py", str(TRIES))
    result = json.loads(out)
    assert result["wrong"] == {"toggler": [], "user": [], "root": [], "process": []}, result["wrong"]
    assert result["rooted"] > 100 and result["judged"] > 100, result  # it raced
    compiled = json.loads(stats.read_text())["compiled"]
    assert compiled.get("stat_served", 0) > TRIES // 10 and compiled.get("stat_failed", 0) > TRIES // 10, compiled
