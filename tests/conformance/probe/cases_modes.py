"""Modes and owners: chmod(2) and its fd and *at forms, fchmodat2; chown(2), lchown(2),
fchown(2) and fchownat(2)."""

import os
import stat

from observe import Json, describe, write
from runner import Case, case
from system import (
    AT_EMPTY_PATH,
    AT_FDCWD,
    AT_REMOVEDIR,
    AT_SYMLINK_NOFOLLOW,
    OTHER_GID,
    OTHER_UID,
    RDONLY,
    check,
    fchmodat2,
    libc,
)

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
