"""A served stat's (and read-only open's) path, in a directory whose name holds the letters of
the VM's kernel mounts, rewritten by a second thread while the manager serves it (issue 14:
hvfs/_native/served_names.h lets the C loop serve a path whose components merely hold
"proc", "pts" or "dev", and declines one with such a component).

The volume is the VM's /multiprocessing-devpts and the allowed file its
scripts/procfs-pts.dev: every try that reads the allowed name is the C loop's to serve, and
each forbidden spelling of the host secret (its host path, ``../`` out of the volume, a
symlink to it, and the same through the VM's /proc/self magic links, which C declines to
Python) is another's. Thousands of times, a thread flips the path between the two while the
main thread stats it (stat, lstat, statx) or opens it read-only: a call finds the allowed
file or nothing, never the secret; and ``--stats`` shows the C loop served thousands of
them meanwhile (a static program: nothing else of it is a stat), so that a race run only on
the Python path fails instead of passing vacuously.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tests.adversarial.conftest import ON_THE_NATIVE_PATH, Attacker
from tests.adversarial.flip_scene import flip_scene

pytestmark = ON_THE_NATIVE_PATH

SECRET_SIZE = 7779  # the secret's size, which no other file here has
VOLUME = "/multiprocessing-devpts"
INSIDE = "scripts/procfs-pts.dev"


def test_a_path_with_kernel_mount_letters_flipped_to_a_host_file_never_reaches_it(
    attacker: Attacker, shared_tmp: Path
) -> None:
    attacker = dataclasses.replace(attacker, strict=True)
    scene = flip_scene(attacker, shared_tmp, b"n" * SECRET_SIZE, link_to_secret=True)
    (scene.volume / "scripts").mkdir()
    (scene.volume / INSIDE).write_text("inside\n")
    attacker.give(scene.volume / "scripts", scene.volume / INSIDE)
    secret = scene.secret
    targets = [
        str(secret),
        "../outside/secret",
        "link-out",
        f"{VOLUME}/link-out",
        "/proc/self/cwd/link-out",
        f"/proc/self/root{secret}",
        "scripts/../../proc/self/cwd/link-out",
    ]
    options = ("--stats", str(scene.stats), "-v", f"{scene.volume}:{VOLUME}", "-e", f"FLIP_INSIDE={INSIDE}")
    arguments = (VOLUME, str(scene.before.st_ino), str(SECRET_SIZE), *targets)
    outcome = attacker.run("stat_flip", *arguments, options=options)
    assert outcome.code == 0, outcome.stderr
    assert outcome.count("escapes") == 0, outcome.report
    assert outcome.count("inside") > 0 and outcome.count("refused") > 0, outcome.report  # the race ran
    assert outcome.count("tries") >= 1000, outcome.report
    record = json.loads(scene.stats.read_text())
    if record.get("driver") != "ptrace":  # HVFS_ATTACK_DRIVER=ptrace: its C loop serves none of these; Python does
        compiled = record["compiled"]
        assert compiled.get("stat_served", 0) + compiled.get("statx_served", 0) >= 300, compiled
        assert compiled.get("open_served", 0) >= 100, compiled
        assert compiled["handed_to_python"] >= 100, compiled  # the /proc spellings: declined to Python
    assert secret.read_bytes() == b"n" * SECRET_SIZE
    assert secret.stat().st_ino == scene.before.st_ino
