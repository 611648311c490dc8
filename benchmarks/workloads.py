"""The workloads: what each runs, in which directory, and what must be reset before a run.

Each workload does real work on WORK, a directory every sandbox sees writable at its own
path. A workload that changes WORK gets a fresh copy of its files before every run, made
outside the timed region, so that every run (whichever runner went before) starts from
the same state.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import fixtures
from fixtures import Layout

PYTHON = "/usr/bin/python3"
# Git options that make a fresh copy of the repository look as clean as the original:
# a copy has new inode numbers and ctimes, which would otherwise make git re-read every
# file. Only the whole-second mtime and the size are compared, which cp -a preserves.
GIT = ["git", "-c", "safe.directory=*", "-c", "core.checkStat=minimal", "-c", "core.trustctime=false"]


@dataclass(frozen=True)
class Workload:
    """One measured command.

    ``argv`` and ``cwd`` are given the session's layout. ``reset`` runs before every run,
    untimed. ``prepare`` makes the session's fixtures, once. A workload with ``per_op``
    prints its own microseconds per operation on stdout, which is recorded next to the
    wall time. ``samples_per_round`` > 1 runs it several times in each round (start-up,
    which is short and noisy). ``skip_runners`` names runners it is not meant for."""

    key: str
    title: str
    argv: Callable[[Layout], list[str]]
    cwd: Callable[[Layout], Path] = lambda layout: layout.work
    prepare: Callable[[Layout], None] | None = None
    reset: Callable[[Layout], None] | None = None
    uses_work: bool = True
    per_op: str | None = None
    samples_per_round: int = 1
    skip_runners: frozenset[str] = field(default_factory=frozenset)

    def describe(self, layout: Layout) -> str:
        """The command line as text, with the session directory shown as WORK."""
        return shlex.join(self.argv(layout)).replace(str(layout.work), "WORK")


def _fresh_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()


def _fresh_copy(source: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    # cp -a keeps mtimes to the nanosecond, which git's index relies on.
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)


def _remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def all_workloads(iterations: int, starts_per_round: int) -> list[Workload]:
    """Every workload, in report order. ``iterations`` is W8's opens per run."""
    return [
        Workload(
            "W1",
            "python imports",
            lambda _: [PYTHON, "-c", "import json, email.parser, http.client, argparse, decimal, asyncio, sqlite3"],
        ),
        Workload(
            "W2",
            "stat-heavy tree walk (find -printf over the stdlib)",
            # %s and %m need a stat of every entry; -type f alone would be answered from getdents.
            lambda lay: ["sh", "-c", f'find {lay.work}/pylib -printf "%s %m %p\\n" | wc -l'],
            prepare=fixtures.copy_pylib,
        ),
        Workload(
            "W3",
            "untar and rm -rf 3,000 small files",
            lambda lay: ["sh", "-c", f"tar -xf {lay.work}/w3.tar && rm -rf tree"],
            cwd=lambda lay: lay.work / "w3",
            prepare=fixtures.make_tarball,
            reset=lambda lay: _fresh_dir(lay.work / "w3"),
        ),
        Workload(
            "W3t",
            "untar and rm -rf 3,000 small files on a tmpfs",
            lambda lay: ["sh", "-c", f"tar -xf {lay.work}/w3.tar && rm -rf tree"],
            cwd=lambda lay: fixtures.tmpfs_dir(lay) / "w3",
            prepare=fixtures.mount_tmpfs,
            reset=lambda lay: _fresh_dir(fixtures.tmpfs_dir(lay) / "w3"),
        ),
        Workload(
            "W4",
            "make -j2 of a 20-file C project",
            lambda _: ["make", "-s", "-j2"],
            cwd=lambda lay: lay.work / "w4",
            prepare=fixtures.make_c_project,
            reset=lambda lay: _fresh_copy(lay.templates / "cproj", lay.work / "w4"),
        ),
        Workload(
            "W5",
            "git status and git log in a 2,000-file repository",
            lambda _: [
                "sh",
                "-c",
                f"{' '.join(GIT)} -c core.untrackedCache=false status --porcelain | wc -l"
                f" && {' '.join(GIT)} log --stat | wc -l",
            ],
            cwd=lambda lay: lay.work / "w5",
            prepare=fixtures.make_git_repo,
            reset=lambda lay: _fresh_copy(lay.templates / "repo", lay.work / "w5"),
        ),
        Workload(
            "W6",
            "5,000 SQLite inserts in 50 transactions",
            lambda lay: [PYTHON, str(lay.work / "w6.py")],
            prepare=fixtures.write_sqlite_script,
            reset=lambda lay: _remove(lay.work / "w6.db", lay.work / "w6.db-journal"),
        ),
        Workload(
            "W7",
            "dd 256 MiB with fsync, then read it back",
            lambda lay: [
                "sh",
                "-c",
                f"dd if=/dev/zero of={lay.work}/big bs=1M count=256 conv=fsync status=none"
                f" && dd if={lay.work}/big of=/dev/null bs=1M status=none",
            ],
            reset=lambda lay: _remove(lay.work / "big"),
        ),
        Workload(
            "W8",
            f"{iterations:,} open(O_WRONLY)+close of a file in WORK (served with ADDFD by hvfs)",
            lambda lay: [str(lay.bin / "openbench"), str(lay.work / "file"), "w", str(iterations)],
            per_op="µs per open+close",
        ),
        Workload(
            "W8r",
            f"{iterations:,} open(O_RDONLY)+close of a file in WORK (served with ADDFD+SEND by hvfs --strict)",
            lambda lay: [str(lay.bin / "openbench"), str(lay.work / "file"), "r", str(iterations)],
            per_op="µs per open+close",
            # One strict open: only the strict runners serve it (a read runs natively otherwise).
            skip_runners=frozenset({"proot", "runsc"}),
        ),
        Workload(
            "W8c",
            f"{iterations:,} open(O_WRONLY)+close of /dev/null (continued by hvfs)",
            lambda lay: [str(lay.bin / "openbench"), "/dev/null", "w", str(iterations)],
            per_op="µs per open+close",
            # Only to compare HVFS's CONTINUE with the floor's; W8 covers the other sandboxes.
            skip_runners=frozenset({"proot", "runsc"}),
        ),
        Workload(
            "S",
            "start-up: true",
            lambda _: ["true"],
            cwd=lambda _: Path("/"),
            uses_work=False,
            samples_per_round=starts_per_round,
        ),
    ]
