"""The ground the ``*_flip`` programs race on, shared by the create, unlink, write and stat
race tests: a volume and, next to it on the host outside every mount, ``outside`` holding
``secret``; and the checks every such race makes of what the program reported and of what
is left on the host."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tests.adversarial.conftest import TRIES, Attacker, Outcome


@dataclass(frozen=True)
class FlipScene:
    """What a flip race is set in, and what the host held before it."""

    root: Path
    volume: Path
    outside: Path
    secret: Path
    content: bytes
    stats: Path
    before: os.stat_result
    around: list[str]


def flip_scene(attacker: Attacker, root: Path, content: bytes, *, link_to_secret: bool) -> FlipScene:
    """``root``/vol and ``root``/outside/secret (``content``); the volume's ``link-out`` points at
    the secret (``link_to_secret``, and the volume holds ``inside``) or at ``outside``."""
    volume, outside = root / "vol", root / "outside"
    volume.mkdir()
    outside.mkdir()
    secret = outside / "secret"
    secret.write_bytes(content)
    owned = [volume, outside, secret]
    if link_to_secret:
        (volume / "inside").write_text("inside\n")
        (volume / "link-out").symlink_to(secret)
        owned.append(volume / "inside")
    else:
        (volume / "link-out").symlink_to(outside)
    attacker.give(*owned, root)
    around = sorted(p.name for p in root.iterdir())
    return FlipScene(root, volume, outside, secret, content, root / "stats.json", secret.stat(), around)


def run_flip(
    attacker: Attacker,
    scene: FlipScene,
    program: str,
    *arguments: str,
    options: tuple[str, ...] = (),
    tries: int = TRIES,
) -> tuple[Outcome, dict[str, object]]:
    """``program`` run on the scene's volume (as /vol, with ``--stats``, and ``options``: more
    volumes), checked to have raced (a thousand tries or more, some inside, some refused) with
    no escape; its report and the manager's statistics."""
    options = ("--stats", str(scene.stats), "-v", f"{scene.volume}:/vol", *options)
    outcome = attacker.run(program, "/vol", *arguments, options=options, tries=tries)
    assert outcome.code == 0, outcome.stderr
    assert outcome.count("escapes") == 0, outcome.report
    assert outcome.count("inside") > 0 and outcome.count("refused") > 0, outcome.report  # the race ran
    assert outcome.count("tries") >= 1000, outcome.report
    record = json.loads(scene.stats.read_text())
    assert isinstance(record, dict), record
    return outcome, record


def assert_untouched(scene: FlipScene, *fields: str) -> None:
    """The secret's content and its ``fields`` (st_ino, ...) as before, ``outside`` holding only
    it, and nothing new or gone next to the volume."""
    after = scene.secret.stat()
    assert scene.secret.read_bytes() == scene.content
    assert [getattr(after, f) for f in fields] == [getattr(scene.before, f) for f in fields]
    assert sorted(p.name for p in scene.outside.iterdir()) == ["secret"]
    assert sorted(p.name for p in scene.root.iterdir() if p.name != "stats.json") == scene.around
