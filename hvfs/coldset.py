"""The modules a cold manager imports, compiled into one file that scripts/setup writes,
so that a cold ``hvfs run`` does not look each of them up and read it on its own.

A cold manager imports ~230 modules before its first VM has exited (issue 14). Each
import through the default finders costs a walk of ``sys.path`` or the package's
``__path__`` (a ``stat`` per entry, the directory's listing cached), a ``stat`` of the
source, an open, read and check of its ``.pyc``, and the importlib code around them:
measured, ~6 ms of the ~45 ms of CPU of the manager's imports, beside the unmarshalling
(~9 ms) and the modules' own code (the rest), which this does not change.

``build`` compiles the sources of the modules that ``ENTRIES`` import (found by importing
them in a child interpreter, as the manager would) into ``PATH``: for each module of
hvfs's package or the stdlib, its place and path there, its source's identity and code.
``install`` puts a finder in ``sys.meta_path`` ahead of the path finder that answers for
those modules alone; each module's code is taken from the file only if its source is
still the very file it was compiled from (same inode, size, modification and change
time, ``st_ctime`` being one that no one can set back), otherwise the module is imported
as if there were no file. So an edited source, a checkout switched, a Python upgraded
(the file names its interpreter and bytecode magic) are never served stale: they cost
the default import, nothing else. The identity is taken before the source is read, so an
edit during the build leaves a newer change time (and since Linux 6.13 a change right
after a ``stat`` gets a fine-grained time, not the same coarse tick).

The file is trusted as a ``.pyc`` is: it lives in the package, and is read only if it is
a regular file owned by the user running hvfs or by the package's owner, writable by no
one else. ``HVFS_COLDSET=0`` turns it off (to compare, or to rule it out).
"""

from __future__ import annotations

import marshal
import mmap
import os
import sys

# importlib.util's own names, without its imports (contextlib, functools, collections: the file's to serve)
from importlib._bootstrap_external import MAGIC_NUMBER, cache_from_source, spec_from_file_location
from importlib.machinery import ModuleSpec, PathFinder, SourceFileLoader

TYPE_CHECKING = False  # not typing's: typing and types are the file's to serve, after this module
if TYPE_CHECKING:
    from types import CodeType

ENVIRONMENT = "HVFS_COLDSET"
PATH = os.path.join(os.path.dirname(__file__), "_bin", "coldset.marshal")
# What a cold manager imports before its first VM has exited (hvfs/__main__.py's, then
# the run's: its parser, the filter's cache, the sources a plain run mounts);
# tests/test_coldset.py checks against a real cold run that this misses none.
ENTRIES = (
    "hvfs.dataclass_cache",
    "hvfs.deferred",
    "hvfs.hypervisor.commands",
    "hvfs.hypervisor.daemon",
    "hvfs.cli",
    "hvfs.run_flags",  # the run parser's
    "hvfs.changes_cli",
    "hvfs.intercept.filter_cache",
    "hvfs.manager.sources.devices",
    "hvfs.manager.sources.image",
    "hvfs.manager.sources.memory",
    "hvfs.cluster.identity",
    "hvfs.images.engine",
    "hvfs.logs",
    "hvfs.manager.handlers",  # a first request's (a real program's first file request), with the messages
    "hvfs.api.events",
    "hvfs.intercept.ptrace.driver",  # a run under the ptrace driver (--driver ptrace, or where it is the one)
    "hvfs.intercept.exec_tracer",
    "hvfs.log_handlers",  # a first record's (hvfs.deferred: logging is imported then)
    "hvfs.hypervisor.tell_handlers",
)
_HEADER = b"hvfs-coldset-3 " + MAGIC_NUMBER + f" {sys.version} -O{sys.flags.optimize}\n".encode()
_MAX_SIZE = 32 << 20
# What follows a source's name in its cache_from_source() (the tag, the -O level and
# ".pyc", the same for every source): importlib asks it of each spec it initialises
# (``__cached__``), ~4 µs a module in its Python, where a join of two strings does.
_PYC_SUFFIX = os.path.basename(cache_from_source("/hvfs/m.py"))[1:]

# name -> (source path, (st_ino, st_size, st_mtime_ns, st_ctime_ns), is a package, code):
# the code a slice of the file as read (one read, no copy per module until it is loaded)
Entry = tuple[str, tuple[int, int, int, int], bool, "bytes | memoryview"]
_entries: dict[str, Entry] = {}
_served: list[str] = []  # the modules taken from the file, in order (tests, statistics)


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _Loader(SourceFileLoader):
    """A source file loader whose code comes from the file (the finder checked its source)."""

    def get_code(self, fullname: str) -> CodeType | None:
        entry = _entries.pop(fullname, None)
        if entry is not None and entry[0] == self.path:
            try:
                code: CodeType = marshal.loads(entry[3])
            except (ValueError, EOFError, TypeError):  # damaged: as if it were not there
                return super().get_code(fullname)
            _served.append(fullname)
            return code
        return super().get_code(fullname)


class _Finder:
    """Answers for the modules in the file whose source is unchanged, as the path finder
    would place them; for any other, the finders after it answer."""

    @staticmethod
    def find_spec(fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        entry = _entries.get(fullname)
        if entry is None:
            return None
        origin = entry[0]
        try:
            unchanged = _identity(os.stat(origin)) == entry[1]
        except OSError:
            unchanged = False
        if not unchanged:
            _entries.pop(fullname, None)  # not del: importlib.util.find_spec takes no import lock
            return None
        head, tail = os.path.split(origin)
        locations = [head] if entry[2] else None
        spec = spec_from_file_location(
            fullname, origin, loader=_Loader(fullname, origin), submodule_search_locations=locations
        )
        if spec is not None and sys.pycache_prefix is None and tail.endswith(".py"):  # else importlib's own
            spec.cached = os.path.join(head, "__pycache__", tail[:-3] + _PYC_SUFFIX)
        return spec


def _roots() -> dict[str, str]:
    """Where the file's modules are, by the name it gives each place: hvfs's own package
    (this copy of it: a copied tree serves its own sources), and this Python's stdlib."""
    return {"hvfs": os.path.dirname(os.path.abspath(__file__)), "stdlib": getattr(sys, "_stdlib_dir", None) or ""}


def _shadowed(names: set[str], stdlib: str) -> set[str]:
    """Which of the stdlib's top-level ``names`` a ``sys.path`` entry ahead of the stdlib
    holds (a PYTHONPATH of one's own): the path finder would import that one."""
    found: set[str] = set()
    for entry in sys.path[: sys.path.index(stdlib)] if stdlib in sys.path else sys.path:
        try:
            listed = os.listdir(entry or ".")
        except OSError:  # missing, not a directory (the stdlib's zip, usually absent)
            continue
        found.update(name.split(".", 1)[0] for name in listed)
    return names & found


def _read(path: str) -> dict[str, Entry]:
    """The file's entries, or none if it is missing, foreign, untrusted or damaged."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        owners = (os.geteuid(), os.stat(os.path.dirname(os.path.abspath(__file__))).st_uid)
        if (st.st_mode & 0o170000) != 0o100000 or st.st_mode & 0o022 or st.st_uid not in owners:
            return {}
        if not len(_HEADER) + 8 < st.st_size <= _MAX_SIZE:
            return {}
        # Mapped, not read: a read of the whole file into fresh memory cost 1.4 ms of page
        # faults; mapped, only the pages of the modules imported are touched. build
        # replaces the file by a rename, so a mapped one never changes under us.
        view = memoryview(mmap.mmap(fd, st.st_size, prot=mmap.PROT_READ))
    except (OSError, ValueError):
        return {}
    finally:
        os.close(fd)
    if view[: len(_HEADER)] != _HEADER:
        return {}
    # After the header: the index's length, the index (name -> source, identity, is a
    # package, offset and length of its code after the index), then the codes.
    try:
        size = int.from_bytes(view[len(_HEADER) : len(_HEADER) + 8], "little")
        start = len(_HEADER) + 8
        index = marshal.loads(view[start : start + size])
        codes = view[start + size :]
        if any(at + length > len(codes) for _, _, _, _, at, length in index.values()):
            return {}  # cut short
        roots = _roots()
        shadowed = _shadowed(
            {name.split(".", 1)[0] for name, got in index.items() if got[0] == "stdlib"}, roots["stdlib"]
        )
        return {name: (os.path.join(roots[root], relative), identity, package, codes[at : at + length])
                for name, (root, relative, identity, package, at, length) in index.items()
                if roots[root] and name.split(".", 1)[0] not in shadowed}  # fmt: skip
    except (ValueError, EOFError, TypeError, AttributeError, KeyError):  # damaged: the default import
        return {}


def install(path: str | None = None) -> None:
    """Serve the modules in ``path`` (default: ``PATH``, unless ``HVFS_COLDSET=0``) from
    it; once per process, and nothing if it is missing."""
    if path is None:
        if os.environ.get(ENVIRONMENT, "1") == "0":
            return
        path = PATH
    if _Finder in sys.meta_path:
        return
    entries = _read(path)
    if not entries:
        return
    _entries.update(entries)
    # Just before the path finder, not first: a finder someone put ahead of it (a test's
    # or a benchmark's hook) keeps its place.
    at = sys.meta_path.index(PathFinder) if PathFinder in sys.meta_path else len(sys.meta_path)
    sys.meta_path.insert(at, _Finder)


def served() -> list[str]:
    """The modules this process took from the file."""
    return list(_served)


def compile_modules(names: list[str]) -> dict[str, Entry]:
    """An entry for each module of ``names`` that was imported from a source file."""
    entries: dict[str, Entry] = {}
    for name in names:
        module = sys.modules.get(name)
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None)
        if spec is None or not isinstance(origin, str) or not isinstance(spec.loader, SourceFileLoader):
            continue  # built in, frozen, an extension, a namespace package
        with open(origin, "rb") as source:
            st = os.fstat(source.fileno())
            code = spec.loader.source_to_code(source.read(), origin)
        entries[name] = (origin, _identity(st), spec.submodule_search_locations is not None, marshal.dumps(code))
    return entries


def build(path: str = PATH, entries: tuple[str, ...] = ENTRIES) -> int:
    """Write ``path`` for the modules that ``entries`` import in a fresh interpreter of
    this Python; the number of modules. Run by scripts/setup."""
    import subprocess

    script = (
        "import importlib, os, sys\n"
        "from hvfs import coldset, deferred\n"
        "deferred.defer(*deferred.MANAGER)\n"  # as hvfs/__main__.py: not what a cold manager defers
        f"for name in {list(entries)!r}: importlib.import_module(name)\n"
        "names = [n for n, m in list(sys.modules.items()) if not isinstance(m, deferred.Deferred)]\n"
        "entries = coldset.compile_modules(names)\n"
        "sys.stdout.buffer.write(coldset.encode(entries))\n"
        "sys.stdout.flush()\n"
        "os._exit(0)\n"
    )
    env = {**os.environ, ENVIRONMENT: "0"}  # the sources themselves, not a previous file
    done = subprocess.run([sys.executable, "-P", "-c", script], env=env, capture_output=True, check=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
    with open(os.open(temporary, flags, 0o644), "wb") as f:
        f.write(done.stdout)
    os.chmod(temporary, 0o644)  # whatever the umask: read by every user who runs hvfs
    os.rename(temporary, path)
    return len(_read(path))


def encode(entries: dict[str, Entry]) -> bytes:
    """The file's contents for ``entries`` (as ``_read`` reads them)."""
    index, codes, at = {}, [], 0
    roots = _roots()
    for name, (origin, identity, package, code) in entries.items():
        root = next((r for r, place in roots.items() if place and origin.startswith(place + os.sep)), None)
        if root is None:
            continue  # another place's (site-packages): the path finder's
        index[name] = (root, os.path.relpath(origin, roots[root]), identity, package, at, len(code))
        codes.append(bytes(code))
        at += len(code)
    packed = marshal.dumps(index)
    return b"".join((_HEADER, len(packed).to_bytes(8, "little"), packed, *codes))
