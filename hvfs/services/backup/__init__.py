"""Backup: versions of the files VMs change, saved from the manager, restorable by time.

- ``store.py``: content-addressed SHA-256 blobs, deduplicated across files and VMs.
- ``index.py``: the SQLite index of versions (vm, path, time, size, hash, trigger).
- ``service.py``: BackupService, which the manager calls (see its docstring).
- ``restore.py``: a file or a tree as of a time, into a directory fd.
- ``prune.py``: --keep N and --max-age D, then garbage collection.
- ``cli.py``: ``hvfs backup list|restore|prune`` (add_backup_command).
"""

from hvfs.services.backup.index import BackupIndex, Version
from hvfs.services.backup.prune import Pruned, prune
from hvfs.services.backup.restore import RestoreError, Selection, restore_into, select
from hvfs.services.backup.service import BackupLimits, BackupRule, BackupService, BackupStatistics, Skipped
from hvfs.services.backup.store import BlobStore, CorruptBlob, open_store

__all__ = [
    "BackupIndex",
    "BackupLimits",
    "BackupRule",
    "BackupService",
    "BackupStatistics",
    "BlobStore",
    "CorruptBlob",
    "Pruned",
    "RestoreError",
    "Selection",
    "Skipped",
    "Version",
    "open_store",
    "prune",
    "restore_into",
    "select",
]
