"""The one contract of a service: what it declares, and what hvfs asks of it.

A service is one module in ``hvfs/services/plugins/`` that defines ``SERVICE``, a
ServiceKind, and one line in ``hvfs/services/registry.py``. From the declarations alone
hvfs makes the ``hvfs run`` flags, the keys of a project's ``[services]`` table, the
``--stats`` output and the README's table of options. Its life, for each group of VMs
that asks for it (one ``hvfs run``, one project):

1. ``configure(values)``, in the user's process before anything starts: the values of
   its options (typed and checked as each Option's kind says, paths made absolute) to a
   frozen config, or None when the service is not asked for. Raises OptionError.
2. ``needs(config)``: what the service needs of its VMs' filters (Needs).
3. ``open(config)``, still as the user and before any namespace: what can fail on the
   user's input (engines, stores). Raises OptionError. Returns the Service.
4. ``Service.attach(bus, files)``: its hooks, subscribers and close watchers on the bus
   of its VMs (hvfs.api.hooks), and ``files``, the manager's files for it to read.
5. ``Service.statistics()``: a frozen record (a dataclass), in ``--stats`` under its name.
6. ``Service.close()``: once every VM of the group is gone and its events are delivered.

A plugin module is imported by every ``hvfs`` command (for the flags): it imports the
service's implementation inside its functions, never at its top.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the flags of every hvfs command come from here: nothing heavy at import
    from hvfs.api.events import Event
    from hvfs.api.hooks import EventBus, Files


class OptionError(ValueError):
    """A service's options cannot work: one line that names the option and the fix."""


class Kind(enum.Enum):
    """What an option's value is, on the command line and in ``[services]``."""

    FLAG = "flag"  # a switch: --scan; true or false
    TEXT = "text"
    INT = "integer"
    SIZE = "size"  # bytes: 512k, 64m, 1g, or a number of bytes in [services]
    PATH = "path"  # a file the service reads: relative to the working directory, or the project file's
    OUTPUT = "file to write"  # a PATH the service writes to: checked before anything starts
    STORE = "directory"  # a PATH where the service keeps data: only this user may change it


@dataclass(frozen=True)
class Option:
    """One option of a service: ``key`` in ``[services]`` (and in the values that
    ``configure`` gets), ``flag`` on ``hvfs run`` (default: ``--`` and the key with dashes)."""

    key: str
    kind: Kind
    help: str
    flag: str = ""
    many: bool = False  # a repeatable flag; an array in [services]
    metavar: str | None = None
    example: str = ""  # a TEXT value that works, for the help and the tests
    # A STORE: what it is, in messages ("the backup store"), and where the service keeps
    # its data when it is not given.
    noun: str = ""
    default_store: Callable[[], str] | None = None

    @property
    def spelling(self) -> str:
        """The flag, as ``hvfs run`` spells it."""
        return self.flag or "--" + self.key.replace("_", "-")

    @property
    def default(self) -> Any:
        """The value when the option is not given."""
        if self.many:
            return ()
        return False if self.kind is Kind.FLAG else None

    @property
    def relative(self) -> bool:
        """Whether the value is a path, relative to the working directory (a flag) or to
        the project file (in [services])."""
        return self.kind in (Kind.PATH, Kind.OUTPUT, Kind.STORE)


@dataclass(frozen=True)
class Needs:
    """What a service needs of the filters of its VMs."""

    # Reads are trapped (stat, open for reading, exec…): the service sees them.
    trap_reads: bool = False
    # No read is left to the kernel, which reads the path again from the VM's memory;
    # every exec is verified after the fact (an exec tracer); memfds may not be executed.
    judged_reads: bool = False

    def __or__(self, other: Needs) -> Needs:
        return Needs(self.trap_reads or other.trap_reads, self.judged_reads or other.judged_reads)


NO_NEEDS = Needs()


class Service(Protocol):
    """A running service of one group of VMs."""

    name: str

    def attach(self, bus: EventBus, files: Files) -> None:
        """Add its hooks, subscribers and close watchers to ``bus`` (the order of attach
        calls is the order of hooks: the registry's)."""
        ...

    def statistics(self) -> Any:
        """A frozen dataclass: what it did, for ``--stats``."""
        ...

    def close(self) -> None:
        """Release what it holds; the bus is closed already (its events delivered)."""
        ...


@dataclass(frozen=True)
class ServiceKind:
    """A service as the registry knows it: its declaration and how to start it."""

    name: str
    summary: str  # one line, for the README
    options: tuple[Option, ...]
    configure: Callable[[Mapping[str, Any]], Any]  # values by key -> a frozen config, or None: not asked for
    open: Callable[[Any], Service]  # config -> the service, as the user, before any namespace
    needs: Callable[[Any], Needs] = lambda config: NO_NEEDS
    # config, and outputs a client opened as the user (path -> fd, the caller's) -> the
    # service, writing to them rather than opening its paths; None: it opens its own
    adopt: Callable[[Any, Mapping[str, int]], Service] | None = None


def service_event(vm: str, pid: int, operation: str, paths: Sequence[str], result: str) -> Event:
    """An event a service publishes itself (hvfs.services.describe.SERVICE_EVENTS)."""
    from hvfs.api.events import Event

    return Event(time.time(), vm, pid, "", operation, tuple(paths), 0, result, None, 0, "services")
