"""What an image file is: a ``docker save`` tarball (``manifest.json``), an OCI image
layout (``oci-layout`` and ``index.json``; a directory, or a tarball of one), or a plain
root file system tarball; and its layers, as streams checked against their digests.

An image's cache key is the digest of its configuration (Docker's image ID), computed
here, never taken from a name; its layers are checked against the configuration's
``rootfs.diff_ids`` as they are unpacked, so an image in the cache under a key holds
what that key names.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import json
import lzma
import os
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from hvfs.images import ImageError
from hvfs.images.progress import Progress

CONFIG_KEYS = ("Cmd", "Entrypoint", "Env", "WorkingDir", "User")
MAX_JSON = 4 << 20  # a manifest, index or configuration larger than this is not one
FIX = "give docker:NAME, a docker save tarball, an OCI layout, a root directory or a rootfs tarball"


@dataclass
class Layer:
    open: Callable[[], IO[bytes]]  # the blob as stored (maybe compressed)
    size: int  # bytes of the blob, for progress
    digest: str | None = None  # sha256:… of the blob, when the format names it
    diff_id: str | None = None  # sha256:… of the uncompressed tar


@dataclass
class Image:
    kind: str  # docker-archive, oci, rootfs
    key: str  # its directory in the cache
    layers: list[Layer]
    config: dict[str, Any] = field(default_factory=dict)  # Cmd, Entrypoint, Env, WorkingDir, User
    id: str | None = None  # sha256:… of its configuration

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)


class Hashing:
    """A read-only stream that hashes what is read through it and reports its count."""

    def __init__(self, inner: IO[bytes], progress: Callable[[int], None] | None = None) -> None:
        self.inner, self.progress = inner, progress
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.hash.update(data)
        if self.progress is not None and data:
            self.progress(len(data))
        return data

    def drain(self) -> str:
        while self.read(1 << 20):
            pass
        return f"sha256:{self.hash.hexdigest()}"

    def close(self) -> None:
        self.inner.close()


_MAGIC = {b"\x1f\x8b": gzip.GzipFile, b"BZh": bz2.BZ2File, b"\xfd7zXZ\x00": lzma.LZMAFile}


class CheckedLayer:
    """A layer's uncompressed tar stream; ``close`` checks both digests (after reading what
    tar left unread: its end-of-archive padding)."""

    def __init__(self, layer: Layer, what: str, progress: Callable[[int], None] | None) -> None:
        self.layer, self.what = layer, what
        self.raw = Hashing(layer.open(), progress)
        head = self.raw.read(6)
        opener = next((o for magic, o in _MAGIC.items() if head.startswith(magic)), None)
        if head.startswith(b"\x28\xb5\x2f\xfd"):
            raise ImageError(f"{what} is compressed with zstd, which hvfs cannot read; save it with gzip or none")
        stream: Any = _Prefixed(head, self.raw)
        if opener is not None:
            stream = opener(fileobj=stream)
        self.tar = Hashing(stream)

    def read(self, size: int = -1) -> bytes:
        try:
            return self.tar.read(size)
        except (OSError, EOFError, lzma.LZMAError) as e:
            raise ImageError(f"{self.what}: cannot decompress ({e}); the image is damaged, save it again") from None

    def close(self) -> None:
        try:
            diff_id = self.tar.drain()
            digest = self.raw.drain()
        finally:
            self.raw.close()
        for expected, found in ((self.layer.diff_id, diff_id), (self.layer.digest, digest)):
            if expected is not None and expected != found:
                raise ImageError(f"{self.what}: its digest is {found}, not {expected}; the image is damaged or forged")


class _Prefixed:
    def __init__(self, head: bytes, rest: Hashing) -> None:
        self.head, self.rest = head, rest

    def read(self, size: int = -1) -> bytes:
        if self.head:
            data = self.head if size < 0 or size >= len(self.head) else self.head[:size]
            self.head = self.head[len(data) :]
            more = self.rest.read(size - len(data)) if size < 0 or size > len(data) else b""
            return data + more
        return self.rest.read(size)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        pass


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ImageError(f"{what} is not JSON; the image is damaged, save it again") from None


def _sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def runtime_config(config: Any) -> dict[str, Any]:
    """The part of an image's configuration hvfs uses (as docker run does)."""
    inner = config.get("config") if isinstance(config, dict) else None
    if not isinstance(inner, dict):
        return {}
    return {k: inner[k] for k in CONFIG_KEYS if inner.get(k) not in (None, "", [])}


class _Files:
    """The files of an image: a directory's, or a tarball's members (by clean name)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        self.raw: IO[bytes] | None = None
        if not os.path.isdir(path):
            self.raw = open(path, "rb")  # noqa: SIM115 (closed by close())
            try:
                self.tar = tarfile.open(fileobj=self.raw)  # noqa: SIM115 (closed by close())
                self._index(path)
            except BaseException:
                self.close()
                raise

    def _index(self, path: str) -> None:
        # Listing a compressed tarball's members reads all of it (seconds for a large one):
        # progress by the bytes of the file read so far.
        assert self.tar is not None and self.raw is not None
        progress = Progress(f"reading {path}", os.fstat(self.raw.fileno()).st_size)
        for member in self.tar:
            if member.isreg():
                self.members[os.path.normpath(member.name.lstrip("/"))] = member
            progress(self.raw.tell() - progress.done)
        progress.finish()

    def has(self, name: str) -> bool:
        if self.tar is None:
            return os.path.isfile(os.path.join(self.path, name))
        return name in self.members

    def size(self, name: str) -> int:
        return os.path.getsize(os.path.join(self.path, name)) if self.tar is None else self.members[name].size

    def open(self, name: str) -> IO[bytes]:
        if self.tar is None:
            return open(os.path.join(self.path, name), "rb")
        stream = self.tar.extractfile(self.members[name])
        assert stream is not None
        return stream

    def read(self, name: str, what: str) -> bytes:
        if not self.has(name):
            raise ImageError(f"{what}: {name} is missing; the image is damaged, save it again")
        if self.size(name) > MAX_JSON:
            raise ImageError(f"{what}: {name} is too large to be a manifest or configuration")
        with self.open(name) as f:
            return f.read()

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
        if self.raw is not None:
            self.raw.close()


def _image(files: _Files, config_name: str, layers: Sequence[tuple[str, str | None]], kind: str, what: str) -> Image:
    raw = files.read(config_name, what)
    config = _json(raw, f"{what}: {config_name}")
    digest = _sha256(raw)
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") if isinstance(config, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
        raise ImageError(f"{what}: its configuration lists {len(diff_ids or [])} layers, its manifest {len(layers)}")
    found = []
    for (name, blob_digest), diff_id in zip(layers, diff_ids, strict=True):
        if not files.has(name):
            raise ImageError(f"{what}: layer {name} is missing; the image is damaged, save it again")
        found.append(Layer(_opener(files, name), files.size(name), blob_digest, str(diff_id)))
    return Image(kind, f"sha256-{digest.split(':')[1]}", found, runtime_config(config), digest)


def _opener(files: _Files, name: str) -> Callable[[], IO[bytes]]:
    return lambda: files.open(name)


def _docker_archive(files: _Files, what: str) -> Image:
    manifest = _json(files.read("manifest.json", what), f"{what}: manifest.json")
    if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
        count = len(manifest) if isinstance(manifest, list) else 0
        raise ImageError(f"{what} holds {count} images; save one image per tarball (docker save NAME)")
    entry = manifest[0]
    layers = entry.get("Layers")
    if not isinstance(entry.get("Config"), str) or not isinstance(layers, list):
        raise ImageError(f"{what}: manifest.json names no configuration or layers; save the image again")
    names = [os.path.normpath(str(name)) for name in layers]
    return _image(files, os.path.normpath(entry["Config"]), [(n, None) for n in names], "docker-archive", what)


def _blob(digest: object, what: str) -> str:
    algorithm, _, hexdigest = str(digest).partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
        raise ImageError(f"{what}: digest {digest!r} is not sha256:<64 hex digits>")
    return f"blobs/sha256/{hexdigest}"


def _oci(files: _Files, what: str) -> Image:
    index = _json(files.read("index.json", what), f"{what}: index.json")
    for _ in range(4):  # an index may name an index (per platform); not deeper than this
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(manifests, list) or not manifests:
            raise ImageError(f"{what}: its index names no image")
        ours = [m for m in manifests if _this_platform(m)]
        if len(ours) != 1:
            raise ImageError(f"{what}: its index names {len(ours)} images for this machine; give a layout of one")
        name = _blob(ours[0].get("digest"), what)
        raw = files.read(name, what)
        if _sha256(raw) != ours[0].get("digest"):
            raise ImageError(f"{what}: {name} does not match its digest; the image is damaged or forged")
        index = _json(raw, f"{what}: {name}")
        if isinstance(index, dict) and "layers" in index:
            break
    else:
        raise ImageError(f"{what}: its indexes nest too deep; give a layout of one image")
    config, layers = index.get("config"), index.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise ImageError(f"{what}: its manifest names no configuration or layers")
    config_name = _blob(config.get("digest"), what)
    if _sha256(files.read(config_name, what)) != config.get("digest"):
        raise ImageError(f"{what}: its configuration does not match its digest; the image is damaged or forged")
    named = [(_blob(layer.get("digest"), what), str(layer.get("digest"))) for layer in layers]
    return _image(files, config_name, named, "oci", what)


def _this_platform(descriptor: Any) -> bool:
    platform = descriptor.get("platform") if isinstance(descriptor, dict) else None
    if not isinstance(platform, dict):
        return True
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    return platform.get("os") in (None, "linux") and platform.get("architecture") in (None, machine)


def _rootfs(path: str, st: os.stat_result) -> Image:
    identity = f"{os.path.realpath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:32]
    return Image("rootfs", f"file-{key}", [Layer(lambda: open(path, "rb"), st.st_size)])


def without_config(path: str) -> bool:
    """Whether the image ``path`` has no runtime configuration for sure (the host's, a root
    directory); an image to unpack may have one."""
    return path == "host" or (os.path.isdir(path) and not os.path.isfile(os.path.join(path, "oci-layout")))


@contextlib.contextmanager
def opened(path: str) -> Iterator[Image]:
    """The image at ``path`` (kept open while in the block); ImageError if it is none."""
    what = f"image {path}"
    try:
        st = os.stat(path)
        if os.path.isdir(path):
            if not os.path.isfile(os.path.join(path, "oci-layout")):
                raise ImageError(f"{what} is a root directory, not an image to unpack")
            files = _Files(path)
        else:
            try:
                files = _Files(path)
            except tarfile.TarError:
                raise ImageError(f"{what} is neither a directory nor a tar archive; {FIX}") from None
    except OSError as e:
        raise ImageError(f"{what}: {e.strerror}; {FIX}") from None
    try:
        if files.has("manifest.json"):
            image = _docker_archive(files, what)
        elif files.has("oci-layout") and files.has("index.json"):
            image = _oci(files, what)
        elif files.tar is not None:
            image = _rootfs(path, st)
        else:
            raise ImageError(f"{what}: an OCI layout without index.json; {FIX}")
        yield image
    finally:
        files.close()
