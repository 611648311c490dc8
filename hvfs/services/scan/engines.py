"""Scanning engines: one small interface, and the built-in engine (SHA-256 blocklist, EICAR).

An engine looks at a file's whole content and names a signature or nothing. The other
engines live in their own modules because they need something outside hvfs: YARA
(yara_engine.py, yara-python) and ClamAV (clamd.py, a running clamd).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Detection:
    engine: str  # "builtin", "yara", "clamav"
    signature: str  # the engine's name for what it found


class EngineUnavailable(Exception):
    """An engine cannot be set up (a missing module, no daemon, bad rules); the message says
    what to install or fix."""


class ScanError(Exception):
    """An engine failed on one content (a daemon gone, a timeout); the content has no verdict."""


class Engine(Protocol):
    name: str

    def scan(self, data: bytes) -> Detection | None:
        """What ``data`` is infected with, or None. Thread-safe: the scanner calls it from
        every dispatching thread. Raises ScanError when it cannot tell."""
        ...


# The EICAR test file, assembled here so that this source is not itself "infected" in the
# eyes of a scanner on the developer's machine.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
_EICAR_MAX = 128
_WHITESPACE = b" \t\r\n\x1a"


def is_eicar(data: bytes) -> bool:
    """The EICAR test file as its standard defines it: the 68-byte string first, then only
    whitespace, 128 bytes at most (so that a file merely quoting it is not "infected")."""
    return len(data) <= _EICAR_MAX and data.startswith(EICAR) and not data[len(EICAR) :].strip(_WHITESPACE)


def load_blocklist(path: str) -> dict[str, str]:
    """SHA-256 digests from ``path``: one hex digest a line, optionally followed by a name
    (``sha256sum`` output works, file names becoming signature names); ``#`` starts a
    comment. Returns digest -> name. Raises OSError, or ValueError naming the bad line."""
    blocklist: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            digest, _, name = text.partition(" ")
            digest = digest.lower()
            if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
                raise ValueError(f"{path}:{number}: not a SHA-256 digest: {digest!r}")
            blocklist[digest] = name.strip().lstrip("*") or f"sha256:{digest[:16]}"
    return blocklist


class BuiltinEngine:
    """Implements Engine with a SHA-256 blocklist (digest -> signature name) and the EICAR
    test file, with nothing to install."""

    name = "builtin"

    def __init__(self, blocklist: dict[str, str] | None = None, *, eicar: bool = True) -> None:
        self._blocklist = dict(blocklist or {})
        self._eicar = eicar

    def scan(self, data: bytes) -> Detection | None:
        if self._eicar and is_eicar(data):
            return Detection(self.name, "EICAR-Test-File")
        if self._blocklist:
            name = self._blocklist.get(hashlib.sha256(data).hexdigest())
            if name is not None:
                return Detection(self.name, name)
        return None
