"""What the C loop switches to serve a caller's stats (hvfs/intercept/served_stat.py
``switch_of``): what ``acting_as`` would switch (hvfs/manager/creds.py ``_switch``), nothing
for the manager's own credentials."""

from __future__ import annotations

import dataclasses
import os

from hvfs._sys import caps
from hvfs.api import Credentials
from hvfs.intercept.credcache import PUBLISHED_GROUPS, SWITCH_CAPS, SWITCH_GROUPS, SWITCH_IDS
from hvfs.intercept.served_stat import switch_of


def own() -> Credentials:
    effective, _, _ = caps.get_thread_caps()
    uid, gid = os.geteuid(), os.getegid()
    return Credentials(uid, gid, tuple(os.getgroups()), 0o022, effective, uid, gid)


def needs_no_switch(creds: Credentials) -> bool:
    """Whether ``acting_as(creds)`` switches nothing a lookup depends on (the umask aside)."""
    switch = switch_of(creds)
    return switch is not None and switch[0] == 0


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


def test_a_switch_names_what_acting_as_switches_and_the_callers_values() -> None:
    mine = own()
    _, permitted, _ = caps.get_thread_caps()
    assert switch_of(mine) == (0, mine.uid, mine.gid, mine.groups, mine.capabilities)
    user = dataclasses.replace(mine, uid=mine.uid + 1000, capabilities=0)
    what = SWITCH_IDS | (SWITCH_CAPS if mine.capabilities else 0)
    assert switch_of(user) == (what, mine.uid + 1000, mine.gid, mine.groups, 0)
    group = dataclasses.replace(mine, gid=mine.gid + 1000)
    assert switch_of(group) == (SWITCH_IDS | SWITCH_CAPS, mine.uid, mine.gid + 1000, mine.groups, mine.capabilities)
    groups = dataclasses.replace(mine, groups=(4242, 4343))
    assert switch_of(groups) == (SWITCH_GROUPS, mine.uid, mine.gid, (4242, 4343), mine.capabilities)
    asked = dataclasses.replace(mine, capabilities=(1 << 64) - 1)  # only what the manager holds is taken
    what = 0 if permitted == mine.capabilities else SWITCH_CAPS
    assert switch_of(asked) == (what, mine.uid, mine.gid, mine.groups, permitted)


def test_more_groups_than_a_record_holds_are_pythons() -> None:
    mine = own()
    many = tuple(range(5000, 5000 + PUBLISHED_GROUPS + 1))
    assert switch_of(dataclasses.replace(mine, groups=many)) is None
    assert switch_of(dataclasses.replace(mine, groups=many[:PUBLISHED_GROUPS])) is not None


def test_switched_ids_switch_the_capabilities_even_to_the_managers_own() -> None:
    """A caller that kept the manager's capabilities as another uid: a fsuid leaving 0 drops
    the fs capabilities from the effective set, so the set is made the caller's again."""
    mine = own()
    kept = dataclasses.replace(mine, uid=mine.uid + 1000)
    assert switch_of(kept) == (SWITCH_IDS | SWITCH_CAPS, mine.uid + 1000, mine.gid, mine.groups, mine.capabilities)


def test_groups_that_differ_only_by_the_callers_own_gid_are_not_switched() -> None:
    """``-u 1000:1000``'s groups (1000,) against the manager's: the fsgid the switch sets
    already matches 1000 wherever the kernel looks for a group (files.groups_to_switch)."""
    mine = own()
    user = dataclasses.replace(mine, uid=1000, gid=1000, groups=(*mine.groups, 1000), capabilities=0)
    switch = switch_of(user)
    assert switch is not None and not switch[0] & SWITCH_GROUPS and switch[0] & SWITCH_IDS
    for groups in ((*mine.groups, 1000, 4242), (4343,) if mine.groups != (4343,) else (4242,)):
        switch = switch_of(dataclasses.replace(user, groups=groups))  # a group beyond its gid, or one less
        assert switch is not None and switch[0] & SWITCH_GROUPS, groups
    if mine.groups:  # a caller without one of the manager's groups
        switch = switch_of(dataclasses.replace(user, groups=()))
        assert switch is not None and switch[0] & SWITCH_GROUPS
