"""Layers applied one over the other into one directory, as Docker's overlay2 differ made
them: a layer's tar stream adds and replaces entries; ``.wh.NAME`` removes NAME from the
layers below, ``.wh..wh..opq`` empties its directory of what the layers below put there.

Nothing a layer holds can write outside the directory (an attacker's tarball is as
welcome as Docker's):

- a name with ``..`` refuses the image; a leading ``/`` or ``./`` is dropped;
- every parent directory is looked up from the image's root with RESOLVE_IN_ROOT, so a
  symbolic link on the way (one the image made itself, ``lib -> /usr/lib``) resolves
  inside the image, as it will in the VM, never on the host;
- the entry itself is created without following anything (O_EXCL | O_NOFOLLOW, after
  what stood there was removed), so a symbolic link at its name is replaced, not followed;
- a hard link's target is looked up the same way: an image cannot link a host file
  (``/etc/shadow`` is the image's own /etc/shadow, or nothing);
- device nodes are skipped (a VM's /dev is hvfs's own), and extended attributes are not
  applied: an image cannot set overlayfs's own xattrs (``user.overlay.*``) on its lower
  directory;
- every member's size counts against a limit (the cache's free space) before any of its
  data is written, so a huge sparse file or a gzip bomb is refused, not written;
- directories stay 0700 until the last layer is in (a read-only one would stop a later
  layer, and an unprivileged user, from writing in it), then take their modes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
from collections.abc import Callable
from typing import IO

from hvfs._sys.abi import O_PATH, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS
from hvfs._sys.files import closing, openat2
from hvfs.images import ImageError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
CHUNK = 1 << 20
_ZEROS = bytes(CHUNK)
_IN_ROOT = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def clean_name(name: str, what: str) -> list[str]:
    """The components of a member's name inside the image; ImageError for ``..``."""
    parts = [p for p in name.split("/") if p and p != "."]
    if ".." in parts:
        raise ImageError(f"{what}: entry {name!r} climbs out of the image with '..'; refusing the image")
    return parts


class Unpacker:
    """Applies layers, in order, into the directory ``root`` (empty, private, ours)."""

    def __init__(self, root: str, limit: int, owners: bool | None = None) -> None:
        self.root = os.open(root, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.limit = limit  # bytes the members may add up to
        self.total = 0
        self.owners = os.geteuid() == 0 if owners is None else owners  # chown needs privilege
        self.modes: dict[str, tuple[int, int, int, int]] = {}  # directory: mode, uid, gid, mtime
        self.skipped: list[str] = []  # device nodes

    def close(self) -> None:
        os.close(self.root)

    def __enter__(self) -> Unpacker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- a layer ---------------------------------------------------------------------

    def layer(self, stream: IO[bytes], what: str) -> None:
        """Apply the uncompressed tar ``stream`` (read once, in order) over what is there."""
        created: set[str] = set()
        try:
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    self._member(archive, member, created, what)
        except tarfile.TarError as e:
            raise ImageError(f"{what}: not a readable tar stream ({e}); the image is damaged, save it again") from None

    def _member(self, archive: tarfile.TarFile, member: tarfile.TarInfo, created: set[str], what: str) -> None:
        parts = clean_name(member.name, what)
        if not parts:
            return  # the root itself: its mode is the skeleton's business
        path = "/".join(parts)
        base = parts[-1]
        with closing(self._directory(parts[:-1], what, member.name)) as parent:
            if base == OPAQUE:
                self._opaque("/".join(parts[:-1]), created)
            elif base.startswith(WHITEOUT):
                _remove(parent, base[len(WHITEOUT) :])
            elif member.ischr() or member.isblk():
                self.skipped.append(path)
            else:
                self._create(archive, member, parent, base, path, what)
                created.add(path)

    def _create(
        self, archive: tarfile.TarFile, member: tarfile.TarInfo, parent: int, base: str, path: str, what: str
    ) -> None:
        try:
            existing: os.stat_result | None = os.lstat(base, dir_fd=parent)
        except FileNotFoundError:
            existing = None
        if member.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                _remove(parent, base)
                os.mkdir(base, 0o700, dir_fd=parent)
            self.modes[path] = (member.mode & 0o7777, member.uid, member.gid, int(member.mtime))
            return
        if existing is not None:
            _remove(parent, base)
        if member.isreg():
            self._count(member, what)
            fd = os.open(base, _NEW, 0o600, dir_fd=parent)
            with closing(fd):
                source = archive.extractfile(member)
                assert source is not None  # a regular file has data
                _copy(source, fd, member.size)
                if self.owners:
                    os.fchown(fd, member.uid, member.gid)
                os.fchmod(fd, member.mode & 0o7777)
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=parent)
        elif member.islnk():
            self._link(member, parent, base, what)
        elif member.isfifo():
            os.mkfifo(base, member.mode & 0o777, dir_fd=parent)
        else:
            return  # an entry of a kind tar knows and Linux has no file for
        if self.owners and not member.isreg():
            os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        if member.isfifo():
            os.chmod(base, member.mode & 0o7777, dir_fd=parent)
        with contextlib.suppress(OSError):  # a link's times are its target's
            if not member.islnk():
                os.utime(base, (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)

    def _link(self, member: tarfile.TarInfo, parent: int, base: str, what: str) -> None:
        target = clean_name(member.linkname, what)
        if not target:
            raise ImageError(f"{what}: hard link {member.name!r} to the image's root; refusing the image")
        try:
            with closing(self._directory(target[:-1], what, member.linkname, create=False)) as source:
                os.link(target[-1], base, src_dir_fd=source, dst_dir_fd=parent, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError, PermissionError, ImageError):
            raise ImageError(
                f"{what}: hard link {member.name!r} to {member.linkname!r}, which is not a file of the image; "
                "refusing the image"
            ) from None

    def _count(self, member: tarfile.TarInfo, what: str) -> None:
        self.total += member.size
        if self.total > self.limit:
            raise ImageError(
                f"{what}: unpacks to more than {self.limit >> 20} MiB (at {member.name!r}, {member.size >> 20} MiB), "
                "more than the cache's file system has free; free space or give a smaller image"
            )

    def _directory(self, parts: list[str], what: str, name: str, create: bool = True) -> int:
        """An O_PATH fd of the directory ``parts`` of the image, made as needed, looked
        up from the image's root: links on the way resolve inside it."""
        path = "/".join(parts) or "."
        try:
            return openat2(self.root, path, O_PATH | os.O_DIRECTORY, 0, _IN_ROOT)
        except FileNotFoundError:
            if not create:
                raise
        except NotADirectoryError:
            raise ImageError(f"{what}: {name!r} goes through something that is not a directory") from None
        for i in range(len(parts)):  # made one component at a time, each under the last
            here = "/".join(parts[: i + 1])
            try:
                os.close(openat2(self.root, here, O_PATH | os.O_DIRECTORY, 0, _IN_ROOT))
                continue
            except FileNotFoundError:
                pass
            except NotADirectoryError:
                raise ImageError(f"{what}: {name!r} goes through something that is not a directory") from None
            with closing(openat2(self.root, "/".join(parts[:i]) or ".", O_PATH | os.O_DIRECTORY, 0, _IN_ROOT)) as up:
                try:
                    os.mkdir(parts[i], 0o700, dir_fd=up)
                except FileExistsError:  # a symbolic link that leads nowhere
                    raise ImageError(f"{what}: {name!r} goes through a link that leads nowhere") from None
        return openat2(self.root, path, O_PATH | os.O_DIRECTORY, 0, _IN_ROOT)

    def _opaque(self, directory: str, created: set[str]) -> None:
        """Empty ``directory`` of what lower layers put in it (this layer's entries stay)."""
        with closing(openat2(self.root, directory or ".", os.O_RDONLY | os.O_DIRECTORY, 0, _IN_ROOT)) as fd:
            for name in os.listdir(fd):
                if f"{directory}/{name}".lstrip("/") not in created:
                    _remove(fd, name)

    # -- the end ---------------------------------------------------------------------

    def finish(self) -> None:
        """Directories take their modes, owners and times, deepest first (a directory's
        time changes as entries are made in it)."""
        for path in sorted(self.modes, key=lambda p: p.count("/"), reverse=True):
            mode, uid, gid, mtime = self.modes[path]
            try:
                fd = openat2(self.root, path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, 0, _IN_ROOT)
            except OSError:
                continue  # removed or replaced by a later layer
            with closing(fd):
                if self.owners:
                    os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
                os.utime(fd, (mtime, mtime))


def _remove(parent: int, name: str) -> None:
    """Remove ``name`` from the directory ``parent``, whatever it is; nothing if absent."""
    if not name or name in (".", "..") or "/" in name:
        return
    try:
        st = os.lstat(name, dir_fd=parent)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        with closing(os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=parent)) as real:
            shutil.rmtree(name, dir_fd=real)
    else:
        os.unlink(name, dir_fd=parent)


def _copy(source: IO[bytes], fd: int, size: int) -> None:
    """``size`` bytes of ``source`` into ``fd``, holes left for runs of zeros."""
    while chunk := source.read(CHUNK):
        if chunk == _ZEROS[: len(chunk)]:
            os.lseek(fd, len(chunk), os.SEEK_CUR)
        else:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
    os.ftruncate(fd, size)


def unpack_layers(
    root: str, layers: list[Callable[[], IO[bytes]]], limit: int, what: str, owners: bool | None = None
) -> list[str]:
    """Apply ``layers`` (each a function giving its uncompressed tar stream) into ``root``;
    return the device nodes skipped."""
    with Unpacker(root, limit, owners) as unpacker:
        for i, layer in enumerate(layers):
            with contextlib.closing(layer()) as stream:
                unpacker.layer(stream, f"{what}: layer {i + 1}" if len(layers) > 1 else what)
        unpacker.finish()
        return unpacker.skipped
