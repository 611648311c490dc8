"""What the ptrace driver's fd-passing attacks (forged_cmsg, kept_socket) share: a volume
holding the VM's own decoy, and the count of files ``f-*`` that a served open wrote
through, each checked to hold its own name or nothing (never what another open got)."""

from __future__ import annotations

from pathlib import Path

from tests.adversarial.conftest import Attacker

DECOY = "decoy, the VM's own file\n"


def decoy_volume(attacker: Attacker, root: Path) -> Path:
    """``root``/data, the attacker's, holding ``decoy``."""
    data = root / "data"
    data.mkdir()
    (data / "decoy").write_text(DECOY)
    attacker.give(data, data / "decoy")
    return data


def served_files(data: Path) -> int:
    """How many ``f-*`` files hold their own name, once none holds another's and the decoy is
    as it was."""
    wrong = []
    served = 0
    for path in data.glob("f-*"):
        content = path.read_text()
        if content == path.name:
            served += 1
        elif content != "":
            wrong.append((path.name, content))
    assert wrong == [], f"files that got what was not theirs: {wrong[:10]}"
    assert (data / "decoy").read_text() == DECOY
    return served
