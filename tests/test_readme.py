"""Every command block of README.md, run as written, doing what the README says.

The README is parsed: each fenced block (```sh, ```toml, ```python) is a test named by
its line and section, so a block added later runs too, or fails naming itself. A shell
block runs line by line, each line with bash in a directory laid out as a newcomer's
(a Makefile, data/, rootfs/, the project's work.py: ``newcomer``), with this venv's
``hvfs`` first on PATH and a manager and data directory of the module's own; a line must
exit 0, and ``CHECKS`` holds what else the README says of it. A line with ``-it`` runs
under a pseudo-terminal, given input. ``sudo`` is dropped (the tests run as root). A
```toml block is the project file of the shell block after it; a ```python block runs
as a script. Blocks run by other modules (Docker, the compose demo) are named in
``ELSEWHERE``, and that module must still run their commands.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hvfs.oci import install
from tests.conftest import REPO, require
from tests.dockerd import busybox_image, docker_engine  # noqa: F401

README = REPO / "README.md"
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Block:
    language: str
    section: str
    line: int
    text: str

    @property
    def name(self) -> str:
        return f"README.md:{self.line} ({self.section}, {self.language})"

    def commands(self) -> list[str]:
        """The command lines: comments, blank lines and leading ``sudo`` left out."""
        found = []
        for line in self.text.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                found.append(line.removeprefix("sudo "))
        return found


def blocks() -> list[Block]:
    found, section, fence = [], "", None
    lines = README.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if fence is None and line.startswith("#"):
            section = line.lstrip("# ")
        elif fence is None and line.startswith("```"):
            fence = (line[3:].strip(), number, [])
        elif fence is not None and line.startswith("```"):
            found.append(Block(fence[0], section, fence[1], "\n".join(fence[2]) + "\n"))
            fence = None
        elif fence is not None:
            fence[2].append(line)
    return found


BLOCKS = blocks()

DOCKER = "Docker: `--runtime=hvfs`"
DAEMON_JSON = Path("/etc/docker/daemon.json")

# Blocks whose commands another test module runs: that module and what it must still run.
ELSEWHERE = {
    "The compose demo: containers that share files through one manager": (
        ["tests/test_compose_demo.py"],
        ['"scripts" / "compose-demo"', 'run_demo(env, "up")', 'run_demo(env, "down")'],
    ),
}


@dataclass
class Line:
    command: str
    cwd: Path
    env: dict[str, str]
    stdout: str = ""
    stderr: str = ""


Check = Callable[[Line], None]
CHECKS: dict[str, Check] = {}


def check(pattern: str) -> Callable[[Check], Check]:
    """What the README says of the command lines matching ``pattern`` (a regex)."""

    def register(function: Check) -> Check:
        CHECKS[pattern] = function
        return function

    return register


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A manager and a data directory (backups, quarantine) of this module's own."""
    here = tmp_path_factory.mktemp("readme-hvfs")
    state, data = here / "state", here / "data"
    state.mkdir(mode=0o700)
    data.mkdir(mode=0o700)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "HVFS_STATE_DIR": str(state)}
    env |= {"HVFS_DATA_DIR": str(data), "TERM": "xterm"}
    yield env
    subprocess.run([BIN / "hvfs", "manager", "stop"], env=env, capture_output=True, timeout=60)


@pytest.fixture
def newcomer(tmp_path: Path) -> Path:
    """A directory as a newcomer has one: a Makefile, data/, a root file system in rootfs/,
    the project's work.py (the README's hvfs.toml runs it), and hvfs's .venv and docs/."""
    home = tmp_path / "project"
    home.mkdir(mode=0o755)
    (home / "Makefile").write_text("all: out.txt\nout.txt:\n\techo built > out.txt\nclean:\n\trm -f out.txt\n")
    (home / "data").mkdir()
    (home / "data" / "notes.txt").write_text("b\na\n")
    (home / "data" / "more.txt").write_text("c\n")
    require(shutil.which("busybox") is not None, "busybox-static is not installed (scripts/setup installs it)")
    subprocess.run([REPO / "images" / "busybox-rootfs", home / "rootfs"], check=True, capture_output=True)
    (home / "work.py").write_text(
        "import os, urllib.request\n"
        "page = urllib.request.urlopen('http://web:8000/').read()\n"
        "open('/scratch/page', 'wb').write(page)\n"
        "print('worker', os.environ['MODE'], os.getuid(), len(page), flush=True)\n"
    )
    (home / ".venv").symlink_to(REPO / ".venv")
    (home / "docs").mkdir()
    return home


def run_line(line: Line, env: dict[str, str]) -> None:
    """Runs one command line as a user types it; a line with -it gets a terminal and input."""
    if line.command.startswith("scripts/test"):
        scripts_test_passes_its_arguments_to_pytest()
        return
    if re.search(r"\s-(it|ti)\s", line.command):
        status, output = _in_terminal(line.command, line.cwd, env, b"echo $((6 * 7))-done; exit\n")
        line.stdout = output
        assert status == 0 and "42-done" in output, f"{line.command!r} in a terminal exited {status}:\n{output}"
        return
    done = subprocess.run(
        ["bash", "-c", line.command], cwd=line.cwd, env=env, capture_output=True, text=True, timeout=180
    )
    line.stdout, line.stderr = done.stdout, done.stderr
    assert done.returncode == 0, f"{line.command!r} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"


def _in_terminal(command: str, cwd: Path, env: dict[str, str], keys: bytes) -> tuple[int, str]:
    main, terminal = pty.openpty()
    process = subprocess.Popen(
        ["bash", "-c", command], cwd=cwd, env=env, stdin=terminal, stdout=terminal, stderr=terminal,
        start_new_session=True,
    )  # fmt: skip
    os.close(terminal)
    output, sent, deadline = b"", False, time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # EIO: every end of the terminal is closed
                    break
                if not chunk:
                    break
                output += chunk
            if not sent and (output or time.monotonic() > deadline - 55):
                os.write(main, keys)  # typed once the VM's shell has said something, or after 5 s
                sent = True
            if process.poll() is not None and not ready:
                break
        status = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(main)
    return status, output.decode(errors="replace")


def run_block(block: Block, cwd: Path, env: dict[str, str]) -> None:
    for command in block.commands():
        line = Line(command, cwd, env)
        matching = [function for pattern, function in CHECKS.items() if re.search(pattern, command)]
        before = snapshot(cwd) if any(f is overlay_leaves_the_checkout_clean for f in matching) else None
        run_line(line, env)
        for function in matching:
            if before is not None and function is overlay_leaves_the_checkout_clean:
                assert snapshot(cwd) == before, f"{command!r} changed the checkout"
            else:
                function(line)


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".venv" not in p.parts
    }


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_readme_block(
    block: Block, newcomer: Path, environment: dict[str, str], request: pytest.FixtureRequest
) -> None:
    assert block.language in ("sh", "toml", "python"), f"{block.name}: a block of a language this test cannot run"
    if block.section in ELSEWHERE:
        modules, needles = ELSEWHERE[block.section]
        text = "".join((REPO / module).read_text() for module in modules)
        missing = [needle for needle in needles if needle not in text]
        assert not missing, f"{block.name} is run by {', '.join(modules)}, which no longer runs {missing}"
        return
    if block.language == "python":
        script = newcomer / "example.py"
        script.write_text(block.text)
        done = subprocess.run([sys.executable, script], cwd=newcomer, env=environment, capture_output=True, text=True,
                              timeout=180)  # fmt: skip
        assert done.returncode == 0, f"{block.name} failed:\n{done.stdout}\n{done.stderr}"
        return
    if block.language == "toml":
        following = BLOCKS[BLOCKS.index(block) + 1]
        assert following.language == "sh" and following.section == block.section, (
            f"{block.name}: a project file should be followed by the commands that use it"
        )
        return  # run with them, as their hvfs.toml
    preceding = BLOCKS[BLOCKS.index(block) - 1] if BLOCKS.index(block) else None
    if preceding is not None and preceding.language == "toml" and preceding.section == block.section:
        (newcomer / "hvfs.toml").write_text(preceding.text)
    if block.section == DOCKER:
        run_docker_block(block, newcomer, environment, request)
        return
    cwd = REPO if block.section == "Two commands" else newcomer  # "from a clone of this repository"
    run_block(block, cwd, environment)


def run_docker_block(block: Block, cwd: Path, env: dict[str, str], request: pytest.FixtureRequest) -> None:
    """As a newcomer runs it: root's manager (/run/hvfs), the runtime ``hvfs`` in the real
    daemon.json, the image ``busybox`` (tagged from the one built here when the engine has
    none: no registry is reachable), the volume ``data``; all put back as they were after."""
    require(os.geteuid() == 0, "hvfs docker install needs root")
    docker: list[str] = request.getfixturevalue("docker_engine")
    image: str = request.getfixturevalue("busybox_image")
    exists = [subprocess.run([*docker, kind, "inspect", name], capture_output=True).returncode == 0
              for kind, name in (("image", "busybox"), ("volume", "data"))]  # fmt: skip
    if not exists[0]:
        subprocess.run([*docker, "tag", image, "busybox"], check=True, capture_output=True)
    config = DAEMON_JSON.read_bytes() if DAEMON_JSON.exists() else None
    env = {name: value for name, value in env.items() if name != "HVFS_STATE_DIR"}
    env["DOCKER_HOST"] = docker[docker.index("--host") + 1]
    try:
        run_block(block, cwd, env)
    finally:
        if config is None:
            DAEMON_JSON.unlink(missing_ok=True)
        else:
            DAEMON_JSON.write_bytes(config)
        if (pid := install.dockerd_pid()) is not None:
            os.kill(pid, signal.SIGHUP)
        if not exists[0]:
            subprocess.run([*docker, "rmi", "busybox"], capture_output=True)
        if not exists[1]:
            subprocess.run([*docker, "volume", "rm", "data"], capture_output=True)


# What the README says of its command lines, beyond exiting 0.


def scripts_test_passes_its_arguments_to_pytest() -> None:
    """scripts/test is what CI runs, the whole suite: not run from within it (it would run
    this test again). What the README says of it: it sets up for the tests, and its
    arguments go to pytest."""
    script = (REPO / "scripts" / "test").read_text().splitlines()
    assert "scripts/setup --test" in script and script[-1] == 'exec .venv/bin/python -m pytest "$@"', script
    assert "set -euo pipefail" in script


@check(r"sqlite3\.sqlite_version")
def prints_sqlite_version(line: Line) -> None:
    assert re.fullmatch(r"3\.\d+\.\d+\n", line.stdout), line.stdout


@check(r"-v \"\$PWD:/work\" -w /work -- make")
def make_wrote_through_the_served_directory(line: Line) -> None:
    assert (line.cwd / "out.txt").read_text() == "built\n"


@check(r"--tmpfs /scratch")
def sorted_the_read_only_data_in_scratch(line: Line) -> None:
    assert line.stdout.split() == ["3", "/scratch/all"] and not (line.cwd / "data" / "all").exists()


@check(r"type=overlay")
def overlay_leaves_the_checkout_clean(line: Line) -> None:
    """Compared before and after in run_block."""


@check(r"--image \./rootfs -- ls /")
def listed_the_other_root(line: Line) -> None:
    assert set(line.stdout.split()) >= {"bin", "etc"} and "usr" not in line.stdout.split()


@check(r"--persist \./state -- cat /root/note")
def the_next_vm_sees_the_persisted_change(line: Line) -> None:
    assert line.stdout == "hello\n" and not Path("/root/note").exists()


@check(r"^hvfs exec site")
def the_detached_vm_answers_on_its_port(line: Line) -> None:
    assert line.stdout == "200\n", line.stdout
    with urllib.request.urlopen("http://127.0.0.1:8080", timeout=10) as answer:  # published on the host
        assert answer.status == 200


@check(r"^hvfs ps --json")
def lists_the_detached_vm(line: Line) -> None:
    assert any(vm["name"] == "site" and vm["state"] == "running" for vm in json.loads(line.stdout)), line.stdout


@check(r"^hvfs rm -f site")
def the_detached_vm_is_gone_and_its_port_closed(line: Line) -> None:
    with pytest.raises(OSError), urllib.request.urlopen("http://127.0.0.1:8080", timeout=3):
        pass


@check(r"^hvfs run --diff")
def lists_exactly_the_three_changes(line: Line) -> None:
    assert line.stderr.splitlines() == ["C /data/notes.txt", "C /etc", "D /etc/hostname", "A /etc/x"], line.stderr
    assert (line.cwd / "data" / "notes.txt").read_text().endswith("b\n")  # a served mount, written through


@check(r"echo kept > /data/new.txt")
def applied_when_the_command_succeeded(line: Line) -> None:
    assert (line.cwd / "data" / "new.txt").read_text() == "kept\n"


@check(r"echo lost > /data/lost.txt")
def dropped_when_the_command_failed(line: Line) -> None:
    assert line.stdout == "exit 1, data/ untouched\n" and not (line.cwd / "data" / "lost.txt").exists()


@check(r"^hvfs up --exit-code-from worker")
def the_worker_fetched_the_page_as_user_1000(line: Line) -> None:
    assert re.search(r"worker batch 1000 \d+", line.stdout + line.stderr), line.stdout + line.stderr


@check(r"^hvfs ps +(#|$)")
def lists_both_vms(line: Line) -> None:
    assert "web" in line.stdout and "worker" in line.stdout, line.stdout


@check(r"^hvfs logs web")
def shows_the_health_checks_web_answered(line: Line) -> None:
    assert '"GET / HTTP/1.1" 200' in line.stdout + line.stderr, line.stdout + line.stderr


@check(r"^hvfs stop web")
def web_is_stopped(line: Line) -> None:
    listed = subprocess.run([BIN / "hvfs", "ps"], cwd=line.cwd, env=line.env, capture_output=True, text=True)
    web = [row for row in listed.stdout.splitlines() if row.split()[:1] == ["web"]]
    assert web and "running" not in web[0], listed.stdout


@check(r"^hvfs backup prune")
def prune_says_what_it_forgot(line: Line) -> None:
    assert line.stdout.startswith("forgot "), line.stdout


@check(r"^hvfs down")
def leaves_nothing_behind(line: Line) -> None:
    listed = subprocess.run([BIN / "hvfs", "ps"], cwd=line.cwd, env=line.env, capture_output=True, text=True)
    assert listed.returncode == 0 and listed.stdout.splitlines()[1:] == [], listed.stdout + listed.stderr
    status = subprocess.run([BIN / "hvfs", "manager", "status", "--json"], env=line.env, capture_output=True, text=True)
    assert "shop" not in status.stdout, status.stdout  # the project's group is gone


@check(r"^hvfs events audit\.jsonl --op unlink")
def the_audit_has_the_unlink(line: Line) -> None:
    assert "/data/tmp" in line.stdout and "unlink" in line.stdout, line.stdout


@check(r"^hvfs backup list")
def two_versions_of_app_db_under_one_name(line: Line) -> None:
    versions = [row.split() for row in line.stdout.splitlines() if row.endswith("/data/app.db")]
    assert len(versions) >= 2 and {row[1] for row in versions} == {"app"}, line.stdout


@check(r"--to \./old")
def restored_the_first_version(line: Line) -> None:
    with sqlite3.connect(line.cwd / "old" / "app.db") as db:
        assert db.execute("select count(*) from t").fetchone() == (0,)  # made, not yet inserted into


@check(r"--to - \| hvfs run -i")
def restored_the_newest_version_through_a_vm(line: Line) -> None:
    with sqlite3.connect(line.cwd / "data" / "app.db") as db:
        assert db.execute("select count(*) from t").fetchone() == (1,)


@check(r"--scan --yara rules\.yar")
def the_dropper_was_refused_and_taken_away(line: Line) -> None:
    assert line.stdout == "refused\n" and "Permission denied" in line.stderr and not (line.cwd / "data" / "x").exists()


@check(r"^hvfs quarantine restore")
def the_dropper_came_back(line: Line) -> None:
    assert (line.cwd / "restored").read_text() == "hvfs-demo-dropper\n"


@check(r"--fault 'op=open,path=/data/\*\.log")
def the_third_open_failed(line: Line) -> None:
    assert line.stdout == "open 3 failed\n" and "Input/output error" in line.stderr
    assert (line.cwd / "data" / "app.log").read_text() == "1\n2\n"


@check(r"^hvfs manager status")
def a_manager_runs(line: Line) -> None:
    assert line.stdout.strip(), "hvfs manager status said nothing"


@check(r"hvfs\.intercept\.syscalls > docs/compatibility\.md")
def the_compatibility_table_is_up_to_date(line: Line) -> None:
    assert (line.cwd / "docs" / "compatibility.md").read_text() == (REPO / "docs" / "compatibility.md").read_text()


@check(r"^hvfs docker install")
def dockerd_has_the_runtime(line: Line) -> None:
    deadline = time.monotonic() + 10
    while '"hvfs"' not in _runtimes(line):
        assert time.monotonic() < deadline, "dockerd did not load the runtime hvfs"
        time.sleep(0.2)


def _runtimes(line: Line) -> str:
    done = subprocess.run(
        ["docker", "info", "--format", "{{json .Runtimes}}"], env=line.env, capture_output=True, text=True
    )
    return done.stdout


@check(r"^docker run --rm --runtime=hvfs -v data:/data busybox")
def wrote_into_the_volume(line: Line) -> None:
    done = subprocess.run(["docker", "run", "--rm", "-v", "data:/data", "busybox", "cat", "/data/f"], env=line.env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.stdout == "hi\n", done.stderr


@check(r"^hvfs docker uninstall")
def dockerd_lost_the_runtime(line: Line) -> None:
    assert "hvfs" not in install.read_config(str(DAEMON_JSON)).get("runtimes", {})


@check(r"^scripts/demo")
def the_demo_ran_a_vm(line: Line) -> None:
    assert "first commit, inside a VM" in line.stdout and "/etc/demo-scratch: not on the host" in line.stdout


def test_every_check_is_of_a_readme_line() -> None:
    """A check whose line left the README checks nothing: it goes too, or the line comes back."""
    lines = [command for block in BLOCKS for command in block.commands()]
    unused = [pattern for pattern in CHECKS if not any(re.search(pattern, line) for line in lines)]
    assert not unused, f"checks of no README line: {unused}"
