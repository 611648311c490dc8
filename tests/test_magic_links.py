"""Opens through magic links that must keep working: the manager reopens the very file.

/proc/self/fd/N, /dev/stdout and their kin are served by reopening the open file they name
(a file of the VM, a pipe, a memfd, a terminal); each case here runs natively first, where
Linux is the oracle, then in VMs as root and rootless, strict or not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import Vm

REOPENS = r"""
import errno, os, socket, sys
data = sys.argv[1]
def attempt(name, action):
    try:
        print(name, action())
    except OSError as e:
        print(name, errno.errorcode[e.errno])

def reopen(fd, flags):
    return os.open(f"/proc/self/fd/{fd}", flags | os.O_CLOEXEC)

path = os.path.join(data, "f")
with open(path, "w") as f:
    f.write("old")
ro = os.open(path, os.O_RDONLY)  # the VM's own file, opened read-only: rewritten by its link
attempt("rewrite", lambda: os.write(reopen(ro, os.O_WRONLY | os.O_TRUNC), b"new") and open(path).read())
attempt("numbered", lambda: os.write(os.open(f"/proc/{os.getpid()}/fd/{ro}", os.O_WRONLY | os.O_APPEND), b"+")
        and open(path).read())
gone = os.open(os.path.join(data, "g"), os.O_RDWR | os.O_CREAT, 0o600)
os.unlink(os.path.join(data, "g"))
attempt("deleted", lambda: os.write(reopen(gone, os.O_WRONLY), b"still") and os.pread(gone, 5, 0))
r, w = os.pipe()
attempt("pipe", lambda: os.write(reopen(r, os.O_WRONLY), b"piped") and os.read(r, 5))
memfd = os.memfd_create("m")
attempt("memfd", lambda: os.write(reopen(memfd, os.O_RDWR), b"mem") and os.pread(memfd, 3, 0))
os.fchmod(memfd, 0o600)
os.fchmod(r, 0o600)
print("fchmod", oct(os.fstat(memfd).st_mode & 0o777), oct(os.fstat(r).st_mode & 0o777))
one, other = socket.socketpair()
attempt("socket", lambda: reopen(one.fileno(), os.O_RDWR))
attempt("excl", lambda: reopen(ro, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
attempt("nofollow", lambda: reopen(ro, os.O_RDONLY | os.O_NOFOLLOW))
attempt("directory", lambda: reopen(ro, os.O_RDONLY | os.O_DIRECTORY))
attempt("read", lambda: os.read(reopen(ro, os.O_RDONLY), 10))
"""


def _native(script: str, directory: Path) -> str:
    result = subprocess.run([sys.executable, "-c", script, str(directory)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_reopens_through_magic_links_answer_as_linux_does(vm: Vm, data: Path, tmp_path: Path) -> None:
    native = _native(REOPENS, tmp_path)
    assert "rewrite new" in native and "pipe b'piped'" in native  # the oracle did what this expects
    result = vm.run(["python3", "-c", REOPENS, "/data"], volumes=[f"{data}:/data"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == native


def test_standard_streams_by_name(vm: Vm) -> None:
    """/dev/stdout and friends on the pipes hvfs run is given: the same as natively, for
    the same user (a pipe is its maker's: a rootless VM may not reopen root's)."""
    script = (
        "echo out > /dev/stdout; echo err > /dev/stderr; echo again >> /proc/self/fd/1; "
        "printf 'in\\n' | cat /dev/stdin; printf 'in2\\n' | cat /proc/self/fd/0; printf 'in3\\n' | cat /dev/fd/0"
    )
    as_user = ["runuser", "-u", vm.runner.user, "--"] if vm.runner.user else []
    native = subprocess.run([*as_user, "sh", "-c", script], capture_output=True, text=True)
    assert native.stdout.split()[-3:] == ["in", "in2", "in3"]
    result = vm.run(["sh", "-c", script])
    assert (result.returncode, result.stdout, result.stderr) == (native.returncode, native.stdout, native.stderr)


def test_a_file_given_as_stdin_can_be_read_by_name(vm: Vm, shared_tmp: Path) -> None:
    """Reading what the VM was given stays allowed, through any spelling. (The VM gets a
    pipe for a file, as docker's containers do: the second reader finds it at its end.)"""
    given = shared_tmp / "given"
    given.write_text("given\n")
    os.chmod(given, 0o644)
    with open(given, "rb") as stdin:
        args = ["run", *(["--strict"] if vm.strict else []), "--", "sh", "-c", "cat /dev/stdin; cat /proc/self/fd/0"]
        result = vm.runner.run(*args, stdin=stdin.fileno())
    assert (result.returncode, result.stdout, result.stderr) == (0, "given\n", "")
