"""Pruning: forget old versions, then delete the blobs no version references any more.

``keep`` keeps the newest N contents of each path. ``max_age`` forgets versions older
than that, except the newest version of a file that still exists: a file unchanged for
a month keeps its one backup however old it is. A removal record with no content left
before it says nothing any more, and goes too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import groupby

from hvfs.services.backup.index import BackupIndex, Version
from hvfs.services.backup.store import BlobStore


@dataclass(frozen=True, slots=True)
class Pruned:
    versions: int
    blobs: int
    bytes: int


def doomed(versions: Iterable[Version], *, keep: int | None, max_age: float | None, now: float) -> set[int]:
    """The ids of the versions to forget (see the module's docstring). Pure: for tests and --dry-run."""
    chosen: set[int] = set()
    for _, group in groupby(sorted(versions, key=lambda v: (v.vm, v.path)), key=lambda v: (v.vm, v.path)):
        rows = sorted(group, key=lambda v: (v.time, v.id), reverse=True)  # newest first
        contents = [v for v in rows if not v.removed]
        if keep is not None:
            chosen.update(v.id for v in contents[keep:])
        if max_age is not None:
            spared = rows[0].id if not rows[0].removed else None
            chosen.update(v.id for v in rows if v.time < now - max_age and v.id != spared)
        left = [v for v in contents if v.id not in chosen]
        oldest = min((v.time, v.id) for v in left) if left else None
        chosen.update(v.id for v in rows if v.removed and (oldest is None or (v.time, v.id) < oldest))
    return chosen


def prune(
    index: BackupIndex,
    store: BlobStore,
    *,
    keep: int | None = None,
    max_age: float | None = None,
    now: float | None = None,
    grace: float = 600.0,
) -> Pruned:
    """Forget versions as ``doomed`` chooses, then collect garbage (blobs unreferenced and
    older than ``grace`` seconds: see store.py) and account for the blobs left. Raises ValueError for keep < 1 or a
    negative max_age, sqlite3.Error and OSError."""
    if keep is not None and keep < 1:
        raise ValueError("--keep must be at least 1 (to forget everything, delete the store)")
    if max_age is not None and max_age < 0:
        raise ValueError("--max-age must not be negative")
    ids = doomed(index.versions(), keep=keep, max_age=max_age, now=time.time() if now is None else now)
    deleted = index.delete(sorted(ids))
    collected = store.collect_garbage(index.hashes(), grace=grace)
    index.reconcile_blobs(dict(store.sizes()))  # what a bounded store counts as taken
    return Pruned(deleted, collected.blobs, collected.bytes)
