"""File operations in VMs, compared with the same operations run natively."""

from __future__ import annotations

import json
import os
import random
import subprocess
import tarfile
from pathlib import Path

from tests.conftest import Hvfs
from tests.helpers import PROBES, snapshot


def test_shell_script_on_a_volume_matches_native(hvfs: Hvfs, tmp_path: Path) -> None:
    native, served = tmp_path / "native", tmp_path / "served"
    native.mkdir()
    served.mkdir()
    script = str(PROBES / "ops.sh")
    subprocess.run(["sh", script], cwd=native, check=True, capture_output=True)
    out = hvfs.ok(
        "run", "-v", f"{served}:/data", "-v", f"{PROBES}:/probes:ro", "-w", "/data", "--", "sh", "/probes/ops.sh"
    )
    assert out.strip() == "done"
    assert snapshot(served) == snapshot(native)
    assert (served / "joined").stat().st_mtime_ns == (native / "joined").stat().st_mtime_ns  # touch -d
    # the script's effects are really there on the host
    assert (served / "d" / "moved").read_text() == "one\ntwo\n"
    assert (served / "hard").stat().st_nlink == 2
    assert os.readlink(served / "soft") == "joined"
    assert oct((served / "private").stat().st_mode & 0o777) == "0o600"


def _errnos(hvfs: Hvfs, directory: Path, *vm_args: str, in_vm: str | None = None) -> dict[str, str]:
    if in_vm is None:
        out = subprocess.run(
            ["python3", str(PROBES / "errnos.py"), str(directory)], check=True, capture_output=True, text=True
        )
        return json.loads(out.stdout)  # type: ignore[no-any-return]
    out = hvfs.ok("run", "-v", f"{PROBES}:/probes:ro", *vm_args, "--", "python3", "/probes/errnos.py", in_vm)
    return json.loads(out)  # type: ignore[no-any-return]


def test_errnos_equal_native_on_a_volume(hvfs: Hvfs, tmp_path: Path) -> None:
    native, served = tmp_path / "native", tmp_path / "served"
    native.mkdir()
    served.mkdir()
    expected = _errnos(hvfs, native)
    got = _errnos(hvfs, served, "-v", f"{served}:/data", in_vm="/data")
    assert got == expected
    assert expected["rmdir non-empty"] == "ENOTEMPTY"
    assert expected["mkdir existing dir"] == "EEXIST"
    assert expected["open missing"] == "ENOENT"


def test_device_nodes_are_refused_as_in_any_user_namespace(hvfs: Hvfs, tmp_path: Path) -> None:
    program = (
        "import os\ntry:\n os.mknod('/data/null', 0o20600, os.makedev(1, 3))\nexcept OSError as e:\n print(e.errno)"
    )
    assert hvfs.ok("run", "-v", f"{tmp_path}:/data", "--", "python3", "-c", program).strip() == str(1)  # EPERM
    assert not (tmp_path / "null").exists()


def test_errnos_equal_native_on_the_image_root(hvfs: Hvfs, tmp_path: Path) -> None:
    native = tmp_path / "native"
    native.mkdir()
    expected = _errnos(hvfs, native)
    got = _errnos(hvfs, native, "--tmpfs", "/probe-scratch", in_vm="/var/tmp")
    assert got == expected


def test_read_only_volume_refuses_writes_with_erofs(hvfs: Hvfs, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("keep")
    (tmp_path / "dir").mkdir()
    program = """
import errno, os
def attempt(name, action):
    try:
        action()
        print(name, "ok")
    except OSError as e:
        print(name, errno.errorcode[e.errno])
attempt("open", lambda: open("/ro/file", "w"))
attempt("create", lambda: open("/ro/new", "w"))
attempt("mkdir", lambda: os.mkdir("/ro/d2"))
attempt("unlink", lambda: os.unlink("/ro/file"))
attempt("rmdir", lambda: os.rmdir("/ro/dir"))
attempt("rename", lambda: os.rename("/ro/file", "/ro/f2"))
attempt("chmod", lambda: os.chmod("/ro/file", 0o600))
attempt("truncate", lambda: os.truncate("/ro/file", 0))
attempt("utime", lambda: os.utime("/ro/file", (1, 1)))
attempt("symlink", lambda: os.symlink("x", "/ro/l"))
print("access", os.access("/ro/file", os.W_OK))
"""
    out = hvfs.ok("run", "-v", f"{tmp_path}:/ro:ro", "--", "python3", "-c", program)
    results = dict(line.split() for line in out.splitlines())
    assert results.pop("access") == "False"
    assert set(results.values()) == {"EROFS"}, results
    assert (tmp_path / "file").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"]


def test_writable_volume_reads_as_writable(hvfs: Hvfs, tmp_path: Path) -> None:
    """The boot view is read-only; access(W_OK) and statfs must not say so for a writable mount."""
    (tmp_path / "file").write_text("x")
    program = "import os; print(os.access('/data/file', os.W_OK), bool(os.statvfs('/data').f_flag & os.ST_RDONLY))"
    assert hvfs.ok("run", "-v", f"{tmp_path}:/data", "--", "python3", "-c", program).split() == ["True", "False"]
    assert hvfs.ok("run", "-v", f"{tmp_path}:/data:ro", "--", "python3", "-c", program).split() == ["False", "True"]


def test_copy_on_write_root_leaves_the_host_untouched(hvfs: Hvfs, tmp_path: Path) -> None:
    before = Path("/etc/hostname").read_bytes() if Path("/etc/hostname").exists() else None
    script = (
        "echo vm > /etc/hvfs-cow-test && echo changed >> /etc/hostname && mkdir -p /usr/share/hvfs-cow && "
        "touch /usr/share/hvfs-cow/x && echo top > /hvfs-top && rm /etc/hvfs-cow-test && "
        "echo vm2 > /etc/hvfs-cow-test && cat /etc/hvfs-cow-test /hvfs-top"
    )
    assert hvfs.ok("run", "--", "sh", "-c", script).split() == ["vm2", "top"]
    assert not Path("/etc/hvfs-cow-test").exists()
    assert not Path("/usr/share/hvfs-cow").exists()
    assert not Path("/hvfs-top").exists()
    assert (Path("/etc/hostname").read_bytes() if before is not None else None) == before
    # the upper layer is discarded at exit...
    assert hvfs.run("run", "--", "cat", "/etc/hvfs-cow-test").returncode == 1
    # ...unless --persist keeps it
    keep = tmp_path / "keep"
    hvfs.ok("run", "--persist", str(keep), "--", "sh", "-c", "echo kept > /etc/hvfs-persist && touch /root/mark")
    assert hvfs.ok("run", "--persist", str(keep), "--", "cat", "/etc/hvfs-persist").strip() == "kept"
    assert hvfs.ok("run", "--persist", str(keep), "--", "ls", "/root").split() == ["mark"]
    assert not Path("/etc/hvfs-persist").exists()


def _make_tree(root: Path, count: int) -> None:
    rng = random.Random(2)
    for i in range(count):
        directory = root / f"d{i % 37}" / f"e{i % 5}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{i}.bin").write_bytes(rng.randbytes(rng.randrange(0, 20_000)))
        if i % 50 == 0:
            os.symlink(f"f{i}.bin", directory / f"l{i}")
        if i % 40 == 0:
            os.chmod(directory / f"f{i}.bin", 0o750)


def test_untar_of_many_files_then_digests_agree(hvfs: Hvfs, tmp_path: Path) -> None:
    source, inbox, data = tmp_path / "source", tmp_path / "in", tmp_path / "data"
    for d in (source, inbox, data):
        d.mkdir()
    _make_tree(source, 1200)
    with tarfile.open(inbox / "tree.tar", "w") as archive:
        archive.add(source, arcname="tree")
    inside = hvfs.ok(
        "run",
        "-v",
        f"{inbox}:/in:ro",
        "-v",
        f"{data}:/data",
        "-w",
        "/data",
        "--",
        "sh",
        "-c",
        "tar -xf /in/tree.tar && cd tree && find . -type f -print0 | sort -z | xargs -0 sha256sum",
    )
    outside = subprocess.run(
        "find . -type f -print0 | sort -z | xargs -0 sha256sum",
        shell=True,
        cwd=data / "tree",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    original = subprocess.run(
        "find . -type f -print0 | sort -z | xargs -0 sha256sum",
        shell=True,
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert len(inside.splitlines()) == 1200
    assert inside == outside == original
    assert snapshot(data / "tree") == snapshot(source)


def test_memory_mounts_are_private_sized_and_served(hvfs: Hvfs, tmp_path: Path) -> None:
    stats_file = tmp_path / "stats.json"
    script = (
        "dd if=/dev/zero of=/scratch/fill bs=1M count=8 2>/dev/null; echo dd=$?; "
        "ls -l /scratch/fill | awk '{print $5}'; "
        "echo shm > /dev/shm/segment && cat /dev/shm/segment; "
        "python3 -c 'from multiprocessing import shared_memory as s; m = s.SharedMemory(create=True, size=4096); "
        "m.buf[0] = 7; print(m.buf[0]); m.close(); m.unlink()'"
    )
    out = hvfs.ok("run", "--stats", str(stats_file), "--tmpfs", "/scratch:size=4m", "--", "sh", "-c", script)
    assert out.split() == ["dd=1", str(4 * 1024 * 1024), "shm", "7"]  # ENOSPC at the size limit
    assert json.loads(stats_file.read_text())["requests"]["open"]["served"] >= 3


def test_chown_and_times_are_served_with_native_results(hvfs: Hvfs, tmp_path: Path) -> None:
    script = (
        "cd /data && touch a && chown 1234:2345 a && ln -s a l && chown -h 3456 l && "
        "touch -m -d '2002-02-02 02:02:02' a && mkdir d && chmod 2775 d && touch d/inherits"
    )
    hvfs.ok("run", "-v", f"{tmp_path}:/data", "--", "sh", "-c", script)
    a, link = (tmp_path / "a").stat(), (tmp_path / "l").lstat()
    assert (a.st_uid, a.st_gid, link.st_uid) == (1234, 2345, 3456)
    assert a.st_mtime == 1012615322
    assert (tmp_path / "d" / "inherits").stat().st_gid == (tmp_path / "d").stat().st_gid  # setgid directory
