"""A cold ``hvfs run -- true`` of two checkouts, alternated: its wall time, and the CPU the
manager it started has used by the time the run has ended (issue 14).

    python benchmarks/cold_cpu.py BEFORE AFTER [ROUNDS]

(``ROOT+NAME=VALUE``, e.g. ``A+HVFS_COLDSET=0 A``, runs that checkout with that variable set.)

BEFORE and AFTER are checkouts set up by ``scripts/setup``, each run through its native
front (``.venv/bin/hvfs``) with a private state directory of its own; each round stops
both managers and runs each front once, cold (which goes first alternates). The
manager's CPU is the sum of its live threads' run time (``/proc/PID/task/*/schedstat``,
in ns): from its spawn, the interpreter, its imports, its own start and its first VM (a
helper process it started, or a thread that has ended, is not in it). On a machine
shared with other work the wall time moves with the load; the CPU much less. Medians and
means; nothing asserted.
"""

from __future__ import annotations

import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def manager_cpu_ms(state: str) -> float:
    with open(f"{state}/manager.json") as f:
        pid = json.load(f)["pid"]
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except OSError:  # a thread that ended meanwhile
            pass
    return total / 1e6


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    given = [a.split("+") for a in sys.argv[1:3]]  # ROOT[+NAME=VALUE...]: the same tree, two settings
    roots = [os.path.abspath(g[0]) for g in given]
    settings = [dict(setting.split("=", 1) for setting in g[1:]) for g in given]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    states = [tempfile.mkdtemp(prefix="hvfs-cold-cpu-") for _ in roots]
    envs = [
        dict(os.environ, HVFS_STATE_DIR=s, PYTHONPATH=r, **e) for r, s, e in zip(roots, states, settings, strict=True)
    ]
    got: list[dict[str, list[float]]] = [{"wall": [], "manager CPU": []} for _ in roots]
    try:
        for number in range(rounds):
            for i in (0, 1) if number % 2 == 0 else (1, 0):
                front = f"{roots[i]}/.venv/bin/hvfs"
                subprocess.run([front, "manager", "stop"], env=envs[i], capture_output=True)
                time.sleep(0.15)
                began = time.perf_counter()
                subprocess.run([front, "run", "--", "true"], env=envs[i], check=True, cwd="/")
                got[i]["wall"].append((time.perf_counter() - began) * 1000)
                got[i]["manager CPU"].append(manager_cpu_ms(states[i]))
    finally:
        for root, env in zip(roots, envs, strict=True):
            subprocess.run([f"{root}/.venv/bin/hvfs", "manager", "stop"], env=env, capture_output=True)
    names = " -> ".join(
        os.path.basename(root) + "".join(f" {k}={v}" for k, v in e.items())
        for root, e in zip(roots, settings, strict=True)
    )
    print(f"cold `hvfs run -- true`, {rounds} rounds alternated: {names}")
    for what in ("wall", "manager CPU"):
        before, after = (statistics.median(g[what]) for g in got)
        means = " -> ".join(f"{statistics.mean(g[what]):.1f}" for g in got)
        print(f"  {what:12} median {before:7.1f} -> {after:7.1f} ms ({after / before:.2f}x); means {means}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
