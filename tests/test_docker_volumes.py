"""A named volume shared by containers under runtime hvfs: one source of the manager for
all of them, so that locks, change notifications and read-only mounts hold across them."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.docker_runtime import Docker, docker, registered, tools_image  # noqa: F401
from tests.dockerd import busybox_image, docker_engine  # noqa: F401

LINES = 150


@pytest.fixture
def volume(docker: Docker) -> Iterator[str]:
    name = f"hvfs-test-{uuid.uuid4().hex[:8]}"
    docker.ok("volume", "create", name)
    yield name
    docker.call("volume", "rm", "-f", name)


def _started(docker: Docker, *args: str) -> str:
    name = f"hvfs-test-{uuid.uuid4().hex[:8]}"
    docker.ok("run", "-d", "--name", name, "--runtime=hvfs", *args)
    return name


def test_appends_under_flock_from_two_containers_each_land_once(docker: Docker, tools_image: str, volume: str) -> None:
    script = (
        "while [ ! -e /data/go ]; do sleep 0.05; done; i=0;"
        f' while [ $i -lt {LINES} ]; do flock /data/lock sh -c "echo $0-$i >> /data/log"; i=$((i+1)); done'
    )
    writers = [_started(docker, "-v", f"{volume}:/data", tools_image, "sh", "-c", script, tag) for tag in "AB"]
    try:
        assert docker.run("-v", f"{volume}:/data", tools_image, "touch", "/data/go").code == 0
        codes = [docker.ok("wait", name, timeout=120).strip() for name in writers]
        log = docker.run("-v", f"{volume}:/data", tools_image, "cat", "/data/log").out.splitlines()
    finally:
        for name in writers:
            docker.call("rm", "-f", name)
    assert codes == ["0", "0"]
    expected = sorted(f"{tag}-{i}" for tag in "AB" for i in range(LINES))
    assert sorted(log) == expected  # every line exactly once, none torn
    turns = sum(1 for before, after in itertools.pairwise(log) if before[0] != after[0])
    assert turns >= 2, "the two writers did not run side by side"


def test_inotifywait_in_one_container_sees_the_writes_of_another(docker: Docker, tools_image: str, volume: str) -> None:
    watcher = _started(docker, "-v", f"{volume}:/data", tools_image, "inotifywait", "-m", "-e", "create,modify",
                       "--format", "%e %f", "/data")  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while "Watches established" not in docker.call("logs", watcher).err:
            assert time.monotonic() < deadline, docker.call("logs", watcher)
            time.sleep(0.1)
        written = docker.run("-v", f"{volume}:/data", tools_image, "sh", "-c", "echo 1 > /data/one; echo 2 > /data/two")
        assert written.code == 0, written.err
        expected = ["CREATE one", "MODIFY one", "CREATE two", "MODIFY two"]
        deadline = time.monotonic() + 10
        while (seen := docker.call("logs", watcher).out.splitlines()) != expected:
            assert time.monotonic() < deadline, seen
            time.sleep(0.1)
    finally:
        docker.call("rm", "-f", watcher)


def test_a_read_only_mount_of_a_volume_refuses_writes(docker: Docker, volume: str) -> None:
    assert docker.run("-v", f"{volume}:/data", docker.image, "sh", "-c", "echo kept > /data/file").code == 0
    for runtime in ("runc", "hvfs"):
        script = "echo more >> /data/file; rm /data/file; mkdir /data/d; cat /data/file"
        refused = docker.run("-v", f"{volume}:/data:ro", docker.image, "sh", "-c", script, runtime=runtime)
        assert refused.code == 0 and refused.out == "kept\n", refused
        assert refused.err.count("Read-only file system") == 3, refused.err
