"""A host file inside a VM, reached through an fd: it must not change.

The VM gets the file as its stdin (``hvfs run ... < F``) or from a host process over a
unix socket on a mount marked ``sockets`` (the VM may read what it is given, by design).
The attack program reopens it for writing through every spelling of a magic link
(/proc/self/fd/0, /proc/PID/task/TID/fd/0, /dev/stdin, /dev/fd/0, symlinks to them...),
changes its metadata by fd and by path, then races a thread that swaps which file one fd
number is against reopens and fchmods of that number. The host then checks the file's
content, mode, owner, times and extended attributes: not one change.
"""

from __future__ import annotations

import array
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.adversarial.conftest import Attacker, Outcome

CONTENT = b"the host's own content\n"


def host_file(directory: Path, attacker: Attacker) -> Path:
    """A host file the VM's user could change natively: owned by it, with an xattr."""
    path = directory / "F"
    path.write_bytes(CONTENT)
    os.chmod(path, 0o644)
    os.setxattr(path, "user.hvfs", b"kept")
    os.utime(path, ns=(1_000_000_000 * 10**9, 1_000_000_000 * 10**9))
    attacker.give(path)
    return path


def snapshot(path: Path) -> tuple[object, ...]:
    st = os.stat(path)
    xattrs = {name: os.getxattr(path, name) for name in os.listxattr(path)}
    content = sorted(os.listdir(path)) if path.is_dir() else path.read_bytes()
    return (content, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns, xattrs)


@contextmanager
def fd_server(path: Path, file: Path) -> Iterator[None]:
    """A host process's socket at ``path`` that gives every client ``file`` (or directory),
    open read-only."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o777)
    server.listen(8)
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            given = os.open(file, os.O_RDONLY | os.O_CLOEXEC)  # a file or a directory
            try:
                with client:
                    client.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [given]))])
            finally:
                os.close(given)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        server.close()


def check(outcome: Outcome, before: tuple[object, ...], after: tuple[object, ...], *, regular: bool) -> None:
    print(outcome.report)
    assert after == before, f"the host file changed:\n{before}\n{after}\n{outcome.report}"
    assert outcome.code == 0, outcome.stderr
    assert "Traceback" not in outcome.stderr
    if regular:
        assert outcome.count("regular") == 1
    if outcome.count("regular"):
        assert outcome.count("escaped") == 0, outcome.report
        # Every attempt ran and was refused, and the race really swapped the files under
        # the reopens: the VM's own file was reopened, the host file refused.
        assert outcome.count("refused") > 100
        assert outcome.count("own_ok") > 0 and outcome.count("race_refused") > 0, outcome.report
        assert outcome.count("meta_ok_race") > 0 and outcome.count("meta_refused_race") > 0, outcome.report


def test_a_host_file_as_stdin(attacker: Attacker, shared_tmp: Path) -> None:
    """``hvfs run ... < F``: while hvfs run still hands a VM its stdin as it is, fd 0 is
    the host file itself; once stdio is interposed it is a pipe, and the file is out of
    reach anyway. Either way the file stays as it was."""
    path = host_file(shared_tmp, attacker)
    before = snapshot(path)
    with open(path, "rb") as stdin:
        outcome = attacker.run("inherited_fds", "stdin", stdin=stdin.fileno())
    check(outcome, before, snapshot(path), regular=False)


def test_a_host_file_passed_over_a_sockets_mount(attacker: Attacker, shared_tmp: Path) -> None:
    """The same file handed over by a host process, as a mount marked ``sockets`` allows:
    the VM really holds the host file, whatever hvfs run does with stdio."""
    path = host_file(shared_tmp, attacker)
    sockets = shared_tmp / "sockets"
    sockets.mkdir(mode=0o777)
    os.chmod(sockets, 0o777)
    before = snapshot(path)
    with fd_server(sockets / "files.sock", path):
        outcome = attacker.run("inherited_fds", "/s/files.sock", options=["-v", f"{sockets}:/s:sockets"])
    check(outcome, before, snapshot(path), regular=True)


@pytest.mark.parametrize("kernel_path", ["/proc/self/oom_score_adj", "/dev/null"])
def test_a_continued_write_open_raced_to_a_magic_link(attacker: Attacker, shared_tmp: Path, kernel_path: str) -> None:
    """The residual of the manager's wall: a write-open the manager lets the kernel do (a
    procfs file, a device), raced to /proc/self/fd/0 of a host file the VM received. The
    kernel closes it: hvfs-init puts the VM in a Landlock domain where it may change files
    only beneath its own root."""
    path = host_file(shared_tmp, attacker)
    sockets = shared_tmp / "sockets"
    sockets.mkdir(mode=0o777)
    os.chmod(sockets, 0o777)
    before = snapshot(path)
    with fd_server(sockets / "files.sock", path):
        outcome = attacker.run("continue_race", kernel_path, "/s/files.sock", options=["-v", f"{sockets}:/s:sockets"])
    assert outcome.code == 0, outcome.stderr
    assert outcome.count("continued") > 0 and outcome.count("refused") > 0, outcome.report  # the race ran
    assert outcome.count("escaped") == 0, outcome.report
    assert snapshot(path) == before


def test_a_host_directory_passed_over_a_sockets_mount(attacker: Attacker, shared_tmp: Path) -> None:
    """A relative path's base is the caller's directory fd: one from the host has a path
    string that the VM can fill with decoys (a FIFO, a symlink to /dev/null, whose opens
    the kernel would do on CONTINUE, relative to the real fd). Nothing is done relative to
    a directory from outside the VM; reading through it still works."""
    directory = shared_tmp / "hostdir"
    directory.mkdir()
    (directory / "F").write_bytes(CONTENT)
    (directory / "G").write_bytes(CONTENT)
    attacker.give(directory)
    sockets = shared_tmp / "sockets"
    sockets.mkdir()
    os.chmod(sockets, 0o777)

    def everything() -> dict[str, tuple[object, ...]]:
        return {".": snapshot(directory), **{entry.name: snapshot(entry) for entry in directory.iterdir()}}

    before = everything()
    with fd_server(sockets / "dirs.sock", directory):
        outcome = attacker.run(
            "foreign_directory", "/s/dirs.sock", str(directory), options=["-v", f"{sockets}:/s:sockets"]
        )
    print(outcome.report)
    assert everything() == before, outcome.report
    assert outcome.code == 0, outcome.stderr
    assert outcome.count("escaped") == 0, outcome.report
    assert outcome.count("reads") > 0 and outcome.count("refused") > 100
    assert outcome.count("own_ok") > 0, outcome.report  # the swapped fd was the VM's own at times
