"""An audited VM flooding its audit from many threads at once, while another VM does the
same on the same manager: the C loop records its served stats without the GIL into the ring
(hvfs/_native/ring.h, detached.h) that the dispatch's records of its truncates go to too.

Each thread k of the attack (programs/audit_flood.c) alternates a stat (C's, strict) and a
truncate (Python's) of its own files /data/tK/0, 1, ... in turn. From the host, in each VM's
audit: no event names a file of the flood the VM did not stat or truncate (never an event
made of another request's or another VM's bytes), each thread's events are exactly its
calls in the order it made them (stat i, truncate i, stat i+1 ...: the C-recorded and
Python-recorded events of one VM in the order the VM made them), and any event missing is
accounted for by a "lost" event. ``--stats`` shows the C loop recorded without the GIL in the
strict variants, so that a run only on Python fails there.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial.conftest import TRIES, Attacker, Outcome
from tests.conftest import Hvfs

THREADS = 8
FILES = max(TRIES // THREADS, 1)
VARIANTS = [
    pytest.param(("hvfs", False), id="root"),
    pytest.param(("hvfs", True), id="strict"),
    pytest.param(("rootless", True), id="rootless-strict", marks=pytest.mark.rootless),
]


def _volume(root: Path, attacker: Attacker) -> Path:
    data = root / "data"
    for k in range(THREADS):
        (data / f"t{k}").mkdir(parents=True)
        for i in range(FILES):
            (data / f"t{k}" / str(i)).write_bytes(b"x")
    attacker.give(root, *data.rglob("*"))
    return data


def _flood(attacker: Attacker, root: Path, name: str, into: dict[str, Any]) -> None:
    data = _volume(root / name, attacker)
    log, stats = root / name / "audit.jsonl", root / name / "stats.json"
    options = ["--audit", str(log), "--stats", str(stats), "-v", f"{data}:/data"]
    into[name] = (attacker.run("audit_flood", str(THREADS), str(FILES), options=options), log, stats)


def _escapes(outcome: Outcome, log: Path, operations: tuple[str, ...]) -> tuple[list[Any], int, int]:
    """The flood's events that are not the calls it made (those of ``operations``, the
    audited ones), in its order: (escapes, events, lost), an event missing with no "lost"
    event counted as an escape too."""
    made = outcome.report["made"]
    assert isinstance(made, list)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    lost = sum(event.get("value") or 0 for event in events if event["operation"] == "lost")
    by_thread: dict[int, list[tuple[str, str]]] = {k: [] for k in range(THREADS)}
    escapes: list[Any] = []
    for event in events:
        paths = event.get("paths") or []
        if event["operation"] not in operations or not paths or not paths[0].startswith("/data/t"):
            continue
        thread = int(paths[0].split("/")[2][1:])
        by_thread[thread].append((event["operation"], paths[0]))
    for k in range(THREADS):
        expected = [(operation, f"/data/t{k}/{i}") for i in range(made[k]) for operation in operations]
        seen = by_thread[k]
        if any(pair not in expected for pair in seen):  # named what the VM did not do
            escapes.append(("named", k, [pair for pair in seen if pair not in expected][:3]))
        elif seen != expected and not lost:  # out of order, or missing with no "lost" event
            escapes.append(("order", k, len(seen), len(expected)))
        elif lost and [pair for pair in expected if pair in set(seen)] != seen:  # what is left stays in order
            escapes.append(("order-with-lost", k))
    missing = sum(len(operations) * made[k] - len(by_thread[k]) for k in range(THREADS))
    if missing > lost:
        escapes.append(("missing", missing, lost))
    return escapes, sum(len(seen) for seen in by_thread.values()), lost


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_flooding_vm_beside_another_is_audited_as_it_called(
    variant: tuple[str, bool], request: pytest.FixtureRequest, attack_binaries: Path, tmp_path: Path
) -> None:
    runner_fixture, strict = variant
    runner: Hvfs = request.getfixturevalue(runner_fixture)
    attacker = Attacker(runner, strict, attack_binaries, request.node.callspec.id)
    root = tmp_path if runner.user is None else request.getfixturevalue("shared_tmp")
    attacker.program("audit_flood")
    results: dict[str, Any] = {}
    other = threading.Thread(target=_flood, args=(attacker, root, "other", results))
    other.start()
    _flood(attacker, root, "flood", results)
    other.join()
    for name in ("flood", "other"):
        outcome, log, stats = results[name]
        assert outcome.code == 0, outcome.stderr
        # without --strict a stat is not trapped: the truncates alone are audited
        escapes, events, lost = _escapes(outcome, log, ("stat", "truncate") if strict else ("truncate",))
        compiled = json.loads(stats.read_text()).get("compiled", {})
        print(
            f"{name}: {outcome.count('tries')} pairs,"
            f" {events} events, {lost} lost, {len(escapes)} escapes, C: {compiled}"
        )
        assert escapes == [], escapes[:5]
        assert outcome.count("failed") == 0 and outcome.count("tries") >= THREADS * 100, outcome.report  # it flooded
        if strict:  # the C loop served and recorded the stats itself, without the GIL
            assert compiled.get("audit_detached", 0) > outcome.count("tries") // 2, compiled
