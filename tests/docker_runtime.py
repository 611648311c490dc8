"""Fixtures for the tests of the OCI runtime: hvfs registered with the real Docker engine
by its own command (``hvfs docker install``, then daemon.json restored), and helpers
that run the same container under runc and under hvfs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hvfs.oci import install
from tests.conftest import require
from tests.dockerd import busybox_image, docker_engine  # noqa: F401

DAEMON_JSON = Path("/etc/docker/daemon.json")
RUNTIME = "hvfs"
TOOLS_IMAGE = "hvfs-test/tools:latest"


@dataclass
class Docker:
    command: list[str]
    image: str
    audit: Path  # the audit log of the containers' group (hvfs events)

    def run(self, *args: str, runtime: str = RUNTIME, stdin: str | None = None, timeout: float = 60) -> Result:
        done = subprocess.run(
            [*self.command, "run", "--rm", f"--runtime={runtime}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def both(self, *args: str, stdin: str | None = None) -> tuple[Result, Result]:
        """The same ``docker run --rm`` under runc and under hvfs."""
        return self.run(*args, runtime="runc", stdin=stdin), self.run(*args, stdin=stdin)

    def ok(self, *args: str, timeout: float = 60) -> str:
        done = subprocess.run([*self.command, *args], capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
        return done.stdout

    def call(self, *args: str, timeout: float = 60) -> Result:
        done = subprocess.run(
            [*self.command, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        return Result(done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def _hup_dockerd() -> None:
    pid = install.dockerd_pid()
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
        time.sleep(0.5)


def _runtimes(docker: list[str]) -> str:
    return subprocess.run([*docker, "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def registered(docker_engine: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The runtime ``hvfs`` registered by ``hvfs docker install``, serving this session's
    manager, with an audit log for every container; daemon.json is restored after."""
    require(os.geteuid() == 0, "registering a Docker runtime needs root")
    existed = DAEMON_JSON.exists()
    before = install.read_config(str(DAEMON_JSON)).get("runtimes", {}).get(RUNTIME)
    services = tmp_path_factory.mktemp("docker-services")
    audit = services / "audit.jsonl"
    (services / "docker.toml").write_text(f'[services]\naudit = "{audit}"\n')
    installed = subprocess.run(
        [sys.executable, "-m", "hvfs", "docker", "install", "--name", RUNTIME,
         "--state-dir", os.environ["HVFS_STATE_DIR"], "--services", str(services / "docker.toml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    deadline = time.monotonic() + 10
    while RUNTIME not in _runtimes(docker_engine):
        assert time.monotonic() < deadline, "dockerd did not reload its runtimes"
        time.sleep(0.2)
    try:
        yield audit
    finally:  # only our entry: others may have registered runtimes meanwhile
        document = install.read_config(str(DAEMON_JSON))
        runtimes = document.setdefault("runtimes", {})
        if before is None:
            runtimes.pop(RUNTIME, None)
        else:
            runtimes[RUNTIME] = before
        if not runtimes:
            del document["runtimes"]
        if document or existed:
            install.write_config(str(DAEMON_JSON), document)
        else:
            DAEMON_JSON.unlink(missing_ok=True)
        _hup_dockerd()


@pytest.fixture(scope="session")
def docker(registered: Path, docker_engine: list[str], busybox_image: str) -> Docker:
    return Docker(docker_engine, busybox_image, registered)


@pytest.fixture(scope="session")
def tools_image(docker: Docker) -> str:
    """Busybox, with util-linux's flock and inotify-tools' inotifywait and their libraries."""
    programs = [shutil.which("flock"), shutil.which("inotifywait")]
    require(all(programs), "flock and inotifywait are needed (scripts/setup --test installs inotify-tools)")
    with tempfile.TemporaryDirectory() as context:
        places: dict[str, str] = {}  # where in the image -> the host file
        for program in programs:
            assert program is not None
            places[f"/bin/{Path(program).name}"] = os.path.realpath(program)
            ldd = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
            for word in ldd.split():
                if word.startswith("/"):
                    places[word] = os.path.realpath(word)  # by the name the loader looks for
        lines = [f"FROM {docker.image}"]
        for i, (place, host) in enumerate(sorted(places.items())):
            shutil.copy(host, Path(context) / f"f{i}")
            lines.append(f"COPY f{i} {place}")
        (Path(context) / "Dockerfile").write_text("\n".join(lines) + "\n")
        docker.ok("build", "-q", "-t", TOOLS_IMAGE, context, timeout=300)
    return TOOLS_IMAGE
