"""The services of a group of VMs (one ``hvfs run``, one project), from their options to
their end; every front end assembles them the same way::

    options = ServiceOptions.from_args(args)        # or .from_table(table, directory)
    services = ServiceSet(options)                  # as the user, before any namespace
    services.attach(manager)
    ... start_vm(..., bus=services.bus)             # each VM of the group
    services.close()                                # once the group's VMs are gone
    services.statistics()                           # for --stats

The options, their checks and their defaults come from the services' declarations
(hvfs.services.registry); nothing here names a service.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hvfs.private_dirs import check_existing, private_directory
from hvfs.services import registry
from hvfs.services.base import NO_NEEDS, Kind, Needs, Option, OptionError, Service, ServiceKind
from hvfs.spec import UsageError, output_fd_problem, output_file_problem, parse_size

if TYPE_CHECKING:  # the bus (and the API's messages) only in the manager, not in `hvfs run`
    import argparse

    from hvfs.api.hooks import BusStatistics, Files


@dataclass(frozen=True)
class Enabled:
    """A service asked for: its config, the stores it keeps data in (option, path,
    whether it is hvfs's default one), and its options' values as checked (paths absolute; the
    types of TOML): what a front end can send to a manager in another process, which
    parses them again (``ServiceOptions.parse(values, "/")``)."""

    kind: ServiceKind
    config: Any
    stores: tuple[tuple[Option, str, bool], ...] = ()
    values: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class ServiceOptions:
    """The services a group of VMs asked for, checked."""

    enabled: tuple[Enabled, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.enabled)

    @property
    def needs(self) -> Needs:
        """What the services need of the VMs' filters, together."""
        needs = NO_NEEDS
        for enabled in self.enabled:
            needs |= enabled.kind.needs(enabled.config)
        return needs

    def config(self, name: str) -> Any:
        """The config of the service ``name``, None when it is not asked for."""
        return next((e.config for e in self.enabled if e.kind.name == name), None)

    @classmethod
    def parse(cls, given: Mapping[str, object], base: str, outputs: Mapping[str, int] | None = None) -> ServiceOptions:
        """The services that the options ``given`` (by key: text, numbers, booleans and
        lists, from flags or TOML) ask for; relative paths are ``base``'s. Checks
        everything now, before any VM starts, and decides default directories while
        this is still the user's own process. ``outputs``: the files a client opened as
        the user (path -> fd), checked by their fd; a path they lack is not opened here
        (the manager may not open what the user named with rights the user lacks): the
        service that writes it adopts the fd or writes nothing. Raises UsageError naming
        what is wrong."""
        enabled = []
        for kind in registry.SERVICES:
            values = {option.key: _value(option, given.get(option.key), base, outputs) for option in kind.options}
            stores = []
            for option in kind.options:
                if option.kind is Kind.STORE and option.default_store is not None:
                    default = os.path.abspath(option.default_store())
                    values[option.key] = values[option.key] or default
                    stores.append((option, values[option.key], values[option.key] == default))
            try:
                config = kind.configure(values)
            except OptionError as e:
                raise UsageError(str(e)) from None
            if config is not None:
                enabled.append(Enabled(kind, config, tuple(stores), values))
        return cls(tuple(enabled))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServiceOptions | None:
        """The services ``hvfs run``'s flags (registry.add_run_flags) ask for; None: none."""
        given = {}
        for _, option in registry.options():
            value = getattr(args, registry.dest(option))
            if value is not None and value is not False and value != []:  # 0 is a value: a seed
                given[option.key] = value
        if not given:
            return None
        options = cls.parse(given, os.getcwd())
        return options if options.active else None

    @classmethod
    def from_table(
        cls, table: Mapping[str, Any], directory: str, outputs: Mapping[str, int] | None = None
    ) -> ServiceOptions:
        """A project's ``[services]`` table; relative paths are the project file's
        (``outputs`` as parse's)."""
        known = registry.keys()
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise UsageError(f"services: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return cls.parse(table, directory, outputs)


def check_stores(options: ServiceOptions) -> None:
    """Check, in the client, what already exists of every store's path with the host's
    own uids: the rootless manager, inside its user namespace, sees root and every other
    user as the same unmapped owner (hvfs.private_dirs.trust_unmapped_owners)."""
    for enabled in options.enabled:
        for option, path, ours in enabled.stores:
            check_existing(path, option.noun or option.key, f"give another with {option.spelling}", ours=ours)


def _value(option: Option, raw: object, base: str, outputs: Mapping[str, int] | None) -> Any:
    """The value of ``option`` as given (None: not given), typed as its kind says."""
    if raw is None or raw == "":
        return option.default
    if not option.many:
        return _one(option, raw, base, outputs)
    if not isinstance(raw, list | tuple):
        raise UsageError(f'{_name(option)}: {raw!r} is not a list; give an array, as ["…"], or repeat the flag')
    return tuple(_one(option, item, base, outputs) for item in raw)


def _name(option: Option) -> str:
    return option.key.replace("_", "-")


def _one(option: Option, raw: object, base: str, outputs: Mapping[str, int] | None) -> Any:
    kind = option.kind
    if kind is Kind.FLAG:
        if not isinstance(raw, bool):
            raise UsageError(f"{_name(option)}: {raw!r} is not true or false")
        return raw
    if kind is Kind.SIZE:
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            return raw
        if isinstance(raw, str):
            return parse_size(raw, _name(option))
        raise UsageError(f"{_name(option)}: {raw!r} is not a size; use e.g. 64m, 1g or 512k")
    if kind is Kind.INT:
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise UsageError(f"{_name(option)}: {raw!r} is not an integer")
        return raw
    if not isinstance(raw, str):
        raise UsageError(f"{_name(option)}: {raw!r} is not a {kind.value}; give a string")
    if not option.relative:
        return raw
    path = os.path.normpath(os.path.join(base, raw))
    if kind is Kind.OUTPUT:
        if outputs is None:
            problem = output_file_problem(path)
        else:
            problem = output_fd_problem(outputs[path]) if path in outputs else None
        if problem:
            raise UsageError(f"{option.spelling} {path} {problem}")
    return path


def _first_missing(path: str) -> str:
    """The outermost directory on the way to ``path`` (itself included) that does not exist."""
    while not os.path.exists(os.path.dirname(path)):
        path = os.path.dirname(path)
    return path


class ServiceSet:
    """The services of one group of VMs, on one bus: each VM of the group names it (its
    VmContext's ``bus``), so VMs of other groups on the same manager never see them."""

    def __init__(self, options: ServiceOptions, given: Mapping[str, int] | None = None) -> None:
        """Open every service asked for, as the user, before any namespace: a store
        someone else can write in could hand back their files as this user's backups or
        quarantine. ``given``: outputs the client opened as the user, by path (the
        caller's fds: a service that takes one keeps a copy, and so does ``kept``, for
        the VMs' shims to hand to a manager that takes the group back); with it, a
        service never opens its output path itself. Raises UsageError (and closes what
        it opened)."""
        from hvfs.api.hooks import EventBus

        self.options = options
        self.bus = EventBus()
        self.services: list[Service] = []
        self._files: Files | None = None
        self._closed = False
        self._bus_statistics: BusStatistics | None = None
        self.kept = {path: os.dup(fd) for path, fd in (given or {}).items()}
        made: list[str] = []  # stores made here: a service that cannot start leaves none behind
        try:
            for enabled in options.enabled:
                for option, path, ours in enabled.stores:
                    fix = f"give another with {option.spelling}"
                    if not os.path.exists(path):
                        made.append(_first_missing(path))  # with the parents made for it
                    private_directory(path, option.noun or option.key, fix, ours=ours)
                kind, config = enabled.kind, enabled.config
                adopted = kind.adopt(config, given) if kind.adopt is not None and given is not None else None
                self.services.append(adopted or kind.open(config))
        except BaseException as e:
            self.close()
            for path in reversed(made):
                import shutil  # only here: `hvfs run` checks the options, the manager opens the services

                shutil.rmtree(path, ignore_errors=True)
            if isinstance(e, OptionError):
                raise UsageError(str(e)) from None
            raise

    @property
    def needs(self) -> Needs:
        return self.options.needs

    def attach(self, files: Files) -> None:
        """Put the services on the bus, in the registry's order (the order of hooks), with
        ``files`` (the manager) to read VMs' files from."""
        self._files = files
        for service in self.services:
            service.attach(self.bus, files)

    def statistics(self) -> dict[str, Any]:
        """For ``--stats``: events lost by subscribers, and each service's own record."""
        bus = self._bus_statistics or self.bus.statistics()
        stats: dict[str, Any] = {"events_dropped": bus.dropped}
        for service in self.services:
            stats[service.name] = dataclasses.asdict(service.statistics())
        return stats

    def close(self) -> None:
        """Deliver the closes and events still due, then close the services; calling it
        again does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._files is not None:
            self._files.wait_closes()  # first: the closes it still has to report use the services
        # Kept, as a closed bus has no subscribers to count; its VMs are gone, so no more
        # events are published, and none dropped.
        self._bus_statistics = self.bus.statistics()
        self.bus.close()
        for service in reversed(self.services):
            service.close()
        for fd in self.kept.values():
            os.close(fd)
        self.kept = {}
