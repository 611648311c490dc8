"""The CPU each workload costs under bubblewrap and under hvfs's default profile, interleaved:
issue 14's ratios (W1, W2, W5, W7 ≤ 1.2× bubblewrap, W4 ≤ 1.05×) in a measure that the load
of a shared 2-CPU machine moves far less than wall time.

    python benchmarks/profile_cpu.py [--rounds N] [--only W1,W2,W4,W5,W7]
                                     [--hvfs .venv/bin/hvfs] [--baseline OTHER/.venv/bin/hvfs]

On this machine the wall time of one workload moves by 30–80 % with the other sessions'
load (run.py's min–max ranges), more than the 5 % W4's target allows; the CPU a run takes
moves much less. Each round runs every (workload, runner) pair once, in a shuffled order,
and counts for each run:

- the workload's tree, inside the sandbox: ``cputime`` (benchmarks/cputime.c) runs the
  command and prints the user + system CPU of every descendant it waited for, the same way
  under every runner (hvfs: one trapped exec more, and the command is cputime's child);
- the runner's own processes outside the sandbox (wait4 of bwrap, or of hvfs's front);
- hvfs only: its manager (every thread, /proc/PID/stat), from before the run to a settle
  time after it, so that the spare it makes for the next run is counted: what a run costs
  the machine. The manager's clock ticks are 10 ms: read its figure as a mean over rounds.

Wall time is printed too. Each hvfs build has a manager of its own (a private state
directory). Nothing is asserted: the figures are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import fixtures
import runners
from fixtures import Layout
from runners import Context
from workloads import Workload, all_workloads

HERE = Path(__file__).resolve().parent
TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")
SETTLE = 0.3  # s after each run: a manager makes its spare then, and the next run starts clean


@dataclass
class Samples:
    wall: list[float] = field(default_factory=list)  # ms
    tree: list[float] = field(default_factory=list)  # ms of CPU, inside the sandbox
    own: list[float] = field(default_factory=list)  # ms of CPU, the runner's processes outside it
    manager: list[float] = field(default_factory=list)  # ms of CPU, hvfs's manager


@dataclass(frozen=True)
class Sandbox:
    """A runner: how it wraps a command, its environment, and its manager's state directory."""

    name: str
    state: Path | None  # hvfs: its own state directory (HVFS_STATE_DIR)
    program: str

    def argv(self, context: Context, argv: list[str]) -> list[str]:
        if self.state is None:
            return runners._bwrap(context, argv)
        return [self.program, "run", *runners._hvfs_options(context, strict=False), "--", *argv]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="W1,W2,W4,W5,W7")
    parser.add_argument("--hvfs", default=str(HERE.parent / ".venv" / "bin" / "hvfs"), help="hvfs's front to run")
    parser.add_argument("--baseline", help="another build's front, run as 'base' in the same rounds")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    keys = args.only.split(",")
    chosen = [w for w in all_workloads(20000, 1) if w.key in keys]
    if not chosen:
        print(f"profile_cpu: no workload of {args.only!r}; name some of W1,W2,W4,W5,W7", file=sys.stderr)
        return 125
    layout = fixtures.make_layout()
    cputime = layout.bin / "cputime"
    failure = fixtures.compile_c(HERE / "cputime.c", cputime)
    if failure is not None:
        print(f"profile_cpu: cannot build cputime: {failure}", file=sys.stderr)
        return 125
    for workload in chosen:
        if workload.prepare is not None:
            workload.prepare(layout)
    sandboxes = [Sandbox("bwrap", None, "bwrap"), _hvfs_sandbox("hvfs", args.hvfs, layout)]
    if args.baseline:
        sandboxes.append(_hvfs_sandbox("base", args.baseline, layout))
    samples = {(w.key, s.name): Samples() for w in chosen for s in sandboxes}
    rng = random.Random(args.seed)
    try:
        for sandbox in sandboxes:  # a warm manager for each build, as a second run finds it
            _run_once(sandbox, chosen[0], layout, cputime)
        for round_number in range(args.rounds):
            pairs = [(w, s) for w in chosen for s in sandboxes]
            rng.shuffle(pairs)
            for workload, sandbox in pairs:
                outcome = _run_once(sandbox, workload, layout, cputime)
                if outcome is None:
                    continue
                sample = samples[(workload.key, sandbox.name)]
                for series, value in zip((sample.wall, sample.tree, sample.own, sample.manager), outcome, strict=True):
                    series.append(value)
            print(f"round {round_number + 1}/{args.rounds} done; load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        for sandbox in sandboxes:
            if sandbox.state is not None:
                env = {**os.environ, "HVFS_STATE_DIR": str(sandbox.state)}
                subprocess.run([sandbox.program, "manager", "stop"], env=env, capture_output=True, check=False)
    _report(chosen, sandboxes, samples)
    return 0


def _hvfs_sandbox(name: str, program: str, layout: Layout) -> Sandbox:
    state = Path(tempfile.mkdtemp(prefix=f"state-{name}-", dir=layout.root))
    return Sandbox(name, state, program)


def _run_once(
    sandbox: Sandbox, workload: Workload, layout: Layout, cputime: Path
) -> tuple[float, float, float, float] | None:
    """One run: wall ms, the tree's CPU ms, the runner's own CPU ms, the manager's CPU ms."""
    if workload.reset is not None:
        workload.reset(layout)
    cwd = workload.cwd(layout)
    context = Context(layout, cwd, uses_work=True)
    argv = sandbox.argv(context, [str(cputime), *workload.argv(layout)])
    env = dict(context.env)
    if sandbox.state is not None:
        env["HVFS_STATE_DIR"] = str(sandbox.state)
    manager_before = _manager_cpu(sandbox)
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    stderr = process.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    wall = (time.perf_counter() - started) * 1000
    process.returncode = os.waitstatus_to_exitcode(status)
    time.sleep(SETTLE)
    manager = _manager_cpu(sandbox) - manager_before if sandbox.state is not None else 0.0
    tree = [line.split()[1] for line in stderr.splitlines() if line.startswith("cputime ")]
    if process.returncode != 0 or not tree:
        print(f"{workload.key} under {sandbox.name} failed ({process.returncode}): {stderr.strip()[-200:]}")
        return None
    tree_ms = int(tree[-1]) / 1000
    # Neither runner's usage holds the tree (measured: bwrap's sandbox is reaped inside its
    # pid namespace, hvfs's VM is the manager's), so it is the runner's own processes.
    own = (usage.ru_utime + usage.ru_stime) * 1000
    return wall, tree_ms, own, manager


def _manager_cpu(sandbox: Sandbox) -> float:
    """The manager's CPU so far, in ms (every thread, the dead ones too); 0 when none runs."""
    if sandbox.state is None:
        return 0.0
    try:
        pid = json.loads((sandbox.state / "manager.json").read_text())["pid"]
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, KeyError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) * TICK_MS


def _report(chosen: list[Workload], sandboxes: list[Sandbox], samples: dict[tuple[str, str], Samples]) -> None:
    print("\nms; medians over the rounds (the manager's: mean); total = tree + own + manager")
    print(f"{'workload':9} {'runner':6} {'wall':>8} {'wall min–max':>17} {'tree CPU':>9} {'own CPU':>8} {'manager':>8}"
          f" {'total':>8} {'wall ÷ bwrap':>12} {'total ÷ bwrap':>13}")  # fmt: skip
    for workload in chosen:
        reference = samples[(workload.key, "bwrap")]
        if not reference.wall:
            continue
        reference_total = _total(reference)
        for sandbox in sandboxes:
            sample = samples[(workload.key, sandbox.name)]
            if not sample.wall:
                print(f"{workload.key:9} {sandbox.name:6} no run succeeded")
                continue
            wall, total = statistics.median(sample.wall), _total(sample)
            print(
                f"{workload.key:9} {sandbox.name:6} {wall:8.1f} {min(sample.wall):8.1f}–{max(sample.wall):<8.1f}"
                f" {statistics.median(sample.tree):9.1f}"
                f" {statistics.median(sample.own):8.1f} {statistics.fmean(sample.manager):8.1f} {total:8.1f}"
                f" {wall / statistics.median(reference.wall):11.2f}× {total / reference_total:12.2f}×"
            )


def _total(sample: Samples) -> float:
    return statistics.median(sample.tree) + statistics.median(sample.own) + statistics.fmean(sample.manager)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
