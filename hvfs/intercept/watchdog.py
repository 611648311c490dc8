"""One watchdog thread for every seccomp driver of the process (hvfs.intercept.driver).

A driver's receiver serves what it receives itself; when one request holds it for
``TAKEOVER`` seconds, the receiving goes to another worker (``SeccompDriver.check``), so
one blocked request never freezes a VM. That check needs a clock, not a thread per VM:
a thread of each VM's own cost a thread start per VM (for a warm spare, on the spare's
making) and a wake-up at its ``bind`` on the run's path, and woke 20 times a second for
as long as its VM ran. This one thread ticks while some driver is watched and waits,
using nothing, while none is.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Protocol

from hvfs import deferred

log = deferred.logger("hvfs.driver")

TAKEOVER = 0.05  # seconds one request may hold the receiver before another worker takes over


class Watched(Protocol):
    def check(self) -> bool:
        """Take over a receiver stuck for ``TAKEOVER``; False once the driver is done."""
        ...


class Watchdog:
    def __init__(self) -> None:
        self._watched: set[Watched] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, driver: Watched) -> None:
        """Check ``driver`` every ``TAKEOVER`` until its ``check`` says it is done."""
        with self._cond:
            self._watched.add(driver)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hvfs-watchdog", daemon=True)
                self._thread.start()
            elif len(self._watched) == 1:
                self._cond.notify()

    def forget(self, driver: Watched) -> None:
        with self._cond:
            self._watched.discard(driver)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._watched:
                    self._cond.wait()
            time.sleep(TAKEOVER)
            with self._cond:
                drivers = list(self._watched)
            for driver in drivers:
                try:
                    done = not driver.check()
                except Exception:  # one driver's (no thread to start for it) stops no other's watch
                    log.exception("the watchdog's check of a driver failed")
                    done = False
                if done:
                    self.forget(driver)

    def _forked(self) -> None:
        """In a forked child: the thread is the parent's, the drivers too."""
        self._watched, self._cond, self._thread = set(), threading.Condition(), None


WATCHDOG = Watchdog()
os.register_at_fork(after_in_child=WATCHDOG._forked)
