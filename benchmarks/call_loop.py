"""The wall time per call of one call in a loop in the program (20,000 calls, less as many
turns of an empty loop), under ``hvfs run --strict`` (the native front, a warm manager of its
own) of this checkout and of a baseline, and under the floor's strict mode +sync (a minimal C
supervisor that traps what ``--strict`` traps), alternated round by round. Not a test:
nothing is asserted.

    python benchmarks/call_loop.py [ROUNDS] [--baseline CHECKOUT] [--only NAME,NAME]

CHECKOUT: a built checkout (its ``.venv/bin/hvfs``). Prints each runner's median µs per call
and the ratios to the floor (and this checkout's to the baseline's).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from fixtures import STRICT_FILTER, compile_c, write_strict_filter

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
COUNT = 20000
CALLS = {
    "stat": "os.stat(p)",
    "readlink": "os.readlink(l)",
    "access": "os.access(p, os.R_OK)",
    "faccessat2": "os.access(p, os.R_OK, effective_ids=True)",
}
LOOP = """import os, sys, time
p, l = sys.argv[1] + '/f', sys.argv[1] + '/l'
def timed(body):
    began = time.perf_counter_ns()
    for _ in range({count}):
        body()
    return time.perf_counter_ns() - began
empty = timed(lambda: None)
print((timed(lambda: {call}) - empty) / {count} / 1000)
"""


def main() -> None:
    args = sys.argv[1:]

    def option(name: str) -> str | None:
        return args[args.index(name) + 1] if name in args else None

    baseline, only = option("--baseline"), option("--only")
    rounds = int(next((a for a in args if a.isdigit()), "5"))
    calls = {name: CALLS[name] for name in only.split(",")} if only else CALLS
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        os.chmod(root, 0o755)
        work = root / "work"
        work.mkdir()
        (work / "f").write_text("x\n")
        (work / "l").symlink_to("f")
        floor_binary, bpf = root / "floor", root / STRICT_FILTER
        failure = compile_c(HERE / "floor" / "floor.c", floor_binary) or write_strict_filter(REPO, bpf)
        if failure:
            sys.exit(f"call_loop: the floor could not be built: {failure}")
        runners = {"hvfs --strict": REPO}
        if baseline:
            runners["baseline --strict"] = Path(baseline)
        commands: dict[str, tuple[list[str], dict[str, str]]] = {}
        for name, checkout in runners.items():
            state = root / f"state-{len(commands)}"
            state.mkdir(mode=0o700)
            front = [str(checkout / ".venv" / "bin" / "hvfs"), "run", "--strict", "-v", f"{work}:{work}"]
            commands[name] = ([*front, "--"], {**os.environ, "HVFS_STATE_DIR": str(state)})
        floor = [str(floor_binary), f"strict:{bpf}", "sync", "nopin"]
        commands["floor strict +sync"] = (floor, dict(os.environ))
        found: dict[tuple[str, str], list[float]] = {}
        for _ in range(rounds):
            for call, body in calls.items():
                code = LOOP.format(count=COUNT, call=body)
                for name, (command, env) in commands.items():
                    argv = [*command, "python3", "-c", code, str(work)]
                    out = subprocess.run(argv, env=env, cwd=work, check=True, capture_output=True, text=True).stdout
                    found.setdefault((call, name), []).append(float(out.split()[-1]))
        for name, (command, env) in commands.items():
            if not name.startswith("floor"):
                subprocess.run([command[0], "manager", "stop"], env=env, capture_output=True)
        for call in calls:
            median = {name: statistics.median(found[call, name]) for name in commands}
            floor_median = median["floor strict +sync"]
            row = ", ".join(f"{name} {value:.1f} ({value / floor_median:.2f}× floor)" for name, value in median.items())
            if baseline:
                row += f"; this ÷ baseline {median['hvfs --strict'] / median['baseline --strict']:.2f}×"
            print(f"{call:10} µs per call, median of {rounds}: {row}")


if __name__ == "__main__":
    main()
