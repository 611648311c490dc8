"""What it would cost the seccomp driver's C loop (hvfs/_native/hotpath.c ``serve``, which runs
without the GIL) to take the GIL once per served request and record its audit event there:
issue 14's first design for ``--strict --audit`` served in C (the other: a ring in C that
Python drains).

    python benchmarks/gil_per_event.py [--events 200000] [--rounds 3]

A loop in C shaped as ``serve``'s (a small C step per event with the GIL released) takes
the GIL per event and calls, while it holds it, nothing, a deque's append of a compact
record's size, or the bus's real recorder (``EventRing.record_served``: hvfs/_native/record.c's
Recorder, the clocks, the command name of this thread from /proc, the compact record and
its append), each alone and beside threads that need the GIL too: the ring's (woken every
``INTERVAL``, drains), a bursty worker (serves Python requests: 40 µs of Python, 40 µs
blocked) and a busy one (never blocks). Per event: the loop's wall time, the process's CPU
time, and the longest single wait for the GIL; beside it, how far the busy thread got
(its loops per second, against a second of it alone). The loop is built with the Python
headers' compiler into a temporary directory (cc must exist). Not a test: nothing is
asserted.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from hvfs import api
from hvfs.api.ring import INTERVAL, EventRing

SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <time.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* cycle(n, take, call, args) -> (wall ns, longest wait ns): n events, each a C step without
 * the GIL, then (take) the GIL taken, call(*args) unless call is None, the GIL let go. */
static PyObject *cycle(PyObject *self, PyObject *args) {
    (void)self;
    Py_ssize_t n;
    int take;
    PyObject *call, *call_args;
    if (!PyArg_ParseTuple(args, "npOO!", &n, &take, &call, &PyTuple_Type, &call_args))
        return NULL;
    long long began = now_ns(), longest = 0;
    volatile long sink = 0;
    int failed = 0;
    PyThreadState *state = PyEval_SaveThread();
    for (Py_ssize_t i = 0; i < n && !failed; i++) {
        for (int k = 0; k < 50; k++)
            sink += k;
        if (!take)
            continue;
        long long asked = now_ns();
        PyEval_RestoreThread(state);
        long long waited = now_ns() - asked;
        longest = waited > longest ? waited : longest;
        if (call != Py_None) {
            PyObject *done = PyObject_Call(call, call_args, NULL);
            failed = done == NULL;
            Py_XDECREF(done);
        }
        state = PyEval_SaveThread();
    }
    PyEval_RestoreThread(state);
    if (failed)
        return NULL;
    return Py_BuildValue("LL", now_ns() - began, longest);
}

static PyMethodDef methods[] = {{"cycle", cycle, METH_VARARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "gil_cycle", NULL, -1, methods, NULL, NULL, NULL, NULL};
PyMODINIT_FUNC PyInit_gil_cycle(void) { return PyModule_Create(&module); }
"""


def build(directory: Path) -> ModuleType:
    """The C loop, compiled in ``directory`` and imported."""
    source = directory / "gil_cycle.c"
    source.write_text(SOURCE)
    library = directory / f"gil_cycle{sysconfig.get_config_var('EXT_SUFFIX')}"
    include = sysconfig.get_paths()["include"]
    compiler = (sysconfig.get_config_var("CC") or "cc").split()
    subprocess.run(
        [*compiler, "-O2", "-Wall", "-shared", "-fPIC", f"-I{include}", str(source), "-o", str(library)], check=True
    )
    spec = importlib.util.spec_from_file_location("gil_cycle", library)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Neighbours:
    """Threads that want the GIL while the loop runs, stopped by ``stop``; ``loops``: how far
    the busy one got."""

    def __init__(self, ring: collections.deque[bytes], kinds: tuple[str, ...]) -> None:
        self._ring = ring
        self._stop = threading.Event()
        self.loops = 0
        targets = {"ring": self._drain, "bursty": self._bursty, "busy": self._busy}
        self._threads = [threading.Thread(target=targets[kind], daemon=True) for kind in kinds]
        for thread in self._threads:
            thread.start()
        time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _drain(self) -> None:  # the ring's thread
        while not self._stop.wait(INTERVAL):
            while self._ring:
                self._ring.popleft()

    def _bursty(self) -> None:  # a worker serving Python requests between receives
        while not self._stop.is_set():
            until = time.perf_counter_ns() + 40_000
            while time.perf_counter_ns() < until:
                pass
            time.sleep(0.00004)

    def _busy(self) -> None:  # a worker that never blocks
        total = 0
        while not self._stop.is_set():
            for i in range(1000):
                total += i
            self.loops += 1


def busy_alone(seconds: float) -> float:
    """The busy thread's loops per second with nothing else running."""
    neighbours = Neighbours(collections.deque(), ("busy",))
    neighbours.loops = 0
    time.sleep(seconds)
    loops = neighbours.loops
    neighbours.stop()
    return loops / seconds


def recorder_call(directory: Path) -> tuple[Callable[..., None], tuple[Any, ...], EventRing]:
    """The bus's recorder of a ring whose hand-out drops what it gets, and a served stat's
    arguments as the dispatch passes them (this thread its caller, for its command name)."""
    ring = EventRing(lambda items, lost, marks: None)
    caller = api.Caller(vm="vm1", pid=threading.get_native_id())
    request = api.Stat(caller=caller, path=api.VmPath("/", "/usr/lib/file"), follow=True)
    response = api.StatResult(directory.stat())
    return ring.record_served, ("vm1", request, response, time.monotonic_ns(), None, ("/usr/lib/file",)), ring


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        loop = build(directory)
        record, record_args, ring = recorder_call(directory)
        deque: collections.deque[bytes] = collections.deque()
        calls: dict[str, tuple[bool, Any, tuple[Any, ...]]] = {
            "no GIL": (False, None, ()),
            "GIL": (True, None, ()),
            "GIL+append": (True, deque.append, (b"x" * 120,)),
            "GIL+recorder": (True, record, record_args),
        }
        settings = [("alone", ()), ("ring", ("ring",)), ("bursty", ("ring", "bursty")), ("busy", ("ring", "busy"))]
        print(f"{options.events} events a run; per event: wall ns, process CPU ns, longest wait µs")
        for round_number in range(options.rounds):
            print(f"round {round_number + 1}: the busy thread alone: {busy_alone(1.0):.0f} loops/s", flush=True)
            for setting, kinds in settings:
                for label, (take, call, call_args) in calls.items():
                    neighbours = Neighbours(deque, kinds)
                    neighbours.loops = 0  # counted from the loop's start
                    cpu = time.process_time()
                    wall, longest = loop.cycle(options.events, take, call, call_args)
                    cpu = time.process_time() - cpu
                    neighbours.stop()
                    deque.clear()
                    busy = f"  busy thread {neighbours.loops / (wall / 1e9):.0f} loops/s" if "busy" in kinds else ""
                    print(
                        f"  {setting:7s} {label:13s} {wall / options.events:8.1f} {cpu * 1e9 / options.events:8.1f}"
                        f" {longest / 1000:9.1f}{busy}",
                        flush=True,
                    )
        ring.stop(1.0)


if __name__ == "__main__":
    sys.exit(main())
