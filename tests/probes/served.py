"""Makes an exact number of each mutation under argv[1]; run with -S -B so that Python's
own start-up makes none. The test compares the counts with the manager's statistics."""

import os
import sys

root = sys.argv[1]
CREATES, WRITE_OPENS, RENAMES, UNLINKS, CHMODS = 10, 5, 7, 4, 6
for i in range(CREATES):
    os.close(os.open(f"{root}/f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
for i in range(WRITE_OPENS):
    os.close(os.open(f"{root}/f{i}", os.O_WRONLY | os.O_APPEND))
for i in range(RENAMES):
    os.rename(f"{root}/f{i}", f"{root}/g{i}")
for i in range(UNLINKS):
    os.unlink(f"{root}/g{i}")
for i in range(CHMODS):
    os.chmod(f"{root}/f9", 0o600 + i)
print("done")
