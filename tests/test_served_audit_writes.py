"""An audited strict VM's write-opens, exclusive creations, unlinks and fd metadata changes
served in the driver's C loop (served_write.h, served_mutate.h, served_fdmeta.h, their events
recorded by served_audit.h) answer, change and are recorded exactly as the Python path
(``HVFS_SERVED_WRITE=0``, a manager of its own) answers, changes and records them: each of
the four probes of tests/test_served_write.py, test_served_mutate.py and
test_served_fdmeta.py, run with ``--audit``, gives the same answers, files, ``hvfs diff``
and C's share of the calls as without an audit, and the same audit records in the same
order, "ok" and errno alike (EEXIST, EPERM, EROFS ... answered in C), on every field but
the time, the duration and the ids, as root, as a VM user and rootless."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import test_served_fdmeta, test_served_mutate, test_served_write
from tests.conftest import Hvfs
from tests.served_probe import AUDIT, audit_records

Compared = Callable[..., dict[str, Any]]
# each probe's comparison (answers, files, diff, C's share), and the operations C serves in it
PROBES: dict[str, tuple[Compared, tuple[str, ...]]] = {
    "write-open": (test_served_write._both_ways, ("open",)),
    "creation": (test_served_mutate._both_ways, ("open",)),
    "unlink": (test_served_mutate._unlink_both_ways, ("unlink",)),
    "fd-metadata": (test_served_fdmeta._both_ways, ("chmod", "chown", "utimens")),
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
