"""A write-open of /dev/null continued by the manager, its path flipped by a second thread
(issue 14: the C loop continues a write-open of a character device under /dev,
hvfs/_native/served_dev.h; the Python path continues it too).

CONTINUE makes the kernel read the path again, so the flip can make it open another file
than the one the manager looked at: a file on the writable volume (``a``), a magic link to a
read-only fd of a volume file (``b``), a symlink to a volume file (``c``). What keeps the
VM in is its boot view, read-only: the kernel's write-open of any of them fails (EROFS),
and a write reaches a volume file only through the manager, which serves it when it reads
the flipped path itself (a plain open, the symlink followed, the magic link reopened:
reopening.py) and notes it. From the host: each file holds its content and one "X" for
each write-open the manager served of it (the program's count, bounded by the manager's
own count of served opens), never an "E" (a write through an fd of the VM's own mounts),
and is in ``hvfs diff`` exactly when written. ``--stats`` shows the C loop
continued write-opens meanwhile (under ``HVFS_ATTACK_DRIVER=ptrace``, the tracer's C loop let
them run: tracer_write.h); the Python path (the ``-python`` variants) is held alike.

Audited (``--strict --audit``: the C loop continues the device opens and records each one,
served_dev.h; the ``-python`` variants: the dispatch records them), no record names what
the VM did not get: each of the race's opens has one record; those that say "ok" (an open
the manager served) name the volume file the program got, as many for each as it got; a
"continued" one names /dev/null alone (the kernel opened whatever it then read: /dev/null,
or nothing, EROFS); any other is an errno the VM got.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial.conftest import ATTACK_VARIANTS, Attacker

# The Python path's own CONTINUE of this request too (HVFS_NATIVE=0): the same wall holds it.
pytestmark = pytest.mark.parametrize("attacker", ATTACK_VARIANTS, indirect=True)

CONTENT = "work file\n"


def _flipped(attacker: Attacker, shared_tmp: Path, *options: str) -> tuple[Any, dict[str, Any], Path]:
    """The race run on a fresh volume: the program's outcome, ``--stats``' record, the volume."""
    volume = shared_tmp / "vol"
    volume.mkdir()
    for name in ("a", "b", "c"):
        (volume / name).write_text(CONTENT)
    (volume / "link").symlink_to("/vol/c")
    attacker.give(volume, *(volume / name for name in ("a", "b", "c")))
    stats = shared_tmp / "stats.json"
    every = ("--diff", "--stats", str(stats), *options, "-v", f"{volume}:/vol")
    outcome = attacker.run("dev_flip", "/vol", "file", "magic", "link", options=every)
    return outcome, json.loads(stats.read_text()), volume


def test_a_continued_dev_null_write_open_flipped_to_a_vm_file_never_writes_it(
    attacker: Attacker, shared_tmp: Path
) -> None:
    outcome, record, volume = _flipped(attacker, shared_tmp)
    assert outcome.code == 0, outcome.stderr
    assert outcome.count("escapes") == 0 and outcome.count("odd") == 0, outcome.report
    assert outcome.count("tries") >= 1000 and outcome.count("inside") > 0, outcome.report
    assert outcome.count("erofs") > 0, outcome.report  # the race ran: the kernel opened the flipped path

    served = record["requests"]["open"].get("served", 0)
    written = {name: outcome.count(f"served_{kind}") for name, kind in (("a", "file"), ("b", "magic"), ("c", "link"))}
    for name, count in written.items():
        assert (volume / name).read_text() == CONTENT + "X" * count, (name, outcome.report)
    assert sum(written.values()) <= served, (record["requests"], outcome.report)
    diff = re.findall(r"^[ACD] (/\S+)$", outcome.stdout + outcome.stderr, re.MULTILINE)
    assert all(("/vol/" + name in diff) == (count > 0) for name, count in written.items()), (diff, written)
    if attacker.variant.endswith("-python"):
        return
    if record.get("driver") == "ptrace":  # the tracer's C loop let them run (tracer_write.h)
        assert record["dev_continued_here"] > 0, record
        return
    compiled = record["compiled"]
    assert isinstance(compiled, dict) and compiled.get("open_continued", 0) > 0, compiled  # C continued them


def test_an_audited_continued_dev_null_write_open_is_recorded_as_what_the_vm_got(
    attacker: Attacker, shared_tmp: Path
) -> None:
    attacker = dataclasses.replace(attacker, strict=True)  # an audited VM's are served in C under --strict alone
    log = shared_tmp / "audit.jsonl"
    outcome, record, _ = _flipped(attacker, shared_tmp, "--audit", str(log))
    assert outcome.code == 0, outcome.stderr
    assert outcome.count("escapes") == 0 and outcome.count("odd") == 0, outcome.report
    assert outcome.count("tries") >= 1000 and outcome.count("inside") > 0, outcome.report
    assert outcome.count("erofs") > 0, outcome.report  # the race ran: the kernel opened the flipped path
    events = [json.loads(line) for line in log.read_text().splitlines()]
    # the race's opens alone: O_APPEND (the program's other opens read /proc)
    opens = [e for e in events if e["operation"] == "open" and e["flags"] & os.O_APPEND]
    assert len(opens) == outcome.count("tries"), (len(opens), outcome.report)
    got = {"/vol/a": outcome.count("served_file"), "/vol/b": outcome.count("served_magic")}
    got["/vol/c"] = outcome.count("served_link")
    served = [e["paths"][0] for e in opens if e["result"] == "ok"]
    assert {path: served.count(path) for path in got} == got and set(served) <= set(got), (served, outcome.report)
    continued = [e["paths"][0] for e in opens if e["result"] == "continued"]
    assert set(continued) == {"/dev/null"}, set(continued)
    assert len(continued) >= outcome.count("inside") + outcome.count("erofs"), (len(continued), outcome.report)
    failed = [e for e in opens if e["result"] not in ("ok", "continued")]
    assert all(re.fullmatch(r"E[A-Z]+", e["result"]) for e in failed), failed[:3]
    assert len(failed) <= outcome.count("refused") - outcome.count("erofs"), (len(failed), outcome.report)
    if attacker.variant.endswith("-python") or record.get("driver") == "ptrace":
        return
    compiled = record["compiled"]
    assert isinstance(compiled, dict) and compiled.get("open_continued", 0) > 0, compiled  # C continued them


def test_a_kept_device_verdict_never_outlives_a_swap_of_its_name(attacker: Attacker, shared_tmp: Path) -> None:
    """The C loop keeps a device's verdict (served_dev.h): the VM's root swaps /dev/zero with
    a regular file (RENAME_EXCHANGE, Python's) while another thread write-opens /dev/zero
    without pause, and then write-opens it itself: it gets the regular file every time after
    the first swap (never EROFS, the kernel's open of that file on the boot view that a
    continue on a stale verdict would give), the device after the second."""
    stats = shared_tmp / "stats.json"
    outcome = attacker.run("dev_swap", options=("--stats", str(stats)))
    assert outcome.code == 0, outcome.stderr
    tries = outcome.count("tries")
    assert outcome.count("stale") == 0 and outcome.count("odd") == 0, outcome.report
    assert outcome.count("swap_failed") == 0 and tries >= 200, outcome.report
    assert outcome.count("regular") == outcome.count("device") == tries, outcome.report
    assert outcome.count("warm") > tries, outcome.report  # the other thread opened it meanwhile
    record = json.loads(stats.read_text())
    if attacker.variant.endswith("-python"):
        return
    if record.get("driver") == "ptrace":
        assert record["dev_continued_here"] > 0, record
        return
    compiled = record["compiled"]
    assert isinstance(compiled, dict) and compiled.get("open_continued", 0) > tries, compiled
