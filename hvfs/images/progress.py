"""Progress of an image's export or unpacking on stderr: a bar redrawn in place on a
terminal, otherwise a plain line when it starts and one when it ends (logs stay readable)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30
REDRAW = 0.1  # seconds between two drawings of the bar


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class Progress:
    def __init__(self, what: str, total: int, stream: TextIO | None = None) -> None:
        self.what, self.total, self.done = what, max(total, 0), 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = self.drawn = time.monotonic()
        if not self.tty:
            self._line(f"{what} ({_mb(self.total)})..." if self.total else f"{what}...")
        else:
            self._draw()

    def __call__(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.tty and now - self.drawn >= REDRAW:
            self.drawn = now
            self._draw()

    def _draw(self) -> None:
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            filled = int(fraction * WIDTH)
            bar = f"[{'#' * filled}{'.' * (WIDTH - filled)}] {fraction:4.0%} {_mb(self.done)}/{_mb(self.total)}"
        else:
            bar = _mb(self.done)
        self.stream.write(f"\rhvfs: {self.what} {bar}\x1b[K")
        self.stream.flush()

    def _line(self, text: str) -> None:
        self.stream.write(f"hvfs: {text}\n")
        self.stream.flush()

    def finish(self, note: str = "") -> None:
        seconds = time.monotonic() - self.started
        summary = f"{self.what}: {_mb(self.done)} in {seconds:.1f} s{note}"
        if self.tty:
            self.stream.write(f"\rhvfs: {summary}\x1b[K\n")
            self.stream.flush()
        else:
            self._line(summary)
