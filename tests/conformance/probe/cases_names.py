"""Making and removing names: mkdir(2), mknod(2) and mkfifo(3), unlink(2), rmdir(2)."""

import os
import stat

from observe import Json, describe, listing, normalize, read, read_fd, write
from runner import Case, case
from system import AT_FDCWD, AT_REMOVEDIR, RDONLY, check, libc

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
