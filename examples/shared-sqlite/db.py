"""The shared database, opened the way each VM of the example may open it.

SQLite in WAL mode keeps two files beside the database: ``-wal`` (the log) and ``-shm``
(its index, shared memory between connections). A connection that may not write the
directory (the reader, whose mount is read-only) can open the database only while both
exist, and then only read-only (``?mode=ro``: it never tries to create them). SQLite
deletes them when the last connection closes, so each writer VM holds one connection open
for as long as it runs (``serve.py DATABASE``), as a long-running writer process does in
any deployment. ``immutable=1`` would also let the reader open it, but tells SQLite the
file never changes: it would read stale or torn pages of a live database.
"""

import sqlite3
import time

PATH = "/data/shared.db"


def open_for_writing(path: str = PATH) -> sqlite3.Connection:
    """A connection that may write; makes the database, in WAL mode, if it is new."""
    db = sqlite3.connect(path, timeout=60)
    for _ in range(200):  # SQLite does not wait on a busy database to switch its journal mode
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError:
            time.sleep(0.05)
    db.execute("CREATE TABLE IF NOT EXISTS rows (writer TEXT, n INTEGER)")
    return db


def open_for_reading(path: str = PATH) -> sqlite3.Connection:
    """A read-only connection: needs the -wal and -shm that a writer VM keeps."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
