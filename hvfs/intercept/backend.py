"""The driver seam: what traps a VM's calls and carries them to a transport.

A backend makes two things. Before the command starts, the filter pid 1 installs on
itself (``filter_program``); after, from the fd pid 1 hands back (a seccomp listener), the
``Driver`` that serves the VM's calls until they end. Everything outside this package
knows a driver by the ``Driver`` protocol only, and picks a backend here, by name
(``backend``): a second backend (ptrace, for kernels without seccomp user notification)
is one more class and one more line in ``BACKENDS``.
"""

from __future__ import annotations

from typing import Any, Protocol

from hvfs.api import Transport
from hvfs.errors import HvfsError
from hvfs.intercept.arch import Arch
from hvfs.intercept.inflight import InflightTable

DEFAULT = "seccomp"


class BackendError(HvfsError):
    """A backend cannot work here: what, why, and the fix, in one line."""

    def __init__(self, what: str, why: str, fix: str) -> None:
        super().__init__(f"{what}: {why}; {fix}")


class Driver(Protocol):
    """Serves one VM's trapped calls, from ``start`` until they end or ``stop``."""

    def start(self) -> None: ...

    def stop(self) -> None:
        """Stop serving and wait for the workers; calls still pending then fail."""

    def join(self, timeout: float | None = None) -> None:
        """Wait until every call of the VM has ended (its last thread exited)."""

    def close(self) -> None:
        """Release what the driver holds (once joined or stopped)."""

    def kept(self) -> dict[str, int]:
        """What of the driver must outlive this manager for the next one (by role, fds
        the driver keeps owning), or nothing when the VM cannot outlive it."""

    def statistics(self) -> dict[str, Any]:
        """For --stats: the driver's own record (its flags, what it had to work around)."""


class Backend(Protocol):
    name: str
    traces: bool  # pid 1 installs a SECCOMP_RET_TRACE filter and hands back a pidfd of itself

    def filter_program(self, strict: bool, arch: Arch) -> bytes:
        """The BPF program pid 1 installs on itself (``strict``: reads are trapped too).
        Raises BackendError when none can be built here."""

    def driver(
        self, trap: int, vm: str, transport: Transport, arch: Arch, *, outlives: bool = False, strict: bool = True
    ) -> Driver:
        """The driver of the fd ``trap`` (taken) that pid 1 handed back; ``outlives``: the
        VM is to outlive this manager, so the driver notes what the next one needs;
        ``strict``: the VM's filter was compiled for strict mode (the manager checks execs)."""

    def resume(
        self, kept: dict[str, int], vm: str, transport: Transport, arch: Arch, vm_pid: int, *, strict: bool = True
    ) -> Driver:
        """The driver of a VM whose manager is gone, from what its driver ``kept`` (taken);
        it answers what that manager took and left unanswered, then serves as before.
        ``vm_pid``: a process of the VM (its pid 1), which names its threads.
        KeyError when ``kept`` is not what this backend keeps."""


class SeccompBackend:
    """Seccomp user notification: the kernel stops each trapped call until the driver
    answers it (hvfs.intercept.driver)."""

    name = "seccomp"
    traces = False

    def filter_program(self, strict: bool, arch: Arch) -> bytes:
        from hvfs.intercept.filter import FilterConfig, compile_filter

        try:
            return compile_filter(FilterConfig(trap_reads=strict), arch)
        except ImportError:
            missing = "the pyseccomp package is missing"
            raise BackendError("seccomp filter", missing, "install hvfs with its dependencies: scripts/setup") from None
        except RuntimeError as e:  # pyseccomp cannot find libseccomp
            raise BackendError("seccomp filter", str(e), "install libseccomp: apt-get install libseccomp2") from None
        except OSError as e:
            raise BackendError(
                "seccomp filter",
                f"libseccomp cannot build a user-notification filter ({e.strerror})",
                "seccomp user notification is unavailable here; hvfs needs Linux 5.14+ with CONFIG_SECCOMP_FILTER",
            ) from None

    def driver(
        self, trap: int, vm: str, transport: Transport, arch: Arch, *, outlives: bool = False, strict: bool = True
    ) -> Driver:
        from hvfs.intercept.driver import MAX_WORKERS, SeccompDriver

        inflight = InflightTable(MAX_WORKERS) if outlives else None
        return SeccompDriver(trap, vm, transport, arch, inflight=inflight, strict=strict)

    def resume(
        self, kept: dict[str, int], vm: str, transport: Transport, arch: Arch, vm_pid: int, *, strict: bool = True
    ) -> Driver:
        from hvfs.intercept.driver import SeccompDriver

        table = InflightTable(0, fd=kept["inflight"])
        driver = SeccompDriver(kept["listener"], vm, transport, arch, inflight=table, strict=strict)
        driver.take_over(table.pending(), table.last_id(), vm_pid)
        driver.start()
        return driver


class PtraceBackend:
    """ptrace with a SECCOMP_RET_TRACE filter, for kernels without user notification or
    ADDFD (hvfs.intercept.ptrace): pid 1 hands back a pidfd of itself, which it seizes."""

    name = "ptrace"
    traces = True

    def filter_program(self, strict: bool, arch: Arch) -> bytes:
        from hvfs.driver_choice import ptrace_problem
        from hvfs.intercept.filter import FilterConfig, compile_trace_filter

        problem = ptrace_problem()
        if problem is not None:
            raise BackendError("ptrace driver", problem, "use --driver seccomp where the kernel allows it")
        try:
            return compile_trace_filter(FilterConfig(trap_reads=strict), arch)
        except ImportError:
            missing = "the pyseccomp package is missing"
            raise BackendError("seccomp filter", missing, "install hvfs with its dependencies: scripts/setup") from None
        except (RuntimeError, OSError) as e:
            raise BackendError("seccomp filter", str(e), "hvfs needs a kernel with CONFIG_SECCOMP_FILTER") from None

    def driver(
        self, trap: int, vm: str, transport: Transport, arch: Arch, *, outlives: bool = False, strict: bool = True
    ) -> Driver:
        from hvfs.intercept.ptrace import PtraceDriver

        return PtraceDriver(trap, vm, transport, arch)

    def resume(
        self, kept: dict[str, int], vm: str, transport: Transport, arch: Arch, vm_pid: int, *, strict: bool = True
    ) -> Driver:
        raise ValueError("a VM of the ptrace driver ends with its tracer: nothing is left to take back")


BACKENDS: dict[str, Backend] = {"seccomp": SeccompBackend(), "ptrace": PtraceBackend()}


def backend(name: str = DEFAULT) -> Backend:
    """The backend ``name``; ValueError naming the known ones for any other."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"{name}: not a driver; use one of {', '.join(BACKENDS)}") from None
