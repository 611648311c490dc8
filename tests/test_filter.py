"""The VM's seccomp filter: what reaches the manager, and what can never get around it."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Hvfs, require
from tests.helpers import PROBES


def test_ways_around_the_manager_are_blocked(hvfs: Hvfs) -> None:
    out = hvfs.ok("run", "-v", f"{PROBES}:/probes:ro", "--", "python3", "/probes/blocked.py")
    results = {name: (int(result), err) for name, result, err in (line.split() for line in out.splitlines())}
    for name in (
        "mount",
        "unshare",
        "io_uring_setup",
        "open_by_handle_at",
        "setns",
        "bpf",
        "chroot",
        "pivot_root",
        "fsopen",
        "userfaultfd",
    ):
        assert results[name] == (-1, "EPERM"), name
    assert results["clone3"] == (-1, "ENOSYS")  # libc falls back to clone, whose flags the filter sees
    assert results["unknown"] == (-1, "ENOSYS")


def test_unsharing_file_state_stays_allowed(hvfs: Hvfs) -> None:
    program = "import os; os.unshare(os.CLONE_FILES | os.CLONE_FS) if hasattr(os, 'unshare') else None; print('ok')"
    assert hvfs.ok("run", "--", "python3", "-c", program).strip() == "ok"
    assert hvfs.run("run", "--", "unshare", "--user", "true").returncode != 0


def test_syscalls_of_a_foreign_architecture_fail(hvfs: Hvfs, tmp_path: Path) -> None:
    if platform.machine() != "x86_64":
        pytest.skip("the i386 and x32 entry points exist on x86_64 only")
    require(shutil.which("gcc") is not None, "gcc is needed to build the foreign-ABI probe")
    binary = tmp_path / "foreign"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(PROBES / "foreign_arch.c")], check=True)
    native = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout.splitlines()
    assert not native[0].endswith("-1")  # natively the i386 getpid works
    out = hvfs.ok("run", "-v", f"{tmp_path}:/probe:ro", "--", "/probe/foreign").splitlines()
    assert out == ["int80 getpid -> -1", "x32 getpid -> -1"]  # -EPERM from the filter's arch check


def test_every_mutation_is_served_by_the_manager(hvfs: Hvfs, tmp_path: Path) -> None:
    data, stats_file = tmp_path / "data", tmp_path / "stats.json"
    data.mkdir()
    out = hvfs.ok(
        "run",
        "--stats",
        str(stats_file),
        "-v",
        f"{data}:/data",
        "-v",
        f"{PROBES}:/probes:ro",
        "--",
        "python3",
        "-S",
        "-B",
        "/probes/served.py",
        "/data",
    )
    assert out.strip() == "done"
    stats = json.loads(stats_file.read_text())
    requests = stats["requests"]
    assert requests["open"] == {"served": 10 + 5}
    assert requests["rename"] == {"served": 7}
    assert requests["unlink"] == {"served": 4}
    assert requests["chmod"] == {"served": 6}
    assert sorted(p.name for p in data.iterdir()) == ["f7", "f8", "f9", "g4", "g5", "g6"]
    assert oct((data / "f9").stat().st_mode & 0o777) == oct(0o600 + 5)


def test_shell_tools_mutations_are_served(hvfs: Hvfs, tmp_path: Path) -> None:
    stats_file = tmp_path / "stats.json"
    script = "cd /data && touch a && mv a b && chmod 600 b && mkdir d && ln -s b s && ln b h && rm b && rmdir d"
    hvfs.ok("run", "--stats", str(stats_file), "-v", f"{tmp_path}:/data", "--", "sh", "-c", script)
    served = {op: counts.get("served", 0) for op, counts in json.loads(stats_file.read_text())["requests"].items()}
    for op in ("open", "rename", "chmod", "mkdir", "symlink", "link", "unlink", "rmdir"):
        assert served.get(op, 0) >= 1, (op, served)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h", "s", "stats.json"]
