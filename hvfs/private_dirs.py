"""Directories in shared places that hvfs may trust: only this user (and root) can change
what they hold.

Another user who makes /tmp/hvfs-UID before hvfs does, or any directory on the way to
it, decides what hvfs finds there: a control socket of theirs that receives a client's
stdio fds, a lock, a staging directory, an unpacked image, a backup index. So before
hvfs uses such a directory it checks, on file descriptors it walks down from ``/``
(O_PATH | O_NOFOLLOW, then fstat: never a path that may change between check and use):

- every directory on the way belongs to root or this user, and is writable by no one
  else unless it has the sticky bit (as /tmp has; then no one may rename or remove
  what is not theirs);
- a symbolic link on the way, or the directory's own name, is followed only if it
  belongs to root or this user (in a directory that passed, no one else made it);
- the directory itself belongs to this user, is a directory, and is writable by no one
  else. hvfs creates it with mode 0700.

Once a directory has passed, its real path keeps naming it: no one but this user and
root can rename anything on the way. Callers use the returned real path.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from collections import deque
from typing import NoReturn

from hvfs import machine
from hvfs.spec import UsageError

MAX_SYMLINKS = 40  # as the kernel's path walk allows
_WALK = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeDirectory(UsageError):
    """A directory hvfs would keep things in can be changed by someone else; the message
    names it and what to do."""


# In a user namespace, every owner outside its map shows as the overflow uid: root and
# any other user alike. Only the rootless manager, whose client checked the same paths
# with the host's uids first (check_existing), trusts it on the way to a directory: an
# owner that passed there cannot have changed since, for only root or the owner chowns.
_OVERFLOW_UID = 65534
_unmapped_trusted = False


def trust_unmapped_owners() -> None:
    global _unmapped_trusted, _OVERFLOW_UID
    with contextlib.suppress(OSError, ValueError), open("/proc/sys/kernel/overflowuid") as f:
        _OVERFLOW_UID = int(f.read())
    _unmapped_trusted = True


def _who(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _writable_by_others(st: os.stat_result) -> bool:
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


class _Walk:
    """One check of ``path``: the messages name it, what it is for, and the fix."""

    def __init__(self, path: str, what: str, fix: str, ours: bool) -> None:
        self.path, self.what, self.fix, self.ours = path, what, fix, ours
        self.uid = os.geteuid()

    def fail(self, problem: str, mend: str | None) -> NoReturn:
        fixes = ", or ".join(f for f in (mend, self.fix) if f)
        raise UnsafeDirectory(f"{self.what} {self.path} {problem}" + (f"; {fixes}" if fixes else ""))

    def check_on_the_way(self, st: os.stat_result, where: str) -> None:
        mend = f"make {where} writable only by its owner"
        if st.st_uid not in (0, self.uid) and not (_unmapped_trusted and st.st_uid == _OVERFLOW_UID):
            self.fail(f"is not safe: {where} on the way to it belongs to {_who(st.st_uid)}", "ask root")
        if _writable_by_others(st) and not st.st_mode & stat.S_ISVTX:
            mode = stat.S_IMODE(st.st_mode)
            self.fail(f"is not safe: {where} on the way to it is writable by others (mode {mode:04o})", mend)

    def check_itself(self, st: os.stat_result) -> None:
        # Only what hvfs itself names and makes is for the user to remove; a directory the
        # user gave may hold anything.
        remove = "remove it and run again" if self.ours else None
        if st.st_uid != self.uid:
            self.fail(
                f"belongs to {_who(st.st_uid)}, not to you: whoever made it could take over what hvfs keeps there",
                "have its owner or root remove it" if self.ours else None,
            )
        if not stat.S_ISDIR(st.st_mode):
            self.fail("is not a directory", remove)
        if _writable_by_others(st):
            self.fail(
                f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o}): they may have put files in it", remove
            )
        if not self.ours:  # a place the user chose must also be one where files can be kept
            kind = machine.file_system_type(st)
            if kind in machine.PSEUDO_FILE_SYSTEMS:
                self.fail(f"is on {kind}, a kernel interface, not a place to keep files", None)
            if not st.st_mode & stat.S_IWUSR:
                self.fail(f"is not writable (mode {stat.S_IMODE(st.st_mode):04o})", "chmod u+w it")

    def open(self, name: str, dir_fd: int, where: str) -> int:
        try:
            return os.open(name, _WALK, dir_fd=dir_fd)
        except OSError as e:
            if isinstance(e, FileNotFoundError):
                raise
            self.fail(f"cannot be reached: {where}: {e.strerror}", "check the path")

    def make(self, name: str, dir_fd: int, where: str) -> None:
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            pass  # made meanwhile: checked like any other
        except OSError as e:
            self.fail(f"cannot be created: {os.path.join(where, name)}: {e.strerror}", "check the path")

    def walk(self, *, create: bool) -> tuple[int, str, os.stat_result]:
        """An O_PATH fd on the checked directory, its real path and its stat; ``create``
        makes what is missing on the way, mode 0700. Raises FileNotFoundError when
        something is missing and ``create`` is false."""
        pending = deque(c for c in os.path.abspath(self.path).split("/") if c)
        fd = os.open("/", _WALK | os.O_DIRECTORY)
        where = "/"
        links = 0
        try:
            st = os.fstat(fd)
            if pending:
                self.check_on_the_way(st, where)
            else:
                self.check_itself(st)
            while pending:
                name = pending.popleft()
                if name == ".":
                    continue
                try:
                    child = self.open(name, fd, where)
                except FileNotFoundError:
                    if not create:
                        raise
                    self.make(name, fd, where)
                    child = self.open(name, fd, where)
                st = os.fstat(child)
                if stat.S_ISLNK(st.st_mode):
                    target = os.readlink("", dir_fd=child)
                    os.close(child)
                    link = os.path.join(where, name)
                    if st.st_uid not in (0, self.uid):
                        which = "is" if link == os.path.abspath(self.path) else f"is not safe: {link} is"
                        self.fail(
                            f"{which} a symbolic link that belongs to {_who(st.st_uid)}",
                            "have its owner or root remove it",
                        )
                    links += 1
                    if links > MAX_SYMLINKS:
                        self.fail(f"cannot be reached: {link}: too many levels of symbolic links", "check the path")
                    pending.extendleft(reversed([c for c in target.split("/") if c]))
                    if target.startswith("/"):
                        os.close(fd)
                        fd, where = os.open("/", _WALK | os.O_DIRECTORY), "/"
                    continue
                os.close(fd)
                fd = child
                where = os.path.dirname(where) if name == ".." else os.path.join(where, name)
                if pending:
                    if not stat.S_ISDIR(st.st_mode):
                        self.fail(f"cannot be reached: {where} is not a directory", "check the path")
                    self.check_on_the_way(st, where)
                else:
                    self.check_itself(st)
        except BaseException:
            os.close(fd)
            raise
        return fd, where, st


def private_directory(
    path: str, what: str, fix: str, *, create: bool = True, tighten: bool = False, ours: bool = True
) -> str:
    """The real path of the directory ``path``, created with mode 0700 if missing, once
    only this user and root can change it or anything on the way to it; ``tighten``
    also takes away every permission of others (for state directories). Raises
    UnsafeDirectory naming ``what`` it is and, after the fix of its own problem, the
    ``fix`` of choosing another place (a clause such as "set XDG_RUNTIME_DIR to a
    directory of your own", or ""), or FileNotFoundError when it is missing and not to
    be created. ``ours``: hvfs named the directory (so its user may simply remove one
    that fails), rather than the user."""
    fd, real, st = _Walk(path, what, fix, ours).walk(create=create)
    try:
        if tighten and stat.S_IMODE(st.st_mode) != 0o700:
            opened = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            try:
                os.fchmod(opened, 0o700)
            finally:
                os.close(opened)
    finally:
        os.close(fd)
    return real


def check_existing(path: str, what: str, fix: str, *, ours: bool = True) -> None:
    """The checks of private_directory on what exists of ``path``, creating nothing."""
    with contextlib.suppress(FileNotFoundError):
        fd, _, _ = _Walk(path, what, fix, ours).walk(create=False)
        os.close(fd)


def is_private(path: str) -> str | None:
    """None when the existing directory ``path`` passes the checks, else why not (a cache
    that does not pass is simply not used)."""
    with contextlib.suppress(FileNotFoundError):
        try:
            private_directory(path, "the directory", "", create=False)
        except UnsafeDirectory as e:
            return str(e)
        return None
    return f"{path} does not exist"
