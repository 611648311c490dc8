"""hvfs.hypervisor.vmdirs: a VM's state directory, emptied as the VM is forgotten, is kept
and renamed to a later VM's (a rename instead of two mkdirs and two rmdirs per run), and
only when nothing of the VM is left in it. Real directories and mounts; one real manager."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvfs.hypervisor import client, vmdirs
from hvfs.hypervisor.layout import Layout, write_json
from tests.conftest import Hvfs, require


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    found = Layout(str(tmp_path / "state"))
    os.makedirs(found.vms, mode=0o700)
    os.makedirs(found.groups, mode=0o700)
    vmdirs.keep(found)
    yield found
    vmdirs.drop(found)


def _used(layout: Layout, vmid: str) -> None:
    """What a VM leaves in its directory: its shim's socket, vm.json, its exit file."""
    for name in ("shim.sock", "vm.json", "vm.json.tmp", "exit"):
        Path(layout.vm(vmid), name).write_text("x")


def test_a_forgotten_vms_directory_is_emptied_and_becomes_the_next_vms(layout: Layout) -> None:
    vmdirs.make(layout, "first")
    inode = os.stat(layout.vm("first")).st_ino
    _used(layout, "first")
    files = {name: os.stat(Path(layout.vm("first"), name)).st_ino for name in ("vm.json", "exit")}
    vmdirs.remove(layout, "first")
    assert not os.path.exists(layout.vm("first"))
    (kept,) = vmdirs.kept(layout)
    assert sorted(os.listdir(os.path.join(layout.vms, kept))) == [".exit", "staging", "vm.json.tmp"]
    vmdirs.make(layout, "second")
    assert os.stat(layout.vm("second")).st_ino == inode  # renamed, not made
    assert sorted(os.listdir(layout.vm("second"))) == [".exit", "staging", "vm.json.tmp"]
    assert os.listdir(layout.staging("second")) == []
    # vm.json and exit, emptied, are the next VM's files to write: no new inodes on its path
    for name, reused in (("vm.json", "vm.json.tmp"), ("exit", ".exit")):
        found = os.stat(Path(layout.vm("second"), reused))
        assert (found.st_ino, found.st_size) == (files[name], 0)
    assert vmdirs.kept(layout) == set()
    assert time.time() - os.stat(layout.vm("second")).st_mtime < 5  # new to the daemon's sweep


def test_a_directory_with_more_than_a_vms_files_is_removed(layout: Layout) -> None:
    vmdirs.make(layout, "odd")
    os.mkdir(Path(layout.vm("odd"), "unexpected"))
    vmdirs.remove(layout, "odd")
    assert not os.path.exists(layout.vm("odd")) and vmdirs.kept(layout) == set()
    vmdirs.make(layout, "full")
    Path(layout.staging("full"), "left").write_text("x")
    vmdirs.remove(layout, "full")
    assert os.listdir(layout.vms) == []


def test_a_staging_still_mounted_is_not_kept(layout: Layout) -> None:
    vmdirs.make(layout, "mounted")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "tmpfs", layout.staging("mounted")]).returncode == 0
    require(mounted, "mounting a tmpfs needs root (the tests run as root)")
    try:
        with pytest.raises(OSError):  # removed as before, which a mount point refuses
            vmdirs.remove(layout, "mounted")
        assert vmdirs.kept(layout) == set()
    finally:
        subprocess.run(["umount", "-l", layout.staging("mounted")], check=True)
    vmdirs.remove(layout, "mounted")


def test_a_directory_others_may_write_is_not_kept(layout: Layout) -> None:
    vmdirs.make(layout, "open")
    os.chmod(layout.vm("open"), 0o777)
    vmdirs.remove(layout, "open")
    assert os.listdir(layout.vms) == []


def test_at_most_kept_are_kept_and_drop_removes_them(layout: Layout) -> None:
    for n in range(vmdirs.KEPT + 2):
        vmdirs.make(layout, f"vm{n}")
    for n in range(vmdirs.KEPT + 2):
        vmdirs.remove(layout, f"vm{n}")
    assert len(vmdirs.kept(layout)) == vmdirs.KEPT == len(os.listdir(layout.vms))
    vmdirs.drop(layout)
    assert os.listdir(layout.vms) == []
    vmdirs.make(layout, "after")
    vmdirs.remove(layout, "after")  # none kept after drop, until keep
    assert os.listdir(layout.vms) == []


def test_a_groups_directory_is_kept_with_its_group_json_emptied(layout: Layout) -> None:
    vmdirs.make_group(layout, "run-1")
    write_json(layout.group_file("run-1"), {"argv": ["secret"]})
    vmdirs.remove_group(layout, "run-1")
    (kept,) = os.listdir(layout.groups)
    assert kept.startswith(vmdirs.FREE) and os.listdir(Path(layout.groups, kept)) == ["group.json.tmp"]
    assert Path(layout.groups, kept, "group.json.tmp").read_bytes() == b""  # nothing of run-1
    assert not client.left_vms(layout)  # a kept one is no group left behind
    inode = os.stat(Path(layout.groups, kept, "group.json.tmp")).st_ino
    vmdirs.make_group(layout, "run-2")
    write_json(layout.group_file("run-2"), {"argv": ["true"]})  # opens the kept file: no new one
    assert os.stat(layout.group_file("run-2")).st_ino == inode
    assert os.listdir(layout.group("run-2")) == ["group.json"]
    os.mkdir(Path(layout.group("run-2"), "logs"))  # a project's: removed, not kept
    vmdirs.remove_group(layout, "run-2")
    assert os.listdir(layout.groups) == []


def _spares_ready(runner: Hvfs) -> None:
    deadline = time.monotonic() + 10
    while json.loads(runner.ok("manager", "status", "--json"))["manager"]["spares"]["ready"] < 1:
        assert time.monotonic() < deadline, "no spare was made"
        time.sleep(0.05)


def test_a_vms_directory_becomes_the_next_spares_and_the_manager_leaves_none(hvfs: Hvfs) -> None:
    """VMs' directories, kept as they are removed, are where the next spare is made:
    marked (an xattr, which survives the renames), the spare's is one of them, holding the
    spare's own files only."""
    state = tempfile.mkdtemp(prefix="hvfs-vmdirs-")
    runner = hvfs.with_env(HVFS_STATE_DIR=state, HVFS_SPARE="1")
    vms = Path(state, "vms")
    try:
        runner.ok("run", "-d", "--name", "held", "--", "sleep", "30")
        _spares_ready(runner)  # made while held runs: from no kept directory
        runner.ok("rm", "-f", "held")
        deadline = time.monotonic() + 5
        while not (kept := [n for n in os.listdir(vms) if n.startswith(".free-")]) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert kept, os.listdir(vms)
        (spare,) = (n for n in os.listdir(vms) if not n.startswith(".free-"))
        for name in (kept[0], spare):  # held's, kept; and the spare's, which the next run takes and leaves
            os.setxattr(vms / name, "user.hvfs-test", b"x")
        assert runner.ok("run", "--", "sh", "-c", "echo fresh").strip() == "fresh"  # takes the spare
        _spares_ready(runner)  # the next one, in one of the two kept directories
        (made,) = (n for n in os.listdir(vms) if not n.startswith(".free-"))
        assert made != spare and "user.hvfs-test" in os.listxattr(vms / made), os.listdir(vms)
        found = sorted(os.listdir(vms / made))  # the spare's own, and held's emptied exit
        assert found in (["shim.sock", "staging", "vm.json.tmp"], [".exit", "shim.sock", "staging", "vm.json.tmp"])
        assert all(os.stat(vms / made / name).st_size == 0 for name in (".exit", "vm.json.tmp") if name in found)
        groups = Path(state, "groups")
        assert [n for n in os.listdir(groups) if not n.startswith(".free-")] == []  # the runs' groups: kept, emptied
        assert all(os.listdir(groups / n) in ([], ["group.json.tmp"]) for n in os.listdir(groups))
        runner.ok("manager", "stop")
        assert os.listdir(vms) == [] and os.listdir(groups) == []
    finally:
        runner.run("manager", "stop")
        shutil.rmtree(state, ignore_errors=True)


def test_a_vms_files_are_kept_only_as_plain_files_of_its_own(layout: Layout) -> None:
    """Only a regular file with one link, not writable by others, is kept (emptied); a
    link, a FIFO, a file linked elsewhere or one others may write is removed, never
    opened or truncated."""
    outside = Path(layout.vms).parent / "outside"
    outside.write_text("keep me")
    for case in ("symlink", "fifo", "hardlink", "writable"):
        vmdirs.make(layout, case)
        vm_json, exit_file = Path(layout.vm(case), "vm.json"), Path(layout.vm(case), "exit")
        if case == "symlink":
            vm_json.symlink_to(outside)
        elif case == "fifo":
            os.mkfifo(vm_json)
        elif case == "hardlink":
            os.link(outside, vm_json)
        else:
            vm_json.write_text("x")
            vm_json.chmod(0o666)
        exit_file.write_text("0\n")
        vmdirs.remove(layout, case)
        (kept,) = vmdirs.kept(layout)
        assert sorted(os.listdir(Path(layout.vms, kept))) == [".exit", "staging"], case
        assert Path(layout.vms, kept, ".exit").read_text() == "", case
        assert outside.read_text() == "keep me", case
        vmdirs.drop(layout)  # removed; the next case's directory is made afresh
        vmdirs.keep(layout)


def test_write_json_leaves_nothing_of_a_longer_file_a_crash_left(layout: Layout) -> None:
    """write_json opens its temporary file without O_TRUNC (ext4 flushes a file truncated
    to nothing as it is closed): what a crash left there, longer, is cut after the write."""
    vmdirs.make_group(layout, "run-1")
    Path(layout.group_file("run-1") + ".tmp").write_text("x" * 5000)
    write_json(layout.group_file("run-1"), {"argv": ["true"]})
    assert json.loads(Path(layout.group_file("run-1")).read_text()) == {"argv": ["true"]}
    assert os.listdir(layout.group("run-1")) == ["group.json"]
    write_json(layout.group_file("run-1"), {"argv": ["a", "longer", "command"]})  # over an existing one
    assert json.loads(Path(layout.group_file("run-1")).read_text()) == {"argv": ["a", "longer", "command"]}
