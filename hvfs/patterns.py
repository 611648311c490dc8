"""Regular expressions compiled on their first use, for the modules a cold manager imports.

``re.compile`` runs the parser and compiler of ``re``, in Python: 20-100 µs a pattern
(measured, warm; more in a fresh interpreter), ~1 ms for the fifteen that hvfs's modules
on a cold ``hvfs run``'s way compiled at import, most of them for flags and checks that a
plain run never uses (``--publish``, ``--hostname``, ``--user``, an image's reference,
a ``/proc/self/fd`` path asked of the manager).
"""

from __future__ import annotations

import re
from typing import cast


class _Pattern:
    """A pattern, compiled the first time one of its attributes is asked (implements re.Pattern)."""

    __slots__ = ("_compiled", "_flags", "_source")

    def __init__(self, source: str, flags: int) -> None:
        self._source = source
        self._flags = flags
        self._compiled: re.Pattern[str] | None = None

    def __getattr__(self, attribute: str) -> object:  # only for re.Pattern's names
        compiled = self._compiled
        if compiled is None:  # two threads may both compile it: the same pattern, either kept
            compiled = self._compiled = re.compile(self._source, self._flags)
        return getattr(compiled, attribute)

    def __repr__(self) -> str:
        return f"pattern({self._source!r})"


def pattern(source: str, flags: int = 0) -> re.Pattern[str]:
    """What ``re.compile(source, flags)`` gives, compiled when it is first used."""
    return cast("re.Pattern[str]", _Pattern(source, flags))
