"""files.open_stat, a served write-open's openat2, fstat and F_SETFL in one call, and files.openat2: the C
call (hvfs/_native/open_stat.h) and the Python one give the same files and the same errors."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvfs import _native
from hvfs._sys import files
from hvfs._sys.abi import RESOLVE_BENEATH, RESOLVE_IN_ROOT, RESOLVE_NO_SYMLINKS
from tests.conftest import require

SCOPED = RESOLVE_IN_ROOT


@pytest.fixture(params=["native", "python"])
def path_taken(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "native":
        require(_native.hotpath is not None, "the native hot path is not built (scripts/setup)")
    else:
        monkeypatch.setattr(files, "_native", None)
    return str(request.param)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "file").write_text("content\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to("file")
    os.mkfifo(tmp_path / "fifo")
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    yield fd
    os.close(fd)


def _status(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETFL)


def test_a_regular_file_gets_its_status_flags_back(path_taken: str, root: int) -> None:
    fd, mode = files.open_stat(root, "/file", os.O_WRONLY | os.O_NONBLOCK, 0, SCOPED, os.O_APPEND)
    try:
        assert stat.S_ISREG(mode)
        assert _status(fd) & (os.O_NONBLOCK | os.O_APPEND) == os.O_APPEND
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert os.fstat(fd).st_ino == os.stat("file", dir_fd=root).st_ino
    finally:
        os.close(fd)


def test_no_status_leaves_the_flags_as_opened(path_taken: str, root: int) -> None:
    fd, mode = files.open_stat(root, "/file", os.O_WRONLY | os.O_NONBLOCK, 0, SCOPED)
    try:
        assert stat.S_ISREG(mode)
        assert _status(fd) & os.O_NONBLOCK
    finally:
        os.close(fd)


def test_a_fifo_with_a_reader_gets_them_too_and_a_directory_does_not(path_taken: str, root: int) -> None:
    reader = os.open("fifo", os.O_RDONLY | os.O_NONBLOCK, dir_fd=root)
    try:
        fd, mode = files.open_stat(root, "/fifo", os.O_WRONLY | os.O_NONBLOCK, 0, SCOPED, 0)
        assert stat.S_ISFIFO(mode)
        assert not _status(fd) & os.O_NONBLOCK
        os.close(fd)
    finally:
        os.close(reader)
    fd, mode = files.open_stat(root, "/dir", os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK, 0, SCOPED, 0)
    try:
        assert stat.S_ISDIR(mode)
        assert _status(fd) & os.O_NONBLOCK  # only what a served write-open hands out is set
    finally:
        os.close(fd)


def test_a_create_takes_its_mode_and_stays_in_the_root(path_taken: str, root: int) -> None:
    fd, mode = files.open_stat(root, "/../../new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, SCOPED)
    os.close(fd)
    assert stat.S_IMODE(mode) == 0o600 & ~_umask()
    assert stat.S_ISREG(os.stat("new", dir_fd=root).st_mode)  # ".." above the root is the root


def test_errors_are_the_kernels(path_taken: str, root: int) -> None:
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        files.open_stat(root, "/missing", os.O_WRONLY, 0, SCOPED, 0)
    with pytest.raises(OSError) as raised:
        files.open_stat(root, "/link", os.O_WRONLY, 0, SCOPED | RESOLVE_NO_SYMLINKS, 0)
    assert raised.value.errno == errno.ELOOP
    with pytest.raises(IsADirectoryError):
        files.open_stat(root, "/dir", os.O_WRONLY, 0, SCOPED, 0)
    assert len(os.listdir("/proc/self/fd")) == before  # nothing left open by a failure


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_openat2_opens_the_same_file_close_on_exec(path_taken: str, root: int) -> None:
    fd = files.openat2(root, "/../file", os.O_WRONLY, 0, SCOPED)  # ".." above the root is the root
    try:
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert _status(fd) & os.O_ACCMODE == os.O_WRONLY
        assert os.fstat(fd).st_ino == os.stat("file", dir_fd=root).st_ino
    finally:
        os.close(fd)
    fd = files.openat2(root, "new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640, SCOPED)
    os.close(fd)
    assert stat.S_IMODE(os.stat("new", dir_fd=root).st_mode) == 0o640 & ~_umask()


def test_openat2_errors_are_the_kernels(path_taken: str, root: int) -> None:
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        files.openat2(root, "/missing", os.O_RDONLY, 0, SCOPED)
    with pytest.raises(OSError) as raised:
        files.openat2(root, "link", os.O_RDONLY, 0, SCOPED | RESOLVE_NO_SYMLINKS)
    assert raised.value.errno == errno.ELOOP
    with pytest.raises(OSError) as raised:
        files.openat2(root, "../file", os.O_RDONLY, 0, RESOLVE_BENEATH)
    assert raised.value.errno == errno.EXDEV
    with pytest.raises(OSError) as raised:  # openat2 checks its arguments before any lookup
        files.openat2(-1, "", os.O_RDONLY, 0o644, 0)
    assert raised.value.errno == errno.EINVAL
    with pytest.raises(FileExistsError):
        files.openat2(root, "file", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, SCOPED)
    assert len(os.listdir("/proc/self/fd")) == before


def test_openat2_in_c_refuses_a_path_with_a_nul() -> None:
    """The ctypes call would open what is before the NUL; a VM's path is read up to its
    NUL, so one inside is a bug of the caller, refused."""
    require(_native.hotpath is not None, "the native hot path is not built (scripts/setup)")
    with files.closing(os.open("/", os.O_PATH | os.O_CLOEXEC)) as top, pytest.raises(ValueError):
        _native.hotpath.openat2(top, b"etc\0passwd", os.O_RDONLY, 0, 0)
