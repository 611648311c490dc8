"""How much of a trapped call's cost on an idle machine is the wake-up of a halted CPU.

A trapped call is a round trip between the VM's thread and the manager's serving thread.
When the two run on different CPUs and the one woken has gone idle, waking it costs what
the machine's idle states cost: on a guest that halts its vCPUs (this development machine
does: ``haltpoll`` governor off, ``guest_halt_poll_ns`` 0), tens of µs per wake-up. The
seccomp driver's sync wake-up flag keeps the notification and the NOTIF_SEND answer on one
CPU, but the kernel wakes a thread for ADDFD (with or without ADDFD_FLAG_SEND) by a plain
``complete()``, which may place it on the idle CPU; the ptrace driver has no such flag at all.

This measures openbench (µs per open+close, the program's own median of 5 batches) with the
CPUs as they are and with every CPU kept awake by a SCHED_IDLE busy loop (which yields to any
other task at once, so it only changes what waking an idle CPU costs), round by round, each
variant with its own manager. The difference is the wake-ups' share. Not a test: nothing is
asserted; the figures mean something only on an otherwise idle machine (report the load).

    python benchmarks/idle_wake.py [ROUNDS] [--iterations N] [--spinners N] [--hvfs DIR]

``--hvfs DIR``: the hvfs package's parent directory to run (default: this checkout).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import idle_state

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# (label, ``hvfs run`` options, openbench's path and mode); FILE is a file in the work dir
CASES = [
    ("W8r --strict (ADDFD+SEND)", ["--strict"], ["FILE", "r"]),
    ("W8 (ADDFD, then SEND)", [], ["FILE", "w"]),
    ("W8c (CONTINUE)", [], ["/dev/null", "w"]),
    ("W8c --driver ptrace", ["--driver", "ptrace"], ["/dev/null", "w"]),
    ("W8 --driver ptrace", ["--driver", "ptrace"], ["FILE", "w"]),
]
SPIN = "import os\nos.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\nwhile True:\n    pass\n"


def openbench(work: Path, env: dict[str, str], options: list[str], target: list[str], iterations: int) -> float:
    path = str(work / "file") if target[0] == "FILE" else target[0]
    command = [str(work / "openbench"), path, target[1], str(iterations)]
    done = subprocess.run(
        [sys.executable, "-m", "hvfs", "run", *options, "-v", f"{work}:{work}", "--", *command],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"idle_wake: hvfs run {' '.join(options)} failed ({done.returncode}): {done.stderr.strip()}")
    return float(done.stdout.split()[-1])


def awake(count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` SCHED_IDLE busy loops, started and given a moment to be scheduled."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(count)]
    time.sleep(0.3)
    return spinners


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("rounds", nargs="?", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20000, help="opens per openbench run")
    parser.add_argument("--spinners", type=int, default=os.cpu_count() or 1, help="busy loops (default: one per CPU)")
    parser.add_argument("--hvfs", type=Path, default=REPO, help="the hvfs package's parent directory")
    args = parser.parse_args()
    rounds, iterations, package = args.rounds, args.iterations, args.hvfs.resolve()
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as d:
        work = Path(d) / "work"
        work.mkdir()
        (work / "file").write_text("x\n")
        subprocess.run(["gcc", "-O2", "-o", str(work / "openbench"), str(HERE / "openbench.c")], check=True)
        envs = {}
        for number, (label, _, _) in enumerate(CASES):
            state = Path(d) / f"state{number}"
            state.mkdir(mode=0o700)
            envs[label] = {**os.environ, "HVFS_STATE_DIR": str(state), "PYTHONPATH": str(package)}
        print(f"idle state: {idle_state()}; load {os.getloadavg()[0]:.2f}", flush=True)
        try:
            for number in range(rounds):
                for kept in (False, True) if number % 2 == 0 else (True, False):
                    spinners = awake(args.spinners) if kept else []
                    try:
                        for label, options, target in CASES:
                            figure = openbench(work, envs[label], options, target, iterations)
                            results.setdefault((label, "awake" if kept else "as is"), []).append(figure)
                    finally:
                        for spinner in spinners:
                            spinner.kill()
                            spinner.wait()
                print(f"round {number + 1}/{rounds} done; load {os.getloadavg()[0]:.2f}", flush=True)
        finally:
            for label, _, _ in CASES:
                subprocess.run([sys.executable, "-m", "hvfs", "manager", "stop"], env=envs[label], capture_output=True)
    print(f"\n{'µs per open+close, median (min–max)':<34} {'CPUs as they are':>24} {'every CPU kept awake':>24}  ratio")
    for label, _, _ in CASES:
        as_is, kept = results[(label, "as is")], results[(label, "awake")]
        cells = [f"{statistics.median(v):.1f} ({min(v):.1f}–{max(v):.1f})" for v in (as_is, kept)]
        print(f"{label:<34} {cells[0]:>24} {cells[1]:>24}  {statistics.median(as_is) / statistics.median(kept):.1f}×")


if __name__ == "__main__":
    main()
