"""A strict VM's stat of a path and read-only open, served in the C receive loop
(hvfs/_native/served_stat.h).

Under ``--strict`` every stat and open is served, and most are plain: a path resolved in
the VM's root, as the caller, and the result written back (a stat) or the file opened
there installed (a read-only open of a regular file or a directory). The C loop serves
those itself, with the Python path's answer (decoders/query.py and opening.py, then
manager/handlers/query.py ``handle_stat``/``handle_statx`` and opening.py
``_open_readable``), for VMs where nothing in Python must see the request:

* no hook and no audit subscriber on the VM's bus (``EventBus.quiet``, kept by the bus as
  they come and go: a scanner, a fault rule, an audit, a backup all turn it off);
* a caller whose credentials the worker's credential cache (``credcache.KnownCredentials``)
  published, under a pidfd of the thread and the watch's generation, which every call
  that may change credentials bumps before it continues, so C never acts on credentials
  a thread may have changed. Each is published with what ``acting_as`` switches for it
  (``switch_of``: ``_switch``'s very test, against the manager's identity), which C
  switches the same way on its own thread around the caller's lookup
  (hvfs/_native/served_switch.h); a caller with more than ``PUBLISHED_GROUPS`` groups
  is Python's;
* a path that is absolute or relative to the cwd or a dirfd, not naming procfs or devpts
  (nor, for an open, anything under /dev: the caller's own /dev/stdin and /dev/fd/N); the
  rest (AT_EMPTY_PATH, flags and masks Python checks, malformed paths, a dirfd that names
  no directory of the VM, O_PATH and writing opens, openat2) is declined before anything
  is answered, and Python serves it from the start;
* opens only where no service judges what the VM reads (``VmContext.reads_judged``).

Its readlink and readlinkat, access, faccessat and faccessat2 of such a path are served there
too (hvfs/_native/served_link.h), as ``handle_readlink`` and ``handle_access`` answer them:
access in the writable view, and without AT_EACCESS only for a caller whose real ids switch
what its effective ones do (``Credentials.for_access``; credcache publishes which). The
ptrace driver's are Python's.

``HVFS_SERVED_STAT=0``, read when a driver is made, turns it off (the conformance tests run
both ways).

A quiet VM's write-open (open, openat, creat; a file created too), by a plain path
(absolute, or relative to the cwd or a dirfd) in a nodev writable view, is served in C too,
as ``direct.open_writable`` serves it, its change-set note queued by C without the GIL
(``ChangeSet.c_note``; hvfs/_native/served_write.h says what is declined: an audited VM's, a symlink on
the way among others), in the default profile too, where nothing else is served in C
(compiled.py gives it SERVED rules for the ``WRITE_CALLS`` alone). So is its unlink of a
plain path (unlink, unlinkat without AT_REMOVEDIR), as ``names.handle_unlink`` serves it
(hvfs/_native/served_mutate.h), and its metadata changes through an fd of a file on its
writable view's own mounts (fchmod, fchown and futimens, utimensat of an fd with no path, as
``attrs.handle_chmod``, ``handle_chown`` and ``handle_utimens`` through ``world.own_object``
serve them: hvfs/_native/served_fdmeta.h).
A quiet VM's mkdir, mkdirat, rmdir and unlinkat with AT_REMOVEDIR of such a path are served
there too, as ``names.handle_mkdir`` and ``handle_rmdir`` serve them (hvfs/_native/served_dirs.h),
and its chmod, fchmodat, chown, lchown, fchownat and utimensat of such a path (flags 0 or
AT_SYMLINK_NOFOLLOW), as ``attrs.handle_chmod``, ``handle_chown`` and ``handle_utimens`` serve a
path (hvfs/_native/served_pathmeta.h); an audited VM's too (below). A write-open of a
character device under /dev (/dev/null: every shell redirect) is continued there as
``opening._open_writable`` continues it, where that handler's own probe (O_PATH in the
writable view, ``RESOLVE_IN_ROOT``, as the caller) finds a character device at the plain
absolute path (hvfs/_native/served_dev.h, which also says why a second thread's flip of the
path after the check reaches nothing: the boot view is read-only). ``HVFS_SERVED_WRITE=0``
turns those off alone.

A relative path's base directory, found by its text and checked to be the caller's, is kept
open from one stat or read-only open to the next while the C loop answers, and used again
where the caller's directory has the same text and identity (hvfs/_native/served_base.h); an
audited VM's too, where it was found with no symlink on the way and the text, read anew from
the caller for each request, is the kept one (served_audit.h ``plain_base``); so is a
relative mutation's base in the writable view, where the text, read anew, and the identity
are the same (hvfs/_native/write_open.h ``write_base``: an untar's every file, an rm -rf's
every unlink); ``HVFS_SERVED_BASE=0`` opens each anew.

An audited VM (an audit or another subscriber on its bus, and no hook) has those served
in C too that the Python path names by their text (``resolve.open_named``: a plain path
found with no symlink on the way), its stats and opens answered "ok", its readlinks and
accesses whatever they answer; C records each one's event into the bus's ring with the GIL
taken for it, the record the dispatch makes for the same request
(hvfs/_native/served_audit.h, ``Audit``). So are its lookups that fail (continued in the VM,
or an errno), which the dispatch names by their parent directory opened again and named by
the kernel (``served._resolved``: hvfs/_native/served_resolved.h), and its read-only opens
its text does not find (a symlink on the way), named by the kernel's name of the fd handed
out. Its write-opens, unlinks, mkdirs, rmdirs and metadata changes (by an fd or by a path)
are served as a quiet VM's are (their names are their text, or the fd's VM path, as Python
names them), each event recorded the same way, an errno C answers (EEXIST, a failed change)
as the dispatch records the handler's; its write-opens of a device under /dev are
continued there, each recorded as the dispatch records Python's continue (served_dev.h). The
rest is Python's, which records it: a stat,
readlink or access through a symlink on the way, a FIFO's open, a VM whose roots do not
read as "/".
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Callable

from hvfs import _native as native
from hvfs import api
from hvfs._sys import caps, files
from hvfs.intercept.credcache import PUBLISHED_GROUPS, SWITCH_CAPS, SWITCH_GROUPS, SWITCH_IDS, Switch

ENVIRONMENT = "HVFS_SERVED_STAT"
# served_stat.h CALL_*
CALLS = {
    "stat": 0,
    "lstat": 1,
    "newfstatat": 2,
    "statx": 3,
    "open": 4,
    "openat": 5,
    "creat": 6,
    "unlink": 7,
    "unlinkat": 8,
    "fchmod": 9,
    "fchown": 10,
    "utimensat": 11,
    "readlink": 12,
    "readlinkat": 13,
    "access": 14,
    "faccessat": 15,
    "faccessat2": 16,
    "mkdir": 17,
    "mkdirat": 18,
    "rmdir": 19,
    "chmod": 20,
    "fchmodat": 21,
    "chown": 22,
    "lchown": 23,
    "fchownat": 24,
}
# What a default-profile VM has served in C: its write-opens, unlinks, mkdirs, rmdirs and metadata changes.
WRITE_CALLS = (
    "open",
    "openat",
    "creat",
    "unlink",
    "unlinkat",
    "fchmod",
    "fchown",
    "utimensat",
    "mkdir",
    "mkdirat",
    "rmdir",
    "chmod",
    "fchmodat",
    "chown",
    "lchown",
    "fchownat",
)
WRITES_ENVIRONMENT = "HVFS_SERVED_WRITE"
BASES_ENVIRONMENT = "HVFS_SERVED_BASE"  # 0: every relative path's base opened anew (served_base.h)
# 0: a caller whose credentials no worker kept is Python's, which reads them (first_credentials.h)
FIRST_ENVIRONMENT = "HVFS_FIRST_CREDENTIALS"
OUTCOMES = ("served", "continued", "failed")  # served_stat.h SERVED_*, as the manager names them
# of hvfs.api, served_stat.h COUNTS_*
KINDS = ("Stat", "Statx", "Open", "Unlink", "Chmod", "Chown", "Utimens", "Readlink", "Access", "Mkdir", "Rmdir")
COUNTS = struct.Struct(f"<{len(KINDS) * len(OUTCOMES)}Q")  # KINDS x OUTCOMES
# What C records an audited VM's served calls with (served_audit.h): the bus, the VM's name,
# record.c's record_raw, and a (request, response) of each kind served (AUDIT_*: stat, statx,
# open, unlink, chmod, chown, utimens), whose types say how the event reads, then a failure's
# (its Errno's type, made with the errno C answered), readlink's and access's, a continued
# request's response (its request unread), then mkdir's and rmdir's.
Audit = tuple[object, str, object, tuple[tuple[object, object], ...]]
# What C serves a VM's write-opens with (served_write.h): its writable view, a nodev one, and
# its change set's ``c_note`` (its queue and its ``note``), with which C notes each change it
# serves (write_open.h note_change), or a bare ``note``, which C calls with the GIL.
Note = tuple[object, Callable[[str, bool, bool], None]] | Callable[[str, bool, bool], None]
Writes = tuple[int, Note]
# What C takes of them (hotpath.c's stat_context_of): the view, the note, and the view's own
# mount ids, packed (served_fdmeta.h: the only mounts whose files it changes through an fd).
WritesArgument = tuple[int, Note, bytes]
StatArgument = tuple[
    int, bytearray, bytearray, bytearray, bytearray, bool, Audit | None, WritesArgument | None, bool, bool
]


def wanted() -> bool:
    """Whether drivers made now serve stats in C: the hot path is built, on x86_64 (the
    struct stat C packs), and ``HVFS_SERVED_STAT`` is not 0."""
    return native.hotpath is not None and os.uname().machine == "x86_64" and os.environ.get(ENVIRONMENT, "1") != "0"


def writes_wanted() -> bool:
    """Whether drivers that serve stats in C serve write-opens there too (``wanted``, and
    ``HVFS_SERVED_WRITE`` is not 0)."""
    return wanted() and os.environ.get(WRITES_ENVIRONMENT, "1") != "0"


def bases_wanted() -> bool:
    """Whether the C loop keeps a relative path's base directory open from one request to the
    next of a serve call (hvfs/_native/served_base.h; a mutation's in the writable view:
    write_open.h write_base): ``HVFS_SERVED_BASE`` is not 0."""
    return os.environ.get(BASES_ENVIRONMENT, "1") != "0"


def first_credentials_wanted() -> bool:
    """Whether the C loop reads and keeps the credentials of a caller no worker kept any of
    (hvfs/_native/first_credentials.h): ``HVFS_FIRST_CREDENTIALS`` is not 0."""
    return os.environ.get(FIRST_ENVIRONMENT, "1") != "0"


@functools.cache
def _manager_identity() -> tuple[int, int, tuple[int, ...], int, int]:
    """The identity every worker has outside ``acting_as``: the process's, which no worker
    changes for good (hvfs.manager.creds)."""
    effective, permitted, _ = caps.get_thread_caps()
    return os.geteuid(), os.getegid(), tuple(os.getgroups()), effective, permitted


def switch_of(creds: api.Credentials) -> Switch | None:
    """What ``acting_as(creds)`` switches for a lookup (hvfs.manager.creds ``_switch``,
    against the manager's identity): SWITCH_* and the caller's fsuid, fsgid, groups and
    effective capabilities (those it asks that the manager holds); None where C cannot
    switch them (more groups than a published record holds)."""
    uid, gid, groups, effective, permitted = _manager_identity()
    wanted = creds.capabilities & permitted
    what = SWITCH_GROUPS if files.groups_to_switch(creds.gid, creds.groups, groups) else 0
    what |= SWITCH_IDS if creds.uid != uid or creds.gid != gid else 0
    what |= SWITCH_CAPS if what & SWITCH_IDS or wanted != effective else 0  # _switch's: ids change the set
    if what & SWITCH_GROUPS and len(creds.groups) > PUBLISHED_GROUPS:
        return None
    return what, creds.uid, creds.gid, creds.groups, wanted


class ServedStat:
    """One driver's served stats: the VM's root, its bus's quiet flag, and the counts by
    request type and outcome, which the VM's statistics add to the manager's own."""

    def __init__(
        self,
        vm_root: int,
        quiet: bytearray,
        opens: bool,
        audit: Audit | None = None,
        writes: Writes | None = None,
        own_mounts: frozenset[int] = frozenset(),
    ) -> None:
        self.vm_root = vm_root
        self.quiet = quiet
        self.opens = opens  # read-only opens too (``opens``)
        self.audit = audit  # an audited VM's served in C too (``audit_of``), else None
        self.writes = writes  # write-opens of existing files too (served_write.h), else None
        self.counts = bytearray(COUNTS.size)
        # The writable view's mounts (``VmContext.own_mounts``), whose files alone C changes
        # through a caller's fd (fchmod ...): none, and those are Python's.
        self._own = struct.pack(f"<{len(own_mounts)}Q", *sorted(own_mounts))
        self.keep_bases = bases_wanted()
        self.read_first = first_credentials_wanted()

    @property
    def own_mounts(self) -> bytes:
        """The writable view's mount ids, packed as C takes them (served_fdmeta.h,
        tracer_fdmeta.h)."""
        return self._own

    def argument(self, watch: bytearray, known: bytearray) -> StatArgument:
        """What hotpath.c serve takes as its ``stat``, for a worker whose published
        credentials are ``known`` (``KnownCredentials.published``)."""
        writes = None if self.writes is None else (*self.writes, self._own)
        served = (self.vm_root, self.quiet, watch, known, self.counts, self.opens)
        return (*served, self.audit, writes, self.keep_bases, self.read_first)

    def counted(self) -> dict[tuple[type, str], int]:
        """Requests served here, as ``VmContext.count`` keys them."""
        values = COUNTS.unpack_from(self.counts)
        found: dict[tuple[type, str], int] = {}
        for index, kind in enumerate(KINDS):  # by name: a VM that asked nothing loads no message
            for offset, outcome in enumerate(OUTCOMES):
                if values[3 * index + offset]:
                    found[getattr(api, kind), outcome] = values[3 * index + offset]
        return found


def audit_of(bus: object, vm: str) -> Audit | None:
    """What C records the VM ``vm``'s served calls with while ``bus`` is audited and not
    hooked (its ``quiet[1]``); None where record.c is not built (the Python recorder's
    records are Python's to make: the VM's calls go to Python while it is audited)."""
    recorder = native.recorder
    if recorder is None:
        return None
    caller = api.Caller(vm=vm, pid=0)
    root = api.VmPath("/", "/")
    prototypes = (
        (api.Stat(caller=caller, path=root, follow=True), api.StatResult(os.stat_result((0,) * 10))),
        (api.Statx(caller=caller, path=root, flags=0, mask=0), api.StatxResult(b"")),
        (api.Open(caller=caller, path=root, flags=0), api.Fd(-1, False)),
        (api.Unlink(caller=caller, path=root), api.Value(0)),
        (api.Chmod(caller=caller, target=root, mode=0), api.Value(0)),
        (api.Chown(caller=caller, target=root, uid=0, gid=0), api.Value(0)),
        (api.Utimens(caller=caller, target=root, times=None), api.Value(0)),
        (api.Unlink(caller=caller, path=root), api.Errno(0)),
        (api.Readlink(caller=caller, path=root), api.Value(0)),  # the event reads a Data's length alone
        (api.Access(caller=caller, path=root, mode=0, flags=0), api.Value(0)),
        (api.Stat(caller=caller, path=root, follow=True), api.Continue()),  # any kind's continue
        (api.Mkdir(caller=caller, path=root, mode=0), api.Value(0)),
        (api.Rmdir(caller=caller, path=root), api.Value(0)),
    )
    recorder.configure_raw(prototypes)  # how a raw entry's kind reads (record.c detached.h): the first stays
    return (bus, vm, recorder.record_raw, prototypes)
