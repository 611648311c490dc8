"""Keeping the other CPUs awake while VMs make requests in bursts: why, and how it costs
nothing once requests stop, is hvfs/_native/keep_awake.h's to say. ``HVFS_KEEP_AWAKE_US``
(the manager's environment) is the burst's window in µs; 0 turns it off."""

from __future__ import annotations

import os

from hvfs._native import hotpath
from hvfs.deferred import logger

log = logger("hvfs.awake")

ENVIRONMENT = "HVFS_KEEP_AWAKE_US"
WINDOW_US = 200  # as long as the kernel's own guest halt-poll window (haltpoll's default)


def window() -> int:
    """The window the environment asks for, or the default where it says nothing usable."""
    text = os.environ.get(ENVIRONMENT)
    if text is None:
        return WINDOW_US
    try:
        return max(0, int(text))
    except ValueError:
        log.warning("%s=%r is not a number of µs; using %d", ENVIRONMENT, text, WINDOW_US)
        return WINDOW_US


def start() -> int:
    """One thread per CPU this manager may run on but one (the serving thread's); idempotent.
    Returns how many were started by this call."""
    if hotpath is None:
        return 0
    return int(hotpath.keep_awake(len(os.sched_getaffinity(0)) - 1, window()))
