"""An audited strict VM's write-open, served in the driver's C loop and recorded there
(served_write.h, served_audit.h), names what it opened: the path's text is recorded only
for an open the C loop made with no symlink on the way, as the Python path names it.

As tests/adversarial/test_audited_stat_names.py races stats: a directory ``d`` (its ``f``
one inode) and a symlink ``s`` to ``other`` (whose ``f`` is another), swapped without pause
(renameat2 RENAME_EXCHANGE) by a second thread while the main thread opens ``/data/d/f``
O_WRONLY thousands of times and reads the inode of each fd it got. Each open's event, in
order, must name the file the fd is: ``/data/d/f`` or ``/data/s/f`` for the directory's
file, ``/data/other/f`` for the other; one event per open, none lost, none twice; ``--stats``
shows the C loop served write-opens meanwhile, so that a race run only on Python fails.
"""

from __future__ import annotations

from pathlib import Path

from tests.adversarial.test_audited_stat_names import audited_race
from tests.conftest import Hvfs

# The inode of the fd an O_WRONLY open of /data/d/f got, the fd closed.
OPEN = '(lambda fd: (os.fstat(fd).st_ino, os.close(fd))[0])(os.open("/data/d/f", os.O_WRONLY))'


def test_an_audited_write_open_names_the_file_it_opened(hvfs: Hvfs, tmp_path: Path) -> None:
    audited_race(hvfs, tmp_path, OPEN, "open", "open_served")
