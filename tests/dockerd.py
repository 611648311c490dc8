"""A real Docker engine for the tests: the one running, or one started here (and stopped
after the session), with images built locally (no registry is reachable).

Use the fixtures ``docker_engine`` (the engine answers; returns the ``docker`` command)
and ``busybox_image`` (the name of an image ``FROM scratch`` with Debian's static
busybox). Tests that need them skip with the reason, or fail in CI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require

SOCKET = "/var/run/docker.sock"
START_TIMEOUT = 60.0
BUSYBOX_IMAGE = "hvfs-test/busybox:latest"


def docker_command() -> list[str]:
    """The docker CLI, talking to the engine of SOCKET."""
    found = shutil.which("docker")
    require(found is not None, "the docker CLI is not installed (scripts/setup --test installs docker.io)")
    assert found is not None
    return [found, "--host", f"unix://{SOCKET}"]


def answers(docker: list[str]) -> bool:
    with contextlib.suppress(subprocess.TimeoutExpired, OSError):
        return subprocess.run([*docker, "version"], capture_output=True, timeout=20).returncode == 0
    return False


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """The docker command of an engine that answers: the running one, or a dockerd
    started here (as root) and stopped at the end of the session."""
    docker = docker_command()
    if answers(docker):
        yield docker
        return
    dockerd = shutil.which("dockerd")
    require(dockerd is not None, "no Docker engine runs and dockerd is not installed (scripts/setup --test)")
    require(os.geteuid() == 0, "starting dockerd needs root")
    assert dockerd is not None
    log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with log.open("wb") as out:
        process = subprocess.Popen([dockerd, "--host", f"unix://{SOCKET}"], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(docker):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                pytest.fail(f"dockerd did not start (exit {process.poll()}):\n{tail}")
            time.sleep(0.5)
        yield docker
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def busybox_image(docker_engine: list[str]) -> str:
    """An image of Debian's static busybox, FROM scratch, built here."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    require(Path(busybox).exists(), "busybox-static is not installed (scripts/setup installs it)")
    with tempfile.TemporaryDirectory() as context:
        shutil.copy(busybox, Path(context) / "busybox")
        (Path(context) / "Dockerfile").write_text(
            'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
            'CMD ["/bin/sh"]\n'
        )
        built = subprocess.run(
            [*docker_engine, "build", "-q", "-t", BUSYBOX_IMAGE, context], capture_output=True, text=True, timeout=300
        )
    assert built.returncode == 0, built.stderr
    return BUSYBOX_IMAGE
