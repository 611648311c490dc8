"""The ptrace tracer's poll before it blocks (HVFS_TRACER_SPIN_US), A/B: wall and manager CPU.

    python benchmarks/tracer_spin.py [--rounds N] [--opens N] [--idle S] NAME=HVFS[:SPIN_US[:always]] ...

e.g. ``before=/tmp/before/.venv/bin/hvfs off=.venv/bin/hvfs:0 on=.venv/bin/hvfs``: each
configuration gets its own manager and state directory (the manager reads the variable;
without ``:SPIN_US`` it is left unset: the build's default; ``:always`` sets
HVFS_TRACER_SPIN_ALWAYS=1, the poll whatever the load). Rounds alternate the configurations
in shuffled order; each round runs, under ``--driver ptrace``, W3t's untar and ``rm -rf`` of
3,000 small files on a tmpfs (the work directory is in /dev/shm), openbench's continued
write-opens of /dev/null (W8c), its served write-opens of a volume file (W8), and an idle
``sleep`` (the manager must not spin while nothing stops). Per run: openbench's
µs per open+close, and the manager's CPU (user + system of all its threads, /proc/PID/stat)
per open+close, or, for the idle run, as a share of the wall time. Medians (min–max), then
each configuration's ratio to the first one's run of the same round (median, and in how many
rounds it was above 1).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Config:
    def __init__(self, name: str, spec: str, work: Path) -> None:
        hvfs, _, spin = spec.partition(":")
        spin, _, always = spin.partition(":")
        self.name, self.hvfs = name, hvfs
        self.state = tempfile.mkdtemp(prefix=f"hvfs-spin-{name}-")
        self.env = dict(os.environ, HVFS_STATE_DIR=self.state)
        self.env.pop("HVFS_TRACER_SPIN_US", None)
        self.env.pop("HVFS_TRACER_SPIN_ALWAYS", None)
        if spin:
            self.env["HVFS_TRACER_SPIN_US"] = spin
        if always == "always":  # the poll whatever the machine's load
            self.env["HVFS_TRACER_SPIN_ALWAYS"] = "1"
        self.work = work
        self.results: dict[str, list[float]] = {}

    def run(self, *command: str) -> tuple[str, float, float]:
        """(stdout, wall seconds, the manager's CPU seconds) of one traced run."""
        pid = self.manager()
        before, start = cpu_seconds(pid), time.monotonic()
        out = subprocess.run(
            [self.hvfs, "run", "--driver", "ptrace", "-v", f"{self.work}:/q", "--", *command],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return out, time.monotonic() - start, cpu_seconds(pid) - before

    def manager(self) -> int:
        path = Path(self.state, "manager.json")
        if not path.exists():
            subprocess.run([self.hvfs, "run", "--driver", "ptrace", "--", "true"], env=self.env, check=True)
        return int(json.loads(path.read_text())["pid"])

    def note(self, key: str, value: float) -> None:
        self.results.setdefault(key, []).append(value)

    def stop(self) -> None:
        path = Path(self.state, "manager.json")
        if path.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(json.loads(path.read_text())["pid"]), 15)
        shutil.rmtree(self.state, ignore_errors=True)


def one_round(config: Config, opens: int, idle: float) -> None:
    _, wall, cpu = config.run("sh", "-c", "cd /q/w3 && tar -xf /q/w3.tar && rm -rf tree")
    config.note("W3 untar+rm ms", wall * 1000)
    config.note("W3 manager CPU ms", cpu * 1000)
    for key, path in (("W8c", "/dev/null"), ("W8", "/q/file")):
        out, _, cpu = config.run("/q/openbench", path, "w", str(opens))
        config.note(f"{key} µs", float(out.split()[0]))
        config.note(f"{key} manager CPU µs/op", cpu * 1e6 / (opens * 1.1))  # openbench warms up with a tenth more
    _, wall, cpu = config.run("sleep", str(idle))
    config.note("idle manager CPU %", 100 * cpu / wall)


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--opens", type=int, default=20000)
    parser.add_argument("--idle", type=float, default=2.0)
    parser.add_argument("--json", help="where to write every run's figures, by configuration")
    parser.add_argument("configs", nargs="+", metavar="NAME=HVFS[:SPIN_US[:always]]")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hvfs-spin-work-", dir="/dev/shm"))  # a tmpfs, as W3t's
    os.chmod(work, 0o755)
    subprocess.run(["cc", "-O2", "-o", str(work / "openbench"), str(HERE / "openbench.c")], check=True)
    (work / "file").write_bytes(b"")
    (work / "w3").mkdir()
    with tarfile.open(work / "w3.tar", "w") as tar:  # W3t's shape: 3,000 small files in 30 directories
        for n in range(3000):
            member = tarfile.TarInfo(f"tree/d{n % 30:02d}/f{n:04d}")
            member.size = 64
            tar.addfile(member, io.BytesIO(b"x" * 64))
    configs = [Config(name, spec, work) for name, _, spec in (c.partition("=") for c in args.configs)]
    try:
        for config in configs:
            one_round(config, args.opens // 10, 0.1)  # the manager up, its spares and caches warm
            config.results.clear()
        for n in range(args.rounds):
            order = random.sample(configs, len(configs))
            for config in order:
                one_round(config, args.opens, args.idle)
            figures = " ".join(f"{c.name} {c.results['W8c µs'][-1]:.1f}/{c.results['W8 µs'][-1]:.1f}" for c in configs)
            print(f"round {n + 1}: {os.getloadavg()[0]:.2f} load; W8c/W8 µs: {figures}", flush=True)
    finally:
        for config in configs:
            config.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps({c.name: c.results for c in configs}))
    keys = list(configs[0].results)
    print("| measure | " + " | ".join(c.name for c in configs) + " |")
    print("| --- |" + " --- |" * len(configs))
    for key in keys:
        print(f"| {key} | " + " | ".join(summary(c.results[key]) for c in configs) + " |")
    first = configs[0]  # paired by round: what the load did to a round, it did to all its runs
    others = configs[1:]
    print(
        f"\n| paired: ÷ {first.name} per round, median (rounds above 1) | " + " | ".join(c.name for c in others) + " |"
    )
    print("| --- |" + " --- |" * (len(configs) - 1))
    for key in keys:
        cells = []
        for config in others:
            ratios = [b / a for a, b in zip(first.results[key], config.results[key], strict=True) if a > 0]
            above = sum(r > 1 for r in ratios)
            cells.append(f"{statistics.median(ratios):.2f} ({above}/{len(ratios)})" if ratios else "–")
        print(f"| {key} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
