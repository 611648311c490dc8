"""Cases and the runner: the Case object a case function gets, the registry that @case
fills (in definition order, which is the order cases run in), and running one case.

Each case leaves its result to the runner: returning is "ok", an OSError is its errno.
Expected answers are noted where they are not obvious; the probe records what happens."""

import argparse
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from observe import Json, describe, errno_name, observe

CASE_TIMEOUT_SECONDS = 20


class Skipped(Exception):
    """The case needs something this run lacks (root, --ro, --other)."""


class CaseTimeout(Exception):
    """A case hung; raised from SIGALRM so that one stuck call cannot stall the whole probe."""


class Case:
    """What a case function gets: its directory, the run's options, and cleanup hooks."""

    def __init__(self, name: str, workdir: str, ro_dir: str | None, other_dir: str | None) -> None:
        self.name = name
        self.workdir = workdir
        self.dir = os.path.join(workdir, name)
        self._ro_dir = ro_dir
        self._other_dir = other_dir
        self._fds: list[int] = []
        self._stat: tuple[str, bool] | None = None
        self._after: Callable[[], Json] | None = None

    def open(self, path: str, flags: int, mode: int = 0o644, *, dir_fd: int | None = None) -> int:
        """os.open whose fd is closed when the case ends."""
        return self.keep(os.open(path, flags, mode, dir_fd=dir_fd))

    def keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def closed_fd(self) -> int:
        """An fd number that is surely not open: for EBADF cases."""
        fd = os.open("/dev/null", os.O_RDONLY)
        os.close(fd)
        return fd

    def stat_after(self, path: str, *, follow: bool = False) -> None:
        """Record the status of path once the case has run, even if it then fails."""
        self._stat = (path, follow)

    def after(self, action: Callable[[], Json]) -> None:
        """Record action's result once the case has run, even if it then fails."""
        self._after = action

    def ro(self, name: str) -> str:
        if self._ro_dir is None:
            raise Skipped
        return os.path.join(self._ro_dir, name)

    def other(self) -> str:
        """A fresh directory for this case on the other mount."""
        if self._other_dir is None:
            raise Skipped
        path = os.path.join(self._other_dir, self.name)
        os.mkdir(path)
        return path

    def need_root(self) -> None:
        if os.geteuid() != 0:
            raise Skipped

    def cwd(self) -> str:
        """getcwd() with the WORKDIR prefix replaced, so it does not depend on where WORKDIR is."""
        cwd = os.getcwd()
        inside = cwd == self.workdir or cwd.startswith(self.workdir + "/")
        return "$W" + cwd[len(self.workdir) :] if inside else cwd

    def finish(self, record: dict[str, Json]) -> None:
        """Take the after-the-fact observations into record and release what the case held."""
        try:
            os.chdir(self.dir)
            if self._stat is not None:
                path, follow = self._stat
                record["stat"] = observe(lambda: describe(path, follow=follow))
            if self._after is not None:
                record["after"] = observe(self._after)
        finally:
            for fd in self._fds:
                with suppress(OSError):  # the case may have closed it itself
                    os.close(fd)


CaseFunction = Callable[[Case], Json]
CASES: dict[str, CaseFunction] = {}


def case(function: CaseFunction) -> CaseFunction:
    """Register a case; its name is the function's, first underscore made a dot (open_x: open.x)."""
    name = function.__name__.replace("_", ".", 1)
    CASES[name] = function
    return function


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def expire(_signal: int, _frame: object) -> None:
        raise CaseTimeout(f"no answer in {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_case(name: str, function: CaseFunction, options: argparse.Namespace) -> dict[str, Json]:
    """Run one case in a fresh directory and return its record."""
    probe = Case(name, options.workdir, options.ro, options.other)
    os.mkdir(probe.dir)
    os.chdir(probe.dir)
    umask = os.umask(0o022)
    record: dict[str, Json] = {}
    try:
        with time_limit(CASE_TIMEOUT_SECONDS):
            try:
                value = function(probe)
                record["result"] = "ok"
                if value is not None:
                    record["value"] = value
            except Skipped:
                return {"result": "skipped"}
            except OSError as error:
                if error.errno is None:
                    raise
                record["result"] = errno_name(error.errno)
            finally:
                probe.finish(record)
    except Exception as error:
        return {"result": "EXCEPTION", "value": repr(error)}
    finally:
        os.umask(umask)
        os.chdir(options.workdir)
    return record
