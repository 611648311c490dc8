"""An audited run (``--audit FILE``) takes a warm spare too (hvfs.hypervisor.spares): the
spare's boot depends on nothing of the audit, whose bus is attached as the run binds the
spare's driver, before its command starts. What the audit promises holds as for a VM made
from scratch: every event of the run is in FILE by the time its client hears the exit, the
same events as a run started fresh (HVFS_SPARE=0) records, and a spare made for runs
without the audit serves one with it, and back. Real VMs, private managers."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOTLESS_USER, Hvfs, chown_to
from tests.test_spares import _ready, _spares

COMMAND = ("--", "sh", "-c", "cat /etc/hostname; echo hi > /tmp/x; ls /tmp; cat /tmp/x; exit 3")
VARYING = ("time", "vm", "pid", "duration_us")  # a run's own: its VM's name, pids, times


def _records(path: Path) -> list[dict[str, object]]:
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert events, f"{path} has no events"
    return [{key: value for key, value in event.items() if key not in VARYING} for event in events]


@pytest.fixture
def managers(hvfs: Hvfs) -> Iterator[tuple[Hvfs, Hvfs]]:
    """A manager with spares and one without (the reference), each of its own."""
    states = [tempfile.mkdtemp(prefix="hvfs-spares-audit-") for _ in range(2)]
    warm = hvfs.with_env(HVFS_STATE_DIR=states[0], HVFS_SPARE="1")
    cold = hvfs.with_env(HVFS_STATE_DIR=states[1], HVFS_SPARE="0")
    yield warm, cold
    for runner, state in ((warm, states[0]), (cold, states[1])):
        runner.run("manager", "stop")
        shutil.rmtree(state, ignore_errors=True)


def _audited_run(runner: Hvfs, file: Path, *flags: str) -> tuple[int, str, str, list[dict[str, object]]]:
    result = runner.run("run", *flags, "--audit", str(file), *COMMAND)
    return result.returncode, result.stdout, result.stderr, _records(file)


@pytest.mark.parametrize(
    "flags",
    [("--strict",), (), ("--audit-reads",), ("--strict", "--driver", "ptrace")],
    ids=["strict", "default", "audit-reads", "ptrace"],
)
def test_an_audited_run_in_a_spare_records_what_a_fresh_one_does(
    managers: tuple[Hvfs, Hvfs], tmp_path: Path, flags: tuple[str, ...]
) -> None:
    warm, cold = managers
    # The same configuration without the audit (--audit-reads traps reads: a strict VM's)
    plain = ("--strict",) if "--audit-reads" in flags else flags
    warm.ok("run", *plain, "--", "true")  # its spare is made
    before = _ready(warm)
    assert before["ready"] >= 1, before
    in_spare = _audited_run(warm, tmp_path / "spare.log", *flags)
    after = _spares(warm)
    assert after["taken"] == before["taken"] + 1, after  # the audited run did take the spare
    fresh = _audited_run(cold, tmp_path / "fresh.log", *flags)
    assert _spares(cold)["taken"] == 0
    assert in_spare == fresh
    code, out, _, events = in_spare
    assert code == 3 and out.splitlines()[-1] == "hi"
    operations = {event["operation"] for event in events}
    trapped = "--strict" in flags or "--audit-reads" in flags  # a strict VM's execs are trapped
    assert "open" in operations and ("exec" in operations) == trapped, operations
    assert any(event["paths"] == ["/tmp/x"] and event["operation"] == "open" for event in events), events
    # and the next spare, made after an audited run, serves a run without the audit
    assert _ready(warm)["ready"] >= 1
    taken = _spares(warm)["taken"]
    assert warm.run("run", *plain, "--", "true").returncode == 0
    assert _spares(warm)["taken"] == taken + 1


def test_audited_runs_back_to_back_in_spares_keep_every_event(managers: tuple[Hvfs, Hvfs], tmp_path: Path) -> None:
    """Runs in turn with the audit and without, on one spare configuration: each audited
    run's events are complete in its file once it has exited, and none of another run."""
    warm, _ = managers
    warm.ok("run", "--strict", "--", "true")
    _ready(warm)
    reference: list[dict[str, object]] | None = None
    for turn in range(6):
        if turn % 2:
            assert warm.run("run", "--strict", *COMMAND).returncode == 3
            continue
        file = tmp_path / f"{turn}.log"
        code, _, _, events = _audited_run(warm, file, "--strict")
        assert code == 3
        vms = {json.loads(line)["vm"] for line in file.read_text().splitlines()}
        assert len(vms) == 1, vms  # one run's
        reference = reference or events
        assert events == reference
    assert _spares(warm)["taken"] >= 3


@pytest.mark.rootless
def test_a_rootless_audited_run_takes_a_spare(rootless: Hvfs, shared_tmp: Path) -> None:
    states = [Path(tempfile.mkdtemp(prefix="hvfs-spares-audit-rootless-")) for _ in range(2)]
    for state in states:
        chown_to(state, ROOTLESS_USER)
    warm = rootless.with_env(HVFS_STATE_DIR=str(states[0]), HVFS_SPARE="1")
    cold = rootless.with_env(HVFS_STATE_DIR=str(states[1]), HVFS_SPARE="0")
    try:
        warm.ok("run", "--strict", "--", "true")
        assert _ready(warm)["ready"] == 1
        in_spare = _audited_run(warm, shared_tmp / "spare.log", "--strict")
        assert _spares(warm)["taken"] == 1
        fresh = _audited_run(cold, shared_tmp / "fresh.log", "--strict")
        assert in_spare == fresh and in_spare[0] == 3
        account = os.stat(shared_tmp / "spare.log")
        assert (account.st_mode & 0o777) == 0o600 and account.st_uid != 0  # made as the user
    finally:
        for runner, state in ((warm, states[0]), (cold, states[1])):
            runner.run("manager", "stop")
            shutil.rmtree(state, ignore_errors=True)
