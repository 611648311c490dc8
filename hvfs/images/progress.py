"""Progress of an image's export or unpacking on stderr, for as long as it takes.

Nothing for the first second (``HVFS_PROGRESS_AFTER``, in seconds: an image ready sooner
says nothing); then, on a terminal, one line redrawn in place (a bar, bytes of the total,
the layer); otherwise a plain line when it shows first and one every few seconds at most,
so that a log stays readable; and a last line with the time it took.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

WIDTH = 30
REDRAW = 0.1  # seconds between two drawings of the bar on a terminal
EVERY = 5.0  # seconds between two lines elsewhere
AFTER_VARIABLE = "HVFS_PROGRESS_AFTER"
AFTER = 1.0  # seconds of work before the first word


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _after() -> float:
    try:
        return max(float(os.environ.get(AFTER_VARIABLE, AFTER)), 0.0)
    except ValueError:
        return AFTER


class Progress:
    """Called with each count of bytes done (of ``total``; 0 if unknown); ``layer(i)`` when
    layer ``i`` of ``layers`` begins; ``finish`` at the end."""

    def __init__(
        self,
        what: str,
        total: int,
        stream: TextIO | None = None,
        *,
        layers: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.total, self.done = what, max(total, 0), 0
        self.layers, self.current = layers, 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.clock = clock
        self.after = _after()
        self.started = clock()
        self.drawn: float | None = None  # when it last showed, None before it first did

    def __call__(self, count: int) -> None:
        self.done += count
        self._tick()

    def layer(self, number: int) -> None:
        self.current = number
        self._tick()

    def _tick(self) -> None:
        now = self.clock()
        if now - self.started < self.after:
            return
        if self.drawn is None or now - self.drawn >= (REDRAW if self.tty else EVERY):
            self.drawn = now
            if self.tty:
                self.stream.write(f"\rhvfs: {self.what} {self._bar()}\x1b[K")
                self.stream.flush()
            else:
                self._line(f"{self.what}: {self._status()}")

    def _status(self) -> str:
        done = f"{_mb(self.done)} of {_mb(self.total)}" if self.total else _mb(self.done)
        where = f", layer {self.current}/{self.layers}" if self.layers > 1 and self.current else ""
        return done + where

    def _bar(self) -> str:
        if not self.total:
            return self._status()
        fraction = min(self.done / self.total, 1.0)
        filled = int(fraction * WIDTH)
        return f"[{'#' * filled}{'.' * (WIDTH - filled)}] {fraction:4.0%} {self._status()}"

    def _line(self, text: str) -> None:
        self.stream.write(f"hvfs: {text}\n")
        self.stream.flush()

    def finish(self, note: str = "") -> None:
        """Say how long it took, if it took long enough to be shown."""
        seconds = self.clock() - self.started
        if self.drawn is None and seconds < self.after:
            return
        summary = f"{self.what}: {_mb(self.done)} in {seconds:.1f} s{note}"
        if self.tty:
            self.stream.write(f"\rhvfs: {summary}\x1b[K\n")
            self.stream.flush()
        else:
            self._line(summary)
