"""The ptrace driver's unlink served in its C tracer loop (hvfs/_native/tracer_unlink.h)
answers and changes exactly what its Python path does, which serves it with
``HVFS_SERVED_WRITE=0`` (a manager of its own): tests/test_served_mutate.py's unlink probe
(every case served in C or declined to Python) gives the same answers, files afterwards,
times and ``hvfs diff`` under ``--driver ptrace``, as root, as a VM user (C acting as that
user) and rootless, strict and default; an ``rm -rf`` of a tree, by threads at once too,
leaves the same nothing behind and the same diff; a thread that changes its credentials
between unlinks is served as it then is."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Hvfs
from tests.served_probe import snapshot
from tests.test_served_mutate import _unlink_both_ways
from tests.test_served_write import _in_python


def _unlinked_here(stats: dict[str, Any]) -> int:
    unlinked: int = stats["unlinked_here"]
    return unlinked


def _share(c_stats: dict[str, Any], python_stats: dict[str, Any]) -> int:
    """The unlinks the C loop served in the C run: none in the Python path's."""
    for stats in (c_stats, python_stats):
        assert stats["driver"] == "ptrace" and stats["loop"] == "native", stats
    assert _unlinked_here(python_stats) == 0, python_stats
    return _unlinked_here(c_stats)


@pytest.mark.parametrize("profile", ["strict", "default"])
@pytest.mark.parametrize("as_user", [False, True], ids=["root", "vm-user"])
def test_each_unlink_answers_as_the_python_path(hvfs: Hvfs, tmp_path: Path, as_user: bool, profile: str) -> None:
    os.chmod(tmp_path, 0o755)
    options = ("--driver", "ptrace", *(("-u", "1000:1000") if as_user else ()))
    options += ("--default",) if profile == "default" else ()
    in_c = _unlink_both_ways(hvfs, tmp_path, 1000 if as_user else None, *options, share=_share)
    assert in_c["absolute"] == ["ok", 0] and in_c["again"] == ["error", 2] and in_c["a_directory"] == ["error", 21]
    assert in_c["ro_volume"] == ["error", 30] and in_c["removedir"] == ["ok", 0] and in_c["bad_flag"] == ["error", 22]
    assert in_c["private"] == (["error", 13] if as_user else ["ok", 0])
    assert in_c["sticky_others"] == (["error", 1] if as_user else ["ok", 0])
    assert in_c["relative"] == ["ok", 0] and in_c["dirfd"] == ["ok", 0] and in_c["through_symlink"] == ["ok", 0]


@pytest.mark.rootless
def test_a_rootless_vms_unlinks_answer_as_the_python_path(rootless: Hvfs, shared_tmp: Path) -> None:
    assert rootless.user is not None
    in_c = _unlink_both_ways(rootless, shared_tmp, rootless.user, "--driver", "ptrace", share=_share)
    assert in_c["absolute"] == ["ok", 0] and in_c["again"] == ["error", 2]


# rm -rf of two trees at once by two threads of one process, each with unlinkat from a dirfd
# (as rm's fts) and unlink by an absolute path; and a plain rm -rf after.
TREES = r"""
import os, sys, threading
def remove(top, by_fd):
    for parent, dirs, files in os.walk(top, topdown=False):
        if by_fd:
            fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
            for name in files:
                os.unlink(name, dir_fd=fd)
            os.close(fd)
        else:
            for name in files:
                os.unlink(os.path.join(parent, name))
        os.rmdir(parent)
threads = [threading.Thread(target=remove, args=(f"/data/t{n}", n % 2 == 0)) for n in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(sorted(os.listdir("/data")))
"""


def _tree(data: Path, name: str, files: int) -> None:
    for i in range(files):
        folder = data / name / f"d{i % 7}" / f"e{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}").write_text(f"{i}\n")


def _removed(runner: Hvfs, root: Path) -> tuple[list[str], list[str], dict[str, Any]]:
    """The trees removed in a VM (threads, then rm -rf): what is printed, the diff lines and
    the statistics of both runs (unlinked_here and unlink requests added up)."""
    data = root / "data"
    data.mkdir()
    os.chmod(root, 0o755)
    for name, files in (("t0", 300), ("t1", 300), ("rm", 400)):
        _tree(data, name, files)
    (root / "trees.py").write_text(TREES)
    lines, diff, counted = [], [], {"unlinked_here": 0, "unlink": 0}
    volumes = ["-v", f"{data}:/data"]
    for step, command in (("threads", ["python3", "/trees.py"]), ("rm", ["rm", "-rf", "/data/rm"])):
        stats = root / f"{step}.json"
        extra = ["-v", f"{root / 'trees.py'}:/trees.py:ro"] if step == "threads" else []
        result: subprocess.CompletedProcess[str] = runner.run(
            "run", "--driver", "ptrace", "--diff", "--stats", str(stats), *volumes, *extra, "--", *command
        )
        assert result.returncode == 0, result.stderr
        lines += result.stdout.splitlines()
        diff += sorted(line for line in (result.stdout + result.stderr).splitlines() if line[:2] in ("A ", "C ", "D "))
        document = json.loads(stats.read_text())
        counted["unlinked_here"] += _unlinked_here(document)
        counted["unlink"] += document["requests"].get("unlink", {}).get("served", 0)
    assert snapshot(data) == {}
    return lines, diff, counted


def test_trees_removed_by_threads_and_rm_leave_the_python_paths_diff(hvfs: Hvfs, tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "python").mkdir()
    in_c, c_diff, c_counted = _removed(hvfs, tmp_path / "c")
    in_python, python_diff, python_counted = _removed(_in_python(hvfs), tmp_path / "python")
    assert in_c == in_python and in_c[0] == "['rm']"
    assert c_diff == python_diff and "D /data/t0/d3/e0/f3" in c_diff and "D /data/rm/d6/e2/f377" in c_diff
    assert c_counted["unlink"] == python_counted["unlink"] == 1000, (c_counted, python_counted)
    # Each wait serves at most SERVED_PER_WAIT in C; the rest is Python's: most here, none there.
    assert c_counted["unlinked_here"] >= 800 and python_counted["unlinked_here"] == 0, (c_counted, python_counted)


# A root process unlinks as root, then (setresuid of this thread alone) as uid 1000, which may
# not remove a root file in a root-owned 0755 directory; a sibling thread that stayed root may.
CHANGES = r"""
import ctypes, json, os, threading
libc = ctypes.CDLL(None, use_errno=True)
def gone(name):
    try:
        os.unlink(name)
        return "ok"
    except OSError as e:
        return e.errno
seen = {f"root{i}": gone(f"/data/root/f{i}") for i in range(5)}
ready, done = threading.Event(), threading.Event()
def other():
    ready.wait()
    seen["thread_root"] = gone("/data/root/f9")
    done.set()
thread = threading.Thread(target=other)
thread.start()
assert libc.syscall(117, 1000, 1000, 1000) == 0  # setresuid of this thread alone (the raw call)
seen.update({f"user{i}": gone(f"/data/root/f{5 + i}") for i in range(3)})
seen["user_own"] = gone("/data/open/mine")
ready.set()
done.wait()
thread.join()
print(json.dumps(seen))
"""


def test_credentials_changed_between_unlinks_are_the_callers(hvfs: Hvfs, tmp_path: Path) -> None:
    """A thread's setresuid between its unlinks: each unlink afterwards is made as the
    thread then is (C's published record is stale after the change, Python reads it again),
    and a sibling thread that kept root is served as root."""
    os.chmod(tmp_path, 0o755)
    answers = []
    for name, way in (("c", hvfs), ("python", _in_python(hvfs))):
        data = tmp_path / name / "data"
        (data / "root").mkdir(parents=True)
        (data / "open").mkdir(mode=0o777)
        os.chmod(data / "open", 0o777)
        for i in range(10):
            (data / "root" / f"f{i}").write_text("x")
        (data / "open" / "mine").write_text("x")
        os.chown(data / "open" / "mine", 1000, 1000)
        (tmp_path / name / "probe.py").write_text(CHANGES)
        stats = tmp_path / name / "stats.json"
        out = way.ok("run", "--driver", "ptrace", "--stats", str(stats), "-v", f"{data}:/data",
                     "-v", f"{tmp_path / name / 'probe.py'}:/probe.py:ro", "--", "python3", "/probe.py")  # fmt: skip
        seen = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
        answers.append((seen, snapshot(data), json.loads(stats.read_text())))
    (in_c, c_files, c_stats), (in_python, python_files, python_stats) = answers
    assert in_c == in_python and c_files == python_files
    assert in_c["root4"] == "ok" and in_c["user0"] == 13 and in_c["user_own"] == "ok" and in_c["thread_root"] == "ok"
    assert _unlinked_here(c_stats) >= 5 and _unlinked_here(python_stats) == 0, c_stats


def test_an_audited_vms_unlinks_stay_on_python_and_are_recorded(hvfs: Hvfs, tmp_path: Path) -> None:
    """An audit subscriber turns the bus's quiet flag off: every unlink is Python's, and each
    is in the audit log, by its absolute path whichever way it was named."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        (data / f"f{i}").write_text("x")
    log, stats = tmp_path / "audit.jsonl", tmp_path / "stats.json"
    script = "rm /data/f0 /data/f1 && cd /data && rm -rf f2 f3 f4"
    hvfs.ok("run", "--driver", "ptrace", "--audit", str(log), "--stats", str(stats), "-v", f"{data}:/data",
            "--", "sh", "-c", script)  # fmt: skip
    records = [json.loads(line) for line in log.read_text().splitlines()]
    unlinked = sorted(path for r in records if r.get("operation") == "unlink" for path in r["paths"])
    assert unlinked == [f"/data/f{i}" for i in range(5)], records
    assert list(data.iterdir()) == []
    assert _unlinked_here(json.loads(stats.read_text())) == 0
