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
"""

from __future__ import annotations

import importlib
import sys
import threading
import types

# What ``hvfs manager serve`` defers (hvfs/__main__.py): dataclasses' and traceback's.
MANAGER = ("inspect", "linecache")
_LOCKS: dict[str, threading.RLock] = {}  # by name: a module's own dict gets the real one's names


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
            stand_in.__dict__.update(real.__dict__)  # for those who imported the stand-in
        return real


def defer(*names: str) -> None:
    """A stand-in for each of ``names`` that is not imported yet (in any thread's view)."""
    for name in names:
        if name not in sys.modules:
            _LOCKS.setdefault(name, threading.RLock())
            sys.modules[name] = Deferred(name)
