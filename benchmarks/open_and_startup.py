"""Microseconds per open() and wall time of starting a sandbox, for HVFS next to native,
bubblewrap, proot and gVisor (runsc), measured interleaved in one session.

    python benchmarks/open_and_startup.py [--iterations 20000] [--repeat 5] [--starts 20]

Prints medians, min-max and ratios; writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
HVFS = [sys.executable, "-m", "hvfs"]


def build(work: Path) -> Path:
    binary = work / "openbench"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(HERE / "openbench.c")], check=True)
    (work / "file").write_text("x")
    return binary


def open_runners(work: Path) -> dict[str, Callable[[int], list[str]]]:
    """Each runner opens a file for writing, so that HVFS serves it (ADDFD)."""

    def bench(path: str, mode: str, n: int) -> list[str]:
        return ["/b/openbench", path, mode, str(n)]

    volume = ["-v", f"{work}:/b"]
    runners: dict[str, Callable[[int], list[str]]] = {
        "native open(O_WRONLY)": lambda n: [str(work / "openbench"), str(work / "file"), "w", str(n)],
        "hvfs: read open, not trapped": lambda n: [*HVFS, "run", *volume, "--", *bench("/b/file", "r", n)],
        "hvfs: trapped, CONTINUE (/dev/null)": lambda n: [*HVFS, "run", *volume, "--", *bench("/dev/null", "w", n)],
        "hvfs: trapped, ADDFD (write open)": lambda n: [*HVFS, "run", *volume, "--", *bench("/b/file", "w", n)],
        "hvfs --strict: read open, ADDFD": lambda n: [
            *HVFS,
            "run",
            "--strict",
            *volume,
            "--",
            *bench("/b/file", "r", n),
        ],
    }
    if shutil.which("bwrap"):
        runners["bwrap open(O_WRONLY)"] = lambda n: [
            "bwrap",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--bind",
            str(work),
            str(work),
            "--unshare-all",
            str(work / "openbench"),
            str(work / "file"),
            "w",
            str(n),
        ]
    if shutil.which("proot"):
        runners["proot open(O_WRONLY)"] = lambda n: ["proot", "-b", f"{work}:/b", *bench("/b/file", "w", n)]
    if shutil.which("runsc"):
        runners["runsc open(O_WRONLY)"] = lambda n: [
            "runsc",
            "--network=none",
            "do",
            str(work / "openbench"),
            str(work / "file"),
            "w",
            str(n),
        ]
    return runners


def start_runners() -> dict[str, list[str]]:
    runners = {"native true": ["true"], "hvfs run -- true": [*HVFS, "run", "--", "true"]}
    if shutil.which("bwrap"):
        runners["bwrap true"] = [
            "bwrap",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--unshare-all",
            "true",
        ]
    if shutil.which("proot"):
        runners["proot true"] = ["proot", "true"]
    if shutil.which("runsc"):
        runners["runsc do true"] = ["runsc", "--network=none", "do", "true"]
    return runners


def summary(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--starts", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hvfs-bench-"))
    os.chmod(work, 0o755)
    build(work)
    runners = open_runners(work)
    opens: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.repeat):  # interleaved: every runner once per round
        for name, command in runners.items():
            out = subprocess.run(command(args.iterations), capture_output=True, text=True, check=True, cwd="/")
            opens[name].append(float(out.stdout.strip()))
    starts: dict[str, list[float]] = {name: [] for name in start_runners()}
    for _ in range(args.starts):
        for name, command in start_runners().items():
            began = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, cwd="/")
            starts[name].append((time.perf_counter() - began) * 1000)
    shutil.rmtree(work, ignore_errors=True)

    native_open = statistics.median(opens["native open(O_WRONLY)"])
    print(f"open()+close(), µs per call, median of {args.repeat} runs of {args.iterations}:")
    print(f"  {'runner':40} {'median':>9} {'min-max':>17} {'x native':>9}")
    for name, samples in opens.items():
        s = summary(samples)
        print(f"  {name:40} {s['median']:9.2f} {s['min']:8.2f}-{s['max']:<8.2f} {s['median'] / native_open:9.1f}")
    native_start = statistics.median(starts["native true"])
    hvfs_start = statistics.median(starts["hvfs run -- true"])
    print(f"\nstart-up, ms wall time, median of {args.starts}:")
    print(f"  {'runner':40} {'median':>9} {'min-max':>17} {'hvfs/this':>9}")
    for name, samples in starts.items():
        s = summary(samples)
        print(f"  {name:40} {s['median']:9.1f} {s['min']:8.1f}-{s['max']:<8.1f} {hvfs_start / s['median']:9.2f}")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    document = {
        "open_us": {n: summary(s) for n, s in opens.items()},
        "start_ms": {n: summary(s) for n, s in starts.items()},
        "native_start_ms": native_start,
        "iterations": args.iterations,
        "kernel": os.uname().release,
    }
    (results / "open_and_startup.json").write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
