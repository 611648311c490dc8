"""Differential conformance probe: run file operations and print what Linux answered.

Usage: python3 probe.py WORKDIR [--ro RO_DIR] [--other OTHER_DIR] [--case NAME ...]

WORKDIR is an empty, writable directory on the file system under test. RO_DIR, if given,
is a directory on a read-only mount holding a regular file `file` and an empty directory
`dir` (the EROFS cases); OTHER_DIR, if given, is a writable directory on another mount
(the EXDEV cases). Cases that need a missing directory, or root, record "skipped".

The same probe runs natively, where Linux is the oracle, and inside an HVFS VM on a
served mount; the two outputs must be identical. So the output is one JSON object, keys
sorted, mapping each case name ("group.what", e.g. "open.creat_excl_existing") to a
record with these keys:

- "result": "ok", the errno name of the OSError the case ended with (e.g. "ENOENT"),
  "skipped", or "EXCEPTION" (an unexpected exception; "value" then holds its repr).
- "value" (optional): what the operation returned or observed, as JSON: bytes read,
  sorted directory listings, exit statuses, explicitly set times in ns. Never an fd,
  inode, device or pid number, nor a time the case did not set itself.
- "stat" (optional): the normalized status of the object the case made or changed,
  taken after the operation whether or not it failed: type (reg, dir, lnk, fifo, sock,
  chr, blk), mode (permission bits in octal, with setuid, setgid and sticky), size (not
  for directories), nlink, rdev (devices only), and uid and gid relative to the running
  user: "self", "root", or the number. An errno name if the object cannot be stat'ed.
- "after" (optional): other state observed after the operation, failed or not.

Each case runs in its own subdirectory WORKDIR/<case name>, which is its working
directory, with umask 022, so cases are independent and name only relative paths.
getcwd() results are reported with the WORKDIR prefix replaced by "$W".

Only the standard library and ctypes are used: the probe runs under a VM's plain
/usr/bin/python3. Raw syscall numbers are kept in one per-architecture table.
"""

import argparse
import ctypes
import errno
import fcntl
import json
import mmap
import os
import platform
import signal
import socket
import stat
import struct
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from typing import Any

# A JSON-able value: what a case returns and what the records hold.
Json = Any

# -- the system interface ---------------------------------------------------------------

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
for _ssize_function in ("readlink", "readlinkat", "getxattr", "listxattr"):
    getattr(libc, _ssize_function).restype = ctypes.c_ssize_t

# Syscalls that glibc 2.36 has no wrapper for, or whose wrapper emulates flags the probe
# wants the kernel itself to judge.
SYSCALL_NUMBERS = {
    "x86_64": {"execveat": 322, "renameat2": 316, "statx": 332, "openat2": 437, "faccessat2": 439, "fchmodat2": 452},
    "aarch64": {"execveat": 281, "renameat2": 276, "statx": 291, "openat2": 437, "faccessat2": 439, "fchmodat2": 452},
}

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_EACCESS = 0x200
AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000
RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4
RESOLVE_NO_XDEV, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS = 0x01, 0x02, 0x04
RESOLVE_BENEATH, RESOLVE_IN_ROOT, RESOLVE_CACHED = 0x08, 0x10, 0x20
OPEN_HOW_SIZE = 24  # struct open_how, version 0: flags, mode, resolve (three u64)
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x01, 0x02, 0x10
STATX_BASIC_STATS, STATX_RESERVED = 0x7FF, 0x80000000
STATX_SIZE = 256
ST_RDONLY = 1
F_OFD_GETLK, F_OFD_SETLK = 36, 37
FLOCK_FORMAT = "hhqqi4x"  # struct flock: l_type, l_whence, l_start, l_len, l_pid, padding
IN_NONBLOCK = os.O_NONBLOCK
INOTIFY_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name
INOTIFY_MASKS = {
    0x1: "ACCESS",
    0x2: "MODIFY",
    0x4: "ATTRIB",
    0x8: "CLOSE_WRITE",
    0x10: "CLOSE_NOWRITE",
    0x20: "OPEN",
    0x40: "MOVED_FROM",
    0x80: "MOVED_TO",
    0x100: "CREATE",
    0x200: "DELETE",
    0x400: "DELETE_SELF",
    0x800: "MOVE_SELF",
    0x8000: "IGNORED",
    0x40000000: "ISDIR",
}
IN_ONLYDIR, IN_DONT_FOLLOW = 0x1000000, 0x2000000
OTHER_UID = OTHER_GID = 1000  # the second user of the root-only permission cases
SUPPLEMENTARY_GID = 4242
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
CASE_TIMEOUT_SECONDS = 20


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class Statfs(ctypes.Structure):
    """glibc's struct statfs on 64-bit Linux (x86_64 and aarch64 share it)."""

    _fields_ = [
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_ulong),
        ("f_bfree", ctypes.c_ulong),
        ("f_bavail", ctypes.c_ulong),
        ("f_files", ctypes.c_ulong),
        ("f_ffree", ctypes.c_ulong),
        ("f_fsid", ctypes.c_int * 2),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
    ]


def check(result: int) -> int:
    """Turn a libc-style failure (-1 and errno) into OSError, as os.* functions do."""
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def syscall(name: str, *args: Any) -> int:
    """A raw syscall by name; ints go as longs so that variadic syscall() reads them whole."""
    number = SYSCALL_NUMBERS[platform.machine()][name]
    converted = [ctypes.c_long(arg) if isinstance(arg, int) else arg for arg in args]
    return check(libc.syscall(ctypes.c_long(number), *converted))


def b(path: str) -> bytes:
    return os.fsencode(path)


def openat2(path: str, flags: int, mode: int = 0, resolve: int = 0, *, dirfd: int = AT_FDCWD, size: int = 0) -> int:
    """openat2(2) with a struct open_how; a size beyond version 0 passes zero or 0xff tail bytes."""
    how = struct.pack("QQQ", flags, mode, resolve)
    size = size or len(how)
    buffer = ctypes.create_string_buffer(how, max(size, len(how)))
    return syscall("openat2", dirfd, b(path), buffer, size)


def renameat2(old: str, new: str, flags: int, *, old_dirfd: int = AT_FDCWD, new_dirfd: int = AT_FDCWD) -> None:
    syscall("renameat2", old_dirfd, b(old), new_dirfd, b(new), flags)


def faccessat2(path: str, mode: int, flags: int, *, dirfd: int = AT_FDCWD) -> None:
    syscall("faccessat2", dirfd, b(path), mode, flags)


def fchmodat2(path: str, mode: int, flags: int, *, dirfd: int = AT_FDCWD) -> None:
    syscall("fchmodat2", dirfd, b(path), mode, flags)


def statx(path: str, flags: int = 0, mask: int = STATX_BASIC_STATS, *, dirfd: int = AT_FDCWD) -> dict[str, Json]:
    """statx(2), reduced to what is stable between runs: type, mode, size, nlink, mtime."""
    buffer = ctypes.create_string_buffer(STATX_SIZE)
    syscall("statx", dirfd, b(path), flags, mask, buffer)
    got_mask, _blksize, _attrs, nlink, _uid, _gid, mode = struct.unpack_from("IIQIIIH", buffer.raw, 0)
    (size,) = struct.unpack_from("Q", buffer.raw, 40)
    mtime_sec, mtime_nsec = struct.unpack_from("qI", buffer.raw, 112)
    return {
        "basic": got_mask & STATX_BASIC_STATS == STATX_BASIC_STATS,
        "type": file_type(mode),
        "mode": f"{stat.S_IMODE(mode):04o}",
        "size": size,
        "nlink": nlink,
        "mtime_ns": mtime_sec * 1_000_000_000 + mtime_nsec,
    }


def execveat(dirfd: int, path: str, argv: list[str], flags: int) -> None:
    """execveat(2); returns only by raising."""
    args = (ctypes.c_char_p * (len(argv) + 1))(*[b(arg) for arg in argv], None)
    env = [b(f"{key}={value}") for key, value in CHILD_ENV.items()]
    envp = (ctypes.c_char_p * (len(env) + 1))(*env, None)
    syscall("execveat", dirfd, b(path), args, envp, flags)


def utimensat(path: str | None, times: tuple[tuple[int, int], tuple[int, int]] | None, flags: int = 0) -> None:
    """utimensat(2); times are (sec, nsec) pairs or None for "now"."""
    spec = None if times is None else (Timespec * 2)(Timespec(*times[0]), Timespec(*times[1]))
    check(libc.utimensat(AT_FDCWD, None if path is None else b(path), spec, flags))


def statfs_summary(buffer: Statfs) -> dict[str, Json]:
    return {"f_type": hex(buffer.f_type), "rdonly": bool(buffer.f_flags & ST_RDONLY)}


def statfs(path: str) -> dict[str, Json]:
    buffer = Statfs()
    check(libc.statfs(b(path), ctypes.byref(buffer)))
    return statfs_summary(buffer)


def fstatfs(fd: int) -> dict[str, Json]:
    buffer = Statfs()
    check(libc.fstatfs(fd, ctypes.byref(buffer)))
    return statfs_summary(buffer)


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    check(libc.fallocate(fd, mode, ctypes.c_long(offset), ctypes.c_long(length)))


def flock_struct(lock_type: int, start: int = 0, length: int = 0, pid: int = 0) -> bytes:
    return struct.pack(FLOCK_FORMAT, lock_type, os.SEEK_SET, start, length, pid)


def lock(fd: int, command: int, lock_type: int, pid: int = 0) -> dict[str, Json]:
    """fcntl record lock on the whole file; returns the lock the kernel wrote back."""
    reply = fcntl.fcntl(fd, command, flock_struct(lock_type, pid=pid))
    got_type, _whence, start, length, got_pid = struct.unpack(FLOCK_FORMAT, reply)
    return {"type": got_type, "start": start, "len": length, "pid": got_pid}


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


def kill(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def reap(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def in_child(action: Callable[[], Json]) -> Json:
    """Run action in a forked child; return its value, or raise its errno in the parent.

    Used where the answer depends on the process: POSIX locks conflict only between
    processes, and the permission cases drop to another uid, which cannot be undone.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe and never return into the runner
        try:
            os.close(read_end)
            try:
                reply: dict[str, Json] = {"value": action()}
            except Skipped:
                reply = {"skipped": True}
            except OSError as error:
                reply = {"errno": error.errno}
            except BaseException as error:
                reply = {"exception": repr(error)}
            os.write(write_end, json.dumps(reply).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        data = read_all(read_end)
    except BaseException:
        kill(pid)  # the case timed out: do not wait for a child that may never end
        raise
    finally:
        os.close(read_end)
        reap(pid)
    reply = json.loads(data or b'{"exception": "the child died without a reply"}')
    if "skipped" in reply:
        raise Skipped
    if "errno" in reply:
        raise OSError(reply["errno"], os.strerror(reply["errno"]))
    if "exception" in reply:
        raise RuntimeError(reply["exception"])
    return reply["value"]


def run_program(exec_call: Callable[[], object]) -> dict[str, Json]:
    """Fork, exec with exec_call in the child, and return the exit status and stdout.

    A failed exec raises its errno here: the child sends it back through a close-on-exec
    pipe, which a successful exec closes without a word.
    """
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        message = "exec returned"
        try:
            os.dup2(out_write, 1)
            exec_call()
        except OSError as error:
            message = str(error.errno)
        except BaseException as error:
            message = repr(error)
        try:
            os.write(err_write, message.encode())
        finally:
            os._exit(127)
    os.close(out_write)
    os.close(err_write)
    try:
        failure = read_all(err_read).decode()
        output = read_all(out_read).decode(errors="replace")
    except BaseException:
        kill(pid)
        raise
    finally:
        os.close(out_read)
        os.close(err_read)
        status = reap(pid)
    if failure.isdigit():
        raise OSError(int(failure), os.strerror(int(failure)))
    if failure:
        raise RuntimeError(failure)
    return {"status": status, "stdout": output}


def execv(path: str, argv: list[str]) -> Callable[[], object]:
    return lambda: os.execve(path, argv, CHILD_ENV)


# -- cases and the runner ---------------------------------------------------------------


class Skipped(Exception):
    """The case needs something this run lacks (root, --ro, --other)."""


class CaseTimeout(Exception):
    """A case hung; raised from SIGALRM so that one stuck call cannot stall the whole probe."""


class Case:
    """What a case function gets: its directory, the run's options, and cleanup hooks."""

    def __init__(self, name: str, workdir: str, ro_dir: str | None, other_dir: str | None) -> None:
        self.name = name
        self.workdir = workdir
        self.dir = os.path.join(workdir, name)
        self._ro_dir = ro_dir
        self._other_dir = other_dir
        self._fds: list[int] = []
        self._stat: tuple[str, bool] | None = None
        self._after: Callable[[], Json] | None = None

    def open(self, path: str, flags: int, mode: int = 0o644, *, dir_fd: int | None = None) -> int:
        """os.open whose fd is closed when the case ends."""
        return self.keep(os.open(path, flags, mode, dir_fd=dir_fd))

    def keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def closed_fd(self) -> int:
        """An fd number that is surely not open: for EBADF cases."""
        fd = os.open("/dev/null", os.O_RDONLY)
        os.close(fd)
        return fd

    def stat_after(self, path: str, *, follow: bool = False) -> None:
        """Record the status of path once the case has run, even if it then fails."""
        self._stat = (path, follow)

    def after(self, action: Callable[[], Json]) -> None:
        """Record action's result once the case has run, even if it then fails."""
        self._after = action

    def ro(self, name: str) -> str:
        if self._ro_dir is None:
            raise Skipped
        return os.path.join(self._ro_dir, name)

    def other(self) -> str:
        """A fresh directory for this case on the other mount."""
        if self._other_dir is None:
            raise Skipped
        path = os.path.join(self._other_dir, self.name)
        os.mkdir(path)
        return path

    def need_root(self) -> None:
        if os.geteuid() != 0:
            raise Skipped

    def cwd(self) -> str:
        """getcwd() with the WORKDIR prefix replaced, so it does not depend on where WORKDIR is."""
        cwd = os.getcwd()
        inside = cwd == self.workdir or cwd.startswith(self.workdir + "/")
        return "$W" + cwd[len(self.workdir) :] if inside else cwd

    def finish(self, record: dict[str, Json]) -> None:
        """Take the after-the-fact observations into record and release what the case held."""
        try:
            os.chdir(self.dir)
            if self._stat is not None:
                path, follow = self._stat
                record["stat"] = observe(lambda: describe(path, follow=follow))
            if self._after is not None:
                record["after"] = observe(self._after)
        finally:
            for fd in self._fds:
                with suppress(OSError):  # the case may have closed it itself
                    os.close(fd)


CaseFunction = Callable[[Case], Json]
CASES: dict[str, CaseFunction] = {}


def case(function: CaseFunction) -> CaseFunction:
    """Register a case; its name is the function's, first underscore made a dot (open_x: open.x)."""
    name = function.__name__.replace("_", ".", 1)
    CASES[name] = function
    return function


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def expire(_signal: int, _frame: object) -> None:
        raise CaseTimeout(f"no answer in {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_case(name: str, function: CaseFunction, options: argparse.Namespace) -> dict[str, Json]:
    """Run one case in a fresh directory and return its record."""
    probe = Case(name, options.workdir, options.ro, options.other)
    os.mkdir(probe.dir)
    os.chdir(probe.dir)
    umask = os.umask(0o022)
    record: dict[str, Json] = {}
    try:
        with time_limit(CASE_TIMEOUT_SECONDS):
            try:
                value = function(probe)
                record["result"] = "ok"
                if value is not None:
                    record["value"] = value
            except Skipped:
                return {"result": "skipped"}
            except OSError as error:
                if error.errno is None:
                    raise
                record["result"] = errno_name(error.errno)
            finally:
                probe.finish(record)
    except Exception as error:
        return {"result": "EXCEPTION", "value": repr(error)}
    finally:
        os.umask(umask)
        os.chdir(options.workdir)
    return record


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", help="an empty, writable directory on the file system under test")
    parser.add_argument("--ro", help="a directory on a read-only mount with a file `file` and a directory `dir`")
    parser.add_argument("--other", help="a writable directory on another mount")
    parser.add_argument("--case", action="append", help="run only this case (repeatable)")
    options = parser.parse_args(argv)
    # getcwd() answers real paths: compare them with a real WORKDIR
    options.workdir = os.path.realpath(options.workdir)
    if not os.path.isdir(options.workdir):
        parser.error(f"{options.workdir} is not a directory")
    if os.listdir(options.workdir):
        parser.error(f"{options.workdir} is not empty")
    return options


def main(argv: list[str]) -> int:
    options = parse_arguments(argv)
    unknown = set(options.case or ()) - CASES.keys()
    if unknown:
        print(f"unknown cases: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    names = options.case or list(CASES)
    results = {name: run_case(name, CASES[name], options) for name in names}
    print(json.dumps(results, indent=1, sort_keys=True))
    return 0


# == the cases ===========================================================================
# Each case leaves its result to the runner: returning is "ok", an OSError is its errno.
# Expected answers are noted where they are not obvious; the probe records what happens.

# -- open, creat ------------------------------------------------------------------------
RDONLY, WRONLY, RDWR, CREAT = os.O_RDONLY, os.O_WRONLY, os.O_RDWR, os.O_CREAT


@case
def open_rdonly_missing(c: Case) -> Json:
    c.open("missing", RDONLY)


@case
def open_rdonly_existing(c: Case) -> Json:
    write("f", "content")
    return read_fd(c.open("f", RDONLY))


@case
def open_creat_new(c: Case) -> Json:
    c.stat_after("f")
    c.open("f", WRONLY | CREAT, 0o666)
    return listing()


@case
def open_creat_existing_keeps_content(c: Case) -> Json:
    write("f", "content", 0o600)
    c.stat_after("f")
    c.open("f", WRONLY | CREAT, 0o666)
    return read("f")


@case
def open_creat_excl_existing(c: Case) -> Json:
    write("f", "content")
    c.stat_after("f")
    c.open("f", WRONLY | CREAT | os.O_EXCL)


@case
def open_creat_excl_new(c: Case) -> Json:
    c.stat_after("f")
    c.open("f", WRONLY | CREAT | os.O_EXCL, 0o640)


@case
def open_excl_without_creat(c: Case) -> Json:
    # O_EXCL alone is ignored for regular files
    write("f", "content")
    return read_fd(c.open("f", RDONLY | os.O_EXCL))


@case
def open_creat_excl_dangling_symlink(c: Case) -> Json:
    os.symlink("target", "link")
    c.after(listing)
    c.open("link", WRONLY | CREAT | os.O_EXCL)


@case
def open_creat_dangling_symlink(c: Case) -> Json:
    # O_CREAT follows a dangling symlink and creates its target
    os.symlink("target", "link")
    c.stat_after("target")
    c.open("link", WRONLY | CREAT, 0o600)
    return listing()


@case
def open_creat_dangling_symlink_nofollow(c: Case) -> Json:
    os.symlink("target", "link")
    c.after(listing)
    c.open("link", WRONLY | CREAT | os.O_NOFOLLOW)


@case
def open_creat_dangling_symlink_in_missing_dir(c: Case) -> Json:
    os.symlink("missing/target", "link")
    c.open("link", WRONLY | CREAT)


@case
def open_creat_through_file(c: Case) -> Json:
    write("file")
    c.open("file/x", WRONLY | CREAT)


@case
def open_rdonly_through_file(c: Case) -> Json:
    write("file")
    c.open("file/x", RDONLY)


@case
def open_creat_missing_parent(c: Case) -> Json:
    c.open("missing/f", WRONLY | CREAT)


@case
def open_trunc_existing(c: Case) -> Json:
    write("f", "content")
    c.stat_after("f")
    c.open("f", WRONLY | os.O_TRUNC)


@case
def open_trunc_rdonly(c: Case) -> Json:
    # Linux truncates even with O_RDONLY (the access check asks for write permission)
    write("f", "content")
    c.stat_after("f")
    c.open("f", RDONLY | os.O_TRUNC)


@case
def open_trunc_readonly_file(c: Case) -> Json:
    write("f", "content", 0o444)
    c.stat_after("f")
    c.open("f", RDONLY | os.O_TRUNC)


@case
def open_append(c: Case) -> Json:
    write("f", "ab")
    fd = c.open("f", WRONLY | os.O_APPEND)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, b"cd")  # O_APPEND moves every write to the end
    return read("f")


@case
def open_rdwr_write_read(c: Case) -> Json:
    fd = c.open("f", RDWR | CREAT)
    os.write(fd, b"hello")
    return os.pread(fd, 10, 0).decode()


@case
def open_wronly_read(c: Case) -> Json:
    write("f", "content")
    os.read(c.open("f", WRONLY), 10)


@case
def open_directory_on_file(c: Case) -> Json:
    write("f")
    c.open("f", RDONLY | os.O_DIRECTORY)


@case
def open_directory_on_dir(c: Case) -> Json:
    os.mkdir("d")
    write("d/inner")
    return listing(f"/proc/self/fd/{c.open('d', RDONLY | os.O_DIRECTORY)}")


@case
def open_directory_through_symlink(c: Case) -> Json:
    os.mkdir("d")
    os.symlink("d", "link")
    c.open("link", RDONLY | os.O_DIRECTORY)


@case
def open_wronly_dir(c: Case) -> Json:
    os.mkdir("d")
    c.open("d", WRONLY)


@case
def open_rdwr_dir(c: Case) -> Json:
    os.mkdir("d")
    c.open("d", RDWR)


@case
def open_creat_on_dir(c: Case) -> Json:
    os.mkdir("d")
    c.open("d", RDONLY | CREAT)


@case
def open_creat_directory(c: Case) -> Json:
    # EINVAL since Linux 6.4; before that it created a regular file
    c.after(listing)
    c.open("new", RDONLY | CREAT | os.O_DIRECTORY)


@case
def open_nofollow_symlink(c: Case) -> Json:
    write("f")
    os.symlink("f", "link")
    c.open("link", RDONLY | os.O_NOFOLLOW)


@case
def open_nofollow_regular(c: Case) -> Json:
    write("f", "content")
    return read_fd(c.open("f", RDONLY | os.O_NOFOLLOW))


@case
def open_nofollow_intermediate_symlink(c: Case) -> Json:
    # O_NOFOLLOW looks only at the last component
    os.mkdir("d")
    write("d/f", "inner")
    os.symlink("d", "link")
    return read_fd(c.open("link/f", RDONLY | os.O_NOFOLLOW))


@case
def open_path_nofollow_symlink(c: Case) -> Json:
    write("f")
    os.symlink("f", "link")
    return normalize(os.fstat(c.open("link", os.O_PATH | os.O_NOFOLLOW)))


@case
def open_path_read(c: Case) -> Json:
    write("f", "content")
    os.read(c.open("f", os.O_PATH), 10)


@case
def open_path_write(c: Case) -> Json:
    write("f", "content")
    os.write(c.open("f", os.O_PATH), b"x")


@case
def open_path_fstat(c: Case) -> Json:
    write("f", "content", 0o600)
    return normalize(os.fstat(c.open("f", os.O_PATH)))


@case
def open_path_fchmod(c: Case) -> Json:
    write("f")
    c.stat_after("f")
    os.fchmod(c.open("f", os.O_PATH), 0o600)


@case
def open_path_as_dirfd(c: Case) -> Json:
    os.mkdir("d")
    write("d/f", "inner")
    return read_fd(c.open("f", RDONLY, dir_fd=c.open("d", os.O_PATH)))


@case
def open_path_missing(c: Case) -> Json:
    c.open("missing", os.O_PATH)


@case
def open_path_ignores_write_flags(c: Case) -> Json:
    # with O_PATH every flag but O_DIRECTORY, O_NOFOLLOW and O_CLOEXEC is ignored: nothing is created
    c.after(listing)
    c.open("new", os.O_PATH | CREAT | os.O_TRUNC)


@case
def open_symlink_loop(c: Case) -> Json:
    os.symlink("loop", "loop")
    c.open("loop", RDONLY)


@case
def open_name_too_long(c: Case) -> Json:
    c.open("n" * 256, WRONLY | CREAT)


@case
def open_name_255(c: Case) -> Json:
    c.open("n" * 255, WRONLY | CREAT)
    return [len(name) for name in listing()]


@case
def open_path_too_long(c: Case) -> Json:
    c.open("./" * 2100 + "f", WRONLY | CREAT)


@case
def open_trailing_slash_file(c: Case) -> Json:
    write("f")
    c.open("f/", RDONLY)


@case
def open_creat_trailing_slash(c: Case) -> Json:
    c.after(listing)
    c.open("new/", WRONLY | CREAT)


@case
def open_empty_path(c: Case) -> Json:
    c.open("", RDONLY)


@case
def open_creat_umask(c: Case) -> Json:
    os.umask(0o027)
    c.stat_after("f")
    c.open("f", WRONLY | CREAT, 0o777)


@case
def open_creat_setuid_mode(c: Case) -> Json:
    c.stat_after("f")
    c.open("f", WRONLY | CREAT, 0o6755)


@case
def open_bad_dirfd(c: Case) -> Json:
    c.open("f", WRONLY | CREAT, dir_fd=c.closed_fd())


@case
def open_dirfd_not_dir(c: Case) -> Json:
    write("f")
    c.open("x", WRONLY | CREAT, dir_fd=c.open("f", RDONLY))


@case
def open_write_readonly_file(c: Case) -> Json:
    write("f", "content", 0o444)
    c.open("f", WRONLY)


@case
def open_read_unreadable_file(c: Case) -> Json:
    write("f", "content", 0o000)
    return read_fd(c.open("f", RDONLY))


@case
def open_no_search_permission(c: Case) -> Json:
    os.mkdir("d")
    write("d/f", "inner")
    os.chmod("d", 0o600)
    return read_fd(c.open("d/f", RDONLY))


@case
def open_fifo_wronly_nonblock_no_reader(c: Case) -> Json:
    os.mkfifo("p")
    c.open("p", WRONLY | os.O_NONBLOCK)


@case
def open_fifo_rdonly_nonblock(c: Case) -> Json:
    os.mkfifo("p")
    c.open("p", RDONLY | os.O_NONBLOCK)


@case
def open_creat_libc_new(c: Case) -> Json:
    c.stat_after("f")
    c.keep(check(libc.creat(b"f", 0o640)))


@case
def open_creat_libc_existing_truncates(c: Case) -> Json:
    write("f", "content", 0o600)
    c.stat_after("f")
    c.keep(check(libc.creat(b"f", 0o644)))


@case
def open_creat_libc_is_write_only(c: Case) -> Json:
    os.read(c.keep(check(libc.creat(b"f", 0o644))), 10)


# -- *at calls: relative paths, AT_FDCWD and directory fds ------------------------------


@case
def at_openat_fdcwd(c: Case) -> Json:
    c.keep(check(libc.openat(AT_FDCWD, b"f", WRONLY | CREAT, 0o644)))
    return listing()


@case
def at_openat_dirfd(c: Case) -> Json:
    os.mkdir("d")
    c.open("f", WRONLY | CREAT, dir_fd=c.open("d", RDONLY | os.O_DIRECTORY))
    return listing("d")


@case
def at_openat_dirfd_dotdot(c: Case) -> Json:
    os.mkdir("d")
    c.open("../up", WRONLY | CREAT, dir_fd=c.open("d", RDONLY))
    return listing()


@case
def at_openat_absolute_ignores_dirfd(c: Case) -> Json:
    c.open(os.path.join(c.dir, "abs"), WRONLY | CREAT, dir_fd=c.closed_fd())
    return listing()


@case
def at_openat_dirfd_after_rename(c: Case) -> Json:
    # the dirfd names the directory, not its path: the file lands in the renamed directory
    os.mkdir("d")
    dirfd = c.open("d", RDONLY)
    os.rename("d", "e")
    c.open("f", WRONLY | CREAT, dir_fd=dirfd)
    return {"e": listing("e"), ".": listing()}


@case
def at_openat_dirfd_after_rmdir(c: Case) -> Json:
    os.mkdir("d")
    dirfd = c.open("d", RDONLY)
    os.rmdir("d")
    c.open("f", WRONLY | CREAT, dir_fd=dirfd)


@case
def at_mkdirat_dirfd(c: Case) -> Json:
    os.mkdir("d")
    os.mkdir("sub", dir_fd=c.open("d", RDONLY))
    return listing("d")


@case
def at_unlinkat_dirfd(c: Case) -> Json:
    os.mkdir("d")
    write("d/f")
    os.unlink("f", dir_fd=c.open("d", RDONLY))
    return listing("d")


@case
def at_fstatat_dirfd(c: Case) -> Json:
    os.mkdir("d")
    write("d/f", "12345")
    return normalize(os.stat("f", dir_fd=c.open("d", os.O_PATH)))


@case
def at_symlinkat_readlinkat_dirfd(c: Case) -> Json:
    os.mkdir("d")
    dirfd = c.open("d", RDONLY)
    os.symlink("target", "link", dir_fd=dirfd)
    return os.readlink("link", dir_fd=dirfd)


@case
def at_dirfd_is_file(c: Case) -> Json:
    write("f")
    os.mkdir("sub", dir_fd=c.open("f", RDONLY))


@case
def at_bad_dirfd(c: Case) -> Json:
    os.mkdir("sub", dir_fd=c.closed_fd())


# -- openat2 and its RESOLVE_* flags ------------------------------------------------------


@case
def openat2_plain(c: Case) -> Json:
    write("f", "content")
    return read_fd(c.keep(openat2("f", RDONLY)))


@case
def openat2_creat(c: Case) -> Json:
    c.stat_after("f")
    c.keep(openat2("f", WRONLY | CREAT, 0o640))


@case
def openat2_creat_excl_existing(c: Case) -> Json:
    write("f")
    c.keep(openat2("f", WRONLY | CREAT | os.O_EXCL, 0o640))


@case
def openat2_dirfd(c: Case) -> Json:
    os.mkdir("d")
    c.keep(openat2("f", WRONLY | CREAT, 0o600, dirfd=c.open("d", RDONLY)))
    return listing("d")


@case
def openat2_no_xdev_same_mount(c: Case) -> Json:
    os.mkdir("d")
    write("d/f", "inner")
    return read_fd(c.keep(openat2("d/f", RDONLY, resolve=RESOLVE_NO_XDEV)))


@case
def openat2_no_xdev_crossing(c: Case) -> Json:
    # /proc is a mount of its own both natively and in a VM
    root = c.open("/", os.O_PATH)
    c.keep(openat2("proc", os.O_PATH, resolve=RESOLVE_NO_XDEV, dirfd=root))


@case
def openat2_no_magiclinks_proc_fd(c: Case) -> Json:
    write("f", "content")
    fd = c.open("f", RDONLY)
    c.keep(openat2(f"/proc/self/fd/{fd}", RDONLY, resolve=RESOLVE_NO_MAGICLINKS))


@case
def openat2_magiclink_allowed(c: Case) -> Json:
    write("f", "content")
    fd = c.open("f", RDONLY)
    return read_fd(c.keep(openat2(f"/proc/self/fd/{fd}", RDONLY)))


@case
def openat2_no_magiclinks_symlink(c: Case) -> Json:
    write("f", "content")
    os.symlink("f", "link")
    return read_fd(c.keep(openat2("link", RDONLY, resolve=RESOLVE_NO_MAGICLINKS)))


@case
def openat2_no_symlinks_symlink(c: Case) -> Json:
    write("f", "content")
    os.symlink("f", "link")
    c.keep(openat2("link", RDONLY, resolve=RESOLVE_NO_SYMLINKS))


@case
def openat2_no_symlinks_intermediate(c: Case) -> Json:
    os.mkdir("d")
    write("d/f")
    os.symlink("d", "link")
    c.keep(openat2("link/f", RDONLY, resolve=RESOLVE_NO_SYMLINKS))


@case
def openat2_no_symlinks_plain(c: Case) -> Json:
    write("f", "content")
    return read_fd(c.keep(openat2("f", RDONLY, resolve=RESOLVE_NO_SYMLINKS)))


@case
def openat2_no_symlinks_path_nofollow(c: Case) -> Json:
    # a trailing symlink may still be opened itself with O_PATH | O_NOFOLLOW
    os.symlink("f", "link")
    fd = c.keep(openat2("link", os.O_PATH | os.O_NOFOLLOW, resolve=RESOLVE_NO_SYMLINKS))
    return normalize(os.fstat(fd))


@case
def openat2_no_symlinks_creat(c: Case) -> Json:
    os.symlink("target", "link")
    c.after(listing)
    c.keep(openat2("link", WRONLY | CREAT, 0o644, resolve=RESOLVE_NO_SYMLINKS))


@case
def openat2_beneath_inside(c: Case) -> Json:
    os.makedirs("d/sub")
    write("d/f", "inner")
    return read_fd(c.keep(openat2("sub/../f", RDONLY, resolve=RESOLVE_BENEATH, dirfd=c.open("d", RDONLY))))


@case
def openat2_beneath_dotdot(c: Case) -> Json:
    os.mkdir("d")
    write("f")
    c.keep(openat2("../f", RDONLY, resolve=RESOLVE_BENEATH, dirfd=c.open("d", RDONLY)))


@case
def openat2_beneath_absolute(c: Case) -> Json:
    os.mkdir("d")
    write("d/f")
    c.keep(openat2(os.path.join(c.dir, "d/f"), RDONLY, resolve=RESOLVE_BENEATH, dirfd=c.open("d", RDONLY)))


@case
def openat2_beneath_symlink_escape(c: Case) -> Json:
    os.mkdir("d")
    write("f")
    os.symlink("../f", "d/escape")
    c.keep(openat2("escape", RDONLY, resolve=RESOLVE_BENEATH, dirfd=c.open("d", RDONLY)))


@case
def openat2_beneath_absolute_symlink(c: Case) -> Json:
    os.mkdir("d")
    os.symlink("/etc/passwd", "d/abs")
    c.keep(openat2("abs", RDONLY, resolve=RESOLVE_BENEATH, dirfd=c.open("d", RDONLY)))


@case
def openat2_beneath_creat(c: Case) -> Json:
    os.mkdir("d")
    c.keep(openat2("new", WRONLY | CREAT, 0o600, resolve=RESOLVE_BENEATH, dirfd=c.open("d", RDONLY)))
    return listing("d")


@case
def openat2_in_root_dotdot(c: Case) -> Json:
    # ".." at the root stays at the root: this is d/f
    os.mkdir("d")
    write("f", "outer")
    write("d/f", "inner")
    return read_fd(c.keep(openat2("../../../f", RDONLY, resolve=RESOLVE_IN_ROOT, dirfd=c.open("d", RDONLY))))


@case
def openat2_in_root_absolute_path(c: Case) -> Json:
    os.mkdir("d")
    write("d/f", "inner")
    return read_fd(c.keep(openat2("/f", RDONLY, resolve=RESOLVE_IN_ROOT, dirfd=c.open("d", RDONLY))))


@case
def openat2_in_root_absolute_symlink(c: Case) -> Json:
    os.mkdir("d")
    write("d/f", "inner")
    os.symlink("/f", "d/link")
    return read_fd(c.keep(openat2("link", RDONLY, resolve=RESOLVE_IN_ROOT, dirfd=c.open("d", RDONLY))))


@case
def openat2_in_root_creat(c: Case) -> Json:
    os.mkdir("d")
    c.keep(openat2("../new", WRONLY | CREAT, 0o600, resolve=RESOLVE_IN_ROOT, dirfd=c.open("d", RDONLY)))
    return {"d": listing("d"), ".": listing()}


@case
def openat2_cached_hit(c: Case) -> Json:
    # the file was just made, so its dentry is in the cache; EAGAIN would mean a lookup was needed
    write("f", "content")
    os.stat("f")
    return read_fd(c.keep(openat2("f", RDONLY, resolve=RESOLVE_CACHED)))


@case
def openat2_cached_creat(c: Case) -> Json:
    # RESOLVE_CACHED with O_CREAT is always EAGAIN
    c.keep(openat2("f", WRONLY | CREAT, 0o600, resolve=RESOLVE_CACHED))


@case
def openat2_unknown_flag(c: Case) -> Json:
    write("f")
    c.keep(openat2("f", RDONLY | (1 << 40)))


@case
def openat2_mode_without_creat(c: Case) -> Json:
    write("f")
    c.keep(openat2("f", RDONLY, 0o644))


@case
def openat2_mode_beyond_permissions(c: Case) -> Json:
    c.keep(openat2("f", WRONLY | CREAT, stat.S_IFREG | 0o644))


@case
def openat2_unknown_resolve(c: Case) -> Json:
    write("f")
    c.keep(openat2("f", RDONLY, resolve=1 << 10))


@case
def openat2_beneath_and_in_root(c: Case) -> Json:
    write("f")
    c.keep(openat2("f", RDONLY, resolve=RESOLVE_BENEATH | RESOLVE_IN_ROOT))


@case
def openat2_size_too_small(c: Case) -> Json:
    write("f")
    c.keep(openat2("f", RDONLY, size=8))


@case
def openat2_size_larger_zero_tail(c: Case) -> Json:
    write("f", "content")
    return read_fd(c.keep(openat2("f", RDONLY, size=OPEN_HOW_SIZE + 8)))


@case
def openat2_size_larger_nonzero_tail(c: Case) -> Json:
    write("f")
    how = struct.pack("QQQ", RDONLY, 0, 0) + b"\xff" * 8
    c.keep(syscall("openat2", AT_FDCWD, b"f", ctypes.create_string_buffer(how, len(how)), len(how)))


@case
def openat2_directory_on_file(c: Case) -> Json:
    write("f")
    c.keep(openat2("f", RDONLY | os.O_DIRECTORY))


# -- O_TMPFILE ------------------------------------------------------------------------------


@case
def tmpfile_open(c: Case) -> Json:
    fd = c.open(".", os.O_TMPFILE | RDWR, 0o666)
    os.write(fd, b"x")
    return {"fstat": normalize(os.fstat(fd)), "listing": listing()}


@case
def tmpfile_link_empty_path(c: Case) -> Json:
    # linkat with AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH: ENOENT unprivileged
    fd = c.open(".", os.O_TMPFILE | RDWR, 0o600)
    os.write(fd, b"hidden")
    c.stat_after("named")
    check(libc.linkat(fd, b"", AT_FDCWD, b"named", AT_EMPTY_PATH))
    return read("named")


@case
def tmpfile_link_proc_fd(c: Case) -> Json:
    fd = c.open(".", os.O_TMPFILE | RDWR, 0o600)
    os.write(fd, b"hidden")
    c.stat_after("named")
    check(libc.linkat(AT_FDCWD, b(f"/proc/self/fd/{fd}"), AT_FDCWD, b"named", AT_SYMLINK_FOLLOW))
    return read("named")


@case
def tmpfile_link_existing_name(c: Case) -> Json:
    write("named", "before")
    fd = c.open(".", os.O_TMPFILE | RDWR, 0o600)
    c.after(lambda: read("named"))
    check(libc.linkat(AT_FDCWD, b(f"/proc/self/fd/{fd}"), AT_FDCWD, b"named", AT_SYMLINK_FOLLOW))


@case
def tmpfile_excl_cannot_link(c: Case) -> Json:
    fd = c.open(".", os.O_TMPFILE | RDWR | os.O_EXCL, 0o600)
    c.after(listing)
    check(libc.linkat(AT_FDCWD, b(f"/proc/self/fd/{fd}"), AT_FDCWD, b"named", AT_SYMLINK_FOLLOW))


@case
def tmpfile_rdonly(c: Case) -> Json:
    c.open(".", os.O_TMPFILE | RDONLY, 0o600)


@case
def tmpfile_on_file(c: Case) -> Json:
    write("f")
    c.open("f", os.O_TMPFILE | RDWR, 0o600)


@case
def tmpfile_missing_dir(c: Case) -> Json:
    c.open("missing", os.O_TMPFILE | RDWR, 0o600)


# -- execve, execveat, fexecve ---------------------------------------------------------------
SCRIPT = '#!/bin/sh\necho hello "$@"\nexit 7\n'


@case
def exec_elf_copy(c: Case) -> Json:
    install_program("true")
    return run_program(execv("./true", ["true"]))


@case
def exec_elf_copy_status(c: Case) -> Json:
    install_program("false", "/bin/false")
    return run_program(execv("./false", ["false"]))


@case
def exec_script(c: Case) -> Json:
    write("script", SCRIPT, 0o755)
    return run_program(execv("./script", ["script", "a", "b"]))


@case
def exec_elf_not_executable(c: Case) -> Json:
    install_program("true", mode=0o644)
    return run_program(execv("./true", ["true"]))


@case
def exec_script_not_executable(c: Case) -> Json:
    write("script", SCRIPT, 0o644)
    return run_program(execv("./script", ["script"]))


@case
def exec_no_shebang(c: Case) -> Json:
    # the kernel knows no format for this; only shells fall back to running it as a script
    write("text", "echo hello\n", 0o755)
    return run_program(execv("./text", ["text"]))


@case
def exec_directory(c: Case) -> Json:
    os.mkdir("d")
    return run_program(execv("./d", ["d"]))


@case
def exec_missing(c: Case) -> Json:
    return run_program(execv("./missing", ["missing"]))


@case
def exec_missing_interpreter(c: Case) -> Json:
    write("script", "#!/nonexistent/sh\n", 0o755)
    return run_program(execv("./script", ["script"]))


@case
def exec_interpreter_not_executable(c: Case) -> Json:
    write("interp", SCRIPT, 0o644)
    write("script", "#!./interp\n", 0o755)
    return run_program(execv("./script", ["script"]))


@case
def exec_through_symlink(c: Case) -> Json:
    install_program("true")
    os.symlink("true", "link")
    return run_program(execv("./link", ["link"]))


@case
def exec_open_for_writing(c: Case) -> Json:
    install_program("true")
    c.open("true", WRONLY)
    return run_program(execv("./true", ["true"]))


@case
def exec_execveat_dirfd(c: Case) -> Json:
    os.mkdir("d")
    install_program("d/true")
    dirfd = c.open("d", RDONLY)
    return run_program(lambda: execveat(dirfd, "true", ["true"], 0))


@case
def exec_execveat_empty_path(c: Case) -> Json:
    install_program("true")
    fd = c.open("true", os.O_PATH)
    return run_program(lambda: execveat(fd, "", ["true"], AT_EMPTY_PATH))


@case
def exec_execveat_nofollow_symlink(c: Case) -> Json:
    install_program("true")
    os.symlink("true", "link")
    return run_program(lambda: execveat(AT_FDCWD, "link", ["link"], AT_SYMLINK_NOFOLLOW))


@case
def exec_execveat_bad_flags(c: Case) -> Json:
    install_program("true")
    return run_program(lambda: execveat(AT_FDCWD, "true", ["true"], 0x1))


@case
def exec_fexecve_elf(c: Case) -> Json:
    install_program("true")
    fd = c.open("true", RDONLY)
    return run_program(lambda: os.execve(fd, ["true"], CHILD_ENV))


@case
def exec_fexecve_script_cloexec(c: Case) -> Json:
    # the interpreter would open /dev/fd/N, which close-on-exec has closed: ENOENT
    write("script", SCRIPT, 0o755)
    fd = c.open("script", RDONLY)
    return run_program(lambda: os.execve(fd, ["script"], CHILD_ENV))


@case
def exec_fexecve_script_inheritable(c: Case) -> Json:
    write("script", SCRIPT, 0o755)
    fd = c.open("script", RDONLY)
    os.set_inheritable(fd, True)
    return run_program(lambda: os.execve(fd, ["script"], CHILD_ENV))


# -- chdir, fchdir, getcwd -----------------------------------------------------------------


@case
def cwd_getcwd(c: Case) -> Json:
    return c.cwd()


@case
def cwd_chdir_subdir(c: Case) -> Json:
    os.mkdir("sub")
    os.chdir("sub")
    return c.cwd()


@case
def cwd_chdir_dotdot(c: Case) -> Json:
    os.makedirs("a/b")
    os.chdir("a/b")
    os.chdir("..")
    return c.cwd()


@case
def cwd_chdir_symlink(c: Case) -> Json:
    # getcwd() shows the directory the symlink led to
    os.mkdir("sub")
    os.symlink("sub", "link")
    os.chdir("link")
    return c.cwd()


@case
def cwd_chdir_file(c: Case) -> Json:
    write("f")
    os.chdir("f")


@case
def cwd_chdir_missing(c: Case) -> Json:
    os.chdir("missing")


@case
def cwd_chdir_no_search_permission(c: Case) -> Json:
    os.mkdir("d", 0o600)
    os.chdir("d")
    return c.cwd()


@case
def cwd_fchdir(c: Case) -> Json:
    os.mkdir("sub")
    os.fchdir(c.open("sub", RDONLY))
    return c.cwd()


@case
def cwd_fchdir_path_fd(c: Case) -> Json:
    os.mkdir("sub")
    os.fchdir(c.open("sub", os.O_PATH))
    return c.cwd()


@case
def cwd_fchdir_file(c: Case) -> Json:
    write("f")
    os.fchdir(c.open("f", RDONLY))


@case
def cwd_create_after_chdir(c: Case) -> Json:
    os.mkdir("sub")
    os.chdir("sub")
    write("f", "relative")
    return {"sub": listing(os.path.join(c.dir, "sub")), ".": listing(c.dir)}


@case
def cwd_removed(c: Case) -> Json:
    os.mkdir("gone")
    os.chdir("gone")
    os.rmdir("../gone")
    return c.cwd()


@case
def cwd_create_in_removed(c: Case) -> Json:
    os.mkdir("gone")
    os.chdir("gone")
    os.rmdir("../gone")
    write("f")


@case
def cwd_after_rename(c: Case) -> Json:
    os.mkdir("d")
    os.chdir("d")
    os.rename("../d", "../e")
    write("f")
    return {"cwd": c.cwd(), "e": listing(os.path.join(c.dir, "e"))}


# -- mkdir, mkdirat --------------------------------------------------------------------------


@case
def mkdir_new(c: Case) -> Json:
    c.stat_after("d")
    os.mkdir("d")


@case
def mkdir_umask(c: Case) -> Json:
    os.umask(0o077)
    c.stat_after("d")
    os.mkdir("d", 0o777)


@case
def mkdir_sticky_mode(c: Case) -> Json:
    c.stat_after("d")
    os.mkdir("d", 0o1777)


@case
def mkdir_setgid_mode(c: Case) -> Json:
    # mkdir keeps only permission and sticky bits; setgid comes from a setgid parent only
    c.stat_after("d")
    os.mkdir("d", 0o2777)


@case
def mkdir_existing_dir(c: Case) -> Json:
    os.mkdir("d")
    os.mkdir("d")


@case
def mkdir_existing_file(c: Case) -> Json:
    write("f")
    os.mkdir("f")


@case
def mkdir_dangling_symlink(c: Case) -> Json:
    os.symlink("target", "link")
    c.after(listing)
    os.mkdir("link")


@case
def mkdir_missing_parent(c: Case) -> Json:
    os.mkdir("missing/d")


@case
def mkdir_through_file(c: Case) -> Json:
    write("f")
    os.mkdir("f/d")


@case
def mkdir_name_too_long(c: Case) -> Json:
    os.mkdir("d" * 256)


@case
def mkdir_trailing_slash(c: Case) -> Json:
    os.mkdir("d/")
    return listing()


@case
def mkdir_empty_name(c: Case) -> Json:
    os.mkdir("")


@case
def mkdir_dot(c: Case) -> Json:
    os.mkdir(".")


@case
def mkdir_parent_not_writable(c: Case) -> Json:
    os.mkdir("p", 0o555)
    os.mkdir("p/d")
    return listing("p")


@case
def mkdir_parent_nlink(c: Case) -> Json:
    os.mkdir("p")
    os.mkdir("p/a")
    os.mkdir("p/b")
    return describe("p")


# -- mknod, mknodat, mkfifo ----------------------------------------------------------------


@case
def mknod_fifo(c: Case) -> Json:
    c.stat_after("p")
    os.mknod("p", stat.S_IFIFO | 0o666)


@case
def mknod_mkfifo(c: Case) -> Json:
    os.umask(0o077)
    c.stat_after("p")
    os.mkfifo("p", 0o666)


@case
def mknod_socket(c: Case) -> Json:
    c.stat_after("s")
    os.mknod("s", stat.S_IFSOCK | 0o644)


@case
def mknod_regular(c: Case) -> Json:
    c.stat_after("f")
    os.mknod("f", stat.S_IFREG | 0o640)


@case
def mknod_no_type(c: Case) -> Json:
    # a mode without a type makes a regular file
    c.stat_after("f")
    os.mknod("f", 0o640)


@case
def mknod_char_device(c: Case) -> Json:
    c.stat_after("null")
    os.mknod("null", stat.S_IFCHR | 0o666, os.makedev(1, 3))


@case
def mknod_block_device(c: Case) -> Json:
    c.stat_after("loop")
    os.mknod("loop", stat.S_IFBLK | 0o600, os.makedev(7, 0))


@case
def mknod_whiteout(c: Case) -> Json:
    # a 0:0 character device is an overlayfs whiteout, which needs no privilege since Linux 5.8
    c.stat_after("w")
    os.mknod("w", stat.S_IFCHR | 0o600, os.makedev(0, 0))


@case
def mknod_existing(c: Case) -> Json:
    write("f")
    os.mknod("f", stat.S_IFIFO | 0o644)


@case
def mknod_directory_type(c: Case) -> Json:
    os.mknod("d", stat.S_IFDIR | 0o755)


@case
def mknod_invalid_type(c: Case) -> Json:
    os.mknod("x", 0o170000 | 0o644)  # every type bit set: no such file type


@case
def mknod_mknodat_dirfd(c: Case) -> Json:
    os.mkdir("d")
    os.mknod("p", stat.S_IFIFO | 0o600, dir_fd=c.open("d", RDONLY))
    return describe("d/p")


@case
def mknod_missing_parent(c: Case) -> Json:
    os.mkfifo("missing/p")


# -- unlink, unlinkat ----------------------------------------------------------------------


@case
def unlink_file(c: Case) -> Json:
    write("f")
    write("g")
    os.unlink("f")
    return listing()


@case
def unlink_missing(c: Case) -> Json:
    os.unlink("missing")


@case
def unlink_dir(c: Case) -> Json:
    os.mkdir("d")
    os.unlink("d")


@case
def unlink_trailing_slash(c: Case) -> Json:
    write("f")
    os.unlink("f/")


@case
def unlink_through_file(c: Case) -> Json:
    write("f")
    os.unlink("f/x")


@case
def unlink_dot(c: Case) -> Json:
    os.unlink(".")


@case
def unlink_symlink_keeps_target(c: Case) -> Json:
    write("f", "content")
    os.symlink("f", "link")
    os.unlink("link")
    return {"listing": listing(), "f": read("f")}


@case
def unlink_dangling_symlink(c: Case) -> Json:
    os.symlink("target", "link")
    os.unlink("link")
    return listing()


@case
def unlink_fifo(c: Case) -> Json:
    os.mkfifo("p")
    os.unlink("p")
    return listing()


@case
def unlink_hardlink_nlink(c: Case) -> Json:
    write("a", "content")
    os.link("a", "b")
    os.unlink("a")
    return describe("b")


@case
def unlink_open_file_readable(c: Case) -> Json:
    write("f", "content")
    fd = c.open("f", RDONLY)
    os.unlink("f")
    return {"read": read_fd(fd), "fstat": normalize(os.fstat(fd)), "listing": listing()}


@case
def unlink_parent_not_writable(c: Case) -> Json:
    os.mkdir("p")
    write("p/f")
    os.chmod("p", 0o555)
    c.after(lambda: listing("p"))
    os.unlink("p/f")


@case
def unlink_removedir_empty(c: Case) -> Json:
    os.mkdir("d")
    check(libc.unlinkat(AT_FDCWD, b"d", AT_REMOVEDIR))
    return listing()


@case
def unlink_removedir_file(c: Case) -> Json:
    write("f")
    check(libc.unlinkat(AT_FDCWD, b"f", AT_REMOVEDIR))


@case
def unlink_removedir_nonempty(c: Case) -> Json:
    os.mkdir("d")
    write("d/f")
    check(libc.unlinkat(AT_FDCWD, b"d", AT_REMOVEDIR))


@case
def unlink_unlinkat_bad_flag(c: Case) -> Json:
    write("f")
    check(libc.unlinkat(AT_FDCWD, b"f", 0x1))


# -- rmdir -----------------------------------------------------------------------------------


@case
def rmdir_empty(c: Case) -> Json:
    os.mkdir("d")
    os.rmdir("d")
    return listing()


@case
def rmdir_dot(c: Case) -> Json:
    os.rmdir(".")


@case
def rmdir_trailing_dot(c: Case) -> Json:
    os.mkdir("d")
    os.rmdir("d/.")


@case
def rmdir_dotdot(c: Case) -> Json:
    os.mkdir("d")
    os.rmdir("d/..")


@case
def rmdir_nonempty(c: Case) -> Json:
    os.mkdir("d")
    write("d/f")
    os.rmdir("d")


@case
def rmdir_file(c: Case) -> Json:
    write("f")
    os.rmdir("f")


@case
def rmdir_missing(c: Case) -> Json:
    os.rmdir("missing")


@case
def rmdir_symlink_to_dir(c: Case) -> Json:
    os.mkdir("d")
    os.symlink("d", "link")
    os.rmdir("link")


@case
def rmdir_dirfd(c: Case) -> Json:
    os.makedirs("p/d")
    os.rmdir("d", dir_fd=c.open("p", RDONLY))
    return listing("p")


# -- rename, renameat, renameat2 -------------------------------------------------------------


def contents(*names: str) -> dict[str, Json]:
    """Each name's content, or its errno name: what a rename left where."""
    return {name: observe(partial(read, name)) for name in names}


@case
def rename_file(c: Case) -> Json:
    write("a", "A")
    os.rename("a", "b")
    return {"listing": listing(), "b": read("b")}


@case
def rename_over_file(c: Case) -> Json:
    write("a", "A")
    write("b", "B")
    os.rename("a", "b")
    return {"listing": listing(), "b": read("b")}


@case
def rename_missing(c: Case) -> Json:
    os.rename("missing", "b")


@case
def rename_dir(c: Case) -> Json:
    os.mkdir("d")
    write("d/f", "inner")
    os.rename("d", "e")
    return {"listing": listing(), "e/f": read("e/f")}


@case
def rename_dir_over_empty_dir(c: Case) -> Json:
    os.mkdir("d")
    write("d/f")
    os.mkdir("e")
    os.rename("d", "e")
    return {"listing": listing(), "e": listing("e")}


@case
def rename_dir_over_nonempty_dir(c: Case) -> Json:
    os.mkdir("d")
    os.mkdir("e")
    write("e/f")
    os.rename("d", "e")


@case
def rename_dir_over_file(c: Case) -> Json:
    os.mkdir("d")
    write("f")
    os.rename("d", "f")


@case
def rename_file_over_dir(c: Case) -> Json:
    write("f")
    os.mkdir("d")
    os.rename("f", "d")


@case
def rename_dir_into_itself(c: Case) -> Json:
    os.mkdir("d")
    os.rename("d", "d/sub")


@case
def rename_same_name(c: Case) -> Json:
    write("a", "A")
    os.rename("a", "a")
    return listing()


@case
def rename_hardlinks_of_one_inode(c: Case) -> Json:
    # renaming a name onto another link of the same inode does nothing, successfully
    write("a", "A")
    os.link("a", "b")
    os.rename("a", "b")
    return listing()


@case
def rename_symlink(c: Case) -> Json:
    os.symlink("target", "link")
    os.rename("link", "moved")
    return {"listing": listing(), "readlink": os.readlink("moved")}


@case
def rename_dot(c: Case) -> Json:
    os.rename(".", "x")


@case
def rename_to_dotdot(c: Case) -> Json:
    os.mkdir("d")
    write("d/f")
    os.rename("d/f", "d/..")


@case
def rename_trailing_slash_file(c: Case) -> Json:
    write("f")
    os.rename("f/", "g")


@case
def rename_dir_trailing_slash(c: Case) -> Json:
    os.mkdir("d")
    os.rename("d/", "e/")
    return listing()


@case
def rename_into_missing_dir(c: Case) -> Json:
    write("f")
    os.rename("f", "missing/f")


@case
def rename_renameat_dirfds(c: Case) -> Json:
    os.mkdir("from")
    os.mkdir("to")
    write("from/f", "content")
    os.rename("f", "g", src_dir_fd=c.open("from", RDONLY), dst_dir_fd=c.open("to", RDONLY))
    return {"from": listing("from"), "to": listing("to")}


@case
def rename_noreplace_existing(c: Case) -> Json:
    write("a", "A")
    write("b", "B")
    c.after(lambda: contents("a", "b"))
    renameat2("a", "b", RENAME_NOREPLACE)


@case
def rename_noreplace_new(c: Case) -> Json:
    write("a", "A")
    renameat2("a", "b", RENAME_NOREPLACE)
    return contents("a", "b")


@case
def rename_noreplace_dangling_symlink(c: Case) -> Json:
    # the target name exists (as a symlink), even though what it points to does not
    write("a", "A")
    os.symlink("nowhere", "b")
    renameat2("a", "b", RENAME_NOREPLACE)


@case
def rename_exchange(c: Case) -> Json:
    write("a", "A")
    write("b", "B")
    renameat2("a", "b", RENAME_EXCHANGE)
    return contents("a", "b")


@case
def rename_exchange_missing(c: Case) -> Json:
    write("a", "A")
    c.after(listing)
    renameat2("a", "b", RENAME_EXCHANGE)


@case
def rename_exchange_dir_and_file(c: Case) -> Json:
    os.mkdir("d")
    write("f", "F")
    renameat2("d", "f", RENAME_EXCHANGE)
    return {"d": describe("d")["type"], "f": describe("f")["type"], "d content": read("d")}


@case
def rename_exchange_dir_into_itself(c: Case) -> Json:
    os.makedirs("d/sub")
    renameat2("d", "d/sub", RENAME_EXCHANGE)


@case
def rename_noreplace_and_exchange(c: Case) -> Json:
    write("a")
    write("b")
    renameat2("a", "b", RENAME_NOREPLACE | RENAME_EXCHANGE)


@case
def rename_unknown_flag(c: Case) -> Json:
    write("a")
    renameat2("a", "b", 1 << 8)


@case
def rename_whiteout(c: Case) -> Json:
    # leaves a 0:0 character device behind; needs CAP_MKNOD and file system support
    write("a", "A")
    c.stat_after("a")
    renameat2("a", "b", RENAME_WHITEOUT)
    return listing()


# -- link, linkat ----------------------------------------------------------------------------


@case
def link_file(c: Case) -> Json:
    write("a", "content")
    c.stat_after("b")
    os.link("a", "b")
    return read("b")


@case
def link_dir(c: Case) -> Json:
    os.mkdir("d")
    os.link("d", "e")


@case
def link_existing(c: Case) -> Json:
    write("a")
    write("b")
    os.link("a", "b")


@case
def link_missing(c: Case) -> Json:
    os.link("missing", "b")


@case
def link_symlink_nofollow(c: Case) -> Json:
    # linkat without AT_SYMLINK_FOLLOW links the symlink itself
    write("f")
    os.symlink("f", "link")
    c.stat_after("hard")
    os.link("link", "hard", follow_symlinks=False)


@case
def link_symlink_follow(c: Case) -> Json:
    write("f", "content")
    os.symlink("f", "link")
    c.stat_after("hard")
    check(libc.linkat(AT_FDCWD, b"link", AT_FDCWD, b"hard", AT_SYMLINK_FOLLOW))


@case
def link_dangling_follow(c: Case) -> Json:
    os.symlink("nowhere", "link")
    check(libc.linkat(AT_FDCWD, b"link", AT_FDCWD, b"hard", AT_SYMLINK_FOLLOW))


@case
def link_bad_flags(c: Case) -> Json:
    write("f")
    check(libc.linkat(AT_FDCWD, b"f", AT_FDCWD, b"g", 0x1))


@case
def link_dirfds(c: Case) -> Json:
    os.mkdir("from")
    os.mkdir("to")
    write("from/f", "content")
    os.link("f", "g", src_dir_fd=c.open("from", RDONLY), dst_dir_fd=c.open("to", RDONLY))
    return describe("to/g")


@case
def link_trailing_slash(c: Case) -> Json:
    write("f")
    os.link("f", "g/")


# -- symlink, symlinkat ----------------------------------------------------------------------


@case
def symlink_create(c: Case) -> Json:
    c.stat_after("link")
    os.symlink("some/target", "link")
    return os.readlink("link")


@case
def symlink_existing(c: Case) -> Json:
    write("f")
    os.symlink("target", "f")


@case
def symlink_empty_target(c: Case) -> Json:
    os.symlink("", "link")


@case
def symlink_missing_parent(c: Case) -> Json:
    os.symlink("target", "missing/link")


@case
def symlink_umask_ignored(c: Case) -> Json:
    os.umask(0o777)
    c.stat_after("link")
    os.symlink("target", "link")


@case
def symlink_target_4095(c: Case) -> Json:
    c.stat_after("link")
    os.symlink("t" * 4095, "link")


@case
def symlink_target_4096(c: Case) -> Json:
    os.symlink("t" * 4096, "link")


@case
def symlink_read_through(c: Case) -> Json:
    os.mkdir("d")
    write("d/f", "inner")
    os.symlink("d/f", "link")
    os.symlink("../d", "d/up")
    return {"link": read("link"), "d/up/f": read("d/up/f")}


@case
def symlink_chain_40(c: Case) -> Json:
    # the kernel follows at most 40 symlinks in one lookup
    write("f", "end")
    previous = "f"
    for index in range(40):
        os.symlink(previous, f"l{index}")
        previous = f"l{index}"
    return read(previous)


@case
def symlink_chain_41(c: Case) -> Json:
    write("f", "end")
    previous = "f"
    for index in range(41):
        os.symlink(previous, f"l{index}")
        previous = f"l{index}"
    return read(previous)


@case
def symlink_trailing_slash_name(c: Case) -> Json:
    os.symlink("target", "link/")


# -- readlink, readlinkat ----------------------------------------------------------------------


@case
def readlink_link(c: Case) -> Json:
    os.symlink("../some/target", "link")
    return os.readlink("link")


@case
def readlink_regular(c: Case) -> Json:
    write("f")
    os.readlink("f")


@case
def readlink_missing(c: Case) -> Json:
    os.readlink("missing")


@case
def readlink_short_buffer(c: Case) -> Json:
    # readlink truncates silently to the buffer and returns the bytes it wrote
    os.symlink("abcdefgh", "link")
    buffer = ctypes.create_string_buffer(3)
    count = check(libc.readlink(b"link", buffer, 3))
    return buffer.raw[:count].decode()


@case
def readlink_zero_buffer(c: Case) -> Json:
    os.symlink("abcdefgh", "link")
    buffer = ctypes.create_string_buffer(1)
    check(libc.readlink(b"link", buffer, 0))


@case
def readlink_empty_path_on_link_fd(c: Case) -> Json:
    os.symlink("target", "link")
    fd = c.open("link", os.O_PATH | os.O_NOFOLLOW)
    buffer = ctypes.create_string_buffer(64)
    count = check(libc.readlinkat(fd, b"", buffer, 64))
    return buffer.raw[:count].decode()


@case
def readlink_trailing_slash(c: Case) -> Json:
    os.mkdir("d")
    os.symlink("d", "link")
    os.readlink("link/")


@case
def readlink_dir(c: Case) -> Json:
    os.mkdir("d")
    os.readlink("d")


# -- chmod, fchmod, fchmodat, fchmodat2 --------------------------------------------------------


@case
def chmod_file(c: Case) -> Json:
    write("f")
    c.stat_after("f")
    os.chmod("f", 0o600)


@case
def chmod_special_bits(c: Case) -> Json:
    write("f")
    c.stat_after("f")
    os.chmod("f", 0o7755)


@case
def chmod_dir_sticky(c: Case) -> Json:
    os.mkdir("d")
    c.stat_after("d")
    os.chmod("d", 0o1777)


@case
def chmod_type_bits_ignored(c: Case) -> Json:
    write("f")
    c.stat_after("f")
    os.chmod("f", stat.S_IFDIR | 0o640)


@case
def chmod_missing(c: Case) -> Json:
    os.chmod("missing", 0o600)


@case
def chmod_through_symlink(c: Case) -> Json:
    write("f")
    os.symlink("f", "link")
    c.stat_after("link")
    c.after(lambda: describe("f"))
    os.chmod("link", 0o600)


@case
def chmod_dangling_symlink(c: Case) -> Json:
    os.symlink("nowhere", "link")
    os.chmod("link", 0o600)


@case
def chmod_fchmod(c: Case) -> Json:
    write("f")
    c.stat_after("f")
    os.fchmod(c.open("f", RDONLY), 0o640)


@case
def chmod_fchmodat_dirfd(c: Case) -> Json:
    os.mkdir("d")
    write("d/f")
    c.stat_after("d/f")
    os.chmod("f", 0o600, dir_fd=c.open("d", RDONLY))


@case
def chmod_glibc_fchmodat_nofollow_file(c: Case) -> Json:
    # glibc emulates AT_SYMLINK_NOFOLLOW (with an O_PATH open and /proc/self/fd) where fchmodat2 is missing
    write("f")
    c.stat_after("f")
    check(libc.fchmodat(AT_FDCWD, b"f", 0o600, AT_SYMLINK_NOFOLLOW))


@case
def chmod_glibc_fchmodat_nofollow_symlink(c: Case) -> Json:
    write("f")
    os.symlink("f", "link")
    c.after(lambda: describe("f"))
    check(libc.fchmodat(AT_FDCWD, b"link", 0o600, AT_SYMLINK_NOFOLLOW))


@case
def chmod_fchmodat2_nofollow_symlink(c: Case) -> Json:
    write("f")
    os.symlink("f", "link")
    c.after(lambda: describe("f"))
    fchmodat2("link", 0o600, AT_SYMLINK_NOFOLLOW)


@case
def chmod_fchmodat2_nofollow_file(c: Case) -> Json:
    write("f")
    c.stat_after("f")
    fchmodat2("f", 0o600, AT_SYMLINK_NOFOLLOW)


@case
def chmod_fchmodat2_follow(c: Case) -> Json:
    write("f")
    os.symlink("f", "link")
    c.stat_after("f")
    fchmodat2("link", 0o640, 0)


@case
def chmod_fchmodat2_empty_path(c: Case) -> Json:
    write("f")
    c.stat_after("f")
    fchmodat2("", 0o600, AT_EMPTY_PATH, dirfd=c.open("f", os.O_PATH))


@case
def chmod_fchmodat2_bad_flags(c: Case) -> Json:
    write("f")
    fchmodat2("f", 0o600, AT_REMOVEDIR)


@case
def chmod_readonly_parent(c: Case) -> Json:
    # chmod needs ownership, not write permission on the directory
    os.mkdir("p")
    write("p/f")
    os.chmod("p", 0o555)
    c.stat_after("p/f")
    os.chmod("p/f", 0o600)


# -- chown, lchown, fchown, fchownat -----------------------------------------------------------


@case
def chown_self(c: Case) -> Json:
    write("f")
    c.stat_after("f")
    os.chown("f", os.getuid(), os.getgid())


@case
def chown_minus_one(c: Case) -> Json:
    write("f")
    c.stat_after("f")
    os.chown("f", -1, -1)


@case
def chown_to_1000(c: Case) -> Json:
    write("f")
    c.stat_after("f")
    os.chown("f", OTHER_UID, OTHER_GID)


@case
def chown_to_root(c: Case) -> Json:
    write("f")
    c.stat_after("f")
    os.chown("f", 0, 0)


@case
def chown_group_to_root(c: Case) -> Json:
    write("f")
    c.stat_after("f")
    os.chown("f", -1, 0)


@case
def chown_missing(c: Case) -> Json:
    os.chown("missing", -1, -1)


@case
def chown_lchown_symlink(c: Case) -> Json:
    write("f")
    os.symlink("f", "link")
    c.stat_after("link")
    os.lchown("link", os.getuid(), os.getgid())


@case
def chown_lchown_to_1000(c: Case) -> Json:
    write("f")
    os.symlink("f", "link")
    c.stat_after("link")
    c.after(lambda: describe("f"))
    os.lchown("link", OTHER_UID, OTHER_GID)


@case
def chown_through_symlink_to_1000(c: Case) -> Json:
    write("f")
    os.symlink("f", "link")
    c.stat_after("link")
    c.after(lambda: describe("f"))
    os.chown("link", OTHER_UID, OTHER_GID)


@case
def chown_fchown(c: Case) -> Json:
    write("f")
    c.stat_after("f")
    os.fchown(c.open("f", RDONLY), os.getuid(), os.getgid())


@case
def chown_fchown_path_fd(c: Case) -> Json:
    write("f")
    os.fchown(c.open("f", os.O_PATH), os.getuid(), os.getgid())


@case
def chown_fchownat_empty_path_on_path_fd(c: Case) -> Json:
    write("f")
    c.stat_after("f")
    check(libc.fchownat(c.open("f", os.O_PATH), b"", os.getuid(), os.getgid(), AT_EMPTY_PATH))


@case
def chown_fchownat_dirfd_nofollow(c: Case) -> Json:
    os.mkdir("d")
    os.symlink("target", "d/link")
    c.stat_after("d/link")
    os.chown("link", os.getuid(), os.getgid(), dir_fd=c.open("d", RDONLY), follow_symlinks=False)


@case
def chown_clears_setuid(c: Case) -> Json:
    # chown of an executable clears setuid and setgid, even for root
    write("f", mode=0o755)
    os.chmod("f", 0o6755)
    c.stat_after("f")
    os.chown("f", os.getuid(), os.getgid())


@case
def chown_keeps_setgid_without_group_exec(c: Case) -> Json:
    write("f")
    os.chmod("f", 0o2644)
    c.stat_after("f")
    os.chown("f", os.getuid(), os.getgid())


@case
def chown_dir_keeps_setgid(c: Case) -> Json:
    os.mkdir("d")
    os.chmod("d", 0o2755)
    c.stat_after("d")
    os.chown("d", os.getuid(), os.getgid())


# -- truncate, ftruncate -----------------------------------------------------------------------


@case
def truncate_shrink(c: Case) -> Json:
    write("f", "content")
    c.stat_after("f")
    os.truncate("f", 3)
    return read("f")


@case
def truncate_extend(c: Case) -> Json:
    write("f", "ab")
    c.stat_after("f")
    os.truncate("f", 5000)
    data = read("f")
    return {"prefix": data[:2], "zeros": data.count("\0")}


@case
def truncate_dir(c: Case) -> Json:
    os.mkdir("d")
    os.truncate("d", 0)


@case
def truncate_negative(c: Case) -> Json:
    write("f", "content")
    os.truncate("f", -1)


@case
def truncate_missing(c: Case) -> Json:
    os.truncate("missing", 0)


@case
def truncate_through_symlink(c: Case) -> Json:
    write("f", "content")
    os.symlink("f", "link")
    c.stat_after("f")
    os.truncate("link", 1)


@case
def truncate_fifo(c: Case) -> Json:
    os.mkfifo("p")
    os.truncate("p", 0)


@case
def truncate_readonly_file(c: Case) -> Json:
    write("f", "content", 0o444)
    c.stat_after("f")
    os.truncate("f", 0)


@case
def truncate_ftruncate(c: Case) -> Json:
    write("f", "content")
    c.stat_after("f")
    os.ftruncate(c.open("f", WRONLY), 4)
    return read("f")


@case
def truncate_ftruncate_rdonly_fd(c: Case) -> Json:
    write("f", "content")
    os.ftruncate(c.open("f", RDONLY), 0)


@case
def truncate_ftruncate_negative(c: Case) -> Json:
    write("f", "content")
    os.ftruncate(c.open("f", WRONLY), -1)


# -- utimensat, utimes, futimes, futimens --------------------------------------------------------
A_NS, M_NS = 1_000_000_001, 2_000_000_002
A_PAIR, M_PAIR = (1, 1), (2, 2)


@case
def utime_explicit_ns(c: Case) -> Json:
    write("f")
    os.utime("f", ns=(A_NS, M_NS))
    return times("f")


@case
def utime_omit_atime(c: Case) -> Json:
    write("f")
    os.utime("f", ns=(A_NS, M_NS))
    utimensat("f", ((0, UTIME_OMIT), (3, 3)))
    return times("f")


@case
def utime_omit_both(c: Case) -> Json:
    write("f")
    os.utime("f", ns=(A_NS, M_NS))
    utimensat("f", ((0, UTIME_OMIT), (0, UTIME_OMIT)))
    return times("f")


@case
def utime_now_and_omit(c: Case) -> Json:
    write("f")
    os.utime("f", ns=(A_NS, M_NS))
    utimensat("f", ((0, UTIME_NOW), (0, UTIME_OMIT)))
    atime, mtime = times("f")
    return {"atime changed": atime != A_NS, "mtime": mtime}


@case
def utime_null_times(c: Case) -> Json:
    write("f")
    os.utime("f", ns=(A_NS, M_NS))
    utimensat("f", None)
    atime, mtime = times("f")
    return {"atime changed": atime != A_NS, "mtime changed": mtime != M_NS}


@case
def utime_nofollow_symlink(c: Case) -> Json:
    write("f")
    os.utime("f", ns=(A_NS, M_NS))
    os.symlink("f", "link")
    utimensat("link", ((5, 5), (6, 6)), AT_SYMLINK_NOFOLLOW)
    return {"link": times("link", follow=False), "f": times("f")}


@case
def utime_follow_symlink(c: Case) -> Json:
    write("f")
    os.symlink("f", "link")
    utimensat("link", ((5, 5), (6, 6)))
    return times("f")


@case
def utime_missing(c: Case) -> Json:
    utimensat("missing", (A_PAIR, M_PAIR))


@case
def utime_bad_nsec(c: Case) -> Json:
    write("f")
    utimensat("f", ((1, 1_000_000_000), M_PAIR))


@case
def utime_bad_flags(c: Case) -> Json:
    write("f")
    utimensat("f", (A_PAIR, M_PAIR), AT_REMOVEDIR)


@case
def utime_pre_epoch(c: Case) -> Json:
    write("f")
    os.utime("f", ns=(-1_500_000_000, -1))
    return times("f")


@case
def utime_dir(c: Case) -> Json:
    os.mkdir("d")
    os.utime("d", ns=(A_NS, M_NS))
    return times("d")


@case
def utime_utimes_microseconds(c: Case) -> Json:
    write("f")
    values = (Timeval * 2)(Timeval(10, 11), Timeval(20, 21))
    check(libc.utimes(b"f", values))
    return times("f")


@case
def utime_futimes(c: Case) -> Json:
    write("f")
    values = (Timeval * 2)(Timeval(30, 31), Timeval(40, 41))
    check(libc.futimes(c.open("f", RDONLY), values))
    return times("f")


@case
def utime_futimens(c: Case) -> Json:
    write("f")
    os.utime(c.open("f", RDONLY), ns=(A_NS, M_NS))
    return times("f")


@case
def utime_empty_path_on_path_fd(c: Case) -> Json:
    write("f")
    fd = c.open("f", os.O_PATH)
    spec = (Timespec * 2)(Timespec(7, 7), Timespec(8, 8))
    check(libc.utimensat(fd, b"", spec, AT_EMPTY_PATH))
    return times("f")


@case
def utime_owner_without_write_permission(c: Case) -> Json:
    # the owner may set explicit times without write permission
    write("f", mode=0o444)
    os.utime("f", ns=(A_NS, M_NS))
    return times("f")


# -- extended attributes ---------------------------------------------------------------------


@case
def xattr_set_get(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"value")
    return os.getxattr("f", "user.key").decode()


@case
def xattr_list(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.b", b"2")
    os.setxattr("f", "user.a", b"1")
    return user_xattrs(os.listxattr("f"))


@case
def xattr_remove(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"value")
    os.removexattr("f", "user.key")
    c.after(lambda: os.getxattr("f", "user.key").decode())
    return user_xattrs(os.listxattr("f"))


@case
def xattr_get_missing(c: Case) -> Json:
    write("f")
    os.getxattr("f", "user.missing")


@case
def xattr_create_existing(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"old")
    c.after(lambda: os.getxattr("f", "user.key").decode())
    os.setxattr("f", "user.key", b"new", os.XATTR_CREATE)


@case
def xattr_create_new(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"new", os.XATTR_CREATE)
    return os.getxattr("f", "user.key").decode()


@case
def xattr_replace_existing(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"old")
    os.setxattr("f", "user.key", b"new", os.XATTR_REPLACE)
    return os.getxattr("f", "user.key").decode()


@case
def xattr_replace_missing(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"new", os.XATTR_REPLACE)


@case
def xattr_remove_missing(c: Case) -> Json:
    write("f")
    os.removexattr("f", "user.missing")


@case
def xattr_bad_flags(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"v", 0x4)


@case
def xattr_empty_value(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"")
    return os.getxattr("f", "user.key").hex()


@case
def xattr_binary_value(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", bytes(range(256)))
    return os.getxattr("f", "user.key").hex()


@case
def xattr_value_too_large(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"v" * 65537)


@case
def xattr_name_too_long(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user." + "n" * 251, b"v")


@case
def xattr_empty_suffix(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.", b"v")


@case
def xattr_unknown_namespace(c: Case) -> Json:
    write("f")
    os.setxattr("f", "unknown.key", b"v")


@case
def xattr_get_size_query(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"value")
    return check(libc.getxattr(b"f", b"user.key", None, 0))


@case
def xattr_get_small_buffer(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"value")
    buffer = ctypes.create_string_buffer(1)
    check(libc.getxattr(b"f", b"user.key", buffer, 1))


@case
def xattr_list_small_buffer(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"value")
    buffer = ctypes.create_string_buffer(1)
    check(libc.listxattr(b"f", buffer, 1))


@case
def xattr_lset_symlink(c: Case) -> Json:
    # user.* is for regular files and directories only
    write("f")
    os.symlink("f", "link")
    os.setxattr("link", "user.key", b"v", follow_symlinks=False)


@case
def xattr_lget_symlink(c: Case) -> Json:
    os.symlink("f", "link")
    os.getxattr("link", "user.key", follow_symlinks=False)


@case
def xattr_llist_symlink(c: Case) -> Json:
    os.symlink("f", "link")
    return user_xattrs(os.listxattr("link", follow_symlinks=False))


@case
def xattr_lremove_symlink(c: Case) -> Json:
    os.symlink("f", "link")
    os.removexattr("link", "user.key", follow_symlinks=False)


@case
def xattr_set_through_symlink(c: Case) -> Json:
    write("f")
    os.symlink("f", "link")
    os.setxattr("link", "user.key", b"v")
    return user_xattrs(os.listxattr("f"))


@case
def xattr_fset_fget(c: Case) -> Json:
    write("f")
    fd = c.open("f", RDONLY)
    os.setxattr(fd, "user.key", b"value")
    return {"fget": os.getxattr(fd, "user.key").decode(), "get": os.getxattr("f", "user.key").decode()}


@case
def xattr_flist_fremove(c: Case) -> Json:
    write("f")
    fd = c.open("f", RDONLY)
    os.setxattr(fd, "user.a", b"1")
    os.setxattr(fd, "user.b", b"2")
    os.removexattr(fd, "user.a")
    return user_xattrs(os.listxattr(fd))


@case
def xattr_fset_path_fd(c: Case) -> Json:
    write("f")
    os.setxattr(c.open("f", os.O_PATH), "user.key", b"v")


@case
def xattr_on_dir(c: Case) -> Json:
    os.mkdir("d")
    os.setxattr("d", "user.key", b"dir")
    return os.getxattr("d", "user.key").decode()


@case
def xattr_on_fifo(c: Case) -> Json:
    os.mkfifo("p")
    os.setxattr("p", "user.key", b"v")


@case
def xattr_missing_file(c: Case) -> Json:
    os.setxattr("missing", "user.key", b"v")


@case
def xattr_readonly_file(c: Case) -> Json:
    # user.* needs write permission on the file, which the owner lacks here (root does not)
    write("f", mode=0o444)
    os.setxattr("f", "user.key", b"v")
    return os.getxattr("f", "user.key").decode()


@case
def xattr_trusted_set_get(c: Case) -> Json:
    # trusted.* needs CAP_SYS_ADMIN in the initial user namespace
    write("f")
    os.setxattr("f", "trusted.key", b"value")
    return os.getxattr("f", "trusted.key").decode()


@case
def xattr_trusted_list(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"1")
    c.after(lambda: user_xattrs(os.listxattr("f")))
    os.setxattr("f", "trusted.key", b"2")


# -- statfs, fstatfs ---------------------------------------------------------------------------


@case
def statfs_workdir(c: Case) -> Json:
    return statfs(".")


@case
def statfs_file(c: Case) -> Json:
    write("f")
    return statfs("f")


@case
def statfs_fstatfs(c: Case) -> Json:
    write("f")
    return fstatfs(c.open("f", RDONLY))


@case
def statfs_fstatfs_path_fd(c: Case) -> Json:
    write("f")
    return fstatfs(c.open("f", os.O_PATH))


@case
def statfs_missing(c: Case) -> Json:
    return statfs("missing")


@case
def statfs_through_file(c: Case) -> Json:
    write("f")
    return statfs("f/x")


# -- access, faccessat, faccessat2 ---------------------------------------------------------------


def access(path: str, mode: int) -> None:
    """access(2) itself: os.access() hides the errno."""
    check(libc.access(b(path), mode))


@case
def access_r_ok(c: Case) -> Json:
    write("f")
    access("f", os.R_OK)


@case
def access_w_ok(c: Case) -> Json:
    write("f")
    access("f", os.W_OK)


@case
def access_x_ok_not_executable(c: Case) -> Json:
    # root too needs one x bit
    write("f")
    access("f", os.X_OK)


@case
def access_x_ok_executable(c: Case) -> Json:
    write("f", mode=0o700)
    access("f", os.X_OK)


@case
def access_rwx_dir(c: Case) -> Json:
    os.mkdir("d")
    access("d", os.R_OK | os.W_OK | os.X_OK)


@case
def access_f_ok_missing(c: Case) -> Json:
    access("missing", os.F_OK)


@case
def access_w_ok_missing(c: Case) -> Json:
    access("missing", os.W_OK)


@case
def access_w_ok_readonly_file(c: Case) -> Json:
    write("f", mode=0o444)
    access("f", os.W_OK)


@case
def access_r_ok_unreadable_file(c: Case) -> Json:
    write("f", mode=0o000)
    access("f", os.R_OK)


@case
def access_through_file(c: Case) -> Json:
    write("f")
    access("f/x", os.F_OK)


@case
def access_bad_mode(c: Case) -> Json:
    write("f")
    access("f", 8)


@case
def access_dangling_symlink(c: Case) -> Json:
    os.symlink("nowhere", "link")
    access("link", os.F_OK)


@case
def access_faccessat_dirfd(c: Case) -> Json:
    os.mkdir("d")
    write("d/f")
    check(libc.faccessat(c.open("d", RDONLY), b"f", os.W_OK, 0))


@case
def access_faccessat2_eaccess(c: Case) -> Json:
    write("f")
    faccessat2("f", os.R_OK | os.W_OK, AT_EACCESS)


@case
def access_faccessat2_nofollow_dangling(c: Case) -> Json:
    os.symlink("nowhere", "link")
    faccessat2("link", os.F_OK, AT_SYMLINK_NOFOLLOW)


@case
def access_faccessat2_follow_dangling(c: Case) -> Json:
    os.symlink("nowhere", "link")
    faccessat2("link", os.F_OK, 0)


@case
def access_faccessat2_nofollow_w_ok_symlink(c: Case) -> Json:
    write("f", mode=0o444)
    os.symlink("f", "link")
    faccessat2("link", os.W_OK, AT_SYMLINK_NOFOLLOW)


@case
def access_faccessat2_empty_path(c: Case) -> Json:
    write("f")
    faccessat2("", os.W_OK, AT_EMPTY_PATH, dirfd=c.open("f", os.O_PATH))


@case
def access_faccessat2_bad_flags(c: Case) -> Json:
    write("f")
    faccessat2("f", os.F_OK, AT_SYMLINK_FOLLOW)


# -- stat, lstat, fstatat, statx -----------------------------------------------------------------


@case
def stat_file(c: Case) -> Json:
    write("f", "12345", 0o640)
    return describe("f")


@case
def stat_dir(c: Case) -> Json:
    os.makedirs("d/sub")
    return describe("d")


@case
def stat_lstat_symlink(c: Case) -> Json:
    write("f", "content")
    os.symlink("f", "link")
    return describe("link")


@case
def stat_follow_symlink(c: Case) -> Json:
    write("f", "content")
    os.symlink("f", "link")
    return describe("link", follow=True)


@case
def stat_dangling_follow(c: Case) -> Json:
    os.symlink("nowhere", "link")
    return describe("link", follow=True)


@case
def stat_fifo(c: Case) -> Json:
    os.mkfifo("p", 0o640)
    return describe("p")


@case
def stat_missing(c: Case) -> Json:
    return describe("missing")


@case
def stat_through_file(c: Case) -> Json:
    write("f")
    return describe("f/x")


@case
def stat_trailing_slash_file(c: Case) -> Json:
    write("f")
    return describe("f/")


@case
def stat_trailing_slash_symlink_to_dir(c: Case) -> Json:
    # a trailing slash makes even lstat follow the symlink
    os.mkdir("d")
    os.symlink("d", "link")
    return describe("link/")


@case
def stat_empty_path(c: Case) -> Json:
    return describe("")


@case
def stat_loop(c: Case) -> Json:
    os.symlink("loop", "loop")
    return describe("loop", follow=True)


@case
def stat_name_too_long(c: Case) -> Json:
    return describe("n" * 256)


@case
def stat_fstat(c: Case) -> Json:
    write("f", "content")
    return normalize(os.fstat(c.open("f", RDONLY)))


@case
def stat_fstatat_dirfd_nofollow(c: Case) -> Json:
    os.mkdir("d")
    os.symlink("target", "d/link")
    return normalize(os.stat("link", dir_fd=c.open("d", RDONLY), follow_symlinks=False))


@case
def stat_statx_file(c: Case) -> Json:
    write("f", "12345", 0o640)
    os.utime("f", ns=(A_NS, M_NS))
    return statx("f")


@case
def stat_statx_symlink_nofollow(c: Case) -> Json:
    os.symlink("target", "link")
    result = statx("link", AT_SYMLINK_NOFOLLOW)
    del result["mtime_ns"]  # not set by the case
    return result


@case
def stat_statx_empty_path(c: Case) -> Json:
    write("f", "content")
    os.utime("f", ns=(A_NS, M_NS))
    return statx("", AT_EMPTY_PATH, dirfd=c.open("f", os.O_PATH))


@case
def stat_statx_missing(c: Case) -> Json:
    return statx("missing")


@case
def stat_statx_bad_flags(c: Case) -> Json:
    write("f")
    return statx("f", AT_REMOVEDIR)


@case
def stat_statx_reserved_mask(c: Case) -> Json:
    write("f")
    return statx("f", 0, STATX_RESERVED)


@case
def stat_directory_entries(c: Case) -> Json:
    """The names and d_type-derived kinds getdents reports for each kind of file."""
    os.mkdir("d")
    write("f")
    os.symlink("f", "link")
    os.mkfifo("p")
    entries = sorted(os.scandir("."), key=lambda entry: entry.name)
    return [[entry.name, entry.is_dir(follow_symlinks=False), entry.is_symlink()] for entry in entries]


# -- inotify -----------------------------------------------------------------------------------


def inotify_watch(c: Case, path: str, mask: int) -> int:
    fd = c.keep(check(libc.inotify_init1(IN_NONBLOCK | os.O_CLOEXEC)))
    check(libc.inotify_add_watch(fd, b(path), mask))
    return fd


def mask_names(mask: int) -> list[str]:
    return [name for bit, name in INOTIFY_MASKS.items() if mask & bit]


def inotify_events(fd: int) -> list[Json]:
    """Every queued event as [name, [mask names]], and whether MOVED_FROM/TO cookies paired up."""
    data = b""
    while True:
        try:
            data += os.read(fd, 65536)
        except BlockingIOError:
            break
    events: list[Json] = []
    offset = 0
    while offset < len(data):
        _wd, mask, _cookie, length = INOTIFY_EVENT.unpack_from(data, offset)
        start = offset + INOTIFY_EVENT.size
        name = data[start : start + length].rstrip(b"\0").decode()
        events.append([name, mask_names(mask)])
        offset = start + length
    return events


def inotify_cookies(fd: int) -> list[int]:
    data = os.read(fd, 65536)
    cookies, offset = [], 0
    while offset < len(data):
        _wd, _mask, cookie, length = INOTIFY_EVENT.unpack_from(data, offset)
        cookies.append(cookie)
        offset += INOTIFY_EVENT.size + length
    return cookies


DIR_EVENTS = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200  # MODIFY ATTRIB CLOSE_WRITE MOVED_* CREATE DELETE


@case
def inotify_file_create_modify_delete(c: Case) -> Json:
    fd = inotify_watch(c, ".", DIR_EVENTS)
    write("f", "content")
    os.chmod("f", 0o600)
    os.unlink("f")
    return inotify_events(fd)


@case
def inotify_dir_create_delete(c: Case) -> Json:
    fd = inotify_watch(c, ".", DIR_EVENTS)
    os.mkdir("d")
    os.rmdir("d")
    return inotify_events(fd)


@case
def inotify_rename(c: Case) -> Json:
    write("a")
    fd = inotify_watch(c, ".", DIR_EVENTS)
    os.rename("a", "b")
    return inotify_events(fd)


@case
def inotify_rename_cookies_match(c: Case) -> Json:
    write("a")
    fd = inotify_watch(c, ".", 0x40 | 0x80)
    os.rename("a", "b")
    cookies = inotify_cookies(fd)
    return {"events": len(cookies), "paired": len(set(cookies)) == 1}


@case
def inotify_symlink_link_mknod(c: Case) -> Json:
    write("f")
    fd = inotify_watch(c, ".", DIR_EVENTS)
    os.symlink("f", "link")
    os.link("f", "hard")
    os.mkfifo("p")
    return inotify_events(fd)


@case
def inotify_open_append_truncate(c: Case) -> Json:
    write("f", "content")
    fd = inotify_watch(c, ".", DIR_EVENTS | 0x20 | 0x10)
    os.close(os.open("f", WRONLY | os.O_APPEND))
    os.truncate("f", 1)
    return inotify_events(fd)


@case
def inotify_watch_file(c: Case) -> Json:
    write("f")
    fd = inotify_watch(c, "f", 0x2 | 0x4 | 0x400)
    write("f", "new")
    os.chmod("f", 0o600)
    os.unlink("f")
    return inotify_events(fd)


@case
def inotify_no_events(c: Case) -> Json:
    write("f")
    fd = inotify_watch(c, ".", DIR_EVENTS)
    read("f")
    return inotify_events(fd)


@case
def inotify_watch_missing(c: Case) -> Json:
    inotify_watch(c, "missing", DIR_EVENTS)


@case
def inotify_onlydir_on_file(c: Case) -> Json:
    write("f")
    inotify_watch(c, "f", DIR_EVENTS | IN_ONLYDIR)


@case
def inotify_dont_follow_symlink(c: Case) -> Json:
    os.symlink("nowhere", "link")
    inotify_watch(c, "link", 0x4 | IN_DONT_FOLLOW)


@case
def inotify_zero_mask(c: Case) -> Json:
    inotify_watch(c, ".", 0)


# -- fd I/O: fallocate, copy_file_range, sendfile, read and write ---------------------------------


@case
def io_fallocate(c: Case) -> Json:
    c.stat_after("f")
    fallocate(c.open("f", RDWR | CREAT), 0, 0, 8192)


@case
def io_fallocate_keep_size(c: Case) -> Json:
    write("f", "abc")
    c.stat_after("f")
    fallocate(c.open("f", RDWR), FALLOC_FL_KEEP_SIZE, 0, 8192)


@case
def io_fallocate_punch_hole(c: Case) -> Json:
    write("f", "a" * 8192)
    c.stat_after("f")
    fallocate(c.open("f", RDWR), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096)
    return read("f").count("\0")


@case
def io_fallocate_zero_range(c: Case) -> Json:
    write("f", "a" * 8192)
    c.stat_after("f")
    fallocate(c.open("f", RDWR), FALLOC_FL_ZERO_RANGE, 4096, 8192)
    return read("f").count("\0")


@case
def io_fallocate_punch_without_keep_size(c: Case) -> Json:
    write("f", "a" * 8192)
    fallocate(c.open("f", RDWR), FALLOC_FL_PUNCH_HOLE, 0, 4096)


@case
def io_fallocate_rdonly_fd(c: Case) -> Json:
    write("f")
    fallocate(c.open("f", RDONLY), 0, 0, 4096)


@case
def io_fallocate_negative_length(c: Case) -> Json:
    write("f")
    fallocate(c.open("f", RDWR), 0, 0, -1)


@case
def io_posix_fallocate(c: Case) -> Json:
    c.stat_after("f")
    os.posix_fallocate(c.open("f", RDWR | CREAT), 0, 5000)


@case
def io_copy_file_range(c: Case) -> Json:
    write("src", "hello world")
    count = os.copy_file_range(c.open("src", RDONLY), c.open("dst", WRONLY | CREAT), 100)
    return {"count": count, "dst": read("dst")}


@case
def io_copy_file_range_offsets(c: Case) -> Json:
    write("src", "hello world")
    write("dst", "0123456789")
    count = os.copy_file_range(c.open("src", RDONLY), c.open("dst", WRONLY), 5, 6, 2)
    return {"count": count, "dst": read("dst")}


@case
def io_copy_file_range_overlap(c: Case) -> Json:
    write("f", "0123456789")
    fd = c.open("f", RDWR)
    os.copy_file_range(fd, fd, 5, 0, 2)


@case
def io_copy_file_range_rdonly_destination(c: Case) -> Json:
    write("src", "hello")
    write("dst")
    os.copy_file_range(c.open("src", RDONLY), c.open("dst", RDONLY), 5)


@case
def io_sendfile(c: Case) -> Json:
    write("src", "hello world")
    count = os.sendfile(c.open("dst", WRONLY | CREAT), c.open("src", RDONLY), 6, 100)
    return {"count": count, "dst": read("dst")}


@case
def io_pwrite_pread(c: Case) -> Json:
    fd = c.open("f", RDWR | CREAT)
    os.pwrite(fd, b"xyz", 4)
    return os.pread(fd, 10, 0).hex()


@case
def io_append_pwrite(c: Case) -> Json:
    # Linux ignores pwrite's offset on an O_APPEND fd
    write("f", "ab")
    os.pwrite(c.open("f", WRONLY | os.O_APPEND), b"cd", 0)
    return read("f")


@case
def io_write_rdonly_fd(c: Case) -> Json:
    write("f")
    os.write(c.open("f", RDONLY), b"x")


@case
def io_read_dir(c: Case) -> Json:
    os.mkdir("d")
    os.read(c.open("d", RDONLY), 10)


@case
def io_write_after_unlink(c: Case) -> Json:
    fd = c.open("f", RDWR | CREAT)
    os.unlink("f")
    os.write(fd, b"orphan")
    return {"read": os.pread(fd, 10, 0).decode(), "listing": listing()}


@case
def io_seek_data_hole(c: Case) -> Json:
    fd = c.open("f", RDWR | CREAT)
    os.ftruncate(fd, 1 << 20)
    os.pwrite(fd, b"x", 1 << 19)
    # a file system may report no holes at all, but the same one must answer the same
    return {"data": os.lseek(fd, 0, os.SEEK_DATA), "end": os.lseek(fd, 0, os.SEEK_END)}


# -- locks: flock, POSIX record locks, open file description locks --------------------------------


@case
def lock_flock_conflict(c: Case) -> Json:
    write("f")
    fcntl.flock(c.open("f", RDONLY), fcntl.LOCK_EX)
    fcntl.flock(c.open("f", RDONLY), fcntl.LOCK_EX | fcntl.LOCK_NB)


@case
def lock_flock_shared_shared(c: Case) -> Json:
    write("f")
    fcntl.flock(c.open("f", RDONLY), fcntl.LOCK_SH)
    fcntl.flock(c.open("f", RDONLY), fcntl.LOCK_SH | fcntl.LOCK_NB)


@case
def lock_flock_shared_then_exclusive(c: Case) -> Json:
    write("f")
    fcntl.flock(c.open("f", RDONLY), fcntl.LOCK_SH)
    fcntl.flock(c.open("f", RDONLY), fcntl.LOCK_EX | fcntl.LOCK_NB)


@case
def lock_flock_dup_shares_lock(c: Case) -> Json:
    write("f")
    fd = c.open("f", RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    fcntl.flock(c.keep(os.dup(fd)), fcntl.LOCK_EX | fcntl.LOCK_NB)


@case
def lock_flock_after_unlock(c: Case) -> Json:
    write("f")
    first = c.open("f", RDONLY)
    fcntl.flock(first, fcntl.LOCK_EX)
    fcntl.flock(first, fcntl.LOCK_UN)
    fcntl.flock(c.open("f", RDONLY), fcntl.LOCK_EX | fcntl.LOCK_NB)


@case
def lock_flock_independent_of_posix(c: Case) -> Json:
    write("f")
    fcntl.flock(c.open("f", RDWR), fcntl.LOCK_EX)
    lock(c.open("f", RDWR), fcntl.F_SETLK, fcntl.F_WRLCK)


@case
def lock_flock_bad_operation(c: Case) -> Json:
    write("f")
    check(libc.flock(c.open("f", RDONLY), 0))


@case
def lock_posix_same_process(c: Case) -> Json:
    # POSIX locks belong to the process: two fds of one process never conflict
    write("f")
    lock(c.open("f", RDWR), fcntl.F_SETLK, fcntl.F_WRLCK)
    lock(c.open("f", RDWR), fcntl.F_SETLK, fcntl.F_WRLCK)


@case
def lock_posix_child_conflict(c: Case) -> Json:
    write("f")
    lock(c.open("f", RDWR), fcntl.F_SETLK, fcntl.F_WRLCK)
    return in_child(lambda: lock(os.open("f", RDWR), fcntl.F_SETLK, fcntl.F_WRLCK))


@case
def lock_posix_child_getlk(c: Case) -> Json:
    write("f")
    lock(c.open("f", RDWR), fcntl.F_SETLK, fcntl.F_WRLCK)

    def probe_lock() -> Json:
        found = lock(os.open("f", RDWR), fcntl.F_GETLK, fcntl.F_RDLCK)
        found["pid"] = found["pid"] == os.getppid()  # which process holds it, without its number
        return found

    return in_child(probe_lock)


@case
def lock_posix_released_by_any_close(c: Case) -> Json:
    # closing any fd of the file drops the process's POSIX locks on it
    write("f")
    lock(c.open("f", RDWR), fcntl.F_SETLK, fcntl.F_WRLCK)
    os.close(os.open("f", RDONLY))
    return in_child(lambda: lock(os.open("f", RDWR), fcntl.F_SETLK, fcntl.F_WRLCK))


@case
def lock_posix_write_lock_on_rdonly_fd(c: Case) -> Json:
    write("f")
    lock(c.open("f", RDONLY), fcntl.F_SETLK, fcntl.F_WRLCK)


@case
def lock_ofd_conflict(c: Case) -> Json:
    # OFD locks belong to the open file description: two opens conflict within one process
    write("f")
    lock(c.open("f", RDWR), F_OFD_SETLK, fcntl.F_WRLCK)
    lock(c.open("f", RDWR), F_OFD_SETLK, fcntl.F_WRLCK)


@case
def lock_ofd_same_description(c: Case) -> Json:
    write("f")
    fd = c.open("f", RDWR)
    lock(fd, F_OFD_SETLK, fcntl.F_WRLCK)
    lock(c.keep(os.dup(fd)), F_OFD_SETLK, fcntl.F_WRLCK)


@case
def lock_ofd_read_read(c: Case) -> Json:
    write("f")
    lock(c.open("f", RDONLY), F_OFD_SETLK, fcntl.F_RDLCK)
    lock(c.open("f", RDONLY), F_OFD_SETLK, fcntl.F_RDLCK)


@case
def lock_ofd_against_posix(c: Case) -> Json:
    write("f")
    lock(c.open("f", RDWR), F_OFD_SETLK, fcntl.F_WRLCK)
    lock(c.open("f", RDWR), fcntl.F_SETLK, fcntl.F_WRLCK)


@case
def lock_ofd_getlk(c: Case) -> Json:
    # the holder of an OFD lock is reported as pid -1
    write("f")
    lock(c.open("f", RDWR), F_OFD_SETLK, fcntl.F_WRLCK)
    return lock(c.open("f", RDWR), F_OFD_GETLK, fcntl.F_RDLCK)


@case
def lock_ofd_nonzero_pid(c: Case) -> Json:
    write("f")
    lock(c.open("f", RDWR), F_OFD_SETLK, fcntl.F_WRLCK, pid=1)


# -- mmap --------------------------------------------------------------------------------------


@case
def mmap_shared_write_read_back(c: Case) -> Json:
    write("f", "." * 4096)
    fd = c.open("f", RDWR)
    with mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as region:
        region[:5] = b"hello"
        # no msync: a shared mapping and read() see the same page cache
        through_fd = os.pread(fd, 8, 0).decode()
    return {"read": through_fd, "other open": read("f")[:8]}


@case
def mmap_private_write_hidden(c: Case) -> Json:
    write("f", "." * 4096)
    fd = c.open("f", RDWR)
    with mmap.mmap(fd, 4096, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE) as region:
        region[:5] = b"hello"
        return {"mapping": region[:8].decode(), "read": os.pread(fd, 8, 0).decode()}


@case
def mmap_shared_write_rdonly_fd(c: Case) -> Json:
    write("f", "." * 4096)
    mmap.mmap(c.open("f", RDONLY), 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE).close()


@case
def mmap_private_write_rdonly_fd(c: Case) -> Json:
    write("f", "." * 4096)
    mmap.mmap(c.open("f", RDONLY), 4096, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE).close()


@case
def mmap_extend_then_map(c: Case) -> Json:
    fd = c.open("f", RDWR | CREAT)
    os.ftruncate(fd, 4096)
    with mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as region:
        region[4090:4096] = b"at end"
    data = read("f")
    return {"size": len(data), "tail": data[-6:]}


@case
def mmap_path_fd(c: Case) -> Json:
    write("f", "." * 4096)
    mmap.mmap(c.open("f", os.O_PATH), 4096, mmap.MAP_SHARED, mmap.PROT_READ).close()


# -- unix-domain sockets bound to paths -----------------------------------------------------------


def unix_socket(kind: int = socket.SOCK_STREAM) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, kind)
    sock.settimeout(5)  # a failure to answer is recorded, never a hang
    return sock


@case
def socket_bind_creates_file(c: Case) -> Json:
    with unix_socket() as server:
        c.stat_after("s")
        server.bind("s")
        return listing()


@case
def socket_bind_umask(c: Case) -> Json:
    os.umask(0o077)
    with unix_socket() as server:
        c.stat_after("s")
        server.bind("s")


@case
def socket_connect_exchange(c: Case) -> Json:
    with unix_socket() as server, unix_socket() as client:
        server.bind("s")
        server.listen(1)
        client.connect("s")
        connection, _ = server.accept()
        with connection:
            client.sendall(b"ping")
            received = connection.recv(16)
            connection.sendall(b"pong")
            return [received.decode(), client.recv(16).decode()]


@case
def socket_connect_through_symlink(c: Case) -> Json:
    with unix_socket() as server, unix_socket() as client:
        server.bind("s")
        server.listen(1)
        os.symlink("s", "link")
        client.connect("link")


@case
def socket_connect_from_subdir_relative(c: Case) -> Json:
    os.mkdir("d")
    with unix_socket() as server, unix_socket() as client:
        server.bind("d/s")
        server.listen(1)
        os.chdir("d")
        client.connect("s")


@case
def socket_bind_existing_socket(c: Case) -> Json:
    with unix_socket() as first, unix_socket() as second:
        first.bind("s")
        second.bind("s")


@case
def socket_bind_existing_file(c: Case) -> Json:
    write("s")
    with unix_socket() as server:
        server.bind("s")


@case
def socket_bind_dangling_symlink(c: Case) -> Json:
    # bind never follows a symlink: the name is taken
    os.symlink("target", "s")
    with unix_socket() as server:
        c.after(listing)
        server.bind("s")


@case
def socket_bind_missing_dir(c: Case) -> Json:
    with unix_socket() as server:
        server.bind("missing/s")


@case
def socket_bind_through_file(c: Case) -> Json:
    write("f")
    with unix_socket() as server:
        server.bind("f/s")


@case
def socket_bind_unwritable_dir(c: Case) -> Json:
    os.mkdir("d", 0o555)
    with unix_socket() as server:
        server.bind("d/s")


@case
def socket_connect_missing(c: Case) -> Json:
    with unix_socket() as client:
        client.connect("missing")


@case
def socket_connect_regular_file(c: Case) -> Json:
    write("f")
    with unix_socket() as client:
        client.connect("f")


@case
def socket_connect_not_listening(c: Case) -> Json:
    with unix_socket() as server, unix_socket() as client:
        server.bind("s")
        client.connect("s")


@case
def socket_connect_wrong_type(c: Case) -> Json:
    with unix_socket() as server, unix_socket(socket.SOCK_DGRAM) as client:
        server.bind("s")
        server.listen(1)
        client.connect("s")


@case
def socket_connect_unwritable_socket(c: Case) -> Json:
    # connecting needs write permission on the socket file (root has it regardless)
    with unix_socket() as server, unix_socket() as client:
        server.bind("s")
        server.listen(1)
        os.chmod("s", 0o555)
        client.connect("s")


@case
def socket_datagram_exchange(c: Case) -> Json:
    with unix_socket(socket.SOCK_DGRAM) as server, unix_socket(socket.SOCK_DGRAM) as client:
        server.bind("server")
        client.bind("client")
        client.sendto(b"ping", "server")
        data, sender = server.recvfrom(16)
        server.sendto(b"pong", sender)
        return [data.decode(), os.path.basename(sender), client.recv(16).decode()]


@case
def socket_rebind_after_unlink(c: Case) -> Json:
    with unix_socket() as first, unix_socket() as second:
        first.bind("s")
        os.unlink("s")
        second.bind("s")
        return describe("s")["type"]


@case
def socket_getsockname(c: Case) -> Json:
    with unix_socket() as server:
        server.bind("s")
        return server.getsockname()


# -- permissions: umask, setgid directories, and a second user (root runs only) -------------------


@case
def perm_umask_file(c: Case) -> Json:
    os.umask(0o027)
    c.stat_after("f")
    write("f", mode=0o666)


@case
def perm_umask_dir(c: Case) -> Json:
    os.umask(0o027)
    c.stat_after("d")
    os.mkdir("d", 0o777)


@case
def perm_umask_zero(c: Case) -> Json:
    os.umask(0)
    c.stat_after("f")
    write("f", mode=0o666)


@case
def perm_setgid_dir_inheritance(c: Case) -> Json:
    os.mkdir("g")
    if os.geteuid() == 0:
        os.chown("g", -1, OTHER_GID)  # a group root is not in, so that inheritance shows
    os.chmod("g", 0o2775)
    write("g/f")
    os.mkdir("g/sub")
    os.mkfifo("g/p")
    return {name: describe(f"g/{name}") for name in ("f", "sub", "p")} | {".": describe("g")}


@case
def perm_setgid_dir_creat_setgid_file(c: Case) -> Json:
    # a new file asking for setgid in a group its creator is not in loses the bit (unless root)
    os.mkdir("g")
    if os.geteuid() == 0:
        os.chown("g", -1, OTHER_GID)
    os.chmod("g", 0o2777)
    c.stat_after("g/f")
    c.open("g/f", WRONLY | CREAT, 0o2755)


def as_other_user(c: Case, action: Callable[[], Json], groups: tuple[int, ...] = ()) -> Json:
    """Run action as uid and gid 1000 in a child; only root can become another user.

    Root in a user namespace that maps no other id (a rootless VM) cannot either: the
    case is then skipped, rather than recording the errno of the switch as its result.
    """
    c.need_root()

    def switch_then_act() -> Json:
        try:
            os.setgroups(list(groups))
            os.setresgid(OTHER_GID, OTHER_GID, OTHER_GID)
            os.setresuid(OTHER_UID, OTHER_UID, OTHER_UID)
        except OSError as error:
            raise Skipped from error
        return action()

    return in_child(switch_then_act)


def owned_by_root(c: Case, path: str, mode: int, group: int = 0) -> str:
    """A file owned by root with a given mode, the object of the second-user cases."""
    c.need_root()
    write(path, "root's", mode)
    os.chown(path, 0, group)
    os.chmod(path, mode)
    return path


@case
def perm_sticky_other_cannot_unlink(c: Case) -> Json:
    c.need_root()
    os.mkdir("t", 0o1777)
    os.chmod("t", 0o1777)
    owned_by_root(c, "t/f", 0o666)
    c.after(lambda: listing("t"))
    as_other_user(c, lambda: os.unlink("t/f"))


@case
def perm_sticky_other_cannot_rename(c: Case) -> Json:
    c.need_root()
    os.mkdir("t")
    os.chmod("t", 0o1777)
    owned_by_root(c, "t/f", 0o666)
    c.after(lambda: listing("t"))
    as_other_user(c, lambda: os.rename("t/f", "t/g"))


@case
def perm_sticky_owner_can_unlink(c: Case) -> Json:
    c.need_root()
    os.mkdir("t")
    os.chmod("t", 0o1777)
    write("t/f")
    os.chown("t/f", OTHER_UID, OTHER_GID)
    c.after(lambda: listing("t"))
    as_other_user(c, lambda: os.unlink("t/f"))


@case
def perm_no_sticky_other_can_unlink(c: Case) -> Json:
    c.need_root()
    os.mkdir("t")
    os.chmod("t", 0o777)
    owned_by_root(c, "t/f", 0o644)
    c.after(lambda: listing("t"))
    as_other_user(c, lambda: os.unlink("t/f"))


@case
def perm_other_cannot_write(c: Case) -> Json:
    owned_by_root(c, "f", 0o644)
    as_other_user(c, lambda: os.close(os.open("f", WRONLY)))


@case
def perm_other_can_read(c: Case) -> Json:
    owned_by_root(c, "f", 0o644)
    return as_other_user(c, lambda: read("f"))


@case
def perm_other_cannot_truncate(c: Case) -> Json:
    owned_by_root(c, "f", 0o644)
    c.stat_after("f")
    as_other_user(c, lambda: os.truncate("f", 0))


@case
def perm_group_write_primary(c: Case) -> Json:
    owned_by_root(c, "f", 0o664, group=OTHER_GID)
    as_other_user(c, lambda: write("f", "group"))
    return read("f")


@case
def perm_group_write_supplementary(c: Case) -> Json:
    owned_by_root(c, "f", 0o664, group=SUPPLEMENTARY_GID)
    as_other_user(c, lambda: write("f", "group"), groups=(SUPPLEMENTARY_GID,))
    return read("f")


@case
def perm_group_write_not_member(c: Case) -> Json:
    owned_by_root(c, "f", 0o664, group=SUPPLEMENTARY_GID)
    as_other_user(c, lambda: write("f", "group"))


@case
def perm_group_denies_owner_class_wins(c: Case) -> Json:
    # only one class applies: the owner's bits, even if the group's would allow more
    owned_by_root(c, "f", 0o064)
    os.chown("f", OTHER_UID, OTHER_GID)
    as_other_user(c, lambda: read("f"))


@case
def perm_other_cannot_chmod(c: Case) -> Json:
    owned_by_root(c, "f", 0o666)
    c.stat_after("f")
    as_other_user(c, lambda: os.chmod("f", 0o777))


@case
def perm_other_cannot_chown(c: Case) -> Json:
    owned_by_root(c, "f", 0o666)
    c.stat_after("f")
    as_other_user(c, lambda: os.chown("f", OTHER_UID, OTHER_GID))


@case
def perm_owner_cannot_give_away(c: Case) -> Json:
    c.need_root()
    write("f")
    os.chown("f", OTHER_UID, OTHER_GID)
    c.stat_after("f")
    as_other_user(c, lambda: os.chown("f", 0, -1))


@case
def perm_owner_chgrp_to_member_group(c: Case) -> Json:
    c.need_root()
    write("f")
    os.chown("f", OTHER_UID, OTHER_GID)
    c.stat_after("f")
    as_other_user(c, lambda: os.chown("f", -1, SUPPLEMENTARY_GID), groups=(SUPPLEMENTARY_GID,))


@case
def perm_other_cannot_set_explicit_times(c: Case) -> Json:
    owned_by_root(c, "f", 0o666)
    as_other_user(c, lambda: os.utime("f", ns=(A_NS, M_NS)))


@case
def perm_other_can_touch_writable(c: Case) -> Json:
    owned_by_root(c, "f", 0o666)
    os.utime("f", ns=(A_NS, M_NS))
    as_other_user(c, lambda: os.utime("f"))
    return [value != old for value, old in zip(times("f"), (A_NS, M_NS), strict=True)]


@case
def perm_other_cannot_create_in_root_dir(c: Case) -> Json:
    c.need_root()
    os.mkdir("d", 0o755)
    as_other_user(c, lambda: write("d/f"))


@case
def perm_other_cannot_search(c: Case) -> Json:
    c.need_root()
    os.mkdir("d", 0o700)
    write("d/f", mode=0o666)
    as_other_user(c, lambda: read("d/f"))


@case
def perm_other_creates_own_file(c: Case) -> Json:
    c.need_root()
    os.mkdir("d")
    os.chmod("d", 0o777)
    c.stat_after("d/f")
    as_other_user(c, lambda: write("d/f", "mine"))


@case
def perm_other_mkdir_in_setgid_dir(c: Case) -> Json:
    c.need_root()
    os.mkdir("g")
    os.chown("g", -1, SUPPLEMENTARY_GID)
    os.chmod("g", 0o2777)
    c.stat_after("g/d")
    as_other_user(c, lambda: os.mkdir("g/d"))


@case
def perm_other_cannot_set_user_xattr(c: Case) -> Json:
    owned_by_root(c, "f", 0o644)
    as_other_user(c, lambda: os.setxattr("f", "user.key", b"v"))


@case
def perm_other_write_clears_setuid(c: Case) -> Json:
    owned_by_root(c, "f", 0o6777)
    c.stat_after("f")
    as_other_user(c, lambda: write("f", "changed"))


@case
def perm_other_cannot_hardlink(c: Case) -> Json:
    # with fs.protected_hardlinks=1 one may not link a file one could not write
    os.mkdir("d")
    os.chmod("d", 0o777)
    owned_by_root(c, "d/f", 0o600)
    as_other_user(c, lambda: os.link("d/f", "d/g"))


@case
def perm_other_access_w_ok(c: Case) -> Json:
    owned_by_root(c, "f", 0o644)
    as_other_user(c, lambda: access("f", os.W_OK))


@case
def perm_other_cannot_unlink_in_root_dir(c: Case) -> Json:
    c.need_root()
    os.mkdir("d", 0o755)
    write("d/f", mode=0o666)
    c.after(lambda: listing("d"))
    as_other_user(c, lambda: os.unlink("d/f"))


# -- a read-only mount (--ro): EROFS -------------------------------------------------------------


@case
def ro_open_rdonly(c: Case) -> Json:
    c.open(c.ro("file"), RDONLY)


@case
def ro_open_wronly(c: Case) -> Json:
    c.open(c.ro("file"), WRONLY)


@case
def ro_open_rdwr(c: Case) -> Json:
    c.open(c.ro("file"), RDWR)


@case
def ro_open_trunc(c: Case) -> Json:
    c.open(c.ro("file"), RDONLY | os.O_TRUNC)


@case
def ro_open_creat_new(c: Case) -> Json:
    c.open(c.ro("new"), WRONLY | CREAT)


@case
def ro_open_creat_existing_rdonly(c: Case) -> Json:
    # nothing to create and nothing to write: allowed
    c.open(c.ro("file"), RDONLY | CREAT)


@case
def ro_open_creat_excl_existing(c: Case) -> Json:
    c.open(c.ro("file"), WRONLY | CREAT | os.O_EXCL)


@case
def ro_openat2_creat(c: Case) -> Json:
    c.keep(openat2(c.ro("new"), WRONLY | CREAT, 0o644))


@case
def ro_tmpfile(c: Case) -> Json:
    c.open(c.ro("dir"), os.O_TMPFILE | RDWR, 0o600)


@case
def ro_creat_libc(c: Case) -> Json:
    c.keep(check(libc.creat(b(c.ro("new")), 0o644)))


@case
def ro_mkdir(c: Case) -> Json:
    os.mkdir(c.ro("new"))


@case
def ro_mkdir_existing(c: Case) -> Json:
    os.mkdir(c.ro("dir"))


@case
def ro_mknod_fifo(c: Case) -> Json:
    os.mkfifo(c.ro("fifo"))


@case
def ro_unlink(c: Case) -> Json:
    os.unlink(c.ro("file"))


@case
def ro_unlink_missing(c: Case) -> Json:
    os.unlink(c.ro("missing"))


@case
def ro_rmdir(c: Case) -> Json:
    os.rmdir(c.ro("dir"))


@case
def ro_rename(c: Case) -> Json:
    os.rename(c.ro("file"), c.ro("renamed"))


@case
def ro_link(c: Case) -> Json:
    os.link(c.ro("file"), c.ro("hard"))


@case
def ro_symlink(c: Case) -> Json:
    os.symlink("file", c.ro("link"))


@case
def ro_chmod(c: Case) -> Json:
    os.chmod(c.ro("file"), 0o600)


@case
def ro_fchmod(c: Case) -> Json:
    os.fchmod(c.open(c.ro("file"), RDONLY), 0o600)


@case
def ro_chown(c: Case) -> Json:
    os.chown(c.ro("file"), -1, -1)


@case
def ro_fchown(c: Case) -> Json:
    os.fchown(c.open(c.ro("file"), RDONLY), -1, -1)


@case
def ro_truncate(c: Case) -> Json:
    os.truncate(c.ro("file"), 0)


@case
def ro_utime(c: Case) -> Json:
    os.utime(c.ro("file"), ns=(A_NS, M_NS))


@case
def ro_futimens(c: Case) -> Json:
    os.utime(c.open(c.ro("file"), RDONLY), ns=(A_NS, M_NS))


@case
def ro_setxattr(c: Case) -> Json:
    os.setxattr(c.ro("file"), "user.key", b"v")


@case
def ro_fsetxattr(c: Case) -> Json:
    os.setxattr(c.open(c.ro("file"), RDONLY), "user.key", b"v")


@case
def ro_getxattr_missing(c: Case) -> Json:
    os.getxattr(c.ro("file"), "user.missing")


@case
def ro_access_w_ok(c: Case) -> Json:
    access(c.ro("file"), os.W_OK)


@case
def ro_access_w_ok_dir(c: Case) -> Json:
    access(c.ro("dir"), os.W_OK)


@case
def ro_access_r_ok(c: Case) -> Json:
    access(c.ro("file"), os.R_OK)


@case
def ro_statfs(c: Case) -> Json:
    return statfs(c.ro("dir"))["rdonly"]


@case
def ro_socket_bind(c: Case) -> Json:
    path = c.ro("dir/s")
    os.chdir(os.path.dirname(path))  # a short relative name fits in sun_path wherever RO_DIR is
    with unix_socket() as server:
        server.bind("s")


@case
def ro_inotify_watch(c: Case) -> Json:
    inotify_watch(c, c.ro("dir"), DIR_EVENTS)


# -- another mount (--other): EXDEV --------------------------------------------------------------


@case
def xdev_rename_file(c: Case) -> Json:
    other = c.other()
    write("f", "content")
    c.after(listing)
    os.rename("f", os.path.join(other, "f"))


@case
def xdev_rename_dir(c: Case) -> Json:
    other = c.other()
    os.mkdir("d")
    os.rename("d", os.path.join(other, "d"))


@case
def xdev_rename_over_existing(c: Case) -> Json:
    other = c.other()
    write("f")
    write(os.path.join(other, "f"))
    os.rename("f", os.path.join(other, "f"))


@case
def xdev_renameat2_noreplace(c: Case) -> Json:
    other = c.other()
    write("f")
    renameat2("f", os.path.join(other, "f"), RENAME_NOREPLACE)


@case
def xdev_renameat2_exchange(c: Case) -> Json:
    other = c.other()
    write("f", "here")
    write(os.path.join(other, "f"), "there")
    renameat2("f", os.path.join(other, "f"), RENAME_EXCHANGE)


@case
def xdev_renameat_dirfds(c: Case) -> Json:
    other = c.other()
    write("f")
    os.rename("f", "g", src_dir_fd=c.open(".", RDONLY), dst_dir_fd=c.open(other, RDONLY))


@case
def xdev_link(c: Case) -> Json:
    other = c.other()
    write("f")
    os.link("f", os.path.join(other, "hard"))


@case
def xdev_link_follow_symlink_across(c: Case) -> Json:
    other = c.other()
    write(os.path.join(other, "f"))
    os.symlink(os.path.join(other, "f"), "link")
    check(libc.linkat(AT_FDCWD, b"link", AT_FDCWD, b"hard", AT_SYMLINK_FOLLOW))


@case
def xdev_write_through_symlink(c: Case) -> Json:
    other = c.other()
    os.symlink(os.path.join(other, "f"), "link")
    write("link", "across")
    return {"other": listing(other), "content": read(os.path.join(other, "f"))}


@case
def xdev_openat2_no_xdev_symlink(c: Case) -> Json:
    other = c.other()
    write(os.path.join(other, "f"))
    os.symlink(os.path.join(other, "f"), "link")
    c.keep(openat2("link", RDONLY, resolve=RESOLVE_NO_XDEV))


@case
def xdev_copy_file_range(c: Case) -> Json:
    other = c.other()
    write("src", "hello")
    count = os.copy_file_range(c.open("src", RDONLY), c.open(os.path.join(other, "dst"), WRONLY | CREAT), 5)
    return {"count": count, "dst": read(os.path.join(other, "dst"))}


@case
def xdev_sendfile(c: Case) -> Json:
    other = c.other()
    write("src", "hello")
    count = os.sendfile(c.open(os.path.join(other, "dst"), WRONLY | CREAT), c.open("src", RDONLY), 0, 5)
    return {"count": count, "dst": read(os.path.join(other, "dst"))}


@case
def xdev_statfs(c: Case) -> Json:
    return statfs(c.other())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
