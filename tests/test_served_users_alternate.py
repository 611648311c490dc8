"""Three VMs on one manager at once, as uid 1000, as uid 2000 and as root, each asking the
same stats, read-only opens and write-opens over and over, so that the manager's serving
threads answer one VM's request between two of another's: every answer, made in the C
loop acting as the caller (hvfs/_native/served_switch.h), is the one its own user's rights
give (EACCES on the other user's files and group's, on root's), never the previous caller's nor the
manager's. Once they are done, every thread of the manager is itself again: its fsuid,
fsgid, groups and effective capabilities are the manager's (no thread is left acting as a
VM's user, in C or in Python); meanwhile no thread was seen with two users' ids."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

from tests.conftest import Hvfs, state_dir

REPEATS = 150
USERS = (1000, 2000, 0)
PROBE = r"""
import errno, json, os, sys

def attempt(call, path):
    try:
        if call == "stat":
            os.stat(path)
        else:
            os.close(os.open(path, os.O_RDONLY if call == "read" else os.O_WRONLY))
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]

CASES = [(call, path) for path in sys.argv[2:] for call in ("stat", "read", "write")]
found = {f"{call} {path}": set() for call, path in CASES}
for _ in range(int(sys.argv[1])):
    for call, path in CASES:
        found[f"{call} {path}"].add(attempt(call, "/data/" + path))
print(json.dumps({case: sorted(results) for case, results in found.items()}))
"""


def _volume(root: Path) -> tuple[Path, dict[str, tuple[int, int]]]:
    """Per user: a 0700 directory with a 0600 file in it, a 0600 file in a shared directory,
    and a 0070 directory of root's with a 0060 file, both of the user's group. The files
    (path: the uid or gid they are for, mode)."""
    data = root / "data"
    files: dict[str, tuple[int, int]] = {}
    (data / "shared").mkdir(parents=True)
    for uid in USERS:
        private = data / f"private{uid}"
        private.mkdir()
        for path in (private / "f", data / "shared" / f"own{uid}"):
            path.write_text(f"{uid}\n")
            os.chown(path, uid, uid)
            os.chmod(path, 0o600)
            files[str(path.relative_to(data))] = (uid, 0o600)
        os.chown(private, uid, uid)
        os.chmod(private, 0o700)
    for gid in USERS[:2]:  # root's, a group's alone: its gid is the fsgid, no supplementary group is set
        grouped = data / f"group{gid}"
        grouped.mkdir()
        (grouped / "f").write_text(f"{gid}\n")
        for path, mode in ((grouped / "f", 0o060), (grouped, 0o070)):
            os.chown(path, 0, gid)
            os.chmod(path, mode)
        files[str((grouped / "f").relative_to(data))] = (gid, 0o060)
    for directory in (data / "shared", data, root):
        os.chmod(directory, 0o755)
    (root / "probe.py").write_text(PROBE)
    return data, files


def _expected(uid: int, owner: int) -> str:
    """What a process of uid (uid:uid, no capabilities but root's) may do with the file:
    its own or its group's, or root."""
    return "ok" if uid in (0, owner) else "EACCES"


def _thread_identities(pid: int) -> set[tuple[str, ...]]:
    """Each thread's Uid, Gid, Groups and CapEff lines (Uid and Gid end with the fs ids)."""
    identities = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            lines = (task / "status").read_text().splitlines()
        except (FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile (ESRCH: after the open)
            continue
        identities.add(tuple(line for line in lines if line.split(":")[0] in ("Uid", "Gid", "Groups", "CapEff")))
    return identities


def _mixed_ids(pid: int, own: set[str], stop: threading.Event, mixed: list[tuple[str, ...]]) -> None:
    """Until ``stop``: every thread's fs ids, none but the manager's and one caller's at a
    time (a switch in progress sets the fsgid before the fsuid: the manager's and one
    user's mix; two users' never)."""
    while not stop.is_set():
        for identity in _thread_identities(pid):
            uid, gid = (line.split()[4] for line in identity if line.startswith(("Uid", "Gid")))
            if len({uid, gid} - own) > 1:
                mixed.append(identity)


def test_alternating_users_on_one_manager_each_get_their_own_rights(hvfs: Hvfs, tmp_path: Path) -> None:
    data, files = _volume(tmp_path)
    runner = hvfs.with_env(HVFS_STATE_DIR=state_dir(None, "alternate-users"))
    runner.ok("run", "--", "true")  # the manager, up before the three start together
    manager = json.loads((Path(state_dir(None, "alternate-users")) / "manager.json").read_text())["pid"]
    before = _thread_identities(manager)
    assert len(before) == 1, before  # all of its threads are the manager at rest

    own = {line.split()[4] for identity in before for line in identity if line.startswith(("Uid", "Gid"))}
    stop, mixed = threading.Event(), list[tuple[str, ...]]()
    sampler = threading.Thread(target=_mixed_ids, args=(manager, own, stop, mixed), daemon=True)
    sampler.start()
    try:
        runs = {}
        for uid in USERS:
            stats = tmp_path / f"stats-{uid}.json"
            user = ["-u", f"{uid}:{uid}"] if uid else []
            volume = ["-v", f"{data}:/data", "-v", f"{tmp_path}:/probe:ro"]
            argv = [*runner.command, "run", "--strict", "--stats", str(stats), *user, *volume, "--"]
            probe = ["python3", "/probe/probe.py", str(REPEATS), *files]
            runs[uid] = (
                subprocess.Popen([*argv, *probe], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                stats,
            )
        for uid, (process, stats) in runs.items():
            out, err = process.communicate(timeout=300)
            assert process.returncode == 0, (uid, err)
            found = json.loads(out)
            for path, (owner, _) in files.items():
                for call in ("stat", "read", "write"):
                    # a 0600 file in the shared directory: anyone stats it; a 0700 directory: its owner alone
                    wanted = "ok" if call == "stat" and path.startswith("shared") else _expected(uid, owner)
                    assert found[f"{call} {path}"] == [wanted], (uid, call, path, found[f"{call} {path}"])
            compiled = json.loads(stats.read_text())["compiled"]
            # The C loop answered them, refusals too, all but the refused write-opens (handed to
            # Python, which names their error): not the Python path.
            writable = sum(_expected(uid, owner) == "ok" for owner, _ in files.values())
            assert compiled.get("stat_served", 0) + compiled.get("stat_failed", 0) >= len(files) * REPEATS, compiled
            opens = compiled.get("open_served", 0) + compiled.get("open_failed", 0)
            assert opens >= (len(files) + writable) * REPEATS, compiled
    finally:
        stop.set()
        sampler.join()
    assert mixed == []
    assert _thread_identities(manager) == before
