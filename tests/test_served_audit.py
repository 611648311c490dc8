"""An audited strict VM's stats and read-only opens served in the driver's C loop
(hvfs/_native/served_audit.h) are recorded exactly as the Python path records them: every
case of tests/test_served_stat.py, run with ``--audit`` served in C and with
``HVFS_SERVED_STAT=0`` (a manager of its own), gives the same answers and the same audit
records, in the same order, on every field but the time, the duration and the ids (the
VM's name, the pid), as root, as a VM user (served in C acting as that user) and rootless;
the C loop serves them (counted in
``--stats``); a hook on the bus (a fault rule) keeps every request on Python."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Hvfs
from tests.test_served_stat import _compiled, _in_python, _probe, _volume, _volume_for

IDS = ("time", "vm", "pid", "duration_us")  # what differs from run to run


def _records(log: Path) -> list[dict[str, Any]]:
    """The audit's records without their time, duration and ids, in the file's order (all
    of one VM, named alike by C and Python)."""
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len({record["vm"] for record in records}) == 1
    return [{key: value for key, value in record.items() if key not in IDS} for record in records]


def _audited(runner: Hvfs, root: Path, data: Path, name: str, *options: str) -> tuple[Any, Any, Any]:
    log = root / f"audit-{name}.jsonl"
    results, stats = _probe(runner, root, data, "--audit", str(log), *options)
    return results, stats, _records(log)


def _served(stats: dict[str, Any]) -> int:
    compiled = _compiled(stats)
    return sum(compiled.get(key, 0) for key in ("stat_served", "statx_served", "open_served"))


@pytest.mark.parametrize("as_user", [False, True], ids=["root", "vm-user"])
def test_each_case_is_recorded_as_the_python_path_records_it(hvfs: Hvfs, tmp_path: Path, as_user: bool) -> None:
    data, options = _volume_for(tmp_path, as_user)
    in_c, in_c_stats, c_records = _audited(hvfs, tmp_path, data, "c", *options)
    in_python, python_stats, python_records = _audited(_in_python(hvfs), tmp_path, data, "python", *options)
    assert in_c == in_python
    assert c_records == python_records
    named = [record["paths"] for record in c_records if record.get("operation") in ("stat", "statx", "open")]
    assert ["/data/file"] in named and ["/data/dir/inner"] in named
    assert _served(python_stats) == 0
    assert _served(in_c_stats) >= 20, _compiled(in_c_stats)  # a VM user's too: C acts as the caller


@pytest.mark.rootless
def test_a_rootless_vm_is_recorded_as_the_python_path_records_it(rootless: Hvfs, shared_tmp: Path) -> None:
    assert rootless.user is not None
    data = _volume(shared_tmp, rootless.user)
    in_c, in_c_stats, c_records = _audited(rootless, shared_tmp, data, "c")
    in_python, _, python_records = _audited(_in_python(rootless), shared_tmp, data, "python")
    assert in_c == in_python
    assert c_records == python_records
    assert _served(in_c_stats) >= 20, _compiled(in_c_stats)


def test_a_hooked_vm_stays_on_the_python_path(hvfs: Hvfs, tmp_path: Path) -> None:
    data = _volume(tmp_path, None)
    rule = "op=stat,path=/nothing/here,errno=EIO"
    in_c, stats, records = _audited(hvfs, tmp_path, data, "hooked", "--fault", rule)
    assert in_c["stat"][0] == "ok"
    assert _served(stats) == 0, _compiled(stats)
    assert any(record.get("paths") == ["/data/file"] for record in records)
