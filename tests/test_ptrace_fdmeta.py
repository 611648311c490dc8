"""The ptrace driver's fchmod, fchown and futimens served in its C tracer loop
(hvfs/_native/tracer_fdmeta.h) answer and change exactly what its Python path does, which
serves them with ``HVFS_SERVED_WRITE=0`` (a manager of its own): tests/test_served_fdmeta.py's
probe (every case served in C or declined to Python: an fd from the boot view, a device, a
pipe, an O_PATH or a bad fd, a path or a flag, unreadable times) gives the same answers, files
afterwards (mode, owner, times) and ``hvfs diff`` under ``--driver ptrace``, as root, as a VM
user (C acting as that user) and rootless, strict and default; GNU tar's extraction leaves the
Python path's tree; an audited VM's changes stay on Python."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Hvfs
from tests.test_served_fdmeta import C_SERVED_AT_LEAST, _both_ways
from tests.test_served_mutate import _extracted_both_ways

# The probe's cases C answers (tests/test_served_fdmeta.py C_SERVED_AT_LEAST), all kinds together:
# the tracer counts them as one (``fdmeta_here``).
SERVED_AT_LEAST = sum(C_SERVED_AT_LEAST.values())


def _fdmeta_here(stats: dict[str, Any]) -> int:
    assert stats["driver"] == "ptrace" and stats["loop"] == "native", stats
    changed: int = stats["fdmeta_here"]
    return changed


def _ptrace_share(c_stats: dict[str, Any], python_stats: dict[str, Any]) -> None:
    assert _fdmeta_here(c_stats) >= SERVED_AT_LEAST, c_stats
    assert _fdmeta_here(python_stats) == 0, python_stats


@pytest.mark.parametrize("profile", ["strict", "default"])
@pytest.mark.parametrize("as_user", [False, True], ids=["root", "vm-user"])
def test_each_fd_metadata_change_answers_as_the_python_path(
    hvfs: Hvfs, tmp_path: Path, as_user: bool, profile: str
) -> None:
    os.chmod(tmp_path, 0o755)
    options = ("--driver", "ptrace", *(("-u", "1000:1000") if as_user else ()))
    options += ("--default",) if profile == "default" else ()
    in_c = _both_ways(hvfs, tmp_path, 1000 if as_user else None, *options, share=_ptrace_share)
    assert in_c["made"] == ["ok", [0o100640, 1000 if as_user else 0, 1000 if as_user else 0]]
    assert in_c["others_file"] == (["error", 1] if as_user else ["ok", [0o100600, 4243, 4243]])
    assert in_c["o_path"] == ["error", 9] and in_c["bad_fd"] == ["error", 9] and in_c["dev_null"] == ["error", 1]
    assert in_c["ro_volume"] == ["error", 30] and in_c["chown_dev_null"] == ["error", 1]
    assert in_c["chown_to_root"] == (["error", 1] if as_user else ["ok", [0o100600, 0, 0]])
    assert in_c["times_made"] == ["ok", [1_500_000_000 * 10**9 + 123, 1_600_000_000 * 10**9 + 456]]
    assert in_c["times_omit"] == ["ok", ["now", "kept"]] and in_c["times_bad_nsec"] == ["error", 22]
    assert in_c["times_others"] == (["error", 1] if as_user else ["ok", [10**9, 2 * 10**9]])
    assert in_c["times_bad_address"] == ["error", 14]


@pytest.mark.rootless
def test_a_rootless_vms_fd_metadata_changes_answer_as_the_python_path(rootless: Hvfs, shared_tmp: Path) -> None:
    assert rootless.user is not None
    in_c = _both_ways(rootless, shared_tmp, rootless.user, "--driver", "ptrace", share=_ptrace_share)
    assert in_c["made"][0] == "ok" and in_c["made"][1][0] == 0o100640


@pytest.mark.parametrize("profile", ["--strict", "--diff"], ids=["strict", "default"])
def test_tar_in_a_vm_leaves_the_python_paths_owners_modes_and_times(hvfs: Hvfs, tmp_path: Path, profile: str) -> None:
    (in_c, c_stats, _), (_, python_stats, _) = _extracted_both_ways(hvfs, tmp_path, "--driver", "ptrace", profile)
    assert len(in_c) == 311
    assert in_c["tree/d3/f13"][:2] == [0o100644, 1000] and in_c["tree/d2/f12"][:2] == [0o100755, 0]
    # 300 files, each fchown, fchmod (some) and futimens by GNU tar: most served in C (each wait
    # serves at most SERVED_PER_WAIT; the rest is Python's), none on the Python path.
    assert _fdmeta_here(c_stats) >= 300 and _fdmeta_here(python_stats) == 0, (c_stats, python_stats)


def test_an_audited_vms_fd_metadata_changes_stay_on_python_and_are_recorded(hvfs: Hvfs, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    log, stats = tmp_path / "audit.jsonl", tmp_path / "stats.json"
    script = (
        "import os\n"
        "fd = os.open('/data/f', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)\n"
        "os.fchmod(fd, 0o640); os.fchown(fd, 0, 0); os.utime(fd, ns=(1, 2)); os.close(fd)\n"
    )
    hvfs.ok("run", "--driver", "ptrace", "--audit", str(log), "--stats", str(stats), "-v", f"{data}:/data",
            "--", "python3", "-c", script)  # fmt: skip
    records = [json.loads(line) for line in log.read_text().splitlines()]
    changes = sorted(r["operation"] for r in records if r.get("operation") in ("chmod", "chown", "utimens"))
    assert changes == ["chmod", "chown", "utimens"], records
    st = (data / "f").stat()
    assert [st.st_mode, st.st_uid, st.st_mtime_ns] == [0o100640, 0, 2]
    assert _fdmeta_here(json.loads(stats.read_text())) == 0
