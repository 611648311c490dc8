"""An unlink's path rewritten by a second thread while the manager serves it (issue 14: an
rm -rf's unlinks answered in the driver's C loop, hvfs/_native/served_mutate.h).

The C loop reads the path once and unlinks those bytes' last component in their parent,
found in the VM's writable view with no symlink on the way; what it declines (a path that
is not plain, a symlink on the way, any failure) Python serves from the start. Next to the
volume on the host, outside every mount, is ``outside``, a directory holding ``secret``;
the volume holds a symlink to that directory. Thousands of times a thread flips the path
between a file of the volume and a spelling of the secret (its host path, ``../`` up and
out of the volume, through the symlink), or exchanges a directory of the volume with a
symlink to ``outside`` on the path's way, while the main thread makes the volume's file
again and unlinks the path (unlink and unlinkat in turn). From the host: the secret is
never removed, nothing next to the volume is; ``--stats`` shows C served unlinks meanwhile.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.adversarial.conftest import ON_THE_NATIVE_PATH, Attacker

pytestmark = ON_THE_NATIVE_PATH


def test_an_unlink_flipped_to_a_host_file_never_removes_it(attacker: Attacker, shared_tmp: Path) -> None:
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
    targets = [str(secret), "../outside/secret", "../../../../../.." + str(secret), "link-out/secret"]
    targets += ["/vol/link-out/secret", f"swap:{outside}"]
    options = ("--stats", str(stats), "-v", f"{volume}:/vol")
    outcome = attacker.run("unlink_flip", "/vol", *targets, options=options)
    assert outcome.code == 0, outcome.stderr
    assert outcome.count("escapes") == 0, outcome.report
    assert outcome.count("inside") > 0 and outcome.count("refused") > 0, outcome.report  # the race ran
    assert outcome.count("tries") >= 1000 and outcome.count("unlinkat_tries") > 0, outcome.report
    compiled = json.loads(stats.read_text())["compiled"]
    assert compiled.get("unlink_served", 0) > 0, compiled  # C served unlinks during it
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    after = secret.stat()
    assert secret.read_text() == "secret\n"
    assert (after.st_ino, after.st_mtime_ns, after.st_nlink) == (before.st_ino, before.st_mtime_ns, before.st_nlink)
    assert sorted(p.name for p in shared_tmp.iterdir() if p.name != "stats.json") == around
