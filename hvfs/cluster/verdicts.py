"""Scan verdicts shared by the hosts of a cluster, keyed by the content's SHA-256.

Implements hvfs.services.scan.shared.SharedVerdicts on one Redis hash: a detection on
host A (``put``, as A's scanner finds it) makes host B refuse the same content, even
where B's engines would not have found it. A lookup is on the scanner's path (a cache
miss, which reads the whole file anyway), so it is bounded: a short socket timeout, and
after a failure Redis is not asked again for a while (the scanner then judges alone,
counted).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

from hvfs.services.scan.engines import Detection

KEY = "hvfs:verdicts"
PAUSE = 5.0  # seconds without asking Redis after a failure


class RedisVerdicts:
    def __init__(self, client: redis.Redis, host: str) -> None:
        self.client, self.host = client, host
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self.shared_hits = self.shared_put = self.shared_failures = 0

    def _usable(self) -> bool:
        return time.monotonic() >= self._paused_until

    def _failed(self) -> None:
        with self._lock:
            self.shared_failures += 1
            self._paused_until = time.monotonic() + PAUSE

    def get(self, digest: str) -> Detection | None:
        """The detection a host recorded for content ``digest``, or None (also when Redis
        does not answer in time)."""
        if not self._usable():
            return None
        try:
            value = self.client.hget(KEY, digest)
        except redis.RedisError:
            self._failed()
            return None
        if value is None:
            return None
        engine, _, signature = (value.decode() if isinstance(value, bytes) else str(value)).partition("\n")
        with self._lock:
            self.shared_hits += 1
        return Detection(engine, signature)

    def put(self, digest: str, detection: Detection) -> None:
        """Record that content ``digest`` is infected, as this host's engine found it."""
        if not self._usable() or "@" in detection.engine:
            return  # a verdict that came from the cluster is there already
        try:
            self.client.hset(KEY, digest, f"{detection.engine}@{self.host}\n{detection.signature}")
        except redis.RedisError:
            self._failed()
            return
        with self._lock:
            self.shared_put += 1

    def statistics(self) -> dict[str, Any]:
        with self._lock:
            return {
                "verdicts_shared": self.shared_put,
                "verdicts_from_cluster": self.shared_hits,
                "verdict_failures": self.shared_failures,
            }
