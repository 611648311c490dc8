"""The scanner's verdict is about the very file the VM gets: path races never beat it.

A thread flips a path buffer between a clean and a blocklisted file while the main thread
executes it, or opens and reads it. The manager judges the fd it hands out (an open) and
the file the kernel really loaded (an exec, through the exec tracer), never the path the
VM may still rewrite. Escapes are counted on the host: the blocklisted program's mark in
a mounted directory, the manager's audit of what was executed and opened, the quarantine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.adversarial.conftest import Attacker

CLEAN_PROGRAM, BLOCKLISTED_PROGRAM = "/attacks/scan_target-clean", "/attacks/scan_target-blocklisted"
CLEAN_DATA, BLOCKLISTED_DATA = "/data/clean", "/data/blocklisted-data"


@dataclass
class Scanned:
    """Where a scanned VM's services write, on the host."""

    directory: Path
    blocklist: Path
    quarantine: Path
    audit: Path
    stats: Path

    def options(self) -> tuple[str, ...]:
        return ("--scan", "--blocklist", str(self.blocklist), "--quarantine", str(self.quarantine),
                "--audit", str(self.audit), "--stats", str(self.stats))  # fmt: skip

    def events(self, operation: str) -> list[dict[str, object]]:
        events = (json.loads(line) for line in self.audit.read_text().splitlines())
        return [e for e in events if e["operation"] == operation]

    def statistics(self) -> dict[str, object]:
        document: dict[str, object] = json.loads(self.stats.read_text())
        return document

    def quarantined(self) -> list[str]:
        """The VM paths of the quarantine's entries."""
        return [json.loads((entry / "record.json").read_text())["path"] for entry in self.quarantine.iterdir()]


@pytest.fixture
def scanned(attacker: Attacker, shared_tmp: Path) -> Iterator[Scanned]:
    directory = shared_tmp / "scan"
    directory.mkdir()
    attacker.give(directory)
    yield Scanned(directory, directory / "blocklist", directory / "quarantine", directory / "audit.jsonl",
                  directory / "stats.json")  # fmt: skip


def blocklist(path: Path, *files: Path) -> None:
    path.write_text("".join(f"{hashlib.sha256(f.read_bytes()).hexdigest()} {f.name}\n" for f in files))


def test_a_racing_exec_never_runs_a_blocklisted_program(attacker: Attacker, scanned: Scanned) -> None:
    attacker.program("scan_target", variant="clean")
    blocklisted = attacker.program("scan_target", variant="blocklisted", defines=["BLOCKLISTED"])
    blocklist(scanned.blocklist, blocklisted)
    out = scanned.directory / "out"
    out.mkdir()
    attacker.give(out)
    outcome = attacker.run("scan_exec_race", CLEAN_PROGRAM, BLOCKLISTED_PROGRAM,
                           options=(*scanned.options(), "-v", f"{out}:/out"))  # fmt: skip
    print(f"exec race, {attacker.variant}: {outcome.report}")
    assert outcome.code == 0, outcome.stderr
    # On the host: the blocklisted program never left its mark, and the manager saw the
    # kernel execute it only to have it killed, exactly as often as the attacker counted.
    assert not (out / "ran").exists()
    executed = [e for e in scanned.events("executed") if e["paths"] == [BLOCKLISTED_PROGRAM]]
    assert [e for e in executed if e["result"] != "EACCES"] == []
    statistics = scanned.statistics()
    assert statistics["services"]["events_dropped"] == 0  # type: ignore[index]
    assert len(executed) == statistics["exec_tracer"]["killed"] == outcome.count("killed")  # type: ignore[index]
    assert scanned.quarantined() == [BLOCKLISTED_PROGRAM]  # once, however often it was refused
    assert outcome.count("escapes") == 0
    # The race ran: the clean program ran, and the blocklisted one was refused or killed.
    assert outcome.count("clean") > 0 and outcome.count("refused") + outcome.count("killed") > 0, outcome.report


def test_a_racing_open_never_reads_a_blocklisted_file(attacker: Attacker, scanned: Scanned) -> None:
    data = scanned.directory / "data"
    data.mkdir()
    (data / "clean").write_bytes(b"CLEAN" + bytes(range(256)) * 8)
    blocklisted = data / BLOCKLISTED_DATA.removeprefix("/data/")
    blocklisted.write_bytes(b"BLOCK" + bytes(range(255, -1, -1)) * 8)
    blocklist(scanned.blocklist, blocklisted)
    outcome = attacker.run("scan_open_race", CLEAN_DATA, BLOCKLISTED_DATA,
                           options=(*scanned.options(), "-v", f"{data}:/data:ro"))  # fmt: skip
    print(f"open race, {attacker.variant}: {outcome.report}")
    assert outcome.code == 0, outcome.stderr
    # On the host: no open under /data was left to the kernel, and none handed out the
    # blocklisted file; it stays (a read-only mount), quarantined once.
    opens = [e for e in scanned.events("open") if str(e["paths"][0]).startswith("/data/")]  # type: ignore[index]
    assert opens and [e for e in opens if e["result"] == "continued"] == []
    assert [e for e in opens if e["paths"] == [BLOCKLISTED_DATA] and e["result"] == "ok"] == []
    assert len([e for e in opens if e["result"] == "EACCES"]) == outcome.count("refused")
    assert scanned.statistics()["services"]["events_dropped"] == 0  # type: ignore[index]
    assert scanned.quarantined() == [BLOCKLISTED_DATA] and blocklisted.exists()
    assert outcome.count("escapes") == 0
    assert outcome.count("clean") > 0 and outcome.count("refused") > 0, outcome.report
