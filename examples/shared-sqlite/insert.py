"""Insert rows into the shared SQLite database (WAL mode), one transaction per row."""

import sys

from db import open_for_writing

writer, count = sys.argv[1], int(sys.argv[2])
db = open_for_writing()
for n in range(count):
    with db:
        db.execute("INSERT INTO rows VALUES (?, ?)", (writer, n))
print(writer, "inserted", count)
