"""The processes ``hvfs exec`` (and health probes) run in a VM: what its pid 1 says of
them, told to whoever asked."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import TYPE_CHECKING

from hvfs.hypervisor.threads import spawn
from hvfs.sandbox import protocol
from hvfs.sandbox.protocol import Msg, Tag

if TYPE_CHECKING:
    from hvfs.hypervisor.records import VmRecord


_lock = threading.Lock()


def listen_once(record: VmRecord) -> None:
    """Listen to the pid 1 of ``record``'s running VM, from its first exec on: pid 1 says
    nothing else after its START, so a VM that never gets one (most runs) has no thread
    woken at its start and at its end, where it would wait for the GIL alongside the
    start's reply and the exit's report (issue 14)."""
    with _lock:
        if record.running is None or record.listened is record.running:
            return
        record.listened = record.running
    spawn(listen, (record,), f"hvfs-{record.config.name}-channel")


def listen(record: VmRecord) -> None:
    """Pid 1's messages about the processes of ``hvfs exec``."""
    assert record.running is not None
    process = record.running.process
    while True:
        try:
            message, fds = process.receive()
        except (protocol.ChannelClosed, OSError):
            break
        exec_id = str(message.int(Tag.ID))
        if message.type == Msg.EXEC_STARTED:
            numbers = message.ints(Tag.FD)  # the pty master of ``hvfs exec -t``
            with contextlib.suppress(OSError):
                fds += process.take(numbers)
            if numbers:
                process.taken(numbers)
            client = record.execs.get(exec_id)
            if client is not None:
                with contextlib.suppress(OSError):
                    client.send({"started": message.int(Tag.PID)}, fds or None)
        elif message.type == Msg.EXEC_EXITED:
            client = record.execs.pop(exec_id, None)
            if client is not None:
                with contextlib.suppress(OSError):
                    client.send({"exited": message.int(Tag.CODE)})
        for fd in fds:
            os.close(fd)
    for client in record.execs.values():  # the VM ended: so did its exec'd processes
        with contextlib.suppress(OSError):
            client.send({"exited": 128 + signal.SIGKILL})
    record.execs.clear()
