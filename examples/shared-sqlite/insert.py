"""Insert rows into the shared SQLite database (WAL mode), one transaction per row."""

import sqlite3
import sys
import time

writer, count = sys.argv[1], int(sys.argv[2])
db = sqlite3.connect("/data/shared.db", timeout=60)
for _ in range(200):  # SQLite does not wait on a busy database to switch its journal mode
    try:
        db.execute("PRAGMA journal_mode=WAL")
        break
    except sqlite3.OperationalError:
        time.sleep(0.05)
db.execute("CREATE TABLE IF NOT EXISTS rows (writer TEXT, n INTEGER)")
for n in range(count):
    with db:
        db.execute("INSERT INTO rows VALUES (?, ?)", (writer, n))
print(writer, "inserted", count)
