"""What the audit costs per served request end to end, in the manager's CPU time: real
VMs (``hvfs run --strict`` and ``hvfs run --strict --audit FILE``) on one warm manager.

    python benchmarks/audit_cpu_vm.py [--requests 20000] [--rounds 5] [--hvfs DIR]

A program in the VM (python3) makes W8's write-opens of one file, W3's creates and
unlinks, or W5's lstat and stat, each in a run of a few and in a run of many; the
manager's CPU time (user + system, all its threads: the driver's receiving and
answering, the dispatch, the audit's ring and writer) is read from /proc before and after
each run, and the difference between the two runs, divided by the requests between them,
is the CPU per request without the VM's start and the program's own (they are in both).
Rounds alternate the two; the best round is the figure (the machine is shared), medians
too. ``--hvfs DIR``: the hvfs package in DIR (e.g. another commit's), for a before and
after. A manager of its own in a private state directory, stopped at the end. Not a
test: nothing is asserted.
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

PROGRAMS = {  # the workload, and the served requests of one iteration
    "W8 open": ("fd = os.open(p, os.O_WRONLY); os.close(fd)", 1),
    "W3 create+unlink": (
        "fd = os.open(q, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644); os.close(fd); os.unlink(q)",
        2,
    ),
    "W5 stat": ("os.lstat(p); os.stat(p)", 2),
}
SETUPS = ("--strict", "--strict --audit")
FEW = 200  # iterations of the short run


def manager_cpu(state: Path) -> float:
    """The CPU seconds the state directory's manager has used (all its threads)."""
    pid = json.loads((state / "manager.json").read_text())["pid"]
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def run(env: dict[str, str], work: Path, setup: str, program: str, count: int) -> float:
    """The manager's CPU seconds for one VM running ``program`` ``count`` times."""
    options = ["--strict"] + (["--audit", str(work / "audit.jsonl")] if "--audit" in setup else [])
    code = f"import os, sys\np, q = sys.argv[1] + '/f', sys.argv[1] + '/g'\nfor _ in range({count}):\n    {program}\n"
    state = Path(env["HVFS_STATE_DIR"])
    began = manager_cpu(state)
    subprocess.run(
        [sys.executable, "-m", "hvfs", "run", *options, "-v", f"{work}:{work}", "--", "python3", "-c", code, str(work)],
        env=env,
        cwd=work,  # not this tree: `python -m` puts the working directory first on sys.path
        check=True,
    )
    return manager_cpu(state) - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000, help="served requests between the two runs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hvfs", type=Path, help="the directory holding the hvfs package to run (default: this one's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hvfs-audit-vm-") as directory:
        work = Path(directory) / "work"
        state = Path(directory) / "state"
        work.mkdir()
        state.mkdir(mode=0o700)
        (work / "f").write_text("content\n")
        env = {**os.environ, "HVFS_STATE_DIR": str(state)}
        if args.hvfs is not None:
            env["PYTHONPATH"] = str(args.hvfs.resolve())
        subprocess.run([sys.executable, "-m", "hvfs", "run", "--", "true"], env=env, cwd=work, check=True)  # warm
        samples: dict[tuple[str, str], list[float]] = {(s, w): [] for s in SETUPS for w in PROGRAMS}
        try:
            for _ in range(args.rounds):
                for work_name, (program, per) in PROGRAMS.items():
                    many = FEW + args.requests // per
                    for setup in SETUPS:
                        few = run(env, work, setup, program, FEW)
                        lots = run(env, work, setup, program, many)
                        samples[setup, work_name].append((lots - few) / ((many - FEW) * per) * 1e6)
        finally:
            subprocess.run([sys.executable, "-m", "hvfs", "manager", "stop"], env=env, cwd=work, check=False)
    print(f"manager CPU per served request, end to end (µs; all its threads), {args.rounds} rounds:")
    print(f"  {'workload':<18} {'--strict':>9} {'--audit':>9} {'ratio':>9} {'median ratio':>13}")
    for work_name in PROGRAMS:
        plain, audited = samples["--strict", work_name], samples["--strict --audit", work_name]
        print(
            f"  {work_name:<18} {min(plain):9.1f} {min(audited):9.1f} {min(audited) / min(plain):8.2f}x "
            f"{statistics.median(audited) / statistics.median(plain):12.2f}x"
        )


if __name__ == "__main__":
    main()
