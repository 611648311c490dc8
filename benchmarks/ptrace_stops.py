"""Where a warm `hvfs run -- true` waits for the ptrace driver's tracer, by bpftrace: the
VM's life after START (pid 1's fork of the command, its exec, its exit, pid 1's exit and
the shim's wait), the four points where the kernel makes the command wait for the tracer,
and the tracer threads' waits for a CPU once woken (or preempted). Builds and drivers
alternate in shuffled rounds, 50 ms apart; every figure is a median over the runs of
one row, except the tracer's waits: their sum per run, and its mean (a tail of a few long
waits is what the load adds).

    python benchmarks/ptrace_stops.py [--rounds N] [--drivers ptrace,seccomp] NAME=STATE_DIR:HVFS ...

e.g. ``before=/tmp/pt/b:/tmp/before/.venv/bin/hvfs after=/tmp/pt/a:.venv/bin/hvfs``: each
build's own manager (started by a first run) and state directory. Needs root (bpftrace).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import statistics
import subprocess
import tempfile
import time

# Events: F fork (parent, child, whether a manager forked), E exec of `true`, X exit, W a wait4 that reaped, P a
# manager's ptrace call (its thread, the tracee), L a tracer thread's wait for a CPU (ns).
PROGRAM = """
tracepoint:sched:sched_process_fork /comm == "hvfs-init" || MANAGERS/ {
  printf("F %lld %d %d %d\\n", nsecs, args->parent_pid, args->child_pid, comm != "hvfs-init"); }
tracepoint:sched:sched_process_exec /comm == "true"/ { printf("E %lld %d\\n", nsecs, pid); }
tracepoint:sched:sched_process_exit /comm == "true" || comm == "hvfs-init"/ { printf("X %lld %d\\n", nsecs, tid); }
tracepoint:syscalls:sys_exit_wait4 /(MANAGERS || comm == "hvfs-init") && args->ret > 0/ {
  printf("W %lld %d %d\\n", nsecs, tid, args->ret); }
tracepoint:syscalls:sys_enter_ptrace /MANAGERS/ { @tr[tid] = 1; printf("P %lld %d %d\\n", nsecs, tid, args->pid); }
tracepoint:sched:sched_wakeup /@tr[args->pid]/ { @w[args->pid] = nsecs; }
tracepoint:sched:sched_switch /@tr[args->prev_pid] && args->prev_state == 0/ { @w[args->prev_pid] = nsecs; }
tracepoint:sched:sched_switch /@w[args->next_pid]/ {
  printf("L %lld %d %lld\\n", nsecs, args->next_pid, nsecs - @w[args->next_pid]); delete(@w[args->next_pid]); }
"""

PHASES = ("fork → exec", "exec → exit", "exit → pid 1's wait", "pid 1's exit → shim's wait", "fork → shim's wait")
STOPS = ("first stop", "exec event", "exit → reaped", "reaped → pid 1", "pid 1 → reaped", "reaped → shim")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--drivers", default="ptrace,seccomp")
    parser.add_argument("builds", nargs="+", metavar="NAME=STATE_DIR:HVFS")
    args = parser.parse_args()
    builds = {name: tuple(rest.split(":", 1)) for name, _, rest in (b.partition("=") for b in args.builds)}
    managers = [_manager(state, hvfs) for state, hvfs in builds.values()]
    with tempfile.NamedTemporaryFile("w", suffix=".bt") as script, tempfile.TemporaryFile("w+") as out:
        script.write(PROGRAM.replace("MANAGERS", "(" + " || ".join(f"pid == {m}" for m in managers) + ")"))
        script.flush()
        tracer = subprocess.Popen(["bpftrace", "-q", script.name], stdout=out, stderr=subprocess.DEVNULL)
        time.sleep(8)  # bpftrace attaches its probes
        windows = _runs(builds, args.drivers.split(","), args.rounds)
        time.sleep(0.5)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
        out.seek(0)
        events = [_event(line) for line in out if line[:2] in ("F ", "E ", "X ", "W ", "P ", "L ")]
    _report(events, windows)
    return 0


def _manager(state: str, hvfs: str) -> int:
    """The pid of the manager of ``state``, started by a first run."""
    subprocess.run([hvfs, "run", "--", "true"], env=dict(os.environ, HVFS_STATE_DIR=state), check=True)
    with open(os.path.join(state, "manager.json")) as f:
        pid: int = json.load(f)["pid"]
    return pid


def _runs(builds: dict[str, tuple[str, ...]], drivers: list[str], rounds: int) -> list[tuple[str, int, int]]:
    """Runs every build under every driver once a round, shuffled; their (row, start, end)."""
    rows = [(name, driver) for name in builds for driver in drivers]
    windows = []
    for _ in range(rounds):
        random.shuffle(rows)
        for name, driver in rows:
            state, hvfs = builds[name]
            began = time.monotonic_ns()  # bpftrace's nsecs: CLOCK_MONOTONIC too
            subprocess.run([hvfs, "run", "--driver", driver, "--", "true"], env=dict(os.environ, HVFS_STATE_DIR=state))
            windows.append((f"{name} {driver}", began, time.monotonic_ns()))
            time.sleep(0.05)
    return windows


def _event(line: str) -> tuple[str, int, tuple[int, ...]]:
    kind, at, *rest = line.split()
    return kind, int(at), tuple(int(r) for r in rest)


def _report(events: list[tuple[str, int, tuple[int, ...]]], windows: list[tuple[str, int, int]]) -> None:
    rows: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
    parent = {e[2][1]: e[2][0] for e in events if e[0] == "F"}  # all: a spare's shim forked its pid 1 before the run
    shims = {e[2][1] for e in events if e[0] == "F" and e[2][2]}  # forked by one of the managers: not another's VM
    for row, began, ended in windows:
        inside = [e for e in events if began <= e[1] <= ended]
        found = _one_run(inside, parent, shims)
        if found is not None:
            rows[row].append(found)
    for row in sorted(rows):
        runs = rows[row]
        print(f"{row}: {len(runs)} runs")
        for name in (*PHASES, *STOPS):
            values = [r[name] for r in runs if name in r]
            if values:
                print(f"  {name:<28} {statistics.median(values):7.3f} ms")
        waits = [r["tracer waits"] for r in runs if "tracer waits" in r]
        if waits:
            median, mean = statistics.median(waits), statistics.mean(waits)
            print(f"  {'tracer waits, per run':<28} {median:7.3f} ms (mean {mean:.3f})")


def _one_run(
    events: list[tuple[str, int, tuple[int, ...]]], parent: dict[int, int], shims: set[int]
) -> dict[str, float] | None:
    """One run's phases (ms), from its window's events: the VM is the one whose command
    exec'd `true`, its pid 1 that command's parent, its shim pid 1's, forked by a manager
    (a run whose spare was made before bpftrace started is left out)."""
    command = next((e for e in events if e[0] == "E" and parent.get(parent.get(e[2][0], 0)) in shims), None)
    if command is None:
        return None
    cmd, pid1 = command[2][0], parent[command[2][0]]
    shim = parent[pid1]
    tracers = {e[2][0] for e in events if e[0] == "P" and e[2][1] in (cmd, pid1)}

    def tracers_of(pid: int) -> set[tuple[int, ...]]:
        return {(tracer, pid) for tracer in tracers}

    def first(kind: str, after: int, *match: int | None) -> int | None:
        for e in events:
            if e[0] == kind and e[1] >= after and all(m is None or m == v for m, v in zip(match, e[2], strict=False)):
                return e[1]
        return None

    forked = first("F", 0, pid1, cmd)
    exited = first("X", command[1], cmd)
    if forked is None or exited is None:
        return None
    waited = first("W", exited, pid1)
    pid1_exit = first("X", waited or exited, pid1)
    shim_waited = first("W", pid1_exit or exited, shim, pid1)
    points = {"fork → exec": (forked, command[1]), "exec → exit": (command[1], exited)}
    points["exit → pid 1's wait"] = (exited, waited)
    points["pid 1's exit → shim's wait"] = (pid1_exit, shim_waited)
    points["fork → shim's wait"] = (forked, shim_waited)
    if tracers:
        # The tracer's wait4 returns a tracee's pid at each of its stops too: the reap is the first after the exit.
        reaped = next((e[1] for e in events if e[0] == "W" and e[1] >= exited and e[2] in tracers_of(cmd)), None)
        after = pid1_exit or exited
        reaped1 = next((e[1] for e in events if e[0] == "W" and e[1] >= after and e[2] in tracers_of(pid1)), None)
        points["first stop"] = (forked, first("P", forked, None, cmd))
        resumed = first("P", command[1], None, cmd)
        points["exec event"] = (command[1], resumed if resumed is not None and resumed < exited else None)
        points["exit → reaped"], points["reaped → pid 1"] = (exited, reaped), (reaped, waited)
        points["pid 1 → reaped"], points["reaped → shim"] = (pid1_exit, reaped1), (reaped1, shim_waited)
    found = {name: (b - a) / 1e6 for name, (a, b) in points.items() if a is not None and b is not None}
    if tracers:
        found["tracer waits"] = sum(e[2][1] for e in events if e[0] == "L" and e[2][0] in tracers) / 1e6
    return found


if __name__ == "__main__":
    raise SystemExit(main())
