"""Keeping the other CPUs awake while VMs make requests in bursts: why, when the threads spin
and how they cost nothing once requests stop is hvfs/_native/keep_awake.c's to say.
``HVFS_KEEP_AWAKE_US`` (the manager's environment) is a burst's window in µs; 0 turns it off.
Without the extension (not built, or ``HVFS_NATIVE=0``) nothing is started."""

from __future__ import annotations

import importlib
import os

from hvfs.deferred import logger

log = logger("hvfs.awake")

ENVIRONMENT = "HVFS_KEEP_AWAKE_US"
WINDOW_US = 200  # the kernel's own guest halt-poll window (haltpoll's guest_halt_poll_ns default)


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
    """One thread per CPU this manager may run on but one (a serving thread's); once per
    manager: later calls start nothing. Returns how many this call started."""
    if os.environ.get("HVFS_NATIVE", "1") == "0" or not (wanted := window()):
        return 0
    try:
        extension = importlib.import_module("hvfs._native._awake")
    except ImportError:
        return 0
    return int(extension.start(len(os.sched_getaffinity(0)), wanted))
