"""Warm `hvfs run -- true` under the ptrace driver through the native front, beside the
seccomp driver and proot, interleaved round by round; and where the ptrace start's
milliseconds go (the manager's phases, stamped as benchmarks/startup_phases.py does).

    python benchmarks/ptrace_startup.py [--front .venv/bin/hvfs] [ROUNDS]

The row "no spares" is the ptrace driver's start as it was before its spares: a second
manager of the same build with HVFS_SPARE=0 (the client's environment says so too, so
that the front serves it).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from startup_phases import HOOK

PYTHON = [sys.executable, "-m", "hvfs"]  # starts the managers: the front hands a cold start to it anyway

EXTRA = r"""
if _PATH and "serve" in sys.argv:
    from hvfs.intercept import ptrace as _ptrace
    from hvfs.intercept.ptrace import driver as _pdriver
    _wrap(_pdriver.PtraceDriver, "__init__", "ptrace: driver made")
    _wrap(_pdriver.PtraceDriver, "start", "ptrace: pid 1 seized (tracer thread started)")
    _wrap(_pdriver.PtraceDriver, "join", "exit: ptrace tracer joined")
"""


def main() -> int:
    arguments = sys.argv[1:]
    front = os.path.abspath(".venv/bin/hvfs")
    if arguments[:1] == ["--front"]:
        front, arguments = os.path.abspath(arguments[1]), arguments[2:]
    rounds = int(arguments[0]) if arguments else 20
    with (
        tempfile.TemporaryDirectory() as state,
        tempfile.TemporaryDirectory() as cold,
        tempfile.TemporaryDirectory() as hook,
    ):
        os.chmod(state, 0o700)
        os.chmod(cold, 0o700)
        with open(os.path.join(hook, "sitecustomize.py"), "w") as f:
            f.write(HOOK + EXTRA)
        phases = os.path.join(hook, "phases.jsonl")
        env = dict(os.environ, HVFS_STATE_DIR=state, HVFS_PHASES=phases, PYTHONPATH=hook)
        no_spares = dict(env, HVFS_STATE_DIR=cold, HVFS_SPARE="0")
        commands = {
            "proot true": ["proot", "-w", "/", "true"],
            "front seccomp true": [front, "run", "--driver", "seccomp", "--", "true"],
            "front ptrace true": [front, "run", "--driver", "ptrace", "--", "true"],
            "front ptrace true, no spares": [front, "run", "--driver", "ptrace", "--", "true"],
        }
        envs = {name: no_spares if "no spares" in name else env for name in commands}
        for name, command in commands.items():  # the managers up, a spare of each asked for
            subprocess.run([*PYTHON, *command[1:]] if command[0] == front else command, env=envs[name],
                           check=True, capture_output=True, cwd="/")  # fmt: skip
        time.sleep(1)
        open(phases, "w").close()
        walls: dict[str, list[float]] = {name: [] for name in commands}
        by: dict[str, dict[str, list[float]]] = {}  # run: phase: ms
        for _ in range(rounds):
            for name, command in commands.items():
                began = time.perf_counter()
                subprocess.run(command, env=envs[name], check=True, capture_output=True, cwd="/")
                walls[name].append((time.perf_counter() - began) * 1000)
                time.sleep(0.05)  # the run's exit and the next spare, off the next run's stamps
                with open(phases) as f:
                    for line in f:
                        record = json.loads(line)
                        by.setdefault(name, {}).setdefault(record["phase"], []).append(record["ms"])
                open(phases, "w").close()
        for stop in (env, no_spares):
            subprocess.run([front, "manager", "stop"], env=stop, capture_output=True)
    proot = statistics.median(walls["proot true"])
    for name, xs in walls.items():
        median = statistics.median(xs)
        print(f"{name:30} {median:7.2f} ms  x{median / proot:5.2f} proot  (n={len(xs)})")
    for name, phases_of in by.items():
        print(f"manager phases of {name} (each run's, and the spare made after it):")
        for phase, xs in phases_of.items():
            print(f"  {phase:58} {statistics.median(xs):7.2f} ms  (n={len(xs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
