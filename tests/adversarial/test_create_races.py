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

from pathlib import Path

from tests.adversarial.conftest import ON_THE_NATIVE_PATH, Attacker
from tests.adversarial.flip_scene import assert_untouched, flip_scene, run_flip

pytestmark = ON_THE_NATIVE_PATH


def test_a_creation_flipped_to_a_host_directory_never_makes_anything_there(
    attacker: Attacker, shared_tmp: Path
) -> None:
    scene = flip_scene(attacker, shared_tmp, b"secret\n", link_to_secret=False)
    outside = scene.outside
    targets = [f"{outside}/made", "../outside/made", "../../../../../.." + f"{outside}/made", "link-out/made"]
    targets += ["/vol/link-out/made", f"swap:{outside}"]
    _, record = run_flip(attacker, scene, "excl_flip", *targets)
    if record.get("driver") == "ptrace":  # HVFS_ATTACK_DRIVER=ptrace: its tracer's C loop (tracer_write.h)
        assert record["written_here"] > 0, record  # type: ignore[operator]
    else:
        compiled = record["compiled"]
        assert isinstance(compiled, dict) and compiled.get("open_served", 0) > 0, compiled  # C served creations
    assert_untouched(scene, "st_ino", "st_mtime_ns", "st_size")
