"""Fake seccomp notifications, decoded as the driver decodes real ones."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from hvfs.intercept.arch import Arch, native
from hvfs.intercept.compiled import decoders_for
from hvfs.intercept.decoders.context import Context, Decoded
from hvfs.intercept.filter import syscall_numbers
from hvfs.intercept.tracee import Tracee

_REGISTER = (1 << 64) - 1
_decoders = functools.cache(decoders_for)


@dataclass(frozen=True)
class FakeData:
    """``struct seccomp_data``, as ``hvfs._sys.notify.SeccompData`` shows it."""

    nr: int
    arch: int
    instruction_pointer: int
    args: tuple[int, int, int, int, int, int]


@dataclass(frozen=True)
class FakeNotification:
    """``struct seccomp_notif``, as ``hvfs._sys.notify.Notif`` shows it."""

    id: int
    pid: int
    flags: int
    data: FakeData


def notification(
    syscall: str, *args: int, pid: int = 4242, notif_id: int = 1, arch: Arch | None = None
) -> FakeNotification:
    """The notification of ``syscall(*args)`` by thread ``pid``: arguments as the kernel
    puts them in registers (-100 for AT_FDCWD arrives as 2**64 - 100), missing ones 0."""
    arch = arch or native()
    numbers = {name: nr for nr, name in syscall_numbers(arch).items()}
    registers = tuple(a & _REGISTER for a in args) + (0,) * (6 - len(args))
    return FakeNotification(notif_id, pid, 0, FakeData(numbers[syscall], arch.audit, 0, registers))  # type: ignore[arg-type]


def decode(tracee: Tracee, notif: FakeNotification, *, vm: str = "vm", arch: Arch | None = None) -> Decoded:
    """What the driver makes of ``notif``: the syscall's decoder, then the ID_VALID check.
    Raises as the decoders do: ``CallError`` (answered with its errno, the manager never
    asked), ``Passthrough`` (continued), ``TargetGone``; ``KeyError`` for a syscall the
    driver does not decode (answered ENOSYS)."""
    decoder = _decoders(arch or native())[notif.data.nr]
    decoded = decoder(Context(tracee, vm), notif.data.args)
    tracee.check_valid()
    return decoded


def decode_call(tracee: Tracee, syscall: str, *args: int, vm: str = "vm") -> Decoded:
    """``decode`` of the notification of ``syscall(*args)`` by ``tracee``."""
    return decode(tracee, notification(syscall, *args, pid=tracee.pid, notif_id=tracee.notif_id), vm=vm)
