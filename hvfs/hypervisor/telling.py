"""The manager's warnings and errors, told to the clients they concern.

The manager runs detached: its stderr is nobody's. What a user acts on (a refused host
socket, an event subscriber that failed) is told, one line each as hvfs.logs words it,
to the clients that follow the group of the VM the record names ("VM NAME: ..."), or
to every group's when it names none. The details stay in the manager's log. A group
whose client ran with HVFS_DEBUG hears records with their traceback.
"""

from __future__ import annotations

import copy
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from hvfs import logs

if TYPE_CHECKING:
    from hvfs.hypervisor.group import Group

_VM = re.compile(r"VM (\S+?):? ")


def start(groups: Callable[[], Iterable[Group]]) -> None:
    """Tell the manager's records from now on; a thread of its own sends them, so that
    logging never waits on a client, nor on a lock its caller may hold. (What
    logging.handlers' QueueHandler and QueueListener do, without importing them and
    pickle: 4 ms of every cold start's imports.) The thread starts with the first record:
    most managers never have one, and a cold start's first VM waits for every thread
    started before it."""
    global _records
    records: queue.Queue[logging.LogRecord] = queue.Queue()
    _records = records
    followers = TellFollowers(groups)
    handler = _Enqueue(records, lambda: threading.Thread(
        target=_tell, args=(records, followers), name="hvfs-tell", daemon=True
    ).start())  # fmt: skip
    handler.setLevel(logging.WARNING)
    logging.getLogger().addHandler(handler)


class _Enqueue(logging.Handler):
    """Puts each record on the queue as its line: its arguments and exception formatted
    now, by the thread that logged it; the first one starts the thread that tells them."""

    def __init__(self, records: queue.Queue[logging.LogRecord], start_telling: Callable[[], None]) -> None:
        super().__init__()
        self.records = records
        self.start_telling: Callable[[], None] | None = start_telling

    def emit(self, record: logging.LogRecord) -> None:  # Handler.handle holds self.lock
        try:
            line = self.format(record)
            record = copy.copy(record)
            record.message = record.msg = line
            record.args, record.exc_info, record.exc_text, record.stack_info = None, None, None, None
            self.records.put_nowait(record)
            if self.start_telling is not None:
                start, self.start_telling = self.start_telling, None
                start()
        except Exception:
            self.handleError(record)


def _tell(records: queue.Queue[logging.LogRecord], handler: logging.Handler) -> None:
    while True:
        record = records.get()
        try:
            handler.handle(record)
        finally:
            records.task_done()


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
