"""Owner ids as the kernel takes them, and statfs on an image root as a user expects it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import Hvfs, Vm

IDS = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
path = sys.argv[1]
fd = os.open(path, os.O_RDONLY)
def attempt(name, result):
    st = os.stat(path)
    told = "ok" if result == 0 else os.strerror(ctypes.get_errno())
    print(name, told, st.st_uid - os.getuid(), st.st_gid - os.getgid())
u = ctypes.c_uint
attempt("fchown-2**31", libc.fchown(fd, u(2**31), u(2**31)))
attempt("fchownat-2**31+5", libc.fchownat(fd, b"", u(2**31 + 5), u(0xFFFFFFFF), 0x1000))
attempt("unchanged", libc.fchown(fd, u(0xFFFFFFFF), u(0xFFFFFFFF)))
attempt("chown-unchanged", libc.chown(path.encode(), u(0xFFFFFFFF), u(0xFFFFFFFF)))
attempt("back", libc.fchown(fd, u(os.getuid()), u(os.getgid())))
"""


def test_ids_are_unsigned_32_bit_as_natively(vm: Vm, data: Path, shared_tmp: Path) -> None:
    """2**31 as root is an id like any other (rootless it is unmapped: EINVAL), and
    0xFFFFFFFF leaves an id unchanged; no request may end in EIO."""
    target = shared_tmp / "f"
    target.touch()
    as_user = ["runuser", "-u", vm.runner.user, "--"] if vm.runner.user else []
    if vm.runner.user:  # natively, the rootless user in a user namespace of its own, as its VM
        as_user += ["unshare", "--user", "--map-root-user"]
        vm.give(target)
    native = subprocess.run([*as_user, "python3", "-c", IDS, str(target)], capture_output=True, text=True)
    assert native.returncode == 0, native.stderr
    assert native.stdout.splitlines()[0].startswith("fchown-2**31 " + ("Invalid" if vm.runner.user else "ok"))
    (data / "f").touch()
    vm.give(data / "f")
    result = vm.run(["python3", "-c", IDS, "/data/f"], volumes=[f"{data}:/data"])
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == native.stdout


def _df_used(output: str) -> int:
    """Used 1K blocks of the one file system ``df -P`` lists."""
    return int(output.splitlines()[1].split()[2])


def test_statfs_on_the_image_root_reports_the_image(hvfs: Hvfs) -> None:
    """``df /`` in a VM on the host image: what the host's root file system uses (plus
    the little the VM wrote), not an empty copy-on-write layer; still an overlay."""
    script = "df -P / && stat -f -c %T / && python3 -c 'import shutil; print(shutil.disk_usage(\"/usr\").used)'"
    host_used = _df_used(subprocess.run(["df", "-P", "/usr"], capture_output=True, text=True, check=True).stdout)
    for strict in ([], ["--strict"]):
        out = hvfs.ok("run", *strict, "--", "sh", "-c", script).splitlines()
        used = _df_used("\n".join(out[:2]))
        assert abs(used - host_used) <= max(host_used // 100, 4096), (used, host_used)
        assert out[2] == "overlayfs"
        assert abs(int(out[3]) // 1024 - host_used) <= max(host_used // 100, 4096)


def test_statfs_elsewhere_is_unchanged(hvfs: Hvfs, tmp_path: Path) -> None:
    """A host directory and a memory mount report their own file systems."""
    script = "df -P /data | tail -1; df -P /mem | tail -1; stat -f -c %T /mem"
    out = hvfs.ok("run", "-v", f"{tmp_path}:/data", "--tmpfs", "/mem:size=1m", "--", "sh", "-c", script).splitlines()
    native = subprocess.run(["df", "-P", str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert out[0].split()[1] == native.splitlines()[1].split()[1]  # the same size in blocks
    assert out[1].split()[1] == "1024" and out[2] == "tmpfs"
