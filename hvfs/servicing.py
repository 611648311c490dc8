"""The services of one manager, built from ``hvfs run`` options or a project's
``[services]`` table, and attached to the manager's event bus.

Hooks run before a request is answered, in this order: faults (a test may fail an open
before anything looks at it), the scanner (deny an infected file), the backup's save of
what an unlink or a replacing rename is about to destroy. Subscribers get every request's
event after the answer: the audit log, and the backup's bookkeeping of removals and
renames. Closes of written files come from the manager's close watcher: the backup saves
the version, the scanner fills its verdict cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import posixpath
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hvfs import api
from hvfs.manager.manager import Manager
from hvfs.private_dirs import private_directory
from hvfs.services.audit import AuditLog
from hvfs.services.backup.service import BackupLimits, BackupRule, BackupService, Skipped
from hvfs.services.datadir import backup_directory, quarantine_directory
from hvfs.services.describe import BACKUP, FAULT, OPERATIONS, QUARANTINE
from hvfs.services.events import Event, EventBus
from hvfs.services.faults import (
    FaultInjector,
    FaultRule,
    FaultSyntaxError,
    InjectedFault,
    load_fault_rules,
    parse_fault,
)
from hvfs.services.scan.engines import BuiltinEngine, Engine, EngineUnavailable, load_blocklist
from hvfs.services.scan.hook import Detected, Located, ScanHook
from hvfs.services.scan.quarantine import Quarantine
from hvfs.services.scan.scanner import Scanner
from hvfs.spec import UsageError, output_file_problem, parse_size

log = logging.getLogger("hvfs.services")
# Operations that are reads: a rule on one of them needs reads trapped to see them.
READ_OPERATIONS = frozenset({"open", "read", "stat", "statx", "access", "readlink", "exec", "chdir", "lookup", "*"})


@dataclass(frozen=True)
class ServiceOptions:
    audit: str | None = None
    audit_reads: bool = False
    faults: tuple[str, ...] = ()
    fault_file: str | None = None
    fault_seed: int | None = None
    backup: tuple[str, ...] = ()
    backup_store: str | None = None
    backup_max_file: int | None = None  # None: the service's default
    backup_max_store: int | None = None  # None: bounded by the file system's margin only
    scan: bool = False
    blocklist: str | None = None
    yara: tuple[str, ...] = ()
    clamd: str | None = None
    quarantine: str | None = None
    rules: tuple[FaultRule, ...] = field(default=(), compare=False)

    @classmethod
    def parse(cls, **given: Any) -> ServiceOptions:
        """Check everything now, before any VM starts; UsageError names what is wrong.
        Default directories are decided here, while this is still the user's own process."""
        options = cls(**given)
        rules: list[FaultRule] = []
        try:
            rules += [parse_fault(text) for text in options.faults]
            if options.fault_file:
                rules += load_fault_rules(options.fault_file)
        except (FaultSyntaxError, OSError) as e:
            raise UsageError(f"--fault: {e}") from None
        scanning = options.scan or bool(options.yara or options.blocklist or options.clamd)
        max_file = _size(options.backup_max_file, "backup-max-file")
        max_store = _size(options.backup_max_store, "backup-max-store")
        if not options.backup and (max_file is not None or max_store is not None):
            raise UsageError(
                "backup-max-file and backup-max-store bound a backup: add --backup GLOB (or backup = [...])"
            )
        problem = output_file_problem(options.audit) if options.audit else None
        if problem:
            raise UsageError(f"--audit {options.audit} {problem}")
        return dataclasses.replace(
            options,
            scan=scanning,
            backup_max_file=max_file,
            backup_max_store=max_store,
            rules=tuple(rules),
            backup_store=os.path.abspath(options.backup_store or backup_directory()) if options.backup else None,
            quarantine=os.path.abspath(options.quarantine or quarantine_directory()) if scanning else None,
        )

    @classmethod
    def from_table(cls, table: Mapping[str, Any], directory: str) -> ServiceOptions:
        """A project's ``[services]`` table; relative paths are the project file's."""

        def path(value: object) -> str | None:
            return os.path.normpath(os.path.join(directory, str(value))) if value else None

        known = {"audit", "audit_reads", "faults", "fault_file", "fault_seed", "backup", "backup_store",
                 "backup_max_file", "backup_max_store", "scan", "blocklist", "yara", "clamd", "quarantine"}  # fmt: skip
        unknown = sorted(set(table) - known)
        if unknown:
            raise UsageError(f"services: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return cls.parse(
            audit=path(table.get("audit")),
            audit_reads=bool(table.get("audit_reads", False)),
            faults=tuple(table.get("faults", ())),
            fault_file=path(table.get("fault_file")),
            fault_seed=table.get("fault_seed"),
            backup=tuple(table.get("backup", ())),
            backup_store=path(table.get("backup_store")),
            backup_max_file=table.get("backup_max_file"),
            backup_max_store=table.get("backup_max_store"),
            scan=bool(table.get("scan", False)),
            blocklist=path(table.get("blocklist")),
            yara=tuple(p for p in (path(y) for y in table.get("yara", ())) if p),
            clamd=table.get("clamd"),
            quarantine=path(table.get("quarantine")),
        )

    @property
    def active(self) -> bool:
        return bool(self.audit or self.rules or self.backup or self.scan)

    @property
    def trap_reads(self) -> bool:
        """Whether the filter must trap reads: a scanner checks files on open and exec, a
        read audit records them, a fault rule on a read must see it."""
        return self.scan or self.audit_reads or any(rule.op in READ_OPERATIONS for rule in self.rules)


class Services:
    def __init__(self, options: ServiceOptions) -> None:
        self.options = options
        self.bus = EventBus()
        self.audit: AuditLog | None = None
        self.backup: BackupService | None = None
        self.scanner: Scanner | None = None
        self.faults: FaultInjector | None = None
        self.manager: Manager | None = None
        # Engines first: one that cannot be set up (no clamd) is a usage error, and a usage
        # error leaves no store behind.
        self._engines = self._scan_engines() if options.scan else []
        # Made and checked here, as the user, before any namespace: a store someone else
        # can write in could hand back their files as this user's backups or quarantine.
        if options.backup_store:
            ours = options.backup_store == backup_directory()
            private_directory(options.backup_store, "the backup store", "give another with --backup-store", ours=ours)
        if options.quarantine:
            ours = options.quarantine == quarantine_directory()
            private_directory(options.quarantine, "the quarantine", "give another with --quarantine", ours=ours)
        self._finished = False

    def _scan_engines(self) -> list[Engine]:
        options = self.options
        engines: list[Engine] = []
        try:
            engines.append(BuiltinEngine(load_blocklist(options.blocklist) if options.blocklist else None))
            if options.yara:
                from hvfs.services.scan.yara_engine import YaraEngine

                engines.append(YaraEngine(options.yara))
            if options.clamd:
                from hvfs.services.scan.clamd import ClamdEngine

                engines.append(ClamdEngine(options.clamd))
        except (EngineUnavailable, OSError, ValueError) as e:
            raise UsageError(f"--scan: {e}") from None
        return engines

    def attach(self, manager: Manager) -> None:
        """Wire the services into ``manager``, whose bus must be ``self.bus``."""
        assert manager.bus is self.bus
        self.manager = manager
        options = self.options
        if options.rules:
            self.faults = FaultInjector(options.rules, seed=options.fault_seed, report=self._fault_event)
            self.bus.add_hook(self.faults)
        if options.scan:
            assert options.quarantine is not None
            self.scanner = Scanner(self._engines)
            self.bus.add_hook(
                ScanHook(self.scanner, Quarantine(options.quarantine), self._locate, report=self._detected)
            )
        if options.backup:
            assert options.backup_store is not None
            limits = BackupLimits(max_store=options.backup_max_store)
            if options.backup_max_file is not None:
                limits = dataclasses.replace(limits, max_file=options.backup_max_file)
            rules = [BackupRule.parse(g) for g in options.backup]
            self.backup = BackupService.open(options.backup_store, rules, limits=limits, report=self._backup_skipped)
            self.bus.add_hook(_BackupHook(self))
            self.bus.subscribe(self._backup_bookkeeping, name="backup")
        if options.audit:
            self.audit = AuditLog(options.audit)
            self.audit.attach(self.bus)
        if options.backup or options.scan:
            manager.watch_closes(self._closed)

    def _locate(self, vm: str, path: api.VmPath) -> Located | None:
        assert self.manager is not None
        found = self.manager.locate_file(vm, path)
        return None if found is None else Located(*found)

    @contextlib.contextmanager
    def _opened(self, vm: str, path: str | api.VmPath) -> Iterator[int | None]:
        """The manager's read-only fd on the regular file ``path`` of ``vm``, or None."""
        assert self.manager is not None
        fd = self.manager.open_file(vm, path)
        try:
            yield fd
        finally:
            if fd is not None:
                os.close(fd)

    def _closed(self, vm: str, path: str) -> None:
        """A VM closed a file it wrote: save a version, scan it (for the verdict cache)."""
        with self._opened(vm, path) as fd:
            if fd is None:
                return
            if self.backup is not None:
                self.backup.on_closed_after_write(vm, path, fd)
            if self.scanner is not None:
                self.scanner.check(vm, path, fd)

    def save_before_remove(self, vm: str, path: api.VmPath, *, replaced: bool, deadline: float) -> None:
        """Save the file a request is about to destroy, giving up at ``deadline`` (monotonic)."""
        assert self.backup is not None
        normal = posixpath.normpath(str(path))
        if not self.backup.matches(vm, normal):
            return
        with self._opened(vm, path) as fd:
            if fd is not None:
                self.backup.before_remove(vm, normal, fd, replaced=replaced, deadline=deadline)

    def _backup_bookkeeping(self, event: Event) -> None:
        """After the answer: removals and renames, as the backup index must know them."""
        assert self.backup is not None
        if event.result != "ok":
            return
        if event.operation == "unlink":
            self.backup.after_remove(event.vm, event.paths[0])
        elif event.operation == "rename" and len(event.paths) == 2:
            old, new = event.paths
            with self._opened(event.vm, new) as fd:
                if fd is None:  # a directory, or gone again
                    self.backup.on_directory_renamed(event.vm, old, new)
                else:
                    self.backup.on_renamed(event.vm, old, new, fd)

    def _fault_event(self, fault: InjectedFault) -> None:
        if fault.errno is None:  # a latency rule: the request's own event shows no trace of it
            self._publish(fault.vm, fault.pid, FAULT, fault.paths, f"delay {fault.delay * 1000:.0f}ms")

    def _backup_skipped(self, skipped: Skipped) -> None:
        self._publish(skipped.vm, 0, BACKUP, (skipped.path,), skipped.reason)

    def _detected(self, detected: Detected) -> None:
        if detected.record is not None:  # the scanner already said what it found
            log.warning("%s of VM %s quarantined as %s", detected.path, detected.vm, detected.record.id)
            self._publish(detected.vm, 0, QUARANTINE, (detected.path,), "EACCES")

    def _publish(self, vm: str, pid: int, operation: str, paths: Sequence[str], result: str) -> None:
        self.bus.publish(Event(time.time(), vm, pid, "", operation, tuple(paths), 0, result, None, 0, "services"))

    def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"events_dropped": self.bus.statistics().dropped}
        if self.faults is not None:
            stats["faults_injected"] = self.faults.statistics().injected
        if self.backup is not None:
            stats["backup"] = dataclasses.asdict(self.backup.statistics())
        if self.scanner is not None:
            stats["scan"] = dataclasses.asdict(self.scanner.statistics())
        return stats

    def close(self) -> None:
        """Finish the services' work and release them; calling it again does nothing."""
        if self._finished:
            return
        self._finished = True
        if self.manager is not None:
            self.manager.close()  # first: the closes it still has to report use the backup
        self.bus.close()
        if self.audit is not None:
            self.audit.close()
        if self.backup is not None:
            self.backup.close()


def _size(value: object, what: str) -> int | None:
    """A size option as given: None, bytes, or text as ``512m`` and ``1g``. Raises UsageError."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    if isinstance(value, str):
        return parse_size(value, what)
    raise UsageError(f"{what}: {value!r} is not a size; use e.g. 64m, 1g or 512k")


class _BackupHook:
    """Implements Hook: before an unlink, a rename over a file or an open that truncates
    it, save what disappears."""

    name = "backup"

    def __init__(self, services: Services) -> None:
        self.services = services

    def before(self, vm: str, request: api.Request) -> api.Response | None:
        services = self.services
        assert services.backup is not None
        # One budget for the request, however many files it destroys: the VM waits for it.
        deadline = time.monotonic() + services.backup.limits.sync_seconds
        if isinstance(request, api.Open) and request.flags & os.O_TRUNC and request.flags & os.O_ACCMODE:
            # The content is about to go: its close may not have been handled yet.
            services.save_before_remove(vm, request.path, replaced=True, deadline=deadline)
        elif isinstance(request, api.Unlink):
            services.save_before_remove(vm, request.path, replaced=False, deadline=deadline)
        elif isinstance(request, api.Rename):
            services.save_before_remove(vm, request.new, replaced=True, deadline=deadline)
            if request.flags & 2:  # RENAME_EXCHANGE: the other side is replaced too
                services.save_before_remove(vm, request.old, replaced=True, deadline=deadline)
        return None


assert {"open", "read"} <= OPERATIONS  # the rule names READ_OPERATIONS relies on
