"""The host side of ``-t``: the user's terminal in raw mode, relayed to the VM's pty."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import termios
import tty
from types import FrameType


def host_winsize() -> bytes | None:
    for fd in (0, 1, 2):
        try:
            return fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
        except OSError:
            continue
    return None


def _pump(source: int, sink: int) -> bool:
    """Copy what is available; False at end of file."""
    try:
        data = os.read(source, 65536)
    except OSError as e:
        if e.errno in (errno.EIO, errno.EBADF):  # the pty's last slave closed
            return False
        raise
    if not data:
        return False
    view = memoryview(data)
    while view:
        written = os.write(sink, view)
        view = view[written:]
    return True


def relay(master: int, *, interactive: bool, until: int) -> None:
    """Copy between the user's terminal and ``master`` until ``until`` (a pidfd) fires."""
    saved = None
    if interactive and os.isatty(0):
        saved = termios.tcgetattr(0)
        tty.setraw(0)

    def resize(signum: int, frame: FrameType | None) -> None:
        size = host_winsize()
        if size:
            fcntl.ioctl(master, termios.TIOCSWINSZ, size)

    previous = signal.signal(signal.SIGWINCH, resize)
    reading = [master, until] + ([0] if interactive else [])
    try:
        while True:
            readable, _, _ = select.select(reading, [], [])
            if master in readable and not _pump(master, 1):
                reading.remove(master)
            if 0 in readable and not _pump(0, master):
                reading.remove(0)
            if until in readable:
                os.set_blocking(master, False)
                try:
                    while _pump(master, 1):
                        pass
                except BlockingIOError:
                    pass
                return
    finally:
        signal.signal(signal.SIGWINCH, previous)
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
