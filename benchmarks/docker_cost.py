"""What a container costs under each Docker runtime: `docker run --rm` of `true`, and of a
small untar (600 files, 2.4 MB, from a read-only bind mount into the container), under
runc, runsc (gVisor, when dockerd knows it) and hvfs, interleaved, as medians and ratios to runc.

    python benchmarks/docker_cost.py                 # 10 rounds
    python benchmarks/docker_cost.py --rounds 20 --runtimes runc,hvfs

Needs a running dockerd with the runtime ``hvfs`` registered (``hvfs docker install``).
The image is busybox FROM scratch, built here (no registry). Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMAGE = "hvfs-bench/busybox:latest"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def build_image(work: Path) -> None:
    context = work / "image"
    context.mkdir()
    shutil.copy(shutil.which("busybox") or "/bin/busybox", context / "busybox")
    (context / "Dockerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
    )
    docker("build", "-q", "-t", IMAGE, str(context))


def make_tarball(work: Path) -> Path:
    tree = work / "tree"
    for i in range(600):
        folder = tree / f"d{i % 20}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}").write_bytes(bytes([i % 256]) * 4096)
    tarball = work / "small.tar"
    subprocess.run(["tar", "-cf", str(tarball), "-C", str(tree), "."], check=True)
    return tarball


def available(runtimes: list[str]) -> list[str]:
    known = json.loads(docker("info", "--format", "{{json .Runtimes}}").stdout)
    missing = [r for r in runtimes if r not in known]
    for runtime in missing:
        print(f"skipped: dockerd has no runtime {runtime!r}", file=sys.stderr)
    return [r for r in runtimes if r in known]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runtimes", default="runc,runsc,hvfs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        build_image(work)
        tarball = make_tarball(work)
        runtimes = available(args.runtimes.split(","))
        workloads = {
            "true": ["true"],
            "untar 600 files": ["sh", "-c", "mkdir -p /x && tar -xf /in/small.tar -C /x && ls /x/d0 | wc -l"],
        }
        times: dict[tuple[str, str], list[float]] = {(w, r): [] for w in workloads for r in runtimes}
        for _ in range(args.rounds):
            pairs = list(times)
            random.shuffle(pairs)  # a slow moment of the machine falls on every runtime alike
            for workload, runtime in pairs:
                argv = ["docker", "run", "--rm", f"--runtime={runtime}", "-v", f"{tarball}:/in/small.tar:ro",
                        IMAGE, *workloads[workload]]  # fmt: skip
                began = time.perf_counter()
                done = subprocess.run(argv, capture_output=True, text=True)
                took = time.perf_counter() - began
                if done.returncode != 0:
                    print(f"{runtime} {workload}: exit {done.returncode}: {done.stderr.strip()}", file=sys.stderr)
                    return 1
                times[workload, runtime].append(took)
        print(f"docker run --rm, {args.rounds} interleaved rounds (median, min–max; ratio to runc)")
        for workload in workloads:
            base = statistics.median(times[workload, "runc"]) if "runc" in runtimes else None
            for runtime in runtimes:
                xs = times[workload, runtime]
                median = statistics.median(xs)
                ratio = f"{median / base:.2f}×" if base else "–"
                print(f"  {workload:16} {runtime:10} {median * 1000:7.0f} ms  "
                      f"{min(xs) * 1000:5.0f}–{max(xs) * 1000:5.0f}  {ratio}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
