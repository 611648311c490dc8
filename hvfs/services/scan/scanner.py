"""The scanner: one service for every VM, asked about a file before a VM may use it.

Integration: ``ScanHook`` (hook.py) wraps a Scanner and a Quarantine as an EventBus hook:
it calls ``check(vm, path, fd)`` on the very file a VM is about to get or run and, on a
detection, quarantines the file and answers EACCES. The manager also calls ``check``
after a file opened for writing is closed (its close watcher), off the hot path: that
fills the cache. ``fd`` is the manager's own read-only fd on the file; the scanner reads
it with pread and never closes it.

On the hot path a cached verdict costs one fstat and a dict lookup; a miss reads the
whole file (up to ``max_bytes``) and runs every engine in order, the first detection
winning. The scanner fails open: a file it cannot judge (larger than max_bytes, changing
during each read, an engine error) gets a verdict with ``scanned=False`` and a note,
counted in ``statistics()``; such verdicts are not cached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from hvfs import deferred
from hvfs.services.scan.cache import VerdictCache
from hvfs.services.scan.engines import Detection, Engine, ScanError
from hvfs.services.scan.shared import shared_verdicts
from hvfs.services.snapshot import BytesSink, Fingerprint, UnstableContent, read_stable

log = deferred.logger("hvfs.services")


@dataclass(frozen=True, slots=True)
class Verdict:
    detection: Detection | None = None
    scanned: bool = True  # False: the file could not be judged (see note); it is let through
    cached: bool = False  # the verdict came from the cache
    note: str = ""

    @property
    def infected(self) -> bool:
        return self.detection is not None


@dataclass(frozen=True, slots=True)
class ScanStatistics:
    scanned: int  # contents read and given to the engines
    cached: int  # verdicts from the cache
    infected: int  # detections (cached ones included)
    skipped: int  # not regular files, or larger than max_bytes
    unstable: int  # files that changed during each read
    errors: int  # engine failures


class Scanner:
    """Runs ``engines`` on files, with a verdict cache. Thread-safe."""

    def __init__(
        self,
        engines: Sequence[Engine],
        *,
        cache: VerdictCache[Verdict] | None = None,
        max_bytes: int = 64 << 20,
        attempts: int = 3,
    ) -> None:
        self.engines = tuple(engines)
        self.cache: VerdictCache[Verdict] = cache if cache is not None else VerdictCache()
        self.max_bytes = max_bytes
        self._attempts = attempts
        self._lock = threading.Lock()
        self._counts = {field.name: 0 for field in dataclasses.fields(ScanStatistics)}

    def check(self, vm: str, path: str, fd: int) -> Verdict:
        """The verdict on the content of ``fd`` (``vm`` and ``path`` name it in logs).
        Raises OSError only when fstat fails."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return self._skip("not a regular file")
        if st.st_size > self.max_bytes:
            return self._skip(f"larger than {self.max_bytes} bytes")
        cached = self.cache.get(Fingerprint.of(st))
        if cached is not None:
            self._count("cached", infected=cached.infected)
            return dataclasses.replace(cached, cached=True)
        try:
            sink, st = read_stable(fd, lambda: BytesSink(self.max_bytes), attempts=self._attempts)
        except UnstableContent:
            self._count("unstable")
            return Verdict(scanned=False, note="changed during each read")
        except Exception as e:  # ContentTooLarge (it grew) or OSError: not judged, let through
            log.warning("scan: cannot read %s of VM %s: %s", path, vm, e)
            return self._skip(f"unreadable: {e}")
        verdict = self._judge(vm, path, sink.data())
        if verdict.scanned:
            self.cache.put(Fingerprint.of(st), verdict)
        return verdict

    def _judge(self, vm: str, path: str, data: bytes) -> Verdict:
        shared = shared_verdicts()  # in a cluster: another host may have found this content
        digest = hashlib.sha256(data).hexdigest() if shared is not None else ""
        if shared is not None:
            detection = shared.get(digest)
            if detection is not None:
                log.warning("scan: %s of VM %s: %s found by %s", path, vm, detection.signature, detection.engine)
                self._count("scanned", infected=True)
                return Verdict(detection)
        failed = []
        for engine in self.engines:
            try:
                detection = engine.scan(data)
            except ScanError as e:
                log.warning("scan: engine %s failed on %s of VM %s: %s", engine.name, path, vm, e)
                self._count("errors")
                failed.append(engine.name)
                continue
            if detection is not None:
                log.warning("scan: %s of VM %s: %s found by %s", path, vm, detection.signature, engine.name)
                self._count("scanned", infected=True)
                if shared is not None:
                    shared.put(digest, detection)
                return Verdict(detection)
        self._count("scanned")
        if failed:
            return Verdict(scanned=False, note=f"engine failed: {', '.join(failed)}")
        return Verdict()

    def _skip(self, note: str) -> Verdict:
        self._count("skipped")
        return Verdict(scanned=False, note=note)

    def _count(self, name: str, *, infected: bool = False) -> None:
        with self._lock:
            self._counts[name] += 1
            self._counts["infected"] += infected

    def statistics(self) -> ScanStatistics:
        with self._lock:
            return ScanStatistics(**self._counts)
