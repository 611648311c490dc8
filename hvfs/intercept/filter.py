"""Compiling the VM's seccomp filter from the syscall table and the VM's configuration.

Trap only what something configured needs to see: mutations always (the invariant),
reads only when strict mode (or, later, a read rule or a scanner) asks for them.
The program is built with libseccomp (pyseccomp) and exported as raw BPF, which the
VM's launcher loads with seccomp(2) itself, because libseccomp 2.5 cannot set
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV. Compiled programs are kept on disk
(``filter_cache``): most starts need neither pyseccomp nor the compiler.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any

from hvfs.intercept.arch import Arch

_HIGHEST_NUMBER = 1024


@dataclass(frozen=True)
class FilterConfig:
    """What a VM's seccomp filter traps, beyond what every filter traps."""

    trap_reads: bool = False


def known_syscalls(arch: Arch) -> dict[int, str]:
    """Every syscall number libseccomp can name on ``arch``."""
    import pyseccomp

    names: dict[int, str] = {}
    for nr in range(_HIGHEST_NUMBER):
        try:
            names[nr] = pyseccomp.resolve_syscall(arch.audit, nr).decode()
        except ValueError:
            continue
    return names


# syscall_numbers() per architecture, once per process: from the filter cache when the
# program came from it (the same libseccomp named both), else from libseccomp.
_NUMBERS: dict[str, dict[int, str]] = {}


def syscall_numbers(arch: Arch) -> dict[int, str]:
    """Numbers to names for ``arch``: libseccomp's table plus the newer calls HVFS knows."""
    names = _NUMBERS.get(arch.name)
    if names is None:
        from hvfs.intercept.syscalls import TABLE  # imported here: a cached filter needs no table

        names = known_syscalls(arch)
        for entry in TABLE:
            if entry.number is not None:
                names.setdefault(entry.number, entry.name)
        _NUMBERS[arch.name] = names
    return dict(names)


def compile_filter(config: FilterConfig, arch: Arch, *, trace: bool = False) -> bytes:
    """The BPF program for a VM, as ``struct sock_filter`` bytes: from the cache when it
    holds one for exactly this configuration, architecture and libseccomp. ``trace``: see
    ``compile_trace_filter``."""
    from hvfs._sys.seccomp import SONAME
    from hvfs.intercept import filter_cache

    key = filter_cache.key(("trace", config) if trace else config, arch)
    cached = filter_cache.load(key) if key is not None else None
    if cached is not None:
        _NUMBERS.setdefault(arch.name, cached.names)
        return cached.program
    program = _compile(config, arch, trace)
    if key is not None and _compiled_with(SONAME):
        filter_cache.store(key, filter_cache.Entry(program, syscall_numbers(arch)))
    return program


def _compiled_with(soname: str) -> bool:
    """Whether pyseccomp uses the libseccomp the cache key names (it looks it up itself)."""
    import pyseccomp

    return getattr(pyseccomp, "_libseccomp_path", None) == soname


def compile_trace_filter(config: FilterConfig, arch: Arch) -> bytes:
    """The same filter for the ptrace driver: what it would notify stops the caller for its
    tracer instead (SECCOMP_RET_TRACE, Linux 3.5+), and fails with ENOSYS while none is
    attached; everything else as the notifying filter."""
    return compile_filter(config, arch, trace=True)


def _no_listener(program: Any, nr: int) -> None:
    """Under RET_TRACE, a filter of the VM's own with a listener would win (the kernel
    prefers USER_NOTIF to TRACE) and answer the VM's calls past the tracer: refused with
    EBUSY, as the kernel refuses a second listener under the seccomp driver."""
    import pyseccomp as sc

    from hvfs._sys.process import SECCOMP_FILTER_FLAG_NEW_LISTENER

    flag = sc.Arg(1, sc.MASKED_EQ, SECCOMP_FILTER_FLAG_NEW_LISTENER, SECCOMP_FILTER_FLAG_NEW_LISTENER)
    program.add_rule(sc.ERRNO(errno.EBUSY), nr, flag)
    program.add_rule(sc.ALLOW, nr, sc.Arg(1, sc.MASKED_EQ, SECCOMP_FILTER_FLAG_NEW_LISTENER, 0))


def _compile(config: FilterConfig, arch: Arch, trace: bool = False) -> bytes:
    import pyseccomp as sc

    from hvfs._sys.abi import AT_EMPTY_PATH, W_OK
    from hvfs.intercept.syscalls import BY_NAME, NAMESPACE_FLAGS, OPEN_WRITE_BITS, UNSHARE_ONLY_FLAGS, Handling

    program = sc.SyscallFilter(sc.ERRNO(errno.ENOSYS))
    program.set_attr(sc.Attr.ACT_BADARCH, sc.ERRNO(errno.EPERM))
    program.set_attr(sc.Attr.CTL_NNP, 0)  # the launcher sets NO_NEW_PRIVS itself
    program.set_attr(sc.Attr.CTL_OPTIMIZE, 2)
    notify, allow, eperm = sc.TRACE(0) if trace else sc.NOTIFY, sc.ALLOW, sc.ERRNO(errno.EPERM)

    def masked(arg: int, mask: int, value: int) -> sc.Arg:
        return sc.Arg(arg, sc.MASKED_EQ, mask, value)

    for nr, name in syscall_numbers(arch).items():
        entry = BY_NAME.get(name)
        handling = entry.handling if entry else Handling.ALLOW
        if trace and name == "seccomp":
            _no_listener(program, nr)
            continue
        if trace and handling is Handling.EXEC:
            # The ptrace driver hears of every exec at its PTRACE_EVENT_EXEC (where it forgets
            # the credentials it kept): the call stops it only where it is checked.
            handling = Handling.READ
        if handling is Handling.ALLOW:
            program.add_rule(allow, nr)
        elif handling in (
            Handling.MUTATE,
            Handling.FD_META,
            Handling.ALWAYS,
            Handling.SOCKET,
            Handling.BIND,
            Handling.CREDS,
            Handling.EXEC,
        ):
            program.add_rule(notify, nr)
        elif handling is Handling.SENDTO:
            assert entry is not None and entry.flags_arg is not None
            program.add_rule(allow, nr, sc.Arg(entry.flags_arg, sc.EQ, 0))
            program.add_rule(notify, nr, sc.Arg(entry.flags_arg, sc.NE, 0))
        elif handling is Handling.EPERM:
            program.add_rule(eperm, nr)
        elif handling is Handling.ENOSYS:
            continue  # the default action
        elif handling is Handling.READ:
            program.add_rule(notify if config.trap_reads else allow, nr)
        elif handling is Handling.STAT_AT:
            assert entry is not None and entry.flags_arg is not None
            if config.trap_reads:
                program.add_rule(allow, nr, masked(entry.flags_arg, AT_EMPTY_PATH, AT_EMPTY_PATH))
                program.add_rule(notify, nr, masked(entry.flags_arg, AT_EMPTY_PATH, 0))
            else:
                program.add_rule(allow, nr)
        elif handling is Handling.ACCESS:
            assert entry is not None and entry.flags_arg is not None
            if config.trap_reads:
                program.add_rule(notify, nr)
            else:
                program.add_rule(notify, nr, masked(entry.flags_arg, W_OK, W_OK))
                program.add_rule(allow, nr, masked(entry.flags_arg, W_OK, 0))
        elif handling is Handling.OPEN:
            assert entry is not None and entry.flags_arg is not None
            if config.trap_reads:
                program.add_rule(notify, nr)
                continue
            every = 0
            for bit in OPEN_WRITE_BITS:
                program.add_rule(notify, nr, masked(entry.flags_arg, bit, bit))
                every |= bit
            program.add_rule(allow, nr, masked(entry.flags_arg, every, 0))
        elif handling is Handling.CLONE:
            assert entry is not None and entry.flags_arg is not None
            bits = NAMESPACE_FLAGS + (UNSHARE_ONLY_FLAGS if name == "unshare" else ())
            every = 0
            for bit in bits:
                program.add_rule(eperm, nr, masked(entry.flags_arg, bit, bit))
                every |= bit
            program.add_rule(allow, nr, masked(entry.flags_arg, every, 0))
    memfd = os.memfd_create("hvfs-filter", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(memfd), "wb") as sink:
            program.export_bpf(sink)
        size = os.fstat(memfd).st_size
        return os.pread(memfd, size, 0)
    finally:
        os.close(memfd)
