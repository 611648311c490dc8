"""What the probe records and the small file helpers cases use: the Json type of case
values and records, normalized stat results, errno names, after-the-fact observations,
and reading, writing and listing files."""

import errno
import os
import stat
from collections.abc import Callable
from typing import Any

# A JSON-able value: what a case returns and what the records hold.
Json = Any


# -- normalization ----------------------------------------------------------------------

FILE_TYPES = (
    (stat.S_ISREG, "reg"),
    (stat.S_ISDIR, "dir"),
    (stat.S_ISLNK, "lnk"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "sock"),
    (stat.S_ISCHR, "chr"),
    (stat.S_ISBLK, "blk"),
)


def file_type(mode: int) -> str:
    return next((name for test, name in FILE_TYPES if test(mode)), f"unknown-{stat.S_IFMT(mode):o}")


def relative_id(value: int, own: int) -> Json:
    """An owner as seen from the running user, so root and user runs are each stable."""
    if value == own:
        return "self"
    return "root" if value == 0 else value


def normalize(st: os.stat_result) -> dict[str, Json]:
    kind = file_type(st.st_mode)
    result: dict[str, Json] = {
        "type": kind,
        "mode": f"{stat.S_IMODE(st.st_mode):04o}",
        "nlink": st.st_nlink,
        "uid": relative_id(st.st_uid, os.getuid()),
        "gid": relative_id(st.st_gid, os.getgid()),
    }
    if kind != "dir":
        result["size"] = st.st_size
    if kind in ("chr", "blk"):
        result["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    return result


def describe(path: str, *, follow: bool = False) -> dict[str, Json]:
    return normalize(os.stat(path, follow_symlinks=follow))


def errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def observe(action: Callable[[], Json]) -> Json:
    """The value of an after-the-fact observation, or the errno name it failed with."""
    try:
        return action()
    except OSError as error:
        return errno_name(error.errno) if error.errno is not None else repr(error)


# -- small file helpers -----------------------------------------------------------------


def write(path: str, data: str = "", mode: int = 0o644) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)
    return path


def read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_fd(fd)
    finally:
        os.close(fd)


def read_fd(fd: int) -> str:
    return read_all(fd).decode(errors="replace")


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def listing(path: str = ".") -> list[str]:
    return sorted(os.listdir(path))


def times(path: str, *, follow: bool = True) -> list[int]:
    st = os.stat(path, follow_symlinks=follow)
    return [st.st_atime_ns, st.st_mtime_ns]


def user_xattrs(names: list[str]) -> list[str]:
    """Only the namespaces cases set: security.* and system.* vary with the host's LSM and ACLs."""
    return sorted(name for name in names if name.startswith(("user.", "trusted.")))


def install_program(name: str, source: str = "/bin/true", mode: int = 0o755) -> str:
    """A private copy of an ELF program, so that exec cases run a file on the mount under test."""
    with open(source, "rb") as original:
        content = original.read()
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, content)
    finally:
        os.close(fd)
    return name
