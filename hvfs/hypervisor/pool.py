"""The live sources of a manager, and when each is released.

A source is taken by a VM for each mount of its table. A named source (a project's
``[sources.NAME]``) is made once and shared by every VM that names it; any other source
is its mount's own. A source is released (``Source.release``) exactly once: when the
last VM that took it is dropped, that is, gone; a VM that failed to start is dropped
too. The pool is safe to use from several threads (VMs end on threads of their own).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from hvfs import deferred
from hvfs.manager.sources.base import Source, SourceError
from hvfs.manager.sources.registry import SourceSpec, make

log = deferred.logger("hvfs.hypervisor")


@dataclass(frozen=True)
class PoolStatistics:
    """Named sources live and the VMs using each; private sources live; releases so far,
    by name for named sources (so each can be seen to happen once) and in all."""

    named: dict[str, tuple[str, ...]]
    private: int
    released: dict[str, int]
    released_total: int


@dataclass
class _Shared:
    """A source shared by VMs, and the VMs that use it."""

    spec: SourceSpec
    source: Source
    users: set[str] = field(default_factory=set)


class SourcePool:
    def __init__(self) -> None:
        self._named: dict[str, _Shared] = {}
        self._private: dict[str, list[tuple[SourceSpec, Source]]] = {}
        self._released: Counter[str] = Counter()
        self._released_total = 0
        self._lock = threading.Lock()

    def take(self, user: str, spec: SourceSpec) -> Source:
        """The source ``spec`` describes, for the VM ``user`` (any key unique in this
        pool: a VM's name): the named one if it is live, else a new one. Raises
        SourceError, also when a live source of that name was described otherwise."""
        with self._lock:
            if spec.name is None:
                source = make(spec)
                self._private.setdefault(user, []).append((spec, source))
                return source
            shared = self._named.get(spec.name)
            if shared is None:
                shared = self._named[spec.name] = _Shared(spec, make(spec))
            elif shared.spec != spec:
                raise SourceError(f"source {spec.name} is described twice, differently; give each its own name")
            shared.users.add(user)
            return shared.source

    def live(self, name: str) -> Source | None:
        """The live named source ``name``, if one is."""
        with self._lock:
            shared = self._named.get(name)
            return shared.source if shared is not None else None

    def local_path(self, volume: str) -> str | None:
        """A directory of the manager's where a live source of the shared volume ``volume``
        shows its files (Source.local_path), if one has: where the cluster pokes a file
        another host wrote, for the VMs' inotify."""
        with self._lock:
            live = [(s.spec, s.source) for s in self._named.values()]
            live += [pair for pairs in self._private.values() for pair in pairs]
        for spec, source in live:
            if spec.options.get("shared") == volume:
                path = source.local_path()
                if path is not None:
                    return path
        return None

    def drop(self, user: str, views_gone: Callable[[], None] | None = None) -> None:
        """The VM ``user`` is gone (its views closed): release what only it used.
        ``views_gone`` lets go of the VM's last hold on its views (its pid 1's mount
        namespace), called first when a source released waits for its views."""
        with self._lock:
            done = [source for _, source in self._private.pop(user, [])]
            for name, shared in list(self._named.items()):
                shared.users.discard(user)
                if not shared.users:
                    del self._named[name]
                    self._released[name] += 1
                    done.append(shared.source)
            self._released_total += len(done)
        if views_gone is not None and any(source.waits_for_views for source in done):
            views_gone()
        self._release(done)

    def close(self) -> None:
        """Release every source still live (the front end is done with every VM)."""
        with self._lock:
            done = [source for pairs in self._private.values() for _, source in pairs]
            self._private.clear()
            for name, shared in self._named.items():
                self._released[name] += 1
                done.append(shared.source)
            self._named.clear()
            self._released_total += len(done)
        self._release(done)

    @staticmethod
    def _release(sources: list[Source]) -> None:
        for source in sources:
            try:
                source.release()
            except OSError as e:  # teardown goes on: the others still hold resources
                log.warning("releasing source %s: %s", source.describe(), e.strerror or e)

    def statistics(self) -> PoolStatistics:
        with self._lock:
            return PoolStatistics(
                named={name: tuple(sorted(s.users)) for name, s in self._named.items()},
                private=sum(len(sources) for sources in self._private.values()),
                released=dict(self._released),
                released_total=self._released_total,
            )
