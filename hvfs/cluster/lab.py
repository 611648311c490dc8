"""A cluster on one machine, for the tests and a demo: each "host" a network namespace of
its own with its own manager and state directory, a Redis server on a private bridge
between them, one JuiceFS volume: its metadata in that Redis (db 1; the event streams
are in db 0), its objects in a local directory, formatted once by ``start``; every
host's manager mounts its ``/data`` through FUSE (``lab.mount()``: the ``--mount`` of
it), and every host mounts the volume's root once more outside its manager, with a
JuiceFS client of its own run in its network namespace, for the backup store the hosts
share on the volume (``lab.backup_store(host)``: ``/backups`` of the volume as that host
sees it; out of the VMs' reach, which see ``/data`` only). A host
directory shared as a volume is there too (``lab.host_mount()``), for what a volume
whose metadata is in the cluster's Redis cannot show (serving while that Redis is
down). Root only (it makes namespaces and links).

    lab = Lab.start("/tmp/lab", ("a", "b"))   # bridge, veths, namespaces, redis-server, volume
    subprocess.run(lab.command("a", ["hvfs", "run", "--mount", lab.mount(), ...]), env=lab.env("a"))
    lab.stop()                                # managers, redis-server, links, namespaces

``python -m hvfs.cluster.lab start|stop|env|ps DIR`` (examples/cluster/cluster) does the
same from a shell; the lab's description is DIR/lab.json, so ``stop`` needs only DIR.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pyroute2 import IPRoute, NetNS, netns

from hvfs.errors import HvfsError

REDIS_PORT = 6379
META_DB = 1  # the JuiceFS volume's metadata; the event streams and verdicts are in db 0
_SERVERS: dict[int, subprocess.Popen[bytes]] = {}  # this process's servers and clients, by pid: waited for here
VOLUME = "vol1"  # the JuiceFS volume's name, and so its shared id
DATA = "/data"  # the directory of the volume the VMs mount
BACKUPS = "/backups"  # the directory of the volume the backup store is in, out of the VMs' reach
HOST_VOLUME = "hostvol"  # the shared host directory's id
MOUNT_TIMEOUT = 30.0


@dataclass
class LabHost:
    name: str
    netns: str
    veth: str  # the bridge's end; the other end is "eth0" in the namespace
    address: str


@dataclass
class Lab:
    root: str
    tag: str
    bridge: str
    address: str  # the bridge's, where redis-server listens
    hosts: dict[str, LabHost]
    redis_pid: int = 0
    clients: dict[str, int] = field(default_factory=dict)  # each host's JuiceFS client of the store's mount

    @property
    def url(self) -> str:
        return f"redis://{self.address}:{REDIS_PORT}/0"

    @property
    def meta(self) -> str:
        """The JuiceFS volume's metadata URL (the lab's Redis, reachable from every host)."""
        return f"redis://{self.address}:{REDIS_PORT}/{META_DB}"

    @property
    def objects(self) -> str:
        """The JuiceFS volume's object store, a local directory (storage=file)."""
        return os.path.join(self.root, "objects")

    def mount(self, target: str = "/shared") -> str:
        """The ``--mount`` of the JuiceFS volume's DATA on ``target`` (its shared id: VOLUME)."""
        return f"type=juicefs,meta={self.meta},name={VOLUME},subdir={DATA},target={target}"

    def volume_mount(self, host: str) -> str:
        """Where ``host`` mounts the JuiceFS volume's root outside its manager."""
        return os.path.join(self.root, host, "jfs")

    def backup_store(self, host: str) -> str:
        """The backup store the hosts share, on the JuiceFS volume, as ``host`` sees it
        (its ``--backup-store``): versions saved on one host are restored on another
        through JuiceFS."""
        return self.volume_mount(host) + BACKUPS

    @property
    def volume(self) -> str:
        """The shared host directory, as every host sees it."""
        return os.path.join(self.root, "volume")

    def host_mount(self, target: str = "/local") -> str:
        """The ``--mount`` of the shared host directory on ``target`` (shared id HOST_VOLUME)."""
        return f"type=host,path={self.volume},target={target},shared={HOST_VOLUME}"

    def state(self, host: str) -> str:
        return os.path.join(self.root, host, "state")

    def env(self, host: str, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a front end of ``host``: its manager joins the cluster."""
        env = dict(os.environ if base is None else base)
        env.update(HVFS_STATE_DIR=self.state(host), HVFS_CLUSTER=self.url, HVFS_CLUSTER_HOST=host)
        return env

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run in ``host``'s network namespace."""
        return ["nsenter", f"--net=/run/netns/{self.hosts[host].netns}", "--", *argv]

    # -- life -----------------------------------------------------------------------

    @classmethod
    def start(cls, root: str, names: Sequence[str] = ("a", "b")) -> Lab:
        """Make the lab under ``root`` (made, 0700). Raises OSError or RuntimeError; what
        was made is undone first."""
        os.makedirs(root, mode=0o700, exist_ok=True)
        tag = secrets.token_hex(2)
        subnet = int(tag, 16) % 250 + 1
        lab = cls(root, tag, f"hvc{tag}", f"10.231.{subnet}.1", {})
        for i, name in enumerate(names):
            lab.hosts[name] = LabHost(name, f"hvfs-lab-{tag}-{name}", f"hvc{tag}{i}", f"10.231.{subnet}.{i + 2}")
        try:
            lab._make_links()
            for name in names:
                for where in (lab.state(name), os.path.join(root, name)):
                    os.makedirs(where, mode=0o700, exist_ok=True)
            os.makedirs(lab.volume, mode=0o777, exist_ok=True)
            os.makedirs(lab.objects, mode=0o700, exist_ok=True)
            lab.start_redis()
            lab._format()
            for name in names:
                lab._mount_volume(name)
            first = lab.volume_mount(names[0])
            os.chmod(first, 0o755)  # a formatted volume's root is 0777: a backup store refuses that
            os.mkdir(first + DATA)
            os.chmod(first + DATA, 0o777)  # the VMs' (any user of theirs may write, as on the root)
            os.mkdir(first + BACKUPS, 0o700)
            lab._save()
        except BaseException:
            lab.stop()
            raise
        return lab

    def _make_links(self) -> None:
        with IPRoute() as ip:
            ip.link("add", ifname=self.bridge, kind="bridge")
            bridge = ip.link_lookup(ifname=self.bridge)[0]
            ip.addr("add", index=bridge, address=self.address, prefixlen=24)
            ip.link("set", index=bridge, state="up")
            for host in self.hosts.values():
                netns.create(host.netns)
                peer = f"{host.veth}p"
                ip.link("add", ifname=host.veth, kind="veth", peer=peer)
                ip.link("set", index=ip.link_lookup(ifname=host.veth)[0], master=bridge, state="up")
                ip.link("set", index=ip.link_lookup(ifname=peer)[0], net_ns_fd=host.netns)
                with NetNS(host.netns) as ns:
                    index = ns.link_lookup(ifname=peer)[0]
                    ns.link("set", index=index, ifname="eth0")
                    ns.addr("add", index=index, address=host.address, prefixlen=24)
                    ns.link("set", index=index, state="up")
                    ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")

    def _format(self) -> None:
        """Format the JuiceFS volume, once, before any host mounts it (managers that
        format at once on their first mount would race)."""
        from hvfs.manager.sources.juicefs import juicefs_binary

        try:
            binary = juicefs_binary()
        except HvfsError as e:
            raise RuntimeError(str(e)) from None
        done = subprocess.run(
            [binary, "format", "--no-color", "--storage", "file", "--bucket", self.objects + "/",
             self.meta, VOLUME],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no reason given"])[-1]
            raise RuntimeError(f"juicefs could not format the lab's volume at {self.meta}: {reason}")

    def _mount_volume(self, host: str) -> None:
        """Mount the volume's root for ``host`` outside its manager, with a client of its
        own run in the host's network namespace (as on a machine of its own), the flags
        hvfs's juicefs source gives its clients (caches 0: docs/juicefs.md)."""
        from hvfs.manager.sources.juicefs import juicefs_binary

        mountpoint = self.volume_mount(host)
        os.makedirs(mountpoint, mode=0o700, exist_ok=True)
        below = os.stat(mountpoint).st_dev
        log = open(os.path.join(self.root, host, "juicefs.log"), "ab")  # noqa: SIM115 (the client's, for its life)
        process = subprocess.Popen(
            self.command(host, [juicefs_binary(), "mount", "--no-usage-report", "--no-color", "--backup-meta", "0",
                                "--cache-dir", os.path.join(self.root, host, "jfs-cache"),
                                "--attr-cache=0", "--entry-cache=0", "--dir-entry-cache=0",
                                self.meta, mountpoint]),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        log.close()
        _SERVERS[process.pid] = process
        self.clients[host] = process.pid
        self._save()
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while os.stat(mountpoint).st_dev == below:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"juicefs did not mount the lab's volume for host {host}; see {log.name}")
            time.sleep(0.05)

    def _unmount_volumes(self) -> None:
        """Unmount each host's mount of the volume and end its client (its process group:
        a supervisor and the server); a client still serving a copy of the mount (a
        manager started meanwhile keeps one) is killed after 10 s."""
        for host, pid in list(self.clients.items()):
            subprocess.run(["umount", "-l", self.volume_mount(host)], capture_output=True, timeout=30, check=False)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            process = _SERVERS.pop(pid, None)
            deadline = time.monotonic() + 10
            while _alive(pid, process) and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            if process is not None:
                process.wait()
            del self.clients[host]
        self._save()

    def start_redis(self) -> None:
        """Start the Redis server on the bridge (again, after ``stop_redis``: with what it
        had, as the volume's metadata must be: every write is in its append-only file)."""
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not installed; install it (apt-get install redis-server)")
        log = open(os.path.join(self.root, "redis.log"), "ab")  # noqa: SIM115 (the server's, for its life)
        process = subprocess.Popen(
            [server, "--bind", self.address, "--port", str(REDIS_PORT), "--save", "", "--appendonly", "yes",
             "--appendfsync", "always",
             "--protected-mode", "no", "--dir", self.root],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        log.close()
        _SERVERS[process.pid] = process
        self.redis_pid = process.pid
        self._save()
        import redis

        client = redis.Redis(host=self.address, port=REDIS_PORT, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.RedisError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; see {self.root}/redis.log") from None
                time.sleep(0.05)

    def stop_redis(self) -> None:
        """Kill the Redis server (as a crash would)."""
        if self.redis_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.redis_pid, signal.SIGKILL)
            process = _SERVERS.pop(self.redis_pid, None)
            if process is not None:
                process.wait()
            self.redis_pid = 0
            self._save()

    def stop(self) -> None:
        """Stop every host's manager and its VMs, the Redis server, the links and the
        namespaces; what is already gone is skipped."""
        for host in self.hosts.values():
            if os.path.exists(os.path.join(self.state(host.name), "manager.sock")):
                subprocess.run(
                    self.command(host.name, [sys.executable, "-m", "hvfs", "manager", "stop"]),
                    env=self.env(host.name), stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False,
                )  # fmt: skip
        self._unmount_volumes()  # before Redis, which they need to flush and end
        self.stop_redis()
        with IPRoute() as ip:
            for name in (*(h.veth for h in self.hosts.values()), self.bridge):
                for index in ip.link_lookup(ifname=name):
                    with contextlib.suppress(Exception):
                        ip.link("del", index=index)
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                netns.remove(host.netns)

    def _save(self) -> None:
        with open(os.path.join(self.root, "lab.json"), "w", encoding="utf-8") as f:
            json.dump({**asdict(self), "hosts": {n: asdict(h) for n, h in self.hosts.items()}}, f, indent=2)

    @classmethod
    def load(cls, root: str) -> Lab:
        with open(os.path.join(root, "lab.json"), encoding="utf-8") as f:
            data: dict[str, Any] = json.load(f)
        data["hosts"] = {name: LabHost(**host) for name, host in data["hosts"].items()}
        return cls(**data)


def _alive(pid: int, process: subprocess.Popen[bytes] | None) -> bool:
    """Whether ``pid`` still runs (this process's child: reaped here; another's: its
    parent, or init, reaps it)."""
    if process is not None:
        return process.poll() is None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hvfs.cluster.lab", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "stop", "env"))
    parser.add_argument("root", metavar="DIR", help="the lab's directory")
    parser.add_argument("--hosts", default="a,b", help="host names, comma-separated (start)")
    parser.add_argument("--host", help="the host whose environment to print (env)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("hvfs lab: making network namespaces needs root; run it with sudo", file=sys.stderr)
        return 125
    root = os.path.abspath(args.root)
    if args.action == "start":
        try:
            lab = Lab.start(root, [h for h in args.hosts.split(",") if h])
        except (OSError, RuntimeError) as e:
            print(f"hvfs lab: cannot start: {e}", file=sys.stderr)
            return 125
        print(
            f"redis {lab.url}; juicefs volume {VOLUME} (meta {lab.meta}; VMs mount {DATA}, the backup store is "
            f"{BACKUPS}: {lab.backup_store('HOST')}); hosts "
            + ", ".join(f"{h.name} {h.address}" for h in lab.hosts.values())
        )
        return 0
    try:
        lab = Lab.load(root)
    except (OSError, ValueError, TypeError, KeyError) as e:
        print(
            f"hvfs lab: no lab in {root} ({e}); start one with: python -m hvfs.cluster.lab start {root}",
            file=sys.stderr,
        )
        return 125
    if args.action == "stop":
        lab.stop()
        os.unlink(os.path.join(root, "lab.json"))
        return 0
    host = args.host or next(iter(lab.hosts))
    env = {k: v for k, v in lab.env(host, {}).items()}
    print(" ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()))
    print("NETNS=" + lab.hosts[host].netns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
