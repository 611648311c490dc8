"""A mkdir's, rmdir's and by-path metadata change's path rewritten by a second thread, or a
directory on its way swapped with a symlink out of the VM, while the manager serves it (issue
14: an untar's directories made, set and removed in the driver's C loop,
hvfs/_native/served_dirs.h and served_pathmeta.h).

The C loop reads the path once and acts on those bytes' last component in its parent (mkdir,
rmdir) or on the object they name (chmod, chown, utimensat), found in the VM's writable view
with no symlink on the way and held as an fd while it acts; what it declines (a path that is
not plain, a symlink on the way, any failure) Python serves from the start. Next to the volume
on the host, outside every mount, is ``outside``, holding ``secret`` and an empty directory
``keep``; the volume holds a symlink to ``outside``. Thousands of times a thread flips the path
between a name of the volume and a spelling of a host name next to it (its host path, ``../``
up and out of the volume, through the symlink), or exchanges a directory of the volume with a
symlink to ``outside`` on the path's way, while the main thread mkdirs, rmdirs, chmods, lchowns
and utimensats the path. From the host: nothing is made in ``outside``, ``keep`` is still
there, the secret's mode, owner, times and ctime never change, nothing next to the volume
changes; ``--stats`` shows C served those calls meanwhile.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adversarial.conftest import ON_THE_NATIVE_PATH, Attacker
from tests.adversarial.flip_scene import FlipScene, flip_scene, run_flip

pytestmark = ON_THE_NATIVE_PATH

SECRET_FIELDS = ("st_ino", "st_mode", "st_uid", "st_gid", "st_mtime_ns", "st_atime_ns", "st_ctime_ns")


def _scene(attacker: Attacker, root: Path) -> tuple[FlipScene, Path]:
    """The flip scene, with ``outside``/keep, an empty directory of the host, beside the secret."""
    scene = flip_scene(attacker, root, b"secret\n", link_to_secret=False)
    keep = scene.outside / "keep"
    keep.mkdir()
    attacker.give(keep)
    return scene, keep


def _targets(scene: FlipScene, name: str) -> list[str]:
    host = scene.outside / name
    spelt = [str(host), f"../outside/{name}", "../../../../../.." + str(host), f"link-out/{name}"]
    return [*spelt, f"/vol/link-out/{name}", f"swap:{scene.outside}"]


@pytest.mark.parametrize(
    ("op", "name", "served"),
    [("mkdir", "made", ("mkdir",)), ("rmdir", "keep", ("rmdir",)), ("meta", "secret", ("chmod", "chown", "utimens"))],
)
def test_a_flipped_directory_call_never_reaches_the_host(
    attacker: Attacker, shared_tmp: Path, op: str, name: str, served: tuple[str, ...]
) -> None:
    scene, keep = _scene(attacker, shared_tmp)
    keep_before = keep.stat()
    outcome, record = run_flip(attacker, scene, "dir_flip", op, *_targets(scene, name))
    assert outcome.count("at_tries") > 0, outcome.report
    compiled = record["compiled"]
    assert isinstance(compiled, dict), compiled
    for kind in served:
        assert compiled.get(f"{kind}_served", 0) > 0, compiled  # C served them during the race
    after = scene.secret.stat()
    assert scene.secret.read_bytes() == scene.content
    assert [getattr(after, f) for f in SECRET_FIELDS] == [getattr(scene.before, f) for f in SECRET_FIELDS]
    assert sorted(p.name for p in scene.outside.iterdir()) == ["keep", "secret"]
    assert keep.is_dir() and not keep.is_symlink() and keep.stat().st_ino == keep_before.st_ino
    assert sorted(p.name for p in shared_tmp.iterdir() if p.name != "stats.json") == scene.around
