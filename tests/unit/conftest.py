"""Unit tests: no VM, no root, no namespace; they run as any user."""

from __future__ import annotations

from typing import Any

import pytest

from hvfs.manager import resolve


@pytest.fixture(scope="session", autouse=True)
def kernel_features() -> None:
    """Overrides the suite's check for user namespaces and seccomp: none is needed here."""


@pytest.fixture
def openat2_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the manager resolves with openat2 (every resolution goes through it)."""
    calls: list[str] = []
    real = resolve.openat2

    def counted(dirfd: int, path: str, *args: Any) -> int:
        calls.append(path)
        return real(dirfd, path, *args)

    monkeypatch.setattr(resolve, "openat2", counted)
    return calls
