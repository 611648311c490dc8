"""Asking about files: statfs(2) and fstatfs(2); access(2), faccessat(2) and faccessat2;
stat(2), lstat(2), fstatat(2) and statx(2)."""

import os

from cases_times import A_NS, M_NS
from observe import Json, describe, normalize, write
from runner import Case, case
from system import (
    AT_EACCESS,
    AT_EMPTY_PATH,
    AT_REMOVEDIR,
    AT_SYMLINK_FOLLOW,
    AT_SYMLINK_NOFOLLOW,
    RDONLY,
    STATX_RESERVED,
    access,
    check,
    faccessat2,
    fstatfs,
    libc,
    statfs,
    statx,
)

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
