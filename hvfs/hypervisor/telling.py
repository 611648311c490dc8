"""The manager's warnings and errors, told to the clients they concern.

The manager runs detached: its stderr is nobody's. What a user acts on (a refused host
socket, an event subscriber that failed) is told, one line each as hvfs.logs words it,
to the clients that follow the group of the VM the record names ("VM NAME: ..."), or
to every group's when it names none. The details stay in the manager's log. A group
whose client ran with HVFS_DEBUG hears records with their traceback.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from hvfs import deferred

if TYPE_CHECKING:
    import logging
    import queue

    from hvfs.hypervisor.group import Group


def start(groups: Callable[[], Iterable[Group]]) -> None:
    """Tell the manager's records from now on; a thread of its own sends them, so that
    logging never waits on a client, nor on a lock its caller may hold. (What
    logging.handlers' QueueHandler and QueueListener do, without importing them and
    pickle: 4 ms of every cold start's imports.) The thread starts with the first record:
    most managers never have one, and a cold start's first VM waits for every thread
    started before it. The handler goes in with ``logging`` (hvfs.deferred): it is the
    first record that imports it."""
    deferred.when_loaded("logging", functools.partial(_install, groups))


def _install(groups: Callable[[], Iterable[Group]]) -> None:
    global _records
    from hvfs.hypervisor import tell_handlers

    _records = tell_handlers.install(groups)


_records: queue.Queue[logging.LogRecord] | None = None


def flush(timeout: float = 2.0) -> None:
    """Return once the records logged so far are told (a VM's exit comes after the lines
    its last moments caused: its client stops reading at the exit)."""
    deadline = time.monotonic() + timeout
    while _records is not None and _records.unfinished_tasks and time.monotonic() < deadline:
        time.sleep(0.005)
