"""`hvfs run -- true` of two installations of hvfs, interleaved: BEFORE as it is, and
both with their per-user manager running (warm) and started by the run (cold).

    python benchmarks/startup_compare.py OLD/.venv/bin/python NEW/.venv/bin/python [ROUNDS]

Each installation gets a private state directory of its own. Medians, and ratios to
BEFORE's warm run and to each one's own BEFORE.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    before, after = [sys.argv[1], "-m", "hvfs"], [sys.argv[2], "-m", "hvfs"]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    with tempfile.TemporaryDirectory() as old_state, tempfile.TemporaryDirectory() as new_state:

        def timed(command: list[str], state: str, *args: str) -> float:
            env = dict(os.environ, HVFS_STATE_DIR=state)
            began = time.perf_counter()
            subprocess.run([*command, *args], env=env, check=True, capture_output=True, cwd="/")
            return time.perf_counter() - began

        def stop(command: list[str], state: str) -> None:
            subprocess.run([*command, "manager", "stop"], env=dict(os.environ, HVFS_STATE_DIR=state),
                           capture_output=True)  # fmt: skip

        runs: dict[str, list[float]] = {
            "native true": [], "python -c pass": [], "before, warm": [], "after, warm": [], "before, cold": [],
            "after, cold": [],
        }  # fmt: skip
        for _ in range(rounds):
            began = time.perf_counter()
            subprocess.run(["true"])
            runs["native true"].append(time.perf_counter() - began)
            began = time.perf_counter()
            subprocess.run([sys.argv[2], "-c", "pass"])
            runs["python -c pass"].append(time.perf_counter() - began)
            runs["before, warm"].append(timed(before, old_state, "run", "--", "true"))
            runs["after, warm"].append(timed(after, new_state, "run", "--", "true"))
            stop(before, old_state)
            runs["before, cold"].append(timed(before, old_state, "run", "--", "true"))
            stop(after, new_state)
            runs["after, cold"].append(timed(after, new_state, "run", "--", "true"))
            runs["before, warm"].append(timed(before, old_state, "run", "--", "true"))
            runs["after, warm"].append(timed(after, new_state, "run", "--", "true"))
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
