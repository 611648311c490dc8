"""inotify(7): the events that operations on the mount under test report."""

import os

from observe import Json, read, write
from runner import Case, case
from system import IN_DONT_FOLLOW, IN_NONBLOCK, IN_ONLYDIR, INOTIFY_EVENT, INOTIFY_MASKS, WRONLY, b, check, libc

# -- inotify -----------------------------------------------------------------------------------


def inotify_watch(c: Case, path: str, mask: int) -> int:
    fd = c.keep(check(libc.inotify_init1(IN_NONBLOCK | os.O_CLOEXEC)))
    check(libc.inotify_add_watch(fd, b(path), mask))
    return fd


def mask_names(mask: int) -> list[str]:
    return [name for bit, name in INOTIFY_MASKS.items() if mask & bit]


def inotify_events(fd: int) -> list[Json]:
    """Every queued event as [name, [mask names]], and whether MOVED_FROM/TO cookies paired up."""
    data = b""
    while True:
        try:
            data += os.read(fd, 65536)
        except BlockingIOError:
            break
    events: list[Json] = []
    offset = 0
    while offset < len(data):
        _wd, mask, _cookie, length = INOTIFY_EVENT.unpack_from(data, offset)
        start = offset + INOTIFY_EVENT.size
        name = data[start : start + length].rstrip(b"\0").decode()
        events.append([name, mask_names(mask)])
        offset = start + length
    return events


def inotify_cookies(fd: int) -> list[int]:
    data = os.read(fd, 65536)
    cookies, offset = [], 0
    while offset < len(data):
        _wd, _mask, cookie, length = INOTIFY_EVENT.unpack_from(data, offset)
        cookies.append(cookie)
        offset += INOTIFY_EVENT.size + length
    return cookies


DIR_EVENTS = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200  # MODIFY ATTRIB CLOSE_WRITE MOVED_* CREATE DELETE


@case
def inotify_file_create_modify_delete(c: Case) -> Json:
    fd = inotify_watch(c, ".", DIR_EVENTS)
    write("f", "content")
    os.chmod("f", 0o600)
    os.unlink("f")
    return inotify_events(fd)


@case
def inotify_dir_create_delete(c: Case) -> Json:
    fd = inotify_watch(c, ".", DIR_EVENTS)
    os.mkdir("d")
    os.rmdir("d")
    return inotify_events(fd)


@case
def inotify_rename(c: Case) -> Json:
    write("a")
    fd = inotify_watch(c, ".", DIR_EVENTS)
    os.rename("a", "b")
    return inotify_events(fd)


@case
def inotify_rename_cookies_match(c: Case) -> Json:
    write("a")
    fd = inotify_watch(c, ".", 0x40 | 0x80)
    os.rename("a", "b")
    cookies = inotify_cookies(fd)
    return {"events": len(cookies), "paired": len(set(cookies)) == 1}


@case
def inotify_symlink_link_mknod(c: Case) -> Json:
    write("f")
    fd = inotify_watch(c, ".", DIR_EVENTS)
    os.symlink("f", "link")
    os.link("f", "hard")
    os.mkfifo("p")
    return inotify_events(fd)


@case
def inotify_open_append_truncate(c: Case) -> Json:
    write("f", "content")
    fd = inotify_watch(c, ".", DIR_EVENTS | 0x20 | 0x10)
    os.close(os.open("f", WRONLY | os.O_APPEND))
    os.truncate("f", 1)
    return inotify_events(fd)


@case
def inotify_watch_file(c: Case) -> Json:
    write("f")
    fd = inotify_watch(c, "f", 0x2 | 0x4 | 0x400)
    write("f", "new")
    os.chmod("f", 0o600)
    os.unlink("f")
    return inotify_events(fd)


@case
def inotify_no_events(c: Case) -> Json:
    write("f")
    fd = inotify_watch(c, ".", DIR_EVENTS)
    read("f")
    return inotify_events(fd)


@case
def inotify_watch_missing(c: Case) -> Json:
    inotify_watch(c, "missing", DIR_EVENTS)


@case
def inotify_onlydir_on_file(c: Case) -> Json:
    write("f")
    inotify_watch(c, "f", DIR_EVENTS | IN_ONLYDIR)


@case
def inotify_dont_follow_symlink(c: Case) -> Json:
    os.symlink("nowhere", "link")
    inotify_watch(c, "link", 0x4 | IN_DONT_FOLLOW)


@case
def inotify_zero_mask(c: Case) -> Json:
    inotify_watch(c, ".", 0)
