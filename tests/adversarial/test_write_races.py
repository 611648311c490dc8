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

from pathlib import Path

from tests.adversarial.conftest import ON_THE_NATIVE_PATH, Attacker
from tests.adversarial.flip_scene import assert_untouched, flip_scene, run_flip

pytestmark = ON_THE_NATIVE_PATH

SECRET_SIZE = 7777  # the secret's size, which no other file here has


def test_a_write_open_flipped_to_a_host_file_never_reaches_it(attacker: Attacker, shared_tmp: Path) -> None:
    scene = flip_scene(attacker, shared_tmp, b"s" * SECRET_SIZE, link_to_secret=True)
    secret = scene.secret
    targets = [str(secret), "../outside/secret", "../../../../../.." + str(secret), "link-out", "/vol/link-out"]
    targets.append(f"swap:{secret}")
    outcome, record = run_flip(attacker, scene, "write_flip", str(scene.before.st_ino), str(SECRET_SIZE), *targets)
    assert outcome.count("creat_tries") > 0, outcome.report
    if record.get("driver") == "ptrace":  # HVFS_ATTACK_DRIVER=ptrace: its tracer's C loop (tracer_write.h)
        assert record["written_here"] > 0, record  # type: ignore[operator]
    else:
        compiled = record["compiled"]
        assert isinstance(compiled, dict) and compiled.get("open_served", 0) > 0, compiled  # C served write-opens
    assert_untouched(scene, "st_ino", "st_mtime_ns", "st_size")
