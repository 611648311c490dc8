"""Path resolution in a VM's views: always the kernel's, always inside the VM's root.

A relative path is resolved from its base (the caller's cwd or dirfd), as the kernel
does: the base is opened with the manager's own rights, since the caller is already
there, and the rest is resolved beneath it as the caller, so that the search permission
of the base's ancestors and mount crossings (``RESOLVE_NO_XDEV``) are native. Where the
rest leaves the base (``..`` above it, an absolute symlink), the whole path is resolved
from the VM's root with ``RESOLVE_IN_ROOT``, which handles ``..``, absolute symlinks and
``O_CREAT`` through dangling symlinks as the kernel does for the VM. An ``*at`` call is
only ever given a directory fd resolved this way and a single, non-following last
component, so nothing can reach the manager's own root.
"""

from __future__ import annotations

import errno
import os
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import Generic, TypeVar

from hvfs import _native, api
from hvfs._sys.abi import O_PATH, RESOLVE_BENEATH, RESOLVE_IN_ROOT, RESOLVE_NO_SYMLINKS
from hvfs._sys.files import openat2
from hvfs.manager.creds import manager_rights

T = TypeVar("T")


def split(name: str) -> tuple[str, str]:
    """``'/a/b/c/'`` → ``('/a/b', 'c/')``; ``'x'`` → ``('', 'x')`` (the base itself holds
    it); the root gives ``('/', '')``. A trailing slash stays on the last component,
    where the kernel gives it its meaning (``unlink("f/")`` is ENOTDIR)."""
    stripped = name.rstrip("/")
    if not stripped:
        return ("/", "") if name.startswith("/") else ("", "")
    head, separator, last = stripped.rpartition("/")
    if separator and not head:
        head = "/"
    return head, last + ("/" if len(stripped) < len(name) else "")


class Closing(Generic[T]):
    """A context manager that gives ``value`` and closes ``fd`` at the end of the block.
    (A class, not a generator: it runs several times per request.)"""

    __slots__ = ("_fd", "_value")

    def __init__(self, fd: int, value: T) -> None:
        self._fd = fd
        self._value = value

    def __enter__(self) -> T:
        return self._value

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        os.close(self._fd)


def fd_closing(fd: int) -> Closing[int]:
    return Closing(fd, fd)


class ForeignBase(OSError):
    """The caller's base directory is not the VM's directory of that path: a directory fd
    from outside the VM (or one renamed meanwhile). Nothing is done relative to it; a read
    may be left to the kernel, which has the caller's own fd."""

    def __init__(self, base: str) -> None:
        super().__init__(errno.EACCES, "a directory from outside the VM", base)


def base_directory(root: int, base: str, identity: tuple[int, int] | None = None) -> int:
    """The directory a relative path starts from, opened with the manager's rights; with
    ``identity``, it must be that very directory (else ``ForeignBase``)."""
    with manager_rights():
        fd = openat2(root, base, O_PATH | os.O_DIRECTORY, 0, RESOLVE_IN_ROOT)
    if identity is not None:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != identity:
            os.close(fd)
            raise ForeignBase(base)
    return fd


def open_at(root: int, path: api.VmPath, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2 of ``path`` under ``root``, resolved as the kernel resolves it for the VM."""
    if path.name.startswith("/"):
        return openat2(root, path.name, flags, mode, RESOLVE_IN_ROOT | resolve)
    try:
        base_fd = base_directory(root, path.base, path.base_id)
    except FileNotFoundError:
        if path.base_id is None:
            raise
        raise ForeignBase(path.base) from None  # no such directory in the VM at all
    with fd_closing(base_fd) as base:
        try:
            return openat2(base, path.name, flags, mode, RESOLVE_BENEATH | resolve)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
    return openat2(root, str(path), flags, mode, RESOLVE_IN_ROOT | resolve)


def python_plain_name(path: api.VmPath) -> str | None:
    """The absolute text ``path`` names, where it has no ``.``, ``..`` or empty components on
    the way (a trailing ``/`` allowed; a relative name: its base's text and the name): found
    with no symlink on the way (``open_named``), it is its own name as the kernel resolved
    it; None otherwise. In C where built (``plain_name``: hvfs/_native/record.c)."""
    name = path.name
    if name[:1] != "/":
        base = path.base
        if not name or base[:1] != "/":
            return None
        name = base + name if base[-1] == "/" else f"{base}/{name}"  # a base "/a//" is not plain: below
    if "//" in name or "/./" in name or "/../" in name or name.endswith(_NOT_LAST):
        return None  # (substring tests: a split and a loop cost an audited stat 0.5 µs)
    return name


_NOT_LAST = ("/.", "/..")  # a last component a path's text names differently than its resolution


_plain_name = None if _native.recorder is None else _native.recorder.plain_name


def plain_name(path: api.VmPath) -> str | None:
    """``python_plain_name``, in C where built."""
    return python_plain_name(path) if _plain_name is None else _plain_name(path.base, path.name)  # type: ignore[no-any-return]


def open_named(root: int, path: api.VmPath, flags: int, mode: int = 0, resolve: int = 0) -> tuple[int, str] | None:
    """openat2 of a ``plain_name`` path under ``root`` (resolved as ``open_at`` resolves it)
    with no symlink on the way (RESOLVE_NO_SYMLINKS), and its text, which is then its
    name as the kernel resolved it: an audit names it without a readlink. None where
    that does not hold: not plain, a symlink on the way (ELOOP), a relative path's base
    not found that way or not the caller's very directory (its usual resolution says
    what is wrong). Any other error is met before any symlink, where the usual
    resolution meets it too: raised."""
    # plain_name's call inlined: a frame is a tenth of a µs of an audited stat
    name = python_plain_name(path) if _plain_name is None else _plain_name(path.base, path.name)
    if name is None:
        return None
    try:
        if path.name.startswith("/"):
            return openat2(root, name, flags, mode, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | resolve), name
        try:
            with manager_rights():  # as base_directory: a lookup the caller has made already
                scope = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS
                base = openat2(root, path.base, O_PATH | os.O_DIRECTORY, 0, scope)
        except OSError:
            return None
        with fd_closing(base):
            if path.base_id is not None:
                st = os.fstat(base)
                if (st.st_dev, st.st_ino) != path.base_id:
                    return None
            beneath = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | resolve
            return openat2(base, path.name, flags, mode, beneath), name
    except OSError as e:
        if e.errno == errno.ELOOP:
            return None
        raise


def open_object(root: int, path: api.VmPath, *, follow: bool = True) -> int:
    """An O_PATH fd of what ``path`` names (the symlink itself when not following)."""
    return open_at(root, path, O_PATH | (0 if follow else os.O_NOFOLLOW))


def absolute(path: str) -> api.VmPath:
    return api.VmPath("/", path)


def parent(root: int, path: api.VmPath) -> Closing[tuple[int, str]]:
    """``with parent(root, path) as (directory, last)``: the directory holding ``path``'s
    last component, and that component."""
    head, last = split(path.name)
    fd = _parent_fd(root, path, head)
    return Closing(fd, (fd, last))


def _parent_fd(root: int, path: api.VmPath, head: str) -> int:
    if head:
        return open_at(root, api.VmPath(path.base, head, path.base_id), O_PATH | os.O_DIRECTORY)
    return base_directory(root, path.base, path.base_id)


def parent_named(root: int, path: api.VmPath) -> tuple[int, str, str | None]:
    """``parent``'s directory (an fd the caller closes) and last component, and the
    directory's VM path where its text is that path: found with no symlink on the way
    (``open_named``; a relative path's base by its text too, checked to be the caller's
    very directory), which spares a readlink of the directory for what names it (the
    change set, an audit). None where that does not hold; then resolved as ``parent``
    resolves it."""
    head, last = split(path.name)
    if head:
        found = open_named(root, api.VmPath(path.base, head, path.base_id), O_PATH | os.O_DIRECTORY)
    else:
        found = _base_named(root, path)
    fd, name = found if found is not None else (_parent_fd(root, path, head), None)
    return fd, last, name


def _base_named(root: int, path: api.VmPath) -> tuple[int, str] | None:
    """The base directory of a relative path by its absolute text, with no symlink on the
    way, checked to be the caller's very directory; None otherwise."""
    base = path.base
    if path.base_id is None or plain_name(absolute(base)) is None:
        return None
    try:
        with manager_rights():  # as base_directory: a lookup the caller has made already
            fd = openat2(root, base, O_PATH | os.O_DIRECTORY, 0, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)
    except OSError:
        return None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != path.base_id:
        os.close(fd)
        return None
    return fd, base.rstrip("/") or "/"


def proc_path(fd: int) -> str:
    """A path that names the object of ``fd`` itself, through procfs."""
    return f"/proc/self/fd/{fd}"


class _FdDirectory:
    """This process's /proc/self/fd, kept open: a readlink of ``N`` in it costs two
    thirds of a readlink of /proc/self/fd/N, which walks procfs from its root (measured:
    2.2 against 3.2 µs), and an audited request reads one or two names. Opened again in
    a forked child, whose fds it must name, not its parent's."""

    fd = -1

    @classmethod
    def get(cls) -> int:
        if cls.fd < 0:
            cls.fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return cls.fd

    @classmethod
    def forget(cls) -> None:
        cls.fd = -1  # the child's copy stays open until it execs (O_CLOEXEC): never read


os.register_at_fork(after_in_child=_FdDirectory.forget)


def fd_name(fd: int) -> str:
    """``os.readlink(proc_path(fd))``, cheaper: the kernel's name for the object of
    ``fd``. Raises OSError as readlink does."""
    return os.readlink(str(fd), dir_fd=_FdDirectory.get())


def chmod_fd(fd: int, mode: int) -> None:
    """``os.chmod(proc_path(fd), mode)``, cheaper: through this process's /proc/self/fd kept
    open (``_FdDirectory``), a lookup of one magic link instead of a walk from procfs's root."""
    os.chmod(str(fd), mode, dir_fd=_FdDirectory.get())


def writable_twin(rw_root: int, file: api.OpenFile) -> AbstractContextManager[tuple[int, os.stat_result] | None]:
    """``with writable_twin(rw_root, file) as twin``: the open file's inode in the writable
    view (an O_PATH fd and its stat), or None to act on the file itself.

    A file the VM opened itself sits on its read-only boot view; the same inode in the
    writable view is found by its path and checked by device and inode. A writable file
    (the manager handed it out for writing, or the VM inherited it) is used as it is.
    """
    if not os.fstatvfs(file.fd).f_flag & os.ST_RDONLY or not file.path.startswith("/"):
        return nullcontext(None)
    try:
        twin = open_object(rw_root, absolute(file.path), follow=False)
    except OSError:
        return nullcontext(None)
    try:
        st, original = os.fstat(twin), os.fstat(file.fd)
    except BaseException:
        os.close(twin)
        raise
    same = (st.st_dev, st.st_ino) == (original.st_dev, original.st_ino)
    return Closing(twin, (twin, st) if same else None)
