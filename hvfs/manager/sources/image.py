"""The VM's root: an image under a per-VM copy-on-write layer (overlayfs).

Images: ``host`` (the host's own /usr, /etc and /bin, /lib* read-only, so that host
programs run), a root file system directory, or an image unpacked once into a cache by
hvfs.images: ``docker:NAME`` of the local Docker engine, a ``docker save`` or OCI layout
tarball, an OCI layout directory, or a root file system tarball. Writes land in the VM's
upper layers, kept in memory and discarded at exit, or kept on disk with ``--persist DIR``.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable, Mapping
from typing import Any

from hvfs._sys import mount as m
from hvfs._sys.abi import O_PATH, RESOLVE_IN_ROOT
from hvfs._sys.files import closing, openat2
from hvfs.images.engine import PREFIX, reference_problem
from hvfs.manager.sources.base import Scratch, Source, SourceError
from hvfs.manager.sources.schema import PATH, Option, OptionType, SourceKind

# What of the host's root a VM sees with the "host" image.
HOST_TREES = ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
SKELETON_DIRS = {
    "dev": 0o755,
    "proc": 0o555,
    "sys": 0o555,
    "tmp": 0o1777,
    "root": 0o700,
    "home": 0o755,
    "run": 0o755,
    "var": 0o755,
    "var/tmp": 0o1777,
    "mnt": 0o755,
    "opt": 0o755,
    "srv": 0o755,
}


class ImageSource(Source):
    kind = "image"

    def __init__(self, name: str, layers: tuple[tuple[str, str], ...] | None, skeleton: bool) -> None:
        """``layers`` None: the host's (``host_layers``), looked at when first used, not when
        made: a run that takes a spare makes its table's sources and never mounts them."""
        self.name = name
        self._layers = layers
        self.skeleton = skeleton  # build the root directory from SKELETON_DIRS and host links

    @property
    def layers(self) -> tuple[tuple[str, str], ...]:
        """(path in the VM, lower directory) of each layer; the first is "/"."""
        if self._layers is None:
            self._layers = host_layers()
        return self._layers

    def mount(self, target: int, scratch: Scratch) -> None:
        """Implements Source.mount: one overlay per layer, nested under the root's."""
        with m.attached(self._root_overlay(scratch), target) as root:
            for path, lower in self.layers[1:]:
                with closing(openat2(root, path, O_PATH | os.O_DIRECTORY, 0, RESOLVE_IN_ROOT)) as at:
                    m.attach(scratch.overlay(lower, path.strip("/").replace("/", "-")), at)

    def _root_overlay(self, scratch: Scratch) -> int:
        """The root's overlay: of the shared skeleton (``shared_skeleton``) where it can be,
        else of a skeleton of this VM's own (or of the image's root directory)."""
        if not self.skeleton:
            return scratch.overlay(self.layers[0][1], "root")
        shared = None if scratch.persisted else shared_skeleton()
        if shared is not None:
            try:
                return scratch.overlay(shared, "root")
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                refuse_shared_skeleton()  # an overlayfs that takes no lower by fd
        lower = os.path.join(scratch.directory, "skeleton")
        _make_skeleton(lower)
        return scratch.overlay(lower, "root")

    def inner_mounts(self) -> tuple[str, ...]:
        """Implements Source.inner_mounts: the nested layers."""
        return tuple(path.lstrip("/") for path, _lower in self.layers[1:])

    def capacities(self) -> tuple[tuple[str, str], ...]:
        """Implements Source.capacities: each layer's lower directory; for the host image,
        whose root is a skeleton, the host's root file system, where its trees come from."""
        root = "/" if self.skeleton else self.layers[0][1]
        return (("", root), *((path.lstrip("/"), lower) for path, lower in self.layers[1:]))

    def describe(self) -> str:
        return self.name


def shared_skeleton() -> int | None:
    """The host image's root lower for every VM of this process (an fd of it), or None
    where it cannot be made or used (then each VM makes its own, as a persisted root does:
    a root kept on disk names a lower that outlives this process).

    Made once, on a tmpfs of its own that is mounted nowhere (``new_mount``: only this
    process holds it, by a close-on-exec fd, and it goes with the process and the last
    overlay of it) and read-only once made; handed to overlayfs by fd (``lowerdir+``), so
    no path can be swapped under it. Shared safely because overlayfs never writes a lower
    layer: a VM's change to its root (a file in /srv, a chmod of /tmp) is copied up into
    that VM's own upper layer, so no VM sees another's. It saves each VM's view some
    thirty file system calls (mkdir, chmod, symlink, stat), on the making of every spare
    and every fresh start."""
    global _shared
    with _shared_lock:
        if _shared is None:
            try:
                fd = m.new_mount("tmpfs", {"mode": "0755", "size": "64k"}, m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV)
            except OSError:
                _shared = -1
                return None
            try:
                _fill_skeleton(fd)
                m.set_readonly(fd)
            except OSError:
                os.close(fd)
                fd = -1
            _shared = fd
        return _shared if _shared >= 0 else None


def refuse_shared_skeleton() -> None:
    """Make no more VMs of the shared skeleton (the kernel refused it). Its fd stays open:
    another thread may be passing it to the kernel now, and a number closed under it could
    name some other file by then."""
    global _shared
    with _shared_lock:
        _shared = -1


_shared: int | None = None  # the shared skeleton's fd; -1: none can be
_shared_lock = threading.Lock()


def _fill_skeleton(at: int) -> None:
    """``_make_skeleton``'s tree, in the directory ``at``."""
    for name in HOST_TREES:
        host = os.path.join("/", name)
        if os.path.islink(host):
            os.symlink(os.readlink(host), name, dir_fd=at)
        elif os.path.isdir(host):
            os.mkdir(name, dir_fd=at)
    for name, mode in SKELETON_DIRS.items():
        os.mkdir(name, dir_fd=at)
        os.chmod(name, mode, dir_fd=at)


def _make_skeleton(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for name in HOST_TREES:
        host = os.path.join("/", name)
        here = os.path.join(directory, name)
        if os.path.islink(host):
            if not os.path.lexists(here):
                os.symlink(os.readlink(host), here)
        elif os.path.isdir(host):
            os.makedirs(here, exist_ok=True)
    for name, mode in SKELETON_DIRS.items():
        here = os.path.join(directory, name)
        os.makedirs(here, exist_ok=True)
        os.chmod(here, mode)


def host_image() -> ImageSource:
    return ImageSource("host", None, skeleton=True)


def host_layers() -> tuple[tuple[str, str], ...]:
    """The host image's layers: its root, then each of the host's trees that is a directory."""
    layers = [("/", "")]
    for name in HOST_TREES:
        host = os.path.join("/", name)
        if os.path.isdir(host) and not os.path.islink(host):
            layers.append((host, host))
    return tuple(layers)


def directory_image(path: str) -> ImageSource:
    if not os.path.isdir(path):
        raise SourceError(f"image {path}: not a directory; give a root file system directory or tarball")
    return ImageSource(path, (("/", path),), skeleton=False)


def image_problem(path: str) -> str | None:
    """What keeps ``path`` from being a VM's root (docker:NAME, a directory, a tarball), or None."""
    import tarfile  # the image store, tarfile and formats only for an image other than the host's

    from hvfs.images.formats import FIX

    if path.startswith(PREFIX):
        return reference_problem(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"does not exist; {FIX}"
    except OSError as e:
        return f"cannot be read: {e.strerror}; {FIX}"
    if stat.S_ISDIR(st.st_mode):
        return None
    if not stat.S_ISREG(st.st_mode):
        return f"is neither a directory nor a file; {FIX}"
    try:
        if tarfile.is_tarfile(path):
            return None
    except OSError as e:
        return f"cannot be read: {e.strerror}; {FIX}"
    return f"is neither a directory nor a tar archive; {FIX} (.tar, .tar.gz)"


def _image(value: str, base: str | None) -> str:
    return value if value == "host" or value.startswith(PREFIX) else PATH.normalize(value, base)


def _checked(image: str) -> str | None:
    problem = None if image == "host" else image_problem(image)
    return f"{image} {problem}" if problem else None


def _prepare(options: Mapping[str, Any], cache: Callable[[], str]) -> Mapping[str, Any]:
    """An image of Docker, an OCI layout or a tarball is unpacked into the user's cache
    (once: see hvfs.images.store); a root directory is used as it is."""
    path = options["path"]
    if path == "host" or "unpacked" in options:
        return options
    if not path.startswith(PREFIX) and os.path.isdir(path) and not os.path.isfile(os.path.join(path, "oci-layout")):
        return options
    from hvfs.images import store

    return {**options, "unpacked": store.prepare(path, cache())}


def _make(options: Mapping[str, Any]) -> ImageSource:
    path = options["path"]
    if path == "host":
        return host_image()
    if "unpacked" in options:
        return ImageSource(path, (("/", options["unpacked"]),), skeleton=False)
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "oci-layout")):
        return directory_image(path)
    raise SourceError(f"image {path}: a tarball is unpacked before its VM is made; prepare the source first")


KIND = SourceKind(
    "image",
    "a VM's root: an image under a copy-on-write layer of the VM's own, discarded at exit unless --persist",
    (
        Option(
            "path",
            OptionType("image", (str,), _image),
            "'host' (the host's /usr, /etc, /bin, /lib*), docker:NAME[:TAG] (an image of the local Docker engine), "
            "a docker save or OCI layout tarball, an OCI layout directory, a root directory, or a rootfs tarball",
            required=True,
            check=_checked,
        ),
        Option("unpacked", PATH, "where the tarball was unpacked (in the user's cache)", internal=True),
    ),
    _make,
    role="root",
    prepare=_prepare,
)
