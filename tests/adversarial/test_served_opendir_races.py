"""A directory exchanged thousands of times with a FIFO that a host writer waits on, while the
VM opens the name with O_DIRECTORY: a strict VM's C loop opens it at once with the caller's
flags, with no O_PATH probe and its fstat before (hvfs/_native/served_stat.h serve_open), so
what keeps the FIFO from being opened is the kernel's own refusal of O_DIRECTORY on anything
but a directory, made before it opens the file. An open of the FIFO for reading, even for a
moment, would let its writer through (fifo_open wakes the writers waiting for a reader). From
the host: the writer is still waiting when the attack ends; the program saw both sides (a
directory opened, the FIFO refused with ENOTDIR) and never an fd that is not a directory;
``--stats`` shows the C loop served the opens of a strict VM."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from tests.adversarial.conftest import ON_THE_NATIVE_PATH, Attacker

pytestmark = ON_THE_NATIVE_PATH


def test_a_directory_open_of_a_name_swapped_with_a_fifo_never_opens_the_fifo(
    attacker: Attacker, shared_tmp: Path
) -> None:
    volume = shared_tmp / "vol"
    (volume / "x").mkdir(parents=True)
    os.mkfifo(volume / "y", 0o666)
    os.chmod(volume, 0o777)
    attacker.give(volume, volume / "x", volume / "y")
    released = threading.Event()

    def write() -> None:
        with open(volume / "y", "wb"):  # waits for a reader of this very FIFO, wherever it is named
            released.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    stats = shared_tmp / "stats.json"
    outcome = attacker.run("opendir_flip", "/vol", options=("--stats", str(stats), "-v", f"{volume}:/vol"))
    released_during = released.is_set()
    fifo = next(p for p in volume.iterdir() if p.is_fifo())
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # lets the writer go
    writer.join(10)
    assert outcome.code == 0, outcome.stderr
    assert not released_during, outcome.report
    assert outcome.count("odd") == 0 and outcome.count("other") == 0, outcome.report
    assert outcome.count("dirs") > 0 and outcome.count("notdirs") > 0, outcome.report  # both sides seen
    assert outcome.count("tries") >= 1000 and outcome.count("swaps") > 0, outcome.report
    compiled = json.loads(stats.read_text())["compiled"]
    if attacker.strict and "HVFS_AS_IF_NO_USER_NOTIF" not in " ".join(attacker.runner.command):
        assert compiled.get("open_served", 0) >= 1000, compiled
