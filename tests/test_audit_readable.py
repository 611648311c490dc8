"""A readable audit: flags by name, paths as the kernel resolved them for the VM (a VM
cannot hide what it touched behind ``..`` and a symlink), ``hvfs events --summary``, and
a file format older readers still read."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from hvfs.api.events import Event
from hvfs.api.flagnames import flag_names
from tests.conftest import Hvfs

# The keys of an audit line before this change: an older `hvfs events` reads no others.
OLD_KEYS = {"time", "vm", "pid", "comm", "operation", "paths", "flags", "result", "value", "duration_us", "answered_by"}

SCRIPT = (
    "cd /data && echo a > ./x && echo b > ../data//y && mkdir -p a/b && ln -s /data/a/b lb && echo f > a/f"
    " && echo c >> lb/.././../y && mv ./x z && rm lb/../f && rm .//y && mkdir -m 700 d && rmdir d"
    " && (echo no > /data/nodir/x 2>/dev/null; true)"
)


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory, hvfs: Hvfs) -> Path:
    where = tmp_path_factory.mktemp("audited")
    (where / "data").mkdir()
    audit = where / "audit.jsonl"
    hvfs.ok(
        "run", "--name", "readable", "-v", f"{where / 'data'}:/data", "--audit", str(audit), "--", "sh", "-c", SCRIPT
    )
    return audit


def _events(audit: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in audit.read_text().splitlines()]


def test_paths_are_the_ones_the_kernel_resolved(audited: Path) -> None:
    seen = [(e["operation"], e["paths"], e["result"]) for e in _events(audited) if e["operation"] != "statfs"]
    assert ("open", ["/data/x"], "ok") in seen  # ./x
    assert ("open", ["/data/y"], "ok") in seen  # ../data//y
    # lb is /data/a/b: lb/.././../y is /data/y, where a lexical reading says /y
    assert sum(1 for s in seen if s == ("open", ["/data/y"], "ok")) == 2
    assert ("rename", ["/data/x", "/data/z"], "ok") in seen
    # lb/../f is /data/a/f (the kernel follows lb first), not the /data/f that `..` reads as
    assert ("unlink", ["/data/a/f"], "ok") in seen
    assert ("unlink", ["/data/y"], "ok") in seen
    assert ("open", ["/data/nodir/x"], "ENOENT") in seen  # failed: as named, tidied
    for _, paths, _ in seen:
        for path in paths:  # the symlink's target is stored as given; every other path is clean
            assert path == "/data/a/b" or ("//" not in path and "/./" not in path and "/.." not in path), seen


def test_flags_are_shown_by_name(hvfs: Hvfs, audited: Path) -> None:
    lines = hvfs.ok("events", str(audited), "--vm", "readable").splitlines()
    assert any(" open /data/x flags=O_WRONLY|O_CREAT|O_TRUNC ok " in line for line in lines), lines
    assert any(" open /data/y flags=O_WRONLY|O_CREAT|O_APPEND ok " in line for line in lines), lines
    assert not any("flags=0x" in line for line in lines), lines
    unlink = next(line for line in lines if " unlink /data/y " in line)
    assert "flags=" not in unlink  # nothing to name, nothing shown


def test_flag_names() -> None:
    assert flag_names("open", os.O_RDONLY) == "O_RDONLY"
    assert flag_names("open", os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC) == "O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC"
    assert flag_names("open", os.O_WRONLY | os.O_SYNC) == "O_WRONLY|O_SYNC"  # not O_DSYNC as well
    assert flag_names("open", os.O_RDWR | os.O_TMPFILE) == "O_RDWR|O_TMPFILE"  # not O_DIRECTORY as well
    assert flag_names("open", os.O_PATH | os.O_NOFOLLOW) == "O_NOFOLLOW|O_PATH"
    assert flag_names("open", os.O_WRONLY | 0x40000000) == "O_WRONLY|0x40000000"  # unknown bits stay visible
    assert flag_names("rename", 1) == "RENAME_NOREPLACE"
    assert flag_names("statx", 0x100 | 0x1000) == "AT_SYMLINK_NOFOLLOW|AT_EMPTY_PATH"
    assert flag_names("unlink", 0) == ""


SUMMARY = {
    "written": ["/data/a", "/data/a/b", "/data/a/f", "/data/d", "/data/lb", "/data/x", "/data/y"],
    "read": [],
    "removed": ["/data/a/f", "/data/d", "/data/y"],
    "renamed": [{"from": "/data/x", "to": "/data/z"}],
}


def test_summary_per_vm(hvfs: Hvfs, audited: Path) -> None:
    summary = json.loads(hvfs.ok("events", str(audited), "--summary", "--json"))
    mine = summary["readable"]
    assert {key: mine[key] for key in SUMMARY} == SUMMARY
    assert mine["requests"]["open"] >= 5 and mine["requests"]["rename"] == 1 and mine["requests"]["unlink"] == 2
    assert mine["errors"] == {"open": {"ENOENT": 1}}
    text = hvfs.ok("events", str(audited), "--summary")
    assert text.startswith("readable:\n  written: 7\n    /data/a\n")
    assert "  removed: 3\n" in text and "  renamed: 1\n    /data/x -> /data/z\n" in text
    assert "  errors: 1 (open ENOENT 1)\n" in text
    assert hvfs.run("events", str(audited), "--summary", "--follow").returncode == 125


def test_the_file_stays_readable_by_older_readers(audited: Path) -> None:
    events = _events(audited)
    assert events and all(set(e) == OLD_KEYS for e in events)


def test_a_later_field_does_not_stop_this_reader(tmp_path: Path) -> None:
    event = Event(1.5, "vm", 7, "sh", "open", ("/f",), os.O_WRONLY, "ok", None, 3)
    line = json.loads(event.to_json())
    line["mode"] = 0o644  # what a later hvfs may add
    assert Event.from_json(json.dumps(line)) == event
    with pytest.raises(ValueError, match="not an hvfs event"):
        Event.from_json("[1, 2]")
    assert dataclasses.asdict(event).keys() == OLD_KEYS
