"""A directory of the path a VM reads a link through, or checks access to, exchanged thousands
of times with a symlink out of the VM (to a host directory outside every mount: by its host
path, and ``../`` up and out of the volume) while the VM calls readlink, readlinkat, access,
faccessat and faccessat2 of a name in it (served in the C loop: hvfs/_native/served_link.h).
The name in the VM is a dangling symlink; outside, a regular file: a readlink answered EINVAL,
or an access granted through the dangling link, would be the host file's. ``--stats`` shows
the C loop served the calls meanwhile."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tests.adversarial.conftest import ON_THE_NATIVE_PATH, Attacker
from tests.adversarial.flip_scene import assert_untouched, flip_scene, run_flip

pytestmark = ON_THE_NATIVE_PATH


def test_a_directory_exchanged_with_a_symlink_out_never_reads_the_host_file(
    attacker: Attacker, shared_tmp: Path
) -> None:
    attacker = dataclasses.replace(attacker, strict=True)
    scene = flip_scene(attacker, shared_tmp, b"host secret\n", link_to_secret=False)
    inner = scene.volume / "d"
    inner.mkdir()
    (inner / "secret").symlink_to("../gone")
    (scene.volume / "up").symlink_to("../outside")
    attacker.give(inner)
    outcome, record = run_flip(attacker, scene, "link_swap", "link-out", "up")
    assert outcome.count("swaps") >= 100, outcome.report
    assert outcome.count("odd") == 0, outcome.report
    assert_untouched(scene, "st_ino", "st_mode", "st_size")
    if record.get("driver") != "ptrace":  # HVFS_ATTACK_DRIVER=ptrace: its C loop serves none of these
        compiled = record["compiled"]
        assert isinstance(compiled, dict)
        assert compiled.get("readlink_served", 0) >= 300, compiled
        assert compiled.get("access_served", 0) + compiled.get("access_continued", 0) >= 300, compiled
