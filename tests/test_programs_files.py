"""Real programs in VMs copying file trees and serving unix sockets on served mounts: tar, cpio, ``cp -a``,
and a unix-socket server with its client. git, sqlite3, venv and pip, and make are in test_programs.py.

Every test runs four ways: as root and rootless (the unprivileged user ``hvfs-rootless``), each with the
default driver (reads run natively on the boot view) and with ``--strict`` (reads are served too). What a
program leaves behind is checked on the host, so a test passes only if the program really worked, not merely
exited 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import stat
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import SOCKET_VARIANTS, VARIANTS, Vm, require

# ---------------------------------------------------------------------------------------------------------------------
# tar, cpio and cp -a round trips

FOREIGN_OWNER = (4242, 4243)  # ids, as a VM sees them, that no process here runs as


def subordinate_start(path: str, user: str) -> int | None:
    """The first id of ``user``'s range in /etc/subuid or /etc/subgid, if it has one."""
    with contextlib.suppress(OSError), open(path) as ranges:
        for line in ranges:
            owner, start, count = [*line.strip().split(":"), "", ""][:3]
            if owner == user and start.isdigit() and count.isdigit() and int(count) >= max(FOREIGN_OWNER):
                return int(start)
    return None


def foreign_owner_on_host(user: str | None) -> tuple[int, int] | None:
    """The host ids of files a VM sees as owned by ``FOREIGN_OWNER``, or None if such files cannot exist there.

    As root every id maps to itself. A rootless VM's root is its user, and its ids 1… are the user's
    subordinate ids (newuidmap), when it has some; otherwise it has one id only.
    """
    if user is None:
        return FOREIGN_OWNER
    uid_start, gid_start = subordinate_start("/etc/subuid", user), subordinate_start("/etc/subgid", user)
    if shutil.which("newuidmap") is None or uid_start is None or gid_start is None:
        return None
    return (uid_start + FOREIGN_OWNER[0] - 1, gid_start + FOREIGN_OWNER[1] - 1)


# relative path -> mode; the tree's own directory is ""
TREE_DIRS = {"": 0o755, "private": 0o750, "sticky": 0o1777, "shared": 0o2775, "sub": 0o755, "sub/deeper": 0o711}
TREE_FILES = {
    "plain": 0o644,
    "exec.sh": 0o755,
    "setuid": 0o4755,
    "setgid": 0o2755,
    "odd": 0o604,
    "readonly": 0o400,
    "empty": 0o644,
    "big": 0o640,
    "linked": 0o664,
    "private/secret": 0o600,
    "sub/file": 0o644,
}
TREE_FIFOS = {"fifo": 0o620}
HARD_LINKS = ["private/linked2", "sub/deeper/linked3"]  # more names of "linked"
SYMLINKS = {"link": "sub/file", "dirlink": "sub", "dangling": "nowhere", "absolute": "/etc/hostname"}


def file_content(path: str) -> bytes:
    # distinct sizes and contents; "big" spans many pages and is not a run of one byte
    if path == "empty":
        return b""
    return bytes(range(256)) * 1200 if path == "big" else path.encode()


def make_tree(root: Path, owner: tuple[int, int], foreign_owner: tuple[int, int] | None) -> None:
    """A tree of odd modes, hard links, symlinks, a FIFO and set mtimes, owned by ``owner``.

    With ``foreign_owner``, one more file belongs to it. Modes are set after owners, as chown clears
    the setuid and setgid bits, and mtimes last, deepest first, as adding entries changes a directory's mtime.
    """
    for path in TREE_DIRS:
        (root / path).mkdir(exist_ok=True)
    for path in TREE_FILES:
        (root / path).write_bytes(file_content(path))
    for path in TREE_FIFOS:
        os.mkfifo(root / path)
    for name in HARD_LINKS:
        os.link(root / "linked", root / name)
    for name, target in SYMLINKS.items():
        os.symlink(target, root / name)
    for entry in [root, *root.rglob("*")]:
        os.lchown(entry, *owner)
    if foreign_owner is not None:
        (root / "foreign").write_text("belongs to someone else")
        os.chown(root / "foreign", *foreign_owner)
    for path, mode in (TREE_DIRS | TREE_FILES | TREE_FIFOS).items():
        os.chmod(root / path, mode)
    everything = sorted([root, *root.rglob("*")], key=lambda p: len(p.parts), reverse=True)
    for n, entry in enumerate(everything):
        seconds = 1_500_000_000 + n * 3600  # whole seconds: tar's and cpio's default formats keep no more
        os.utime(entry, (seconds, seconds), follow_symlinks=False)


def tree_snapshot(root: Path, *, directory_times: bool = True) -> dict[str, tuple[object, ...]]:
    """What a faithful copy of ``root`` keeps: per entry its type and mode, owner, size, content digest, link
    target, mtime (not of symlinks; of directories only with ``directory_times``) and the names that share
    its inode (hard links), which unlike inode numbers are the same in a copy."""
    stats = {path: path.lstat() for path in sorted([root, *root.rglob("*")])}
    names_of_inode: dict[int, list[str]] = defaultdict(list)
    for path, st in stats.items():
        if not stat.S_ISDIR(st.st_mode):
            names_of_inode[st.st_ino].append(str(path.relative_to(root)))
    entries: dict[str, tuple[object, ...]] = {}
    for path, st in stats.items():
        is_dir, is_link = stat.S_ISDIR(st.st_mode), stat.S_ISLNK(st.st_mode)
        keeps_time = not is_link and (directory_times or not is_dir)
        entries[str(path.relative_to(root))] = (
            stat.filemode(st.st_mode),
            (st.st_uid, st.st_gid),
            None if is_dir else st.st_size,
            hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None,
            os.readlink(path) if is_link else None,
            st.st_mtime_ns if keeps_time else None,
            None if is_dir else tuple(names_of_inode[st.st_ino]),
        )
    return entries


def differences(
    expected: dict[str, tuple[object, ...]], got: dict[str, tuple[object, ...]]
) -> dict[str, tuple[tuple[object, ...] | None, tuple[object, ...] | None]]:
    """Entries that differ, as (expected, got): short enough to read in a failure, unlike a whole tree."""
    return {name: (expected.get(name), got.get(name)) for name in expected | got if expected.get(name) != got.get(name)}


# tool -> (command, whether the tool keeps directories' mtimes natively). cpio does not: it sets a directory's
# time when it creates it, then changes the directory by adding entries (hard links it defers to the end).
COPY_COMMANDS = {
    "tar": ("tar -C /src -cf - tree | tar -C /dst -xpf -", True),
    "cpio-pass": ("cd /src && find tree | cpio -pdm --quiet /dst", False),
    "cpio-archive": ("cd /src && find tree | cpio -o -H newc --quiet | (cd /dst && cpio -idm --quiet)", False),
    "cp-a": ("cp -a /src/tree /dst/", True),
}


@pytest.mark.parametrize("tool", list(COPY_COMMANDS))
def test_archivers_copy_a_tree_faithfully(vm: Vm, shared_tmp: Path, tool: str) -> None:
    """tar, cpio (copy-pass and archive) and ``cp -a`` copy a tree from one served mount to another and keep
    types, modes (setuid, setgid, sticky, 0604, 0400…), owners, hard links, symlinks, FIFOs and mtimes.

    These are the calls an unpacker makes after creating a file: fchown/lchown, fchmod, utimensat on
    symlinks (AT_SYMLINK_NOFOLLOW), link, symlink, mknod of a FIFO.
    """
    require(shutil.which(tool.split("-")[0]) is not None, f"{tool.split('-')[0]} is needed (Debian package)")
    src, dst = shared_tmp / "src", shared_tmp / "dst"
    src.mkdir()
    dst.mkdir()
    vm.give(dst)
    owner = (0, 0)
    if vm.runner.user is not None:
        # a rootless VM's root is its user: files of the host's root would be nobody's inside
        account = pwd.getpwnam(vm.runner.user)
        owner = (account.pw_uid, account.pw_gid)
    make_tree(src / "tree", owner, foreign_owner_on_host(vm.runner.user))
    command, directory_times = COPY_COMMANDS[tool]

    vm.sh(command, volumes=[f"{src}:/src:ro", f"{dst}:/dst"])

    expected = tree_snapshot(src / "tree", directory_times=directory_times)
    assert differences(expected, tree_snapshot(dst / "tree", directory_times=directory_times)) == {}


# ---------------------------------------------------------------------------------------------------------------------
# unix sockets

UNIX_ECHO = """
import os, socket, stat, sys

path = sys.argv[1]

def read_all(sock):
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)

server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
server.listen(2)  # before the fork: the client can connect at once, nothing here depends on timing
print("bound", stat.S_ISSOCK(os.stat(path).st_mode), flush=True)
pid = os.fork()
if pid == 0:
    for n in (1, 2):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
            client.sendall(b"hello %d" % n)
            client.shutdown(socket.SHUT_WR)
            print(read_all(client).decode(), flush=True)
    os._exit(0)
for _ in (1, 2):
    conn, _ = server.accept()
    with conn:
        conn.sendall(read_all(conn).upper())
_, status = os.waitpid(pid, 0)
print("client exited", os.waitstatus_to_exitcode(status), flush=True)
"""


@pytest.mark.parametrize("vm", VARIANTS + SOCKET_VARIANTS, indirect=True)
@pytest.mark.parametrize(
    ("workdir", "path"),
    [
        pytest.param("/", "/tmp/x.sock", id="tmp"),
        pytest.param("/", "/data/x.sock", id="volume"),
        pytest.param("/data", "x.sock", id="volume-relative"),
    ],
)
def test_unix_socket_server_and_client(vm: Vm, data: Path, workdir: str, path: str) -> None:
    """A program binds a unix socket under /tmp (the VM's copy-on-write root) or on a served volume, by an
    absolute or a cwd-relative path, listens, and a forked client connects to it twice, a message each time.

    This is the acceptance test for binding unix sockets inside a VM, which the boot view, read-only, cannot
    do by itself: the socket file must be made by the manager.
    """
    result = vm.run(["python3", "-c", UNIX_ECHO, path], volumes=[f"{data}:/data"], workdir=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["bound True", "HELLO 1", "HELLO 2", "client exited 0"]
    if not path.startswith("/tmp/"):
        # on the volume the socket file is left behind, as natively, and is a socket on the host too
        assert stat.S_ISSOCK((data / "x.sock").lstat().st_mode)
