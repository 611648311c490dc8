"""The code of dataclasses' generated methods kept on disk, so that a cold start of the
manager does not compile it again.

CPython 3.11's ``dataclasses`` writes the source of each generated method (``__init__``,
``__repr__``, ``__eq__``, ``__hash__``, a frozen class's ``__setattr__`` and
``__delattr__``) and compiles it with one ``exec`` per method: about 0.3 ms a class, and
the manager defines about a hundred (the API's requests and events, the configuration)
before it can serve its first VM; measured, the compiles alone were a third of its
imports. The source is the same from one start to the next, so its code can be kept, as
the interpreter keeps a module's in a ``.pyc``.

``install`` gives ``dataclasses`` an ``exec`` that looks the source up in this cache
(``dataclasses`` finds ``exec`` in its own globals before the builtins) and compiles
only what it does not find, exactly as ``exec`` would: same source, file name
``<string>``, and no compiler flag of the caller (``dont_inherit``). The classes are
then the very classes ``dataclasses`` makes, with the same methods (tests compare them
with ones made without the cache). Nothing else changes: the decorator, its checks and
its other work run as they always do.

The cache is read only from a file that this user alone can have written (a regular
file owned by the user, writable by no one else, in a directory that passes the same
walk as ``hvfs.private_dirs``, without following a symbolic link): unmarshalled code is
run, so it is trusted as a ``.pyc`` is. Any doubt, damage or other Python version is a
miss: the methods are compiled as if there were no cache. One file per installation of
hvfs and per Python build (its name carries both, its header the Python), so that two checkouts sharing the cache
directory do not undo each other's; ``save`` writes the entries this process used, to
a temporary name renamed into place.
"""

from __future__ import annotations

import builtins
import marshal
import os
import stat
import sys
import threading
import zlib
from types import CodeType
from typing import Any

_FORMAT = b"hvfs-dataclass-cache-1\n"
# Bytecode and marshal are this interpreter's, compiled at its -O level.
_HEADER = _FORMAT + f"{sys.version} -O{sys.flags.optimize}\n".encode()
_MAX_SIZE = 8 << 20

_lock = threading.Lock()
_cached: dict[str, CodeType] = {}  # read from the file
_used: dict[str, CodeType] = {}  # looked up or compiled by this process: what save writes
_missed = 0  # compiled since the last save
_hits = 0
_path: str | None = None  # computed once: a rootless manager later runs in a user namespace


def cache_directory() -> str:
    """As hvfs.state.cache_directory (which this module cannot import: it runs before
    hvfs's modules, and that one imports most of them)."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        if os.geteuid() == 0:
            return "/var/cache/hvfs"
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hvfs")


def cache_path(directory: str) -> str:
    """The cache file of this installation of hvfs and this Python in ``directory``."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(directory, f"dataclasses-{zlib.crc32(_HEADER + here.encode()):08x}.marshal")


def _writable_by_others(st: os.stat_result) -> bool:
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _private(directory: str) -> bool:
    """Whether only this user (and root) can change what ``directory`` holds: every
    directory from ``/`` down belongs to root or this user and is writable by no one else
    unless sticky; the last belongs to this user and is writable by no one else. A
    symbolic link on the way is a no (hvfs.private_dirs follows some: a miss here only
    costs a compile)."""
    uid = os.geteuid()
    path = os.path.abspath(directory)
    parts = [p for p in path.split("/") if p]
    prefix = "/"
    for depth in range(len(parts) + 1):
        if depth:
            prefix = os.path.join(prefix, parts[depth - 1])
        try:
            st = os.lstat(prefix)
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            return False
        last = depth == len(parts)
        if last:
            return st.st_uid == uid and not _writable_by_others(st)
        if st.st_uid not in (0, uid) or (_writable_by_others(st) and not st.st_mode & stat.S_ISVTX):
            return False
    raise AssertionError("unreachable: the last directory returned")


def _read(path: str) -> dict[str, CodeType]:
    if not _private(os.path.dirname(path)):
        return {}
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or _writable_by_others(st):
            return {}
        if st.st_size > _MAX_SIZE:
            return {}
        raw = os.pread(fd, st.st_size + 1, 0)
    except OSError:
        return {}
    finally:
        os.close(fd)
    if not raw.startswith(_HEADER):
        return {}
    try:
        document = marshal.loads(raw[len(_HEADER) :])
    except (ValueError, EOFError, TypeError):
        return {}
    if not isinstance(document, dict):
        return {}
    return {k: v for k, v in document.items() if isinstance(k, str) and isinstance(v, CodeType)}


def _exec(source: Any, globals: Any = None, locals: Any = None, /) -> None:
    """``exec`` for ``dataclasses``: a source seen before runs its kept code."""
    global _missed, _hits
    if not isinstance(source, str):
        builtins.exec(source, globals, locals)
        return
    with _lock:
        code = _cached.get(source)
        if code is None:
            code = compile(source, "<string>", "exec", dont_inherit=True)
            _cached[source] = code
            _missed += 1
        else:
            _hits += 1
        _used[source] = code
    builtins.exec(code, globals, locals)


def install(path: str | None = None) -> None:
    """Make ``dataclasses`` use the cache at ``path`` (default: this installation's file
    in hvfs's cache directory). Before the modules whose classes it should cover."""
    global _path
    import dataclasses

    _path = path if path is not None else cache_path(cache_directory())
    _cached.update(_read(_path))
    dataclasses.exec = _exec  # type: ignore[attr-defined]


def uninstall() -> None:
    """``dataclasses`` compiles every method again (the tests' way back)."""
    global _path, _missed, _hits
    dataclasses = sys.modules.get("dataclasses")
    if dataclasses is not None and getattr(dataclasses, "exec", None) is _exec:
        del dataclasses.exec  # type: ignore[attr-defined]
    with _lock:
        _cached.clear()
        _used.clear()
        _missed = _hits = 0
    _path = None


def kept() -> int:
    """How many methods' code the cache holds (read, or compiled by this process)."""
    with _lock:
        return len(_cached)


def statistics() -> tuple[int, int]:
    """(methods whose code was found in the cache, methods compiled and not yet saved)."""
    with _lock:
        return _hits, _missed


def save() -> bool:
    """Write the entries used by this process, if one was compiled since the last save
    (then True); a cache that cannot be written is no error, only slower starts."""
    global _missed
    with _lock:
        if _path is None or not _missed:
            return False
        _missed = 0
        entries = dict(_used)
    # hvfs.private_dirs, imported by now: it also knows a rootless manager's view from its
    # user namespace, where root's directories on the way belong to no mapped user.
    from hvfs.private_dirs import UnsafeDirectory, private_directory

    directory = os.path.dirname(_path)
    temporary = f"{_path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        private_directory(directory, "the cache directory", "set XDG_CACHE_HOME to a directory of your own")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_HEADER + marshal.dumps(entries))
            os.replace(temporary, _path)
        except BaseException:
            os.unlink(temporary)
            raise
    except (OSError, UnsafeDirectory):
        return False
    return True
