"""Other roots than the host's: a root directory and a rootfs tarball."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, Hvfs, require
from tests.helpers import snapshot


@pytest.fixture(scope="module")
def busybox_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    require(shutil.which("busybox") is not None, "busybox-static is needed to build a test image")
    where = tmp_path_factory.mktemp("image")
    root, tarball = where / "rootfs", where / "rootfs.tar"
    subprocess.run([str(REPO / "images" / "busybox-rootfs"), str(root), str(tarball)], check=True)
    return root, tarball


SCRIPT = "echo written > /hello && cat /hello && mkdir -p /var/lib/x && ls / && busybox | head -n 1"


def test_a_root_directory_is_copy_on_write(hvfs: Hvfs, busybox_root: tuple[Path, Path]) -> None:
    root, _ = busybox_root
    before = snapshot(root)
    out = hvfs.ok("run", "--image", str(root), "--", "sh", "-c", SCRIPT).splitlines()
    assert out[0] == "written"
    assert "hello" in out and "proc" in out
    assert out[-1].startswith("BusyBox")
    assert snapshot(root) == before  # the image itself is untouched
    assert hvfs.run("run", "--image", str(root), "--", "python3", "-c", "1").returncode == 127


def test_a_rootfs_tarball_is_unpacked_once(hvfs: Hvfs, busybox_root: tuple[Path, Path], tmp_path: Path) -> None:
    _, tarball = busybox_root
    cache = tmp_path / "cache"
    env = {"PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(cache), "HOME": str(tmp_path)}
    env["HVFS_STATE_DIR"] = os.environ["HVFS_STATE_DIR"]  # this session's manager, never the machine's
    out = hvfs.ok("run", "--image", str(tarball), "--", "sh", "-c", SCRIPT, env=env).splitlines()
    assert out[0] == "written"
    unpacked = [p for p in (cache / "hvfs" / "images").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(unpacked) == 1
    marker = unpacked[0] / "rootfs" / "etc" / "hostname"
    first_unpack = marker.stat().st_mtime_ns
    second = hvfs.run("run", "--image", str(tarball), "--", "cat", "/etc/hostname", "/hello", env=env)
    assert second.stdout == "busybox\n"
    assert "/hello" in second.stderr  # the first run's changes were discarded
    assert marker.stat().st_mtime_ns == first_unpack
    assert [p for p in (cache / "hvfs" / "images").iterdir() if p.is_dir() and not p.name.startswith(".")] == unpacked


def test_a_volume_in_a_foreign_image(hvfs: Hvfs, busybox_root: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = busybox_root
    hvfs.ok(
        "run", "--image", str(root), "-v", f"{tmp_path}:/mnt/data", "--", "sh", "-c", "echo from-busybox > /mnt/data/f"
    )
    assert (tmp_path / "f").read_text() == "from-busybox\n"
