"""A set*id, setgroups or capset continued by the seccomp driver's C loop after a bump of
the credential generation (hvfs/intercept/compiled.py ``BUMP_CONTINUE``): what
``credcache.before_change`` does for one, without Python. GNU make calls setresuid and
setresgid in every child it starts (issue 14: W4's build handed 42 of them to Python).
tests/adversarial/test_cred_cache.py attacks the cache through these very calls."""

from __future__ import annotations

import json
from pathlib import Path

from hvfs import _native
from hvfs.intercept import compiled
from hvfs.intercept.arch import native as native_arch
from hvfs.intercept.filter import syscall_numbers
from hvfs.intercept.syscalls import CREDENTIAL_CALLS
from tests.conftest import Hvfs, require

NATIVE = "the native hot path is not built or HVFS_NATIVE=0: the C loop does not run"


def test_each_credential_call_is_bumped_and_continued_in_c_in_every_profile() -> None:
    arch = native_arch()
    numbers = {name: nr for nr, name in syscall_numbers(arch).items()}
    for checks_exec in (False, True):
        decided = compiled.rules(arch, checks_exec=checks_exec)
        for name in CREDENTIAL_CALLS:
            if name in numbers:
                assert decided[numbers[name]] == compiled.Rule(compiled.BUMP_CONTINUE), (name, checks_exec)
        assert numbers["umask"] not in decided  # shared by threads: Python watches it settle
    kept = numbers["setresuid"]
    assert kept not in compiled.rules(arch, python={kept}, checks_exec=False)


# Each round: a setresuid and a setresgid that set the effective ids the caller has (as make's
# children do), then a file created in WORK, which the manager serves as the caller.
_MAKE_LIKE = (
    "import os, sys\n"
    "for i in range({rounds}):\n"
    "    os.setresuid(-1, os.geteuid(), -1)\n"
    "    os.setresgid(-1, os.getegid(), -1)\n"
    "    with open(os.path.join(sys.argv[1], f'f{{i}}'), 'w') as f:\n"
    "        f.write(str(i))\n"
)


def test_in_a_vm_setresuid_is_continued_in_c_and_what_was_kept_is_read_again(hvfs: Hvfs, tmp_path: Path) -> None:
    require(_native.hotpath is not None, NATIVE)
    work, stats, rounds = tmp_path / "work", tmp_path / "stats.json", 20
    work.mkdir()
    hvfs.ok(
        "run", "-v", f"{work}:/work", "--stats", str(stats), "--",
        "python3", "-c", _MAKE_LIKE.format(rounds=rounds), "/work",
    )  # fmt: skip
    assert sorted(p.name for p in work.iterdir()) == sorted(f"f{i}" for i in range(rounds))
    assert all((work / f"f{i}").read_text() == str(i) for i in range(rounds))
    counted = json.loads(stats.read_text())
    compiled_counts, credentials = counted["compiled"], counted["credentials"]
    # The 2 x 20 credential calls and the exec, continued in C; none handed to Python.
    assert compiled_counts["continued"] >= 2 * rounds + 1, counted
    assert compiled_counts["handed_to_python"] <= rounds + 2, counted
    # Each round's bump made the creation after it read the caller's credentials anew: a
    # call continued in C forgot what was kept exactly as one continued by Python did (the
    # read made by Python, or by the C loop itself: hvfs/_native/first_credentials.h).
    assert credentials["reads"] + credentials["read_in_c"] >= rounds, counted
    assert credentials["kept_used"] == 0, counted
