"""The base of every error a user can act on.

Each front end prints one as a single line, ``hvfs: <message>``, and exits 125 (as
docker does for its own errors); the message names the problem and the fix. Anything
else that escapes is a bug, reported as one (hvfs.cli). Every layer may raise these: this
module imports nothing.
"""

from __future__ import annotations


class HvfsError(Exception):
    """A problem of the user's input or of the host, with what to do about it."""

    exit_code = 125
