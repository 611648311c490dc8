"""What the audit costs the manager per served request, in CPU time: ``--strict --audit``
against ``--strict``, without a VM or a driver.

    python benchmarks/audit_cpu.py [--requests 3000] [--rounds 7] [--profile]

A real Manager over a detached copy of a directory's mount (as a writable view is; run as
root) serves, through ``handle_request``, what the end-to-end workloads make it serve:
W8's opens of one file for writing (the answer, an fd, closed at once), W3's creates and unlinks (a
write-open that creates, then the unlink), W5's stats (an lstat, as git status makes,
and a stat). One VM has no services (``--strict``: the manager serves the same requests
with or without audit; strict only decides which are trapped); the other has an audit
log. Counted per request: the CPU time of the dispatching thread (what the VM waits
for) plus that of the audit's threads (the ring's mover and the audit's writer, all of
it, read from their own CPU clocks after ``EventBus.flush`` put the round's events in the
file): on a machine whose CPUs are all busy, and under one GIL, the writer's time is time
taken from requests. Rounds alternate the two VMs; the best round of each is the figure
(the machine is shared: a median carries other engineers' load), medians too.
``--profile``: cProfile of the audited VM's serving thread (the writer is not in it).
Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hvfs import api
from hvfs._sys.abi import AT_SYMLINK_NOFOLLOW
from hvfs._sys.mount import clone_tree
from hvfs.manager.manager import Manager

from dispatch import manager_with, root_caller

SETUPS = {"--strict": None, "--strict --audit": {"audit": "audit.jsonl"}}
AUDIT_THREADS = ("hvfs-events", "hvfs-events-audit")  # the ring's mover, the audit's writer
WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


def workloads(vm: str) -> dict[str, list[api.Request]]:
    """One cycle of requests per workload, each leaving the tree as it found it."""
    who = root_caller(vm)
    sub = api.VmPath("/", "/sub")
    return {
        "W8 open": [api.Open(caller=who, path=api.VmPath("/", "/sub/file"), flags=os.O_WRONLY | os.O_CLOEXEC)],
        "W3 create+unlink": [
            request
            for i in range(4)
            for request in (
                api.Open(caller=who, path=api.VmPath(str(sub), f"new{i}"), flags=WRITE, mode=0o644),
                api.Unlink(caller=who, path=api.VmPath(str(sub), f"new{i}")),
            )
        ],
        "W5 stat": [
            api.Statx(caller=who, path=api.VmPath(str(sub), "file"), flags=AT_SYMLINK_NOFOLLOW, mask=0xFFF),
            api.Stat(caller=who, path=api.VmPath("/", "/sub/file"), follow=False),
            api.Stat(caller=who, path=api.VmPath("/", "/sub/file"), follow=True),
        ],
    }


def thread_cpu(names: tuple[str, ...]) -> float:
    """The CPU seconds the live threads of these names have used."""
    total = 0.0
    for thread in threading.enumerate():
        if thread.name in names and thread.ident is not None:
            with contextlib.suppress(OSError):  # it ended meanwhile
                total += time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return total


def serve(manager: Manager, requests: list[api.Request], count: int) -> None:
    for _ in range(count):
        for request in requests:
            response = manager.handle_request(request)
            if isinstance(response, api.Fd):
                os.close(response.fd)
            elif not isinstance(response, api.Value | api.StatResult | api.StatxResult):
                raise SystemExit(f"{request} was answered {response}")


def measure(
    manager: Manager, requests: list[api.Request], count: int, flush: Callable[[], object]
) -> tuple[float, float]:
    """µs per request: on the serving thread, on the audit's threads."""
    began, writers = time.thread_time(), thread_cpu(AUDIT_THREADS)
    serve(manager, requests, count)
    served = time.thread_time() - began
    flush()  # waits (no CPU here) until the writer put every event in the file
    written = thread_cpu(AUDIT_THREADS) - writers
    n = count * len(requests)
    return served / n * 1e6, written / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="requests per workload per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="cProfile the audited VM's serving thread")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "sub").mkdir()
        (Path(directory) / "sub" / "file").write_text("content\n")
        root = clone_tree(directory, recursive=False)
        manager, sets = manager_with(SETUPS, root, directory)
        bus = next(s.bus for s in sets)
        loads = {setup: workloads(setup) for setup in SETUPS}
        samples: dict[tuple[str, str], list[tuple[float, float]]] = {
            (s, w): [] for s in SETUPS for w in loads["--strict"]
        }
        for _ in range(args.rounds):  # alternated, so that a slow moment of the machine falls on both
            for work in loads["--strict"]:
                for setup in SETUPS:
                    requests = loads[setup][work]
                    samples[setup, work].append(measure(manager, requests, args.requests // len(requests), bus.flush))
        if args.profile:
            profile = cProfile.Profile()
            for requests in loads["--strict --audit"].values():
                profile.runcall(serve, manager, requests, args.requests // len(requests))
            bus.flush()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        for services in sets:
            services.close()
        os.close(root)
    print(f"manager CPU per served request (µs; serving thread + audit threads), {args.rounds} rounds:")
    heads = ("--strict", "--audit", "(serve", "+ write)", "ratio", "median ratio")
    print(f"  {'workload':<18} " + " ".join(f"{head:>9}" for head in heads))
    for work in loads["--strict"]:
        plain = [s + w for s, w in samples["--strict", work]]
        audited = samples["--strict --audit", work]
        best = min(audited, key=lambda sw: sw[0] + sw[1])
        totals = [s + w for s, w in audited]
        print(
            f"  {work:<18} {min(plain):9.2f} {min(totals):9.2f} {best[0]:9.2f} {best[1]:9.2f} "
            f"{min(totals) / min(plain):8.2f}x {statistics.median(totals) / statistics.median(plain):8.2f}x"
        )


if __name__ == "__main__":
    main()
