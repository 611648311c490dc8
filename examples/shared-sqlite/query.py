"""Read the shared database without writing anything: what the read-only ``reader`` VM runs."""

import sqlite3
import sys

from db import open_for_reading

try:
    db = open_for_reading()
    counts = db.execute("SELECT writer, count(*) FROM rows GROUP BY writer ORDER BY writer").fetchall()
except sqlite3.OperationalError as e:
    sys.exit(f"query.py: {e}: is a writer VM running? (it keeps the database's -wal and -shm)")
for writer, count in counts:
    print(writer, count)
print("integrity:", db.execute("PRAGMA integrity_check").fetchone()[0])
