"""An audited strict VM's readlink and access, and its lookups that fail, served in the
driver's C loop and recorded there (hvfs/_native/served_link.h, served_resolved.h), name what
was served: a path's text only where C found it with no symlink on the way, a failed
lookup by its parent opened again and named by the kernel, as the Python path names them.

As tests/adversarial/test_audited_stat_names.py: a directory ``d`` and a symlink ``s`` to
``other`` are swapped without pause (renameat2 RENAME_EXCHANGE) by a second thread, while the
main thread, thousands of times, reads the link ``/data/d/l`` (``d``'s reads "in-d",
``other``'s "in-other"), checks X_OK of ``/data/d/x`` (``d``'s executable, ``other``'s not)
reads the link ``/data/d/nope`` (none in ``d``, ``other``'s reads "in-other") and opens
``/data/d/x`` and ``/data/./d/x`` read-only (the first by its text where no symlink is on the
way, the second named by the kernel's name of the fd it got). Each call's event, in order,
must name what the VM got: ``d``'s object as ``/data/d/...`` or
``/data/s/...``, ``other``'s as ``/data/other/...``; a lookup continued in the VM, a name
in ``d`` or ``other`` only (never ``s``'s text, which would name either); one event per call,
none lost, none twice. As root (``--strict --audit``) and rootless; ``--stats`` shows the C
loop served each kind meanwhile, so that a race run only on Python fails.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.adversarial.test_audited_stat_names import swap_race
from tests.conftest import Hvfs, chown_to

TRIES = 3000
RACE = swap_race(
    r"""
    seen.append(attempt(lambda: os.readlink("/data/d/l")))
    seen.append(attempt(lambda: os.access("/data/d/x", os.X_OK)))
    seen.append(attempt(lambda: os.readlink("/data/d/nope")))
    for path in ("/data/d/x", "/data/./d/x"):  # by its text where it can be, else by its answer
        seen.append(attempt(lambda: (lambda fd: (os.fstat(fd).st_ino, os.close(fd))[0])(os.open(path, os.O_RDONLY))))
"""[1:]
)
# What each call's event may name, by what the call got: d's object (by its text, either of
# the two names it has had) or other's.
NAMED = {
    ("readlink", "in-d"): {"/data/d/l", "/data/s/l"},
    ("readlink", "in-other"): {"/data/other/l", "/data/other/nope"},
    ("x", True): {"/data/d/x", "/data/s/x"},
    ("x", False): {"/data/other/x"},
}
CONTINUED = {"/data/d/nope", "/data/other/nope", "/data/d/l", "/data/other/l", "/data/d/x", "/data/other/x"}


def _scene(root: Path) -> Path:
    data = root / "data"
    (data / "d").mkdir(parents=True)
    (data / "other").mkdir()
    (data / "d" / "l").symlink_to("in-d")
    (data / "other" / "l").symlink_to("in-other")
    (data / "other" / "nope").symlink_to("in-other")
    for directory, mode in (("d", 0o755), ("other", 0o644)):
        (data / directory / "x").write_text("#!/bin/sh\n")
        os.chmod(data / directory / "x", mode)
    (data / "s").symlink_to("other")
    (root / "race.py").write_text(RACE)
    os.chmod(root, 0o755)
    return data


def _escapes(
    events: list[dict[str, object]], seen: list[object], inodes: dict[int, str]
) -> list[tuple[object, object]]:
    """The events that name something else than what their call got (an open's: the inode of
    ``d``'s or ``other``'s ``x``, by ``inodes``)."""
    escapes = []
    for event, got in zip(events, seen, strict=True):
        paths = event["paths"]
        assert isinstance(paths, list)
        name = paths[0]
        if event["result"] == "continued":  # the kernel looked again: only where C looked
            if name not in CONTINUED:
                escapes.append((name, got))
            continue
        if event["operation"] == "open":
            key: tuple[str, object] = ("x", inodes.get(got) == "d") if isinstance(got, int) and got > 0 else ("", 0)
        elif event["operation"] == "access":
            key = ("x", event["result"] == "ok")
        else:
            key = ("readlink", got)
        if name not in NAMED.get(key, set()):
            escapes.append((name, got))
    return escapes


@pytest.mark.parametrize("runner", ["hvfs", pytest.param("rootless", marks=pytest.mark.rootless)])
def test_audited_links_and_failed_lookups_name_what_was_served(
    runner: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    hvfs: Hvfs = request.getfixturevalue(runner)
    root = tmp_path if hvfs.user is None else request.getfixturevalue("shared_tmp")
    data = _scene(root)
    if hvfs.user is not None:
        chown_to(root, hvfs.user)
    inodes = {(data / "d" / "x").stat().st_ino: "d", (data / "other" / "x").stat().st_ino: "other"}  # before the swaps
    stats, log = root / "stats.json", root / "audit.jsonl"
    args = ["run", "--strict", "--stats", str(stats), "--audit", str(log), "-v", f"{data}:/data"]
    out = hvfs.ok(*args, "-v", f"{root}:/probe:ro", "--", "python3", "/probe/race.py", str(TRIES))
    result = json.loads(out)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    made = [
        event
        for event in events
        if event["operation"] in ("readlink", "access", "open")
        and event["paths"][0].startswith(("/data/d", "/data/s", "/data/o"))
    ]
    assert len(made) == 5 * TRIES  # one event per call: none lost, none twice
    seen = result["seen"]
    escapes = _escapes(made, seen, inodes)
    assert escapes == [], escapes[:10]
    assert "in-d" in seen and "in-other" in seen and result["flips"] > 100, result["flips"]  # it raced
    compiled = json.loads(stats.read_text())["compiled"]
    assert compiled.get("readlink_served", 0) > TRIES // 10, compiled
    assert compiled.get("readlink_continued", 0) > TRIES // 10, compiled
    assert compiled.get("access_served", 0) + compiled.get("access_failed", 0) > TRIES // 10, compiled
    assert compiled.get("open_served", 0) > TRIES, compiled
