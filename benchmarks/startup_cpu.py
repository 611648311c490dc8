"""The manager's CPU per warm ``hvfs run -- true`` of two installations, interleaved.

    python benchmarks/startup_cpu.py BEFORE/.venv/bin/hvfs AFTER/.venv/bin/hvfs [RUNS [GAP_MS]]

Each installation gets its own manager and private state directory; their runs alternate
one by one (which goes first alternates), GAP_MS (30) after each. The managers' CPU
(user + system, /proc/PID/stat: all their threads, not their VMs' processes) is read
before and after, with the spares' making and each run's exit and removal in it: it is
what a run waits for on a loaded machine. Then the same with HVFS_SPARE=0 (no spare made:
each run makes its VM itself) unless --no-fresh.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def session(programs: list[str], runs: int, gap: float, spare: str) -> list[tuple[float, float]]:
    """(manager CPU ms per run, median wall ms) of each program."""
    states = [tempfile.mkdtemp(prefix="hvfs-cpu-") for _ in programs]
    envs = [dict(os.environ, HVFS_STATE_DIR=state, HVFS_SPARE=spare) for state in states]
    try:
        for program, env in zip(programs, envs, strict=True):
            for _ in range(5):  # the manager up, its spare made, its threads kept
                subprocess.run([program, "run", "--", "true"], env=env, check=True)
                time.sleep(0.1)
        time.sleep(0.5)
        pids = [json.loads(Path(state, "manager.json").read_text())["pid"] for state in states]
        began = [cpu_seconds(pid) for pid in pids]
        walls: list[list[float]] = [[] for _ in programs]
        for n in range(runs):
            order = range(len(programs)) if n % 2 == 0 else reversed(range(len(programs)))
            for i in order:
                start = time.perf_counter()
                subprocess.run([programs[i], "run", "--", "true"], env=envs[i], check=True)
                walls[i].append(time.perf_counter() - start)
                time.sleep(gap)
        time.sleep(0.5)  # the last exits and removals
        return [
            ((cpu_seconds(pid) - b) / runs * 1000, statistics.median(w) * 1000)
            for pid, b, w in zip(pids, began, walls, strict=True)
        ]
    finally:
        for program, env, state in zip(programs, envs, states, strict=True):
            subprocess.run([program, "manager", "stop"], env=env, capture_output=True)
            shutil.rmtree(state, ignore_errors=True)


def main() -> int:
    arguments = [a for a in sys.argv[1:] if a != "--no-fresh"]
    if len(arguments) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    programs = arguments[:2]
    runs = int(arguments[2]) if len(arguments) > 2 else 60
    gap = float(arguments[3]) / 1000 if len(arguments) > 3 else 0.03
    print(f"load before: {Path('/proc/loadavg').read_text().split()[:3]}")
    for spare in ("1",) if "--no-fresh" in sys.argv else ("1", "0"):
        (before_cpu, before_wall), (after_cpu, after_wall) = session(programs, runs, gap, spare)
        print(
            f"HVFS_SPARE={spare}: manager CPU per run {before_cpu:.1f} -> {after_cpu:.1f} ms "
            f"({after_cpu / before_cpu:.2f}x); wall median {before_wall:.1f} -> {after_wall:.1f} ms "
            f"({after_wall / before_wall:.2f}x), {runs} runs each"
        )
    print(f"load after: {Path('/proc/loadavg').read_text().split()[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
