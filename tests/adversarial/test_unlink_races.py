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
never removed, nothing next to the volume is; ``--stats`` shows C served unlinks meanwhile
(under ``HVFS_ATTACK_DRIVER=ptrace``, the tracer's C loop: tracer_unlink.h, ``unlinked_here``).
"""

from __future__ import annotations

from pathlib import Path

from tests.adversarial.conftest import ON_THE_NATIVE_PATH, Attacker
from tests.adversarial.flip_scene import assert_untouched, flip_scene, run_flip

pytestmark = ON_THE_NATIVE_PATH


def test_an_unlink_flipped_to_a_host_file_never_removes_it(attacker: Attacker, shared_tmp: Path) -> None:
    scene = flip_scene(attacker, shared_tmp, b"secret\n", link_to_secret=False)
    secret = scene.secret
    targets = [str(secret), "../outside/secret", "../../../../../.." + str(secret), "link-out/secret"]
    targets += ["/vol/link-out/secret", f"swap:{scene.outside}"]
    outcome, record = run_flip(attacker, scene, "unlink_flip", *targets)
    assert outcome.count("unlinkat_tries") > 0, outcome.report
    if record.get("driver") == "ptrace":  # HVFS_ATTACK_DRIVER=ptrace: its tracer's C loop (tracer_unlink.h)
        assert record["unlinked_here"] > 0, record  # type: ignore[operator]
    else:
        compiled = record["compiled"]
        assert isinstance(compiled, dict) and compiled.get("unlink_served", 0) > 0, compiled  # C served unlinks
    assert_untouched(scene, "st_ino", "st_mtime_ns", "st_nlink")
