"""Compiled filters kept on disk, so that ``hvfs run`` need not import pyseccomp (its import
runs ldconfig twice) nor run libseccomp's compiler: together most of 10 ms per start.

An entry holds the BPF program for one (configuration, architecture) and the syscall
names libseccomp gave the numbers, under a key made of everything they depend on: the
``FilterConfig``, the architecture, libseccomp (the version of the library the dynamic
linker finds as ``libseccomp.so.2``; entries are written only when that is the library
pyseccomp itself loaded), pyseccomp's source,
the source of the syscall table, of the compiler and of the flags it tests
(``syscalls.py``, ``filter.py`` and ``hvfs/_sys/abi.py``, so that any edit of one makes
new keys), this module's format and hvfs's version.

An entry is trusted only if the cache directory is private (hvfs.private_dirs), the
entry is a regular file owned by the user running hvfs and writable by no one else,
names its own key, and its program matches its digest; anything else is a miss, and
the program is compiled as if there were no cache. Entries are written to a temporary
name and renamed into place, so readers never see half of one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import threading

from hvfs import __version__, deferred
from hvfs._sys.seccomp import SONAME, libseccomp_version
from hvfs.intercept.arch import Arch
from hvfs.private_dirs import UnsafeDirectory
from hvfs.state import cache_directory, cache_problem, private_cache_directory

try:  # hashlib's own BLAKE2 (it takes it from _blake2); importing hashlib loads OpenSSL: 2-7 ms of a cold run
    from _blake2 import blake2b
except ImportError:  # a Python built without it
    from hashlib import blake2b

log = deferred.logger("hvfs.driver")

FORMAT = 2  # 2: BLAKE2b digests (1: SHA-256)
_HERE = os.path.dirname(__file__)  # os.path, not pathlib: its import was a quarter of a cold start's filter
SOURCES = (f"{_HERE}/filter.py", f"{_HERE}/syscalls.py", f"{_HERE}/../_sys/abi.py")  # compiler, table, flags
_MAX_ENTRY = 1 << 20
_counts = {"hits": 0, "misses": 0, "stored": 0}  # since the process started (hvfs manager status)


class Entry:
    """A compiled program and the syscall names libseccomp gave the numbers (a plain
    class: a dataclass costs more to define than this module's whole hit path)."""

    __slots__ = ("names", "program")

    def __init__(self, program: bytes, names: dict[int, str]) -> None:
        self.program = program
        self.names = names


def directory() -> str:
    return os.path.join(cache_directory(), "filters")


def statistics() -> dict[str, object]:
    """Entries found (hits), looked for in vain (misses) and written by this process, and
    where (hvfs manager status)."""
    return {"directory": directory(), **_counts}


def _count(what: str) -> None:
    _counts[what] += 1  # under the GIL; a count lost to a race would only make a figure low


def _trusted() -> bool:
    """Whether the cache directory is private (hvfs.private_dirs): where others may write,
    a planted or swapped entry is not to be read, nor ours written."""
    why_not = cache_problem()
    if why_not is not None:
        log.debug("filter cache: not used: %s", why_not)
    return why_not is None


def key(config: object, arch: Arch) -> str | None:
    """The key of the filter for ``config`` on ``arch``, or None if libseccomp or pyseccomp
    cannot be identified (then nothing is cached)."""
    version = libseccomp_version()
    spec = importlib.util.find_spec("pyseccomp")
    if version is None or spec is None or spec.origin is None:
        return None
    digest = blake2b(digest_size=32)
    for part in (f"format {FORMAT}", f"hvfs {__version__}", repr(config), f"{arch.name} {arch.audit:#x}"):
        digest.update(part.encode() + b"\0")
    digest.update(f"{SONAME} {version}".encode() + b"\0")
    try:
        for path in (spec.origin, *SOURCES):
            with open(path, "rb") as source:
                digest.update(source.read() + b"\0")
    except OSError:
        return None
    return digest.hexdigest()


def load(entry_key: str) -> Entry | None:
    """The entry stored under ``entry_key``, if there is a trustworthy one."""
    entry = _load(entry_key)
    _count("misses" if entry is None else "hits")
    return entry


def _load(entry_key: str) -> Entry | None:
    path = os.path.join(directory(), f"{entry_key}.json")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    if not _trusted():
        os.close(fd)
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022 or st.st_size > _MAX_ENTRY:
            log.debug("filter cache: ignoring %s (owner %d, mode %o)", path, st.st_uid, st.st_mode)
            return None
        raw = os.pread(fd, st.st_size + 1, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        document = json.loads(raw)
        program = bytes.fromhex(document["program"])
        if (
            document["format"] != FORMAT
            or document["key"] != entry_key
            or document["program_blake2b"] != blake2b(program, digest_size=32).hexdigest()
            or not program
            or len(program) % 8  # struct sock_filter is 8 bytes
        ):
            return None
        names = {int(nr): str(name) for nr, name in document["names"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        log.debug("filter cache: ignoring a damaged %s", path)
        return None
    return Entry(program, names)


def store(entry_key: str, entry: Entry) -> None:
    """Keep ``entry`` under ``entry_key``; a cache that cannot be written is no error."""
    document = {
        "format": FORMAT,
        "key": entry_key,
        "program": entry.program.hex(),
        "program_blake2b": blake2b(entry.program, digest_size=32).hexdigest(),
        "names": {str(nr): name for nr, name in sorted(entry.names.items())},
    }
    where = directory()
    path = os.path.join(where, f"{entry_key}.json")
    temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        private_cache_directory()
        os.makedirs(where, mode=0o700, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(document, f)
            os.replace(temporary, path)
            _count("stored")
        except BaseException:
            os.unlink(temporary)
            raise
    except UnsafeDirectory as e:  # as one that cannot be written: no error, only slower starts
        log.debug("filter cache: not used: %s", e)
    except OSError as e:
        log.debug("filter cache: cannot write %s: %s", path, e)
