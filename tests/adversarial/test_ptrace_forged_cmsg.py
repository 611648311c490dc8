"""The ptrace driver's served open (hvfs/_native/tracer_receive.h): a VM that forges the cmsg
its thread's injected recvmsg leaves in the scratch below its stack gets nothing it was not
served.

The driver reads the received number from that cmsg, then checks with kcmp that the
number names the manager's very file in the thread's table; the call's result is read
only where that check fails. One thread opens (creates) /data/f-N with its stack pointer
in a buffer of its own, so the scratch is at a known place, and writes its name into each
fd it gets; another forges cmsgs there without pause (the decoy, the opener's previous
file, the number of a file it took off the kept socket) and takes what is queued. The
host checks every file: its own name or nothing, never another's; the decoy untouched.
The race ran: millions of forgeries, files taken, opens served and refused.

Root, strict and rootless; not the HVFS_NATIVE=0 variants: the check is the C loop's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adversarial.conftest import ATTACK_VARIANTS, Attacker
from tests.adversarial.served_files import decoy_volume, served_files


@pytest.mark.parametrize("attacker", ATTACK_VARIANTS[:3], indirect=True)
def test_a_forged_cmsg_gets_a_vm_nothing_it_was_not_served(attacker: Attacker, shared_tmp: Path) -> None:
    data = decoy_volume(attacker, shared_tmp)
    outcome = attacker.run("forged_cmsg", options=["--driver", "ptrace", "-v", f"{data}:/data"])
    assert outcome.code == 0, outcome.stderr
    report = outcome.report
    print(attacker.variant, report)  # the counts, in the log of a run with -rP

    served = served_files(data)
    assert served == report["opened"] and served > 20, (served, report)
    assert outcome.count("forged") > 10_000 and outcome.count("taken") > 10, report
    assert outcome.count("failed") == outcome.count("eio"), report  # a refused open is EIO, nothing else
