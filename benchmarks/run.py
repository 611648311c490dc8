"""HVFS's benchmark suite: every workload under every runner, interleaved in one session.

    python benchmarks/run.py                      # everything, 5 rounds (about 6 minutes on 2 CPUs)
    python benchmarks/run.py --only W3,W8 --runners native,bwrap,hvfs --repeat 2
    python benchmarks/run.py --runners 'native,floor-*' --only W8,W8c
    python benchmarks/run.py --replot benchmarks/results/latest.json

Each round runs every (workload, runner) pair once (start-up several times), in an order
shuffled anew for each round, so that a slow period of the machine spreads over all
runners instead of falling on one. Prints per workload the median, min–max and the
ratios to native and to bubblewrap, the trapped syscalls of HVFS runs and where the
performance targets stand. Writes benchmarks/results/<timestamp>.json; a full run (no
--only/--runners) also writes results/latest.json, docs/performance.md and
docs/performance.png (matplotlib: ``pip install -e .[bench]``).

Runners whose program is missing or cannot run ``true`` are reported and skipped. HVFS
runs from a copy of hvfs/ taken when the session starts, so that edits made meanwhile
in the work tree do not mix versions within a session.
Workloads and runners are described in workloads.py and runners.py; docs/performance.md
says how everything is measured. Benchmarks are never assertions: targets are reported.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import math
import os
import random
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fixtures
import machine
import publish
import runners as runners_module
from fixtures import Layout
from measure import Command, run_timed
from report import Results, print_report
from runners import Context, Runner
from workloads import Workload, all_workloads

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOCS = HERE.parent / "docs"
MEMORY_WORKLOADS = ("W1", "W6")
MEMORY_RUNS = 3
TIME = "/usr/bin/time"  # GNU time: %M is the largest resident set it saw in the tree


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="rounds (samples per pair; default 5)")
    parser.add_argument("--iterations", type=int, default=20000, help="opens per W8 run (default 20000)")
    parser.add_argument("--starts", type=int, default=20, help="start-up samples per runner (default 20)")
    parser.add_argument("--only", help="workloads, comma-separated (e.g. W3,W5); shell patterns allowed")
    parser.add_argument("--runners", help="runners, comma-separated (e.g. native,hvfs,'floor-*')")
    parser.add_argument("--seed", type=int, help="seed of the round order (default: time)")
    parser.add_argument("--write-docs", action="store_true", help="write latest.json and docs even for a partial run")
    parser.add_argument("--replot", type=Path, metavar="JSON", help="only report a saved results file again")
    parser.add_argument(
        "--hvfs",
        type=Path,
        metavar="DIR",
        help="run the hvfs package in DIR (e.g. DIR/hvfs of a `git worktree` of another commit) instead of the "
        "work tree's, to compare two versions; never written to the docs",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also run the hvfs runners on the hvfs package DIR (e.g. X/hvfs; runners base-hvfs…), interleaved with "
        "this version's: before and after in one session; never written to the docs",
    )
    return parser.parse_args(argv)


def select(items: list[Any], patterns: str | None, what: str) -> list[Any]:
    """The items whose key matches one of the comma-separated shell patterns."""
    if patterns is None:
        return items
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    for pattern in wanted:
        if not any(fnmatch.fnmatchcase(item.key, pattern) for item in items):
            keys = ", ".join(item.key for item in items)
            raise SystemExit(f"run.py: no {what} matches {pattern!r}; choose from {keys}")
    return [item for item in items if any(fnmatch.fnmatchcase(item.key, p) for p in wanted)]


def new_case(workload: Workload, runner: Runner) -> dict[str, Any]:
    return {
        "workload": workload.key,
        "runner": runner.key,
        "wall_s": [],
        "per_op_us": [],
        "trapped": [],
        "requests": {},
        "sync_wake_up": None,
        "failures": [],
    }


class Session:
    """One benchmark session: its directory, the chosen workloads and runners, results."""

    def __init__(self, layout: Layout, workloads: list[Workload], runners: list[Runner]) -> None:
        self.layout = layout
        self.workloads = workloads
        self.runners = runners
        self.cases = {
            (w.key, r.key): new_case(w, r) for w in workloads for r in runners if r.accepts(w.key, w.skip_runners)
        }
        self.memory: dict[str, dict[str, dict[str, int | None]]] = {}
        self.work_owner = "0:0"  # "UID:GID" WORK was last given to (fixtures.give_work)

    def run_once(
        self, workload: Workload, runner: Runner, sample_peak: bool = False, via_time: bool = False
    ) -> dict[str, Any] | None:
        """One untimed reset, then one timed run; returns what it measured, or None after
        recording why it failed. ``sample_peak`` samples the peak memory of the runner's
        process; ``via_time`` runs it under /usr/bin/time for the peak of the whole tree."""
        if workload.reset is not None:
            workload.reset(self.layout)
        # A user runner's VM must own WORK; every other runner gets it back as root's: bubblewrap's
        # root, in a user namespace that maps only itself, may not write a tree of uid 1000's.
        owner = runner.user or "0:0"
        if runner.user or owner != self.work_owner:
            fixtures.give_work(self.layout, owner)
            self.work_owner = owner
        # Write back what earlier runs left dirty, so that no run pays for another's I/O.
        os.sync()
        stats = self.layout.scratch / "stats.json" if runner.counts_traps else None
        if stats is not None:
            stats.unlink(missing_ok=True)
        context = Context(self.layout, workload.cwd(self.layout), workload.uses_work, stats)
        command = runner.command(context, workload.argv(self.layout))
        tree_peak = self.layout.scratch / "maxrss"
        if via_time:
            command = Command((TIME, "-f", "%M", "-o", str(tree_peak), *command.argv), command.env, command.cwd)
        outcome = run_timed(command, self.layout.scratch, sample_peak=sample_peak)
        if not outcome.ok:
            message = outcome.error_tail()
            self.cases[(workload.key, runner.key)]["failures"].append(message)
            print(f"  ! {workload.key} under {runner.key} failed: {message}", flush=True)
            return None
        measured: dict[str, Any] = {"wall_s": outcome.seconds}
        if workload.per_op:
            measured["per_op_us"] = float(outcome.stdout.split()[-1])
        if stats is not None and stats.exists():
            counts = json.loads(stats.read_text())
            measured["trapped"] = counts["served"] + counts["continued"] + counts["failed"]
            measured["requests"] = counts["requests"]
            measured["sync_wake_up"] = counts.get("sync_wake_up")
        if sample_peak:
            measured["peak_kib"] = outcome.peak_kib
        if via_time:
            measured["tree_peak_kib"] = int(tree_peak.read_text().split()[-1])
        return measured

    def run_rounds(self, repeat: int, seed: int) -> None:
        rng = random.Random(seed)
        by_key = {w.key: w for w in self.workloads}
        runner_by_key = {r.key: r for r in self.runners}
        order = [pair for pair in self.cases for _ in range(by_key[pair[0]].samples_per_round)]
        for round_number in range(1, repeat + 1):
            rng.shuffle(order)
            began = time.monotonic()
            for workload_key, runner_key in order:
                measured = self.run_once(by_key[workload_key], runner_by_key[runner_key])
                if measured is None:
                    continue
                case = self.cases[(workload_key, runner_key)]
                for field in ("wall_s", "per_op_us", "trapped"):
                    if field in measured:
                        case[field].append(measured[field])
                case["requests"] = measured.get("requests", case["requests"])
                case["sync_wake_up"] = measured.get("sync_wake_up", case["sync_wake_up"])
            took = time.monotonic() - began
            print(f"round {round_number}/{repeat}: {len(order)} runs in {took:.0f} s", flush=True)

    def measure_memory(self) -> None:
        """Peak memory for W1 and W6 in separate untimed runs (sampling /proc while timing
        would steal CPU on a 2-CPU machine): of the manager alone (the hvfs process) and of
        the largest process in the tree, natively too for comparison. Maxima of 3 runs."""
        for workload in (w for w in self.workloads if w.key in MEMORY_WORKLOADS):
            for runner in self.runners:
                if (workload.key, runner.key) not in self.cases or not (runner.counts_traps or runner.key == "native"):
                    continue
                figures: dict[str, int | None] = {}
                if runner.counts_traps:
                    peaks = [self.run_once(workload, runner, sample_peak=True) for _ in range(MEMORY_RUNS)]
                    figures["manager_peak_kib"] = max((run["peak_kib"] for run in peaks if run), default=None)
                if os.access(TIME, os.X_OK):
                    trees = [self.run_once(workload, runner, via_time=True) for _ in range(MEMORY_RUNS)]
                    figures["tree_peak_kib"] = max((run["tree_peak_kib"] for run in trees if run), default=None)
                self.memory.setdefault(workload.key, {})[runner.key] = figures


def front_report(layout: Layout) -> dict[str, dict[str, int]]:
    """How many runs each native front did itself and how many it handed to the Python
    client, by reason (its HVFS_FRONT_TRACE lines); said, so that a front row that was
    really the Python client's is seen."""
    report: dict[str, dict[str, int]] = {}
    for baseline in (False, True):
        trace = runners_module.front_trace(layout, baseline)
        if not trace.exists():
            continue
        counts: dict[str, int] = {}
        for line in trace.read_text().splitlines():
            key = "itself" if line.startswith("native: ") else line
            counts[key] = counts.get(key, 0) + 1
        name = "baseline front" if baseline else "front"
        report[name] = counts
        handed = sum(n for key, n in counts.items() if key != "itself")
        print(f"{name}: {counts.get('itself', 0)} runs done by the front itself, {handed} handed to the Python client")
        for key, n in counts.items():
            if key != "itself":
                print(f"  {n}× {key}")
    return report


def stop_managers(layout: Layout) -> None:
    """Stop the managers the session's hvfs runs started, each in its state directory."""
    for name in runners_module.STATE_DIRS:
        source = layout.baseline_source if name == "state-base" else layout.hvfs_source
        if (layout.root / name).is_dir() and source.is_dir():
            env = {**runners_module.BASE_ENV, "PYTHONPATH": str(source), "HVFS_STATE_DIR": str(layout.root / name)}
            subprocess.run([*runners_module.HVFS, "manager", "stop"], env=env, capture_output=True, timeout=60)


def describe_runner(runner: Runner, layout: Layout, reason: str | None) -> dict[str, Any]:
    example = runner.command(Context(layout, layout.work, uses_work=True), ["CMD"]).argv
    text = shlex.join(example).replace(str(layout.work), "WORK").replace(sys.executable, "python")
    return {"key": runner.key, "label": runner.label, "reason": reason, "example": text}


def prepare(
    layout: Layout, workloads: list[Workload], runners: list[Runner], fronts: dict[str, Path]
) -> dict[str, str | None]:
    """Makes the fixtures, binaries (a native front for each copy of hvfs in ``fronts``:
    its WORK/bin name and the package it was copied from); returns, per runner, why it
    cannot be used here (None: it can), having said so. A workload that cannot run here is
    said so and taken out of ``workloads``."""
    for failure in fixtures.build_binaries(layout):
        print(f"build failed: {failure}")
    if any("front" in runner.key for runner in runners):
        for name, source in fronts.items():
            copy = (layout.baseline_source if name.endswith("-base") else layout.hvfs_source) / "hvfs"
            if (failure := fixtures.build_front(layout, source, copy, name)) is not None:
                print(f"build failed: {failure}")
    for workload in list(workloads):
        try:
            if workload.prepare is not None:
                workload.prepare(layout)
        except fixtures.Unavailable as why:
            print(f"skipping {workload.key}: {why}")
            workloads.remove(workload)
    reasons = {}
    for runner in runners:
        reasons[runner.key] = reason = runners_module.probe(runner, layout)
        if reason is not None:
            print(f"skipping {runner.label}: {reason}")
    return reasons


def save(document: dict[str, Any], full: bool) -> None:
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    stamp = document["created"].replace(":", "").replace("-", "")
    (RESULTS / f"{stamp}.json").write_text(text)
    print(f"\nwrote {RESULTS / (stamp + '.json')}")
    if full:
        (RESULTS / "latest.json").write_text(text)
        write_docs(Results(document))


def write_docs(results: Results) -> None:
    publish.write_chart(results, DOCS / "performance.png")
    publish.write_markdown(results, DOCS / "performance.md", "performance.png")
    print(f"wrote {DOCS / 'performance.md'} and {DOCS / 'performance.png'}")


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.replot is not None:
        results = Results(json.loads(args.replot.read_text()))
        print_report(results)
        write_docs(results)
        return
    seed = args.seed if args.seed is not None else time.time_ns() % 2**32
    layout = fixtures.make_layout()
    try:
        starts_per_round = math.ceil(args.starts / args.repeat)
        workloads = select(all_workloads(args.iterations, starts_per_round), args.only, "workload")
        chosen = select(runners_module.all_runners(layout), args.runners, "runner")
        hvfs_digest = fixtures.snapshot_hvfs(layout, *([args.hvfs.resolve()] if args.hvfs else []))
        for name in runners_module.STATE_DIRS:
            (layout.root / name).mkdir(mode=0o700)
        if args.baseline:
            fixtures.snapshot_hvfs(layout, args.baseline.resolve(), layout.baseline_source)
            chosen += runners_module.baseline_runners(chosen)
        fronts = {runners_module.FRONT: args.hvfs.resolve() if args.hvfs else fixtures.REPO / "hvfs"}
        if args.baseline:
            fronts[runners_module.FRONT + "-base"] = args.baseline.resolve()
        reasons = prepare(layout, workloads, chosen, fronts)
        session = Session(layout, workloads, [r for r in chosen if reasons[r.key] is None])
        print(f"{len(session.cases)} pairs, {args.repeat} rounds, seed {seed}; session directory {layout.root}")
        session.run_rounds(args.repeat, seed)
        session.measure_memory()
        document = {
            "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": shlex.join(["python", "benchmarks/run.py", *argv]),
            "settings": {"repeat": args.repeat, "iterations": args.iterations, "starts": args.starts, "seed": seed},
            "machine": machine.describe()
            | {"HVFS sources (sha256 of hvfs/*.py)": hvfs_digest}
            | ({"HVFS package from": str(args.hvfs.resolve())} if args.hvfs else {})
            | ({"baseline HVFS package from": str(args.baseline.resolve())} if args.baseline else {}),
            "workloads": [
                {"key": w.key, "title": w.title, "command": w.describe(layout), "per_op": w.per_op} for w in workloads
            ],
            "runners": [describe_runner(r, layout, reasons[r.key]) for r in chosen],
            "cases": list(session.cases.values()),
            "memory": session.memory,
            "front": front_report(layout),
        }
    finally:
        stop_managers(layout)
        fixtures.unmount_tmpfs(layout)
        shutil.rmtree(layout.root, ignore_errors=True)
    results = Results(document)
    print_report(results)
    whole = (args.only is None and args.runners is None) or args.write_docs
    save(document, full=args.hvfs is None and args.baseline is None and whole)


if __name__ == "__main__":
    main(sys.argv[1:])
