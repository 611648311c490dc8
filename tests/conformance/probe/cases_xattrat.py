"""Extended attributes by the calls of Linux 6.13: setxattrat(2), getxattrat(2),
listxattrat(2) and removexattrat(2), with a dirfd, AT_SYMLINK_NOFOLLOW and AT_EMPTY_PATH,
and setxattrat's and getxattrat's struct xattr_args, sized by the caller."""

import os
from collections.abc import Callable

from observe import Json, observe, write
from runner import Case, case
from system import (
    AT_EMPTY_PATH,
    AT_FDCWD,
    AT_SYMLINK_NOFOLLOW,
    RDONLY,
    getxattrat,
    listxattrat,
    removexattrat,
    setxattrat,
)

BAD_AT_FLAG = 0x8000  # AT_RECURSIVE: a flag the xattr calls do not take


def each(**calls: Callable[[], Json]) -> dict[str, Json]:
    """Each call's value, or the errno name it failed with, in the order given."""
    return {name: observe(call) for name, call in calls.items()}


# -- by path -----------------------------------------------------------------------------


@case
def xattrat_set_get(c: Case) -> Json:
    write("f")
    setxattrat("f", "user.key", b"value")
    return {"getxattrat": getxattrat("f", "user.key"), "getxattr": os.getxattr("f", "user.key").decode()}


@case
def xattrat_list(c: Case) -> Json:
    write("f")
    setxattrat("f", "user.b", b"2")
    setxattrat("f", "user.a", b"1")
    return listxattrat("f")


@case
def xattrat_remove(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"value")
    removexattrat("f", "user.key")
    c.after(lambda: getxattrat("f", "user.key"))
    return listxattrat("f")


@case
def xattrat_get_size_query(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"value")
    return getxattrat("f", "user.key", 0)


@case
def xattrat_small_buffers(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"value")
    return each(get=lambda: getxattrat("f", "user.key", 1), list=lambda: listxattrat("f", size=1))


@case
def xattrat_missing_names(c: Case) -> Json:
    write("f")
    return each(get=lambda: getxattrat("f", "user.missing"), remove=lambda: removexattrat("f", "user.missing"))


@case
def xattrat_create_existing(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"old")
    c.after(lambda: getxattrat("f", "user.key"))
    setxattrat("f", "user.key", b"new", os.XATTR_CREATE)


@case
def xattrat_replace(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"old")
    return each(
        existing=lambda: setxattrat("f", "user.key", b"new", os.XATTR_REPLACE),
        missing=lambda: setxattrat("f", "user.other", b"new", os.XATTR_REPLACE),
        value=lambda: getxattrat("f", "user.key"),
    )


@case
def xattrat_bad_xattr_flags(c: Case) -> Json:
    write("f")
    setxattrat("f", "user.key", b"v", 0x4)


@case
def xattrat_empty_value(c: Case) -> Json:
    write("f")
    setxattrat("f", "user.key", b"")
    return getxattrat("f", "user.key", 0)


@case
def xattrat_value_too_large(c: Case) -> Json:
    write("f")
    setxattrat("f", "user.key", b"v" * 65537)


@case
def xattrat_bad_names(c: Case) -> Json:
    write("f")
    long = "user." + "n" * 251
    return each(
        set_long=lambda: setxattrat("f", long, b"v"),
        set_empty=lambda: setxattrat("missing", "", b"v"),  # the name is checked before the path
        get_long=lambda: getxattrat("f", long),
        remove_empty=lambda: removexattrat("missing", ""),
        set_empty_suffix=lambda: setxattrat("f", "user.", b"v"),
        set_unknown_namespace=lambda: setxattrat("f", "unknown.key", b"v"),
    )


@case
def xattrat_missing_file(c: Case) -> Json:
    return each(
        set=lambda: setxattrat("missing", "user.key", b"v"),
        get=lambda: getxattrat("missing", "user.key"),
        list=lambda: listxattrat("missing"),
        remove=lambda: removexattrat("missing", "user.key"),
        set_in_missing_dir=lambda: setxattrat("missing/f", "user.key", b"v"),
    )


@case
def xattrat_on_dir(c: Case) -> Json:
    os.mkdir("d")
    setxattrat("d", "user.key", b"dir")
    return {"get": getxattrat("d", "user.key"), "list": listxattrat("d")}


@case
def xattrat_on_fifo(c: Case) -> Json:
    # user.* is for regular files and directories only
    os.mkfifo("p")
    return each(set=lambda: setxattrat("p", "user.key", b"v"), get=lambda: getxattrat("p", "user.key"))


@case
def xattrat_readonly_file(c: Case) -> Json:
    # user.* needs write permission on the file, which the owner lacks here (root does not)
    write("f")
    os.setxattr("f", "user.old", b"1")
    os.chmod("f", 0o444)
    return each(
        set=lambda: setxattrat("f", "user.key", b"v"),
        remove=lambda: removexattrat("f", "user.old"),
        list=lambda: listxattrat("f"),
    )


@case
def xattrat_readonly_mount(c: Case) -> Json:
    path = c.ro("file")
    return each(
        set=lambda: setxattrat(path, "user.key", b"v"),
        remove=lambda: removexattrat(path, "user.key"),
        get=lambda: getxattrat(path, "user.key"),
        list=lambda: listxattrat(path),
    )


@case
def xattrat_through_magic_link(c: Case) -> Json:
    write("f")
    link = f"/proc/self/fd/{c.open('f', RDONLY)}"
    setxattrat(link, "user.key", b"linked")
    return {"get": getxattrat(link, "user.key"), "on_f": os.getxattr("f", "user.key").decode()}


# -- symlinks ----------------------------------------------------------------------------


@case
def xattrat_follow_symlink(c: Case) -> Json:
    write("f")
    os.symlink("f", "link")
    setxattrat("link", "user.key", b"v")
    return {"f": listxattrat("f"), "get": getxattrat("link", "user.key"), "list": listxattrat("link")}


@case
def xattrat_nofollow_symlink(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"v")
    os.symlink("f", "link")
    return each(
        set=lambda: setxattrat("link", "user.key", b"v", at_flags=AT_SYMLINK_NOFOLLOW),
        get=lambda: getxattrat("link", "user.key", at_flags=AT_SYMLINK_NOFOLLOW),
        list=lambda: listxattrat("link", AT_SYMLINK_NOFOLLOW),
        remove=lambda: removexattrat("link", "user.key", AT_SYMLINK_NOFOLLOW),
        f=lambda: listxattrat("f"),
    )


@case
def xattrat_dangling_symlink(c: Case) -> Json:
    os.symlink("missing", "link")
    return each(
        set=lambda: setxattrat("link", "user.key", b"v"),
        get=lambda: getxattrat("link", "user.key"),
        list_nofollow=lambda: listxattrat("link", AT_SYMLINK_NOFOLLOW),
    )


# -- dirfds ------------------------------------------------------------------------------


@case
def xattrat_dirfd(c: Case) -> Json:
    os.mkdir("d")
    write("d/f")
    dirfd = c.open("d", RDONLY | os.O_DIRECTORY)
    setxattrat("f", "user.a", b"1", dirfd=dirfd)
    setxattrat("f", "user.b", b"2", dirfd=dirfd)
    removexattrat("f", "user.a", dirfd=dirfd)
    return {"get": getxattrat("f", "user.b", dirfd=dirfd), "list": listxattrat("f", dirfd=dirfd),
            "by_path": listxattrat("d/f")}  # fmt: skip


@case
def xattrat_dirfd_dotdot(c: Case) -> Json:
    os.mkdir("d")
    write("f")
    setxattrat("../f", "user.key", b"up", dirfd=c.open("d", RDONLY | os.O_DIRECTORY))
    return listxattrat("f")


@case
def xattrat_dirfd_o_path(c: Case) -> Json:
    os.mkdir("d")
    write("d/f")
    dirfd = c.open("d", os.O_PATH)
    setxattrat("f", "user.key", b"v", dirfd=dirfd)
    return {"get": getxattrat("f", "user.key", dirfd=dirfd), "list": listxattrat("f", dirfd=dirfd)}


@case
def xattrat_dirfd_is_file(c: Case) -> Json:
    write("f")
    fd = c.open("f", RDONLY)
    return each(
        set=lambda: setxattrat("x", "user.key", b"v", dirfd=fd),
        get=lambda: getxattrat("x", "user.key", dirfd=fd),
        list=lambda: listxattrat("x", dirfd=fd),
        remove=lambda: removexattrat("x", "user.key", dirfd=fd),
    )


@case
def xattrat_bad_dirfd(c: Case) -> Json:
    write("f")
    closed = c.closed_fd()
    absolute = os.path.join(c.dir, "f")
    return each(
        set=lambda: setxattrat("f", "user.key", b"v", dirfd=closed),
        get=lambda: getxattrat("f", "user.key", dirfd=closed),
        list=lambda: listxattrat("f", dirfd=closed),
        remove=lambda: removexattrat("f", "user.key", dirfd=closed),
        absolute_ignores_it=lambda: setxattrat(absolute, "user.key", b"abs", dirfd=closed),
        value=lambda: getxattrat("f", "user.key"),
    )


# -- AT_EMPTY_PATH -----------------------------------------------------------------------


def _on_fd(fd: int, path: str | None) -> dict[str, Json]:
    return each(
        set_a=lambda: setxattrat(path, "user.a", b"1", at_flags=AT_EMPTY_PATH, dirfd=fd),
        set_b=lambda: setxattrat(path, "user.b", b"2", at_flags=AT_EMPTY_PATH, dirfd=fd),
        remove_a=lambda: removexattrat(path, "user.a", AT_EMPTY_PATH, dirfd=fd),
        get_b=lambda: getxattrat(path, "user.b", at_flags=AT_EMPTY_PATH, dirfd=fd),
        list=lambda: listxattrat(path, AT_EMPTY_PATH, dirfd=fd),
    )


@case
def xattrat_empty_path_fd(c: Case) -> Json:
    write("f")
    return {**_on_fd(c.open("f", RDONLY), ""), "by_path": listxattrat("f")}


@case
def xattrat_null_path_fd(c: Case) -> Json:
    write("f")
    return {**_on_fd(c.open("f", RDONLY), None), "by_path": listxattrat("f")}


@case
def xattrat_empty_path_directory_fd(c: Case) -> Json:
    os.mkdir("d")
    return {**_on_fd(c.open("d", RDONLY | os.O_DIRECTORY), ""), "by_path": listxattrat("d")}


@case
def xattrat_empty_path_o_path_fd(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.b", b"2")
    return {**_on_fd(c.open("f", os.O_PATH), ""), "by_path": listxattrat("f")}


@case
def xattrat_empty_path_closed_fd(c: Case) -> Json:
    return _on_fd(c.closed_fd(), "")


@case
def xattrat_empty_path_cwd(c: Case) -> Json:
    # set and get act on the cwd; list and remove take AT_FDCWD for an fd (EBADF)
    return {**_on_fd(AT_FDCWD, ""), "by_path": listxattrat(".")}


@case
def xattrat_empty_path_without_flag(c: Case) -> Json:
    write("f")
    fd = c.open("f", RDONLY)
    return each(
        set=lambda: setxattrat("", "user.key", b"v", dirfd=fd),
        get=lambda: getxattrat("", "user.key", dirfd=fd),
        list=lambda: listxattrat("", dirfd=fd),
        remove=lambda: removexattrat("", "user.key", dirfd=fd),
        set_null=lambda: setxattrat(None, "user.key", b"v", dirfd=fd),
        list_null=lambda: listxattrat(None, dirfd=fd),
    )


@case
def xattrat_empty_path_flag_with_a_path(c: Case) -> Json:
    os.mkdir("d")
    write("d/f")
    dirfd = c.open("d", RDONLY | os.O_DIRECTORY)
    setxattrat("f", "user.key", b"v", at_flags=AT_EMPTY_PATH, dirfd=dirfd)
    return {"f": listxattrat("d/f"), "d": listxattrat("d")}


# -- flags and struct xattr_args ---------------------------------------------------------


@case
def xattrat_bad_at_flags(c: Case) -> Json:
    write("f")
    return each(
        set=lambda: setxattrat("f", "user.key", b"v", at_flags=BAD_AT_FLAG),
        get=lambda: getxattrat("f", "user.key", at_flags=BAD_AT_FLAG),
        list=lambda: listxattrat("f", BAD_AT_FLAG),
        remove=lambda: removexattrat("f", "user.key", BAD_AT_FLAG),
        set_missing=lambda: setxattrat("missing", "user.key", b"v", at_flags=BAD_AT_FLAG),
        list_missing=lambda: listxattrat("missing", AT_SYMLINK_NOFOLLOW | BAD_AT_FLAG),
        after=lambda: listxattrat("f"),
    )


@case
def xattrat_args_too_small(c: Case) -> Json:
    write("f")
    return each(
        set=lambda: setxattrat("f", "user.key", b"v", usize=8),
        get=lambda: getxattrat("f", "user.key", usize=15),
        set_missing=lambda: setxattrat("missing", "user.key", b"v", usize=8),
    )


@case
def xattrat_args_bigger_zero_tail(c: Case) -> Json:
    write("f")
    setxattrat("f", "user.key", b"newer", tail=bytes(8))
    return {"get": getxattrat("f", "user.key", tail=bytes(8)), "page": getxattrat("f", "user.key", tail=bytes(4080))}


@case
def xattrat_args_bigger_nonzero_tail(c: Case) -> Json:
    write("f")
    return each(
        set=lambda: setxattrat("f", "user.key", b"v", tail=bytes(7) + b"\1"),
        get=lambda: getxattrat("f", "user.key", tail=b"\1"),
        set_bad_at_flags=lambda: setxattrat("f", "user.key", b"v", at_flags=BAD_AT_FLAG, tail=b"\1"),
        after=lambda: listxattrat("f"),
    )


@case
def xattrat_args_past_a_page(c: Case) -> Json:
    write("f")
    page = os.sysconf("SC_PAGE_SIZE")
    return each(
        set=lambda: setxattrat("f", "user.key", b"v", tail=bytes(page), usize=page + 1),
        get=lambda: getxattrat("f", "user.key", tail=bytes(page), usize=page + 1),
    )


@case
def xattrat_get_args_flags(c: Case) -> Json:
    write("f")
    os.setxattr("f", "user.key", b"value")
    getxattrat("f", "user.key", flags=1)
