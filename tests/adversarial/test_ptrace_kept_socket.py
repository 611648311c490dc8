"""The ptrace driver's kept socket (hvfs/intercept/ptrace/kept.py): a VM that closes it,
dup2s over it, queues its own files on it, takes from it, and forks children that try to
receive from their copies of it, gets nothing it was not served.

One thread opens (creates) /data/f-N and writes its name into each fd it gets, while
another tampers with every number where the driver keeps sockets, and children forked
every 50 opens write "stolen" into any file they receive. The host checks every file:
its own name or nothing (an open that failed), never another's, never "stolen"; the
decoy (the file the VM queues as its own) untouched. The race ran: tampering and forks
happened, opens were served, and the driver planted sockets again and again.

Root, strict and rootless; not the HVFS_NATIVE=0 variants: the kept socket is the
driver's, below the decoders whose two paths those variants compare.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.adversarial.conftest import ATTACK_VARIANTS, Attacker
from tests.adversarial.served_files import decoy_volume, served_files


@pytest.mark.parametrize("attacker", ATTACK_VARIANTS[:3], indirect=True)
def test_a_vm_gets_nothing_through_the_kept_socket_it_was_not_served(attacker: Attacker, shared_tmp: Path) -> None:
    data = decoy_volume(attacker, shared_tmp)
    stats = data / "stats.json"
    outcome = attacker.run("kept_socket", options=["--driver", "ptrace", "--stats", str(stats), "-v", f"{data}:/data"])
    assert outcome.code == 0, outcome.stderr
    report = outcome.report
    print(attacker.variant, report)  # the counts, in the log of a run with -rP

    served = served_files(data)
    assert report["stolen"] == 0, report
    # The race ran: files served and checked here, tampering of every kind, children
    # holding copies, and the driver planting anew after each doubt.
    assert served == report["opened"] and served > 100, (served, report)
    for key in ("closed", "replaced", "presends"):
        assert outcome.count(key) > 10, (key, report)
    assert outcome.count("forks") > 2 and outcome.count("children") == outcome.count("forks"), report
    planted = json.loads(stats.read_text())["planted"]
    print(attacker.variant, "planted", planted)
    assert planted > outcome.count("forks"), (planted, report)
