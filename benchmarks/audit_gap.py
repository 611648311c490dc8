"""What an audited run of a suite workload costs beyond the same run unaudited, in what is
not bimodal on a shared machine (issue 14, ``--strict --audit`` within 1.1× of ``--strict``):
the requests handed to Python (``--stats``' ``compiled``), which kinds C served in one and not
the other, and the manager's CPU per request (all its threads: the C loop, the dispatch, the
audit's ring and writer).

    python benchmarks/audit_gap.py [--only W3t,W5,W6,W8,W8r] [--rounds 5] [--baseline DIR]

Each round runs every workload ``hvfs run --strict`` and ``hvfs run --strict --audit FILE``
(this interpreter's ``-m hvfs``, the suite's options and fixtures: benchmarks/workloads.py),
each build on a warm manager of its own in a private state directory, interleaved. The
manager's CPU is read with ``perf stat -e task-clock -p PID`` around the run where perf is
installed (exact, and it counts the threads that end), else from /proc/PID/stat (clock
ticks: 10 ms). ``--baseline DIR``: the hvfs package in DIR (e.g. /tmp/before/hvfs) measured
too. W3t mounts a tmpfs (root only). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import fixtures
import workloads

HERE = Path(__file__).resolve().parent
SETUPS = ("--strict", "--strict --audit")
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _manager_pid(state: Path) -> int:
    return int(json.loads((state / "manager.json").read_text())["pid"])


def _ticks_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def _cpu_ms(pid: int, run: list[str], env: dict[str, str], cwd: Path) -> float:
    """The manager's CPU milliseconds while ``run`` runs (in ``cwd``: not this tree, which
    ``python -m`` would put first on sys.path, ahead of the build's PYTHONPATH)."""
    if shutil.which("perf") is None:
        began = _ticks_ms(pid)
        subprocess.run(run, env=env, cwd=cwd, check=True, capture_output=True)
        return _ticks_ms(pid) - began
    perf = subprocess.Popen(
        ["perf", "stat", "-x,", "-e", "task-clock", "-p", str(pid)], stderr=subprocess.PIPE, text=True
    )
    time.sleep(0.2)  # attached before the run
    subprocess.run(run, env=env, cwd=cwd, check=True, capture_output=True)
    time.sleep(0.1)  # the VM's last answers
    perf.send_signal(signal.SIGINT)
    counted = perf.communicate()[1]
    return next(float(line.split(",")[0]) for line in counted.splitlines() if ",task-clock," in line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="W3t,W5,W6,W8,W8r")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="another hvfs package to measure too")
    args = parser.parse_args()
    builds = {"this": HERE.parent} | ({"baseline": args.baseline.resolve().parent} if args.baseline else {})
    chosen = [w for w in workloads.all_workloads(20000, 1) if w.key in args.only.split(",")]
    layout = fixtures.make_layout()
    failed = fixtures.compile_c(HERE / "openbench.c", layout.bin / "openbench")  # W8's
    if failed is not None:
        sys.exit(f"openbench: {failed}")
    (layout.work / "file").write_text("x\n")
    for workload in chosen:  # before the managers start: W3t's tmpfs is then in their view from the first
        if workload.prepare is not None:
            workload.prepare(layout)
    envs: dict[str, dict[str, str]] = {}
    for name, package in builds.items():
        state = layout.root / f"state-{name}"
        state.mkdir(mode=0o700)
        envs[name] = {**os.environ, "HVFS_STATE_DIR": str(state), "PYTHONPATH": str(package)}
        subprocess.run([sys.executable, "-m", "hvfs", "run", "--", "true"], env=envs[name], cwd=layout.work, check=True)
    # (workload, build, setup) -> [(cpu ms, requests, handed, compiled)]
    samples: dict[tuple[str, str, str], list[tuple[float, int, int, dict[str, int]]]] = {}
    try:
        for workload in chosen:  # a warm spare of each configuration, as the rounds will find it
            for env in envs.values():
                _run(layout, workload, env, SETUPS[0])
        for _ in range(args.rounds):
            for workload in chosen:
                for name, env in envs.items():
                    for setup in SETUPS:
                        samples.setdefault((workload.key, name, setup), []).append(_run(layout, workload, env, setup))
    finally:
        for env in envs.values():
            subprocess.run([sys.executable, "-m", "hvfs", "manager", "stop"], env=env, cwd=layout.work, check=False)
        fixtures.unmount_tmpfs(layout)
        shutil.rmtree(layout.root, ignore_errors=True)
    _report(chosen, builds, samples)


def _run(
    layout: fixtures.Layout, workload: workloads.Workload, env: dict[str, str], setup: str
) -> tuple[float, int, int, dict[str, int]]:
    if workload.reset is not None:
        workload.reset(layout)
    stats, audit = layout.scratch / "stats.json", layout.scratch / "audit.jsonl"
    audit.unlink(missing_ok=True)
    options = ["--strict", "--stats", str(stats)] + (["--audit", str(audit)] if "--audit" in setup else [])
    work = str(layout.work)
    run = [sys.executable, "-m", "hvfs", "run", *options, "-v", f"{work}:{work}", "-w", str(workload.cwd(layout))]
    run += ["-e", PATH, "-e", "LANG=C.UTF-8", "-e", f"HOME={work}/home", "-e", f"TMPDIR={work}/tmp"]
    used = _cpu_ms(_manager_pid(Path(env["HVFS_STATE_DIR"])), [*run, "--", *workload.argv(layout)], env, layout.work)
    compiled: dict[str, int] = json.loads(stats.read_text())["compiled"]
    requests = compiled["answered"] + compiled["continued"] + compiled["handed_to_python"]
    return used, requests, compiled["handed_to_python"], compiled


def _report(
    chosen: list[workloads.Workload],
    builds: dict[str, Path],
    samples: dict[tuple[str, str, str], list[tuple[float, int, int, dict[str, int]]]],
) -> None:
    print("manager CPU per run, ms: median (min–max); per request, µs (median); hand-offs to Python (min–max)")
    for workload in chosen:
        for name in builds:
            plain, audited = (samples[workload.key, name, setup] for setup in SETUPS)
            line = [f"{workload.key:4} {name:8}"]
            for setup, runs in zip(SETUPS, (plain, audited), strict=True):
                cpu = [used for used, *_ in runs]
                per = statistics.median(used * 1e3 / requests for used, requests, *_ in runs)
                handed = [handed for _, _, handed, _ in runs]
                line.append(
                    f"{setup}: {statistics.median(cpu):.1f} ({min(cpu):.1f}–{max(cpu):.1f}) ms, {per:.2f} µs/req,"
                    f" handed {min(handed)}–{max(handed)}"
                )
            ratio = statistics.median(u for u, *_ in audited) / statistics.median(u for u, *_ in plain)
            print("  ".join(line) + f"  audited ÷ strict CPU {ratio:.2f}")
            differ = _kinds_that_differ(plain[-1][3], audited[-1][3])
            if differ:
                print(f"     C's counts that differ (strict -> audited, last round): {differ}")


def _kinds_that_differ(plain: dict[str, int], audited: dict[str, int]) -> str:
    keys = sorted(set(plain) | set(audited))
    return ", ".join(
        f"{k} {plain.get(k, 0)}->{audited.get(k, 0)}" for k in keys if plain.get(k, 0) != audited.get(k, 0)
    )


if __name__ == "__main__":
    main()
