"""The manager's warnings and errors, told to the clients they concern.

The manager runs detached: its stderr is nobody's. What a user acts on (a refused host
socket, an event subscriber that failed) is told, one line each as hvfs.logs words it,
to the clients that follow the group of the VM the record names ("VM NAME: ..."), or
to every group's when it names none. The details stay in the manager's log. A group
whose client ran with HVFS_DEBUG hears records with their traceback.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from hvfs import logs

if TYPE_CHECKING:
    from hvfs.hypervisor.group import Group

_VM = re.compile(r"VM (\S+?):? ")


def start(groups: Callable[[], Iterable[Group]]) -> logging.handlers.QueueListener:
    """Tell the manager's records from now on; a thread of its own sends them, so that
    logging never waits on a client, nor on a lock its caller may hold."""
    global _records
    records: queue.Queue[logging.LogRecord] = queue.Queue()
    _records = records
    listener = logging.handlers.QueueListener(records, TellFollowers(groups))
    listener.start()
    handler = logging.handlers.QueueHandler(records)
    handler.setLevel(logging.WARNING)
    logging.getLogger().addHandler(handler)
    return listener


_records: queue.Queue[logging.LogRecord] | None = None


def flush(timeout: float = 2.0) -> None:
    """Return once the records logged so far are told (a VM's exit comes after the lines
    its last moments caused: its client stops reading at the exit)."""
    deadline = time.monotonic() + timeout
    while _records is not None and _records.unfinished_tasks and time.monotonic() < deadline:
        time.sleep(0.005)


class TellFollowers(logging.Handler):
    """Sends each record to the followers of the groups it concerns, as ``{"stderr": line}``."""

    def __init__(self, groups: Callable[[], Iterable[Group]]) -> None:
        super().__init__(logging.WARNING)
        self.groups = groups
        self.lines = logs.OneLine()  # its count of errors told is the manager's: they are rare

    def emit(self, record: logging.LogRecord) -> None:
        try:
            groups = list(self.groups())
            named = _VM.match(record.getMessage())
            if named is not None:
                name = named.group(1)
                concerned = [g for g in groups if any(name in (r.config.name, r.vmid) for r in g.vms.values())]
                groups = concerned or groups
            line = self.lines.format(record)
            for group in groups:
                text = line
                if group.debug:  # the QueueHandler put the traceback in the message
                    text = f"hvfs: {record.getMessage()}"
                if text:
                    group.tell({"stderr": text})
        except Exception:
            self.handleError(record)
