"""Detached VMs (``hvfs run -d``) for the tests that make them: names that are unique
on this machine, and removed (``rm -f``) after the test whatever happened."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.conftest import Hvfs


@pytest.fixture
def names(hvfs: Hvfs) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    if made:
        hvfs.run("rm", "-f", *made)


def new_name(names: list[str], what: str) -> str:
    name = f"{what}-{os.getpid()}-{time.monotonic_ns() % 1000000}"
    names.append(name)
    return name
