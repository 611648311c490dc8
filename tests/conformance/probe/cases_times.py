"""Sizes and times: truncate(2) and ftruncate(2); utimensat(2), utimes(2), futimes(3) and
futimens(3). A_NS and M_NS are the times cases set explicitly, used by later families too."""

import os

from observe import Json, read, times, write
from runner import Case, case
from system import (
    AT_EMPTY_PATH,
    AT_REMOVEDIR,
    AT_SYMLINK_NOFOLLOW,
    RDONLY,
    UTIME_NOW,
    UTIME_OMIT,
    WRONLY,
    Timespec,
    Timeval,
    check,
    libc,
    utimensat,
)

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
