"""Extended attributes: setxattr(2), getxattr(2), listxattr(2), removexattr(2) and their
l* and f* forms."""

import ctypes
import os

from observe import Json, user_xattrs, write
from runner import Case, case
from system import RDONLY, check, libc

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
