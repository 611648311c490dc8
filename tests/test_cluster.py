"""Managers in a cluster (hvfs.cluster), on one machine: two "hosts", each a network
namespace with its own manager and state directory, a real redis-server on a private
bridge between them, one JuiceFS volume on /shared (metadata in that Redis, objects in a
local directory; every manager mounts it through FUSE) and a host directory shared as a
volume on /local (hvfs.cluster.lab, as examples/cluster uses it). One VM per host,
started once for the module; each test writes its own files. Hosts a and b scan and
back up, into the store the hosts share on the JuiceFS volume (each host's own mount of
it, outside its manager: lab.backup_store); c only audits, and its manager is the one killed (a VM that is scanned is
traced by its manager, and does not outlive it)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import require

HVFS = [sys.executable, "-m", "hvfs"]
EICAR = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
NOT_A_VIRUS = "only host a's blocklist names this content\n"


class Cluster:
    def __init__(self, lab: Any) -> None:
        self.lab = lab

    def hvfs(
        self, host: str, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.lab.command(host, [*HVFS, *args]), env=self.lab.env(host), input=stdin or "",
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"hvfs {' '.join(args)} on {host}: {done.returncode}\n{done.stdout}{done.stderr}")
        return done

    def write(self, host: str, path: str, data: str) -> None:
        self.hvfs(host, "exec", f"w{host}", "sh", "-c", 'printf %s "$1" > "$2"', "sh", data, path)

    def status(self, host: str) -> dict[str, Any]:
        cluster: dict[str, Any] = json.loads(self.hvfs(host, "manager", "status", "--json").stdout)["manager"][
            "cluster"
        ]
        return cluster

    def events(self, host: str, vm: str, path: str) -> list[dict[str, Any]]:
        audit = os.path.join(self.lab.root, host, "audit.jsonl")
        out = subprocess.run([*HVFS, "events", audit, "--vm", vm, "--path", path, "--json"],
                             capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
        return [json.loads(line) for line in out.splitlines()]

    def manager_pid(self, host: str) -> int:
        with open(os.path.join(self.lab.state(host), "manager.json")) as f:
            pid: int = json.load(f)["pid"]
        return pid


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    require(os.geteuid() == 0, "a cluster of network namespaces needs root")
    require(shutil.which("redis-server") is not None, "redis-server is not installed (scripts/setup --test)")
    require(shutil.which("nsenter") is not None, "nsenter (util-linux) is not installed")
    require(os.path.exists("/dev/fuse"), "this machine has no /dev/fuse (modprobe fuse)")
    from hvfs.cluster.lab import Lab
    from hvfs.manager.sources.base import SourceError
    from hvfs.manager.sources.juicefs import juicefs_binary

    try:
        juicefs_binary()
    except SourceError as e:
        require(False, f"{e}")

    root = tempfile.mkdtemp(prefix="hvfs-cluster-")
    lab = Lab.start(root, ("a", "b", "c"))
    try:
        blocklist = os.path.join(root, "a", "blocklist")
        with open(blocklist, "w") as f:
            f.write(hashlib.sha256(NOT_A_VIRUS.encode()).hexdigest() + "  only-a-knows\n")
        cluster = Cluster(lab)
        cluster.hvfs(
            "c", "run", "-d", "--name", "wc", "--mount", lab.mount(), "--mount", lab.host_mount(),
            "--audit", os.path.join(root, "c", "audit.jsonl"), "--", "sleep", "600",
        )  # fmt: skip
        for host in ("a", "b"):
            cluster.hvfs(
                host, "run", "-d", "--name", f"w{host}", "--mount", lab.mount(), "--mount", lab.host_mount(),
                "--audit", os.path.join(root, host, "audit.jsonl"),
                "--scan", "--quarantine", os.path.join(root, host, "quarantine"),
                *(["--blocklist", blocklist] if host == "a" else []),
                "--backup", "/shared/*.doc", "--backup-store", lab.backup_store(host),
                "--", "sleep", "600",
            )  # fmt: skip
        yield cluster
    finally:
        lab.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_write_on_a_is_read_on_b_and_shown_by_b_events(cluster: Cluster) -> None:
    name, data = f"/shared/x-{secrets.token_hex(4)}.txt", f"from a {secrets.token_hex(8)}\n"
    cluster.write("a", name, data)
    assert cluster.hvfs("b", "exec", "wb", "cat", name).stdout == data
    events = wait_for("a's write in b's audit", lambda: cluster.events("b", "wa@a", name))
    assert events[0]["operation"] == "open" and events[0]["result"] == "ok" and events[0]["flags"] & os.O_WRONLY
    assert not cluster.events("a", "wa@a", name)  # a's own events come back to no one
    assert cluster.status("a")["published"] >= 1
    b = wait_for("b told its VMs' inotify", lambda: (s := cluster.status("b"))["inotify_poked"] >= 1 and s)
    assert b["received"] >= 1 and b["lag_ms"] < 5000, b


def test_inotify_in_a_vm_on_b_sees_a_write_made_on_a(cluster: Cluster) -> None:
    """No kernel on b sees a's write (each manager has a JuiceFS client, a FUSE
    superblock, of its own): b's manager opens and closes the file on its own mount of
    the volume (Source.local_path), which its VM's watch sees."""
    require(shutil.which("inotifywait") is not None, "inotifywait is not installed (scripts/setup --test)")
    name = f"i-{secrets.token_hex(4)}.txt"
    # the VM's watcher ends by itself: at the first event on the file, or in 20 s
    watch = ["timeout", "20", "inotifywait", "-e", "close_write", "--include", name, "--format", "%e %f", "/shared"]
    with subprocess.Popen(
        cluster.lab.command("b", [*HVFS, "exec", "wb", *watch]), env=cluster.lab.env("b"),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as watcher:  # fmt: skip
        assert watcher.stderr is not None
        for line in watcher.stderr:
            if "Watches established" in line:
                break
        poked = cluster.status("b")["inotify_poked"]
        cluster.write("a", f"/shared/{name}", "seen on b\n")
        out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0 and out == f"CLOSE_WRITE,CLOSE {name}\n", (watcher.returncode, out, err)
    assert cluster.status("b")["inotify_poked"] > poked


def test_eicar_written_on_a_is_refused_on_b_and_verdicts_are_shared(cluster: Cluster) -> None:
    import redis

    verdicts = redis.Redis.from_url(cluster.lab.url)
    eicar, other = f"/shared/eicar-{secrets.token_hex(4)}.com", f"/shared/bad-{secrets.token_hex(4)}.bin"
    cluster.write("a", eicar, EICAR)
    cluster.write("a", other, NOT_A_VIRUS)  # only a's blocklist names it: b refuses it on a's word
    for content in (EICAR, NOT_A_VIRUS):
        digest = hashlib.sha256(content.encode()).hexdigest()
        wait_for("a's verdict in redis", lambda digest=digest: verdicts.hget("hvfs:verdicts", digest))  # type: ignore[misc]
    for path in (eicar, other):
        refused = cluster.hvfs("b", "exec", "wb", "cat", path, check=False)
        assert refused.returncode != 0 and "Permission denied" in refused.stderr, refused
    assert cluster.status("b")["verdicts_from_cluster"] >= 2


def test_a_version_saved_on_a_is_restored_on_b_and_saved_once(cluster: Cluster) -> None:
    """Through JuiceFS: the store is on the volume, which a's manager writes through a's
    mount of it and b reads through b's (two clients: the store's shared path)."""
    from hvfs.services.backup.store import on_shared_filesystem

    store_b = cluster.lab.backup_store("b")
    assert store_b != cluster.lab.backup_store("a") and on_shared_filesystem(store_b)
    name = f"/shared/r-{secrets.token_hex(4)}.doc"
    cluster.write("a", name, "first\n")
    first = time.time()
    time.sleep(0.05)
    cluster.write("a", name, "second\n")

    def rows() -> list[dict[str, Any]]:
        out = cluster.hvfs("b", "backup", "list", "--backup-store", store_b, "--json", name).stdout
        found: list[dict[str, Any]] = json.loads(out)
        return found

    def versions() -> list[dict[str, Any]]:
        return [v for v in rows() if not v["removed"]]

    wait_for("two versions", lambda: len(versions()) >= 2)
    time.sleep(0.5)  # b heard of both writes by now (lag: ~10 ms): it must not have saved them again
    saved = versions()
    assert len(saved) == 2 and {v["vm"] for v in saved} == {"wa"}, saved
    assert os.path.exists(os.path.join(store_b, "index.lock")), "the store on the volume was not used as shared"
    tar = subprocess.run(
        cluster.lab.command("b", [*HVFS, "backup", "restore", name, "--backup-store", store_b,
                                  "--at", str(first), "--to", "-"]),
        env=cluster.lab.env("b"), capture_output=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    unpack = "mkdir -p /tmp/r && tar -x -C /tmp/r && cat /tmp/r/*"
    unpacked = subprocess.run(
        cluster.lab.command("b", [*HVFS, "exec", "-i", "wb", "sh", "-c", unpack]),
        env=cluster.lab.env("b"), input=tar, capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    assert unpacked.stdout == b"first\n"
    cluster.hvfs("a", "exec", "wa", "rm", name)  # the removal too is recorded once, by a's manager
    wait_for("the removal", lambda: any(v["removed"] for v in rows()))
    time.sleep(0.5)
    assert {v["vm"] for v in rows()} == {"wa"} and sum(v["removed"] for v in rows()) == 1, rows()


def test_a_fault_rule_targets_one_host(cluster: Cluster) -> None:
    rule = "op=open,path=/local/hf-*,errno=EIO,host=b"
    for host, fails in (("a", False), ("b", True)):
        done = cluster.hvfs(host, "run", "--fault", rule, "--mount", cluster.lab.host_mount(), "--", "sh", "-c",
                            f"echo x > /local/hf-{host}", check=False)  # fmt: skip
        assert (done.returncode != 0) == fails, (host, done)
        assert ("Input/output error" in done.stderr) == fails, (host, done)


def test_a_killed_manager_catches_up_on_what_it_missed(cluster: Cluster) -> None:
    before = cluster.status("c")
    os.kill(cluster.manager_pid("c"), signal.SIGKILL)
    names = [f"/shared/m-{secrets.token_hex(4)}-{i}.txt" for i in range(3)]
    for name in names:
        cluster.write("a", name, "missed\n")
    time.sleep(0.5)  # in the stream before c comes back
    assert "wc " in cluster.hvfs("c", "ps").stdout  # a front end starts c's manager again; it takes wc back
    after = wait_for("c replayed", lambda: (s := cluster.status("c"))["replayed"] >= len(names) and s)
    assert after["replayed"] == len(names) and after["received"] >= len(names), (before, after)
    for name in names:
        wait_for(f"{name} in c's audit", lambda name=name: cluster.events("c", "wa@a", name))  # type: ignore[misc]


def test_redis_dying_never_blocks_serving_and_the_events_follow_later(cluster: Cluster) -> None:
    # on the host directory: the JuiceFS volume's own metadata is in that Redis
    cluster.lab.stop_redis()
    names = [f"/local/d-{secrets.token_hex(4)}-{i}.txt" for i in range(4)]
    started = time.monotonic()
    for name in names:
        cluster.write("a", name, "while redis is down\n")
    took = time.monotonic() - started
    assert cluster.hvfs("b", "exec", "wb", "cat", names[-1]).stdout == "while redis is down\n"
    a = wait_for("a's failures counted", lambda: (s := cluster.status("a"))["publish_failures"] >= 1 and s)
    assert a["publish_buffered"] >= len(names) and a["publish_dropped"] == 0, a
    assert took < len(names) * 3.0, took  # each a whole `hvfs exec`; never the publisher's retries
    cluster.lab.start_redis()  # with its append-only file: the buffered events follow in the stream
    wait_for("a's buffer sent", lambda: cluster.status("a")["publish_buffered"] == 0, timeout=15)
    for name in names:
        wait_for(f"{name} in b's audit", lambda name=name: cluster.events("b", "wa@a", name), timeout=15)  # type: ignore[misc]


def test_an_unreachable_redis_is_one_line_and_exit_125(tmp_path: Any) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env = {**os.environ, "HVFS_STATE_DIR": str(state), "HVFS_CLUSTER": "redis://127.0.0.1:1", "HVFS_CLUSTER_HOST": "a"}
    done = subprocess.run([*HVFS, "run", "--", "true"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 125
    assert len(done.stderr.strip().splitlines()) == 1 and "HVFS_CLUSTER" in done.stderr, done.stderr
    env["HVFS_CLUSTER"] = "http://x"
    done = subprocess.run([*HVFS, "run", "--", "true"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 125 and "not a Redis URL" in done.stderr, done.stderr


def test_shared_is_an_option_of_every_mount_kind_and_checked() -> None:
    from hvfs.manager.sources.base import OptionError
    from hvfs.manager.sources.registry import kinds, parse

    for kind in kinds("mount"):
        assert "shared" in kind.option_names()
    spec = parse("memory", {"shared": "vol-1"}, "/")
    assert spec.options["shared"] == "vol-1"
    with pytest.raises(OptionError, match="not a name"):
        parse("memory", {"shared": "a/b"}, "/")


def test_events_trimmed_from_the_stream_before_a_manager_came_back_are_counted_lost(
    cluster: Cluster, tmp_path: Any
) -> None:
    import redis

    from hvfs.cluster.stream import Consumer, stream_key

    client = redis.Redis.from_url(cluster.lab.url)
    key = stream_key("gapvol")
    first = client.xadd(key, {"host": "a", "event": "{}"})
    cursors = tmp_path / "cursors.json"
    cursors.write_text(json.dumps({"cursors": {"gapvol": first.decode()}, "seen": {"gapvol": 1}}))  # then away
    for _ in range(5):
        client.xadd(key, {"host": "a", "event": "{}"}, maxlen=2, approximate=False)
    consumer = Consumer(client, "c", str(cursors), set, lambda *_: None)
    consumer.start()
    consumer.close()
    assert consumer.statistics().lost == 3  # 2, 3 and 4 of 6; 5 and 6 are kept
    kept = Consumer(client, "c", str(cursors), set, lambda *_: None)  # its cursor is now the stream's end
    kept.start()
    kept.close()
    assert kept.statistics().lost == 0


def test_examples_cluster_runs_as_its_readme_says(tmp_path: Any) -> None:
    """examples/cluster/README.md's commands, as written but for sudo (the tests are root)
    and the lab's directory (HVFS_CLUSTER_DEMO, which the README names): up, demo, a look
    at b's audit and a's status, down; nothing of the lab is left running."""
    require(os.geteuid() == 0, "a cluster of network namespaces needs root")
    require(shutil.which("redis-server") is not None, "redis-server is not installed (scripts/setup --test)")
    require(os.path.exists("/dev/fuse"), "this machine has no /dev/fuse (modprobe fuse)")
    from tests.conftest import REPO

    readme = (REPO / "examples" / "cluster" / "README.md").read_text()
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert [line.split()[3] for line in lines] == ["up", "demo", "on", "on", "down"], lines
    demo = str(tmp_path / "demo")
    env = {**os.environ, "HVFS_CLUSTER_DEMO": demo}

    def lab_namespaces() -> set[str]:
        names = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
        return {name for name in names if name.startswith("hvfs-lab-")}

    before = lab_namespaces()
    outputs = []
    try:
        for line in lines:
            argv = line.replace("/tmp/hvfs-cluster", demo).split()
            assert argv[:2] == ["sudo", ".venv/bin/python"], line
            done = subprocess.run(
                [sys.executable, *argv[2:]], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, (line, done.stdout, done.stderr)
            outputs.append(done.stdout)
    finally:
        if len(outputs) < len(lines):
            subprocess.run([sys.executable, "examples/cluster/cluster", "down"], cwd=REPO, env=env, timeout=120)
    up, shown, events, status, down = outputs
    assert "JuiceFS volume vol1" in up, up
    assert "b reads: " in shown and "b's audit shows a's requests" in shown and "exit 0" not in shown, shown
    assert "b lists 2 versions of /shared/notes.doc saved by demo-a" in shown, shown
    assert "b restores a's first version from the store on the volume" in shown and "'first'" in shown, shown
    assert "demo-a@a" in events, events
    assert "cluster" in json.loads(status)["manager"], status
    assert "cluster down" in down, down
    assert lab_namespaces() == before, "the lab's network namespaces outlived down"
