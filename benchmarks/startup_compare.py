"""`hvfs run -- true` of two installations of hvfs, interleaved: BEFORE as it is, and
both with their per-user manager running (warm) and started by the run (cold).

    python benchmarks/startup_compare.py OLD/.venv/bin/python NEW/.venv/bin/python [ROUNDS]
    python benchmarks/startup_compare.py .venv/bin/python .venv/bin/hvfs [ROUNDS]
    python benchmarks/startup_compare.py --burst N BEFORE AFTER [ROUNDS]

With ``--burst N``, each round also runs N warm runs back to back with each installation
in turn ("before, burst" and "after, burst"): runs that come sooner than a spare is made.

    python benchmarks/startup_compare.py --alternate GAP_MS BEFORE AFTER [ROUNDS]

warm runs only, one of each installation per round (which goes first alternates), GAP_MS
after each: a manager warm, its spare ready, nothing else of hvfs running.

An installation is its Python (run as ``python -m hvfs``) or a program run as it is, as
the native front (.venv/bin/hvfs, native/client/).

Each installation gets a private state directory of its own. Medians, and ratios to
BEFORE's warm run and to each one's own BEFORE.

The default mode is fair to both: in each round, which installation runs first
alternates, and the warm runs after the cold starts come SETTLE seconds after both, so
that each finds the spare its manager makes after a run (until 2026-12-06 the second
one's warm run came straight after its own cold start, without a spare, and the first
listed was favoured).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

SETTLE = 0.5  # seconds: a manager's spare VM is made well within it after a run


def command_of(path: str) -> list[str]:
    path = os.path.abspath(path) if os.sep in path else path  # the runs' cwd is /
    return [path, "-m", "hvfs"] if os.path.basename(path).startswith("python") else [path]


def main() -> int:
    arguments = sys.argv[1:]
    burst, gap = 0, None
    if arguments[:1] == ["--burst"] and len(arguments) > 1:
        burst, arguments = int(arguments[1]), arguments[2:]
    elif arguments[:1] == ["--alternate"] and len(arguments) > 1:
        gap, arguments = float(arguments[1]) / 1000, arguments[2:]
    if len(arguments) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    before, after = command_of(arguments[0]), command_of(arguments[1])
    python = next((path for path in arguments[:2] if os.path.basename(path).startswith("python")), sys.executable)
    rounds = int(arguments[2]) if len(arguments) > 2 else 20
    with tempfile.TemporaryDirectory() as old_state, tempfile.TemporaryDirectory() as new_state:
        cpu: dict[str, list[float]] = {}

        def timed(command: list[str], state: str, *args: str, label: str = "") -> float:
            """Wall seconds; the client's own CPU time (user + system, not the manager's,
            which is no child of it) goes to ``cpu[label]``: less disturbed by a loaded machine."""
            env = dict(os.environ, HVFS_STATE_DIR=state)
            used = resource.getrusage(resource.RUSAGE_CHILDREN)
            began = time.perf_counter()
            subprocess.run([*command, *args], env=env, check=True, capture_output=True, cwd="/")
            wall = time.perf_counter() - began
            now = resource.getrusage(resource.RUSAGE_CHILDREN)
            if label:
                cpu.setdefault(label, []).append(now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime)
            return wall

        def stop(command: list[str], state: str) -> None:
            subprocess.run([*command, "manager", "stop"], env=dict(os.environ, HVFS_STATE_DIR=state),
                           capture_output=True)  # fmt: skip

        runs: dict[str, list[float]] = {
            "native true": [], "python -c pass": [], "before, warm": [], "after, warm": [], "before, cold": [],
            "after, cold": [],
        }  # fmt: skip
        timed(before, old_state, "run", "--", "true")  # both managers up before the first warm runs
        timed(after, new_state, "run", "--", "true")
        if gap is not None:
            return alternate(timed, [(before, old_state), (after, new_state)], rounds, gap)
        installs = (("before", before, old_state), ("after", after, new_state))
        for round_ in range(rounds):
            # which installation goes first alternates, so that neither is always the one
            # that runs while the other's manager is still busy after its own run
            order = installs if round_ % 2 == 0 else installs[::-1]
            began = time.perf_counter()
            subprocess.run(["true"])
            runs["native true"].append(time.perf_counter() - began)
            for name, command, state in order:
                runs[f"{name}, warm"].append(timed(command, state, "run", "--", "true", label=name))
            runs["python -c pass"].append(timed([python, "-c", "pass"], new_state, label="python -c pass"))
            for name, command, state in order:
                stop(command, state)
                runs[f"{name}, cold"].append(timed(command, state, "run", "--", "true"))
            # a warm run straight after its own manager's cold start would find no spare
            # yet (the second installation's did, in the order this replaced): both wait
            time.sleep(SETTLE)
            for name, command, state in order:
                runs[f"{name}, warm"].append(timed(command, state, "run", "--", "true", label=name))
            for name, command, state in order:
                for _ in range(burst):
                    runs.setdefault(f"{name}, burst", []).append(timed(command, state, "run", "--", "true"))
        stop(after, new_state)
        stop(before, old_state)
    base = statistics.median(runs["before, warm"])
    for name, xs in runs.items():
        median = statistics.median(xs)
        own = ""
        if name.startswith("after"):
            own = f"  {median / statistics.median(runs[name.replace('after', 'before')]):5.2f}× its before"
        print(f"{name:14} median {median * 1000:7.1f} ms  min {min(xs) * 1000:6.1f}  max {max(xs) * 1000:6.1f}"
              f"  {median / base:5.2f}× before, warm{own}  (n={len(xs)})")  # fmt: skip
    for name, xs in cpu.items():
        median, base_cpu = statistics.median(xs), statistics.median(cpu["before"])
        print(f"client CPU, {name:16} median {median * 1000:6.1f} ms  ({median / base_cpu:4.2f}× before)")
    return 0


def alternate(timed: Callable[..., float], installs: list[tuple[list[str], str]], rounds: int, gap: float) -> int:
    """Warm runs of each installation in turn, ``gap`` seconds after each."""
    walls: list[list[float]] = [[], []]
    time.sleep(SETTLE)  # the first runs' spares made
    for round_ in range(rounds):
        for i in (0, 1) if round_ % 2 == 0 else (1, 0):
            walls[i].append(timed(installs[i][0], installs[i][1], "run", "--", "true"))
            time.sleep(gap)
    for command, state in installs:
        subprocess.run([*command, "manager", "stop"], env=dict(os.environ, HVFS_STATE_DIR=state), capture_output=True)
    for name, xs in zip(("before, warm", "after, warm"), walls, strict=True):
        xs.sort()
        low, high = xs[len(xs) // 4] * 1000, xs[3 * len(xs) // 4] * 1000
        print(f"{name:14} median {statistics.median(xs) * 1000:6.1f} ms  min {xs[0] * 1000:5.1f}"
              f"  quartiles {low:5.1f}-{high:5.1f}  (n={len(xs)})")  # fmt: skip
    print(f"after ÷ before (medians): {statistics.median(walls[1]) / statistics.median(walls[0]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
