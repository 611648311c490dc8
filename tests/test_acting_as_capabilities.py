"""A caller that kept capabilities as a non-zero uid (PR_SET_KEEPCAPS, then capset): its
fsuid leaving 0 makes the kernel drop the fs capabilities from the worker's effective set,
so ``acting_as`` sets the caller's set after the ids even where it equals the manager's,
and puts back exactly the manager's identity afterwards. The VM-level proof is the
conformance suite's ``perm.kept_*`` cases (tests/conformance/probe/cases_permissions.py)."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from hvfs._sys import caps, files
from hvfs.api import Credentials
from hvfs.intercept.procfs import parse_credentials
from hvfs.manager import creds
from tests.conftest import in_a_thread

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching fsuid to another user needs root")


def _other_user(capabilities: int) -> Credentials:
    own = parse_credentials(Path("/proc/thread-self/status").read_bytes())
    return dataclasses.replace(own, uid=1234, gid=1234, groups=(), capabilities=capabilities)


def _outcome(action: Callable[[], object]) -> object:
    try:
        return action()
    except OSError as error:
        return error.errno


def test_a_caller_keeping_the_managers_capabilities_as_another_uid_has_them() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as directory:
        private = Path(directory) / "private"
        private.mkdir(mode=0o700)
        (private / "file").write_text("root's\n")
        (private / "file").chmod(0o600)

        def body() -> dict[str, object]:
            identity = (caps.get_thread_caps(), files.set_thread_fsuid(0xFFFFFFFF), tuple(os.getgroups()))
            effective = identity[0][0]
            seen: dict[str, object] = {}
            for name, capabilities in (("kept", effective), ("dropped", 0)):
                with creds.acting_as(_other_user(capabilities)):
                    seen[f"{name} stat"] = _outcome(lambda: os.stat(private / "file").st_size)
                    seen[f"{name} read"] = _outcome((private / "file").read_text)
                    seen[f"{name} inside"] = (files.set_thread_fsuid(0xFFFFFFFF), caps.get_thread_caps()[0])
                after = (caps.get_thread_caps(), files.set_thread_fsuid(0xFFFFFFFF), tuple(os.getgroups()))
                seen[f"{name} restored"] = after == identity
            seen["effective"] = effective
            return seen

        seen = in_a_thread(body)
    effective = seen.pop("effective")
    assert seen == {
        "kept stat": 7,
        "kept read": "root's\n",
        "kept inside": (1234, effective),  # the fs capabilities the fsuid's change dropped, set again
        "kept restored": True,
        "dropped stat": 13,  # EACCES: the same uid without them, as Linux
        "dropped read": 13,
        "dropped inside": (1234, 0),
        "dropped restored": True,
    }
