"""What an open's decoder skips on its usual path, and the Caller a worker keeps: the same
requests as the full decode, with the fake thread of hvfs.testing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvfs import api
from hvfs.intercept.decoders import magic
from hvfs.testing import USER, FakeTracee

# Spellings around the magic ones: only the first group may skip the magic module.
PLAIN = ["/d/f", "/d", "/", "/procfile", "/devices/x", "/proc", "/dev", "/d/sub/", "/d/.hidden", "/d/..", "/.x/f"]
# ".." is the kernel's to resolve, in the decoder as in the magic module: left as it is.
PLAIN += ["/d/../proc/self/root", "/d/../dev/stdout"]
NOT_PLAIN = [
    "d/f",
    "/proc/self/fd/3",
    "/proc//self/fd/3",
    "//proc/self/fd/3",
    "/./proc/self/cwd",
    "/dev/stdout",
    "/dev//fd/3",
    "/d/./f",
    "/d/.",
    "/.",
    "/./proc",
    "/d/./",
    "",
]


@pytest.fixture
def tracee(tmp_path: Path) -> Iterator[FakeTracee]:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "f").write_text("f\n")
    with FakeTracee(tmp_path, cwd="/d") as made:
        made.open("/d/f", os.O_RDONLY, number=3)
        yield made


@pytest.mark.parametrize("name", PLAIN + NOT_PLAIN)
def test_a_name_skips_the_magic_module_only_where_it_would_change_nothing(tracee: FakeTracee, name: str) -> None:
    if not magic.untranslated(name):
        assert name not in PLAIN
        return
    assert name in PLAIN
    given = magic.given_path(tracee, -100, name)
    assert given == api.VmPath("/", name)
    assert magic.own_file(tracee, given) is None
    assert magic.resolved(tracee, given) is given


def test_the_magic_spellings_are_still_translated(tracee: FakeTracee) -> None:
    for name in ("/proc/self/fd/3", "/proc//self/fd/3", "/./proc/self/fd/3"):
        own = magic.own_file(tracee, magic.given_path(tracee, -100, name))
        assert own is not None and own.path == "/d/f"  # its fd is the tracee's, closed with it


class _KeptCredentials(FakeTracee):
    """A thread whose credentials the cache keeps: the same object until they change."""

    kept = USER

    def credentials(self) -> api.Credentials:
        return self.kept


def test_a_caller_is_made_again_only_when_its_thread_or_credentials_change(tmp_path: Path) -> None:
    with _KeptCredentials(tmp_path, pid=10) as tracee:
        first = tracee.caller("vm")
        assert first == api.Caller("vm", 10, USER)
        assert tracee.caller("vm") is first
        tracee.kept = api.Credentials(**{**{f: getattr(USER, f) for f in USER.__slots__}, "uid": 0})
        changed = tracee.caller("vm")
        assert changed is not first and changed.creds is tracee.kept and changed.creds.uid == 0
        assert tracee.caller("other") == api.Caller("other", 10, tracee.kept)
        tracee.pid = 11  # another thread, served by the same worker next
        assert tracee.caller("other") == api.Caller("other", 11, tracee.kept)
