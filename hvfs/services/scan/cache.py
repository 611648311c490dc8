"""The verdict cache: a file whose fingerprint has not changed is not scanned again.

Keyed by (device, inode, size, mtime_ns, ctime_ns), the Fingerprint of a stat that
hvfs.services.snapshot took once the file had settled: any write after it stamps a
later ctime, so a hit means the very content that was scanned. Shared by every VM of a
manager: a file on a volume two VMs mount has one entry for both.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

from hvfs.services.snapshot import Fingerprint

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    hits: int
    misses: int
    entries: int


class VerdictCache(Generic[V]):
    """A thread-safe LRU map from Fingerprint to verdict, of at most ``capacity`` entries."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[Fingerprint, V] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = 0

    def get(self, key: Fingerprint) -> V | None:
        with self._lock:
            verdict = self._entries.get(key)
            if verdict is None:
                self._misses += 1
                return None
            self._hits += 1
            self._entries.move_to_end(key)
            return verdict

    def put(self, key: Fingerprint, verdict: V) -> None:
        with self._lock:
            self._entries[key] = verdict
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every verdict: after the engines' rules changed."""
        with self._lock:
            self._entries.clear()

    def statistics(self) -> CacheStatistics:
        with self._lock:
            return CacheStatistics(self._hits, self._misses, len(self._entries))
