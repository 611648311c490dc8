"""Backup (hvfs.services.backup): versions of the files VMs change."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hvfs.services.base import Kind, Option, OptionError, Service, ServiceKind
from hvfs.services.datadir import backup_directory

if TYPE_CHECKING:
    from hvfs.services.backup.service import BackupRule


@dataclass(frozen=True)
class BackupConfig:
    """The backup service's options."""

    rules: tuple[BackupRule, ...]
    store: str
    max_file: int | None  # None: the service's default
    max_store: int | None  # None: bounded by the file system's margin only
    shared: bool = False  # hosts share the store; also assumed on a network or FUSE file system


def _configure(values: Mapping[str, Any]) -> BackupConfig | None:
    max_file, max_store = values["backup_max_file"], values["backup_max_store"]
    shared = bool(values.get("backup_store_shared"))
    if not values["backup"]:
        if max_file is not None or max_store is not None:
            raise OptionError(
                "backup-max-file and backup-max-store bound a backup: add --backup GLOB (or backup = [...])"
            )
        if shared:
            raise OptionError("backup-store-shared is about a backup: add --backup GLOB (or backup = [...])")
        return None
    from hvfs.services.backup.service import BackupRule

    try:
        rules = tuple(BackupRule.parse(text) for text in values["backup"])
    except ValueError as e:
        raise OptionError(f"--backup: {e}") from None
    return BackupConfig(rules, values["backup_store"], max_file, max_store, shared)


def _open(config: BackupConfig) -> Service:
    from hvfs.services.backup.hooks import Backup

    return Backup(config)


SERVICE = ServiceKind(
    name="backup",
    summary="keep versions of the files VMs change, restorable by time (hvfs backup)",
    options=(
        Option(
            "backup",
            Kind.TEXT,
            "keep versions of files matching GLOB (a VM path; VM-GLOB:/PATH-GLOB for some VMs only)",
            many=True,
            metavar="GLOB",
            example="/data/*.db",
        ),
        Option(
            "backup_store",
            Kind.STORE,
            "where versions are kept (default: backup/ in the data directory)",
            noun="the backup store",
            default_store=backup_directory,
        ),
        Option(
            "backup_store_shared",
            Kind.FLAG,
            "managers on several hosts share the store: lock its index around each use "
            "(default: so when the store is on a network or FUSE file system, as JuiceFS or NFS)",
        ),
        Option("backup_max_file", Kind.SIZE, "skip versions of files larger than SIZE (default: 1g)"),
        Option(
            "backup_max_store",
            Kind.SIZE,
            "skip new versions once the store holds SIZE (default: unbounded, "
            "but never past a margin of free space on its file system: 5% of it, at most 1g)",
        ),
    ),
    configure=_configure,
    open=_open,
)
