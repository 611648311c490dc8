"""Running one command and measuring it: wall time, exit status, output, peak memory.

Wall time is taken around the whole child, start-up of the runner included, since a
user pays for that too.

Memory is measured in separate, untimed runs. ``wait4``'s ``ru_maxrss`` cannot be taken
from this process: a child's peak counts the pages of the (v)forked parent it was before
``execve``, so every child of this 25 MiB Python process would read at least 25 MiB.
Hence ``/usr/bin/time -f %M`` (a small process) for the largest resident set in a whole
process tree, and ``PeakRssSampler`` for the HVFS manager alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Command:
    """A command line with the environment and directory it starts in."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: Path


@dataclass(frozen=True)
class Outcome:
    """What one run of a command did."""

    seconds: float
    returncode: int
    stdout: str
    stderr: str
    peak_kib: int | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def error_tail(self, lines: int = 3) -> str:
        """The end of stderr, for saying why a run failed."""
        tail = self.stderr.strip().splitlines()[-lines:]
        return " | ".join(tail) or f"exit status {self.returncode}"


def run_timed(
    command: Command,
    scratch: Path,
    timeout: float = 900,
    sample_peak: bool = False,
) -> Outcome:
    """Runs ``command`` to completion, timing it; output goes through files in ``scratch``
    so that a chatty command can never block on a full pipe while we wait for it. After
    ``timeout`` seconds the command's process group is killed (the outcome says -9).
    With ``sample_peak``, the peak memory of the started process itself is sampled."""
    out_path, err_path = scratch / "stdout", scratch / "stderr"
    with out_path.open("w+b") as out, err_path.open("w+b") as err:
        began = time.perf_counter()
        process = subprocess.Popen(
            command.argv,
            env=command.env,
            cwd=command.cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # a group of its own, so that a hung run can be killed whole
        )
        watchdog = threading.Timer(timeout, _kill_group, (process.pid,))
        watchdog.start()
        sampler = PeakRssSampler(process.pid) if sample_peak else None
        process.wait()
        seconds = time.perf_counter() - began
        watchdog.cancel()
        if sampler is not None:
            sampler.stop()
        out.seek(0)
        err.seek(0)
        return Outcome(
            seconds=seconds,
            returncode=process.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            peak_kib=sampler.peak_kib if sampler is not None else None,
        )


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


class PeakRssSampler:
    """Polls ``VmHWM`` (the peak resident set) of one process until stopped.

    The last value read before the process exits is its peak up to that moment; what it
    allocates in its last few milliseconds is missed, which is fine for a manager whose
    memory is set up at start and grows with requests."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        path = f"/proc/{self.pid}/status"
        while not self._stopped.is_set():
            try:
                with open(path) as status:
                    for line in status:
                        if line.startswith("VmHWM:"):
                            self.peak_kib = max(self.peak_kib, int(line.split()[1]))
                            break
            except (FileNotFoundError, ProcessLookupError, ValueError):
                return  # gone (or a zombie without memory): the last reading stands
            self._stopped.wait(self.interval)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()
