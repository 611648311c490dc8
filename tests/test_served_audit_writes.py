"""An audited strict VM's write-opens, exclusive creations, unlinks, mkdirs, rmdirs and
metadata changes (by an fd or a path) served in the driver's C loop (served_write.h,
served_mutate.h, served_dirs.h, served_fdmeta.h, served_pathmeta.h, their events recorded by
served_audit.h) answer, change and are recorded exactly as the Python path
(``HVFS_SERVED_WRITE=0``, a manager of its own) answers, changes and records them: each of the
six probes of tests/test_served_write.py, test_served_mutate.py, test_served_dirs.py,
test_served_fdmeta.py and test_served_pathmeta.py, run with ``--audit``,
gives the same answers, files, ``hvfs diff`` and C's share of the calls as without an audit,
and the same audit records in the same order, "ok" and errno alike (EEXIST, EPERM, EROFS ...
answered in C), on every field but the time, the duration and the ids, as root, as a VM user
and rootless. So does a real untar and its rm -rf (W3's), whose hand-offs to Python are then
those of the same run unaudited."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import test_served_dirs, test_served_fdmeta, test_served_mutate, test_served_pathmeta, test_served_write
from tests.conftest import Hvfs
from tests.served_probe import AUDIT, audit_records
from tests.test_served_mutate import _extracted, _in_python

Compared = Callable[..., dict[str, Any]]
# each probe's comparison (answers, files, diff, C's share), and the operations C serves in it
PROBES: dict[str, tuple[Compared, tuple[str, ...]]] = {
    "write-open": (test_served_write._both_ways, ("open",)),
    "creation": (test_served_mutate._both_ways, ("open",)),
    "unlink": (test_served_mutate._unlink_both_ways, ("unlink",)),
    "dirs": (test_served_dirs._dirs_both_ways, ("mkdir", "rmdir")),
    "fd-metadata": (test_served_fdmeta._both_ways, ("chmod", "chown", "utimens")),
    "path-metadata": (test_served_pathmeta._both_ways, ("chmod", "chown", "utimens")),
}


def _recorded_alike(compared: Compared, runner: Hvfs, root: Path, owner: int | str | None, *options: str) -> Any:
    """The probe compared audited, each way with its own audit file; its records compared in
    order; the C run's records."""
    compared(runner, root, owner, *options, "--audit", AUDIT)
    in_c, in_python = audit_records(root / "c"), audit_records(root / "python")
    assert in_c == in_python
    return in_c


def _failures_among(records: list[dict[str, Any]], operations: tuple[str, ...]) -> set[str]:
    return {record["result"] for record in records if record["operation"] in operations} - {"ok"}


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("as_user", [False, True], ids=["root", "vm-user"])
def test_each_audited_mutation_is_answered_and_recorded_as_the_python_path(
    hvfs: Hvfs, tmp_path: Path, as_user: bool, probe: str
) -> None:
    os.chmod(tmp_path, 0o755)
    compared, operations = PROBES[probe]
    options = ("-u", "1000:1000") if as_user else ()
    records = _recorded_alike(compared, hvfs, tmp_path, 1000 if as_user else None, *options)
    named = [record for record in records if record["operation"] in operations]
    assert any(record["result"] == "ok" and record["paths"][0].startswith("/data/") for record in named), named
    assert _failures_among(records, operations), named  # the errno records too (EEXIST, EPERM, ENOENT ...)


@pytest.mark.rootless
@pytest.mark.parametrize("probe", PROBES)
def test_a_rootless_audited_vms_mutations_are_recorded_as_the_python_path(
    rootless: Hvfs, shared_tmp: Path, probe: str
) -> None:
    assert rootless.user is not None
    compared, operations = PROBES[probe]
    records = _recorded_alike(compared, rootless, shared_tmp, rootless.user)
    assert any(record["result"] == "ok" for record in records if record["operation"] in operations)


def _untarred(runner: Hvfs, place: Path, *options: str) -> tuple[dict[str, Any], int, list[dict[str, Any]]]:
    """``_extracted`` in ``place`` (tar -xf, then rm -rf: their statistics added), its tree, its
    hand-offs to Python and (audited) its audit records."""
    place.mkdir()
    tree, counted, _ = _extracted(runner, place, "--strict", *options)
    records = audit_records(place) if options else []
    return tree, counted["compiled"]["handed_to_python"], records


def test_an_audited_untar_is_recorded_as_the_python_path_and_hands_python_no_more(hvfs: Hvfs, tmp_path: Path) -> None:
    audited = ("--audit", str(tmp_path / "c" / "audit.jsonl"))
    tree, handed, records = _untarred(hvfs, tmp_path / "c", *audited)
    in_python = _untarred(_in_python(hvfs), tmp_path / "python", "--audit", str(tmp_path / "python" / "audit.jsonl"))
    assert (tree, records) == (in_python[0], in_python[2])
    _, strict_handed, _ = _untarred(hvfs, tmp_path / "strict")
    # tar's mkdirs, its directories' chmod, chown and utimensat by path and rm's rmdirs are C's
    # audited too (a mkdir's EEXIST, which this tarball's directory entries spare tar: DIR_PROBE's)
    assert handed <= strict_handed + 4, (handed, strict_handed)
    results = {(record["operation"], record["result"]) for record in records}
    assert {("mkdir", "ok"), ("rmdir", "ok"), ("chmod", "ok"), ("utimens", "ok")} <= results, results
    assert any(record["paths"] == ["/data/tree/d3"] for record in records if record["operation"] == "rmdir")
