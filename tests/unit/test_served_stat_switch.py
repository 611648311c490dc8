"""Which callers the C loop may serve stats for (hvfs/intercept/served_stat.py): those whose
credentials ``acting_as`` would not switch at all (hvfs/manager/creds.py ``_switch``)."""

from __future__ import annotations

import dataclasses
import os

from hvfs._sys import caps
from hvfs.api import Credentials
from hvfs.intercept.served_stat import needs_no_switch


def own() -> Credentials:
    effective, _, _ = caps.get_thread_caps()
    uid, gid = os.geteuid(), os.getegid()
    return Credentials(uid, gid, tuple(os.getgroups()), 0o022, effective, uid, gid)


def test_the_managers_own_credentials_need_no_switch() -> None:
    mine = own()
    assert needs_no_switch(mine)
    assert needs_no_switch(dataclasses.replace(mine, umask=0o077))  # a stat uses no umask
    assert needs_no_switch(dataclasses.replace(mine, capabilities=(1 << 64) - 1)) == (
        (((1 << 64) - 1) & caps.get_thread_caps()[1]) == mine.capabilities
    )


def test_another_user_group_or_capability_set_needs_one() -> None:
    mine = own()
    assert not needs_no_switch(dataclasses.replace(mine, uid=mine.uid + 1))
    assert not needs_no_switch(dataclasses.replace(mine, gid=mine.gid + 1))
    assert not needs_no_switch(dataclasses.replace(mine, groups=(*mine.groups, 4242)))
    if mine.capabilities:
        assert not needs_no_switch(dataclasses.replace(mine, capabilities=0))
