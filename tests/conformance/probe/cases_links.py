"""rename(2) and renameat2(2), link(2), symlink(2) and readlink(2)."""

import ctypes
import os
from functools import partial

from observe import Json, describe, listing, observe, read, write
from runner import Case, case
from system import (
    AT_FDCWD,
    AT_SYMLINK_FOLLOW,
    RDONLY,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    RENAME_WHITEOUT,
    check,
    libc,
    renameat2,
)

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
