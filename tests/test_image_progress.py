"""Progress of a first unpack: silent when quick, one line redrawn on a terminal, a line
every few seconds at most otherwise; and a real unpack that says nothing when quick."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hvfs.images.progress import AFTER_VARIABLE, EVERY, Progress
from tests.conftest import REPO, Hvfs, require


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _default_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AFTER_VARIABLE, raising=False)


def test_quick_work_says_nothing() -> None:
    for tty in (False, True):
        stream, clock = Stream(tty), Clock()
        progress = Progress("unpacking x", 1000, stream, layers=2, clock=clock)
        progress.layer(1)
        progress(500)
        clock.now += 0.9
        progress.layer(2)
        progress(500)
        progress.finish(", 2 layers")
        assert stream.getvalue() == ""


def test_off_a_terminal_a_line_every_few_seconds_at_most() -> None:
    stream, clock = Stream(False), Clock()
    progress = Progress("unpacking big.tar", 600_000_000, stream, layers=3, clock=clock)
    for second in range(1, 21):  # 20 s: 30 MB a second, many calls a second
        for _ in range(10):
            clock.now += 0.1
            progress(3_000_000)
        if second == 5:
            progress.layer(2)
    progress.finish(", 3 layers")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "hvfs: unpacking big.tar: 33.0 MB of 600.0 MB"  # first shown past 1 s
    assert len(lines) - 1 <= 20 / EVERY + 1
    assert "layer 2/3" in lines[-2]
    assert lines[-1] == "hvfs: unpacking big.tar: 600.0 MB in 20.0 s, 3 layers"


def test_on_a_terminal_one_line_redrawn() -> None:
    stream, clock = Stream(True), Clock()
    progress = Progress("unpacking big.tar", 100_000_000, stream, layers=2, clock=clock)
    progress.layer(1)
    for _ in range(30):
        clock.now += 0.1
        progress(3_000_000)
    progress.layer(2)
    clock.now += 0.5
    progress(10_000_000)
    progress.finish()
    out = stream.getvalue()
    assert out.count("\n") == 1 and out.endswith("\n")  # one line, redrawn with \r
    frames = out.split("\r")[1:]
    assert frames[0].startswith("hvfs: unpacking big.tar [") and "of 100.0 MB, layer 1/2" in frames[0]
    assert "layer 2/2" in frames[-2] and "100.0 MB of 100.0 MB" in frames[-2]
    assert frames[-1] == "hvfs: unpacking big.tar: 100.0 MB in 3.5 s\x1b[K\n"


def test_a_quick_first_unpack_is_silent_and_a_slow_one_is_not(hvfs: Hvfs, tmp_path: Path) -> None:
    require(shutil.which("busybox") is not None, "busybox-static is needed to build a test image")
    root, tarball = tmp_path / "rootfs", tmp_path / "rootfs.tar"
    subprocess.run([str(REPO / "images" / "busybox-rootfs"), str(root), str(tarball)], check=True)
    subprocess.run(["gzip", str(tarball)], check=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HVFS_STATE_DIR": os.environ["HVFS_STATE_DIR"]}
    quick = hvfs.run(
        "run", "--image", f"{tarball}.gz", "--", "true", env={**env, "XDG_CACHE_HOME": str(tmp_path / "a")}
    )
    assert (quick.returncode, quick.stderr) == (0, "")
    # Progress shown at once stands for a slow unpack (600 MB is not made in a test).
    shown = hvfs.run(
        "run", "--image", f"{tarball}.gz", "--", "true",
        env={**env, "XDG_CACHE_HOME": str(tmp_path / "b"), AFTER_VARIABLE: "0"},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    lines = shown.stderr.splitlines()
    assert lines[0].startswith(f"hvfs: reading {tarball}.gz: ") and " MB of " in lines[0]
    assert any(line.startswith(f"hvfs: unpacking {tarball}.gz: ") and " MB of " in line for line in lines)
    assert lines[-1].startswith(f"hvfs: unpacking {tarball}.gz: ") and lines[-1].endswith(" s, 1 layer")
