"""The contract every source implements, and the per-VM storage sources may use."""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from typing import ClassVar

from hvfs._sys import mount as m
from hvfs.errors import HvfsError


class SourceError(HvfsError):
    """A problem the user can fix; the message names it and says how."""


class OptionError(SourceError):
    """An option of a source that is wrong: ``option`` names it (None: the source as a
    whole, or its type), ``problem`` says what is wrong and how to fix it. Front ends put
    it where the user wrote it: ``-v '/x:/data': …``, ``hvfs.toml: sources.x.path: …``."""

    def __init__(self, option: str | None, problem: str) -> None:
        super().__init__(problem)
        self.option = option
        self.problem = problem


def _escape(path: str) -> str:
    """A path as one item of overlayfs's options, where ':', ',' and '\\' separate."""
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


@dataclass(frozen=True)
class Scratch:
    """Per-VM storage a source may keep state in (overlay upper layers): in memory, gone
    when the VM is, or on disk with ``--persist DIR``. Each mount of a VM has its own."""

    directory: str
    persisted: bool = False  # on disk with --persist: its layers name only lowers of their own

    def below(self, target: str) -> Scratch:
        """The scratch of the mount at ``target``: the root's is this one (so a persisted
        root keeps its layout), any other's a directory of its own under ``mounts/``."""
        if target.strip("/") == "":
            return self
        name = target.strip("/").replace("%", "%25").replace("/", "%2F")  # one name per target
        return Scratch(os.path.join(self.directory, "mounts", name), self.persisted)

    def layer(self, key: str) -> tuple[str, str]:
        """An (upper, work) pair of directories for one overlay, created if missing."""
        upper = os.path.join(self.directory, key, "upper")
        work = os.path.join(self.directory, key, "work")
        os.makedirs(upper, exist_ok=True)
        os.makedirs(work, exist_ok=True)
        return upper, work

    def overlay(self, lower: str | int, key: str) -> int:
        """A new, detached copy-on-write mount of the directory ``lower`` (a path, or an fd
        of it: overlayfs's ``lowerdir+``), which it never changes, whose writes land in
        this scratch's layer ``key``: its fd, for ``hvfs._sys.mount.attached``."""
        upper, work = self.layer(key)
        lowers: dict[str, str | int | None] = (
            {"lowerdir+": lower} if isinstance(lower, int) else {"lowerdir": _escape(lower)}
        )
        options: dict[str, str | int | None] = {
            **lowers,
            "upperdir": _escape(upper),
            "workdir": _escape(work),
            "userxattr": None,  # the manager is in a user namespace: trusted.* xattrs are not ours
        }
        return m.new_mount("overlay", options)


class Source(abc.ABC):
    """A file system that can be mounted inside VMs' writable views: what every source
    kind implements, as gVisor's ``vfs.FilesystemImpl`` and virtiofsd's ``FileSystem``.

    Life of a source, and who calls what (``hvfs.hypervisor.pool`` holds live sources):

    1. Its kind's factory (``hvfs.manager.sources.registry``) makes it from checked
       options. A factory records what it is given: it mounts nothing, starts nothing
       and holds no resource that needs ``release`` (a source that needs one makes it
       on its first ``mount``), so that a table that fails half-way leaves nothing.
    2. ``mount`` once per VM that mounts it, in the manager's private mount namespace,
       while that VM's views are built. A source named in a project is one source for
       every VM that mounts it: ``mount`` may be called again for another VM while the
       first runs, from another thread.
    3. ``release`` exactly once, when the last VM that mounted it is gone (or the VM it
       was made for failed to start). Nothing is called on it afterwards.

    Read-only-ness, sockets and the VM's boot view are the view's business, not the
    source's: a source mounts its file system writable unless it is read-only itself.

    Errors: what the user can fix (a host path gone since it was checked) is a
    ``SourceError`` whose message names it and the fix; anything else is the kernel's
    ``OSError``, errno unchanged. Nothing else may escape.
    """

    kind: str

    @property
    def is_directory(self) -> bool:
        """Whether the mount point must be a directory (False: a single file). Constant
        for the life of the source."""
        return True

    @abc.abstractmethod
    def mount(self, target: int, scratch: Scratch) -> None:
        """Mount this source on ``target``.

        Preconditions: ``target`` is an O_PATH fd of an existing directory (or file, when
        ``is_directory`` is False) inside a VM's writable view, resolved within the VM's
        root, so that no symlink can redirect the mount; the caller keeps ownership of
        the fd. ``scratch`` is this mount's own per-VM storage. ``release`` has not been
        called. The calling thread is in the manager's mount namespace.
        Postcondition: ``target`` shows the source (its file systems, attached with
        ``hvfs._sys.mount.attached``), writable unless the source itself is read-only,
        with the further mounts ``inner_mounts`` names below it; nothing else changed.
        On failure, whatever this call mounted may remain below ``target``: the view
        discards the whole half-built tree.
        Raises: ``SourceError`` (what the user can fix); ``OSError`` with ENOENT (the
        source is gone), EACCES or EPERM (the manager may not read it, or this kernel
        refuses the mount in a user namespace), EINVAL (the file system cannot be
        mounted or overlaid so), ENOMEM or ENOSPC (no room for a memory file system or a
        copy-on-write layer), EMFILE.
        """

    # Whether ``release`` waits for the file system to be unmounted everywhere (a FUSE
    # client's clean stop): the VM's last hold on its views, its pid 1's mount namespace,
    # is then let go before it (hvfs.hypervisor.pool.Pool.drop), not after the exit is told.
    waits_for_views: ClassVar[bool] = False

    def release(self) -> None:  # noqa: B027 (optional: most sources hold nothing)
        """Give back what the source holds across VMs (the tree of a memory file system,
        a FUSE server thread, a remote connection, a cache lock).

        Preconditions: called once, after the last VM that mounted this source is gone
        and its views are closed. Postcondition: the source holds no fd, thread or
        process; the file systems already mounted in views stay valid for as long as
        those views are open, and are freed by the kernel with the last of them.
        Raises: ``OSError`` only; the caller logs it and goes on releasing the others.
        The default holds nothing and does nothing.
        """

    def inner_mounts(self) -> tuple[str, ...]:
        """Where ``mount`` mounts further file systems below its own mount point (an
        image's nested layers), as paths relative to it, in no particular order.

        Postcondition: after ``mount``, a mount is at each of them, or (a host
        directory's, which the host may change) the view's own mount there is its parent's;
        the view records each, resolved in the view, as the VM's own (files on them belong
        to the VM: metadata changes of fds from them are allowed). Read after ``mount``;
        never raises.
        """
        return ()

    def capacities(self) -> tuple[tuple[str, str], ...]:
        """For a copy-on-write source: (mount, directory) pairs, each a mount ``mount``
        makes (a path relative to its mount point, "" for that point, or one of
        ``inner_mounts``) and a directory of the manager's whose file system holds what
        that mount shows (its lower layer). ``statfs`` on that mount then reports the
        lower file system's use plus the VM's writes, not the copy-on-write layer alone.

        Precondition: each directory exists when the views are built (the view opens it).
        Constant for the life of the source; never raises.
        """
        return ()

    def local_path(self) -> str | None:
        """A directory of the manager's (in its mount namespace) that shows this source's
        files as VMs see them, so that the manager can touch a file there for the VMs'
        inotify (hvfs.cluster pokes what another host wrote); None: there is none, or not
        yet (a source that mounts on its first ``mount``). Never raises."""
        return None

    @abc.abstractmethod
    def describe(self) -> str:
        """A short human description, for messages and ``hvfs ps``. Never raises."""
