"""An audited strict VM's write-open, served in the driver's C loop and recorded there
(served_write.h, served_audit.h), names what it opened: the path's text is recorded only
for an open the C loop made with no symlink on the way, as the Python path names it.

As tests/adversarial/test_audited_stat_names.py races stats: a directory ``d`` (its ``f``
one inode) and a symlink ``s`` to ``other`` (whose ``f`` is another), swapped without pause
(renameat2 RENAME_EXCHANGE) by a second thread while the main thread opens ``/data/d/f``
O_WRONLY thousands of times and reads the inode of each fd it got. Each open's event, in
order, must name the file the fd is: ``/data/d/f`` or ``/data/s/f`` for the directory's
file, ``/data/other/f`` for the other; one event per open, none lost, none twice; ``--stats``
shows the C loop served write-opens meanwhile, so that a race run only on Python fails.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Hvfs

TRIES = 3000
RACE = r"""
import ctypes, json, os, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
RENAME_EXCHANGE = 2
done, flips = False, 0

def flip():
    global flips
    while not done:
        if libc.renameat2(-100, b"/data/d", -100, b"/data/s", RENAME_EXCHANGE) != 0:
            raise OSError(ctypes.get_errno(), "renameat2")
        flips += 1

thread = threading.Thread(target=flip)
thread.start()
seen = []
for _ in range(int(sys.argv[1])):
    try:
        fd = os.open("/data/d/f", os.O_WRONLY)
        seen.append(os.fstat(fd).st_ino)
        os.close(fd)
    except OSError as e:
        seen.append(-e.errno)
done = True
thread.join()
print(json.dumps({"seen": seen, "flips": flips}))
"""


def test_an_audited_write_open_names_the_file_it_opened(hvfs: Hvfs, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "d").mkdir(parents=True)
    (data / "other").mkdir()
    (data / "d" / "f").write_text("directory's\n")
    (data / "other" / "f").write_text("other's\n")
    (data / "s").symlink_to("other")
    (tmp_path / "race.py").write_text(RACE)
    inside, other = (data / "d" / "f").stat().st_ino, (data / "other" / "f").stat().st_ino
    stats, log = tmp_path / "stats.json", tmp_path / "audit.jsonl"
    args = ["run", "--strict", "--stats", str(stats), "--audit", str(log), "-v", f"{data}:/data"]
    out = hvfs.ok(*args, "-v", f"{tmp_path}:/probe:ro", "--", "python3", "/probe/race.py", str(TRIES))
    result = json.loads(out)
    names = {"/data/d/f": inside, "/data/s/f": inside, "/data/other/f": other}
    events = [json.loads(line) for line in log.read_text().splitlines()]
    opened = [e for e in events if e["operation"] == "open" and e["flags"] & 3 and e["paths"][0] in names]
    assert len(opened) == TRIES  # one event per write-open: none lost, none twice
    escapes = [
        (event["paths"][0], seen)
        for event, seen in zip(opened, result["seen"], strict=True)
        if event["result"] != "ok" or names[event["paths"][0]] != seen
    ]
    assert escapes == [], escapes[:10]
    assert inside in result["seen"] and other in result["seen"] and result["flips"] > 100, result["flips"]  # it raced
    assert json.loads(stats.read_text())["compiled"].get("open_served", 0) > TRIES // 10
