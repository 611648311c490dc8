"""Text written to a file another process writes too, each line whole: a run's stderr, where
the client prints the lines the manager tells it (a refusal the VM's last requests caused)
while the manager writes the run's ``--diff`` there at the VM's exit.

A write(2) of at most PIPE_BUF bytes to a pipe is atomic (pipe(7)); one to a terminal holds
the terminal's write lock for the whole call; one to a regular file holds the open file's
position lock, which both processes share (the client's stderr, duplicated and sent to the
manager, is one open file). So a text written in calls that each end at a line's end and
hold at most PIPE_BUF bytes never has another writer's bytes inside one of its lines, where
a call that ends mid-line (print's text, then its newline; a buffered file's 8 KiB chunks)
lets the other writer's bytes in there. A line longer than PIPE_BUF is written alone: on a
pipe, it alone may be split.
"""

from __future__ import annotations

import os
import select


def write_lines(fd: int, data: bytes) -> None:
    """All of ``data`` to ``fd``, in calls that each end at a line's end (or ``data``'s) and
    hold at most PIPE_BUF bytes where its lines allow. Raises OSError as write does."""
    view = memoryview(data)
    start, size = 0, len(data)
    while start < size:
        end = size if size - start <= select.PIPE_BUF else data.rfind(b"\n", start, start + select.PIPE_BUF) + 1
        if end <= start:  # a line longer than PIPE_BUF: to its end, alone
            end = data.find(b"\n", start) + 1 or size
        while start < end:  # a blocking write is short only past PIPE_BUF, or on a signal
            start += os.write(fd, view[start:end])
