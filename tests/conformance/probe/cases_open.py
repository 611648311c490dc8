"""open(2) and creat(2): flags, modes, symlinks and what each combination answers."""

import os

from observe import Json, listing, normalize, read, read_fd, write
from runner import Case, case
from system import CREAT, RDONLY, RDWR, WRONLY, check, libc

# -- open, creat ------------------------------------------------------------------------


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
