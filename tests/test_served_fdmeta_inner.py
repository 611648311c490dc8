"""A metadata change through an fd on a file system mounted below a volume (a tmpfs inside
the host directory a VM binds: the bind is recursive) is served in C as on the volume's own
(hvfs/manager/sources/host.py inner_mounts, world.py own_mounts) and leaves what the Python
path leaves: tar extracts the same tree, owners, modes and times, as root and rootless."""

from __future__ import annotations

import itertools
import json
import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hvfs._sys.mountinfo import points_below
from tests.conftest import Hvfs, chown_to, require, state_dir
from tests.test_served_fdmeta import C_SERVED_AT_LEAST, _served_here
from tests.test_served_mutate import _tarball
from tests.test_served_write import _in_python

_FRESH = itertools.count()


def _extracted_below(runner: Hvfs, root: Path, owner: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tree a VM's tar extracts on a tmpfs mounted at volume/inner, and the statistics.

    Through a manager started after the mount, of its own: the Python and C paths each
    have theirs (one started before would give way to a new one, as a client sees other
    mounts below the volume than it does: tests/test_views_below.py)."""
    inner = root / "volume" / "inner"
    inner.mkdir(parents=True)
    for path in (root, root / "volume"):
        os.chmod(path, 0o755)
        if owner:
            chown_to(path, owner)
    ids = f",uid={pwd.getpwnam(owner).pw_uid},gid={pwd.getpwnam(owner).pw_gid}" if owner else ""
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=64m,mode=0755{ids}", "hvfs-test", str(inner)], check=True)
    try:
        _tarball(root / "w3.tar", 300)
        stats = root / "stats.json"
        volumes = ["-v", f"{root / 'volume'}:/data", "-v", f"{root / 'w3.tar'}:/w3.tar:ro"]
        command = ["sh", "-c", "cd /data/inner && tar -xf /w3.tar"]
        fresh = runner.with_env(HVFS_STATE_DIR=state_dir(runner.user, f"below-{next(_FRESH)}"))
        result = fresh.run("run", "--strict", "--stats", str(stats), *volumes, "--", *command)
        assert result.returncode == 0, result.stderr
        tree = {}
        for p in sorted(inner.rglob("*")):
            st = p.lstat()
            times = None if p.is_dir() else st.st_mtime_ns  # a directory's: its last entry's creation
            tree[str(p.relative_to(inner))] = [st.st_mode, st.st_uid, times, p.is_file() and p.read_text()]
        return tree, json.loads(stats.read_text())
    finally:
        subprocess.run(["umount", "-l", str(inner)], check=False)


def _same_as_python(runner: Hvfs, root: Path, owner: str | None) -> None:
    (root / "c").mkdir()
    (root / "python").mkdir()
    in_c, c_stats = _extracted_below(runner, root / "c", owner)
    in_python, python_stats = _extracted_below(_in_python(runner), root / "python", owner)
    assert in_c == in_python and len(in_c) == 311
    for kind, least in C_SERVED_AT_LEAST.items():
        assert _served_here(c_stats, kind) >= least, (kind, c_stats)
        assert _served_here(python_stats, kind) == 0, (kind, python_stats)


def test_tar_on_a_mount_below_a_volume_is_served_in_c_as_python_serves_it(hvfs: Hvfs, tmp_path: Path) -> None:
    require(os.geteuid() == 0, "mounting a tmpfs below the volume needs root")
    _same_as_python(hvfs, tmp_path, None)


@pytest.mark.rootless
def test_a_rootless_vms_tar_on_a_mount_below_a_volume_is_served_in_c(rootless: Hvfs, shared_tmp: Path) -> None:
    require(os.geteuid() == 0, "mounting a tmpfs below the volume needs root")
    assert rootless.user is not None
    _same_as_python(rootless, shared_tmp, rootless.user)


def test_the_mounts_below_a_directory_are_named_as_the_table_escapes_them(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "mounting a tmpfs needs root")
    odd = tmp_path / "a b\\c" / "tab\there"
    odd.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "hvfs-test", str(odd)], check=True)
    try:
        assert points_below(str(tmp_path)) == ("a b\\c/tab\there",)
        assert points_below(str(odd)) == ()
        assert points_below(str(tmp_path / "a b\\c" / ".." / "a b\\c")) == ("tab\there",)
    finally:
        subprocess.run(["umount", "-l", str(odd)], check=False)
