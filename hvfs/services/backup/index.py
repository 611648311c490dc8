"""The backup index: which content each VM path had, and since when, in SQLite.

One row per version: (vm, path, time, size, hash, trigger), plus the mode and mtime to
restore. A row whose hash is NULL records that the path was removed at that time, so a
tree restored as of a time leaves out what had been deleted by then. Times are kept as
whole microseconds, the precision listings print, so that a time copied from ``hvfs
backup list`` to ``--at`` selects exactly that version.

The index also accounts for the blob store: one row per blob with the bytes it takes on
disk, and their total kept by triggers, so that a store's bound is checked in constant
time and, by a transaction, exactly across processes (see store.py). ``PRAGMA
user_version`` 1 says the blobs are accounted; a store made before that is accounted
once, when it is opened (open_store).

A local store's database is in WAL mode with a busy timeout, so a manager recording
versions and ``hvfs backup`` commands in other processes can use it at once. One
BackupIndex may be shared by threads: a lock serialises its connection.

A store that managers on several hosts share (``shared``: on JuiceFS, NFS…) cannot use
WAL, whose readers and writers meet in shared memory, nor SQLite's own fcntl locks alone,
which lose rows across JuiceFS clients since a client reads pages it cached before
another's commit (docs/juicefs.md). There the database uses the rollback journal, and
each use of it runs as: flock(``index.lock``, next to the database) → connect → work →
close → unlock, so that every connection reads the file as the last writer left it. The
lock file marks the store shared: once it exists every opener takes the shared path, so a
command that was not told (``hvfs backup list``) never turns the database back to WAL.

``transaction()`` joins several uses into one transaction, and in a shared store into
one such cycle: the backup service saves a version in one (the blob's admission, the
check of the path's state, the row), which on JuiceFS halves what a version costs
(docs/cluster.md, Backup). The lock is then held while the blob is filed (its fsync and
rename), so that its admission and its row commit together.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    id INTEGER PRIMARY KEY,
    vm TEXT NOT NULL,
    path TEXT NOT NULL,
    time_us INTEGER NOT NULL,
    size INTEGER NOT NULL,
    hash TEXT,
    trigger TEXT NOT NULL,
    mode INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS versions_by_path ON versions (vm, path, time_us);
CREATE INDEX IF NOT EXISTS versions_by_hash ON versions (hash);
CREATE TABLE IF NOT EXISTS blobs (hash TEXT PRIMARY KEY, bytes INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL);
INSERT OR IGNORE INTO usage VALUES (0, 0);
CREATE TRIGGER IF NOT EXISTS blob_added AFTER INSERT ON blobs
    BEGIN UPDATE usage SET bytes = bytes + new.bytes; END;
CREATE TRIGGER IF NOT EXISTS blob_deleted AFTER DELETE ON blobs
    BEGIN UPDATE usage SET bytes = bytes - old.bytes; END;
"""
LOCK_NAME = "index.lock"  # next to the database: its presence marks the store shared
_ACCOUNTED = 1  # PRAGMA user_version once the blobs table covers the store
_COLUMNS = "id, vm, path, time_us, size, hash, trigger, mode, mtime_ns"
# The newest row of v's path at or before a time: the path's state then.
_STATE_AT = "v.id = (SELECT w.id FROM versions w WHERE w.vm = v.vm AND w.path = v.path AND w.time_us <= :at "
_STATE_AT += "ORDER BY w.time_us DESC, w.id DESC LIMIT 1)"


@dataclass(frozen=True, slots=True)
class Version:
    id: int
    vm: str
    path: str
    time: float  # unix time, to the microsecond
    size: int
    hash: str | None  # None: the path was removed at ``time``
    trigger: str  # what saved it: "close", "remove", "rename"; "removed" for a removal
    mode: int
    mtime_ns: int

    @property
    def removed(self) -> bool:
        return self.hash is None


def _us(unix: float) -> int:
    return round(unix * 1_000_000)


def _version(row: tuple[int, str, str, int, int, str | None, str, int, int]) -> Version:
    return Version(row[0], row[1], row[2], row[3] / 1_000_000, *row[4:])


def under(prefix: str) -> str:
    """The string every path strictly under directory ``prefix`` starts with."""
    return prefix.rstrip("/") + "/"


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.create_function("fnmatch", 2, fnmatch.fnmatchcase, deterministic=True)
    return db


class BackupIndex:
    """The index at ``path`` (created with its schema if new); ``shared``: used by
    managers on several hosts (see the module's docstring), also when ``index.lock``
    already marks it so. Raises sqlite3.Error, OSError."""

    def __init__(self, path: str, *, shared: bool = False) -> None:
        self.path = path
        self.lock_path = os.path.join(os.path.dirname(path), LOCK_NAME)
        self.shared = shared or os.path.exists(self.lock_path)
        self._lock = threading.RLock()  # a transaction's uses take it again
        self._db: sqlite3.Connection | None = None
        self._joined: sqlite3.Connection | None = None  # of transaction(), to its thread (it holds _lock)
        if self.shared:
            os.close(os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            with self._connection(write=True) as db:
                db.execute("PRAGMA journal_mode = DELETE")  # a local store's WAL, the first time
                db.executescript(_SCHEMA)
            return
        self._db = _connect(path)
        with self._lock:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()

    @contextlib.contextmanager
    def _connection(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """The database, to this thread alone; in a shared store, opened for this use under
        the store's lock (exclusive to ``write``) and closed before it is released."""
        with self._lock:
            if self._joined is not None:
                yield self._joined
                return
            if self._db is not None:
                yield self._db
                return
            # A descriptor of its own per use: flock excludes this process's other users too.
            lock = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
                db = _connect(self.path)
                try:
                    yield db
                finally:
                    db.close()
            finally:
                os.close(lock)  # releases the flock, after the close

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Make this thread's uses of the index in the block one transaction (one
        lock+open+close in a shared store), committed at its end, rolled back if it
        raises. A transaction within one joins it."""
        with self._lock:
            if self._joined is not None:
                yield
                return
            with self._connection(write=True) as db:
                db.execute("BEGIN IMMEDIATE")
                self._joined = db
                try:
                    yield
                except BaseException:
                    if db.in_transaction:  # SQLite may have rolled it back itself (a full disk)
                        db.execute("ROLLBACK")
                    raise
                finally:
                    self._joined = None
                db.execute("COMMIT")

    def _select(self, where: str, parameters: dict[str, object], order: str = "vm, path, time_us, id") -> list[Version]:
        with self._connection() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM versions v WHERE {where} ORDER BY {order}", parameters)
            return [_version(row) for row in rows.fetchall()]

    def add(
        self, vm: str, path: str, *, time: float, size: int, hash: str | None, trigger: str, mode: int, mtime_ns: int
    ) -> Version:
        with self._connection(write=True) as db:
            cursor = db.execute(
                f"INSERT INTO versions ({_COLUMNS.removeprefix('id, ')}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (vm, path, _us(time), size, hash, trigger, mode, mtime_ns),
            )
        assert cursor.lastrowid is not None
        return _version((cursor.lastrowid, vm, path, _us(time), size, hash, trigger, mode, mtime_ns))

    def versions(self, *, vm: str | None = None, glob: str | None = None) -> list[Version]:
        """Every row, by VM, path and time; only ``vm``'s, only paths matching ``glob`` (fnmatch)."""
        return self._select(
            "(:vm IS NULL OR vm = :vm) AND (:glob IS NULL OR fnmatch(path, :glob))", {"vm": vm, "glob": glob}
        )

    def latest(self, vm: str, path: str) -> Version | None:
        """The newest row of ``path`` in ``vm``, a removal or not."""
        rows = self._select("vm = :vm AND path = :path", {"vm": vm, "path": path}, "time_us DESC, id DESC LIMIT 1")
        return rows[0] if rows else None

    def state_at(self, vm: str, path: str, at: float) -> Version | None:
        """The newest row of ``path`` at or before ``at``, a removal or not."""
        return self._newest(vm, path, at, "")

    def content_at(self, vm: str, path: str, at: float) -> Version | None:
        """The newest content (not a removal) of ``path`` at or before ``at``."""
        return self._newest(vm, path, at, " AND hash IS NOT NULL")

    def _newest(self, vm: str, path: str, at: float, condition: str) -> Version | None:
        rows = self._select(
            f"vm = :vm AND path = :path AND time_us <= :at{condition}",
            {"vm": vm, "path": path, "at": _us(at)},
            "time_us DESC, id DESC LIMIT 1",
        )
        return rows[0] if rows else None

    def tree_at(self, vm: str, prefix: str, at: float) -> list[Version]:
        """The files under directory ``prefix`` as they were at ``at``: for each path, its
        newest row then, unless that row is a removal. By path."""
        return self._select(
            f"vm = :vm AND substr(path, 1, length(:under)) = :under AND hash IS NOT NULL AND {_STATE_AT}",
            {"vm": vm, "under": under(prefix), "at": _us(at)},
            "path",
        )

    def vms_with(self, path: str) -> list[str]:
        """The VMs with rows for ``path`` itself or for paths under it."""
        with self._connection() as db:
            rows = db.execute(
                "SELECT DISTINCT vm FROM versions WHERE path = ? OR substr(path, 1, length(?)) = ? ORDER BY vm",
                (path, under(path), under(path)),
            )
            return [vm for (vm,) in rows.fetchall()]

    def delete(self, ids: Iterable[int]) -> int:
        """Delete the rows ``ids`` in one transaction; returns how many there were."""
        chosen = [(i,) for i in ids]
        with self._connection(write=True) as db, _transaction(db):
            deleted: int = db.executemany("DELETE FROM versions WHERE id = ?", chosen).rowcount
        return deleted

    def account_blobs(self, sizes: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """Once per store: record the blobs ``sizes()`` lists (digest, bytes on disk)."""
        with self._connection(write=True) as db:
            if db.execute("PRAGMA user_version").fetchone()[0] >= _ACCOUNTED:
                return
            with _transaction(db):
                if db.execute("PRAGMA user_version").fetchone()[0] < _ACCOUNTED:
                    db.executemany("INSERT OR IGNORE INTO blobs VALUES (?, ?)", sizes())
                    db.execute(f"PRAGMA user_version = {_ACCOUNTED}")

    def admit_blob(self, digest: str, size: int, check: Callable[[int], None]) -> bool:
        """Account a new blob of ``size`` bytes on disk, after ``check(bytes the store's
        blobs take now)``, which raises to refuse it (nothing is recorded then). In one
        transaction, so that writers in several processes never pass a bound together.
        Returns False when the blob was accounted already."""
        with self._connection(write=True) as db, _transaction(db):
            if db.execute("SELECT 1 FROM blobs WHERE hash = ?", (digest,)).fetchone():
                return False
            check(db.execute("SELECT bytes FROM usage").fetchone()[0])
            db.execute("INSERT INTO blobs VALUES (?, ?)", (digest, size))
        return True

    def reconcile_blobs(self, present: Mapping[str, int]) -> None:
        """Make the accounting say exactly the blobs ``present`` (digest: bytes): after a
        collection, or a crash between accounting a blob and filing it."""
        with self._connection(write=True) as db, _transaction(db):
            known = {h for (h,) in db.execute("SELECT hash FROM blobs")}
            db.executemany("DELETE FROM blobs WHERE hash = ?", [(h,) for h in known - present.keys()])
            db.executemany("INSERT INTO blobs VALUES (?, ?)", [(h, present[h]) for h in present.keys() - known])

    def blob_bytes(self) -> int:
        """What the accounted blobs take on disk."""
        with self._connection() as db:
            total: int = db.execute("SELECT bytes FROM usage").fetchone()[0]
            return total

    def file_bytes(self) -> int:
        """What the index itself takes on disk (its database, write-ahead log and shared
        memory, or rollback journal)."""
        total = 0
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(self.path + suffix).st_blocks * 512
        return total

    def hashes(self) -> set[str]:
        """Every blob some row references: what garbage collection keeps."""
        with self._connection() as db:
            rows = db.execute("SELECT DISTINCT hash FROM versions WHERE hash IS NOT NULL")
            return {h for (h,) in rows.fetchall()}


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    if db.in_transaction:  # within transaction(): a part of it, undone alone if it raises
        db.execute("SAVEPOINT part")
        try:
            yield
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK TO part")
                db.execute("RELEASE part")
            raise
        db.execute("RELEASE part")
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
