"""What the served-call tests (test_served_write, test_served_mutate, test_ptrace_write,
test_served_stat) share: the probe's way of answering a case, running a probe in a VM with
``--diff`` and ``--stats`` (and an audit file: ``AUDIT``), the volume's files as the host sees them, the two fresh
places, one for the C run and one for the Python path's, that a comparison runs in, and the
probe run in both (compared_runs)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from tests.conftest import Hvfs, chown_to

# A probe's answer to one case: ["ok", what it got] or ["error", errno], compared as JSON.
ATTEMPT = r"""
def attempt(function):
    try:
        return ["ok", function()]
    except OSError as e:
        return ["error", e.errno]
"""

# In a probe's options, the place's audit file (run_probe's ``root``/audit.jsonl): each way its own.
AUDIT = "{audit}"
VARYING = ("time", "vm", "pid", "duration_us")  # an audit record's fields that differ from run to run


def audit_records(place: Path) -> list[dict[str, Any]]:
    """The audit file of a probe run in ``place`` (``AUDIT``): its records in order, without
    the fields that differ from run to run (a pipe's inode in a path: N)."""
    records = [json.loads(line) for line in (place / "audit.jsonl").read_text().splitlines()]
    for record in records:  # a pipe's or socket's inode number differs from run to run too
        record["paths"] = [re.sub(r"^(\w+):\[\d+\]$", r"\1:[N]", path) for path in record.get("paths", [])]
    return [{key: value for key, value in record.items() if key not in VARYING} for record in records]


def snapshot(data: Path) -> dict[str, Any]:
    """Every file of the volume as the host sees it: kind and mode, owner, content or target."""
    found: dict[str, Any] = {}
    for path in sorted(data.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            body: str | None = os.readlink(path)
        elif path.is_file():
            body = path.read_text()
        else:
            body = None
        found[str(path.relative_to(data))] = [st.st_mode, st.st_uid, st.st_gid, body]
    return found


def run_probe(runner: Hvfs, root: Path, *options: str) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """``root``/probe/probe.py's answers, the run's statistics, and its ``--diff`` lines
    (``--strict`` unless ``options`` hold ``--default``: the default profile; ``AUDIT`` in them
    is ``root``/audit.jsonl), with ``root``'s
    data, ro (read-only) and probe directories as /data, /ro and /probe."""
    strict = "--default" not in options
    options = tuple(
        str(root / "audit.jsonl") if option == AUDIT else option for option in options if option != "--default"
    )
    stats = root / "stats.json"
    volumes = ["-v", f"{root / 'data'}:/data", "-v", f"{root / 'ro'}:/ro:ro", "-v", f"{root / 'probe'}:/probe:ro"]
    args = ["run", *(["--strict"] if strict else []), "--diff", "--stats", str(stats), *options, *volumes]
    result = runner.run(*args, "--", "python3", "/probe/probe.py")
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    lines = result.stdout.splitlines()
    answers = json.loads(next(line for line in lines if line.startswith("{")))
    diff = [line for line in (result.stdout + result.stderr).splitlines() if re.match(r"^[ACD] /", line)]
    return answers, json.loads(stats.read_text()), diff


def both_ways(runner: Hvfs, in_python: Hvfs, root: Path, owner: int | str | None) -> Iterator[tuple[Hvfs, Path]]:
    """The C run's runner and place (``root``/c), then the Python path's (``root``/python):
    fresh directories, a rootless runner's user's when ``owner`` names one."""
    for name, way in (("c", runner), ("python", in_python)):
        place = root / name
        place.mkdir()
        if isinstance(owner, str):
            chown_to(place, owner)
        yield way, place


class ProbeRun(NamedTuple):
    """One way's run of a probe: its answers, statistics and ``--diff`` lines (run_probe's),
    and the volume's files afterwards (snapshot's)."""

    answers: dict[str, Any]
    stats: dict[str, Any]
    diff: list[str]
    files: dict[str, Any]


def compared_runs(
    runner: Hvfs,
    in_python: Hvfs,
    root: Path,
    owner: int | str | None,
    prepare: Callable[[Path], Path],
    *options: str,
) -> tuple[ProbeRun, ProbeRun]:
    """The probe run served in C (``runner``) and on the Python path (``in_python``), each in
    its fresh place (both_ways) where ``prepare`` makes the volume (and the probe, where the
    place holds none yet) and returns it: the C run, then the Python path's, their answers and
    files asserted alike."""
    runs = []
    for way, place in both_ways(runner, in_python, root, owner):
        data = prepare(place)
        runs.append(ProbeRun(*run_probe(way, place, *options), snapshot(data)))
    in_c, in_python_path = runs
    assert in_c.answers == in_python_path.answers, (in_c.answers, in_python_path.answers)
    assert in_c.files == in_python_path.files, (in_c.files, in_python_path.files)
    return in_c, in_python_path
