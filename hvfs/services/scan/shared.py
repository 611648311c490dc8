"""Verdicts shared beyond this manager: how a scanner hears that content another host
found infected is infected (hvfs.cluster.verdicts implements it over Redis), keyed by the
content's SHA-256. None outside a cluster: the scanner then pays no hash."""

from __future__ import annotations

from typing import Protocol

from hvfs.services.scan.engines import Detection


class SharedVerdicts(Protocol):
    def get(self, digest: str) -> Detection | None:
        """The detection recorded for content ``digest``, or None; bounded in time, never raises."""
        ...

    def put(self, digest: str, detection: Detection) -> None:
        """Record a detection of this manager's engines; bounded in time, never raises."""
        ...


_shared: SharedVerdicts | None = None


def share_verdicts(store: SharedVerdicts | None) -> None:
    """Every scanner of this manager asks ``store`` from now on (None: none)."""
    global _shared
    _shared = store


def shared_verdicts() -> SharedVerdicts | None:
    return _shared
