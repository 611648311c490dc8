"""A volume's events over a Redis stream: the publisher and the consumer of one manager.

One stream per shared volume (``stream_key``); an entry is one event, its paths relative
to the volume's root, with the host that served it. Stream ids are the sequence: a
consumer keeps the last id it read of each volume in its state directory
(``cursors.json``), so that a manager that was away (killed, restarted, cut off) reads
from there and replays what it missed; what it reads that was already in the stream
when it joined is counted as replayed.

Neither side ever makes a VM wait: the publisher takes events from the bus's own thread
into a bounded buffer (full: dropped and counted) and sends them from a thread of its
own, keeping them while Redis is unreachable; the consumer blocks only itself.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from hvfs import deferred
from hvfs.api.events import Event

log = deferred.logger("hvfs.cluster")
BUFFER = 100_000  # events kept while Redis is away; then dropped, counted
BATCH = 512  # entries per pipeline, and per read
STREAM_MAXLEN = 1_000_000  # entries a stream keeps (approximately): a manager away longer misses the oldest
RETRY = 0.5  # seconds between attempts while Redis is away
BLOCK_MS = 300  # a read waits this long for new entries: how soon a new volume is followed


def stream_key(volume: str) -> str:
    return f"hvfs:volume:{volume}:events"


def _id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Publisher:
    """Sends (volume, event) to the volume's stream, in order, from its own thread."""

    def __init__(self, client: redis.Redis, host: str, *, limit: int = BUFFER) -> None:
        self.client, self.host, self.limit = client, host, limit
        self._pending: collections.deque[tuple[str, str]] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self.published = self.dropped = self.failures = 0
        self._thread = threading.Thread(target=self._run, name="hvfs-cluster-publish", daemon=True)
        self._thread.start()

    def offer(self, volume: str, event: Event) -> None:
        """Queue ``event`` (its paths the volume's) without blocking; drop it when full."""
        with self._cond:
            if len(self._pending) >= self.limit:
                self.dropped += 1
                return
            self._pending.append((volume, event.to_json()))
            self._cond.notify()

    @property
    def buffered(self) -> int:
        return len(self._pending)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return
                batch = [self._pending[i] for i in range(min(BATCH, len(self._pending)))]
            try:
                pipe = self.client.pipeline(transaction=False)
                for volume, line in batch:
                    pipe.xadd(stream_key(volume), {"host": self.host, "event": line}, maxlen=STREAM_MAXLEN)
                pipe.execute()
            except redis.RedisError as e:
                with self._cond:
                    self.failures += 1
                    stopping = self._stopping
                if self.failures == 1 or self.failures % 100 == 0:
                    log.warning(
                        "cluster: cannot publish %d events (kept, %d failures): %s", len(batch), self.failures, e
                    )
                if stopping:
                    return
                time.sleep(RETRY)
                continue
            with self._cond:
                for _ in batch:
                    self._pending.popleft()
                self.published += len(batch)

    def close(self, timeout: float = 2.0) -> None:
        """Send what is buffered if Redis answers within ``timeout``, then stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)


Deliver = Callable[[str, str, Event], None]  # (volume, host, event with the volume's paths)


@dataclass(frozen=True)
class ConsumerStatistics:
    received: int  # other hosts' events read
    replayed: int  # of them, those already in the stream when this manager joined: missed while away
    lag_ms: float  # between the event's time on its host and its reading here, the last one
    failures: int  # reads that failed (Redis away)
    lost: int  # events trimmed from the stream (STREAM_MAXLEN) before this manager came back to read them


class Consumer:
    """Reads the streams of the volumes ``volumes()`` names (and those it read before),
    from where it stopped, and hands other hosts' events to ``deliver``."""

    def __init__(
        self, client: redis.Redis, host: str, cursors_path: str, volumes: Callable[[], set[str]], deliver: Deliver
    ) -> None:
        self.client, self.host, self.path = client, host, cursors_path
        self._volumes, self._deliver = volumes, deliver
        self.cursors: dict[str, str] = {}  # volume: the last id read
        self.seen: dict[str, int] = {}  # volume: entries of its stream up to the cursor (added before, or read)
        self._load()
        self.horizon: dict[str, tuple[int, int]] = {}  # the stream's end as this manager joined
        self.received = self.replayed = self.failures = 0
        self.lost = 0  # entries trimmed from the streams before this manager read them
        self.lag_ms = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the cursors: volumes are tracked from the groups' threads too
        self._thread = threading.Thread(target=self._run, name="hvfs-cluster-consume", daemon=True)

    def start(self) -> None:
        """Note where each known stream ends (what is older was missed), and what it
        trimmed unread, then follow them."""
        for volume in list(self.cursors):
            added, length, last = self._info(volume)
            self.horizon[volume] = _id(last)
            trimmed = added - length  # the oldest entries, gone (STREAM_MAXLEN)
            seen = self.seen.get(volume)
            if seen is not None and trimmed > seen:  # some of them after this manager's cursor
                self.lost += trimmed - seen
                self.seen[volume] = trimmed  # said once: a later start counts them no more
                log.warning("cluster: %s: %d events were trimmed from the stream while this manager was "
                            "away; they cannot be replayed", volume, trimmed - seen)  # fmt: skip
        self._thread.start()

    def _info(self, volume: str) -> tuple[int, int, str]:
        """(entries ever added, entries kept, the last id) of ``volume``'s stream; (0, 0,
        "0-0") when there is none (yet, or Redis came back empty)."""
        try:
            info: Any = self.client.xinfo_stream(stream_key(volume))
        except redis.ResponseError:
            return 0, 0, "0-0"
        return int(info.get("entries-added", 0)), int(info["length"]), _text(info["last-generated-id"])

    def _load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                data: Any = json.load(f)
            self.cursors = {str(k): str(v) for k, v in data["cursors"].items()}
            self.seen = {str(k): int(v) for k, v in data["seen"].items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            self.cursors, self.seen = {}, {}

    def _save(self) -> None:
        with self._lock:
            data = {"cursors": dict(self.cursors), "seen": dict(self.seen)}
        temporary = f"{self.path}.tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(temporary, self.path)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._read_once()
            except redis.RedisError as e:
                self.failures += 1
                if self.failures == 1 or self.failures % 100 == 0:
                    log.warning("cluster: cannot read the volumes' events (%d failures): %s", self.failures, e)
                self._stop.wait(RETRY)
            except Exception:
                log.exception("cluster: reading the volumes' events failed")
                self._stop.wait(RETRY)

    def track(self, volume: str) -> None:
        """Follow ``volume`` from its stream's end now, if it is new here; the entries
        after it are read even if the reading thread gets to them later. Best effort
        while Redis is away: the reading thread tries again."""
        with self._lock:
            if volume in self.cursors:
                return
        try:
            added, _, last = self._info(volume)
        except redis.RedisError:
            return
        with self._lock:
            if volume not in self.cursors:
                self.cursors[volume], self.seen[volume] = last, added

    def _read_once(self) -> None:
        for volume in self._volumes() - set(self.cursors):
            self.track(volume)
        if not self.cursors:
            self._stop.wait(BLOCK_MS / 1000)
            return
        with self._lock:
            streams = {stream_key(v): c for v, c in self.cursors.items()}
        answer: Any = self.client.xread(streams, count=BATCH, block=BLOCK_MS)  # type: ignore[arg-type]
        if not answer:
            return
        by_key = {key: key.split(":")[2] for key in streams}
        for key, entries in answer:
            volume = by_key[_text(key)]
            horizon = self.horizon.get(volume, (0, 0))
            for entry_id, fields in entries:
                ident = _text(entry_id)
                with self._lock:
                    self.cursors[volume] = ident
                    self.seen[volume] = self.seen.get(volume, 0) + 1
                host = _text(fields.get(b"host", b""))
                if host == self.host:
                    continue
                try:
                    event = Event.from_json(fields[b"event"])
                except (KeyError, ValueError) as e:
                    log.warning("cluster: %s %s: not an event: %s", volume, ident, e)
                    continue
                self.received += 1
                self.replayed += _id(ident) <= horizon
                self.lag_ms = max(0.0, (time.time() - event.time) * 1000)
                self._deliver(volume, host, event)
        self._save()

    def statistics(self) -> ConsumerStatistics:
        return ConsumerStatistics(self.received, self.replayed, round(self.lag_ms, 1), self.failures, self.lost)

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with contextlib.suppress(OSError):
            self._save()
