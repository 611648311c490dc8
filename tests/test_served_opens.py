"""A served write-open is the caller's open itself, made in one call by the manager
(hvfs/manager/handlers/direct.py): what it may meet in a bound host directory besides
regular files — a FIFO, a device node — is opened exactly as the kernel would have opened
it for the VM, once, and nothing blocks the manager meanwhile. A FIFO's reader tells an
open that came and went (an end of stream before the writer's bytes); inotify on the host
tells a device's opens and closes (an O_PATH lookup makes no event; a real open does,
whoever makes it; the two kinds alternate, so inotify merges none of them)."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvfs._sys import inotify
from tests.conftest import VARIANTS, Vm

IN_OPEN = 0x20
DRIVERS = ("seccomp", "ptrace")


def run(vm: Vm, driver: str, script: str, data: Path) -> tuple[int, str, str]:
    args = ["run", "--driver", driver, "-v", f"{data}:/data"] + (["--strict"] if vm.strict else [])
    result = vm.runner.run(*args, "--", "sh", "-euc", script, timeout=60)
    return result.returncode, result.stdout, result.stderr


@contextlib.contextmanager
def opens_of(path: Path) -> Iterator[list[str]]:
    """The opens and the closes of writers of ``path`` made in the block, in order
    ("open", "close"), in the list it gives, at the end."""
    fd = inotify.init()
    seen: list[str] = []
    try:
        inotify.add_watch(fd, str(path), IN_OPEN | inotify.IN_CLOSE_WRITE)
        yield seen
        while select.select([fd], [], [], 0.2)[0]:
            for _, mask in inotify.events(os.read(fd, 65536)):
                seen += ["open"] if mask & IN_OPEN else ["close"] if mask & inotify.IN_CLOSE_WRITE else []
    finally:
        os.close(fd)


def reader(fifo: Path, got: list[bytes]) -> threading.Thread:
    """A host reader of ``fifo``, in a thread: a blocking open (it waits for a writer),
    then everything up to the writers' end."""

    def read() -> None:
        with open(fifo, "rb") as f:
            got.append(f.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("vm", VARIANTS, indirect=True)
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_fifo_with_a_reader_is_opened_once_for_its_writer(vm: Vm, driver: str, data: Path) -> None:
    """The manager's open of the FIFO is the VM's own (handed out, not closed and opened
    again by the kernel): one open and one close by a writer, and the reader gets its bytes."""
    fifo = data / "fifo"
    os.mkfifo(fifo, 0o666)
    vm.give(fifo)
    reading = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with opens_of(fifo) as opens:
            code, out, err = run(vm, driver, "exec 3>/data/fifo; printf hello >&3; exec 3>&-; echo done", data)
        got = os.read(reading, 100)
    finally:
        os.close(reading)
    assert (code, out) == (0, "done\n"), err
    assert got == b"hello"
    assert opens == ["open", "close"], opens


@pytest.mark.parametrize("vm", VARIANTS, indirect=True)
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_fifo_without_a_reader_blocks_its_writer_not_the_manager(vm: Vm, driver: str, data: Path) -> None:
    """With no reader the writer blocks in its open, in the kernel, as it would natively;
    the VM's other served opens go on meanwhile (``tick``), and the reader that comes at
    last gets the writer's bytes."""
    fifo = data / "fifo"
    os.mkfifo(fifo, 0o666)
    vm.give(fifo)
    script = """
        (printf hello > /data/fifo) &
        n=0
        while [ ! -e /data/go ]; do n=$((n + 1)); echo $n > /data/tick; sleep 0.05; done
        wait
        echo done
    """
    got: list[bytes] = []

    def host() -> None:
        while not (data / "tick").exists():
            threading.Event().wait(0.02)
        thread = reader(fifo, got)
        thread.join(10)
        (data / "go").touch()

    helper = threading.Thread(target=host, daemon=True)
    helper.start()
    code, out, err = run(vm, driver, script, data)
    helper.join(10)
    assert (code, out) == (0, "done\n"), err
    assert got == [b"hello"]
    assert int((data / "tick").read_text()) >= 1


def _native_write_open(node: Path) -> int:
    """0, or the errno of a write-open of ``node`` on the host (a nodev file system: EACCES)."""
    try:
        os.close(os.open(node, os.O_WRONLY))
    except OSError as e:
        return e.errno or errno.EIO
    return 0


@pytest.mark.parametrize("vm", VARIANTS, indirect=True)
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_device_node_in_a_bound_directory_is_opened_by_the_kernel_alone(vm: Vm, driver: str, data: Path) -> None:
    """A character device (/dev/null's numbers) made on the host in the VM's directory: the
    VM's write-open does what a native one does (as root), and the device is opened once
    and closed once if at all (never by the manager, whose writable view is nodev, and
    then again for the VM)."""
    node = data / "null"
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    native = _native_write_open(node)
    with opens_of(node) as opens:
        code, out, err = run(vm, driver, "printf x > /data/null && echo written || echo refused", data)
    assert code == 0, err
    if vm.runner.user is None:  # rootless, the VM's mounts of host directories refuse devices (EACCES)
        assert out == ("written\n" if native == 0 else "refused\n"), (native, err)
    assert opens == (["open", "close"] if out == "written\n" else []), (opens, out, native)


@pytest.mark.parametrize("vm", VARIANTS, indirect=True)
def test_the_change_set_names_what_was_found_by_its_text_as_the_kernel_does(vm: Vm, data: Path) -> None:
    """Served mutations found by their text with no symlink on the way name their targets
    without a readlink (hvfs.manager.trail): relative paths from the cwd, a trailing ``/``,
    creates with and without O_EXCL; one through a symlinked directory is named where it
    landed; a file added then removed is no change."""
    (data / "f").write_text("orig\n")
    (data / "g").write_text("kept\n")
    vm.give(data)
    script = (
        "mkdir /data/d; cd /data/d; echo x > x; echo y > y; rm y; ln -s d /data/l; echo z > /data/l/z; "
        "echo more >> /data/f; chmod 700 /data/d/; touch /data/g; set -C; echo w > w2; rm w2"
    )
    args = ["run", *(["--strict"] if vm.strict else []), "--diff", "-v", f"{data}:/data", "--", "sh", "-c", script]
    result = vm.runner.run(*args, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line[:2] in ("A ", "C ", "D ")]
    assert lines == ["C /data", "A /data/d", "A /data/d/x", "A /data/d/z", "C /data/f", "C /data/g", "A /data/l"]
    assert (data / "d" / "z").read_text() == "z\n" and (data / "f").read_text() == "orig\nmore\n"


@pytest.mark.parametrize("vm", VARIANTS, indirect=True)
def test_a_directory_open_of_a_fifo_wakes_no_writer_waiting_for_a_reader(vm: Vm, data: Path) -> None:
    """A strict VM's O_DIRECTORY open is made at once with its flags (served_stat.h serve_open,
    no O_PATH probe): the kernel refuses a FIFO (ENOTDIR) before it opens it, so a host writer
    blocked in its open, waiting for a reader, stays blocked, as it does natively; only the
    host reader that comes after it lets it through, and gets its bytes."""
    fifo = data / "fifo"
    os.mkfifo(fifo, 0o666)
    vm.give(fifo)
    opened = threading.Event()

    def write() -> None:
        with open(fifo, "wb") as f:  # blocks until a reader opens the FIFO
            opened.set()
            f.write(b"hello")

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    with pytest.raises(OSError) as native:
        os.open(fifo, os.O_RDONLY | os.O_DIRECTORY)
    script = (
        "import errno, os\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        os.close(os.open('/data/fifo', os.O_RDONLY | os.O_DIRECTORY))\n"
        "    except OSError as e:\n"
        "        assert e.errno == errno.ENOTDIR, e\n"
        "print('refused')\n"
    )
    code, out, err = run(vm, "seccomp", f'python3 -c "{script}"', data)
    assert (code, out) == (0, "refused\n"), err
    assert native.value.errno == errno.ENOTDIR
    assert not opened.wait(0.5), "a directory open of the FIFO let its writer through"
    got: list[bytes] = []
    reader(fifo, got).join(10)
    writer.join(10)
    assert opened.is_set() and got == [b"hello"]
