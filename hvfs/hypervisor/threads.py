"""Threads kept for the manager's short-lived work on a run's path (a VM's watchers).

``threading.Thread.start`` returns once the new thread has run (it waits for it to take
the GIL): on a run's path, two such starts cost 0.5-0.8 ms on a loaded machine. A kept
thread, idle since its last work ended, is handed the next one without that wait. A kept
thread that has had nothing to do for ``IDLE`` seconds ends; at most ``KEEP`` wait.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from hvfs import deferred

log = deferred.logger("hvfs.threads")
KEEP = 16  # idle threads kept at most
IDLE = 60.0  # seconds an idle thread waits for work before it ends
NAME = "hvfs-kept"

Work = tuple[Callable[..., object], tuple[Any, ...], str]
_idle: list[queue.SimpleQueue[Work]] = []  # the inboxes of the idle threads, the last idle first
_lock = threading.Lock()


def spawn(target: Callable[..., object], args: tuple[Any, ...], name: str) -> None:
    """Run ``target(*args)`` on a thread named ``name`` (a daemon thread): a kept one if
    one is idle, else a new one, kept after."""
    with _lock:
        inbox = _idle.pop() if _idle else None
    if inbox is not None:
        inbox.put((target, args, name))
        return
    inbox = queue.SimpleQueue()
    inbox.put((target, args, name))
    threading.Thread(target=_serve, args=(inbox,), name=name, daemon=True).start()


def _serve(inbox: queue.SimpleQueue[Work]) -> None:
    me = threading.current_thread()
    while True:
        try:
            target, args, name = inbox.get(timeout=IDLE)
        except queue.Empty:
            with _lock:
                if inbox in _idle:  # else a spawn took it just now: its work is on the way
                    _idle.remove(inbox)
                    return
            continue
        me.name = name
        try:
            target(*args)
        except Exception:  # as a thread of its own would: said, and the next work served
            log.exception("%s failed", name)
        del target, args  # what the work held (a VM's channel, its shim's socket) goes with it
        me.name = NAME
        with _lock:
            if len(_idle) >= KEEP:
                return
            _idle.append(inbox)
