"""What the cache of unpacked images holds, what of it running VMs use, and removing
the rest (``hvfs images ls | rm | prune``).

An image is in use while a process holds its lock shared (``hvfs run`` for its VM's
life, ``hvfs up`` until the manager has its VMs) or while a mount anywhere on the
machine has it as an overlayfs lower directory: the kernel's own record of what running
VMs use, whichever manager (root's, a user's, a test's state directory) made them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass
from typing import Any

from hvfs.images import ImageError, store

_LEGACY = re.compile(r"^[0-9a-f]{32}$")  # a rootfs tarball unpacked by hvfs before image.json
_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass
class Entry:
    key: str
    path: str  # the entry's directory
    rootfs: str  # what a VM's overlay has as its lower directory
    meta: dict[str, Any]

    @property
    def names(self) -> list[str]:
        return [str(n) for n in self.meta.get("names", [])]

    @property
    def size(self) -> int:
        return int(self.meta.get("size") or 0)

    def to_json(self, in_use: bool) -> dict[str, Any]:
        return {
            "key": self.key, "id": self.meta.get("id"), "kind": self.meta.get("kind", "rootfs"),
            "names": self.names, "size": self.size, "unpacked": self.meta.get("unpacked"),
            "path": self.rootfs, "in_use": in_use,
        }  # fmt: skip


def entries(images: str) -> list[Entry]:
    found = []
    for name in sorted(os.listdir(images)):
        path = os.path.join(images, name)
        if name.startswith(".") or not os.path.isdir(path) or os.path.islink(path):
            continue
        meta = store.read_meta(path)
        if meta is not None:
            found.append(Entry(name, path, os.path.join(path, store.ROOTFS), meta))
        elif _LEGACY.match(name):
            found.append(Entry(name, path, path, {"kind": "rootfs", "names": [], "size": store.disk_usage(path)}))
    return found


def mounted_lowers() -> set[str]:
    """Every overlayfs lower directory of a mount this user can see, in any mount
    namespace (each read once)."""
    lowers: set[str] = set()
    seen: set[int] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            namespace = os.stat(f"/proc/{pid}/ns/mnt").st_ino
            if namespace in seen:
                continue
            seen.add(namespace)
        try:
            with open(f"/proc/{pid}/mountinfo") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            _, sep, tail = line.partition(" - ")
            fields = tail.split(" ")
            if not sep or len(fields) < 3 or fields[0] != "overlay":
                continue
            for option in fields[2].split(","):
                if option.startswith("lowerdir="):
                    for lower in option[len("lowerdir=") :].split(":"):
                        lowers.add(os.path.normpath(_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), lower)))
    return lowers


def _mounted(entry: Entry, lowers: set[str]) -> bool:
    return any(lower == entry.rootfs or lower.startswith(entry.path + "/") for lower in lowers)


def in_use(images: str, entry: Entry, lowers: set[str]) -> bool:
    if _mounted(entry, lowers):
        return True
    fd = store.lock(images, entry.key, exclusive=True, wait=False)
    if fd is None:
        return True
    os.close(fd)
    return False


def remove(images: str, entry: Entry) -> bool:
    """Remove ``entry`` unless it is in use (then False). Its lock is held exclusively
    meanwhile, so no run can take it up half-removed."""
    fd = store.lock(images, entry.key, exclusive=True, wait=False)
    if fd is None:
        return False
    try:
        if _mounted(entry, mounted_lowers()):
            return False
        trash = os.path.join(images, f".trash-{entry.key}-{os.urandom(4).hex()}")
        os.rename(entry.path, trash)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(images, f"{entry.key}.lock"))
    finally:
        os.close(fd)
    shutil.rmtree(trash, ignore_errors=True)
    return True


def leftovers(images: str) -> int:
    """Remove what interrupted runs left (a half-unpacked image, a removal cut short);
    return the bytes freed."""
    freed = 0
    for name in os.listdir(images):
        path = os.path.join(images, name)
        if name.startswith(".unpack-"):
            key = name[len(".unpack-") :].rsplit("-", 1)[0]
            fd = store.lock(images, key, exclusive=True, wait=False)
            if fd is None:
                continue  # being unpacked now
            os.close(fd)
        elif not name.startswith(".trash-"):
            continue
        freed += store.disk_usage(path)
        shutil.rmtree(path, ignore_errors=True)
    return freed


def forget_stale_refs(images: str) -> None:
    """Drop the notes of which file is which image for images no longer cached."""
    refs = os.path.join(images, store.REFS)
    for name in os.listdir(refs) if os.path.isdir(refs) else ():
        with contextlib.suppress(OSError), open(os.path.join(refs, name)) as f:
            key = f.read().strip()
        if not key or not os.path.isdir(os.path.join(images, key)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(refs, name))


def find(images: str, name: str) -> Entry:
    """The entry ``name`` designates: its key or a prefix of its ID (4 hex digits at
    least), its ID, or a name it was given (docker:NAME, NAME, or a file's path)."""
    known = entries(images)
    bare = name.removeprefix("sha256:").removeprefix("sha256-").removeprefix("file-")
    path = os.path.abspath(name)
    matches = [
        e for e in known
        if name in e.names or f"docker:{name}" in e.names or path in e.names or e.key == name
        or (len(bare) >= 4 and re.fullmatch(r"[0-9a-f]+", bare) and e.key.split("-")[-1].startswith(bare))
    ]  # fmt: skip
    if not matches:
        raise ImageError(f"no cached image {name!r}; see hvfs images ls")
    if len(matches) > 1:
        keys = ", ".join(e.key.split("-")[-1][:12] for e in matches)
        raise ImageError(f"{name!r} names {len(matches)} cached images ({keys}); give more of the ID")
    return matches[0]
