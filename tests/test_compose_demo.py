"""The compose demo (docker-compose.yml, images/, scripts/compose-demo), against a real
Docker engine with HVFS's runtime: each claim of the README's "The compose demo" run as
the README says and checked, the web page loaded in headless Chromium (a screenshot, and
its DOM holding events of both containers), and nothing of HVFS left after ``down``.

The tests of this module share one run of the demo (its own project name, directory and
port) and follow each other in file order; the last one stops it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hvfs.services.scan import EICAR
from tests.conftest import REPO, require
from tests.dockerd import docker_engine  # noqa: F401  (a fixture)

RUNTIME = "hvfs-compose-test"  # registered for this module: its services, its manager
PROJECT = "hvfs-compose-test"
HVFS = str(REPO / ".venv" / "bin" / "hvfs")
PAGE_SECONDS = 8  # how long Chromium keeps the page's event stream open
SCREENSHOT_DIR = os.environ.get("HVFS_SCREENSHOT_DIR")  # keep the screenshot there too


@dataclass
class Demo:
    docker: list[str]
    env: dict[str, str]
    directory: Path  # HVFS_DEMO_DIR: audit log, backup store, quarantine
    state: Path  # the state directory of the runtime's manager
    port: int
    screenshots: Path

    def compose(
        self, *args: str, stdin: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["docker-compose", *args], cwd=REPO, env=self.env, input=stdin, capture_output=True, timeout=timeout
        )

    def sh(self, service: str, script: str) -> subprocess.CompletedProcess[bytes]:
        """``docker-compose exec -T SERVICE sh -c SCRIPT``, as the README has it (without a terminal)."""
        return self.compose("exec", "-T", service, "sh", "-c", script)

    def hvfs(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        """hvfs as the README has it, talking to the runtime's manager."""
        return hvfs(self.state, *args)

    def events(self) -> list[dict[str, object]]:
        path = self.directory / "audit.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines if line.endswith("}")]

    def vm_of(self, service: str) -> str:
        """The VM of a service's container: the one whose loop the manager saw (the writer
        writes /shared/clock, the reader only reads it)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for event in self.events():
                if event["operation"] == "open" and event["paths"] == ["/shared/clock"] and event["result"] == "ok":
                    writes = int(str(event["flags"])) & os.O_ACCMODE != os.O_RDONLY
                    if writes == (service == "writer"):
                        return str(event["vm"])
            time.sleep(0.5)
        raise AssertionError(f"no event of the {service}'s loop in {self.directory / 'audit.jsonl'}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def runtimes(docker: list[str]) -> set[str]:
    done = subprocess.run([*docker, "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True)
    return set(json.loads(done.stdout or "{}"))


def hvfs(state: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "HVFS_STATE_DIR": str(state)}
    return subprocess.run([HVFS, *args], env=env, capture_output=True, timeout=60)


def run_demo(env: dict[str, str], command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "scripts" / "compose-demo"), command], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def demo(docker_engine: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:  # noqa: F811
    """The demo as scripts/compose-demo runs it, with a runtime of its own: registered as
    the README's ``hvfs docker install`` does, with the demo's services and a manager of
    its own (nothing else of this host's Docker or HVFS is touched)."""
    require(shutil.which("docker-compose") is not None, "docker-compose is not installed (scripts/setup --test)")
    here = tmp_path_factory.mktemp("compose-demo")
    directory, state, services = here / "data", here / "state", here / "services.toml"
    state.mkdir(mode=0o700)
    port = free_port()
    env = {
        **os.environ,
        "HVFS_RUNTIME": RUNTIME,
        "HVFS_DEMO_DIR": str(directory),
        "HVFS_DEMO_PORT": str(port),
        "HVFS_DOCKER_CONFIG": str(services),  # where the script puts the demo's services
        "COMPOSE_PROJECT_NAME": PROJECT,
        "DOCKER_HOST": docker_engine[docker_engine.index("--host") + 1],
    }
    install = hvfs(
        state, "docker", "install", "--name", RUNTIME, "--services", str(services), "--state-dir", str(state)
    )
    assert install.returncode == 0, install.stderr
    try:
        started = run_demo(env, "up")
        assert started.returncode == 0, started.stdout + started.stderr
        assert RUNTIME in runtimes(docker_engine)
        yield Demo(docker_engine, env, directory, state, port, tmp_path_factory.mktemp("screenshots"))
    finally:
        run_demo(env, "down")
        hvfs(state, "manager", "stop")
        hvfs(state, "docker", "uninstall", "--name", RUNTIME)
        leftovers(docker_engine)


def leftovers(docker: list[str]) -> None:
    """What a failed run left of the demo, removed so that the next starts clean (the test
    of ``down`` has said what it was)."""
    label = f"label=com.docker.compose.project={PROJECT}"
    ids = subprocess.run([*docker, "ps", "-aq", "--filter", label], capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run([*docker, "rm", "-f", *ids], capture_output=True, timeout=120)
    volume = Path(f"/var/lib/docker/volumes/{PROJECT}_shared/_data")
    while f" {volume} " in mountinfo("self"):
        if subprocess.run(["umount", str(volume)], capture_output=True).returncode != 0:
            break
    subprocess.run([*docker, "volume", "rm", f"{PROJECT}_shared"], capture_output=True, timeout=60)


def test_a_file_written_by_one_container_is_read_by_the_other(demo: Demo) -> None:
    text = f"hello from the writer {uuid.uuid4()}"
    wrote = demo.sh("writer", f"echo '{text}' > /shared/hello.txt")
    assert wrote.returncode == 0, wrote.stderr
    read = demo.sh("reader", "cat /shared/hello.txt")
    assert read.returncode == 0, read.stderr
    assert read.stdout.decode() == text + "\n"
    refused = demo.sh("reader", "echo no > /shared/hello.txt")
    assert refused.returncode != 0
    assert b"Read-only file system" in refused.stderr
    writer, reader = demo.vm_of("writer"), demo.vm_of("reader")
    assert writer.startswith("writer-") and reader.startswith("reader-")  # their hostnames name them
    seen = [(e["vm"], e["operation"], e["result"]) for e in demo.events() if e["paths"] == ["/shared/hello.txt"]]
    assert (writer, "open", "ok") in seen, seen  # the write, served by the manager
    assert (reader, "open", "EROFS") in seen, seen  # the reader's attempt, refused by it


def test_eicar_written_by_one_is_refused_in_the_other_and_quarantined(demo: Demo) -> None:
    assert b"'" not in EICAR
    wrote = demo.sh("writer", f"printf %s '{EICAR.decode()}' > /shared/eicar.com")
    assert wrote.returncode == 0, wrote.stderr
    refused = demo.sh("reader", "cat /shared/eicar.com")
    assert refused.returncode != 0
    assert b"Permission denied" in refused.stderr, refused.stderr
    assert EICAR not in refused.stdout
    also = demo.sh("writer", "cat /shared/eicar.com")  # refused to every container
    assert also.returncode != 0 and b"Permission denied" in also.stderr, also.stderr
    listed = demo.hvfs("quarantine", "list", "--quarantine", str(demo.directory / "quarantine"))
    assert listed.returncode == 0, listed.stderr
    entries = [line for line in listed.stdout.decode().splitlines() if "/shared/eicar.com" in line]
    assert len(entries) == 1, listed.stdout  # one verdict, one entry, however often it is refused
    assert "EICAR" in entries[0]
    reader = demo.vm_of("reader")
    quarantined = [e for e in demo.events() if e["operation"] == "quarantine" and e["paths"] == ["/shared/eicar.com"]]
    assert [e["vm"] for e in quarantined] == [reader], quarantined


def test_a_changed_file_is_restored_from_backup(demo: Demo) -> None:
    first, second = f"first version {uuid.uuid4()}", "second version"
    assert demo.sh("writer", f"echo '{first}' > /shared/notes.txt").returncode == 0
    assert demo.sh("writer", f"echo '{second}' > /shared/notes.txt").returncode == 0
    store = str(demo.directory / "backup")
    versions: list[str] = []
    deadline = time.monotonic() + 10  # a version is saved after the close, off the VM's path
    while time.monotonic() < deadline:
        listed = demo.hvfs("backup", "list", "--backup-store", store, "/shared/notes.txt")
        assert listed.returncode == 0, listed.stderr
        versions = listed.stdout.decode().splitlines()
        if len({line.split()[4] for line in versions}) >= 2:
            break
        time.sleep(0.3)
    sizes = {int(line.split()[3]): line.split()[0] for line in versions}
    assert len(first) + 1 in sizes and len(second) + 1 in sizes, versions
    at = sizes[len(first) + 1]  # the time the first version was saved
    restore = demo.hvfs("backup", "restore", "/shared/notes.txt", "--backup-store", store, "--at", at, "--to", "-")
    assert restore.returncode == 0, restore.stderr
    put = demo.compose("exec", "-T", "writer", "tar", "-x", "-C", "/shared", stdin=restore.stdout)
    assert put.returncode == 0, put.stderr
    read = demo.sh("reader", "cat /shared/notes.txt")
    assert read.stdout.decode() == first + "\n", read.stderr


def test_a_fault_is_injected_into_one_container_only(demo: Demo) -> None:
    assert demo.sh("writer", "echo flaky > /shared/flaky.txt").returncode == 0
    fine = demo.sh("writer", "cat /shared/flaky.txt")
    assert fine.returncode == 0 and fine.stdout == b"flaky\n", fine.stderr
    failed = demo.sh("reader", "cat /shared/flaky.txt")
    assert failed.returncode != 0
    assert b"Input/output error" in failed.stderr, failed.stderr
    faults = [e for e in demo.events() if e["answered_by"] == "faults"]
    assert faults and {e["vm"] for e in faults} == {demo.vm_of("reader")}, faults
    assert all(e["result"] == "EIO" and e["paths"] == ["/shared/flaky.txt"] for e in faults), faults


def chromium() -> str:
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    found = next((path for path in map(shutil.which, names) if path is not None), None)
    require(found is not None, "chromium is not installed (scripts/setup --test installs it)")
    assert found is not None
    return found


def load_page(demo: Demo, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The page in headless Chromium, its event stream open for PAGE_SECONDS (the page's
    "?seconds=" ends it, so that Chromium sees the page finish loading)."""
    url = f"http://127.0.0.1:{demo.port}/?seconds={PAGE_SECONDS}"
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
               f"--virtual-time-budget={(PAGE_SECONDS + 10) * 1000}", *args, url]  # fmt: skip
    return subprocess.run(command, capture_output=True, timeout=PAGE_SECONDS + 60)


def test_the_page_shows_the_events_of_both_containers_live(demo: Demo) -> None:
    writer, reader = demo.vm_of("writer"), demo.vm_of("reader")
    live = f"/shared/live-{uuid.uuid4().hex[:8]}.txt"

    def write_while_loading() -> None:  # after the page has read the log's past
        time.sleep(PAGE_SECONDS / 3)
        demo.sh("writer", f"echo live > {live}")

    writing = threading.Thread(target=write_while_loading)
    writing.start()
    dumped = load_page(demo, "--dump-dom")
    writing.join()
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout.decode()
    rows = re.findall(r'<tr data-vm="([^"]+)"', dom)
    assert writer in rows and reader in rows, (writer, reader, set(rows))
    assert f">{live}<" in dom  # a file event that happened while the page was open
    assert f">{live.removeprefix('/shared/')}<" in dom  # and the volume's listing that followed it
    assert ">hello.txt<" in dom and ">notes.txt<" in dom
    assert "stream ended" in dom

    shot = demo.screenshots / "compose-demo.png"
    taken = load_page(demo, f"--screenshot={shot}")
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000
    if SCREENSHOT_DIR:
        shutil.copy(shot, Path(SCREENSHOT_DIR) / shot.name)


def mountinfo(pid: object) -> str:
    """The mount table of a process of the host (the manager's)."""
    try:
        return Path(f"/proc/{pid}/mountinfo").read_text(errors="replace")
    except OSError:
        return ""


def test_down_leaves_nothing_of_hvfs_behind(demo: Demo) -> None:
    volume = f"{PROJECT}_shared"
    assert volume in subprocess.run([*demo.docker, "volume", "ls", "-q"], capture_output=True, text=True).stdout
    writer, reader = demo.vm_of("writer"), demo.vm_of("reader")
    status = demo.hvfs("manager", "status", "--json")
    assert status.returncode == 0, status.stderr
    before = json.loads(status.stdout)
    ours = [gid for gid, vms in before.get("groups", {}).items() if {writer, reader} <= {vm["name"] for vm in vms}]
    assert len(ours) == 1, before  # both containers are VMs of one group
    manager = before["manager"]["pid"]
    assert volume in mountinfo(manager)  # the volume is a source of the manager's
    state = demo.state
    assert (state / "groups" / ours[0]).exists()

    stopped = demo.compose("down", "-v", timeout=120)  # as the README says: docker-compose itself
    assert stopped.returncode == 0, stopped.stderr
    left = subprocess.run([*demo.docker, "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"],
                          capture_output=True, text=True).stdout  # fmt: skip
    assert left == ""
    assert volume not in subprocess.run([*demo.docker, "volume", "ls", "-q"], capture_output=True, text=True).stdout
    status = demo.hvfs("manager", "status", "--json")
    after = json.loads(status.stdout)
    assert after.get("groups") == {}, after  # the group is gone, and its VMs (the manager serves no other)
    listed = demo.hvfs("docker", "ps", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stdout
    assert volume not in mountinfo(manager) and volume not in mountinfo("self")
    assert str(state) not in mountinfo(manager) and str(state) not in mountinfo("self")
    for kept in ("groups", "vms", "trees"):  # the manager's state of groups, VMs and host trees
        assert not list((state / kept).glob("*")), (kept, list((state / kept).glob("*")))

    cleaned = run_demo(demo.env, "down")  # and the demo's services and data
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert not demo.directory.exists()  # audit log, backups and quarantine: the demo's directory
    assert not Path(demo.env["HVFS_DOCKER_CONFIG"]).exists()
