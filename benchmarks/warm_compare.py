"""Warm start-up of several commands, interleaved round by round: each round runs every
command once, in a shuffled order, so that the load of a shared machine falls on all of
them alike.

    python benchmarks/warm_compare.py [--rounds N] [--warmup N] [--gap MS] NAME=COMMAND ...

Each COMMAND is split on spaces and run with stdin, stdout and stderr on /dev/null, as
hyperfine -N runs it. Leading ``VAR=VALUE`` words are the command's environment, set by
this script: give each hvfs build its own HVFS_STATE_DIR so
(``before=HVFS_STATE_DIR=/tmp/b /tmp/before/.venv/bin/hvfs run -- true``), so that each
has a manager of its own, and no row pays for an ``env`` process the others do not (about
1-1.5 ms of a 5-10 ms start). Prints, per command, the median wall time, the 10th and
90th percentiles, their spread, the median's ratio to the first command's, the failed
runs, and the fastest and slowest run.

``--gap MS`` sleeps that long before each command: a manager's work after its client has
exited (its bookkeeping of the exit, the next spare) then falls in the gap rather than on
the next command, whichever build that is. Without a gap, a build that moves work past
its client's exit moves it onto its neighbours in the shuffled order.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--gap", type=float, default=0.0, help="ms slept before each command")
    parser.add_argument("commands", nargs="+", metavar="NAME=COMMAND")
    args = parser.parse_args()
    named = [tuple(c.split("=", 1)) for c in args.commands]
    runs = {name: _environment(command) for name, command in named}
    times: dict[str, list[float]] = {name: [] for name, _ in named}
    failed: dict[str, int] = {name: 0 for name, _ in named}
    order = list(named)
    for round_ in range(args.warmup + args.rounds):
        random.shuffle(order)
        for name, _ in order:
            if args.gap:
                time.sleep(args.gap / 1000)
            began = time.perf_counter()
            argv, env = runs[name]
            code = subprocess.call(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
            took = (time.perf_counter() - began) * 1000
            if round_ >= args.warmup:
                times[name].append(took)
                failed[name] += code != 0
    base = statistics.median(times[named[0][0]])
    gap = f", {args.gap:g} ms apart" if args.gap else ""
    print(f"{args.rounds} rounds, interleaved, shuffled{gap}; ms of wall time")
    print(f"{'command':<24} {'median':>7} {'p10':>7} {'p90':>7} {'p90-p10':>8} {'ratio':>6}  failed  min-max")
    for name, _ in named:
        t = times[name]
        deciles = statistics.quantiles(t, n=10)
        median = statistics.median(t)
        print(f"{name:<24} {median:7.2f} {deciles[0]:7.2f} {deciles[-1]:7.2f} {deciles[-1] - deciles[0]:8.2f}"
              f" {median / base:6.2f}  {failed[name]:>6}  {min(t):.2f}-{max(t):.2f}")  # fmt: skip
    return 0


def _environment(command: str) -> tuple[list[str], dict[str, str]]:
    """The command's words without its leading VAR=VALUE words, and the environment they make."""
    words, env = command.split(), dict(os.environ)
    while words and "=" in words[0] and not words[0].startswith(("/", ".")):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return words, env


if __name__ == "__main__":
    raise SystemExit(main())
