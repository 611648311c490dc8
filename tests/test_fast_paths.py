"""The fast paths of the driver and the manager keep the behaviour of the slow ones: what
is kept across requests (open status files, memoized credentials, the compiled filter on
disk) is never stale, and the faster readers answer exactly as the simple ones did."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import json
import mmap
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hvfs._sys import files, process
from hvfs.api import Credentials
from hvfs.intercept import filter_cache
from hvfs.intercept.arch import native
from hvfs.intercept.filter import FilterConfig, _compile, compile_filter
from hvfs.intercept.procfs import StatusFiles, parse_credentials
from hvfs.intercept.tracee import PATH_MAX, CallError, Inspector, TargetGone, Tracee
from hvfs.manager import creds
from hvfs.manager.resolve import fd_closing, parent
from tests.conftest import REPO, in_a_thread

PAGE = mmap.PAGESIZE


@contextlib.contextmanager
def sleeping_child(comm: str = "hvfs-child") -> Iterator[int]:
    """A forked child that names itself ``comm`` and sleeps; killed and reaped at the end.
    Memory mapped before the fork is at the same addresses in it."""
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            with open("/proc/self/comm", "w") as f:
                f.write(comm)
            os.write(ready_write, b"x")
            time.sleep(600)
        finally:
            os._exit(0)
    os.close(ready_write)
    os.read(ready_read, 1)
    os.close(ready_read)
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _name(status: bytes) -> str:
    return status.split(b"\n", 1)[0].split(b"\t", 1)[1].decode()


def test_a_status_file_is_read_afresh_each_time() -> None:
    files = StatusFiles()
    command_read, command_write = os.pipe()
    done_read, done_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            for name in ("hvfs-before", "hvfs-after"):  # only a thread may rename itself
                with open("/proc/self/comm", "w") as f:
                    f.write(name)
                os.write(done_write, b"x")
                os.read(command_read, 1)
        finally:
            os._exit(0)
    try:
        os.read(done_read, 1)
        assert _name(files.read(pid)) == "hvfs-before"
        os.write(command_write, b"x")
        os.read(done_read, 1)
        assert _name(files.read(pid)) == "hvfs-after"
    finally:
        files.close()
        os.write(command_write, b"x")
        os.waitpid(pid, 0)
        for fd in (command_read, command_write, done_read, done_write):
            os.close(fd)


def test_a_kept_status_file_never_reads_a_dead_thread() -> None:
    """The fact the cache rests on: a procfs file names the thread, not its number."""
    with sleeping_child() as pid:
        fd = os.open(f"/proc/{pid}/status", os.O_RDONLY)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with pytest.raises(ProcessLookupError):
            os.pread(fd, 4096, 0)
        os.close(fd)


def _free_pid(offset: int) -> int:
    """A pid ``offset`` above this process's, wrapped below pid_max as the kernel wraps them."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    return 300 + (os.getpid() + offset - 300) % (pid_max - 300)


def _fork_with_pid(wanted: int, comm: str, holding: Path | None = None) -> int | None:
    """A sleeping child whose pid is ``wanted`` (holding ``holding`` open as fd 100), or
    None if another process took that pid."""
    ready_read, ready_write = os.pipe()
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(wanted - 1))  # the callers keep ``wanted`` below pid_max: see _free_pid
    pid = os.fork()
    if pid == 0:
        try:
            with open("/proc/self/comm", "w") as f:
                f.write(comm)
            if holding is not None:
                os.dup2(os.open(holding, os.O_RDONLY), 100)
            os.write(ready_write, b"x")
            time.sleep(600)
        finally:
            os._exit(0)
    os.close(ready_write)
    os.read(ready_read, 1)
    os.close(ready_read)
    if pid == wanted:
        return pid
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="choosing the next pid (ns_last_pid) needs root")
def test_a_reused_pid_is_read_from_its_new_thread() -> None:
    files = StatusFiles()
    try:
        for _attempt in range(20):
            with sleeping_child("hvfs-old") as old:
                assert _name(files.read(old)) == "hvfs-old"
            new = _fork_with_pid(old, "hvfs-new")  # the old one is reaped: its number is free
            if new is None:
                continue  # something else on the machine forked in between
            try:
                assert _name(files.read(new)) == "hvfs-new"
            finally:
                os.kill(new, signal.SIGKILL)
                os.waitpid(new, 0)
            return
        pytest.skip("could not get a pid reused: the machine forks too much")
    finally:
        files.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="choosing the next pid (ns_last_pid) needs root")
def test_a_kept_pidfd_never_takes_an_fd_of_a_reused_pid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hvfs._sys import notify

    monkeypatch.setattr(notify, "id_valid", lambda listener, notif_id: True)
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_text("1")
    second.write_text("2")
    inspector = Inspector()
    try:
        for _attempt in range(20):
            old = _fork_with_pid(_free_pid(1000 + _attempt * 10), "hvfs-old", holding=first)
            if old is None:
                continue
            try:
                taken = Tracee(-1, 0, old, inspector).take_fd(100)
                assert os.path.samestat(os.fstat(taken.fd), first.stat())
                assert inspector.pidfds.get(old) is not None  # kept for the next request
                os.close(taken.fd)
            finally:
                os.kill(old, signal.SIGKILL)
                os.waitpid(old, 0)
            new = _fork_with_pid(old, "hvfs-new", holding=second)
            if new is None:
                continue
            try:
                taken = Tracee(-1, 0, new, inspector).take_fd(100)
                assert os.path.samestat(os.fstat(taken.fd), second.stat())
                os.close(taken.fd)
            finally:
                os.kill(new, signal.SIGKILL)
                os.waitpid(new, 0)
            with pytest.raises(TargetGone):
                Tracee(-1, 0, new, inspector).take_fd(100)
            assert inspector.pidfds.get(new) is None
            return
        pytest.skip("could not get a pid reused: the machine forks too much")
    finally:
        inspector.close()


def test_status_files_stay_few() -> None:
    files = StatusFiles()
    try:
        with sleeping_child() as pid:
            for _ in range(3):
                files.read(pid)
            before = len(os.listdir("/proc/self/fd"))
            files.read(os.getpid())
            assert len(os.listdir("/proc/self/fd")) == before + 1
        assert len(files._kept) == 2
        files._kept.LIMIT = 2
        files.read(threading.get_native_id())
        assert len(files._kept) == 2
    finally:
        files.close()
    with pytest.raises(FileNotFoundError):
        files.read(2**22 + 12345)  # above pid_max: no such thread


STATUS = (
    b"Name:\tsh\\nUid:\t9\n"  # a name with an escaped newline cannot fake a line
    b"Umask:\t0027\nState:\tS (sleeping)\nTgid:\t7\nUid:\t1000\t1001\t1002\t1003\n"
    b"Gid:\t100\t101\t102\t103\nFDSize:\t64\nGroups:\t4 24 27 \nNStgid:\t7\n"
    b"CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000003000\n"
)


def test_credentials_are_parsed_from_the_status_text() -> None:
    assert parse_credentials(STATUS) == Credentials(
        uid=1003, gid=103, groups=(4, 24, 27), umask=0o027, capabilities=0x3000, real_uid=1000, real_gid=100
    )
    without = STATUS.replace(b"Umask:\t0027\n", b"").replace(b"Groups:\t4 24 27 \n", b"Groups:\t\n")
    parsed = parse_credentials(without)
    assert (parsed.umask, parsed.groups) == (0o022, ())
    changed = parse_credentials(STATUS.replace(b"0000000000003000", b"0000000000000000"))
    assert changed.capabilities == 0 and parse_credentials(STATUS).capabilities == 0x3000
    with pytest.raises(ValueError):
        parse_credentials(STATUS.replace(b"\nCapEff:", b"\nCapXYZ:"))


def test_credentials_of_a_real_thread() -> None:
    own = parse_credentials(Path("/proc/thread-self/status").read_bytes())
    assert (own.uid, own.gid, own.real_uid) == (os.geteuid(), os.getegid(), os.getuid())
    assert sorted(own.groups) == sorted(os.getgroups())
    umask = os.umask(0o022)
    os.umask(umask)
    assert own.umask == umask


def _reference_read_path(pid: int, address: int) -> str:
    """read_path as it was: one read of PATH_MAX bytes."""
    try:
        data = process.read_memory(pid, address, PATH_MAX)
    except OSError:
        return "EFAULT"
    end = data.find(b"\0")
    if end < 0:
        return "ENAMETOOLONG" if len(data) == PATH_MAX else "EFAULT"
    return "ENOENT" if end == 0 else os.fsdecode(data[:end])


def test_reading_paths_matches_one_whole_read() -> None:
    """Paths ending anywhere: before, at and after the first read, across pages, and at
    the edge of unmapped memory."""
    area = mmap.mmap(-1, 4 * PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(area))
    content = bytearray(b"a" * (4 * PAGE))
    for end in (10, 255, 256, 257, PAGE - 1, PAGE + 300, 2 * PAGE + 4000):
        content[end] = 0
    area[:] = bytes(content)
    libc = ctypes.CDLL(None)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    assert libc.munmap(base + 3 * PAGE, PAGE) == 0  # the last page is unmapped
    starts = [0, 1, 9, 10, 11, 200, 254, PAGE - 300, PAGE - 256, PAGE - 2, PAGE + 100, 2 * PAGE - 256]
    starts += [2 * PAGE + 4001, 3 * PAGE - 256, 3 * PAGE - 255, 3 * PAGE - 1, 3 * PAGE + 5]
    with sleeping_child() as pid:
        tracee = Tracee(-1, 0, pid, Inspector())
        for start in starts:
            try:
                got = tracee.read_path(base + start)
            except CallError as e:
                got = errno.errorcode[e.errno]
            assert got == _reference_read_path(pid, base + start), start
        with pytest.raises(CallError):
            tracee.read_path(0)
    with pytest.raises(TargetGone):
        tracee.read_path(base)


def test_the_memory_reader_reads_as_read_memory() -> None:
    area = mmap.mmap(-1, 2 * PAGE)
    area[:] = bytes(range(256)) * (2 * PAGE // 256)
    base = ctypes.addressof(ctypes.c_char.from_buffer(area))
    reader = process.MemoryReader(PAGE)
    with sleeping_child() as pid:
        for start, size in ((0, 1), (5, 100), (PAGE - 10, 20), (PAGE - 1, PAGE), (PAGE, PAGE)):
            assert reader.read(pid, base + start, size) == process.read_memory(pid, base + start, size)
            assert reader.read(pid, base + start, size) == area[start : start + size]
        with pytest.raises(OSError) as raised:
            reader.read(pid, 16, 8)
        assert raised.value.errno == errno.EFAULT
    with pytest.raises(ValueError):
        process.MemoryReader(PAGE + 1)


@pytest.fixture
def filter_cache_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "hvfs" / "filters"


@pytest.mark.parametrize("trap_reads", [False, True])
def test_a_cached_filter_is_the_compiled_one(filter_cache_in: Path, trap_reads: bool) -> None:
    config = FilterConfig(trap_reads=trap_reads)
    compiled = _compile(config, native())
    assert compile_filter(config, native()) == compiled  # compiled and stored
    assert len(list(filter_cache_in.iterdir())) == 1
    assert compile_filter(config, native()) == compiled  # from the cache


def test_a_start_with_a_cached_filter_needs_no_pyseccomp(filter_cache_in: Path) -> None:
    program = (
        "import sys\n"
        "from hvfs.intercept.arch import native\n"
        "from hvfs.intercept.filter import FilterConfig, compile_filter, syscall_numbers\n"
        "compile_filter(FilterConfig(), native()); syscall_numbers(native())\n"
        "print('pyseccomp' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = [subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True) for _ in "12"]
    assert [r.stdout.strip() for r in runs] == ["True", "False"], runs[-1].stderr


def _entry(directory: Path) -> Path:
    (entry,) = directory.iterdir()
    return entry


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(path.read_bytes()[:100]),
        lambda path: path.write_text(json.dumps({**json.loads(path.read_text()), "key": "0" * 64})),
        lambda path: path.write_text(json.dumps({**json.loads(path.read_text()), "program": "00" * 8})),
        lambda path: path.chmod(0o666),
        lambda path: os.chown(path, 12345, -1) if os.geteuid() == 0 else path.chmod(0o646),
    ],
    ids=["truncated", "another key", "another program", "writable by others", "owned by another user"],
)
def test_a_damaged_or_foreign_entry_is_recompiled(filter_cache_in: Path, damage: Callable[[Path], None]) -> None:
    config = FilterConfig()
    compiled = compile_filter(config, native())
    entry = _entry(filter_cache_in)
    damage(entry)
    assert compile_filter(config, native()) == compiled
    assert compile_filter(config, native()) == compiled


def test_the_key_covers_the_configuration_and_the_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, filter_cache_in: Path
) -> None:
    arch = native()
    keys = {filter_cache.key(FilterConfig(trap_reads=t), arch) for t in (False, True)}
    assert len(keys) == 2 and None not in keys
    copies = []
    for source in map(Path, filter_cache.SOURCES):
        copy = tmp_path / source.name
        copy.write_bytes(source.read_bytes())
        copies.append(copy)
    monkeypatch.setattr(filter_cache, "SOURCES", tuple(map(str, copies)))
    same = filter_cache.key(FilterConfig(), arch)
    assert same in keys
    copies[1].write_bytes(copies[1].read_bytes() + b"\n# an edit of the table\n")
    assert filter_cache.key(FilterConfig(), arch) not in keys


def test_an_unwritable_cache_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # a file where the directory should be
    assert compile_filter(FilterConfig(), native()) == _compile(FilterConfig(), native())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _own(umask: int, **changes: object) -> Credentials:
    """This thread's credentials, with another umask and ``changes``."""
    own = parse_credentials(Path("/proc/thread-self/status").read_bytes())
    return dataclasses.replace(own, umask=umask, **changes)  # type: ignore[arg-type]


def test_acting_as_sets_the_umask_only_for_the_request() -> None:
    def body() -> tuple[int, int, int, int]:
        manager = _umask()
        with creds.acting_as(_own(0o077)):
            inside = _umask()
        after = _umask()
        with creds.acting_as(_own(manager)):
            same = _umask()
        return manager, inside, after, same

    manager, inside, after, same = in_a_thread(body)
    assert (inside, after, same) == (0o077, manager, manager)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching fsuid to another user needs root")
def test_credentials_kept_as_needing_no_switch_never_stand_for_others() -> None:
    """The caller that needed no switch is taken again without one; any other caller,
    before or after it, is still switched to and back."""
    with tempfile.TemporaryDirectory(dir="/tmp") as directory:  # /tmp: searchable by uid 1234
        where = Path(directory)
        where.chmod(0o777)

        def made_as(caller: Credentials, name: str) -> int:
            with creds.acting_as(caller):
                (where / name).touch()
            return (where / name).stat().st_uid

        def body() -> list[int]:
            own, other = _own(_umask()), _own(_umask(), uid=1234, gid=1234, groups=(1234,))
            return [made_as(caller, f"f{n}") for n, caller in enumerate([own, own, other, own, other])]

        owners = in_a_thread(body)
    me = os.geteuid()
    assert owners == [me, me, 1234, me, 1234]


@pytest.mark.skipif(os.geteuid() != 0, reason="switching fsuid to another user needs root")
def test_a_failed_switch_leaves_the_worker_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    switch = files.set_thread_fsuid

    def refuse(uid: int) -> int:  # the caller's fsuid only: going back always works
        if uid == 1234:
            raise PermissionError(errno.EPERM, "refused")
        return switch(uid)

    monkeypatch.setattr(files, "set_thread_fsuid", refuse)

    def body() -> tuple[tuple[int, ...], int, tuple[int, ...], int]:
        groups, manager_umask = tuple(os.getgroups()), _umask()
        caller = _own(0o077, uid=1234, gid=1234, groups=(1234,))
        with pytest.raises(PermissionError), creds.acting_as(caller):
            pass
        return groups, manager_umask, tuple(os.getgroups()), _umask()

    groups, umask, groups_after, umask_after = in_a_thread(body)
    assert (groups_after, umask_after) == (groups, umask)


def test_resolve_helpers_close_their_fds_on_errors(tmp_path: Path) -> None:
    from hvfs import api

    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    (tmp_path / "d").mkdir()
    try:
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(RuntimeError), fd_closing(os.open(tmp_path, os.O_PATH)):
            raise RuntimeError()
        with pytest.raises(RuntimeError), parent(root, api.VmPath("/", "/d/x")) as (directory, last):
            assert last == "x" and os.path.samestat(os.fstat(directory), (tmp_path / "d").stat())
            raise RuntimeError()
        assert set(os.listdir("/proc/self/fd")) == before
    finally:
        os.close(root)
