"""The supervisor's CPU per trapped request of a workload under ``hvfs run --strict`` against
the strict floor's (issue 14: W2, W3t and W5 within 1.3× of ``floor-strict-sync``), to tell
the C loop's own cost per request from the rest of the wall-time gap (the VM's start,
wake-ups, the CPU the VM's programs run on).

    python benchmarks/served_floor_cpu.py [--workload W5|W2|W3t] [--rounds 5] [--hvfs DIR]

Each round runs the workload (W5: git status and git log in a 2,000-file repository; W2:
find -printf over the stdlib; W3t: untar and rm -rf of 3,000 files on a tmpfs, root only)
five times over (in one VM, the ticks of /proc too coarse for one run) under each, in turn:
- hvfs: ``hvfs-py run --strict --stats FILE`` on one warm manager of its own (a private
  state directory, stopped at the end), its CPU time (user + system, all its threads,
  /proc/PID/stat) read before and after the run, less that of a ``hvfs run --strict --
  true`` (the VM's start and end), divided by the requests the stats count (answered,
  continued, handed to Python);
- floor: ``floor strict:FILTER sync nopin`` (benchmarks/floor), its own CPU time
  (getrusage, without the child's) and requests, both printed with ``FLOOR_COUNTS=1``.
Prints each round and the medians, in µs per request. ``--hvfs DIR``: the hvfs package in
DIR (e.g. another commit's). The machine is shared and /proc counts in clock ticks
(10 ms): use several rounds. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fixtures  # noqa: E402
from workloads import GIT  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
TIMES = 5  # W5 runs in one VM: /proc counts the manager's time in ticks of 10 ms, one run's is ~0.1 s


def _times(command: str) -> list[str]:
    return ["sh", "-c", f"for _ in {' '.join(['x'] * TIMES)}; do {command}; done"]


def _w5(layout: fixtures.Layout) -> tuple[list[str], Path]:
    fixtures.make_git_repo(layout)
    git = " ".join(GIT)
    status = f"{git} -c core.untrackedCache=false status --porcelain >/dev/null"
    return _times(f"{status} && {git} log --stat >/dev/null"), layout.templates / "repo"


def _w2(layout: fixtures.Layout) -> tuple[list[str], Path]:
    fixtures.copy_pylib(layout)
    return _times(f'find {layout.work}/pylib -printf "%s %m %p\\n" >/dev/null'), layout.work


def _w3t(layout: fixtures.Layout) -> tuple[list[str], Path]:
    fixtures.mount_tmpfs(layout)  # raises fixtures.Unavailable without root
    cwd = fixtures.tmpfs_dir(layout) / "w3"
    cwd.mkdir()
    return _times(f"tar -xf {layout.work}/w3.tar && rm -rf tree"), cwd


WORKLOADS = {"W5": _w5, "W2": _w2, "W3t": _w3t}  # each makes its fixtures: the command and its directory


def _manager_cpu(state: Path) -> float:
    """The manager's CPU time so far, in seconds (all its threads, those gone too)."""
    pid = json.loads((state / "manager.json").read_text())["pid"]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime: fields 14 and 15


def _hvfs_round(package: Path, state: Path, command: list[str], work: Path, cwd: Path, scratch: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(package), "HVFS_STATE_DIR": str(state)}
    base = [sys.executable, "-m", "hvfs", "run", "--strict", "-v", f"{work}:{work}", "-w", str(cwd)]
    subprocess.run([*base, "--", "true"], env=env, check=True)  # a manager up, warm
    before = _manager_cpu(state)
    subprocess.run([*base, "--", "true"], env=env, check=True)
    start = _manager_cpu(state) - before
    stats = scratch / "stats.json"
    before = _manager_cpu(state)
    subprocess.run([*base, "--stats", str(stats), "--", *command], env=env, check=True)
    spent = _manager_cpu(state) - before - start
    compiled = json.loads(stats.read_text())["compiled"]
    requests = sum(compiled.get(key, 0) for key in ("answered", "continued", "handed_to_python"))
    return spent / requests * 1e6


def _floor_round(floor: Path, program: Path, command: list[str], cwd: Path) -> float:
    done = subprocess.run(
        [str(floor), f"strict:{program}", "sync", "nopin", *command],
        cwd=cwd,
        env={**os.environ, "FLOOR_COUNTS": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    words = done.stderr.split("floor:")[-1].split()
    counted = dict(zip(words[::2], map(int, words[1::2]), strict=True))
    cpu = counted.pop("cpu_us")
    return cpu / sum(counted.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="W5")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hvfs", type=Path, default=HERE.parent, help="a directory holding the hvfs package")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="served-floor-") as directory:
        root = Path(directory)
        layout = fixtures.Layout(root)
        layout.templates.mkdir()
        (layout.work / "home").mkdir(parents=True)
        try:
            command, cwd = WORKLOADS[options.workload](layout)
        except fixtures.Unavailable as why:
            sys.exit(f"{options.workload}: {why}")
        work = cwd if options.workload == "W5" else layout.work  # W5's repository alone, as before
        floor, program = root / "floor", root / "strict.bpf"
        source = HERE / "floor" / "floor.c"
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(floor), str(source)], check=True)
        why = fixtures.write_strict_filter(options.hvfs, program)
        if why:
            sys.exit(f"no strict filter: {why}")
        state = root / "state"
        state.mkdir()
        hvfs: list[float] = []
        floors: list[float] = []
        try:
            for round_ in range(options.rounds):
                hvfs.append(_hvfs_round(options.hvfs, state, command, work, cwd, root))
                floors.append(_floor_round(floor, program, command, cwd))
                print(f"round {round_ + 1}: hvfs {hvfs[-1]:.2f}, floor {floors[-1]:.2f} µs CPU per request", flush=True)
        finally:
            env = {**os.environ, "PYTHONPATH": str(options.hvfs), "HVFS_STATE_DIR": str(state)}
            subprocess.run([sys.executable, "-m", "hvfs", "manager", "stop"], env=env, capture_output=True)
            fixtures.unmount_tmpfs(layout)
        h, f = statistics.median(hvfs), statistics.median(floors)
        spans = [f"{min(values):.2f}-{max(values):.2f}" for values in (hvfs, floors)]
        print(f"median: hvfs {h:.2f} ({spans[0]}), floor {f:.2f} ({spans[1]}) µs per request; {h / f:.2f}×")


if __name__ == "__main__":
    main()
