"""The decisions the seccomp driver's C loop takes without Python (hvfs/_native/hotpath.c
``serve``): a table handed to it at start, one rule per syscall number.

A rule is the driver's own answer where it answers without asking the manager, so the C
loop answers exactly what ``SeccompDriver._serve`` would, and no service loses a call it
sees today (the manager never sees these calls on either path). A rule decides only on
the syscall number and its registers, which the VM can no longer change once it trapped:

* a number the driver has no decoder for (and that is not a credential call) is answered
  ENOSYS (``_serve``'s KeyError: a filter of another manager may trap what this one
  does not serve);
* a decoder that raises ``Passthrough`` on a plain argument, before it reads anything,
  is a CONTINUE under that condition (``CONTINUE_IF_ARG``; tests/test_compiled.py checks
  each against its decoder);
* a ``prctl`` whose option keeps credentials (``PRCTL_KEEPS_CREDENTIALS``) is continued
  without a bump of the credential cache, as ``credcache.before_change`` continues it;
* a set*id, setgroups or capset (``CREDENTIAL_CALLS``) is continued after a bump of the
  credential generation (``BUMP_CONTINUE``), all that ``credcache.before_change`` does for
  one: it changes its own thread's credentials only, and that thread is inside the call
  until it has. Issue 14: GNU make calls setresuid and setresgid in every child it starts
  (restoring the effective ids it already has), 42 hand-offs to Python in W4's build;
* an exec, in a VM whose manager checks none (not strict), is continued when its caller
  is its process's leader (``EXEC_IF_LEADER``), proved by the C loop as
  ``credcache.before_change`` proves it, after a bump of the credential generation
  (``CredWatch.bumps``) as that function bumps it. The exec of another thread, which takes
  over its leader's pid and must distrust the kept credentials, is Python's. Issue 14: a
  run's command is an exec, and handing it to Python made it wait for the GIL while the
  manager was still answering the run's start;
* with ``served_stat``, the stat family of a path, read-only opens, readlink and access
  (``SERVED``, the call's index in ``served_stat.CALLS``) are served in C where they can be
  (hvfs/intercept/served_stat.py) and handed to Python otherwise.

Everything else goes to Python: umask and the other prctl options (the cache generation is
bumped there before they continue: hvfs/intercept/credcache.py), an exec the manager
checks (strict) or the C loop cannot prove its caller's leader, every call the manager
decides (its hooks, audit and ``hvfs diff`` see it), and numbers the driver is told to
keep (a test's ``HVFS_TEST_DIE_AFTER_RECV``).
"""

# Annotations evaluated, not ``from __future__ import annotations``: a NamedTuple's string
# annotations are compiled one by one at import (tests/test_startup.py).

import errno
import functools
import os
import struct
from collections.abc import Collection
from typing import NamedTuple

from hvfs import _native as native
from hvfs import deferred
from hvfs._sys import notify
from hvfs._sys.abi import PRCTL_KEEPS_CREDENTIALS
from hvfs.intercept.arch import Arch
from hvfs.intercept.decoders.context import DecodeFunction
from hvfs.intercept.filter import syscall_numbers
from hvfs.intercept.inflight import InflightTable
from hvfs.intercept.served_stat import CALLS, WRITE_CALLS, ServedStat
from hvfs.intercept.syscalls import BY_NAME, CREDENTIAL_CALLS, Handling

log = deferred.logger("hvfs.driver")

# hotpath.c's RULE_*
PYTHON, CONTINUE, ERRNO, CONTINUE_IF_IN, CONTINUE_IF_IN32, EXEC_IF_LEADER, SERVED, BUMP_CONTINUE = range(8)
RULE = struct.Struct("<BBHi")  # hotpath.c's struct rule: kind, argument, count, errno or first value
VALUE = struct.Struct("<Q")
COUNTS = struct.Struct("<QQQ")  # hotpath.c's counts: continued, answered with an errno, handed to Python

# Decoders that let a call continue on one plain argument being zero, before reading
# anything (name: argument index).
CONTINUE_IF_ARG = {
    "fanotify_mark": 4,  # a NULL pathname marks the dirfd itself (decoders/query.py)
}


@functools.cache  # the same for every VM of ``arch``: made once, shared, never changed
def credential_calls(arch: Arch) -> dict[int, str]:
    """The numbers of the calls that may change their caller's credentials (``Handling.CREDS``
    and ``EXEC``) on ``arch``, with their names (one dict per architecture, shared: read it
    only)."""
    changing = (Handling.CREDS, Handling.EXEC)
    return {
        nr: name
        for nr, name in syscall_numbers(arch).items()
        if (entry := BY_NAME.get(name)) is not None and entry.handling in changing
    }


@functools.cache  # the same for every VM of ``arch``: made once, shared, never changed
def decoders_for(arch: Arch) -> dict[int, DecodeFunction]:
    """The decoder of each syscall number the driver serves on ``arch``, from the table
    (one dict per architecture, shared: read it only)."""
    decoders: dict[int, DecodeFunction] = {}
    for nr, name in syscall_numbers(arch).items():
        entry = BY_NAME.get(name)
        if entry is not None and entry.decoder is not None:
            decoders[nr] = entry.decoder.decode
    return decoders


class Rule(NamedTuple):
    kind: int
    arg: int = 0
    values: tuple[int, ...] = ()  # CONTINUE_IF_IN(32): continued when the argument is one of them
    errno: int = 0  # ERRNO


def rules(
    arch: Arch, *, python: Collection[int] = (), checks_exec: bool = True, served_stat: bool = False
) -> dict[int, Rule]:
    """Each syscall number of ``arch`` the C loop decides itself, at least in part.
    Numbers in ``python`` are always handed to Python, and execs too where the manager
    ``checks_exec`` (``credcache.before_change``'s: strict VMs). ``served_stat`` where the
    manager does not check execs (the default profile): its ``WRITE_CALLS`` alone (write-opens,
    unlinks, mkdirs, rmdirs and metadata changes: served_write.h and the headers beside it; C
    adds EXEC_IF_LEADER's bumps to the generation it checks)."""
    served = CALLS if checks_exec else {name: CALLS[name] for name in WRITE_CALLS}
    decided: dict[int, Rule] = {}
    for nr, name in syscall_numbers(arch).items():
        entry = BY_NAME.get(name)
        if nr in python:
            continue
        if served_stat and name in served:
            decided[nr] = Rule(SERVED, served[name])
        elif name == "prctl":
            decided[nr] = Rule(CONTINUE_IF_IN32, 0, tuple(sorted(PRCTL_KEEPS_CREDENTIALS)))
        elif entry is not None and entry.handling is Handling.EXEC and not checks_exec:
            decided[nr] = Rule(EXEC_IF_LEADER)
        elif name in CREDENTIAL_CALLS:
            decided[nr] = Rule(BUMP_CONTINUE)
        elif entry is not None and entry.handling in (Handling.CREDS, Handling.EXEC):
            continue  # credcache.before_change, in Python
        elif entry is None or entry.decoder is None:
            decided[nr] = Rule(ERRNO, errno=errno.ENOSYS)
        elif name in CONTINUE_IF_ARG:
            decided[nr] = Rule(CONTINUE_IF_IN, CONTINUE_IF_ARG[name], (0,))
    return decided


def table(decided: dict[int, Rule]) -> tuple[bytes, bytes]:
    """The rules as hotpath.c reads them, indexed by number (PYTHON where none is given),
    and the values they test arguments against."""
    size = max(decided, default=-1) + 1
    packed = bytearray(RULE.size * size)
    values: list[int] = []
    for nr, rule in decided.items():
        value = rule.errno if rule.kind == ERRNO else len(values)
        RULE.pack_into(packed, nr * RULE.size, rule.kind, rule.arg, len(rule.values), value)
        values += rule.values
    return bytes(packed), b"".join(VALUE.pack(value) for value in values)


@functools.cache  # the same for every VM of ``arch``: packed once, shared (bytes)
def packed(
    arch: Arch, python: tuple[int, ...] = (), checks_exec: bool = True, served_stat: bool = False
) -> tuple[bytes, bytes]:
    """``table(rules(arch, python=python, checks_exec=checks_exec, served_stat=served_stat))``, once per process."""
    return table(rules(arch, python=python, checks_exec=checks_exec, served_stat=served_stat))


class Loop:
    """One driver's receive loop: in C where hvfs/_native is built, answering what the
    rules decide, else the Python receive. One worker at a time receives (the driver's
    receiver), so the counts need no lock."""

    def __init__(
        self, vm: str, tables: tuple[bytes, bytes], die_at: int | None = None, bumps: bytearray | None = None
    ) -> None:
        self.vm = vm  # for the log; a spare's driver is renamed when bound
        self._die_at = die_at  # tests only: the manager dies on receiving it, before its record (driver.py)
        self.tables = tables  # ``packed``'s; replaced when stats are served in C (read at each receive)
        self._counts = bytearray(COUNTS.size)
        self._bumps = bumps  # the credential generation EXEC_IF_LEADER and BUMP_CONTINUE bump (``CredWatch.bumps``)
        self.served: ServedStat | None = None
        self._watch = bytearray()

    def serve_stats(self, tables: tuple[bytes, bytes], served: ServedStat, watch: bytearray) -> None:
        """From the next receive on, serve stats in C (``served_stat``): ``tables`` with the
        SERVED rules, the VM's ``served``, and the driver's ``CredWatch.shared``."""
        self.served, self._watch = served, watch
        self.tables = tables

    def receive(
        self, listener: int, stop: int, inflight: InflightTable | None, slot: int, published: bytearray | None = None
    ) -> notify.Received | None:
        """The next request that needs Python, recorded as received in ``slot`` of the
        in-flight table, or None once ``stop`` is readable or the VM is gone. Each request
        answered in C meanwhile is recorded in that slot while it is answered.
        ``published``: the receiving worker's ``KnownCredentials.published``, whose
        threads C may serve stats for (``serve_stats``)."""
        hotpath = native.hotpath
        recorded = False
        if hotpath is None:
            notif = notify.receive_or_stop(listener, stop)
        else:
            memory, slot_at, last_at = inflight.place(slot) if inflight is not None else (None, 0, 0)
            recorded = self._die_at is None
            while True:
                try:
                    rules, values = self.tables
                    served = self.served
                    stat = None if served is None or published is None else served.argument(self._watch, published)
                    got = hotpath.serve(
                        listener, stop, rules, values, memory, slot_at, last_at, self._counts, recorded,
                        self._bumps, stat,
                    )  # fmt: skip
                except OSError as e:
                    if e.filename != "NOTIF_SEND":
                        raise
                    log.error("VM %s: a request answered in C could not be answered: %s", self.vm, e)
                    continue
                notif = None if got is None else notify.Received(*got)
                break
        if notif is not None:
            if notif.nr == self._die_at:
                os._exit(9)
            if inflight is not None and not recorded:
                inflight.record(slot, notif.raw)
        return notif

    def counted(self) -> dict[str, int]:
        """The C loop's counts (``--stats``: ``compiled``)."""
        continued, answered, handed = COUNTS.unpack_from(self._counts)
        counted = {"continued": continued, "answered": answered, "handed_to_python": handed}
        if self.served is not None:  # of which stats served (answered or continued)
            counted |= {f"{kind.__name__.lower()}_{how}": n for (kind, how), n in self.served.counted().items()}
            sink = getattr(self.served.audit[0], "sink", None) if self.served.audit is not None else None
            if sink is not None:  # events its bus's ring took from C without the GIL (ring.h)
                counted["audit_detached"] = sink.recorded
        return counted
