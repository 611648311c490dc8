"""Many VMs on one manager: start-up time per VM, the manager's memory per VM, and the
cost per request of N VMs serving at once against one alone.

    python benchmarks/many_vms.py [--vms 50] [--skip-sqlite]

Memory: starts a project of N VMs (``hvfs up -d``), each serving files (it writes and
reads a file on a shared volume every 100 ms), then reads ``hvfs ps --json``: each VM's
start time, and the manager's resident memory, also measured with 1 VM for the growth
per VM.

Requests at once: a project of N VMs, each running W6 (5,000 SQLite inserts in 50
transactions, its database on a shared host directory), all released together (each
waits on a FIFO the benchmark opens once all are up, and sleeps after it, so that no
exit falls in the time measured); then 1 VM alone, the same way, 5 times.
Per request: the wall time from their release to the last one's end over all the
requests the VMs made (``hvfs ps``), and the manager's own CPU time (utime+stime of its
process) over the same requests. On a machine of C CPUs, N VMs at once share C CPUs:
each VM alone takes about N/C times longer, so the ratio that says whether the manager
holds is per request, across all of them.

Prints a table; writes JSON to benchmarks/results/many_vms.json. Not a test: nothing is
asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HVFS = [sys.executable, "-m", "hvfs"]
PYTHON = "/usr/bin/python3"
WORK = "while :; do echo $(hostname) > /data/$(hostname); cat /data/$(hostname) > /dev/null; sleep 0.1; done"
SQLITE = (
    "import sqlite3, sys, time\n"
    "began = time.time()\n"
    "db = sqlite3.connect(sys.argv[1])\n"
    "db.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, value REAL)')\n"
    "db.commit()\n"
    "for batch in range(50):\n"
    "    with db:\n"
    "        for i in range(100):\n"
    "            db.execute('INSERT INTO t (name, value) VALUES (?, ?)', (f'row {batch}-{i}', i * 0.5))\n"
    "db.close()\n"
    "open(sys.argv[1] + '.time', 'w').write(f'{began} {time.time()}')\n"
)
# Released all at once: each VM blocks opening the FIFO until the benchmark opens it.
# Kept alive after it (sleep): no VM's exit falls in the measured time of the others.
RELEASED = "cat /data/go > /dev/null; {python} /data/w6.py /data/$(hostname).db; exec sleep 600"


def project(directory: Path, count: int, command: str, mount: str) -> Path:
    lines = ['name = "many"', "[sources.shared]", mount]
    for i in range(count):
        lines += [
            f"[vms.vm{i:02d}]",
            f"command = {json.dumps(command)}",
            'mounts = [{ source = "shared", target = "/data" }]',
        ]
    file = directory / "hvfs.toml"
    file.write_text("\n".join(lines) + "\n")
    return file


def _ps(file: Path) -> dict[str, object]:
    ps = subprocess.run([*HVFS, "-f", str(file), "ps", "--json"], check=True, capture_output=True).stdout
    document: dict[str, object] = json.loads(ps)
    return document


def measure(count: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as directory:
        file = project(Path(directory), count, WORK, 'type = "memory"')
        began = time.monotonic()
        subprocess.run([*HVFS, "-f", str(file), "up", "-d"], check=True, capture_output=True)
        total = time.monotonic() - began
        time.sleep(1.0)  # let every VM serve a few requests
        ps = _ps(file)
        subprocess.run([*HVFS, "-f", str(file), "down"], check=True, capture_output=True)
    vms = ps["vms"]
    manager = ps["manager"]
    assert isinstance(vms, list) and isinstance(manager, dict)
    return {
        "vms": count,
        "running": sum(vm["state"] == "running" for vm in vms),
        "serving": sum(bool(vm["requests"] and vm["requests"]["served"]) for vm in vms),
        "up_s": total,
        "start_ms": [vm["start_ms"] for vm in vms],
        "manager_rss_kb": manager["rss_kb"],
    }


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """The process's user and system CPU time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def alone_runs(times: int) -> dict[str, object]:
    """1 VM running W6, ``times`` times: its figures summed (a tick of CPU time is 10 ms)."""
    runs = [at_once(1) for _ in range(times)]
    requests = sum(int(str(r["requests"])) for r in runs)
    wall = sum(float(str(r["wall_s"])) for r in runs)
    cpu = sum(float(str(r["manager_cpu_s"])) for r in runs)
    user = sum(float(str(r["manager_user_us_per_request"])) * int(str(r["requests"])) for r in runs) / 1e6
    return {
        "runs": times,
        "finished": sum(int(str(r["finished"])) for r in runs),
        "requests": requests,
        "wall_s": wall,
        "wall_us_per_request": wall / requests * 1e6,
        "manager_cpu_s": cpu,
        "manager_cpu_us_per_request": cpu / requests * 1e6,
        "manager_user_us_per_request": user / requests * 1e6,
        "manager_system_us_per_request": (cpu - user) / requests * 1e6,
        "each_s": [float(str(r["wall_s"])) for r in runs],
        "manager_peak_rss_kb": max(int(str(r["manager_peak_rss_kb"])) for r in runs),
    }


def at_once(count: int, timeout: float = 600.0) -> dict[str, object]:
    """N VMs running W6 together: wall and manager CPU per request (see above)."""
    with tempfile.TemporaryDirectory() as directory:
        shared = Path(directory) / "shared"
        shared.mkdir()
        (shared / "w6.py").write_text(SQLITE)
        os.mkfifo(shared / "go")
        os.chmod(shared, 0o777)
        command = RELEASED.format(python=PYTHON)
        file = project(Path(directory), count, command, f'type = "host"\npath = {json.dumps(str(shared))}')
        subprocess.run([*HVFS, "-f", str(file), "up", "-d"], check=True, capture_output=True)
        manager = _ps(file)["manager"]
        assert isinstance(manager, dict)
        pid = int(manager["pid"])
        time.sleep(0.5)  # every VM's cat is blocked in the FIFO's open by now
        cpu = _cpu_seconds(pid)
        released = time.time()
        with open(shared / "go", "w"):
            pass
        deadline = time.monotonic() + timeout
        peak_kb = 0
        while len(list(shared.glob("*.time"))) < count and time.monotonic() < deadline:
            peak_kb = max(peak_kb, _rss_kb(pid))
            time.sleep(0.05)
        user, system = (after - before for after, before in zip(_cpu_seconds(pid), cpu, strict=True))
        ps = _ps(file)
        subprocess.run([*HVFS, "-f", str(file), "down"], check=True, capture_output=True)
        spans = [tuple(map(float, f.read_text().split())) for f in shared.glob("*.time")]
    vms = ps["vms"]
    assert isinstance(vms, list)
    requests = sum(sum(vm["requests"].values()) for vm in vms if vm["requests"])
    wall = max(end for _, end in spans) - released
    return {
        "vms": count,
        "finished": len(spans),
        "requests": requests,
        "wall_s": wall,
        "wall_us_per_request": wall / requests * 1e6,
        "manager_cpu_s": user + system,
        "manager_cpu_us_per_request": (user + system) / requests * 1e6,
        "manager_user_us_per_request": user / requests * 1e6,
        "manager_system_us_per_request": system / requests * 1e6,
        "each_s": [end - released for _, end in spans],
        "manager_peak_rss_kb": peak_kb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=50)
    parser.add_argument("--skip-sqlite", action="store_true", help="only start-up and memory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        os.environ["HVFS_STATE_DIR"] = state  # a manager of its own, fresh, stopped at the end
        try:
            run(args.vms, sqlite=not args.skip_sqlite)
        finally:
            subprocess.run([*HVFS, "manager", "stop"], check=False, capture_output=True)


def run(count: int, *, sqlite: bool) -> None:
    one, many = measure(1), measure(count)
    starts = many["start_ms"]
    assert isinstance(starts, list)
    growth = (int(str(many["manager_rss_kb"])) - int(str(one["manager_rss_kb"]))) / (count - 1)
    print(f"{count} VMs on one manager: {many['running']} running, {many['serving']} serving files")
    print(f"  hvfs up -d:          {many['up_s']:.2f} s in all")
    median, low, high = statistics.median(starts), min(starts), max(starts)
    print(f"  start-up per VM:     median {median:.0f} ms (min {low:.0f}, max {high:.0f})")
    alone, crowd = int(str(one["manager_rss_kb"])) / 1024, int(str(many["manager_rss_kb"])) / 1024
    print(f"  manager memory:      {alone:.1f} MiB with 1 VM, {crowd:.1f} MiB with {count}")
    print(f"  growth per VM:       {growth / 1024:.2f} MiB")
    results: dict[str, object] = {"one": one, "many": many, "growth_kb_per_vm": growth}
    if sqlite:
        together, single = at_once(count), alone_runs(5)
        results |= {"sqlite_together": together, "sqlite_alone": single}
        print(f"W6 (SQLite) in {count} VMs at once ({together['finished']} finished) and in 1 VM alone (5 runs):")
        for what in (
            "wall_us_per_request",
            "manager_cpu_us_per_request",
            "manager_user_us_per_request",
            "manager_system_us_per_request",
        ):
            a, b = float(str(single[what])), float(str(together[what]))
            print(f"  {what:<30} alone {a:7.1f} µs   {count} at once {b:7.1f} µs   ratio {b / a:.2f}×")
        each, each_alone = together["each_s"], single["each_s"]
        assert isinstance(each, list) and isinstance(each_alone, list)
        print(
            f"  each VM's own run:   alone median {statistics.median(each_alone):.2f} s"
            f", at once median {statistics.median(each):.2f} s; requests: {single['requests']} alone (5 runs),"
            f" {together['requests']} at once"
        )
        peak = int(str(together["manager_peak_rss_kb"])) / 1024
        print(f"  manager memory, peak while {count} VMs ran W6: {peak:.1f} MiB")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "many_vms.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
