"""A relative path's base directory, kept open by the C loop from one request to the next
(hvfs/_native/served_base.h), while two directories of the volume trade names thousands of
times: by the VM itself (each exchange a request another worker serves) or by the host
(a change no request of the VM marks). The VM stats and opens "f" relative to each
directory's fd: natively always that directory's own f. A base kept by its text alone would
answer the other directory's f (measured: 29 and 1,370 in 10,000 tries); kept by its text
and identity, never. ``--stats`` shows the C loop served them meanwhile."""

from __future__ import annotations

import ctypes
import dataclasses
import json
import threading
import time
from pathlib import Path

import pytest

from tests.adversarial.conftest import ON_THE_NATIVE_PATH, Attacker

pytestmark = ON_THE_NATIVE_PATH

RENAME_EXCHANGE = 2
SYS_RENAMEAT2 = 316  # x86_64


def _swap_on_the_host(volume: Path, until: threading.Event, swaps: list[int]) -> None:
    """Exchanges volume/d1 and volume/d2 as fast as it can from when the program is ready,
    counting the exchanges done in swaps[0]."""
    libc = ctypes.CDLL(None, use_errno=True)
    d1, d2 = str(volume / "d1").encode(), str(volume / "d2").encode()
    while not (volume / "ready").exists() and not until.is_set():
        time.sleep(0.001)
    while not until.is_set():
        swaps[0] += libc.syscall(SYS_RENAMEAT2, -100, d1, -100, d2, RENAME_EXCHANGE) == 0


@pytest.mark.parametrize("swapper", ["vm", "host"])
def test_a_kept_base_never_answers_for_a_directory_that_took_its_name(
    attacker: Attacker, shared_tmp: Path, swapper: str
) -> None:
    attacker = dataclasses.replace(attacker, strict=True)
    volume, stats = shared_tmp / "vol", shared_tmp / "stats.json"
    volume.mkdir()
    attacker.give(volume, shared_tmp)
    until, host_swaps = threading.Event(), [0]
    swapping = (volume, until, host_swaps)
    host = threading.Thread(target=_swap_on_the_host, args=swapping) if swapper == "host" else None
    if host is not None:
        host.start()
    try:
        extra = ["host"] if host is not None else []
        outcome = attacker.run("base_swap", "/vol", *extra, options=("--stats", str(stats), "-v", f"{volume}:/vol"))
    finally:
        until.set()
        if host is not None:
            host.join()
    assert outcome.code == 0, outcome.stderr
    assert outcome.count("escapes") == 0, outcome.report
    assert outcome.count("tries") >= 1000 and outcome.count("inside") >= 1000, outcome.report
    assert max(host_swaps[0], outcome.count("swaps")) >= 100, (outcome.report, host_swaps)  # the race ran
    record = json.loads(stats.read_text())
    if record.get("driver") != "ptrace":  # HVFS_ATTACK_DRIVER=ptrace: its C loop serves none of these
        compiled = record["compiled"]
        assert compiled.get("stat_served", 0) >= 300 and compiled.get("open_served", 0) >= 300, compiled
