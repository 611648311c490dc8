"""What a ptrace install's wait meets of other tracees (issue 15; docs/ptrace.md, "An install's
wait takes any tracee's status"), unit-tested on the Python side: an exit reaped drops every
pending stop of that thread before its number can name another one, and nothing else; a stop
met is left for the main loop, after what it already held. The VM-level test is
tests/adversarial/test_ptrace_exec_takeover.py's crowd mode."""

from __future__ import annotations

import os
import signal
from collections import deque

import pytest

from hvfs import api
from hvfs._sys import tracing
from hvfs.intercept.ptrace import stopped as stopped_module
from hvfs.intercept.ptrace.stopped import Stop, Stopped
from hvfs.intercept.ptrace.waits import LoopWaits
from hvfs.testing.transport import MockTransport

SECCOMP_STOP = (tracing.PTRACE_EVENT_SECCOMP << 16) | (signal.SIGTRAP << 8) | 0x7F
EXEC_EVENT = (tracing.PTRACE_EVENT_EXEC << 16) | (signal.SIGTRAP << 8) | 0x7F
KILLED = signal.SIGKILL  # a wait status: killed by SIGKILL
EXITED = 3 << 8  # a wait status: exited with 3


def _unanswered(request: api.Request) -> api.Response:
    raise AssertionError(f"no request expected: {request}")


def _waits() -> LoopWaits:
    return LoopWaits(1, "vm", MockTransport(_unanswered))


def test_the_status_words_are_what_the_kernel_reports() -> None:
    assert os.WIFSTOPPED(SECCOMP_STOP) and tracing.event_of(SECCOMP_STOP) == tracing.PTRACE_EVENT_SECCOMP
    assert os.WIFSTOPPED(EXEC_EVENT) and tracing.event_of(EXEC_EVENT) == tracing.PTRACE_EVENT_EXEC
    assert os.WIFSIGNALED(KILLED) and os.WIFEXITED(EXITED)


def test_an_exit_drops_the_pending_stops_of_that_thread_alone() -> None:
    waits = _waits()
    waits._round.extend([(11, SECCOMP_STOP, None), (12, SECCOMP_STOP, b"r"), (11, SECCOMP_STOP, None)])
    waits._queued.extend([(13, SECCOMP_STOP, None), (11, SECCOMP_STOP, None)])
    waits._exited(((11, KILLED),))
    assert list(waits._round) == [(12, SECCOMP_STOP, b"r")]
    assert list(waits._queued) == [(13, SECCOMP_STOP, None)]


def test_an_exec_event_handed_back_with_the_exits_drops_nothing() -> None:
    """A served thread's pid taken over by a sibling's exec comes back among the exits as its
    exec event (a stop, not an exit): stops pending under other numbers stay."""
    waits = _waits()
    waits._round.append((12, SECCOMP_STOP, None))
    waits._exited(((13, EXITED),))
    assert list(waits._round) == [(12, SECCOMP_STOP, None)]


@pytest.fixture
def python_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped's Python path, as under HVFS_NATIVE=0 (with the C loop, stops met are kept in C)."""
    monkeypatch.setattr(stopped_module, "native_tracer", None)


def test_a_stop_met_goes_after_the_round_and_an_exit_drops_it(python_loop: None) -> None:
    held: deque[Stop] = deque([(21, SECCOMP_STOP, None), (22, SECCOMP_STOP, None)])
    served = Stopped(20, bytes(tracing.Registers()), held)
    served._met(23, SECCOMP_STOP)
    served._met(24, SECCOMP_STOP)
    assert [stop[0] for stop in held] == [21, 22, 23, 24]
    served._met(22, KILLED)
    served._met(24, EXITED)
    assert [stop[0] for stop in held] == [21, 23]
    assert served.reaped == [(22, KILLED), (24, EXITED)]
