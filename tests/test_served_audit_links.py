"""An audited strict VM's readlink and access served in the driver's C loop
(hvfs/_native/served_link.h), and the lookups C continues in the VM or answers with an errno
(hvfs/_native/served_resolved.h), are recorded exactly as the Python path records them: every
case of tests/test_served_link.py (a link read, a dangling one, a missing path, a path through
a file, a name too long, a path too long, a private directory's EACCES as a VM user, relative
paths and dirfds), run with ``--audit`` served in C and with ``HVFS_SERVED_STAT=0`` (a manager
of its own), gives the same answers and the same audit records, in the same order, on every
field but the time, the duration and the ids, as root, as a VM user and rootless; and C
serves them (``--stats``), handing Python no more than it does for the VM unaudited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Hvfs, chown_to
from tests.test_served_audit import _records
from tests.test_served_link import _check, _in_python, _served, _volume

HANDED = "handed_to_python"


def _audited(runner: Hvfs, root: Path, data: Path, name: str, *options: str) -> tuple[Any, Any, Any]:
    log = root / f"audit-{name}.jsonl"
    stats = root / f"stats-{name}.json"
    args = ["run", "--strict", "--stats", str(stats), *options, "-v", f"{data}:/data", "-v", f"{root}:/probe:ro"]
    out = runner.ok(*args, "--", "python3", "/probe/probe.py")
    compiled: dict[str, int] = json.loads(stats.read_text())["compiled"]
    return json.loads(out), compiled, _records(log) if log.exists() else []


@pytest.mark.parametrize("as_user", [False, True], ids=["root", "vm-user"])
def test_each_case_is_recorded_as_the_python_path_records_it(hvfs: Hvfs, tmp_path: Path, as_user: bool) -> None:
    data = _volume(tmp_path, as_user)
    user = ("-u", "1000:1000") if as_user else ()
    in_c, compiled, c_records = _audited(hvfs, tmp_path, data, "c", "--audit", str(tmp_path / "audit-c.jsonl"), *user)
    python_log = str(tmp_path / "audit-python.jsonl")
    in_python, python_compiled, python_records = _audited(
        _in_python(hvfs), tmp_path, data, "python", "--audit", python_log, *user
    )
    _check(in_c, in_python, as_user)
    assert c_records == python_records
    results: dict[tuple[str, str], list[str]] = {}
    for record in c_records:
        results.setdefault((record["operation"], *record["paths"]), []).append(record["result"])
    assert results["readlink", "/data/link"][0] == "ok" and results["readlink", "/data/file"] == ["EINVAL"]
    assert results["readlink", "/data/missing"] == ["continued"]  # ENOENT: the kernel's, on the boot view
    assert results["readlink", "/data/dangling"] == ["ok"] and "continued" in results["access", "/data/dangling"]
    assert results["access", "/data/dir/inner"] == ["ok"]  # relative to the cwd, named as resolved
    assert results["access", "/data/locked"][0] == ("EACCES" if as_user else "ok")
    assert results["readlink", "/data/" + "x" * 300] == ["ENAMETOOLONG"]
    assert _served(python_compiled, "readlink") == _served(python_compiled, "access") == 0
    assert _served(compiled, "readlink") >= 10 and _served(compiled, "access") >= 20, compiled
    assert compiled.get("readlink_continued", 0) + compiled.get("access_continued", 0) >= 4, compiled


LOOP = (
    "i=0; while [ $i -lt 200 ]; do [ -r /data/file ]; [ -w /data/missing ]; [ -e /data/dir/missing ];"
    " i=$((i + 1)); done; readlink /data/link /data/missing; true"
)


def _loop(runner: Hvfs, root: Path, data: Path, name: str, *options: str) -> dict[str, int]:
    stats = root / f"stats-{name}.json"
    runner.ok("run", "--strict", "--stats", str(stats), *options, "-v", f"{data}:/data", "--", "sh", "-c", LOOP)
    compiled: dict[str, int] = json.loads(stats.read_text())["compiled"]
    return compiled


def test_an_audited_vm_hands_python_what_an_unaudited_one_does(hvfs: Hvfs, tmp_path: Path) -> None:
    """The hand-offs to Python (``--stats``) of a shell's 600 checks of files there and
    missing (access, stat; continued where missing) and a readlink: audited, those of the same
    run unaudited, but for the few requests the Python path names otherwise than by their
    text (the loader's libraries found through a symlink on the way, once per exec)."""
    data = _volume(tmp_path, False)
    audited = _loop(hvfs, tmp_path, data, "audited", "--audit", str(tmp_path / "audit.jsonl"))
    strict = _loop(hvfs, tmp_path, data, "strict")
    assert strict[HANDED] <= audited[HANDED] <= strict[HANDED] + 8, (audited, strict)
    assert _served(audited, "access") >= 400 and audited.get("access_continued", 0) >= 200, audited
    assert audited.get("readlink_served", 0) >= 1 and audited.get("readlink_continued", 0) >= 1, audited
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    missing = [event for event in events if event["paths"] == ["/data/missing"] and event["operation"] == "access"]
    assert len(missing) == 200 and {event["result"] for event in missing} == {"continued"}


@pytest.mark.rootless
def test_a_rootless_vm_is_recorded_as_the_python_path_records_it(rootless: Hvfs, shared_tmp: Path) -> None:
    assert rootless.user is not None
    data = _volume(shared_tmp, False)
    chown_to(shared_tmp, rootless.user)
    in_c, compiled, c_records = _audited(rootless, shared_tmp, data, "c", "--audit", str(shared_tmp / "audit-c.jsonl"))
    python_log = str(shared_tmp / "audit-python.jsonl")
    in_python, _, python_records = _audited(_in_python(rootless), shared_tmp, data, "python", "--audit", python_log)
    assert in_c == in_python
    assert c_records == python_records
    assert _served(compiled, "readlink") >= 10 and _served(compiled, "access") >= 20, compiled
