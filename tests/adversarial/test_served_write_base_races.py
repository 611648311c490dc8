"""A relative mutation's base directory, kept open in the writable view by the C loop from one
request to the next (hvfs/_native/write_open.h write_base), while two directories of the
volume trade names thousands of times: by the VM itself (each exchange a request another
worker serves) or by the host (a change no request of the VM marks). The VM creates a file,
then unlinks it, by a name relative to each directory (its fd, or the cwd after fchdir to
it), and reads natively (getdents64) where the name landed and that it went: always in that
very directory. A base kept by its text alone would act in the other directory (measured with
the host swapping: 254-319 escapes in 10,000 tries per variant); kept by its text and
identity, never. ``--stats`` shows the C loop served them meanwhile."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest

from tests.adversarial.conftest import ON_THE_NATIVE_PATH, Attacker
from tests.adversarial.test_served_base_races import _swap_on_the_host

pytestmark = ON_THE_NATIVE_PATH


@pytest.mark.parametrize("swapper", ["vm", "host"])
def test_a_kept_write_base_never_acts_in_a_directory_that_took_its_name(
    attacker: Attacker, shared_tmp: Path, swapper: str
) -> None:
    attacker = dataclasses.replace(attacker, strict=True)
    volume, stats = shared_tmp / "vol", shared_tmp / "stats.json"
    volume.mkdir()
    attacker.give(volume, shared_tmp)
    until, host_swaps = threading.Event(), [0]
    host = threading.Thread(target=_swap_on_the_host, args=(volume, until, host_swaps)) if swapper == "host" else None
    if host is not None:
        host.start()
    try:
        extra = ["host"] if host is not None else []
        options = ("--stats", str(stats), "-v", f"{volume}:/vol")
        outcome = attacker.run("write_base_swap", "/vol", *extra, options=options)
    finally:
        until.set()
        if host is not None:
            host.join()
    print(f"write bases swapped by the {swapper}, {attacker.variant}: {outcome.report}")
    assert outcome.code == 0, outcome.stderr
    assert outcome.count("escapes") == 0, outcome.report
    assert outcome.count("tries") >= 1000 and outcome.count("inside") >= 1000, outcome.report
    assert outcome.count("dirfd_tries") >= 400 and outcome.count("cwd_tries") >= 400, outcome.report
    assert max(host_swaps[0], outcome.count("swaps")) >= 100, (outcome.report, host_swaps)  # the race ran
    record = json.loads(stats.read_text())
    if record.get("driver") != "ptrace":  # HVFS_ATTACK_DRIVER=ptrace: its C loop serves none of these
        compiled = record["compiled"]
        assert compiled.get("open_served", 0) >= 300 and compiled.get("unlink_served", 0) >= 300, compiled
