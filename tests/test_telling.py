"""hvfs.hypervisor.telling: the manager's warnings reach the followers of the groups they
concern, through a queue and a thread of its own (no logging.handlers on a cold start's
path): the line formatted by the thread that logged, its traceback for a debug client."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from hvfs.hypervisor import telling


@dataclass
class _Config:
    name: str


@dataclass
class _Record:
    config: _Config
    vmid: str


@dataclass
class _Group:
    """What TellFollowers reads of a group: its VMs, whether its client debugs, tell()."""

    vms: dict[str, _Record]
    debug: bool = False
    told: list[dict[str, Any]] = field(default_factory=list)

    def tell(self, message: dict[str, Any]) -> None:
        self.told.append(message)


def test_warnings_are_told_to_the_groups_they_name_formatted_when_logged() -> None:
    web = _Group({"web": _Record(_Config("web"), "a1")})
    db = _Group({"db": _Record(_Config("db"), "b2")}, debug=True)
    root = logging.getLogger()
    handlers = list(root.handlers)
    telling.start(lambda: [web, db])
    log = logging.getLogger("hvfs.test-telling")
    argument = ["before"]
    log.warning("VM web: disk %s", argument)
    argument[0] = "after"  # formatted as logged, not as the thread sends it
    try:
        raise ValueError("broken")
    except ValueError:
        log.exception("VM db: failed")
    log.info("VM web: not told")  # below WARNING
    telling.flush()
    for handler in set(root.handlers) - set(handlers):  # this test's groups hear no other test
        root.removeHandler(handler)
    assert [m["stderr"] for m in web.told] == ["hvfs: VM web: disk ['before']"]
    (told,) = db.told
    assert told["stderr"].startswith("hvfs: VM db: failed\nTraceback") and "ValueError: broken" in told["stderr"]


def test_the_telling_thread_starts_with_the_first_record() -> None:
    """A cold start's first VM waits for every thread the manager starts before it; most
    managers never log a warning."""
    web = _Group({"web": _Record(_Config("web"), "a1")})
    root = logging.getLogger()
    handlers = list(root.handlers)

    def tellers() -> int:
        return sum(thread.name == "hvfs-tell" for thread in threading.enumerate())

    before = tellers()
    telling.start(lambda: [web])
    try:
        started = tellers()
        log = logging.getLogger("hvfs.test-telling")
        log.warning("VM web: first")
        log.warning("VM web: second")
        telling.flush()
        after = tellers()
    finally:
        for handler in set(root.handlers) - set(handlers):
            root.removeHandler(handler)
    assert (started, after) == (before, before + 1)
    assert [m["stderr"] for m in web.told] == ["hvfs: VM web: first", "hvfs: VM web: second"]
