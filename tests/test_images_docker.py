"""Images from Docker for hvfs run: docker:NAME through the docker SDK, a docker save
tarball and an OCI layout each run busybox; the image's configuration is used as docker
run uses it; hvfs images ls | rm | prune manage the cache."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Hvfs, chown_to
from tests.dockerd import busybox_image, docker_engine  # noqa: F401
from tests.imagebuild import from_docker_save

CONFIGURED_IMAGE = "hvfs-test/configured:latest"


@pytest.fixture
def cache(tmp_path: Path) -> dict[str, str]:
    """The environment of an hvfs with a cache of its own (and the session's manager)."""
    return {"PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path),
            "HVFS_STATE_DIR": os.environ["HVFS_STATE_DIR"],
            "HVFS_PROGRESS_AFTER": "0"}  # progress at once: a small image takes less than its second  # fmt: skip


@pytest.fixture(scope="module")
def saved(busybox_image: str, docker_engine: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    path = tmp_path_factory.mktemp("saved") / "busybox.tar"
    subprocess.run([*docker_engine, "save", "-o", str(path), busybox_image], check=True, timeout=120)
    return path


@pytest.fixture(scope="module")
def configured_image(busybox_image: str, docker_engine: list[str]) -> str:  # noqa: F811
    """An image with an entrypoint, a command, an environment, a working directory and a user."""
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "Dockerfile").write_text(
            f"FROM {busybox_image}\nENV GREETING=hello PATH=/bin:/image/bin\nWORKDIR /srv/app\nUSER 1234:5678\n"
            'ENTRYPOINT ["/bin/sh", "-c", "echo \\"$GREETING $* from $(pwd) as $(id -u):$(id -g) PATH=$PATH\\"", '
            '"sh"]\n'
            'CMD ["default"]\n'
        )
        subprocess.run([*docker_engine, "build", "-q", "-t", CONFIGURED_IMAGE, context], check=True, timeout=300,
                       capture_output=True)  # fmt: skip
    return CONFIGURED_IMAGE


def _images(hvfs: Hvfs, env: dict[str, str]) -> list[dict[str, object]]:
    return list(json.loads(hvfs.ok("images", "ls", "--json", env=env)))


def test_docker_image_runs_and_is_unpacked_once(hvfs: Hvfs, busybox_image: str, cache: dict[str, str]) -> None:  # noqa: F811
    started = time.monotonic()
    cold = hvfs.run("run", "--image", f"docker:{busybox_image}", "--", "echo", "hello from busybox", env=cache)
    cold_seconds = time.monotonic() - started
    assert cold.returncode == 0, cold.stderr
    assert cold.stdout == "hello from busybox\n"
    assert "exporting docker:" in cold.stderr and "unpacking docker:" in cold.stderr  # plain lines: no terminal
    started = time.monotonic()
    warm = hvfs.run("run", "--image", f"docker:{busybox_image}", "--", "echo", "again", env=cache)
    warm_seconds = time.monotonic() - started
    assert (warm.returncode, warm.stdout, warm.stderr) == (0, "again\n", "")  # nothing exported or unpacked
    (image,) = _images(hvfs, cache)
    assert image["kind"] == "docker" and image["names"] == [f"docker:{busybox_image}"]
    assert str(image["id"]).startswith("sha256:") and image["in_use"] is False
    print(f"hvfs run --image docker:busybox echo: cold {cold_seconds:.2f} s, cached {warm_seconds:.2f} s")


@pytest.mark.parametrize("layout", ["docker-save", "oci-directory", "oci-tarball"])
def test_image_files_run(hvfs: Hvfs, saved: Path, tmp_path: Path, cache: dict[str, str], layout: str) -> None:
    image = saved
    if layout != "docker-save":
        image = tmp_path / ("oci.tar" if layout == "oci-tarball" else "oci")
        from_docker_save(saved, image, tarball=layout == "oci-tarball")
    out = hvfs.ok("run", "--image", str(image), "--", "echo", f"hello from {layout}", env=cache)
    assert out == f"hello from {layout}\n"
    (listed,) = _images(hvfs, cache)
    assert listed["names"] == [str(image)] and listed["kind"] == (
        "docker-archive" if layout == "docker-save" else "oci"
    )


def test_the_images_configuration_is_used_as_docker_does(
    hvfs: Hvfs,
    configured_image: str,
    docker_engine: list[str],  # noqa: F811
    cache: dict[str, str],
) -> None:
    image = f"docker:{configured_image}"
    expected = "hello {} from /srv/app as 1234:5678 PATH=/bin:/image/bin\n"
    assert hvfs.ok("run", "--image", image, env=cache) == expected.format("default")
    assert hvfs.ok("run", "--image", image, "--", "given", env=cache) == expected.format("given")
    by_docker = subprocess.run([*docker_engine, "run", "--rm", configured_image, "given"], capture_output=True,
                               text=True, timeout=120)  # fmt: skip
    assert by_docker.stdout == expected.format("given")  # what docker run itself prints
    out = hvfs.ok("run", "--image", image, "-e", "GREETING=hi", "-w", "/tmp", "-u", "0", "--", "x", env=cache)
    assert out == "hi x from /tmp as 0:0 PATH=/bin:/image/bin\n"
    assert hvfs.ok("run", "--image", image, "--entrypoint", "/bin/echo", "--", "plain", env=cache) == "plain\n"


def test_what_is_not_an_image_is_refused_in_one_line(
    hvfs: Hvfs,
    tmp_path: Path,
    cache: dict[str, str],
    docker_engine: list[str],  # noqa: F811
) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00not an image" * 100)
    for image, problem in [
        (str(junk), "is neither a directory nor a tar archive"),
        ("docker:hvfs-test/no-such-image:1", "no such image in the local Docker engine"),
        ("docker:bad name", "is not docker:NAME[:TAG]"),
    ]:
        result = hvfs.run("run", "--image", image, "--", "true", env=cache)
        assert result.returncode == 125, result.stderr
        assert result.stderr.count("\n") == 1 and problem in result.stderr, result.stderr
    assert not list((tmp_path / "cache").rglob("rootfs"))


@pytest.fixture
def running(hvfs: Hvfs, saved: Path, cache: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """A VM of the saved image that runs until its stdin closes."""
    vm = subprocess.Popen([*hvfs.command, "run", "--image", str(saved), "--", "cat"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cache)  # fmt: skip
    assert vm.stdin is not None
    vm.stdin.write("ready\n")
    vm.stdin.flush()
    assert vm.stdout is not None and vm.stdout.readline() == "ready\n"
    yield vm
    if not vm.stdin.closed:
        vm.stdin.close()
    vm.wait(timeout=60)
    vm.stdout.close()
    if vm.stderr is not None:
        vm.stderr.close()


def test_prune_frees_what_no_running_vm_uses(
    hvfs: Hvfs, busybox_image: str, saved: Path, cache: dict[str, str], running: subprocess.Popen[str],  # noqa: F811
    tmp_path: Path,
) -> None:  # fmt: skip
    hvfs.ok("run", "--image", str(saved), "--", "true", env=cache)  # the same image: the same entry
    rootfs = tmp_path / "rootfs.tar"
    (unpacked,) = _images(hvfs, cache)
    subprocess.run(["tar", "-cf", str(rootfs), "-C", str(unpacked["path"]), "."], check=True)  # a plain rootfs tarball
    hvfs.ok("run", "--image", str(rootfs), "--", "/bin/true", env=cache)
    listed = {str(i["kind"]): i for i in _images(hvfs, cache)}
    assert listed["docker-archive"]["in_use"] is True and listed["rootfs"]["in_use"] is False
    refused = hvfs.run("images", "rm", str(saved), env=cache)
    assert refused.returncode == 125 and "in use by a running VM" in refused.stderr
    pruned = hvfs.ok("images", "prune", env=cache)
    assert "freed" in pruned and "kept 1 in use" in pruned
    assert [i["kind"] for i in _images(hvfs, cache)] == ["docker-archive"]
    assert running.stdin is not None
    running.stdin.close()
    running.wait(timeout=60)
    pruned = hvfs.ok("images", "prune", env=cache)
    assert pruned.startswith("removed ") and "kept" not in pruned
    assert _images(hvfs, cache) == []
    images = tmp_path / "cache" / "hvfs" / "images"
    assert not [p for p in images.iterdir() if p.is_dir() and p.name != ".refs"]


def test_concurrent_runs_of_a_new_image_unpack_it_once(hvfs: Hvfs, saved: Path, cache: dict[str, str]) -> None:
    results: list[subprocess.CompletedProcess[str]] = []

    def one(i: int) -> None:
        results.append(hvfs.run("run", "--image", str(saved), "--", "echo", str(i), env=cache))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.stdout for r in results) == ["0\n", "1\n", "2\n", "3\n"], [r.stderr for r in results]
    assert sum("unpacking" in r.stderr for r in results) == 1  # one run unpacked it; the others waited
    assert len(_images(hvfs, cache)) == 1


@pytest.mark.rootless
@pytest.mark.parametrize("layout", ["docker-save", "oci-tarball"])
def test_rootless_image_files_run(rootless: Hvfs, saved: Path, shared_tmp: Path, layout: str) -> None:
    image = shared_tmp / "image.tar"
    if layout == "docker-save":
        image.write_bytes(saved.read_bytes())
    else:
        from_docker_save(saved, image, tarball=True)
    chown_to(shared_tmp, rootless.user or "")
    os.chmod(shared_tmp, 0o1777)
    out = rootless.ok("run", "--image", str(image), "--", "sh", "-c", "echo rootless; id -u")
    assert out.splitlines()[0] == "rootless"
    assert rootless.ok("images", "prune").splitlines()[-1].startswith("freed")
    assert json.loads(rootless.ok("images", "ls", "--json")) == []
