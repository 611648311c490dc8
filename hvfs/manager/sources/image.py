"""The VM's root: an image under a per-VM copy-on-write layer (overlayfs).

Images: ``host`` (the host's own /usr, /etc and /bin, /lib* read-only, so that host
programs run), a root file system directory, or a root file system tarball (unpacked
once into a cache). Writes land in the VM's upper layers, kept in memory and discarded
at exit, or kept on disk with ``--persist DIR``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from hvfs._sys import mount as m
from hvfs._sys.abi import O_PATH, RESOLVE_IN_ROOT
from hvfs._sys.files import closing, openat2
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

    def __init__(self, name: str, layers: tuple[tuple[str, str], ...], skeleton: bool) -> None:
        self.name = name
        self.layers = layers  # (path in the VM, lower directory); the first is "/"
        self.skeleton = skeleton  # build the root directory from SKELETON_DIRS and host links

    def mount(self, target: int, scratch: Scratch) -> None:
        """Implements Source.mount: one overlay per layer, nested under the root's."""
        root_lower = self.layers[0][1]
        if self.skeleton:
            root_lower = os.path.join(scratch.directory, "skeleton")
            _make_skeleton(root_lower)
        with m.attached(scratch.overlay(root_lower, "root"), target) as root:
            for path, lower in self.layers[1:]:
                with closing(openat2(root, path, O_PATH | os.O_DIRECTORY, 0, RESOLVE_IN_ROOT)) as at:
                    m.attach(scratch.overlay(lower, path.strip("/").replace("/", "-")), at)

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
    layers = [("/", "")]
    for name in HOST_TREES:
        host = os.path.join("/", name)
        if os.path.isdir(host) and not os.path.islink(host):
            layers.append((host, host))
    return ImageSource("host", tuple(layers), skeleton=True)


def directory_image(path: str) -> ImageSource:
    if not os.path.isdir(path):
        raise SourceError(f"image {path}: not a directory; give a root file system directory or tarball")
    return ImageSource(path, (("/", path),), skeleton=False)


def _safe_members(archive: tarfile.TarFile, destination: str) -> Iterator[tarfile.TarInfo]:
    """Members that stay inside ``destination``, checked lazily as extraction proceeds,
    so that a symlink unpacked earlier cannot carry a later member out of the tree."""
    root = os.path.realpath(destination)
    for member in archive:
        if member.ischr() or member.isblk():
            continue  # device nodes cannot be made in a user namespace, nor are they wanted
        name = member.name.lstrip("/")
        if not name or ".." in name.split("/"):
            continue
        if member.islnk() and (member.linkname.startswith("/") or ".." in member.linkname.split("/")):
            continue
        where = os.path.realpath(os.path.join(root, name))
        if where != root and not where.startswith(root + "/"):
            continue
        member.name = name
        yield member


def unpack_tarball(path: str, cache: str) -> str:
    """Unpack a root file system tarball once; return the cached directory.

    The cache key is the file's identity (path, size, mtime, inode); an unpacked tree is
    renamed into place only when complete, so a crash never leaves a half-unpacked image.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        raise SourceError(f"image {path}: {e.strerror}; give a directory, a tarball or 'host'") from None
    key = hashlib.sha256(f"{os.path.realpath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}".encode()).hexdigest()
    destination = os.path.join(cache, key[:32])
    if os.path.isdir(destination):
        return destination
    os.makedirs(cache, exist_ok=True)
    partial = tempfile.mkdtemp(prefix=".unpack-", dir=cache)
    try:
        with tarfile.open(path) as archive:
            options: dict[str, Any] = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
            archive.extractall(partial, members=_safe_members(archive, partial), numeric_owner=True, **options)
        os.rename(partial, destination)
    except tarfile.TarError as e:
        reason = str(e).splitlines()[0].rstrip(":")  # tarfile lists every compression it tried, a line each
        raise SourceError(
            f"image {path}: not a readable tarball ({reason}); give a directory, a tarball or 'host'"
        ) from None
    except OSError as e:
        if os.path.isdir(destination):  # another run unpacked it first
            return destination
        raise SourceError(f"image {path}: cannot unpack into {cache}: {e.strerror}") from None
    finally:
        if os.path.isdir(partial):
            shutil.rmtree(partial, ignore_errors=True)
    return destination


def image_problem(path: str) -> str | None:
    """What keeps ``path`` from being a VM's root (a directory, or a rootfs tarball), or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "does not exist; give 'host', a root directory or a rootfs tarball"
    except OSError as e:
        return f"cannot be read: {e.strerror}; give 'host', a root directory or a rootfs tarball"
    if stat.S_ISDIR(st.st_mode):
        return None
    if not stat.S_ISREG(st.st_mode):
        return "is neither a directory nor a file; give 'host', a root directory or a rootfs tarball"
    try:
        if tarfile.is_tarfile(path):
            return None
    except OSError as e:
        return f"cannot be read: {e.strerror}; give 'host', a root directory or a rootfs tarball"
    return "is neither a directory nor a tar archive; give 'host', a root directory or a rootfs tarball (.tar, .tar.gz)"


def _image(value: str, base: str | None) -> str:
    return value if value == "host" else PATH.normalize(value, base)


def _checked(image: str) -> str | None:
    problem = None if image == "host" else image_problem(image)
    return f"{image} {problem}" if problem else None


def _prepare(options: Mapping[str, Any], cache: Callable[[], str]) -> Mapping[str, Any]:
    """A tarball is unpacked into the user's cache (once: see ``unpack_tarball``)."""
    path = options["path"]
    if path == "host" or os.path.isdir(path) or "unpacked" in options:
        return options
    return {**options, "unpacked": unpack_tarball(path, os.path.join(cache(), "images"))}


def _make(options: Mapping[str, Any]) -> ImageSource:
    path = options["path"]
    if path == "host":
        return host_image()
    if "unpacked" in options:
        return ImageSource(path, (("/", options["unpacked"]),), skeleton=False)
    if os.path.isdir(path):
        return directory_image(path)
    raise SourceError(f"image {path}: a tarball is unpacked before its VM is made; prepare the source first")


KIND = SourceKind(
    "image",
    "a VM's root: an image under a copy-on-write layer of the VM's own, discarded at exit unless --persist",
    (
        Option(
            "path",
            OptionType("image", (str,), _image),
            "'host' (the host's /usr, /etc, /bin, /lib*), a root file system directory, or a rootfs tarball",
            required=True,
            check=_checked,
        ),
        Option("unpacked", PATH, "where the tarball was unpacked (in the user's cache)", internal=True),
    ),
    _make,
    role="root",
    prepare=_prepare,
)
