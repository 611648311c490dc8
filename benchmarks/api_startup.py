"""Starting a VM through the Python API from a running process: ``hvfs.VM(command=...)``
until it has started, and until its command (``true``) has exited, with where the time
goes in this process (stamped around hvfs's own functions).

    python benchmarks/api_startup.py [ROUNDS [GAP_MS]]

Uses the manager of ``HVFS_STATE_DIR`` (started on demand, then warm); medians of ROUNDS
(default 20) starts, GAP_MS apart (default 0: back to back).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import hvfs
from hvfs.client import session, vm
from hvfs.hypervisor import client

stamps: dict[str, list[float]] = {}


def timed(owner: Any, attribute: str, name: str) -> None:
    original: Callable[..., Any] = getattr(owner, attribute)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter_ns()
        try:
            return original(*args, **kwargs)
        finally:
            stamps.setdefault(name, []).append((time.perf_counter_ns() - began) / 1e6)

    setattr(owner, attribute, wrapper)


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    gap = float(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0.0  # between rounds, as a caller that does work
    timed(vm.VM, "_describe", "describe: the run's spec")
    timed(vm, "run_project", "its project (mounts prepared)")
    timed(client, "connect", "connect (hello, code check)")
    timed(session, "launch", "launch: run until started")
    hvfs.VM(command=["true"]).wait(30)  # the manager started and warm
    stamps.clear()
    started, ended = [], []
    for _ in range(rounds):
        began = time.perf_counter_ns()
        machine = hvfs.VM(command=["true"])
        started.append((time.perf_counter_ns() - began) / 1e6)
        machine.wait(30)
        ended.append((time.perf_counter_ns() - began) / 1e6)
        machine.stop()
        time.sleep(gap)
    print(f"{'VM(command=[true]) returns (started)':50} {statistics.median(started):7.2f} ms  (n={rounds})")
    print(f"{'... and its command has exited':50} {statistics.median(ended):7.2f} ms  (n={rounds})")
    for name, xs in stamps.items():
        print(f"  {name:48} {statistics.median(xs):7.2f} ms  (n={len(xs)})")
    connection = client.connect()
    client.request(connection, "ps")
    reply, _ = connection.receive()
    connection.close()
    print(f"manager's warm spares (hvfs.hypervisor.spares): {reply['manager'].get('spares')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
