"""Warm start-up of runs back to back, builds interleaved block by block, with the spares
each build's manager found (issue 14: back to back, a run that finds no spare starts a VM
fresh).

    python benchmarks/backtoback.py [--blocks N] [--block N] NAME=STATE_DIR:HVFS [ARGS] ...

Each block runs one build's ``HVFS run ARGS`` (default ``-- true``) BLOCK times in a row,
as hyperfine -N does (stdio on /dev/null, no pause between), with ``HVFS_STATE_DIR`` set
to that build's STATE_DIR (its own manager); the builds' blocks come in a shuffled order
each round, so that the machine's load falls on all alike, and the first two runs of each
block (the first follows another build's runs) are left out. Prints, per build, the
median wall time, the 10th and 90th percentiles, the ratio to the first build, and its
manager's spares over the measured blocks (``hvfs manager status --json``: taken, and
missed where the build counts it, i.e. started fresh).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import time

LEFT_OUT = 2  # runs at the head of each block, which follow another build's


def _spares(hvfs: str, state: str) -> dict[str, int]:
    env = {**os.environ, "HVFS_STATE_DIR": state}
    found = subprocess.run([hvfs, "manager", "status", "--json"], env=env, capture_output=True, text=True, check=True)
    spares: dict[str, int] = json.loads(found.stdout)["manager"].get("spares", {})
    return spares


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10, help="rounds: one block of each build per round")
    parser.add_argument("--block", type=int, default=20, help="runs back to back per block")
    parser.add_argument("builds", nargs="+", metavar="NAME=STATE_DIR:HVFS [ARGS]")
    args = parser.parse_args()
    builds = []
    for given in args.builds:
        name, rest = given.split("=", 1)
        state, command = rest.split(":", 1)
        words = command.split()
        builds.append((name, state, words[0], [words[0], "run", *(words[1:] or ["--", "true"])]))
    times: dict[str, list[float]] = {name: [] for name, *_ in builds}
    failed = dict.fromkeys(times, 0)
    for _, state, _, argv in builds:  # each manager up, its spare made
        subprocess.call(argv, env={**os.environ, "HVFS_STATE_DIR": state}, stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(0.5)
    before = {name: _spares(hvfs, state) for name, state, hvfs, _ in builds}
    order = list(builds)
    for _ in range(args.blocks):
        random.shuffle(order)
        for name, state, _, argv in order:
            env = {**os.environ, "HVFS_STATE_DIR": state}
            for run in range(args.block):
                began = time.perf_counter()
                code = subprocess.call(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)  # fmt: skip
                if run >= LEFT_OUT:
                    times[name].append((time.perf_counter() - began) * 1000)
                    failed[name] += code != 0
    after = {name: _spares(hvfs, state) for name, state, hvfs, _ in builds}
    base = statistics.median(times[builds[0][0]])
    runs = args.blocks * args.block
    print(f"{args.blocks} blocks of {args.block} back to back per build, interleaved; ms of wall time")
    print(f"{'build':<16} {'median':>7} {'p10':>7} {'p90':>7} {'ratio':>6} {'failed':>6}  spares of {runs} runs")
    for name, *_ in builds:
        t = times[name]
        deciles = statistics.quantiles(t, n=10)
        median = statistics.median(t)
        spares = {key: after[name].get(key, 0) - before[name].get(key, 0) for key in ("taken", "missed")}
        print(f"{name:<16} {median:7.2f} {deciles[0]:7.2f} {deciles[-1]:7.2f} {median / base:6.2f} {failed[name]:6}"
              f"  taken {spares['taken']}, missed {spares['missed'] if 'missed' in after[name] else '?'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
