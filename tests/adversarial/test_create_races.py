"""An O_CREAT|O_EXCL creation's path rewritten by a second thread while the manager serves it
(issue 14: an untar's creations answered in the driver's C loop, hvfs/_native/served_write.h).

The C loop reads the path once and creates those bytes in the VM's writable view, with no
symlink on the way; what it declines (a path that is not plain, a symlink on the way, an
EEXIST of anything but a regular file) Python serves from the start. Next to the volume on
the host, outside every mount, is ``outside``, a directory holding ``secret``; the volume
holds a symlink to it. Thousands of times a thread flips the path between a new name of the
volume and a new name in ``outside`` (its host path, ``../`` up and out of the volume,
through the symlink), or exchanges a directory of the volume with a symlink to ``outside``
on the path's way, while the main thread creates it as tar does and writes a byte. From the
host: nothing is ever made in ``outside`` nor next to the volume, the secret is untouched;
``--stats`` shows C served creations meanwhile.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.adversarial.conftest import ON_THE_NATIVE_PATH, Attacker

pytestmark = ON_THE_NATIVE_PATH


def test_a_creation_flipped_to_a_host_directory_never_makes_anything_there(
    attacker: Attacker, shared_tmp: Path
) -> None:
    volume, outside = shared_tmp / "vol", shared_tmp / "outside"
    volume.mkdir()
    outside.mkdir()
    secret = outside / "secret"
    secret.write_text("secret\n")
    (volume / "link-out").symlink_to(outside)
    stats = shared_tmp / "stats.json"
    attacker.give(volume, outside, secret, shared_tmp)
    before = secret.stat()
    around = sorted(p.name for p in shared_tmp.iterdir())
    targets = [f"{outside}/made", "../outside/made", "../../../../../.." + f"{outside}/made", "link-out/made"]
    targets += ["/vol/link-out/made", f"swap:{outside}"]
    options = ("--stats", str(stats), "-v", f"{volume}:/vol")
    outcome = attacker.run("excl_flip", "/vol", *targets, options=options)
    assert outcome.code == 0, outcome.stderr
    assert outcome.count("escapes") == 0, outcome.report
    assert outcome.count("inside") > 0 and outcome.count("refused") > 0, outcome.report  # the race ran
    assert outcome.count("tries") >= 1000, outcome.report
    compiled = json.loads(stats.read_text())["compiled"]
    assert compiled.get("open_served", 0) > 0, compiled  # C served creations during it
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    after = secret.stat()
    assert secret.read_text() == "secret\n"
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert sorted(p.name for p in shared_tmp.iterdir() if p.name != "stats.json") == around
