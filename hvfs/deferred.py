"""Standard modules imported on their first use, for the manager's cold start.

``dataclasses`` imports ``inspect`` (with ``ast``, ``dis`` and ``tokenize``) for a single
call, the docstring of a class declared without one, and ``traceback`` imports
``linecache`` (with ``tokenize``) to print source lines: ~5 ms of the CPU of every cold
``hvfs run`` (docs/performance.md), for modules that a manager's first VM never calls.
``defer`` puts a stand-in in ``sys.modules`` in their place, which imports the real module
the first time anything is asked of it, and from then on holds the real module's names.

Not ``importlib.util.LazyLoader``: Python 3.11's turns its module into a plain one before
the module has run, so a second thread asking for a name meanwhile gets AttributeError.
Here a thread that asks during the import waits for it (one lock per stand-in), and
every thread gets the real names.

``logging`` is deferred too, which asks two more things of the modules on a first VM's
way: their loggers are ``logger(name)`` (a module-level ``logging.getLogger`` would import
it at once), and what must hold before the first record (the manager's handlers) is set
up by ``when_loaded``, run as part of the import, before any logger is handed out.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import logging

# What ``hvfs manager serve`` defers (hvfs/__main__.py): dataclasses' and traceback's, and
# logging (with traceback, string and textwrap: ~4.8 ms of CPU; most managers never log).
MANAGER = ("inspect", "linecache", "logging")
_LOCKS: dict[str, threading.RLock] = {}  # by name: a module's own dict gets the real one's names
_THEN: dict[str, list[Callable[[], None]]] = {}  # by name: what runs once the real module is in


class Deferred(types.ModuleType):
    """A stand-in for a module, imported on the first name asked of it that it lacks."""

    def __getattr__(self, attribute: str) -> object:  # only for names not (yet) in its dict
        return getattr(_load(self), attribute)


def _load(stand_in: Deferred) -> types.ModuleType:
    """The real module, imported now unless it was; its names are the stand-in's since
    (a function, not a method: a method would hide the module's own name, json.load)."""
    name = stand_in.__name__
    with _LOCKS[name]:
        real = sys.modules.get(name)
        if real is None or real is stand_in:
            sys.modules.pop(name, None)
            try:
                real = importlib.import_module(name)
            except BaseException:
                sys.modules.setdefault(name, stand_in)
                raise
            # Before the stand-in gets the real names: until then every other thread that
            # asks the stand-in waits here, so none logs before the handlers are in.
            for then in _THEN.pop(name, []):
                then()
            stand_in.__dict__.update(real.__dict__)  # for those who imported the stand-in
        return real


def defer(*names: str) -> None:
    """A stand-in for each of ``names`` that is not imported yet (in any thread's view)."""
    for name in names:
        if name not in sys.modules:
            _LOCKS.setdefault(name, threading.RLock())
            sys.modules[name] = Deferred(name)


def when_loaded(name: str, then: Callable[[], None]) -> None:
    """Call ``then`` once the module ``name`` is imported: now, unless it is a stand-in
    still waiting for its first use (then as part of that import, in its thread)."""
    lock = _LOCKS.get(name)
    if lock is not None:
        with lock:
            if isinstance(sys.modules.get(name), Deferred):
                _THEN.setdefault(name, []).append(then)
                return
    then()


class _Logger:
    """A logger by name, looked up in ``logging`` when first used (implements logging.Logger)."""

    __slots__ = ("_name", "_real")

    def __init__(self, name: str) -> None:
        self._name = name
        self._real: logging.Logger | None = None

    def __getattr__(self, attribute: str) -> object:  # only for the logger's own names
        real = self._real
        if real is None:
            import logging

            real = self._real = logging.getLogger(self._name)
        return getattr(real, attribute)


def logger(name: str) -> logging.Logger:
    """What ``logging.getLogger(name)`` gives, without importing ``logging`` until a first
    record (or any other use): for the modules a manager imports before its first VM."""
    return cast("logging.Logger", _Logger(name))
