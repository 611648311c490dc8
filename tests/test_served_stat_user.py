"""A strict VM user's stats and read-only opens, served in the driver's C loop acting as
that user (hvfs/_native/served_switch.h), are refused and allowed exactly as the Python
path (hvfs/manager/creds.py ``acting_as``, ``HVFS_SERVED_STAT=0``) refuses and allows them:
a directory without search permission, another user's 0700 home, a file the user may not
read, a directory only a supplementary group may enter, and what a process may see before
and after it drops root itself, or becomes uid 1000 keeping root's capabilities. Each
case is asked many times, and ``--stats`` shows the C loop answered them (served and
failed), so that a run only on Python fails."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.conftest import Hvfs
from tests.test_served_stat import _compiled, _in_python

REPEATS = 50
PROBE = r"""
import errno, json, os, sys

def seen(call, path):
    results = set()
    for _ in range(int(sys.argv[2])):
        try:
            if call == "stat":
                os.stat(path)
            else:
                os.close(os.open(path, os.O_RDONLY))
            results.add("ok")
        except OSError as e:
            results.add(errno.errorcode[e.errno])
    return sorted(results)

PATHS = ["nosearch/f", "home/f", "own/f", "own/unreadable", "group/f", "othergroup/f"]

def cases(prefix):
    return {f"{prefix}{call} {path}": seen(call, "/data/" + path) for path in PATHS for call in ("stat", "open")}

def keep_capabilities():  # what setuid cleared, raised again from the permitted set it kept
    import ctypes, struct
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = struct.pack("Ii", 0x20080522, 0), ctypes.create_string_buffer(24)
    assert libc.capget(header, data) == 0
    _, permitted_low, inheritable_low, _, permitted_high, inheritable_high = struct.unpack("6I", data.raw)
    kept = (permitted_low, permitted_low, inheritable_low, permitted_high, permitted_high, inheritable_high)
    assert libc.capset(header, struct.pack("6I", *kept)) == 0

found = {}
if sys.argv[1] in ("drops", "keeps"):  # root, then the user with a supplementary group, by its own calls
    found.update(cases("root: "))
    if sys.argv[1] == "keeps":
        import ctypes
        assert ctypes.CDLL(None).prctl(8, 1, 0, 0, 0) == 0  # PR_SET_KEEPCAPS
    os.setgroups([4242])
    os.setgid(1000)
    os.setuid(1000)
    if sys.argv[1] == "keeps":
        keep_capabilities()
found.update(cases("user: "))
print(json.dumps(found))
"""


def _volume(root: Path) -> Path:
    data = root / "data"
    made = {"nosearch": (0o600, 1000, 1000), "home": (0o700, 2000, 2000), "own": (0o700, 1000, 1000)}
    made |= {"group": (0o750, 0, 4242), "othergroup": (0o750, 0, 4343)}
    for name, (_, uid, gid) in made.items():
        (data / name).mkdir(parents=True)
        (data / name / "f").write_text(f"{name}\n")
        os.chmod(data / name / "f", 0o644)
        os.chown(data / name / "f", uid, gid)
    (data / "own" / "unreadable").write_text("not for 1000\n")
    os.chmod(data / "own" / "unreadable", 0o200)
    os.chown(data / "own" / "unreadable", 2000, 2000)
    for name, (mode, uid, gid) in made.items():  # the modes last: root's own writes above need none
        os.chown(data / name, uid, gid)
        os.chmod(data / name, mode)
    os.chmod(data, 0o755)
    os.chmod(root, 0o755)
    (root / "probe.py").write_text(PROBE)
    return data


def _run(runner: Hvfs, root: Path, data: Path, kind: str, *options: str) -> tuple[dict[str, Any], dict[str, int]]:
    stats = root / f"stats-{len(list(root.glob('stats-*')))}.json"
    args = ["run", "--strict", "--stats", str(stats), *options, "-v", f"{data}:/data", "-v", f"{root}:/probe:ro"]
    out = runner.ok(*args, "--", "python3", "/probe/probe.py", kind, str(REPEATS))
    return json.loads(out), _compiled(json.loads(stats.read_text()))


def test_a_vm_users_refusals_are_pythons_served_in_c(hvfs: Hvfs, tmp_path: Path) -> None:
    data = _volume(tmp_path)
    in_c, counts = _run(hvfs, tmp_path, data, "user", "-u", "1000:1000")
    in_python, python_counts = _run(_in_python(hvfs), tmp_path, data, "user", "-u", "1000:1000")
    assert in_c == in_python
    assert in_c["user: stat nosearch/f"] == ["EACCES"] and in_c["user: open home/f"] == ["EACCES"]
    assert in_c["user: stat own/f"] == ["ok"] and in_c["user: open own/unreadable"] == ["EACCES"]
    assert in_c["user: stat group/f"] == ["EACCES"]  # no supplementary group here
    assert "stat_served" not in python_counts
    assert counts.get("stat_failed", 0) >= 4 * REPEATS and counts.get("open_failed", 0) >= 4 * REPEATS, counts
    assert counts.get("stat_served", 0) >= 2 * REPEATS and counts.get("open_served", 0) >= REPEATS, counts


def test_a_process_that_drops_root_itself_is_served_as_it_is_now(hvfs: Hvfs, tmp_path: Path) -> None:
    data = _volume(tmp_path)
    in_c, counts = _run(hvfs, tmp_path, data, "drops")
    in_python, _ = _run(_in_python(hvfs), tmp_path, data, "drops")
    assert in_c == in_python
    assert in_c["root: stat home/f"] == ["ok"] and in_c["user: stat home/f"] == ["EACCES"]
    assert in_c["root: open own/unreadable"] == ["ok"] and in_c["user: open own/unreadable"] == ["EACCES"]
    assert in_c["user: stat group/f"] == ["ok"] and in_c["user: open group/f"] == ["ok"]  # its group's
    assert in_c["user: stat othergroup/f"] == ["EACCES"]
    assert counts.get("stat_failed", 0) >= 2 * REPEATS and counts.get("stat_served", 0) >= 6 * REPEATS, counts


def test_a_process_that_keeps_roots_capabilities_as_a_user_has_them(hvfs: Hvfs, tmp_path: Path) -> None:
    """Its fsuid leaving 0 drops the fs capabilities from the effective set of the thread
    that acts as it, which must set them again (served_switch.h, creds.py ``_switch``):
    CAP_DAC_READ_SEARCH and CAP_DAC_OVERRIDE reach everything, as natively."""
    data = _volume(tmp_path)
    in_c, counts = _run(hvfs, tmp_path, data, "keeps")
    in_python, _ = _run(_in_python(hvfs), tmp_path, data, "keeps")
    assert in_c == in_python
    assert {result for case, results in in_c.items() for result in results if case.startswith("user: ")} == {"ok"}
    assert counts.get("stat_served", 0) >= 10 * REPEATS and counts.get("open_served", 0) >= 10 * REPEATS, counts
