"""Which transport carries a VM's requests (HVFS_TRANSPORT), as a user sets it."""

from __future__ import annotations

import pytest

from tests.conftest import TRANSPORTS, Hvfs

SCRIPT = "echo served > /tmp/x && mkdir /tmp/d && mv /tmp/x /tmp/d/y && cat /tmp/d/y"


@pytest.mark.parametrize("runner", ["hvfs", pytest.param("rootless", marks=pytest.mark.rootless)])
def test_each_transport_serves_and_an_unknown_one_is_one_line(runner: str, request: pytest.FixtureRequest) -> None:
    hvfs: Hvfs = request.getfixturevalue(runner)
    for transport in TRANSPORTS:
        assert hvfs.over(transport).ok("run", "--", "sh", "-c", SCRIPT) == "served\n"
    result = hvfs.over("pigeon").run("run", "--", "true")
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1 and "HVFS_TRANSPORT=pigeon" in result.stderr and "socket" in result.stderr
