#!/usr/bin/env python3
"""The figures of docs/scale.md, measured on this machine (root; redis-server installed):

1. events per second through one volume's stream, publisher to consumer (hvfs.cluster.stream
   with a real redis-server), and the lag from an event's time to its reading;
2. on a two-host lab (hvfs.cluster.lab): requests per second one manager serves to a VM
   creating files on the shared volume, in the cluster and out of it (same audit), and the
   lag host b reports for host a's events.

    sudo .venv/bin/python examples/cluster/measure.py [--events 50000] [--files 3000]
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
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import redis

from hvfs.api.events import Event
from hvfs.cluster.lab import Lab
from hvfs.cluster.stream import Consumer, Publisher

CREATE = (
    "import os,sys,time\n"
    "t=time.perf_counter()\n"
    "for i in range(int(sys.argv[1])):\n"
    "    os.close(os.open(f'/shared/{sys.argv[2]}-{i}', os.O_WRONLY|os.O_CREAT, 0o644))\n"
    "print(time.perf_counter()-t)\n"
)


def stream_rate(lab: Lab, count: int, pace: float = 0.0) -> dict[str, float]:
    """``count`` events through one stream, as fast as offered (``pace`` 0: a burst, whose
    lag is the queue's) or ``pace`` events per second (the lag of a stream that keeps up)."""
    client = redis.Redis.from_url(lab.url)
    client.delete("hvfs:volume:bench:events")  # each run from an empty stream
    lags: list[float] = []
    done = threading.Event()

    def deliver(volume: str, host: str, event: Event) -> None:
        lags.append(time.time() - event.time)
        if len(lags) >= count:
            done.set()

    with tempfile.TemporaryDirectory() as state:
        consumer = Consumer(redis.Redis.from_url(lab.url, socket_timeout=10), "reader", f"{state}/c.json",
                            lambda: {"bench"}, deliver)  # fmt: skip
        consumer.track("bench")
        consumer.start()
        publisher = Publisher(redis.Redis.from_url(lab.url, socket_timeout=5), "writer")
        started = time.time()
        for i in range(count):
            if pace and i % 100 == 0:
                time.sleep(max(0.0, started + i / pace - time.time()))
            publisher.offer("bench", Event(time.time(), "vm", 1, "sh", "open", (f"/f{i}",), 577, "ok", None, 10))
        offered = time.time() - started
        done.wait(120)
        took = time.time() - started
        publisher.close()
        consumer.close()
    lags.sort()
    return {
        "events": len(lags),
        "offer_us_per_event": round(offered / count * 1e6, 2),
        "events_per_s": round(len(lags) / took),
        "lag_median_ms": round(statistics.median(lags) * 1000, 1),
        "lag_p99_ms": round(lags[int(len(lags) * 0.99) - 1] * 1000, 1),
    }


def hvfs(lab: Lab, host: str, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(lab.command(host, [sys.executable, "-m", "hvfs", *args]), env=env or lab.env(host),
                          capture_output=True, text=True, check=True).stdout  # fmt: skip


def served_rate(lab: Lab, files: int) -> dict[str, float]:
    results: dict[str, float] = {}
    for case in ("alone", "cluster"):
        env = lab.env("a")
        if case == "alone":
            env.pop("HVFS_CLUSTER")
            env["HVFS_STATE_DIR"] = os.path.join(lab.root, "alone")
            os.makedirs(env["HVFS_STATE_DIR"], mode=0o700, exist_ok=True)
        mount = f"type=host,path={lab.volume},target=/shared" + (",shared=vol1" if case == "cluster" else "")
        audit = os.path.join(lab.root, f"{case}.jsonl")
        took = hvfs(lab, "a", "run", "--mount", mount, "--audit", audit, "--", "python3", "-c", CREATE, str(files),
                    case, env=env)  # fmt: skip
        results[f"{case}_requests_per_s"] = round(files / float(took.split()[-1]))
        if case == "alone":
            hvfs(lab, "a", "manager", "stop", env=env)
    time.sleep(1)
    status = json.loads(hvfs(lab, "b", "manager", "status", "--json"))["manager"]["cluster"]
    results["b_received"] = status["received"]
    results["b_last_lag_ms"] = status["lag_ms"]
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--files", type=int, default=3_000)
    args = parser.parse_args()
    lab = Lab.start(tempfile.mkdtemp(prefix="hvfs-measure-"), ("a", "b"))
    try:
        print(json.dumps({"stream_burst": stream_rate(lab, args.events)}, indent=2), flush=True)
        print(json.dumps({"stream_2000_per_s": stream_rate(lab, 10_000, 2000.0)}, indent=2), flush=True)
        # b follows the volume with a VM of its own mounting it
        shared = f"type=host,path={lab.volume},target=/shared,shared=vol1"
        hvfs(lab, "b", "run", "-d", "--name", "wb", "--mount", shared, "--", "sleep", "600")
        print(json.dumps({"served": served_rate(lab, args.files)}, indent=2))
    finally:
        lab.stop()
        shutil.rmtree(lab.root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
