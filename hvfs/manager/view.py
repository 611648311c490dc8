"""Building a VM's two views in the manager's mount namespace.

The mount table is first realised under a private staging tmpfs. A copy is made of that
tree: the **writable view**, a detached mount tree that only the manager holds (by fd),
where it performs the VM's requests, with nodev on every mount; then the tree itself
becomes the **boot view**, its mounts made read-only recursively, which the VM enters as
its root. Both show the same inodes. A detached tree has no parent mount, so ``..`` cannot climb out of it, and paths
of files opened in it read as the VM's own paths (``/data/x``), not the manager's.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from hvfs._sys import mount as m
from hvfs._sys.abi import O_PATH, RESOLVE_IN_ROOT
from hvfs._sys.files import closing, make_file, mount_id, openat2
from hvfs.manager.mounts import Mount
from hvfs.manager.sources.base import Scratch, SourceError


@dataclass
class Views:
    """The mount trees a VM is given (boot and read-write views) and what they hold."""

    staging: str
    rw_root: int  # fd of the writable view's root
    boot: str  # where the boot view is attached in the manager's namespace, for the VM
    socket_mounts: frozenset[int] = frozenset()  # in the writable view, mounts marked "sockets"
    own_mounts: frozenset[int] = frozenset()  # every mount of the writable view (ids)
    # Copy-on-write mounts (ids) and an O_PATH fd of a directory on their image's file system.
    images: dict[int, int] = field(default_factory=dict)
    _released: bool = False

    def release_boot(self) -> None:
        """Drop the staging mounts once the VM holds its own copy of the boot view (or
        has failed to start). Idempotent."""
        if not self._released:
            self._released = True
            m.umount(self.staging, m.MNT_DETACH)


def ensure_path(root: int, path: str, *, directory: bool = True, mode: int = 0o755) -> int:
    """Create ``path`` under ``root`` as needed, each step resolved inside ``root``;
    return an O_PATH fd of it. Raises SourceError if it exists with the wrong type."""
    parts = [p for p in path.split("/") if p]
    for i in range(1, len(parts) + 1):
        prefix = "/" + "/".join(parts[:i])
        last = i == len(parts)
        try:
            fd = openat2(root, prefix, O_PATH, 0, RESOLVE_IN_ROOT)
        except FileNotFoundError:
            parent = openat2(root, "/" + "/".join(parts[: i - 1]), O_PATH | os.O_DIRECTORY, 0, RESOLVE_IN_ROOT)
            try:
                if last and not directory:
                    make_file(parts[i - 1], 0o644, parent)
                else:
                    os.mkdir(parts[i - 1], mode, dir_fd=parent)
            except FileExistsError:
                pass
            finally:
                os.close(parent)
            fd = openat2(root, prefix, O_PATH, 0, RESOLVE_IN_ROOT)
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        if last:
            if is_dir != directory:
                os.close(fd)
                want, found = ("a directory", "a file") if directory else ("a file", "a directory")
                raise SourceError(
                    f"{path}: is {found} in the VM, so {want} cannot be mounted there; pick another target"
                )
            return fd
        os.close(fd)
        if not is_dir:
            raise SourceError(f"{prefix}: not a directory in the VM; pick another target")
    return os.open(f"/proc/self/fd/{root}", O_PATH | os.O_CLOEXEC)


def _set_readonly(root: int, target: str) -> None:
    with closing(openat2(root, target, O_PATH, 0, RESOLVE_IN_ROOT)) as fd:
        m.set_readonly(fd)


def build_views(table: list[Mount], staging: str, persist: str | None) -> Views:
    """Realise ``table`` (which must mount "/") and return the VM's views.

    Must run in the manager's private mount namespace.
    """
    m.mount("tmpfs", staging, "tmpfs", m.MS_NOSUID | m.MS_NODEV, "mode=0700")
    try:
        return _build_on(table, staging, persist)
    except BaseException:
        m.umount(staging, m.MNT_DETACH)
        raise


def _build_on(table: list[Mount], staging: str, persist: str | None) -> Views:
    scratch = Scratch(persist, persisted=True) if persist else Scratch(os.path.join(staging, "scratch"))
    tree = os.path.join(staging, "tree")
    os.mkdir(tree, 0o755)
    ordered = sorted(table, key=lambda mount: mount.depth)
    if not ordered or ordered[0].target != "/":
        raise SourceError("a VM needs a root image")
    with closing(os.open(tree, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)) as at:
        ordered[0].source.mount(at, scratch)
    with closing(os.open(tree, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)) as root:
        for mount in ordered[1:]:
            with closing(ensure_path(root, mount.target, directory=mount.source.is_directory)) as at:
                mount.source.mount(at, scratch.below(mount.target))
            if mount.readonly:
                _set_readonly(root, mount.target)
        if ordered[0].readonly:  # last: the mount points of the others are made in it first
            # The whole root, with the image's own sub-mounts (the host image's /usr, /etc...);
            # then each mount of the table gets its own mode back, the deeper ones last.
            m.set_readonly(root)
            for mount in ordered[1:]:
                with closing(openat2(root, mount.target, O_PATH, 0, RESOLVE_IN_ROOT)) as fd:
                    (m.set_readonly if mount.readonly else m.set_writable)(fd)
    rw_root = m.clone_tree(tree)
    # The manager never opens a device node for a VM (the kernel does, on the boot view,
    # for the caller's own process): a write-open is made at once, and fails here on one
    # before any driver sees it (hvfs.manager.handlers.direct).
    m.set_nodev(rw_root)
    images: dict[int, int] = {}
    try:
        # The staged tree itself becomes the boot view, every mount of it read-only: no
        # second copy to make and no tree to unmount (an unmount waits for an RCU grace
        # period: most of a view's making). Only the manager sees it before the VM does
        # (the staging tmpfs is 0700, in the manager's own mount namespace), and the
        # writable view, cloned above, keeps its own modes.
        with closing(os.open(tree, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)) as fd:
            m.set_readonly(fd)
        boot = tree
        socket_mounts, own_mounts = set(), set()
        for mount in ordered:
            identity = _mount_at(rw_root, mount.target)
            own_mounts.add(identity)
            if mount.sockets:
                socket_mounts.add(identity)
            for inner in mount.source.inner_mounts():
                own_mounts.add(_mount_at(rw_root, os.path.join(mount.target, inner)))
        for mount in ordered:
            for inner, directory in mount.source.capacities():
                where = _mount_at(rw_root, os.path.join(mount.target, inner))
                images[where] = os.open(directory, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except BaseException:
        for fd in (rw_root, *images.values()):
            os.close(fd)
        raise
    return Views(
        staging=staging,
        rw_root=rw_root,
        boot=boot,
        socket_mounts=frozenset(socket_mounts),
        own_mounts=frozenset(own_mounts),
        images=images,
    )


def _mount_at(root: int, target: str) -> int:
    """The id of the top mount at ``target`` in the view."""
    with closing(openat2(root, target, O_PATH, 0, RESOLVE_IN_ROOT)) as at:
        return mount_id(at)
