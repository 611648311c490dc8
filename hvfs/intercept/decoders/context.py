"""What every decoder works with: the call being decoded, what it answers, and the record
that binds a decoder to the request types it builds.

A decoder is ``decode(context, args) -> (request, output)``: it unpacks the six raw
arguments, reads what they point to through the context (and nothing else), and returns
an HVFS API request, plus where the answer's bytes go in the caller's memory, if any.
Every decision is the manager's. A malformed call raises ``CallError``, answered as the
kernel would answer it; a call with nothing to decide raises ``Passthrough``.
"""

# Annotations evaluated, not ``from __future__ import annotations``: a NamedTuple's string
# annotations are compiled one by one at import (tests/test_startup.py).

import errno
import os
import struct
from collections.abc import Callable
from typing import NamedTuple

from hvfs import api
from hvfs._sys.abi import AT_EMPTY_PATH, AT_FDCWD, INT_MAX, SIGN64, U32_MASK
from hvfs.intercept.decoders import magic
from hvfs.intercept.decoders.tracee import CallError, Tracee

Args = tuple[int, int, int, int, int, int]


class Passthrough(Exception):
    """Nothing to decide: let the call continue without asking the manager."""


class Output(NamedTuple):
    """Where a result goes in the caller's memory (a NamedTuple: cheaper to define than a
    dataclass, and the driver imports this at every start)."""

    kind: str  # "stat", "statx", "buffer", or "msg_len" (sendmmsg's count of the one message sent)
    address: int
    size: int = 0


Decoded = tuple["api.Request", Output | None]  # a name, not the class: the messages load with a first request


def signed32(value: int) -> int:
    """An int argument: the low 32 bits of its register, as a signed number."""
    value &= U32_MASK
    return value - (U32_MASK + 1) if value > INT_MAX else value


def unsigned32(value: int) -> int:
    """An unsigned int, uid_t or gid_t argument: the low 32 bits of its register."""
    return value & U32_MASK


def signed64(value: int) -> int:
    """A loff_t or ssize_t argument: its register as a signed number."""
    return value - (SIGN64 << 1) if value & SIGN64 else value


def check_flags(flags: int, allowed: int) -> int:
    """A flags argument, EINVAL if it has a bit the call does not know (checked before any
    lookup, as the kernel checks it)."""
    flags &= U32_MASK
    if flags & ~allowed:
        raise CallError(errno.EINVAL)
    return flags


class Context:
    """One call being decoded: the tracee it came from and the VM it runs in."""

    __slots__ = ("tracee", "vm")

    def __init__(self, tracee: Tracee, vm: str) -> None:
        self.tracee = tracee
        self.vm = vm

    def caller(self) -> "api.Caller":
        # Every served request resolves paths, and search permission depends on who asks.
        return self.tracee.caller(self.vm)

    def path(self, address: int, dirfd: int = AT_FDCWD) -> "api.VmPath":
        """The path at ``address``, from ``dirfd``, with the caller's own /proc links
        replaced by what they name."""
        return self.vm_path(signed32(dirfd), self.tracee.read_path(address))

    def vm_path(self, dirfd: int, name: str, *, magic_links: bool = True) -> "api.VmPath":
        """``name`` from ``dirfd``; the caller's own /proc/self links replaced by what they
        name, unless ``magic_links`` is False (the call refuses to follow them)."""
        return magic.resolved(self.tracee, magic.given_path(self.tracee, dirfd, name), magic=magic_links)

    def given_path(self, dirfd: int, name: str) -> "api.VmPath":
        """``name`` from ``dirfd``, nothing translated."""
        return magic.given_path(self.tracee, dirfd, name)

    def located(self, dirfd: int, name: str) -> "api.VmPath":
        """``name`` from ``dirfd`` even if it is absolute (openat2's RESOLVE_IN_ROOT)."""
        return magic.located(self.tracee, dirfd, name)

    def resolved(self, path: "api.VmPath", *, magic_links: bool = True) -> "api.VmPath":
        return magic.resolved(self.tracee, path, magic=magic_links)

    def own_file(self, path: "api.VmPath") -> "api.OpenFile | None":
        """The caller's open file, when ``path`` is a magic link to one of its fds."""
        return magic.own_file(self.tracee, path)

    def opened(self, address: int, dirfd: int = AT_FDCWD) -> "tuple[api.VmPath, api.OpenFile | None]":
        """The path an open names, and the caller's own open file when that path is a
        magic link to one of its fds (the open then reopens that file)."""
        tracee = self.tracee
        name = tracee.read_path(address)
        if magic.untranslated(name):  # the usual open: an absolute path outside /proc and /dev
            return api.VmPath("/", name), None
        given = magic.given_path(tracee, signed32(dirfd), name)
        own = magic.own_file(tracee, given)
        return (given, own) if own is not None else (magic.resolved(tracee, given), None)

    def target(self, dirfd: int, address: int, flags: int) -> "api.Target":
        """A path, or the fd itself for AT_EMPTY_PATH with an empty path."""
        if flags & AT_EMPTY_PATH:
            path = self.tracee.read_path(address, empty_ok=True)
            if not path:
                return self.tracee.take_fd(signed32(dirfd))
            return self.vm_path(signed32(dirfd), path)
        return self.path(address, dirfd)

    def at_name(self, address: int, flags: int) -> str:
        """The path of an ``*at`` call that, with AT_EMPTY_PATH, takes a NULL path as an
        empty one (the xattr calls, as the kernel's getname_maybe_null): "" then names
        the dirfd itself."""
        if flags & AT_EMPTY_PATH:
            return self.tracee.read_path(address, empty_ok=True) if address else ""
        return self.tracee.read_path(address)

    def extensible_struct(self, address: int, size: int, layout: struct.Struct) -> tuple[int, ...]:
        """A struct whose size the caller passes (openat2's open_how, the xattr calls'
        xattr_args), whose first version is ``layout``: read once, as the kernel's
        copy_struct_from_user takes it. EINVAL if ``size`` is below that version, E2BIG
        past a page, or when the bytes past ``layout`` (a newer struct's fields, which
        this kernel lacks) are not all zero. Decide only on the copy returned: the
        caller's memory may be rewritten meanwhile by another of its threads."""
        if size < layout.size:
            raise CallError(errno.EINVAL)
        if size > os.sysconf("SC_PAGE_SIZE"):
            raise CallError(errno.E2BIG)
        raw = self.tracee.read(address, size)
        if any(raw[layout.size :]):
            raise CallError(errno.E2BIG)
        return layout.unpack_from(raw)

    def fd(self, fd: int) -> "api.OpenFile":
        """The fd argument of a call that takes any fd, O_PATH ones included."""
        return self.tracee.take_fd(signed32(fd))

    def open_file(self, fd: int) -> "api.OpenFile":
        """The fd of a call that acts on an open file only: O_PATH fds are EBADF."""
        return self.tracee.take_fd(signed32(fd), path_ok=False)

    def string(self, address: int, limit: int) -> str:
        """A name (an xattr's): ERANGE if it is empty or longer than ``limit`` bytes."""
        name = self.tracee.read_path(address, empty_ok=True)
        if not name or len(os.fsencode(name)) > limit:
            raise CallError(errno.ERANGE)
        return name


DecodeFunction = Callable[[Context, Args], Decoded]


class Decoder:
    """A syscall's decoder, as its table entry carries it: the function, and the request
    types it may build (each must have a handler in ``hvfs.manager.handlers``). A plain
    class, as ``Syscall``: defining a dataclass costs more than the whole table. The types
    are kept by name: the table is built at every manager's start, and the messages
    (hvfs.api) load with a first request."""

    __slots__ = ("decode", "names")

    def __init__(self, decode: DecodeFunction, names: tuple[str, ...]) -> None:
        self.decode = decode
        self.names = names

    @property
    def requests(self) -> tuple[type, ...]:
        return tuple(getattr(api, name) for name in self.names)

    def __repr__(self) -> str:
        return f"Decoder({self.decode.__module__}.{self.decode.__qualname__})"


def decodes(*names: str) -> Callable[[DecodeFunction], Decoder]:
    """Marks a function as the decoder of a syscall that builds the requests ``names``
    (of hvfs.api)."""

    def wrap(function: DecodeFunction) -> Decoder:
        return Decoder(function, names)

    return wrap
