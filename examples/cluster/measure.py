#!/usr/bin/env python3
"""The figures of docs/scale.md, measured on this machine (root; redis-server, /dev/fuse
and the juicefs client installed):

1. events per second through one volume's stream, publisher to consumer (hvfs.cluster.stream
   with a real redis-server, synthetic events), and the lag from an event's time to its
   reading;
2. on a two-host lab (hvfs.cluster.lab), through the lab's JuiceFS volume (each manager
   mounts it through FUSE; metadata in the lab's Redis): creates per second one manager
   serves to a VM creating files on the volume, out of the cluster and in it (same
   audit); in the cluster, the events of those creates read from the volume's stream by
   a reader of this script (events per second, and lag from the event's time to its
   reading), and what host b, which mounts the volume too, received and its last lag;
3. the same on a host directory shared as a volume (``--host-directory``: the figures
   docs/scale.md gave before the volume was JuiceFS), for comparison.

    sudo .venv/bin/python examples/cluster/measure.py [--events 50000] [--files 3000] [--host-directory]
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
from hvfs.cluster.lab import HOST_VOLUME, VOLUME, Lab
from hvfs.cluster.stream import Consumer, Publisher

# each run in a directory of its own: a directory's size does not carry over between cases
CREATE = (
    "import os,sys,time\n"
    "os.mkdir(f'/shared/{sys.argv[2]}')\n"
    "t=time.perf_counter()\n"
    "for i in range(int(sys.argv[1])):\n"
    "    os.close(os.open(f'/shared/{sys.argv[2]}/{i}', os.O_WRONLY|os.O_CREAT, 0o644))\n"
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


class StreamReader:
    """A reader of a volume's stream (hvfs's consumer, as a manager's), from now on: the
    events of host a's creates, their arrival times and lags."""

    def __init__(self, lab: Lab, volume: str, state: str) -> None:
        self.arrivals: list[float] = []
        self.lags: list[float] = []
        self.consumer = Consumer(redis.Redis.from_url(lab.url, socket_timeout=10), "measure", f"{state}/c.json",
                                 lambda: {volume}, self._deliver)  # fmt: skip
        self.consumer.track(volume)
        self.consumer.start()

    def _deliver(self, volume: str, host: str, event: Event) -> None:
        now = time.time()
        if event.operation == "open" and event.flags & os.O_CREAT:
            self.arrivals.append(now)
            self.lags.append(now - event.time)

    def figures(self) -> dict[str, float]:
        self.consumer.close()
        lags = sorted(self.lags)
        took = self.arrivals[-1] - self.arrivals[0] if len(self.arrivals) > 1 else 0.0
        return {
            "stream_events": len(lags),
            "stream_events_per_s": round(len(lags) / took) if took else 0,
            "stream_lag_median_ms": round(statistics.median(lags) * 1000, 1) if lags else -1,
            "stream_lag_p99_ms": round(lags[max(0, int(len(lags) * 0.99) - 1)] * 1000, 1) if lags else -1,
        }


def served_rate(lab: Lab, files: int, mount: str, volume: str) -> dict[str, float]:
    """Creates per second a VM of host a's makes on ``mount``, out of the cluster and in
    it; in it, the stream's figures and host b's."""
    results: dict[str, float] = {}
    for case in ("alone", "cluster"):
        env = lab.env("a")
        if case == "alone":
            env.pop("HVFS_CLUSTER")
            env["HVFS_STATE_DIR"] = os.path.join(lab.root, "alone")
            os.makedirs(env["HVFS_STATE_DIR"], mode=0o700, exist_ok=True)
        audit = os.path.join(lab.root, f"{case}-{volume}.jsonl")
        with tempfile.TemporaryDirectory() as state:
            reader = StreamReader(lab, volume, state) if case == "cluster" else None
            took = hvfs(lab, "a", "run", "--mount", mount, "--audit", audit, "--", "python3", "-c", CREATE,
                        str(files), f"{case}-{time.monotonic_ns()}", env=env)  # fmt: skip
            results[f"{case}_creates_per_s"] = round(files / float(took.split()[-1]))
            if reader is not None:
                deadline = time.monotonic() + 60
                while len(reader.arrivals) < files and time.monotonic() < deadline:
                    time.sleep(0.1)
                results.update(reader.figures())
        if case == "alone":
            hvfs(lab, "a", "manager", "stop", env=env)
    time.sleep(1)
    if not os.path.exists(os.path.join(lab.state("b"), "manager.sock")):
        return results  # --without-b
    status = json.loads(hvfs(lab, "b", "manager", "status", "--json"))["manager"]["cluster"]
    results["b_received_total"] = status["received"]
    results["b_last_lag_ms"] = status["lag_ms"]
    results["b_inotify_poked_total"] = status["inotify_poked"]  # each an open for writing on b's own mount
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--files", type=int, default=3_000)
    parser.add_argument("--host-directory", action="store_true", help="also on a host directory shared as a volume")
    parser.add_argument("--no-synthetic", action="store_true", help="skip the synthetic stream figures (1.)")
    parser.add_argument("--without-b", action="store_true", help="no VM on host b: no host follows the volume")
    args = parser.parse_args()
    lab = Lab.start(tempfile.mkdtemp(prefix="hvfs-measure-"), ("a", "b"))
    try:
        if not args.no_synthetic:
            print(json.dumps({"stream_burst": stream_rate(lab, args.events)}, indent=2), flush=True)
            print(json.dumps({"stream_2000_per_s": stream_rate(lab, 10_000, 2000.0)}, indent=2), flush=True)
        if not args.without_b:  # b follows the volumes with a VM of its own mounting them
            hvfs(lab, "b", "run", "-d", "--name", "wb", "--mount", lab.mount("/shared"), "--mount",
                 lab.host_mount("/local"), "--", "sleep", "3600")  # fmt: skip
        served = served_rate(lab, args.files, lab.mount("/shared"), VOLUME)
        print(json.dumps({"served_juicefs": served}, indent=2), flush=True)
        if args.host_directory:
            served = served_rate(lab, args.files, lab.host_mount("/shared"), HOST_VOLUME)
            print(json.dumps({"served_host_directory": served}, indent=2), flush=True)
    finally:
        lab.stop()
        shutil.rmtree(lab.root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
