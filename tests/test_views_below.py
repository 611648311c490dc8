"""A warm manager and the host's mounts below a volume (hvfs/hypervisor/views.py).

A manager keeps the mounts its namespace was copied with; the host's `/` is private here,
so what is mounted or unmounted on the host later does not reach it. A VM must see what
the host shows at a volume when it starts (as `docker run -v`: a recursive bind of what is
there now): a client that sees other mounts below a path it binds than its manager does
makes it give way. Real tmpfs mounts on the host, made by root; each runner has a manager
of its own, whose pid says whether it was kept. Through the native front and the Python
client, as root and as the unprivileged user the tests create. That user's mounts are
root's here: the user may mount only in a user namespace of its own, where hvfs does not
run (its state directory's way, from `/`, would belong to nobody: uid 65534), and not
FUSE (/dev/fuse is root's).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FRONT, REPO, Hvfs, chown_to, require, staged_front, state_dir

_FRESH = itertools.count()


def _with_state(runner: Hvfs, state: Path) -> Hvfs:
    """``runner`` with the manager of the state directory ``state``."""
    if runner.command[-1] == "hvfs" or runner.command[-1] == FRONT:
        return runner.with_env(HVFS_STATE_DIR=str(state))
    *before, front = runner.command  # staged_front's: runuser … env -i VARS FRONT, the last VAR wins
    return dataclasses.replace(runner, command=[*before, f"HVFS_STATE_DIR={state}", front])


def _pid(state: Path) -> int:
    return int(json.loads((state / "manager.json").read_text())["pid"])


def _mount(point: Path, owner: str | None) -> None:
    point.mkdir(exist_ok=True)
    if owner:
        chown_to(point, owner)
    ids = f",uid={os.stat(point).st_uid},gid={os.stat(point).st_gid}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=4m,mode=0755{ids}", "hvfs-test", str(point)], check=True)


def _umount(point: Path) -> None:
    subprocess.run(["umount", str(point)], check=True)


class Volume:
    """A volume at ``root``/volume, seen by ``runner`` (and, when given, ``other``: a
    client of another kind) at /data, each run through the same manager if it may."""

    def __init__(self, runner: Hvfs, root: Path, other: Hvfs | None = None) -> None:
        self.root = root
        self.dir = root / "volume"
        (self.dir / "sub").mkdir(parents=True)
        (self.dir / "sub" / "under").write_text("")
        for path in (root, self.dir, self.dir / "sub"):
            os.chmod(path, 0o755)
        self.owner = runner.user
        if runner.user:
            chown_to(root, runner.user)
        self.state = Path(state_dir(runner.user, f"below-{next(_FRESH)}"))
        self.runner = _with_state(runner, self.state)
        self.other = _with_state(other, self.state) if other else None
        self.mounted: list[Path] = []

    def ls(self, path: str, *, other: bool = False, cwd: str | None = None) -> tuple[list[str], int]:
        """What a VM lists at /data/``path``, and the pid of the manager that served it."""
        runner = self.other if other and self.other else self.runner
        volume = "." if cwd else str(self.dir)
        out = runner.ok("run", "-v", f"{volume}:/data", "--", "ls", "-A", f"/data/{path}", cwd=cwd)
        return out.splitlines(), _pid(self.state)

    def mount(self, relative: str) -> Path:
        point = self.dir / relative
        _mount(point, self.owner)
        self.mounted.append(point)
        return point

    def umount(self, point: Path) -> None:
        _umount(point)
        self.mounted.remove(point)

    def close(self) -> None:
        for point in reversed(self.mounted):
            subprocess.run(["umount", "-l", str(point)], check=False)


def _mounts_below_are_seen(volume: Volume) -> None:
    try:
        names, first = volume.ls("sub")
        assert names == ["under"]
        assert volume.ls("sub") == (["under"], first)  # nothing changed: the same manager

        sub = volume.mount("sub")  # a mount made after the manager started
        (sub / "on-tmpfs").write_text("")
        names, second = volume.ls("sub")
        assert names == ["on-tmpfs"] and second != first
        assert volume.ls("sub") == (["on-tmpfs"], second)

        inner = volume.mount("sub/inner")  # a mount below a mount
        (inner / "inside").write_text("")
        names, third = volume.ls("sub/inner")
        assert names == ["inside"] and third != second

        volume.umount(inner)  # an unmount
        names, fourth = volume.ls("sub/inner")
        assert names == [] and fourth != third
        volume.umount(sub)
        names, fifth = volume.ls("sub")
        assert names == ["under"] and fifth != fourth
        assert volume.ls("sub") == (["under"], fifth)
    finally:
        volume.close()


def _kept_when_nothing_below_changed(volume: Volume, elsewhere: Path) -> None:
    """A mount outside the volume, or beside it, is not the volume's: the manager stays."""
    try:
        names, first = volume.ls("sub")
        assert names == ["under"]
        _mount(elsewhere, volume.owner)
        try:
            assert volume.ls("sub") == (["under"], first)
        finally:
            _umount(elsewhere)
        assert volume.ls("sub") == (["under"], first)
    finally:
        volume.close()


def _same_for_both_clients(volume: Volume) -> None:
    """The front and the Python client list the mounts below as the manager does, names
    the table escapes included: either kind of client keeps the other's manager."""
    try:
        volume.mount("a b\\c\td")
        names, first = volume.ls("")
        assert names == ["a b\\c\td", "sub"]
        assert volume.ls("", other=True) == (names, first)
        assert volume.ls("") == (names, first)
        assert volume.ls("", cwd=str(volume.dir)) == (names, first)  # the volume is the working directory
        volume.mount("sub")
        assert volume.ls("sub", other=True)[1] != first  # the Python client sees it too
    finally:
        volume.close()


def test_a_warm_manager_sees_mounts_below_a_volume(hvfs: Hvfs, tmp_path: Path) -> None:
    require(os.geteuid() == 0, "mounting a tmpfs below the volume needs root")
    _mounts_below_are_seen(Volume(hvfs, tmp_path))


def test_a_warm_manager_sees_mounts_below_a_volume_through_the_front(front: str, tmp_path: Path) -> None:
    require(os.geteuid() == 0, "mounting a tmpfs below the volume needs root")
    _mounts_below_are_seen(Volume(Hvfs([front]), tmp_path))


def test_a_warm_manager_sees_mounts_below_the_working_directory_through_the_front(front: str, tmp_path: Path) -> None:
    """`-v .:/data`: the front's working directory, which it says ahead, bound."""
    require(os.geteuid() == 0, "mounting a tmpfs below the volume needs root")
    volume = Volume(Hvfs([front]), tmp_path)
    try:
        names, first = volume.ls("sub", cwd=str(volume.dir))
        assert names == ["under"]
        (volume.mount("sub") / "on-tmpfs").write_text("")
        names, second = volume.ls("sub", cwd=str(volume.dir))
        assert names == ["on-tmpfs"] and second != first
    finally:
        volume.close()


def test_a_mount_elsewhere_keeps_the_manager(hvfs: Hvfs, tmp_path: Path) -> None:
    require(os.geteuid() == 0, "mounting a tmpfs needs root")
    _kept_when_nothing_below_changed(Volume(hvfs, tmp_path), tmp_path / "beside")


def test_a_mount_elsewhere_keeps_the_manager_through_the_front(front: str, tmp_path: Path) -> None:
    require(os.geteuid() == 0, "mounting a tmpfs needs root")
    _kept_when_nothing_below_changed(Volume(Hvfs([front]), tmp_path), tmp_path / "beside")


def test_the_front_and_the_python_client_see_the_same_mounts_below(front: str, tmp_path: Path) -> None:
    require(os.geteuid() == 0, "mounting a tmpfs below the volume needs root")
    _same_for_both_clients(Volume(Hvfs([front]), tmp_path, Hvfs([sys.executable, "-m", "hvfs"])))


@pytest.mark.rootless
def test_a_rootless_warm_manager_sees_mounts_below_a_volume(rootless: Hvfs, shared_tmp: Path) -> None:
    require(os.geteuid() == 0, "mounting a tmpfs below the volume needs root")
    _mounts_below_are_seen(Volume(rootless, shared_tmp))


@pytest.mark.rootless
def test_a_rootless_warm_manager_sees_mounts_below_a_volume_through_the_front(
    rootless: Hvfs, staged: Path, shared_tmp: Path
) -> None:
    require(os.geteuid() == 0, "mounting a tmpfs below the volume needs root")
    front = staged_front(rootless, staged, shared_tmp / "trace")
    _same_for_both_clients(Volume(front, shared_tmp, rootless))


@pytest.mark.rootless
def test_a_mount_elsewhere_keeps_a_rootless_manager(rootless: Hvfs, shared_tmp: Path) -> None:
    require(os.geteuid() == 0, "mounting a tmpfs needs root")
    _kept_when_nothing_below_changed(Volume(rootless, shared_tmp), shared_tmp / "beside")


# In a private mount namespace of its own (real mounts): what a manager mounts in its own
# directories (a FUSE client's, its state directory) is in no client's table: it is left
# out of its own list and of the client's alike. The table is kept between calls, and
# read again once the kernel says it changed (hvfs._sys.mountinfo._Table).
OWN = """
import json, os, subprocess, sys
from hvfs._sys import mountinfo as m

top = sys.argv[1]
empty = m.mounts_below(top)  # the table read, and kept until the kernel says it changed
for name in ("state/x", "sub"):
    os.makedirs(os.path.join(top, name))
    subprocess.run(["mount", "-t", "tmpfs", "none", os.path.join(top, name)], check=True)
before = m.mounts_below(top)
m.own_directory(os.path.join(top, "state"))
after = m.mounts_below(top)
subprocess.run(["umount", os.path.join(top, "sub")], check=True)
gone = m.mounts_below(top)
print(json.dumps({"empty": empty.mounts, "gone": gone.mounts, "before": before.mounts, "after": after.mounts,
                  "own": after.own, "theirs": after.theirs(before.mounts)}))
"""


def test_a_managers_own_mounts_are_no_clients(tmp_path: Path) -> None:
    require(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare(1)")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", OWN, str(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["empty"] == [] and report["gone"] == []  # a mount, and an unmount, seen by the kept table
    assert sorted(e.split(" ")[0] for e in report["before"]) == ["state/x", "sub"]
    assert [e.split(" ")[0] for e in report["after"]] == ["sub"]
    assert report["own"] == ["state"]
    assert report["theirs"] == report["after"]


def test_the_front_serves_runs_with_volumes_itself(front: str, tmp_path: Path) -> None:
    """The front lists the mounts below each volume itself (none below a file): a warm
    run with volumes is never the Python client's for want of it."""
    require(os.geteuid() == 0, "mounting a tmpfs below the volume needs root")
    from tests.test_front import said, traced

    volume = Volume(Hvfs([front]), tmp_path)
    (tmp_path / "file").write_text("a file\n")
    trace = tmp_path / "trace"
    try:
        volume.mount("sub")
        for cwd in ("/", str(volume.dir)):
            args = ["-v", f"{volume.dir}:/data", "-v", f"{tmp_path / 'file'}:/file:ro", "-v", ".:/here"]
            env = traced(trace, HVFS_STATE_DIR=str(volume.state))
            done = subprocess.run([front, "run", *args, "--", "cat", "/file"], cwd=cwd, env=env, capture_output=True,
                                  text=True, timeout=120)  # fmt: skip
            assert done.returncode == 0 and done.stdout == "a file\n", done.stderr
        assert [line for line in said(trace) if line != "cold, started"] == ["native", "native"]
    finally:
        volume.close()


def _spare_ready(runner: Hvfs) -> bool:
    status = json.loads(runner.ok("manager", "status", "--json"))
    return bool(((status.get("manager") or status).get("spares") or {}).get("ready"))


def _propagated_below_a_warm_manager(volume: Volume) -> None:
    """The volume is a shared mount (as `/` is where systemd runs): the host's mounts below
    it propagate to the manager's copy, a slave, so that the manager sees what the client
    does; a spare made before the mount must not serve the next run."""
    subprocess.run(["mount", "--bind", str(volume.dir), str(volume.dir)], check=True)
    volume.mounted.append(volume.dir)
    subprocess.run(["mount", "--make-shared", str(volume.dir)], check=True)
    try:
        names, first = volume.ls("sub")
        assert names == ["under"]
        deadline = time.monotonic() + 60
        while not _spare_ready(volume.runner) and time.monotonic() < deadline:
            time.sleep(0.1)  # a spare of this run's configuration, made ahead with the volume as it is
        require(_spare_ready(volume.runner), "no spare was made (HVFS_SPARE=0?)")
        (volume.mount("sub") / "on-tmpfs").write_text("")
        assert volume.ls("sub") == (["on-tmpfs"], first)  # the same manager: the mount reached it
    finally:
        volume.close()


def test_a_mount_propagated_to_a_warm_manager_is_seen_by_the_next_run(hvfs: Hvfs, tmp_path: Path) -> None:
    require(os.geteuid() == 0, "a shared bind mount needs root")
    _propagated_below_a_warm_manager(Volume(hvfs, tmp_path))


@pytest.mark.rootless
def test_a_mount_propagated_to_a_rootless_warm_manager_is_seen_by_the_next_run(
    rootless: Hvfs, shared_tmp: Path
) -> None:
    require(os.geteuid() == 0, "a shared bind mount needs root")
    _propagated_below_a_warm_manager(Volume(rootless, shared_tmp))


PROJECT = """
[sources.h]
type = "host"
path = "./volume"
[vms.web]
command = "ls /data/sub"
mounts = [{ source = "h", target = "/data" }]
"""


def test_a_projects_host_source_sees_mounts_below_it(hvfs: Hvfs, tmp_path: Path) -> None:
    """`hvfs up`: a project's named host source is bound as a volume is, compared alike."""
    require(os.geteuid() == 0, "mounting a tmpfs below the source needs root")
    volume = Volume(hvfs, tmp_path)
    (tmp_path / "hvfs.toml").write_text(PROJECT)

    def up() -> tuple[list[str], int]:
        out = volume.runner.ok("up", cwd=str(tmp_path))
        listed = [line for line in out.splitlines() if line.startswith("web | ") and "exited" not in line]
        return listed, _pid(volume.state)

    try:
        listed, first = up()
        assert listed == ["web | under"]
        (volume.mount("sub") / "on-tmpfs").write_text("")
        listed, second = up()
        assert listed == ["web | on-tmpfs"] and second != first
        assert up() == (["web | on-tmpfs"], second)
    finally:
        volume.close()
