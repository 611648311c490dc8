"""Projects: many VMs on one manager, described in hvfs.toml (``hvfs up`` and friends)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, Hvfs

EXAMPLE = REPO / "examples" / "shared-sqlite"
LONG = "x" * 20_000


class Project:
    """One project directory, with ``hvfs -f FILE …`` at hand."""

    def __init__(self, hvfs: Hvfs, directory: Path) -> None:
        self.hvfs = hvfs
        self.file = str(directory / "hvfs.toml")

    def run(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return self.hvfs.run("-f", self.file, *args, **kwargs)  # type: ignore[arg-type]

    def ok(self, *args: str, **kwargs: object) -> str:
        return self.hvfs.ok("-f", self.file, *args, **kwargs)

    def ps(self) -> dict[str, dict[str, object]]:
        return {vm["name"]: vm for vm in json.loads(self.ok("ps", "--json"))["vms"]}


@pytest.fixture
def example(hvfs: Hvfs, tmp_path: Path) -> Iterator[Project]:
    directory = tmp_path / "shared-sqlite"
    shutil.copytree(EXAMPLE, directory)
    project = Project(hvfs, directory)
    assert "is up" in project.ok("up", "-d")
    yield project
    project.run("down")


def _project(hvfs: Hvfs, directory: Path, text: str) -> Project:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hvfs.toml").write_text(text)
    return Project(hvfs, directory)


def test_two_vms_write_one_sqlite_database_and_a_third_may_only_read(example: Project) -> None:
    insert = [*example.hvfs.command, "-f", example.file, "exec"]
    writers = [
        subprocess.Popen(
            [*insert, vm, "--", "python3", "/app/insert.py", vm, "2000"], stdout=subprocess.PIPE, text=True
        )
        for vm in ("writer-a", "writer-b")
    ]
    for writer in writers:
        out, _ = writer.communicate(timeout=300)
        assert writer.returncode == 0 and "inserted 2000" in out
    check = (
        "import sqlite3; db = sqlite3.connect('/data/shared.db'); "
        "print(sorted(db.execute('select writer, count(*), count(distinct n) from rows group by writer')), "
        "db.execute('pragma integrity_check').fetchone()[0])"
    )
    assert example.ok("exec", "writer-a", "--", "python3", "-c", check).strip() == (
        "[('writer-a', 2000, 2000), ('writer-b', 2000, 2000)] ok"
    )
    refused = example.run("exec", "reader", "--", "python3", "-c", "open('/data/x', 'w')")
    assert refused.returncode == 1 and "Read-only file system" in refused.stderr
    seen = example.ok(
        "exec", "reader", "--", "python3", "-c", "import os; print(os.path.getsize('/data/shared.db') > 0)"
    )
    assert seen.strip() == "True"  # the reader sees the writers' file: one volume


def test_locks_work_across_vms(example: Project) -> None:
    hold = (
        "import fcntl, time; f = open('/data/lock', 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('held', flush=True); time.sleep(3)"
    )
    attempt = (
        "import fcntl, errno; f = open('/data/lock', 'w')\n"
        "try:\n fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print('locked')\n"
        "except OSError as e:\n print(errno.errorcode[e.errno])"
    )
    command = [*example.hvfs.command, "-f", example.file, "exec", "writer-a", "--", "python3", "-c", hold]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert example.ok("exec", "writer-b", "--", "python3", "-c", attempt).strip() == "EAGAIN"  # EWOULDBLOCK
        holder.wait(timeout=30)
    assert example.ok("exec", "writer-b", "--", "python3", "-c", attempt).strip() == "locked"
    record = (
        "import fcntl, errno, sys; f = open('/data/record', 'a')\n"
        "try:\n fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print('locked', flush=True)\n"
        "except OSError as e:\n print(errno.errorcode[e.errno], flush=True)\n"
        "sys.stdin.readline()"
    )
    command = [*example.hvfs.command, "-f", example.file, "exec", "-i", "writer-a", "--", "python3", "-c", record]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        other = example.ok("exec", "writer-b", "--", "python3", "-c", record, input="\n").strip()
        assert other in ("EAGAIN", "EACCES")  # fcntl record locks, as POSIX allows either
        holder.communicate("\n", timeout=30)
    assert example.ok("exec", "writer-b", "--", "python3", "-c", record, input="\n").strip() == "locked"


def test_only_the_owner_may_use_the_control_socket(example: Project, staged: Path) -> None:
    from tests.conftest import ROOTLESS_USER, as_user

    control = os.path.join(os.environ["HVFS_STATE_DIR"], "manager.sock")  # root's manager, serving the example
    assert os.path.exists(control), control
    probe = f"import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect({control!r})"
    other = subprocess.run(
        ["runuser", "-u", ROOTLESS_USER, "--", "/usr/bin/python3", "-c", probe], capture_output=True, text=True
    )
    assert other.returncode != 0 and "PermissionError" in other.stderr
    theirs = as_user(ROOTLESS_USER, staged).run("-f", example.file, "ps", "--json")  # their own manager's view
    assert theirs.returncode != 0 or json.loads(theirs.stdout)["vms"] == [], theirs


def test_vms_reach_each_other_by_name_on_a_bridge(example: Project) -> None:
    echo = (
        "import socket; s = socket.create_connection(('writer-b', 7000), timeout=10); "
        "s.sendall(b'over the bridge\\n'); print(s.makefile().readline().strip())"
    )
    assert example.ok("exec", "writer-a", "--", "python3", "-c", echo).strip() == "over the bridge"
    vms = example.ps()
    assert {vm["address"] for vm in vms.values()} == {"10.89.0.2", "10.89.0.3", "10.89.0.4"}
    hosts = example.ok("exec", "reader", "--", "cat", "/etc/hosts")
    assert "10.89.0.3\twriter-b" in hosts


def test_without_a_network_vms_cannot_reach_each_other(hvfs: Hvfs, tmp_path: Path) -> None:
    project = _project(hvfs, tmp_path / "isolated", '[vms.a]\ncommand = "sleep 60"\n[vms.b]\ncommand = "sleep 60"\n')
    project.ok("up", "-d")
    try:
        probe = (
            "import socket; print([n for _, n in socket.if_nameindex()]); "
            "socket.create_connection(('b', 7000), timeout=3)"
        )
        result = project.run("exec", "a", "--", "python3", "-c", probe)
        assert result.stdout.strip() == "['lo']"
        assert result.returncode == 1 and "socket.gaierror" in result.stderr  # no name, no route
    finally:
        project.ok("down")


def test_a_pids_limit_stops_a_fork_bomb_while_others_serve(example: Project) -> None:
    bomb = (
        "import os, time\nn = 0\n"
        # Each child lets go of the exec's output at once: the exec ends when the bomb's parent does.
        "try:\n while True:\n  if os.fork() == 0:\n   os.closerange(0, 3); time.sleep(30); os._exit(0)\n  n += 1\n"
        "except OSError as e:\n print(n, e.strerror)"
    )
    count, _, reason = example.ok("exec", "reader", "--", "python3", "-c", bomb).strip().partition(" ")
    assert int(count) < 50 and reason == "Resource temporarily unavailable"
    assert (
        example.ok("exec", "writer-b", "--", "sh", "-c", "echo fine > /data/after && cat /data/after").strip() == "fine"
    )


def test_a_crashing_vm_leaves_the_others_alone(hvfs: Hvfs, tmp_path: Path) -> None:
    project = _project(
        hvfs,
        tmp_path / "crash",
        '[vms.crash]\ncommand = "sleep 0.5; kill -SEGV $$"\n[vms.steady]\ncommand = "sleep 60"\n',
    )
    project.ok("up", "-d")
    try:
        deadline = time.monotonic() + 20
        while project.ps()["crash"]["state"] != "exited":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        vms = project.ps()
        assert vms["crash"]["code"] == 128 + 11 and vms["steady"]["state"] == "running"
        assert project.ok("exec", "steady", "--", "echo", "alive").strip() == "alive"
        assert project.run("stop", "steady", "-t", "1").returncode == 0
        assert project.ps()["steady"]["state"] == "exited"
    finally:
        project.ok("down")


def test_down_leaves_nothing_behind(hvfs: Hvfs, tmp_path: Path) -> None:
    state = Path(os.environ["HVFS_STATE_DIR"], "groups")
    directory = tmp_path / "shared-sqlite"
    shutil.copytree(EXAMPLE, directory)
    project = Project(hvfs, directory)
    project.ok("up", "-d")
    vms = project.ps()
    groups = list(state.glob("shared-sqlite-*"))
    assert len(groups) == 1 and len(vms) == 3
    gid = groups[0].name  # this project's: another session's shared-sqlite may run meanwhile
    again = project.run("up", "-d")  # a second up reports the running one
    assert again.returncode == 0 and "already up" in again.stdout
    project.ok("down")  # returns once every VM has exited and its state is removed
    assert not (state / gid).exists()
    leftover = [p for p in os.listdir("/proc") if p.isdigit() and b"hvfs" in _cmdline(p) and _cwd(p) == str(directory)]
    assert leftover == []
    assert str(directory) not in Path("/proc/self/mountinfo").read_text()
    cgroups = [
        name for root in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup") if os.path.isdir(root) for name in os.listdir(root)
    ]
    assert not [name for name in cgroups if name.startswith(f"hvfs-{gid}")]


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _cwd(pid: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_logs_and_foreground_up(hvfs: Hvfs, tmp_path: Path) -> None:
    project = _project(
        hvfs, tmp_path / "fg", '[vms.one]\ncommand = "echo hello; exit 3"\n[vms.two]\ncommand = "echo world"\n'
    )
    result = project.run("up")  # foreground: prefixed output, returns when every VM has exited
    out = result.stdout
    assert "one | hello" in out and "two | world" in out and "one | exited with code 3" in out
    assert result.returncode == 3  # the first VM that failed (tests/test_project_ci.py)
    assert project.ok("ps", "--json") and json.loads(project.ok("ps", "--json"))["vms"] == []


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        ('[vms.web]\ncommand = "true"\nmounts = [{ source = "shard", target = "/x" }]\n'
         '[sources.shared]\ntype = "memory"\n',
         'vms.web.mounts[0].source: no source named "shard"; known: shared'),
        ('[vms.web]\ncomand = "true"\n', "vms.web: unknown key 'comand'"),
        ('[vms.web]\ncommand = "true"\nmounts = [{ source = "s", target = "rel" }]\n[sources.s]\ntype = "memory"\n',
         "vms.web.mounts[0].target"),
        ('[network]\nmode = "wifi"\n[vms.web]\ncommand = "true"\n', "network.mode: must be 'none' or 'bridge'"),
        ('[sources.h]\ntype = "host"\npath = "./missing"\n[vms.web]\ncommand = "true"\n', "sources.h.path"),
        ('[vms.web]\ncommand = "true"\n[vms.web.limits]\npids = true\n', "vms.web.limits.pids: must be int"),
        ("name = \n", "not valid TOML"),
        ("", "no VMs"),
        # Limits and sizes this machine cannot give, or that are no number at all.
        ('[vms.web]\ncommand = "true"\nlimits = { cpus = 1e308 }\n', "vms.web.limits.cpus: 1e+308 CPUs is more than"),
        ('[vms.web]\ncommand = "true"\nlimits = { cpus = nan }\n', "vms.web.limits.cpus: nan is not a number of CPUs"),
        ('[vms.web]\ncommand = "true"\nlimits = { cpus = inf }\n', "vms.web.limits.cpus: inf is not a number"),
        ('[vms.web]\ncommand = "true"\nlimits = { cpus = 0.001 }\n', "give one from 0.01"),
        ('[vms.web]\ncommand = "true"\nlimits = { pids = 1 }\n', "vms.web.limits.pids: 1 is too few processes"),
        ('[vms.web]\ncommand = "true"\nlimits = { pids = 99999999999 }\n', "more than this machine's pid_max"),
        ('[vms.web]\ncommand = "true"\nlimits = { memory = "1k" }\n', "limits.memory: size 1k is too small"),
        ('[vms.web]\ncommand = "true"\nlimits = { memory = "1000t" }\n', "more than this machine's memory"),
        ('[sources.m]\ntype = "memory"\nsize = "100t"\n[vms.web]\ncommand = "true"\n',
         "sources.m.size: size 100t is more than this machine's memory"),
        ('[sources.h]\ntype = "host"\npath = "."\nsize = "1g"\n[vms.web]\ncommand = "true"\n',
         "sources.h.size: a host source has no size"),
        ('[vms.web]\ncommand = "true"\nmounts = [{ target = "/t", tmpfs = true, size = "100t" }]\n',
         "vms.web.mounts[0].size: size 100t is more than"),
        ('[vms.web]\ncommand = "true"\nimage = "/etc/passwd"\n',
         "vms.web.image: /etc/passwd is neither a directory nor a tar archive"),
        # A command no VM can be given.
        ('[vms.web]\ncommand = "echo ' + "x" * 2_000_000 + '"\n',
         "vms.web.command: a string of 2000005 bytes is longer than Linux passes to a command"),
        ('[vms.web]\ncommand = "true"\n[vms.web.environment]\n' + "".join(f'K{i} = "{LONG}"\n' for i in range(8)),
         "the command and its environment are 160"),
        ('[vms.web]\ncommand = ["echo", "a\\u0000b"]\n', "contains a NUL byte"),
    ],
)  # fmt: skip
def test_config_errors_name_the_key(hvfs: Hvfs, tmp_path: Path, text: str, mentions: str) -> None:
    project = _project(hvfs, tmp_path / "bad", text)
    result = project.run("up", "-d")
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("hvfs: hvfs.toml") and mentions in result.stderr
    assert not list(Path(os.environ["HVFS_STATE_DIR"], "groups").glob("bad-*"))  # nothing was left


def test_a_manager_that_cannot_start_leaves_nothing(hvfs: Hvfs, tmp_path: Path) -> None:
    project = _project(
        hvfs, tmp_path / "unstartable", '[services]\naudit = "/proc/1/mem"\n[vms.web]\ncommand = "sleep 60"\n'
    )
    result = project.run("up", "-d")
    assert result.returncode == 125 and result.stderr.count("\n") == 1, result.stderr
    assert "--audit /proc/1/mem is a kernel interface" in result.stderr
    assert not list(Path(os.environ["HVFS_STATE_DIR"], "groups").glob("unstartable-*"))
    assert project.run("ps").returncode == 0  # not up, and nothing to clean


def test_an_exec_too_long_for_the_vm_is_refused_and_the_vm_lives(example: Project) -> None:
    long = "x" * 70_000  # each under the kernel's limit for one string; together more than hvfs passes
    assert example.ok("exec", "reader", "--", "echo", long).strip() == long
    result = example.run("exec", "reader", "--", "echo", long, long)
    assert result.returncode == 125 and result.stderr.count("\n") == 1, result.stderr
    assert "more than hvfs passes to a VM" in result.stderr
    assert example.ok("exec", "reader", "--", "echo", "alive").strip() == "alive"


def test_exec_with_a_terminal(example: Project) -> None:
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        example.hvfs.command[0],
        [*example.hvfs.command[1:], "-f", example.file, "exec", "-it", "writer-a", "--", "sh"],
        encoding="utf-8",
        timeout=20,
        dimensions=(30, 90),
    )
    child.expect("# ")
    child.sendline("tty; stty size; hostname")
    child.expect("# ")
    assert child.before.splitlines()[1:] == ["/dev/pts/0", "30 90", "writer-a"]
    child.sendline("exit 5")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 5


WATCH = """
import ctypes, os, struct, select
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
libc.inotify_add_watch(fd, b"/data", 0x100 | 0x8)  # IN_CREATE | IN_CLOSE_WRITE
print("watching", flush=True)
seen = []
while len(seen) < 2 and select.select([fd], [], [], 20)[0]:
    data = os.read(fd, 4096)
    while data:
        _, mask, _, length = struct.unpack("iIII", data[:16])
        seen.append((hex(mask), data[16:16 + length].rstrip(b"\\0").decode()))
        data = data[16 + length:]
print(seen)
"""


def test_inotify_in_one_vm_sees_another_vms_writes(example: Project) -> None:
    command = [*example.hvfs.command, "-f", example.file, "exec", "reader", "--", "python3", "-c", WATCH]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as watcher:
        assert watcher.stdout is not None and watcher.stdout.readline() == "watching\n"
        example.ok("exec", "writer-b", "--", "sh", "-c", "echo news > /data/from-b")
        assert watcher.stdout.readline().strip() == "[('0x100', 'from-b'), ('0x8', 'from-b')]"


def test_a_rootless_project(rootless: Hvfs, shared_tmp: Path) -> None:
    from tests.conftest import ROOTLESS_USER, chown_to

    directory = shared_tmp / "shared-sqlite"
    shutil.copytree(EXAMPLE, directory)
    chown_to(shared_tmp, ROOTLESS_USER)
    project = Project(rootless, directory)
    project.ok("up", "-d")
    try:
        echo = (
            "import socket; s = socket.create_connection(('writer-b', 7000), timeout=10); "
            "s.sendall(b'rootless\\n'); print(s.makefile().readline().strip())"
        )
        assert project.ok("exec", "writer-a", "--", "python3", "-c", echo).strip() == "rootless"
        assert project.ok("exec", "writer-a", "--", "sh", "-c", "echo x > /data/f && id -u").strip() == "0"
    finally:
        project.ok("down")
