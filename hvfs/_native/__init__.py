"""The seccomp driver's hot path in C (``hotpath.c``, the extension ``_hotpath``), the
ptrace driver's tracer loop (``tracer.c``, the extension ``_tracer``), and the audit's
writer (``audit.c``, the extension ``_audit``: hvfs.api.compact.write_lines) and recorder
(``record.c``, ``_record``: hvfs.api.events.record_request), when built.

setup.py compiles it with the package (``pip install -e .`` in scripts/setup; the Python
headers come from python3-dev). It is optional: where it is missing or does not load,
hvfs serves through the Python path (ctypes, hvfs/_sys/notify.py) and says so in one
line of log; ``HVFS_NATIVE=0`` forces that path (to compare, or to rule the C out).
``status()`` tells which path serves and why (``hvfs manager status``, the tests).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from hvfs.deferred import logger

log = logger("hvfs.native")

ENVIRONMENT = "HVFS_NATIVE"


def _load(name: str) -> tuple[Any, str]:
    """The extension ``name`` (typed Any: C, no stubs) or None, and why."""
    if os.environ.get(ENVIRONMENT, "1") == "0":
        return None, f"{ENVIRONMENT}=0"
    try:
        return importlib.import_module(f"hvfs._native.{name}"), "built"
    except ImportError as e:
        return None, f"not built ({e}); run scripts/setup, which compiles it"


hotpath, reason = _load("_hotpath")
tracer, tracer_reason = _load("_tracer")  # the ptrace driver's loop
audit, audit_reason = _load("_audit")  # the audit's lines and their writes
recorder, recorder_reason = _load("_record")  # a served request's record, on the serving thread


def status() -> str:
    """``native``, or ``python (WHY)``."""
    return "native" if hotpath is not None else f"python ({reason})"


def tracer_status() -> str:
    """The ptrace driver's loop: ``native``, or ``python (WHY)``."""
    return "native" if tracer is not None else f"python ({tracer_reason})"


def audit_status() -> str:
    """The audit's writer: ``native``, or ``python (WHY)``."""
    return "native" if audit is not None else f"python ({audit_reason})"


def announce() -> None:
    """One line of log when the hot path is missing (the manager calls it once)."""
    if hotpath is None and reason != f"{ENVIRONMENT}=0":
        log.warning("the native hot path is %s: serving through the Python path", reason)
    if tracer is None and tracer_reason != f"{ENVIRONMENT}=0":
        log.warning("the ptrace driver's C loop is %s: tracing through the Python path", tracer_reason)
    if audit is None and audit_reason != f"{ENVIRONMENT}=0":
        log.warning("the audit's C writer is %s: writing through the Python path", audit_reason)
    if recorder is None and recorder_reason != f"{ENVIRONMENT}=0":
        log.warning("the audit's C recorder is %s: recording through the Python path", recorder_reason)
