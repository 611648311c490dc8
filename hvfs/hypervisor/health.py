"""A project VM's health: its ``healthcheck`` probe run in it every interval, as docker's
health monitor does (hvfs.project.lifecycle.HealthCheck has compose's keys and defaults).

The status starts "starting"; a probe that exits 0 makes it "healthy" (and zeroes the
failing streak); a failing probe adds one to the streak, except while the VM is still
"starting" within its start_period; ``retries`` failures in a row make it "unhealthy".
A probe that outlasts its ``timeout`` has failed, and is killed. The last five results
are kept (their output cut to 4 KiB, as docker's), for ``hvfs ps --json``.

A probe is a process of ``hvfs exec`` (pid 1's EXEC message): it runs as the VM's
command does, with its user, environment and working directory, and every file call it
makes is served as any other of the VM's.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hvfs import deferred
from hvfs.project.lifecycle import HealthCheck
from hvfs.sandbox.stdio import empty_input

log = deferred.logger("hvfs.health")
MAX_OUTPUT = 4096
KEPT = 5
STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"


@dataclass(frozen=True)
class ProbeResult:
    """One health probe's run: when it started and ended, its exit code and output."""

    start: float
    end: float
    code: int  # -1: timed out
    output: str


class ProbeWaiter:
    """Stands where an ``hvfs exec`` client would, for pid 1's answers about one probe."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.code: int | None = None
        self.done = threading.Event()

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        if "started" in message:
            self.pid = int(message["started"])
        if "exited" in message:
            self.code = int(message["exited"])
            self.done.set()
        for fd in fds or ():
            os.close(fd)


# What starts a probe in the VM: (argv, stdio fds, the waiter) -> None; it raises
# LookupError or OSError when the VM cannot take it (it is ending).
Launcher = Callable[[tuple[str, ...], list[int], ProbeWaiter], None]


class Health:
    def __init__(self, check: HealthCheck, launch: Launcher, init_pid: int) -> None:
        self.check = check
        self.launch = launch
        self.init_pid = init_pid
        self.status = STARTING
        self.failing_streak = 0
        self.results: deque[ProbeResult] = deque(maxlen=KEPT)
        self.ended = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._monitor, name="hvfs-health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.ended.set()

    def describe(self) -> dict[str, Any]:
        last = self.results[-1] if self.results else None
        return {
            "status": self.status,
            "failing_streak": self.failing_streak,
            "last": None if last is None else {"code": last.code, "output": last.output, "end": last.end},
        }

    def _monitor(self) -> None:
        check = self.check
        while True:
            starting = self.status == STARTING and time.monotonic() - self._started < check.start_period
            if self.ended.wait(check.start_interval if starting else check.interval):
                return
            began = time.monotonic()
            try:
                result = self.probe()
            except (LookupError, OSError) as e:  # the VM is ending
                log.debug("health probe not run: %s", e)
                return
            if self.ended.is_set():
                return
            self.note(result, in_start_period=began - self._started < check.start_period)

    def note(self, result: ProbeResult, *, in_start_period: bool) -> None:
        """docker's handleProbeResult."""
        self.results.append(result)
        if result.code == 0:
            self.failing_streak, self.status = 0, HEALTHY
            return
        if self.status == STARTING and in_start_period:
            return
        self.failing_streak += 1
        if self.failing_streak >= self.check.retries:
            self.status = UNHEALTHY

    def probe(self) -> ProbeResult:
        """Run the test once in the VM; its exit code, or -1 if it outlasted the timeout."""
        start = time.time()
        reading, writing = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        stdin = empty_input()
        waiter = ProbeWaiter()
        try:
            self.launch(self.check.argv, [stdin, writing, writing], waiter)
        except BaseException:
            os.close(reading)
            raise
        finally:
            os.close(stdin)
            os.close(writing)
        output = bytearray()
        deadline = time.monotonic() + self.check.timeout
        try:
            while not waiter.done.is_set() and time.monotonic() < deadline and not self.ended.is_set():
                if select.select([reading], [], [], 0.02)[0]:
                    _read_into(reading, output)
            _read_into(reading, output)
        finally:
            os.close(reading)
        if not waiter.done.is_set():
            self._kill(waiter.pid)
            text = f"Health check exceeded timeout ({self.check.timeout:g}s)"
            return ProbeResult(start, time.time(), -1, text)
        return ProbeResult(start, time.time(), int(waiter.code or 0), output[:MAX_OUTPUT].decode(errors="replace"))

    def _kill(self, pid: int | None) -> None:
        """SIGKILL to the probe, a child of pid 1 known by its pid in the VM."""
        if pid is None or pid <= 0:
            return
        init = self.init_pid
        with contextlib.suppress(OSError, ValueError):
            with open(f"/proc/{init}/task/{init}/children") as f:
                children = [int(c) for c in f.read().split()]
            for child in children:
                with open(f"/proc/{child}/status") as f:
                    nspid = next((line.split()[1:] for line in f if line.startswith("NSpid:")), [])
                if nspid and int(nspid[-1]) == pid:
                    os.kill(child, signal.SIGKILL)
                    return


def _read_into(fd: int, output: bytearray) -> None:
    """Drain ``fd`` (so that the probe never blocks on a full pipe), keeping the first
    MAX_OUTPUT bytes."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            return
        output += chunk[: max(0, MAX_OUTPUT - len(output))]
