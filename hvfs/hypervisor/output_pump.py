"""A project VM's output: into its log file, and, line by line, to the clients that
follow its group."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable
from typing import Any


def pump(
    name: str, output: int, log_file: str, tell: Callable[[dict[str, Any]], None], drained: threading.Event
) -> None:
    """Read ``output`` to its end (then close it); ``drained`` is set once all is told."""
    pending = b""
    # Waits with no buffer: a read allocates its whole size while it blocks (per VM).
    waiting = select.poll()
    waiting.register(output, select.POLLIN)
    with open(log_file, "ab") as logfile:
        while True:
            try:
                waiting.poll()
                chunk = os.read(output, 65536)
            except OSError:
                break
            if not chunk:
                break
            logfile.write(chunk)
            logfile.flush()
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                tell({"log": name, "line": line.decode(errors="replace")})
    os.close(output)
    if pending:
        tell({"log": name, "line": pending.decode(errors="replace")})
    drained.set()
