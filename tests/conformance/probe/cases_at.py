"""The *at calls with relative paths, AT_FDCWD and directory fds; openat2(2) and its
RESOLVE_* flags; O_TMPFILE."""

import ctypes
import os
import stat
import struct

from observe import Json, listing, normalize, read, read_fd, write
from runner import Case, case
from system import (
    AT_EMPTY_PATH,
    AT_FDCWD,
    AT_SYMLINK_FOLLOW,
    CREAT,
    OPEN_HOW_SIZE,
    RDONLY,
    RDWR,
    RESOLVE_BENEATH,
    RESOLVE_CACHED,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    RESOLVE_NO_XDEV,
    WRONLY,
    b,
    check,
    libc,
    openat2,
    syscall,
)

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
