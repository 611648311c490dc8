"""Warm `hvfs run -- true` under the ptrace driver through the native front, beside the
seccomp driver and proot, interleaved round by round; and where the ptrace start's
milliseconds go (the manager's phases, stamped as benchmarks/startup_phases.py does).

    python benchmarks/ptrace_startup.py [--front .venv/bin/hvfs] [ROUNDS]
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
from startup_phases import HOOK  # noqa: E402

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
    with tempfile.TemporaryDirectory() as state, tempfile.TemporaryDirectory() as hook:
        os.chmod(state, 0o700)
        with open(os.path.join(hook, "sitecustomize.py"), "w") as f:
            f.write(HOOK + EXTRA)
        phases = os.path.join(hook, "phases.jsonl")
        env = dict(os.environ, HVFS_STATE_DIR=state, HVFS_PHASES=phases, PYTHONPATH=hook)
        commands = {
            "proot true": ["proot", "-w", "/", "true"],
            "front seccomp true": [front, "run", "--driver", "seccomp", "--", "true"],
            "front ptrace true": [front, "run", "--driver", "ptrace", "--", "true"],
        }
        for command in commands.values():  # the manager up, a spare of each asked for
            subprocess.run(command, env=env, check=True, capture_output=True, cwd="/")
        time.sleep(1)
        open(phases, "w").close()
        walls: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(rounds):
            for name, command in commands.items():
                began = time.perf_counter()
                subprocess.run(command, env=env, check=True, capture_output=True, cwd="/")
                walls[name].append((time.perf_counter() - began) * 1000)
        with open(phases) as f:
            records = [json.loads(line) for line in f]
        subprocess.run([front, "manager", "stop"], env=env, capture_output=True)
    proot = statistics.median(walls["proot true"])
    for name, xs in walls.items():
        median = statistics.median(xs)
        print(f"{name:30} {median:7.2f} ms  x{median / proot:5.2f} proot  (n={len(xs)})")
    by: dict[str, list[float]] = {}
    for r in records:
        by.setdefault(r["phase"], []).append(r["ms"])
    print("manager phases (both drivers' runs together; n tells which):")
    for phase, xs in by.items():
        print(f"  {phase:58} {statistics.median(xs):7.2f} ms  (n={len(xs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
