"""A served write-open's path rewritten by a second thread while the manager serves it (issue
14: a strict VM's write-open of a file that exists answered in the driver's C loop,
hvfs/_native/served_write.h).

The C loop reads the path once and opens those bytes in the VM's writable view, with no
symlink on the way; whatever the buffer holds by then changes nothing, and what C declines
(a relative path, a symlink on the way, a file to create) Python serves from the start. The
VM's volume holds ``inside``; next to the volume on the host, outside every mount, is
``secret``, and the volume holds a symlink to its host path. Thousands of times a thread
flips the path between ``inside`` and a spelling of the secret (its host path, ``../`` up
and out of the volume, the symlink), or renames over a fixed path of the volume, in turn, a
file and a symlink to the secret, while the main thread write-opens it with O_CREAT|O_TRUNC
(O_WRONLY, O_RDWR, O_APPEND, creat) and writes a byte. From the host: the secret is never
truncated nor written, nothing is made outside the volume. C serves write-opens in every
profile (root and rootless run the default one, strict ``--strict``), and ``--stats`` shows
it served them meanwhile.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.adversarial.conftest import ON_THE_NATIVE_PATH, Attacker

pytestmark = ON_THE_NATIVE_PATH

SECRET_SIZE = 7777  # the secret's size, which no other file here has


def test_a_write_open_flipped_to_a_host_file_never_reaches_it(attacker: Attacker, shared_tmp: Path) -> None:
    volume, outside = shared_tmp / "vol", shared_tmp / "outside"
    volume.mkdir()
    outside.mkdir()
    secret = outside / "secret"
    secret.write_bytes(b"s" * SECRET_SIZE)
    (volume / "inside").write_text("inside\n")
    (volume / "link-out").symlink_to(secret)
    stats = shared_tmp / "stats.json"
    attacker.give(volume, outside, secret, volume / "inside", shared_tmp)
    before = secret.stat()
    around = sorted(p.name for p in shared_tmp.iterdir())
    targets = [str(secret), "../outside/secret", "../../../../../.." + str(secret), "link-out", "/vol/link-out"]
    targets.append(f"swap:{secret}")
    options = ("--stats", str(stats), "-v", f"{volume}:/vol")
    outcome = attacker.run("write_flip", "/vol", str(before.st_ino), str(SECRET_SIZE), *targets, options=options)
    assert outcome.code == 0, outcome.stderr
    assert outcome.count("escapes") == 0, outcome.report
    assert outcome.count("inside") > 0 and outcome.count("refused") > 0, outcome.report  # the race ran
    assert outcome.count("tries") >= 1000 and outcome.count("creat_tries") > 0, outcome.report
    record = json.loads(stats.read_text())
    if record.get("driver") == "ptrace":  # HVFS_ATTACK_DRIVER=ptrace: its tracer's C loop (tracer_write.h)
        assert record["written_here"] > 0, record
    else:
        assert record["compiled"].get("open_served", 0) > 0, record["compiled"]  # C served write-opens during it
    after = secret.stat()
    assert secret.read_bytes() == b"s" * SECRET_SIZE
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert sorted(p.name for p in shared_tmp.iterdir() if p.name != "stats.json") == around
