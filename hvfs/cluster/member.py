"""A manager's membership of a cluster: its groups' shared volumes, their events both ways.

Integration (hvfs.hypervisor): the daemon, as it starts, ``join``s when
``cluster_config()`` names a cluster (an unreachable Redis stops it with one line), and
``follow``s the streams once it took back its groups; a group whose VMs mount a source
with ``shared = "ID"`` is ``attach``ed with its bus and ``detach``ed as it goes. Local
events on a shared volume go to the volume's stream; other hosts' events come back to
every attached group that mounts the volume: published on its bus as the event of
``VM@HOST`` (its audit writes them; its backup never saves them, having no such VM: the
writer's manager does), and the written file is opened for writing and closed again on
the local mount, so that a VM's inotify sees IN_CLOSE_WRITE for a change no kernel here
made.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from hvfs import deferred
from hvfs.api.events import Event
from hvfs.api.hooks import EventBus, Subscription
from hvfs.cluster.identity import CLUSTER_ENV, REMOTE, ClusterConfig, ClusterError, is_remote
from hvfs.cluster.stream import Consumer, Publisher
from hvfs.cluster.verdicts import RedisVerdicts

log = deferred.logger("hvfs.cluster")
CONNECT_TIMEOUT = 2.0  # seconds: joining, and every command of the publisher
OFF_VOLUME = "vm:"  # a path of an event that is not on its volume: the writer's VM's, as it was
POKE_ATTEMPTS = 50
POKE_RETRY = 0.1  # seconds
_WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC


@dataclass(frozen=True)
class Share:
    """A mount of a shared volume in one VM: where the VM sees it, and how this manager
    finds a directory of its own that shows the volume's files (Source.local_path: a
    host source's path, a juicefs source's mount once mounted; None: no inotify poke)."""

    vm: str
    target: str
    volume: str
    locate: Callable[[], str | None] = field(default=lambda: None, compare=False)


def _inside(path: str, target: str) -> str | None:
    """``path`` relative to the mount at ``target`` ("/" for its root), or None."""
    if path == target:
        return "/"
    if path.startswith(target.rstrip("/") + "/"):
        return path[len(target.rstrip("/")) :]
    return None


def _leased(st: os.stat_result) -> bool:
    """Whether a lease is held on the file ``st`` describes (/proc/locks: "LEASE …
    MAJ:MIN:INODE", the device in hex)."""
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino} "
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            return any("LEASE" in line and where in line for line in f)
    except OSError:
        return False


def _join(target: str, relative: str) -> str:
    return target if relative == "/" else target.rstrip("/") + relative


@dataclass
class _Attached:
    gid: str
    bus: EventBus
    shares: tuple[Share, ...]
    subscription: Subscription | None = None


class Member:
    """This manager in the cluster ``config`` names; its cursors live in ``state_dir``."""

    def __init__(self, config: ClusterConfig, state_dir: str) -> None:
        self.config = config
        self.host = config.host
        self.client = self._connect(config.url, CONNECT_TIMEOUT)
        self.state_dir = state_dir
        self._lock = threading.Lock()
        self._groups: dict[str, _Attached] = {}
        self.poked = 0
        self.poke_failed = ""  # the last file the VMs could not be told of, and why
        self.publisher = Publisher(self.client, self.host)
        reader = self._connect(config.url, CONNECT_TIMEOUT + 5)  # its reads block for a while
        self.consumer = Consumer(reader, self.host, os.path.join(state_dir, "cursors.json"), self.volumes, self._remote)
        self.verdicts = RedisVerdicts(self._connect(config.url, 0.3), self.host)

    @staticmethod
    def _connect(url: str, timeout: float) -> redis.Redis:
        return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=CONNECT_TIMEOUT)

    def join(self) -> None:
        """Check that Redis answers. Raises ClusterError."""
        try:
            self.client.ping()
        except redis.RedisError as e:
            self.publisher.close(0)
            raise ClusterError(
                f"cannot reach the cluster's Redis at {self.config.url} ({e}); start redis-server there, "
                f"or fix or unset {CLUSTER_ENV}"
            ) from None

    def follow(self) -> None:
        """Read the volumes' streams from where this manager stopped: once the groups it
        took back are attached, so that what it missed reaches them."""
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self.consumer.start()

    def shares(self, project: Any, locate: Callable[[str], str | None] | None = None) -> list[Share]:
        """The shared volumes the VMs of ``project`` (a hypervisor.spec.Project) mount;
        ``locate(volume)`` is the manager's local path of a volume, when it has one
        (hvfs.hypervisor.pool.SourcePool.local_path)."""
        return shares_of([(name, vm.mounts) for name, vm in project.vms.items()], locate)

    def volumes(self) -> set[str]:
        with self._lock:
            return {share.volume for group in self._groups.values() for share in group.shares}

    # -- a group's VMs ----------------------------------------------------------------

    def attach(self, gid: str, bus: EventBus, shares: Sequence[Share]) -> None:
        """Publish the events of ``bus`` on the volumes ``shares`` name, and bring the
        other hosts' there."""
        if not shares:
            return
        attached = _Attached(gid, bus, tuple(sorted(shares, key=lambda s: -len(s.target))))
        for share in attached.shares:
            self.consumer.track(share.volume)  # from now on: what a VM here may have seen
        with self._lock:
            self._groups[gid] = attached
        attached.subscription = bus.subscribe(
            lambda events: self._local(attached, events), name="cluster", queue_size=1 << 16, batch=True
        )

    def detach(self, gid: str) -> None:
        with self._lock:
            attached = self._groups.pop(gid, None)
        if attached is not None and attached.subscription is not None:
            attached.bus.unsubscribe(attached.subscription)

    def _local(self, attached: _Attached, events: list[Event]) -> None:
        for event in events:
            if is_remote(event.vm) or not event.paths:
                continue  # another host's, published here: it came from the stream
            for share in attached.shares:
                if share.vm != event.vm:
                    continue
                relative = _inside(event.paths[0], share.target)
                if relative is None:
                    continue
                # a path off the volume (a symlink's target, as stored) stays the VM's, marked
                paths = tuple(_inside(p, share.target) or f"{OFF_VOLUME}{p}" for p in event.paths[1:])
                self.publisher.offer(share.volume, dataclasses.replace(event, paths=(relative, *paths)))
                break

    def _remote(self, volume: str, host: str, event: Event) -> None:
        """Another host's ``event`` on ``volume`` (its paths the volume's)."""
        with self._lock:
            groups = list(self._groups.values())
        poked: set[str] = set()
        for attached in groups:
            share = next((s for s in attached.shares if s.volume == volume), None)
            if share is None:
                continue
            paths = tuple(_join(share.target, p) if p.startswith("/") else p for p in event.paths)
            attached.bus.publish(dataclasses.replace(event, vm=f"{event.vm}{REMOTE}{host}", paths=paths))
            local = share.locate()
            if local is not None and local not in poked:
                poked.add(local)
                self._poke(local, event)

    def _poke(self, root: str, event: Event, attempt: int = 0) -> None:
        """Open for writing and close the file another host wrote, on this host's mount of
        the volume: the VMs' inotify watches see IN_OPEN and IN_CLOSE_WRITE, as for a local
        write. Only a regular file, never following a link, never blocking, nothing written.

        Never while a scanner or a backup here holds a read lease on it (they read a
        file as one version under one, hvfs.services.snapshot): even an open that fails
        with EWOULDBLOCK breaks the lease, and the reader must then read again; one that
        came back again and again would leave a content unjudged. So the poke waits,
        off this thread, for /proc/locks to show no lease on the inode."""
        if event.result != "ok" or not event.flags & _WRITING or not event.paths[0].startswith("/"):
            return
        path = os.path.join(root, event.paths[0].lstrip("/"))
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                return
            if not _leased(st):
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
                os.close(fd)
                with self._lock:
                    self.poked += 1
                return
        except BlockingIOError:
            pass  # a lease taken since: it was broken once, the reader reads again
        except OSError as e:  # gone again, or not ours to open: nothing to tell
            self.poke_failed = f"{path}: {e.strerror}"
            return
        if attempt < POKE_ATTEMPTS:
            threading.Timer(POKE_RETRY, self._poke, (root, event, attempt + 1)).start()
        else:
            self.poke_failed = f"{path}: leased for {POKE_ATTEMPTS * POKE_RETRY:g}s"

    # -- the whole --------------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "redis": self.config.url,
            "volumes": sorted(self.volumes()),
            "published": self.publisher.published,
            "publish_dropped": self.publisher.dropped,
            "publish_buffered": self.publisher.buffered,
            "publish_failures": self.publisher.failures,
            **dataclasses.asdict(self.consumer.statistics()),
            "inotify_poked": self.poked,
            "inotify_failed": self.poke_failed,
            **self.verdicts.statistics(),
        }

    def close(self) -> None:
        self.consumer.close()
        self.publisher.close()


def shares_of(
    vms: Sequence[tuple[str, Sequence[Any]]], locate: Callable[[str], str | None] | None = None
) -> list[Share]:
    """The mounts of shared volumes among ``vms`` ((name, its MountSpecs), as a group
    describes them); ``locate(volume)``: where this manager sees the volume's files."""
    found = []
    for name, mounts in vms:
        for mount in mounts:
            volume = mount.source.options.get("shared")
            if not volume:
                continue
            where = functools.partial(locate, volume) if locate is not None else lambda: None
            found.append(Share(name, mount.target, volume, where))
    return found
