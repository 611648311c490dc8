"""Threads kept for the next bus: an event ring's and its subscribers' (hvfs.api.ring,
hvfs.api.hooks) are each a bus's, and an audited run makes a bus, so two threads, per run.

Why: ``threading.Thread.start`` waits until the new thread has run, and on two loaded
CPUs that wait, twice per audited run, cost its start 0.2-0.8 ms (a trace of the manager,
docs/performance.md). A thread whose work has returned waits here, parked, for the next
(``KEEP`` at most, the rest end); ``start`` hands the work to one (a queue's put: no wait)
or starts a thread when none is parked. A work never shares its thread with another while
it runs; the thread carries nothing from one work to the next but its name, set anew.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from hvfs import deferred

log = deferred.logger("hvfs.events")
KEEP = 8  # parked threads at most: a manager's buses at once, each with a ring and an audit
IDLE = 60.0  # seconds a parked thread waits for work before it ends

_lock = threading.Lock()
_parked = 0  # threads waiting on _work
_work: queue.SimpleQueue[tuple[Callable[[], None], str, Work]] = queue.SimpleQueue()


class Work:
    """One work handed to a kept thread: ``join`` and ``is_alive`` as a Thread's."""

    def __init__(self) -> None:
        self._done = threading.Event()

    def join(self, timeout: float | None = None) -> None:
        self._done.wait(timeout)

    def is_alive(self) -> bool:
        return not self._done.is_set()


def start(target: Callable[[], None], name: str) -> Work:
    """Run ``target`` on a thread of its own named ``name``: a parked one, or a new one."""
    global _parked
    work = Work()
    with _lock:  # the put under the lock too: a parked thread that times out looks for it (_serve)
        if _parked > 0:
            _parked -= 1
            _work.put((target, name, work))
            return work
    threading.Thread(target=_serve, args=(target, name, work), name=name, daemon=True).start()
    return work


def _serve(target: Callable[[], None], name: str, work: Work) -> None:
    global _parked
    while True:
        threading.current_thread().name = name
        try:
            target()
        except BaseException:  # the work's own to handle: logged, the thread kept
            log.exception("%s failed", name)
        finally:
            work._done.set()
        with _lock:
            if _parked >= KEEP:
                return
            _parked += 1
        try:
            target, name, work = _work.get(timeout=IDLE)
        except queue.Empty:
            with _lock:  # a work put meanwhile counted this thread as parked: it is this one's
                try:
                    target, name, work = _work.get_nowait()
                except queue.Empty:
                    _parked -= 1
                    return
