"""The handler by which the manager's records reach the clients they concern
(hvfs.hypervisor.telling), imported with ``logging`` itself."""

from __future__ import annotations

import copy
import logging
import queue
import re
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from hvfs import log_handlers

if TYPE_CHECKING:
    from hvfs.hypervisor.group import Group

_VM = re.compile(r"VM (\S+?):? ")


def install(groups: Callable[[], Iterable[Group]]) -> queue.Queue[logging.LogRecord]:
    """The root logger's telling handler; the queue of the records it takes."""

    records: queue.Queue[logging.LogRecord] = queue.Queue()
    followers = TellFollowers(groups)
    handler = _Enqueue(records, lambda: threading.Thread(
        target=_tell, args=(records, followers), name="hvfs-tell", daemon=True
    ).start())  # fmt: skip
    handler.setLevel(logging.WARNING)
    logging.getLogger().addHandler(handler)
    return records


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


class TellFollowers(logging.Handler):
    """Sends each record to the followers of the groups it concerns, as ``{"stderr": line}``."""

    def __init__(self, groups: Callable[[], Iterable[Group]]) -> None:
        super().__init__(logging.WARNING)
        self.groups = groups
        self.lines = log_handlers.OneLine()  # its count of errors told is the manager's: they are rare

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
