"""A name of one component, which the C loop stats with one fstatat or statx from its base
directory (hvfs/_native/served_quick.h), exchanged thousands of times with a symlink out of
the VM (to a host file outside every mount: by its host path, ``../`` up and out of the
volume, and the symlink flip_scene makes) while the VM stats it from its directory's fd and
from its cwd, following and not. A stat may find the file, the symlink itself (not followed)
or nothing (the symlink resolves to nothing in the VM), never the host file. ``--stats``
shows the C loop served the stats meanwhile."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tests.adversarial.conftest import ON_THE_NATIVE_PATH, Attacker
from tests.adversarial.flip_scene import assert_untouched, flip_scene, run_flip

pytestmark = ON_THE_NATIVE_PATH

SECRET_SIZE = 7717  # the secret's size, which no file of the VM has


def test_a_name_exchanged_with_a_symlink_out_never_stats_the_host_file(attacker: Attacker, shared_tmp: Path) -> None:
    attacker = dataclasses.replace(attacker, strict=True)
    scene = flip_scene(attacker, shared_tmp, b"q" * SECRET_SIZE, link_to_secret=True)
    (scene.volume / "f").write_text("f\n")
    (scene.volume / "up").symlink_to("../outside/secret")
    (scene.volume / "deep").symlink_to("../../../../../.." + str(scene.secret))
    attacker.give(scene.volume / "f")
    outcome, record = run_flip(attacker, scene, "name_swap", str(SECRET_SIZE), "link-out", "up", "deep")
    assert outcome.count("links") > 0 and outcome.count("swaps") >= 100, outcome.report  # both sides seen
    assert outcome.count("odd") == 0, outcome.report
    assert_untouched(scene, "st_ino", "st_mode", "st_size")
    if record.get("driver") != "ptrace":  # HVFS_ATTACK_DRIVER=ptrace: its C loop serves none of these
        compiled = record["compiled"]
        assert isinstance(compiled, dict)
        assert compiled.get("stat_served", 0) + compiled.get("statx_served", 0) >= 1000, compiled
