"""Errors the user can act on."""

from __future__ import annotations

from hvfs.errors import HvfsError


class SetupError(HvfsError):
    """A named step of setting up a VM failed; the message says what to do."""

    def __init__(self, step: str, message: str, hint: str = "") -> None:
        super().__init__(f"{step}: {message}" + (f"; {hint}" if hint else ""))
        self.step = step
