"""The cache of unpacked images: ``CACHE/images/KEY/`` holds ``rootfs/`` (a VM's lower
directory) and ``image.json`` (what it was made from: names, ID, layers, the runtime
configuration, size). KEY is ``sha256-HEX``, the image's ID (the digest of its
configuration), so that one image given as docker:NAME, as its ``docker save`` tarball
or as an OCI layout is unpacked once; or ``file-HEX`` for a plain rootfs tarball, which
has no digest (the file's identity stands for it).

Concurrency: ``KEY.lock`` is locked exclusively while KEY is made (in a temporary
directory renamed into place when complete, so a crash never leaves half an image) or
removed, and shared for as long as a process uses it: ``hvfs run`` holds it for its VM's
life; a removal that cannot lock it exclusively leaves the image alone. The cache
directory is hvfs's private one (hvfs.state.private_cache_directory): no one else can
plant an image there.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from hvfs._sys.files import closing
from hvfs.images import ImageError, formats
from hvfs.images.engine import PREFIX, EngineImage
from hvfs.images.progress import Progress
from hvfs.images.unpack import unpack_layers

IMAGES = "images"
META = "image.json"
ROOTFS = "rootfs"
REFS = ".refs"  # a file's identity -> its KEY, so that a known tarball is not read again
LIMIT_VARIABLE = "HVFS_IMAGE_LIMIT"  # bytes an image may unpack to (default: the free space)
_held: dict[str, int] = {}  # shared locks of the images this process uses (by entry), until it exits


def images_directory(cache: str) -> str:
    path = os.path.join(cache, IMAGES)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def lock(images: str, key: str, exclusive: bool, wait: bool = True) -> int | None:
    """An fd holding KEY's lock, or None if ``wait`` is false and another holds it."""
    path = os.path.join(images, f"{key}.lock")
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        if _current(fd, path):
            return fd
        os.close(fd)  # a removal unlinked it while we waited: lock the new one


def _current(fd: int, path: str) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def read_meta(entry: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(entry, META)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _write_meta(entry: str, meta: dict[str, Any]) -> None:
    temporary = os.path.join(entry, f".{META}.{os.getpid()}-{os.urandom(4).hex()}")  # writers may race
    with open(temporary, "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
    os.rename(temporary, os.path.join(entry, META))


def image_config(rootfs: str) -> dict[str, Any] | None:
    """The runtime configuration (Cmd, Entrypoint, Env, WorkingDir, User) of the image
    unpacked at ``rootfs``, or None for an image that has none."""
    meta = read_meta(os.path.dirname(rootfs)) if os.path.basename(rootfs) == ROOTFS else None
    config = meta.get("config") if meta else None
    return config if isinstance(config, dict) else None


def _limit(directory: str) -> int:
    chosen = os.environ.get(LIMIT_VARIABLE)
    if chosen and chosen.isdigit():
        return int(chosen)
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def disk_usage(path: str) -> int:
    """The bytes ``path`` and everything under it take on disk."""
    total = 0
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, name)).st_blocks * 512
    return total


def _ensure(images: str, key: str, name: str, make: Callable[[str], dict[str, Any]] | None) -> str | None:
    """KEY's rootfs, made by ``make`` (into a temporary directory) if absent, or None
    if absent and ``make`` is None. This process then holds KEY's lock shared."""
    entry = os.path.join(images, key)
    if entry in _held:  # in use by this process already (two VMs of a project): it stays
        meta = read_meta(entry)
        if meta is not None and name not in meta.get("names", []):
            _write_meta(entry, {**meta, "names": [*meta.get("names", []), name]})
        return os.path.join(entry, ROOTFS)
    while True:
        # Shared first: images in use hold it shared, so only a make or a removal waits.
        fd = lock(images, key, exclusive=False)
        assert fd is not None
        meta = read_meta(entry)
        if meta is None:
            os.close(fd)
            if make is None:
                return None
            fd = lock(images, key, exclusive=True)
            assert fd is not None
        try:
            meta = read_meta(entry)
            if meta is None:
                assert make is not None
                _make(images, key, name, make)
            elif name not in meta.get("names", []):
                _write_meta(entry, {**meta, "names": [*meta.get("names", []), name]})
            # Shared from now on: in use. Not atomic (flock(2)), so a removal may come
            # between; then the entry or its lock is gone, and it is made again.
            fcntl.flock(fd, fcntl.LOCK_SH)
            if _current(fd, os.path.join(images, f"{key}.lock")) and read_meta(entry) is not None:
                _held[entry] = fd
                fd = -1
                return os.path.join(entry, ROOTFS)
        finally:
            if fd >= 0:
                os.close(fd)


def _make(images: str, key: str, name: str, make: Callable[[str], dict[str, Any]]) -> None:
    entry = os.path.join(images, key)
    partial = tempfile.mkdtemp(prefix=f".unpack-{key}-", dir=images)
    try:
        meta = make(partial)
        rootfs = os.path.join(partial, ROOTFS)
        meta.update(names=[name], unpacked=time.time(), size=disk_usage(rootfs))
        _write_meta(partial, meta)
        if os.path.lexists(entry):  # a damaged entry (no image.json): replaced
            shutil.rmtree(entry, ignore_errors=True)
        os.rename(partial, entry)
    except OSError as e:
        raise ImageError(f"image {name}: cannot unpack into {images}: {e.strerror}; free space or fix the cache") from e
    finally:
        if os.path.isdir(partial):
            shutil.rmtree(partial, ignore_errors=True)


def _unpack(image: formats.Image, partial: str, name: str) -> dict[str, Any]:
    rootfs = os.path.join(partial, ROOTFS)
    os.mkdir(rootfs, 0o700)
    progress = Progress(f"unpacking {name}", image.size, layers=len(image.layers))
    what = f"image {name}"

    def opener(i: int, layer: formats.Layer) -> Callable[[], formats.CheckedLayer]:
        def open_layer() -> formats.CheckedLayer:
            progress.layer(i + 1)
            return formats.CheckedLayer(layer, f"{what}: layer {i + 1}", progress)

        return open_layer

    openers = [opener(i, layer) for i, layer in enumerate(image.layers)]
    skipped = unpack_layers(rootfs, openers, _limit(partial), what)  # type: ignore[arg-type]
    os.chmod(rootfs, 0o755)
    layers = "1 layer" if len(image.layers) == 1 else f"{len(image.layers)} layers"
    progress.finish(f", {layers}" + (f", {len(skipped)} device nodes skipped" if skipped else ""))
    return {"kind": image.kind, "id": image.id, "config": image.config, "layers": [x.diff_id for x in image.layers]}


def _from_engine(engine: EngineImage, partial: str, name: str) -> dict[str, Any]:
    saved = os.path.join(partial, "saved.tar")
    progress = Progress(f"exporting {name}", engine.size)
    with closing(os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)) as fd:
        engine.save(fd, progress)
    progress.finish()
    try:
        with formats.opened(saved) as image:
            if image.id != engine.id:
                raise ImageError(f"image {name}: Docker saved {image.id}, not {engine.id}; run again")
            meta = _unpack(image, partial, name)
    finally:
        os.unlink(saved)
    return {**meta, "kind": "docker"}


def _ref(images: str, path: str, st: os.stat_result) -> str:
    identity = f"{os.path.realpath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_dev}"
    return os.path.join(images, REFS, hashlib.sha256(identity.encode()).hexdigest()[:32])


def prepare(image: str, cache: str) -> str:
    """The rootfs of ``image`` (docker:NAME, a docker save or OCI layout tarball, an OCI
    layout directory, a rootfs tarball), unpacked into ``cache`` if not there yet; this
    process holds it in use until it exits. Raises ImageError."""
    images = images_directory(cache)
    if image.startswith(PREFIX):
        engine = EngineImage(image)
        try:
            key = f"sha256-{engine.id.partition(':')[2]}"
            found = _ensure(images, key, image, lambda partial: _from_engine(engine, partial, image))
        finally:
            engine.close()
        assert found is not None
        return found
    ref = None
    try:
        ref = _ref(images, image, os.stat(image))
        with open(ref) as f:
            known = f.read().strip()
    except OSError:
        known = ""
    if known and "/" not in known and not known.startswith("."):
        found = _ensure(images, known, image, None)
        if found is not None:
            return found
    with formats.opened(image) as opened:
        found = _ensure(images, opened.key, image, lambda partial: _unpack(opened, partial, image))
        key = opened.key
    assert found is not None and ref is not None
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(ref), mode=0o700, exist_ok=True)
        with open(f"{ref}.tmp", "w") as f:
            f.write(key)
        os.rename(f"{ref}.tmp", ref)
    return found
