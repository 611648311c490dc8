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
import threading
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
recorder, recorder_reason = _load("_record")  # a served request's record, on the serving thread
# Loaded on first use (a module __getattr__, below): a cold manager's first VM under the
# seccomp driver, without an audit, needs neither (each a dlopen and its module: ~0.1 ms).
tracer: Any  # the ptrace driver's loop
tracer_reason: str
audit: Any  # the audit's lines and their writes
audit_reason: str
_LATER = {"tracer": ("_tracer", "the ptrace driver's C loop", "tracing"),
          "audit": ("_audit", "the audit's C writer", "writing")}  # fmt: skip
_later_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    """``tracer``, ``audit`` and their reasons, loaded when first asked for (PEP 562)."""
    what = name.removesuffix("_reason")
    if what not in _LATER:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, why = _later(what)
    return why if name.endswith("_reason") else module


def _later(what: str) -> tuple[Any, str]:
    """The extension loaded on first use as ``what`` and why it is or is not there."""
    with _later_lock:
        if what not in globals():
            extension, role, doing = _LATER[what]
            module, why = _load(extension)
            if module is None and why != f"{ENVIRONMENT}=0":
                log.warning("%s is %s: %s through the Python path", role, why, doing)
            globals().update({what: module, f"{what}_reason": why})
        return globals()[what], globals()[f"{what}_reason"]


def status() -> str:
    """``native``, or ``python (WHY)``."""
    return "native" if hotpath is not None else f"python ({reason})"


def tracer_status() -> str:
    """The ptrace driver's loop: ``native``, or ``python (WHY)``."""
    module, why = _later("tracer")
    return "native" if module is not None else f"python ({why})"


def audit_status() -> str:
    """The audit's writer: ``native``, or ``python (WHY)``."""
    module, why = _later("audit")
    return "native" if module is not None else f"python ({why})"


def announce() -> None:
    """One line of log when the hot path or the recorder is missing (the manager calls it
    once; the tracer and the audit's writer say so when first loaded)."""
    if hotpath is None and reason != f"{ENVIRONMENT}=0":
        log.warning("the native hot path is %s: serving through the Python path", reason)
    if recorder is None and recorder_reason != f"{ENVIRONMENT}=0":
        log.warning("the audit's C recorder is %s: recording through the Python path", recorder_reason)
