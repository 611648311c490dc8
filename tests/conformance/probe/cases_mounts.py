"""Other mounts: a read-only one (--ro), where changes fail with EROFS, and another
writable one (--other), where cross-mount links and renames fail with EXDEV."""

import os

from cases_inotify import DIR_EVENTS, inotify_watch
from cases_sockets import unix_socket
from cases_times import A_NS, M_NS
from observe import Json, listing, read, write
from runner import Case, case
from system import (
    AT_FDCWD,
    AT_SYMLINK_FOLLOW,
    CREAT,
    RDONLY,
    RDWR,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    RESOLVE_NO_XDEV,
    WRONLY,
    access,
    b,
    check,
    libc,
    openat2,
    renameat2,
    statfs,
)

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
