"""Many VMs on one manager: start-up time per VM and the manager's memory per VM.

    python benchmarks/many_vms.py [--vms 20]

Starts a project of N VMs (``hvfs up -d``), each serving files (it writes and reads a
file on a shared volume every 100 ms), then reads ``hvfs ps --json``: each VM's start
time, and the manager's resident memory, also measured with 1 VM for the growth per VM.
Prints a table; writes JSON to benchmarks/results/many_vms.json. Not a test: nothing is
asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HVFS = [sys.executable, "-m", "hvfs"]
WORK = "while :; do echo $(hostname) > /data/$(hostname); cat /data/$(hostname) > /dev/null; sleep 0.1; done"


def project(directory: Path, count: int) -> Path:
    lines = ['name = "many"', "[sources.shared]", 'type = "memory"']
    for i in range(count):
        lines += [
            f"[vms.vm{i:02d}]",
            f"command = {json.dumps(WORK)}",
            'mounts = [{ source = "shared", target = "/data" }]',
        ]
    file = directory / "hvfs.toml"
    file.write_text("\n".join(lines) + "\n")
    return file


def measure(count: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as directory:
        file = project(Path(directory), count)
        began = time.monotonic()
        subprocess.run([*HVFS, "-f", str(file), "up", "-d"], check=True, capture_output=True)
        total = time.monotonic() - began
        time.sleep(1.0)  # let every VM serve a few requests
        ps = json.loads(
            subprocess.run([*HVFS, "-f", str(file), "ps", "--json"], check=True, capture_output=True).stdout
        )
        subprocess.run([*HVFS, "-f", str(file), "down"], check=True, capture_output=True)
    vms = ps["vms"]
    return {
        "vms": count,
        "running": sum(vm["state"] == "running" for vm in vms),
        "serving": sum(bool(vm["requests"] and vm["requests"]["served"]) for vm in vms),
        "up_s": total,
        "start_ms": [vm["start_ms"] for vm in vms],
        "manager_rss_kb": ps["manager"]["rss_kb"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=20)
    args = parser.parse_args()
    one, many = measure(1), measure(args.vms)
    starts = many["start_ms"]
    assert isinstance(starts, list)
    growth = (int(str(many["manager_rss_kb"])) - int(str(one["manager_rss_kb"]))) / (args.vms - 1)
    print(f"{args.vms} VMs on one manager: {many['running']} running, {many['serving']} serving files")
    print(f"  hvfs up -d:          {many['up_s']:.2f} s in all")
    median, low, high = statistics.median(starts), min(starts), max(starts)
    print(f"  start-up per VM:     median {median:.0f} ms (min {low:.0f}, max {high:.0f})")
    alone, crowd = int(str(one["manager_rss_kb"])) / 1024, int(str(many["manager_rss_kb"])) / 1024
    print(f"  manager memory:      {alone:.1f} MiB with 1 VM, {crowd:.1f} MiB with {args.vms}")
    print(f"  growth per VM:       {growth / 1024:.2f} MiB")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "many_vms.json").write_text(
        json.dumps({"one": one, "many": many, "growth_kb_per_vm": growth}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
